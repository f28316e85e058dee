//! QEMU: boots the microVM image (kernel + initramfs with our PID 1) with user-mode networking,
//! each `-p` a hostfwd on the host side. The VMM runs in its own process group, recorded by PID;
//! its serial console goes to `console.log` in the instance dir (for `logs`), and a QMP socket
//! takes the graceful stop (Ctrl-Alt-Del, which our init turns into SIGTERM for the app).

pub mod argv;
pub mod probe;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bakeoff_spec::Platform;
use bakeoff_state::{Instance, Status};
use serde::{Deserialize, Serialize};

pub use argv::{qemu_argv, Accel, Machine, QemuConfig};

use crate::{Driver, DriverError, LogSink, StartRequest};

pub const QEMU: &str = "qemu-system-x86_64";
/// What QEMU user networking gives the guest.
pub const DEFAULT_MEMORY_MIB: u64 = 128;

/// Choices the user can force (`--accel`, `--machine`); `None` decides automatically.
#[derive(Debug, Clone, Default)]
pub struct QemuOptions {
    pub accel: Option<Accel>,
    pub machine: Option<Machine>,
    /// Where the KVM probe verdict is cached.
    pub cache_dir: Option<PathBuf>,
}

pub struct QemuDriver {
    pub options: QemuOptions,
}

/// What we record for a running VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QemuHandle {
    pub pid: u32,
    pub machine: Machine,
    pub accel: Accel,
    pub memory_mib: u64,
    pub console: PathBuf,
    pub qmp: PathBuf,
    pub argv: Vec<String>,
    /// Why this accelerator (the KVM probe's verdict).
    pub accel_reason: String,
}

fn handle(inst: &Instance) -> Result<QemuHandle, DriverError> {
    serde_json::from_value(inst.handle.clone()).map_err(|e| {
        DriverError::Engine(format!(
            "the record of `{}` has no usable QEMU handle ({e})",
            inst.name
        ))
    })
}

pub fn find_qemu() -> Result<PathBuf, DriverError> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(QEMU)).find(|p| p.is_file()))
        .ok_or_else(|| {
            DriverError::Unavailable(format!(
                "QEMU is not installed ({QEMU} is not on PATH); install Debian's qemu-system-x86 with `apt-get install -y qemu-system-x86`"
            ))
        })
}

/// True while the process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The PID is still our QEMU (not a reused PID): its command line names our console log.
pub fn is_our_qemu(h: &QemuHandle) -> bool {
    pid_alive(h.pid)
        && std::fs::read(format!("/proc/{}/cmdline", h.pid))
            .map(|c| String::from_utf8_lossy(&c).contains(&h.console.display().to_string()))
            .unwrap_or(false)
}

/// The app's exit status as our init printed it on the console.
pub fn exit_status_from_console(console: &str) -> Option<i32> {
    console.lines().rev().find_map(|l| {
        let l = l.trim_end_matches('\r');
        let i = l.find("bakeoff-init: app exited with status ")?;
        l[i + "bakeoff-init: app exited with status ".len()..]
            .trim()
            .parse()
            .ok()
    })
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl QemuDriver {
    pub fn new(options: QemuOptions) -> QemuDriver {
        QemuDriver { options }
    }

    fn choose_accel(&self, qemu: &Path, kernel: &Path) -> (Accel, String) {
        let cache = self
            .options
            .cache_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        probe::choose_accel(self.options.accel, || {
            probe::kvm_verdict(qemu, kernel, &cache)
        })
    }
}

/// The kernel command line for one run: console, network, hostname and the run's env/args.
pub fn run_cmdline(
    machine: Machine,
    hostname: &str,
    opts: &bakeoff_spec::RunOptions,
    tsc_khz: Option<u32>,
) -> String {
    let net = bakeoff_guest::GuestNet::qemu_user();
    bakeoff_guest::kernel_cmdline(
        Some(&net),
        hostname,
        &bakeoff_guest::run_overrides(opts),
        machine == Machine::Microvm,
        tsc_khz,
    )
}

/// Starts QEMU with `argv` in its own process group (a Ctrl-C at the terminal reaches bakeoff,
/// which stops the VM gracefully, not QEMU directly), its output in `dir/qemu.log` and the
/// guest's serial console in `console`. QEMU refuses bad kernels, busy ports and bad options at
/// once, so this waits until QEMU either exits (an error, with its words) or the guest prints
/// something (at most 5 s). A thread reaps QEMU if it ends while this process lives.
pub async fn spawn_vmm(
    qemu: &Path,
    argv: &[String],
    dir: &Path,
    console: &Path,
) -> Result<u32, DriverError> {
    fs_err::write(console, b"")?;
    let qemu_log = dir.join("qemu.log");
    let log = fs_err::File::create(&qemu_log)?;
    let mut child = Command::new(qemu)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?.into_parts().0)
        .stderr(log.into_parts().0)
        .process_group(0)
        .spawn()
        .map_err(|e| DriverError::Engine(format!("cannot start {}: {e}", qemu.display())))?;
    let pid = child.id();
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let said = tail(&qemu_log, 3).replace("qemu-system-x86_64: ", "");
            let printed = tail(console, 5);
            let why = match (said.is_empty(), printed.is_empty()) {
                (false, _) => said,
                (true, false) => printed,
                (true, true) => "the guest reset before printing anything (too little memory, or a kernel QEMU cannot boot this way)".into(),
            };
            return Err(DriverError::Engine(format!(
                "QEMU exited at once ({status}): {why}"
            )));
        }
        if fs_err::metadata(console)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
            || start.elapsed() > Duration::from_secs(5)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// The guest's memory in use (total − available), from the virtio balloon's statistics. Turns
/// statistics polling on, then waits (≤ 3 s) for the guest's first report.
pub fn guest_memory(qmp_socket: &Path) -> Option<u64> {
    let path = "/machine/peripheral/balloon0";
    let enable = serde_json::json!({"execute": "qom-set",
        "arguments": {"path": path, "property": "guest-stats-polling-interval", "value": 1}});
    let get = serde_json::json!({"execute": "qom-get", "arguments": {"path": path, "property": "guest-stats"}});
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut first = true;
    loop {
        let cmds = if first {
            vec![enable.clone(), get.clone()]
        } else {
            vec![get.clone()]
        };
        first = false;
        let replies = qmp(qmp_socket, &cmds).ok()?;
        let reply: serde_json::Value = serde_json::from_str(replies.last()?).ok()?;
        let r = &reply["return"];
        if r["last-update"].as_u64().unwrap_or(0) > 0 {
            let stats = &r["stats"];
            let total = stats["stat-total-memory"].as_u64()?;
            let avail = stats["stat-available-memory"]
                .as_u64()
                .or_else(|| stats["stat-free-memory"].as_u64())?;
            return Some(total.saturating_sub(avail));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends QMP commands (after the capabilities handshake); returns the replies.
pub fn qmp(socket: &Path, commands: &[serde_json::Value]) -> std::io::Result<Vec<String>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?; // greeting
    let mut replies = Vec::new();
    for cmd in std::iter::once(&serde_json::json!({"execute": "qmp_capabilities"})).chain(commands)
    {
        writeln!(s, "{cmd}")?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(replies);
            }
            if line.contains("\"return\"") || line.contains("\"error\"") {
                replies.push(line.trim().to_string());
                break;
            }
        }
    }
    Ok(replies)
}

#[async_trait]
impl Driver for QemuDriver {
    fn platform(&self) -> Platform {
        Platform::Qemu
    }

    async fn available(&self) -> Result<(), DriverError> {
        find_qemu().map(|_| ())
    }

    async fn start(&self, req: StartRequest<'_>) -> Result<serde_json::Value, DriverError> {
        let image = req.image;
        crate::check_image(Platform::Qemu, image)?;
        let qemu = find_qemu()?;
        let missing = |role: &str| {
            DriverError::Engine(format!(
                "the microVM image in {} has no {role}",
                image.dir.display()
            ))
        };
        let bzimage = image.file("kernel").ok_or_else(|| missing("kernel"))?;
        let vmlinux = image.file("vmlinux");
        let initrd = image.file("initrd").ok_or_else(|| missing("initramfs"))?;
        let machine = match (self.options.machine, &vmlinux) {
            (Some(m), _) => m,
            (None, Some(_)) => Machine::Microvm,
            (None, None) => Machine::Q35,
        };
        let kernel = match machine {
            Machine::Microvm => vmlinux.clone().ok_or_else(|| {
                DriverError::Engine("the `microvm` machine needs a PVH vmlinux and this kernel has none; use --machine q35".into())
            })?,
            Machine::Q35 => bzimage,
        };
        let (accel, accel_reason) = self.choose_accel(&qemu, &kernel);
        let network = true;
        let cmdline = run_cmdline(machine, req.name, req.opts, bakeoff_guest::host_tsc_khz());
        bakeoff_guest::check_cmdline(&cmdline).map_err(|e| DriverError::Engine(e.to_string()))?;
        let floor = image
            .details
            .get("min_memory_mib")
            .and_then(|m| m.parse::<u64>().ok());
        let memory_mib = req
            .opts
            .memory
            .map(|b| b.div_ceil(1 << 20))
            .unwrap_or(DEFAULT_MEMORY_MIB.max(floor.unwrap_or(0)));
        if let Some(floor) = floor.filter(|f| memory_mib < *f) {
            return Err(DriverError::Engine(format!(
                "--memory {memory_mib}M is too small to boot this microVM: it needs at least {floor} MiB (its kernel takes most of it; `--kernel` can give a smaller one)"
            )));
        }
        let dir = req.instance_dir;
        let console = dir.join("console.log");
        let qmp_sock = dir.join("qmp.sock");
        let config = QemuConfig {
            machine,
            accel,
            memory_mib,
            cpus: req.opts.cpus.map(|c| c.ceil() as u32).unwrap_or(1),
            kernel,
            initrd: Some(initrd),
            cmdline,
            forwards: req.opts.publish.clone(),
            network,
            serial_log: console.clone(),
            qmp_socket: Some(qmp_sock.clone()),
            pidfile: None,
        };
        let argv = qemu_argv(&config);
        let pid = spawn_vmm(&qemu, &argv, dir, &console).await?;
        let h = QemuHandle {
            pid,
            machine,
            accel,
            memory_mib,
            console,
            qmp: qmp_sock,
            argv,
            accel_reason,
        };
        Ok(serde_json::to_value(h).expect("handle serializes"))
    }

    async fn status(&self, inst: &Instance) -> Result<Status, DriverError> {
        let h = handle(inst)?;
        if is_our_qemu(&h) {
            // The app may have exited while QEMU powers off.
            let console = std::fs::read_to_string(&h.console).unwrap_or_default();
            return Ok(match exit_status_from_console(&console) {
                Some(code) => Status::Exited { code: Some(code) },
                None => Status::Running,
            });
        }
        let console = std::fs::read_to_string(&h.console).unwrap_or_default();
        Ok(Status::Exited {
            code: exit_status_from_console(&console),
        })
    }

    async fn logs(
        &self,
        inst: &Instance,
        follow: bool,
        out: LogSink<'_>,
    ) -> Result<(), DriverError> {
        let h = handle(inst)?;
        crate::follow_console(&h.console, follow, out, || is_our_qemu(&h)).await
    }

    async fn stop(&self, inst: &Instance, grace: Duration) -> Result<(), DriverError> {
        let h = handle(inst)?;
        if !is_our_qemu(&h) {
            return Ok(());
        }
        let keys = serde_json::json!({"execute": "send-key", "arguments": {"keys": [
            {"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}]}});
        let _ = qmp(
            &h.qmp,
            &[keys, serde_json::json!({"execute": "system_powerdown"})],
        );
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !is_our_qemu(&h) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        kill(&h);
        Ok(())
    }

    async fn remove(&self, inst: &Instance) -> Result<(), DriverError> {
        let h = handle(inst)?;
        kill(&h);
        Ok(())
    }

    async fn memory_bytes(&self, inst: &Instance) -> Result<Option<u64>, DriverError> {
        let h = handle(inst)?;
        if !is_our_qemu(&h) {
            return Ok(None);
        }
        Ok(crate::vmm_rss(h.pid))
    }

    async fn guest_memory_bytes(&self, inst: &Instance) -> Option<u64> {
        let h = handle(inst).ok()?;
        if !is_our_qemu(&h) {
            return None;
        }
        let qmp_sock = h.qmp.clone();
        tokio::task::spawn_blocking(move || guest_memory(&qmp_sock))
            .await
            .ok()
            .flatten()
    }

    async fn app_started(&self, inst: &Instance) -> bool {
        let Ok(h) = handle(inst) else { return true };
        std::fs::read_to_string(&h.console)
            .map(|c| c.contains("bakeoff-init: starting "))
            .unwrap_or(false)
    }

    async fn diagnose(&self, inst: &Instance) -> Option<String> {
        let h = handle(inst).ok()?;
        let console = std::fs::read_to_string(&h.console).unwrap_or_default();
        let oom = [
            "Out of memory",
            "Initramfs unpacking failed",
            "System is deadlocked on memory",
            "not enough memory",
            "Kernel panic - not syncing: VFS",
        ]
        .iter()
        .any(|s| console.contains(s));
        if oom && exit_status_from_console(&console).is_none() {
            return Some(format!(
                "the microVM did not boot with {} MiB of memory (the kernel ran out of memory unpacking the initramfs); give it more with --memory",
                h.memory_mib
            ));
        }
        None
    }
}

/// Ends our QEMU by PID: SIGTERM, then SIGKILL if it lingers.
pub fn kill(h: &QemuHandle) {
    if !is_our_qemu(h) {
        return;
    }
    unsafe { libc::kill(h.pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && is_our_qemu(h) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_our_qemu(h) {
        unsafe { libc::kill(h.pid as i32, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_read_from_the_console() {
        let console =
            "hello: listening\r\nbakeoff-init: app exited with status 3\r\nreboot: Power down\r\n";
        assert_eq!(exit_status_from_console(console), Some(3));
        assert_eq!(exit_status_from_console("booting\n"), None);
    }

    #[test]
    fn run_cmdline_carries_network_hostname_and_overrides() {
        let opts = bakeoff_spec::RunOptions {
            env: vec![("GREETING".into(), "a b".into())],
            args: vec!["x".into()],
            ..Default::default()
        };
        let c = run_cmdline(Machine::Microvm, "web", &opts, None);
        assert!(c.contains("tsc=reliable"), "{c}");
        assert!(c.contains(" bakeoff.ip=10.0.2.15/24 bakeoff.gw=10.0.2.2 bakeoff.dns=10.0.2.3 bakeoff.hostname=web bakeoff.run="), "{c}");
        let encoded = c.rsplit_once("bakeoff.run=").unwrap().1;
        let decoded = bakeoff_guest::RunOverrides::decode(encoded).unwrap();
        assert_eq!(
            decoded.env,
            vec![("GREETING".to_string(), "a b".to_string())]
        );
        assert_eq!(decoded.args, Some(vec!["x".to_string()]));
        let plain = run_cmdline(Machine::Q35, "web", &Default::default(), None);
        assert!(
            !plain.contains("bakeoff.run") && !plain.contains("tsc=reliable"),
            "{plain}"
        );
    }
}
