//! QEMU: boots the microVM image (kernel + initramfs with our PID 1) with user-mode networking,
//! each `-p` a hostfwd on the host side. The VMM runs in its own process group, recorded by PID;
//! its serial console goes to `console.log` in the instance dir (for `logs`), and a QMP socket
//! takes the graceful stop (Ctrl-Alt-Del, which our init turns into SIGTERM for the app).

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bakeoff_launch::cmdline::{check_cmdline, kernel_cmdline, GuestNet, KernelCmdline};
use bakeoff_launch::qemu::{qemu_argv, QemuConfig};
use bakeoff_launch::runfile::run_initrd;
use bakeoff_spec::Platform;
use bakeoff_state::{Handle, Instance, QemuHandle, Status};

pub use crate::vmm::QemuOptions;
pub use bakeoff_launch::qemu::{Accel, Machine};

use crate::vmm::{self, exit_status_from_console, find_qemu, kvm, qmp};
use crate::{Driver, DriverError, LogSink, StartRequest};

/// Memory a microVM gets without `--memory` (unless its image needs more).
pub const DEFAULT_MEMORY_MIB: u64 = bakeoff_launch::DEFAULT_MEMORY_MIB;

pub struct QemuDriver {
    pub options: QemuOptions,
}

/// The recorded handle; for the intent written before QEMU was spawned (pid 0), the pid
/// QEMU wrote in its pid file, or else the process whose command line names this console.
fn handle(inst: &Instance) -> Result<QemuHandle, DriverError> {
    let mut h = inst
        .handle
        .qemu()
        .cloned()
        .ok_or_else(|| DriverError::wrong_handle(inst, Platform::Qemu))?;
    if h.pid == 0 {
        h.pid = vmm::find_vmm(&vmm::qemu_pidfile(&h.console), &h.console).unwrap_or(0);
    }
    Ok(h)
}

/// The PID is still our QEMU (not a reused PID): its command line names our console log.
fn is_our_qemu(h: &QemuHandle) -> bool {
    h.pid != 0 && vmm::is_ours(h.pid, &h.console)
}

fn kill(h: &QemuHandle) {
    vmm::kill_vmm(h.pid, &h.console)
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
        kvm::choose_accel(self.options.accel, || {
            kvm::kvm_verdict(qemu, kernel, &cache)
        })
    }
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

#[async_trait]
impl Driver for QemuDriver {
    fn platform(&self) -> Platform {
        Platform::Qemu
    }

    async fn available(&self) -> Result<(), DriverError> {
        find_qemu().map(|_| ())
    }

    /// Where the VM will be found: its console path (in QEMU's command line) and pid file.
    fn intent(&self, req: &StartRequest<'_>) -> Option<Handle> {
        Some(Handle::Qemu(QemuHandle {
            pid: 0,
            machine: self.options.machine.unwrap_or(Machine::Microvm),
            accel: self.options.accel.unwrap_or(Accel::Tcg),
            memory_mib: 0,
            console: req.instance_dir.join("console.log"),
            qmp: req.instance_dir.join("qmp.sock"),
            argv: Vec::new(),
            accel_reason: "not chosen yet (starting)".into(),
        }))
    }

    async fn start(&self, req: StartRequest<'_>) -> Result<Handle, DriverError> {
        let image = req.image;
        crate::check_image(Platform::Qemu, image)?;
        crate::check_memory_fits(req.opts.memory, crate::host_memory_bytes())?;
        let qemu = find_qemu()?;
        let bzimage = image.require("kernel", "kernel")?;
        let vmlinux = image.file("vmlinux");
        let initrd = image.require("initrd", "initramfs")?;
        let machine = match (self.options.machine, &vmlinux) {
            (Some(m), _) => m,
            (None, Some(_)) => Machine::Microvm,
            (None, None) => Machine::Q35,
        };
        let kernel = match machine {
            Machine::Microvm => vmlinux.clone().ok_or_else(|| {
                DriverError::Refused("the `microvm` machine needs a PVH vmlinux and this kernel has none; use --machine q35".into())
            })?,
            Machine::Q35 => bzimage,
        };
        let warm = self.options.warm;
        if warm && machine != Machine::Microvm {
            return Err(DriverError::Refused(
                "--warm starts microVMs on QEMU's `microvm` machine only; leave out --machine q35"
                    .into(),
            ));
        }
        let (accel, accel_reason) = self.choose_accel(&qemu, &kernel);
        let network = true;
        // `-e` values and `-- ARGS` never go on the command line (which every local user can
        // read in `ps`): they travel in a per-run initramfs, 0600 in the instance dir.
        let for_run = KernelCmdline::for_run(Some(GuestNet::qemu_user()), req.name, req.opts);
        let overrides = for_run.overrides.clone();
        // A warm start boots (once) a template whose command line is the same for every run:
        // a placeholder hostname and PID 1 waiting on the console for the run's own values.
        let template = KernelCmdline {
            hostname: "bakeoff".into(),
            extra: vec![crate::warm::WAIT_FLAG.to_string()],
            ..for_run.clone()
        };
        let for_run = if warm { template } else { for_run };
        // Set only for bakeoff's minimal kernel, whose patches add what these two flags need.
        let minimal_hz = image.details.kernel_timer_hz.filter(|hz| *hz > 0);
        let cmdline = kernel_cmdline(&KernelCmdline {
            microvm: machine == Machine::Microvm,
            tsc_khz: vmm::host_tsc_khz_cached(self.options.cache_dir.as_deref()),
            lapic_timer_period: minimal_hz
                .map(|hz| (bakeoff_launch::qemu::APIC_BUS_HZ / u64::from(hz)) as u32),
            // Free memory goes back from 32 KiB blocks up (by hand, order 0 gave back no more).
            free_page_order: minimal_hz.map(|_| 3),
            overrides: Default::default(),
            ..for_run
        });
        check_cmdline(&cmdline)?;
        let floor = image.details.min_memory_mib;
        let memory_mib = req
            .opts
            .memory
            .map(|b| b.div_ceil(1 << 20))
            .unwrap_or(DEFAULT_MEMORY_MIB.max(floor.unwrap_or(0)));
        if let Some(floor) = floor.filter(|f| memory_mib < *f) {
            return Err(DriverError::Refused(format!(
                "--memory {memory_mib}M is too small to boot this microVM: it needs at least {floor} MiB (its kernel takes most of it; `--kernel` can give a smaller one)"
            )));
        }
        let dir = req.instance_dir;
        // For `diagnose`: the figure to name when the guest runs out of memory after all.
        if let Some(floor) = floor {
            let _ = std::fs::write(dir.join(MIN_MEMORY_FILE), floor.to_string());
        }
        let initrd = if overrides.is_empty() || warm {
            initrd
        } else {
            let per_run = dir.join("initrd-run.img");
            let base = fs_err::read(&initrd)?;
            bakeoff_state::write_private(&per_run, &run_initrd(&base, &overrides))?;
            per_run
        };
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
            open_network: self.options.host_loopback,
            serial_log: console.clone(),
            qmp_socket: Some(qmp_sock.clone()),
            pidfile: Some(vmm::qemu_pidfile(&console)),
            console_socket: None,
            incoming: None,
        };
        let (argv, pid) = if warm {
            let cache = self.options.cache_dir.as_deref().ok_or_else(|| {
                DriverError::Refused("--warm needs bakeoff's cache directory".into())
            })?;
            let state = crate::warm::snapshot(&qemu, &config, cache).await?;
            let console_sock = dir.join("console.sock");
            let config = QemuConfig {
                console_socket: Some(console_sock.clone()),
                incoming: Some(state),
                ..config
            };
            let argv = qemu_argv(&config);
            let ready = || qmp_sock.exists();
            let pid = vmm::spawn_vmm_until(&qemu, &argv, dir, &console, &ready).await?;
            if let Err(e) =
                crate::warm::resume(pid, &qmp_sock, &console_sock, req.name, overrides).await
            {
                vmm::kill_vmm(pid, &console);
                return Err(e);
            }
            vmm::page_out_read_once(pid, &argv);
            (argv, pid)
        } else {
            let argv = qemu_argv(&config);
            let pid = vmm::spawn_vmm(&qemu, &argv, dir, &console).await?;
            // The guest has printed: its firmware has copied the kernel and initrd in.
            vmm::page_out_read_once(pid, &argv);
            (argv, pid)
        };
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
        Ok(Handle::Qemu(h))
    }

    async fn status(&self, inst: &Instance) -> Result<Status, DriverError> {
        let h = handle(inst)?;
        if is_our_qemu(&h) {
            // The app may have exited while QEMU powers off.
            let console = std::fs::read_to_string(&h.console).unwrap_or_default();
            return Ok(match exit_status_from_console(&console) {
                Some(code) => {
                    // PID 1 powers the VM off right after the app's exit line and QEMU ends by
                    // itself a moment later; a kernel without an ACPI power-off halts instead.
                    // Either way an exited app leaves no QEMU behind: give it 2 s, then end it.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while is_our_qemu(&h) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    kill(&h);
                    Status::Exited { code: Some(code) }
                }
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
        vmm::follow_console(&h.console, follow, out, || is_our_qemu(&h)).await
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
        Ok(vmm::vmm_rss(h.pid))
    }

    async fn app_ready(&self, inst: &Instance) {
        if let Ok(h) = handle(inst) {
            if is_our_qemu(&h) {
                vmm::page_out_code(h.pid);
            }
        }
    }

    async fn memory_parts(&self, inst: &Instance) -> Vec<(String, u64)> {
        match handle(inst) {
            Ok(h) if is_our_qemu(&h) => vmm::vmm_rss_parts(h.pid, h.memory_mib, &h.argv),
            _ => Vec::new(),
        }
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

    async fn translation(&self, inst: &Instance) -> Option<vmm::Translation> {
        let h = handle(inst).ok()?;
        if !is_our_qemu(&h) {
            return None;
        }
        tokio::task::spawn_blocking(move || vmm::translation(&h.qmp))
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

    fn phase_console(&self, inst: &Instance) -> Option<std::path::PathBuf> {
        handle(inst).ok().map(|h| h.console)
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
            return Some(out_of_memory_sentence(h.memory_mib, &console, &h.console));
        }
        None
    }
}

/// Beside the console: the image's memory floor (MiB) as computed when the VM was started.
const MIN_MEMORY_FILE: &str = "min-memory-mib";

/// One sentence for a guest that ran out of memory while booting, naming a `--memory` that
/// would work: the image's floor when it is above what the VM had, else twice what it had
/// (the floor model was wrong for this app, so no smaller figure is certain).
fn out_of_memory_sentence(memory_mib: u64, console: &str, console_path: &Path) -> String {
    let floor: Option<u64> = std::fs::read_to_string(console_path.with_file_name(MIN_MEMORY_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let suggest = floor
        .filter(|f| *f > memory_mib)
        .unwrap_or(memory_mib * 2)
        .next_multiple_of(8);
    let what = if console.contains("Initramfs unpacking failed") {
        "the kernel ran out of memory unpacking the initramfs"
    } else {
        "the kernel ran out of memory"
    };
    format!(
        "the microVM did not boot with {memory_mib} MiB of memory ({what}); run it with --memory {suggest}M"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_names_a_figure_that_works() {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        let log = "Initramfs unpacking failed: write error\n";
        assert_eq!(
            out_of_memory_sentence(128, log, &console),
            "the microVM did not boot with 128 MiB of memory (the kernel ran out of memory unpacking the initramfs); run it with --memory 256M"
        );
        std::fs::write(dir.path().join(MIN_MEMORY_FILE), "150").unwrap();
        assert!(out_of_memory_sentence(128, log, &console).ends_with("--memory 152M"));
        assert!(
            out_of_memory_sentence(40, "Out of memory", &console).contains(
                "with 40 MiB of memory (the kernel ran out of memory); run it with --memory 152M"
            )
        );
    }

    #[test]
    fn another_drivers_record_is_refused() {
        let inst = Instance {
            name: "web".into(),
            platform: Platform::Docker,
            app: "a".into(),
            image: "i".into(),
            image_digest: "d".into(),
            created: 0,
            ports: vec![],
            status: Status::Running,
            handle: Handle::Docker(bakeoff_state::DockerHandle {
                container_id: "c".into(),
                container_name: "bakeoff-web".into(),
                image: "i".into(),
            }),
        };
        assert_eq!(
            handle(&inst).unwrap_err().to_string(),
            "the record of `web` holds a docker handle, not a qemu one"
        );
    }
}
