//! Drivers: one per platform, all behind the same [`Driver`] trait, so `run`, `ps`, `logs`,
//! `stop` and `rm` behave the same everywhere. Each driver has an availability probe that says
//! why the platform cannot be used on this host.
//!
//! The driver modules are parallel: none imports another. What they share is in [`vmm`]; what
//! they launch (argv, configs, bodies) is rendered by `bakeoff-launch`.

pub mod docker;
pub mod docker_export;
pub mod firecracker;
pub mod qemu;
pub mod rumprun;
pub mod vmm;
pub mod warm;
pub mod xen;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use async_trait::async_trait;
use bakeoff_launch::{Image, LaunchError};
use bakeoff_spec::{Platform, PortMapping, Protocol, RunOptions};
use bakeoff_state::{Handle, Instance, Status};
use tokio::io::AsyncWrite;

pub use vmm::{follow_console, vmm_rss, CommandError};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The platform cannot be used here; the text says why and how to fix it.
    #[error("{0}")]
    Unavailable(String),
    #[error("host port {0} is already in use; choose another with -p")]
    PortInUse(String),
    #[error("{platform} cannot run a {target} image; it boots {wanted} images")]
    WrongImage {
        platform: Platform,
        target: String,
        wanted: String,
    },
    /// The run cannot be done as asked (a fixed sentence saying why and what to do instead).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("the Docker engine refused")]
    Docker(#[source] bollard::errors::Error),
    #[error("docker could not load {}: {message}", archive.display())]
    DockerLoad { archive: PathBuf, message: String },
    #[error("the container of `{0}` no longer exists")]
    ContainerGone(String),
    #[error("cannot start {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited at once ({status}): {why}")]
    VmmExited { status: ExitStatus, why: String },
    #[error("Firecracker refused {call}: {fault}")]
    ApiRefused { call: String, fault: String },
    #[error("{call} on {}", socket.display())]
    Api {
        call: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the record of `{name}` holds a {found} handle, not a {platform} one")]
    WrongHandle {
        name: String,
        platform: Platform,
        found: Platform,
    },
    #[error("all {max} {platform} address slots are taken; remove instances with `bakeoff rm`")]
    SlotsTaken { max: u16, platform: Platform },
    #[error("{} is not an instance directory in a state dir", .0.display())]
    NotInStateDir(PathBuf),
    /// An error with what the VM's console said last.
    #[error("{source} ({console})")]
    WithConsole {
        #[source]
        source: Box<DriverError>,
        console: String,
    },
    /// File errors come from `fs-err`, so they name their path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl DriverError {
    /// The error for an instance whose handle another driver wrote.
    pub fn wrong_handle(inst: &Instance, platform: Platform) -> DriverError {
        DriverError::WrongHandle {
            name: inst.name.clone(),
            platform,
            found: inst.handle.platform(),
        }
    }
}

/// Everything a driver needs to start one instance.
pub struct StartRequest<'a> {
    pub name: &'a str,
    pub image: &'a Image,
    pub opts: &'a RunOptions,
    /// The instance's own directory in the state dir, for logs, sockets and pid files.
    pub instance_dir: &'a Path,
}

/// A log destination (the terminal, a file, a buffer in tests).
pub type LogSink<'a> = &'a mut (dyn AsyncWrite + Unpin + Send);

#[async_trait]
pub trait Driver: Send + Sync {
    fn platform(&self) -> Platform;

    /// `Ok` when this host can run the platform now; otherwise the reason, as one sentence.
    async fn available(&self) -> Result<(), DriverError>;

    /// The handle to record *before* [`Driver::start`] is called: enough to find whatever an
    /// interrupted start leaves (a container by its name, a VMM by its pid file or console
    /// path), so `ps` shows it and `rm -f` removes it. `None`: this driver records only after
    /// starting.
    fn intent(&self, _req: &StartRequest<'_>) -> Option<Handle> {
        None
    }

    /// Starts the instance and returns the driver's handle to record.
    async fn start(&self, req: StartRequest<'_>) -> Result<Handle, DriverError>;

    async fn status(&self, inst: &Instance) -> Result<Status, DriverError>;

    /// Writes the instance's output so far; with `follow`, keeps writing until it stops.
    async fn logs(
        &self,
        inst: &Instance,
        follow: bool,
        out: LogSink<'_>,
    ) -> Result<(), DriverError>;

    /// Asks the app to stop (SIGTERM or the VM's power button), then kills it after `grace`.
    async fn stop(&self, inst: &Instance, grace: Duration) -> Result<(), DriverError>;

    /// Removes everything the engine holds for the instance. Already gone is fine.
    async fn remove(&self, inst: &Instance) -> Result<(), DriverError>;

    /// Called once the app has answered its first probe: a VMM gives back what only its start
    /// needed (see [`vmm::page_out_code`]). Best effort; nothing to do elsewhere.
    async fn app_ready(&self, _inst: &Instance) {}

    /// Memory used on the host by the instance (cgroup usage, VMM RSS), when known.
    async fn memory_bytes(&self, inst: &Instance) -> Result<Option<u64>, DriverError>;

    /// Where a VMM's resident memory is, as `(part, bytes)` (see [`vmm::vmm_rss_parts`]);
    /// empty where the platform has no VMM process of bakeoff's.
    async fn memory_parts(&self, _inst: &Instance) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Memory in use as the guest itself counts it (a VM's kernel), when the platform can say.
    async fn guest_memory_bytes(&self, _inst: &Instance) -> Option<u64> {
        None
    }

    /// What the VMM's translator has done for the instance so far (QEMU under TCG); None where
    /// there is no translator.
    async fn translation(&self, _inst: &Instance) -> Option<vmm::Translation> {
        None
    }

    /// True once the app itself has been started (a VM has booted to it). Until then a
    /// running instance is still booting.
    async fn app_started(&self, _inst: &Instance) -> bool {
        true
    }

    /// Notes for a bench report about how this platform ran `image` here (e.g. Xen's version,
    /// the guest type, and whether the hypervisor itself is nested).
    async fn bench_notes(&self, _image: &Image) -> Vec<String> {
        Vec::new()
    }

    /// A specific sentence about why an instance ended early (e.g. too little memory to boot).
    async fn diagnose(&self, _inst: &Instance) -> Option<String> {
        None
    }

    /// The TCP ports the app listens on, seen where it runs (a container's own network
    /// namespace), for platforms that can look there; None where they cannot. Readiness of a
    /// TCP app waits for its port here rather than trusting a port forwarder's accept.
    async fn listening_ports(&self, _inst: &Instance) -> Option<Vec<u16>> {
        None
    }

    /// The console log where bakeoff's PID 1 prints its launch phases (`bakeoff-init: phase …`,
    /// see `bakeoff_init::phases`), for VMs that boot it. Readiness of a TCP app and the bench's
    /// launch phases are read from it. None where there is no such console.
    fn phase_console(&self, _inst: &Instance) -> Option<std::path::PathBuf> {
        None
    }
}

/// Per-run choices some drivers take (`--accel`, `--machine`).
#[derive(Debug, Clone, Default)]
pub struct DriverOptions {
    pub qemu: qemu::QemuOptions,
}

/// The driver for a platform.
pub fn driver_for(platform: Platform) -> Box<dyn Driver> {
    driver_with(platform, DriverOptions::default())
}

/// The driver for a platform, with the user's choices.
pub fn driver_with(platform: Platform, options: DriverOptions) -> Box<dyn Driver> {
    match platform {
        Platform::Docker => Box::new(docker::DockerDriver::new()),
        Platform::Qemu => Box::new(qemu::QemuDriver::new(options.qemu)),
        Platform::Rumprun => Box::new(rumprun::RumprunDriver::new(options.qemu)),
        Platform::Xen => Box::new(xen::XenDriver),
        Platform::Firecracker => Box::new(firecracker::FirecrackerDriver),
    }
}

/// This host's memory (MemTotal), in bytes.
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Refuses a `--memory` larger than the host has (QEMU cannot allocate it; Docker would accept
/// a limit that means nothing), with the same sentence on every platform.
pub fn check_memory_fits(memory: Option<u64>, host: Option<u64>) -> Result<(), DriverError> {
    match (memory, host) {
        (Some(m), Some(h)) if m > h => Err(DriverError::Refused(format!(
            "--memory {} MiB is more than this host's {} MiB of memory",
            m >> 20,
            h >> 20
        ))),
        _ => Ok(()),
    }
}

/// Refuses an image of a kind the platform does not boot (see `Platform::targets`).
pub fn check_image(platform: Platform, image: &Image) -> Result<(), DriverError> {
    if platform.targets().contains(&image.target) {
        return Ok(());
    }
    Err(DriverError::WrongImage {
        platform,
        target: image.target.to_string(),
        wanted: platform
            .targets()
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
    })
}

/// Fails with a clear sentence when a host port to publish is already taken. Engines would
/// fail too, but later and in their own words.
pub fn check_ports_free(ports: &[PortMapping]) -> Result<(), DriverError> {
    for p in ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
        if TcpListener::bind((p.host_ip, p.host_port)).is_err() {
            return Err(DriverError::PortInUse(format!(
                "{}:{}",
                p.host_ip, p.host_port
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for p in ports {
        if !seen.insert((p.host_ip, p.host_port, p.protocol)) {
            return Err(DriverError::PortInUse(format!(
                "{}:{} (published twice)",
                p.host_ip, p.host_port
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker accepted `--memory 1000000G` where QEMU refused it.
    #[test]
    fn memory_beyond_the_host_is_refused_on_every_platform() {
        let host = host_memory_bytes().expect("/proc/meminfo");
        let absurd = bakeoff_spec::parse_memory("1000000G").unwrap();
        assert_eq!(
            check_memory_fits(Some(absurd), Some(host))
                .unwrap_err()
                .to_string(),
            format!(
                "--memory 1024000000 MiB is more than this host's {} MiB of memory",
                host >> 20
            )
        );
        check_memory_fits(Some(128 << 20), Some(host)).unwrap();
        check_memory_fits(None, Some(host)).unwrap();
    }

    #[test]
    fn an_image_of_another_kind_is_refused() {
        let image = |target| Image {
            target,
            name: "hello".into(),
            artifact_id: "a".into(),
            digest: "sha256:0".into(),
            dir: "/tmp".into(),
            files: Default::default(),
            size_bytes: 0,
            compressed_bytes: 0,
            reference: None,
            details: Default::default(),
        };
        use bakeoff_spec::Target;
        assert_eq!(
            check_image(Platform::Qemu, &image(Target::Oci))
                .unwrap_err()
                .to_string(),
            "qemu cannot run a oci image; it boots microvm images"
        );
        assert_eq!(
            check_image(Platform::Xen, &image(Target::Oci))
                .unwrap_err()
                .to_string(),
            "xen cannot run a oci image; it boots microvm or rumprun images"
        );
        check_image(Platform::Xen, &image(Target::Rumprun)).unwrap();
    }

    #[test]
    fn a_taken_port_is_named() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let m = bakeoff_spec::parse_publish(&format!("{port}:80")).unwrap();
        assert_eq!(
            check_ports_free(&[m]).unwrap_err().to_string(),
            format!("host port 127.0.0.1:{port} is already in use; choose another with -p")
        );
        drop(l);
    }
}
