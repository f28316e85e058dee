//! Rumprun on QEMU: boots the `hw_virtio` unikernel with `-kernel app.bin -append '<json>'`
//! (Rumprun's configuration: static address on `vioif0`, env, hostname, argv), a virtio-net-pci
//! NIC on user networking with each `-p` a hostfwd, the serial console in `console.log`, and a
//! QMP socket. `-vga none` matters: with a VGA device Rumprun writes its console there.
//!
//! A unikernel does not power off when its program ends: Rumprun prints `=== _exit(N) called
//! ===`, unmounts and halts the CPU, and QEMU keeps running. The driver watches the console for
//! that, ends QEMU and reports N. It has no power button either, so `stop` ends QEMU (QMP `quit`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bakeoff_launch::qemu::Accel;
use bakeoff_launch::rumprun::{rumprun_qemu_argv, RumprunConfig, RumprunNet, RumprunQemuConfig};
use bakeoff_spec::Platform;
use bakeoff_state::{Handle, Instance, RumprunHandle, Status};

use crate::vmm::kvm::{self, KvmVerdict};
use crate::vmm::{
    self, find_qemu, qmp, rumprun_ended_from_console as ended_from_console, QemuOptions,
};
use crate::{Driver, DriverError, LogSink, StartRequest};

/// How long a KVM probe boot may take to reach the program.
const KVM_PROBE_DEADLINE: Duration = Duration::from_secs(8);

/// Why Rumprun stopped without an exit status, when the console says.
fn failure_from_console(console: &str, memory_mib: u64) -> Option<String> {
    let lines: Vec<&str> = console
        .lines()
        .map(|l| l.trim_end_matches('\r').trim())
        .collect();
    if lines
        .iter()
        .any(|l| l.starts_with("cannot handle page request"))
    {
        return Some(format!("the unikernel ran out of memory while booting with {memory_mib} MiB; give it more with --memory"));
    }
    if let Some(t) = lines.iter().find(|l| l.starts_with("FATAL TRAP")) {
        return Some(format!("the unikernel crashed ({t})"));
    }
    if let Some(p) = lines.iter().find(|l| l.starts_with("PANIC: ")) {
        return Some(format!(
            "the unikernel panicked ({})",
            p.trim_start_matches("PANIC: ")
        ));
    }
    if lines.iter().any(|l| l.starts_with("=== bootstrap failed")) {
        let why = lines
            .iter()
            .rev()
            .find(|l| {
                l.starts_with("rumprun: ") || l.contains("json") || l.contains("no match for key")
            })
            .copied();
        return Some(match why {
            Some(w) => format!("the unikernel could not start its program ({w})"),
            None => "the unikernel could not start its program (see `bakeoff logs`)".into(),
        });
    }
    None
}

pub struct RumprunDriver {
    pub options: QemuOptions,
}

impl RumprunDriver {
    pub fn new(options: QemuOptions) -> RumprunDriver {
        RumprunDriver { options }
    }

    fn choose_accel(&self, qemu: &Path, kernel: &Path) -> (Accel, String) {
        let cache = self
            .options
            .cache_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let key = format!("rumprun|{}", qemu.display());
        kvm::choose_accel(self.options.accel, || {
            kvm::cached_verdict(&cache, "kvm-probe-rumprun.json", &key, || {
                let (usable, reason) = kvm_boot_probe(qemu, kernel);
                KvmVerdict { usable, reason }
            })
        })
    }
}

/// The recorded handle; for the intent written before QEMU was spawned (pid 0), the process
/// whose command line names this console.
fn handle(inst: &Instance) -> Result<RumprunHandle, DriverError> {
    let mut h = inst
        .handle
        .rumprun()
        .cloned()
        .ok_or_else(|| DriverError::wrong_handle(inst, Platform::Rumprun))?;
    if h.pid == 0 {
        h.pid = vmm::find_vmm(&vmm::qemu_pidfile(&h.console), &h.console).unwrap_or(0);
    }
    Ok(h)
}

fn read_console(h: &RumprunHandle) -> String {
    vmm::read_console(&h.console)
}

/// The PID is still our QEMU: its command line names our console log.
fn is_our_qemu(h: &RumprunHandle) -> bool {
    h.pid != 0 && vmm::is_ours(h.pid, &h.console)
}

fn kill(h: &RumprunHandle) {
    vmm::kill_vmm(h.pid, &h.console)
}

/// Ends QEMU once the program has ended (QEMU would idle on a halted CPU forever).
fn reap_if_ended(h: &RumprunHandle) -> Option<Option<i32>> {
    let ended = ended_from_console(&read_console(h));
    if ended.is_some() && is_our_qemu(h) {
        kill(h);
    }
    ended
}

/// Is KVM usable for Rumprun here? Boots this unikernel under KVM without a NIC and waits for
/// its program to be called (the verdict is cached by `probe::cached_verdict`). Here, nested KVM
/// stops Rumprun with "KVM internal error ... emulation failure" at its first SSE instruction.
fn kvm_boot_probe(qemu: &Path, kernel: &Path) -> (bool, String) {
    let Ok(dir) = tempfile::tempdir() else {
        return (false, "cannot create a probe directory".into());
    };
    let log = dir.path().join("console.log");
    let err_log = dir.path().join("qemu.log");
    let config = RumprunQemuConfig {
        accel: Accel::Kvm,
        memory_mib: 64,
        kernel: kernel.to_path_buf(),
        config: r#"{"cmdline":"bakeoff-kvm-probe"}"#.into(),
        forwards: None,
        serial_log: log.clone(),
        qmp_socket: None,
    };
    let Ok(err_file) = std::fs::File::create(&err_log) else {
        return (false, "cannot create a probe log".into());
    };
    let child = Command::new(qemu)
        .args(rumprun_qemu_argv(&config))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("QEMU could not start ({e})")),
    };
    let start = Instant::now();
    // QEMU pauses (rather than exits) on a KVM internal error, so watch its messages too.
    let kvm_error = || {
        std::fs::read_to_string(&err_log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("KVM"))
            .map(|l| {
                l.trim()
                    .trim_start_matches("qemu-system-x86_64: ")
                    .to_string()
            })
    };
    let verdict = loop {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("=== calling")
        {
            break (
                true,
                format!(
                    "a Rumprun unikernel reached its program under KVM in {:.1} s",
                    start.elapsed().as_secs_f64()
                ),
            );
        }
        if let Some(e) = kvm_error() {
            break (false, format!("a Rumprun unikernel under KVM failed: {e}"));
        }
        match child.try_wait() {
            Ok(None) if start.elapsed() < KVM_PROBE_DEADLINE => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(Some(status)) => {
                break (
                    false,
                    format!("a Rumprun unikernel under KVM ended early ({status})"),
                )
            }
            _ => {
                break (
                    false,
                    format!(
                        "a Rumprun unikernel under KVM did not reach its program within {} s",
                        KVM_PROBE_DEADLINE.as_secs()
                    ),
                )
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

#[async_trait]
impl Driver for RumprunDriver {
    fn platform(&self) -> Platform {
        Platform::Rumprun
    }

    async fn available(&self) -> Result<(), DriverError> {
        find_qemu().map(|_| ())
    }

    /// Where the VM will be found: its console path, which is in QEMU's command line.
    fn intent(&self, req: &StartRequest<'_>) -> Option<Handle> {
        Some(Handle::Rumprun(RumprunHandle {
            pid: 0,
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
        crate::check_image(Platform::Rumprun, image)?;
        let qemu = find_qemu()?;
        let kernel = image.require(
            "kernel",
            "hw_virtio kernel; build it again with --target rumprun",
        )?;
        let config =
            RumprunConfig::for_run(image, req.opts, req.name, Some(RumprunNet::qemu_user()))
                .render()?;
        let (accel, accel_reason) = self.choose_accel(&qemu, &kernel);
        let memory_mib = bakeoff_launch::memory_mib(req.opts);
        let dir = req.instance_dir;
        let console = dir.join("console.log");
        let qmp_sock = dir.join("qmp.sock");
        let argv = rumprun_qemu_argv(&RumprunQemuConfig {
            accel,
            memory_mib,
            kernel,
            config,
            forwards: Some(req.opts.publish.clone()),
            serial_log: console.clone(),
            qmp_socket: Some(qmp_sock.clone()),
        });
        let pid = vmm::spawn_vmm(&qemu, &argv, dir, &console).await?;
        let h = RumprunHandle {
            pid,
            accel,
            memory_mib,
            console,
            qmp: qmp_sock,
            argv,
            accel_reason,
        };
        Ok(Handle::Rumprun(h))
    }

    async fn status(&self, inst: &Instance) -> Result<Status, DriverError> {
        let h = &handle(inst)?;
        if let Some(code) = reap_if_ended(h) {
            return Ok(Status::Exited { code });
        }
        Ok(if is_our_qemu(h) {
            Status::Running
        } else {
            Status::Exited { code: None }
        })
    }

    async fn logs(
        &self,
        inst: &Instance,
        follow: bool,
        out: LogSink<'_>,
    ) -> Result<(), DriverError> {
        let h = &handle(inst)?;
        vmm::follow_console(&h.console, follow, out, || {
            is_our_qemu(h) && reap_if_ended(h).is_none()
        })
        .await
    }

    async fn stop(&self, inst: &Instance, grace: Duration) -> Result<(), DriverError> {
        let h = &handle(inst)?;
        if !is_our_qemu(h) {
            return Ok(());
        }
        // No power button in a unikernel: ask QEMU itself to quit.
        let _ = qmp(&h.qmp, &[serde_json::json!({"execute": "quit"})]);
        let deadline = Instant::now() + grace.min(Duration::from_secs(5));
        while Instant::now() < deadline {
            if !is_our_qemu(h) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        kill(h);
        Ok(())
    }

    async fn remove(&self, inst: &Instance) -> Result<(), DriverError> {
        kill(&handle(inst)?);
        Ok(())
    }

    async fn memory_bytes(&self, inst: &Instance) -> Result<Option<u64>, DriverError> {
        let h = &handle(inst)?;
        if !is_our_qemu(h) {
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

    async fn app_started(&self, inst: &Instance) -> bool {
        let Ok(h) = handle(inst) else { return true };
        let h = &h;
        read_console(h).contains("=== calling")
    }

    async fn diagnose(&self, inst: &Instance) -> Option<String> {
        let h = &handle(inst).ok()?;
        failure_from_console(&read_console(h), h.memory_mib)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_read_from_the_console() {
        let running = "=== calling \"hello\" main() ===\r\n\r\nhello: listening on port 8080\r\n";
        assert_eq!(ended_from_console(running), None);
        let ok = format!("{running}=== main() of \"hello\" returned 0 ===\r\n\r\n=== _exit(0) called ===\r\nrump kernel halting...\r\nhalted");
        assert_eq!(ended_from_console(&ok), Some(Some(0)));
        let failed = format!(
            "{running}\r\n=== ERROR: _exit(3) called ===\r\nrump kernel halting...\r\nhalted"
        );
        assert_eq!(ended_from_console(&failed), Some(Some(3)));
        // The app printing the words is not an exit.
        assert_eq!(
            ended_from_console("say === _exit(1) called === twice\nhalted now\n"),
            None
        );
        let panic = "rump kernel bare metal bootstrap\r\nPANIC: out of memory\r\nhalted\r\n";
        assert_eq!(ended_from_console(panic), Some(None));
        assert_eq!(
            failure_from_console(panic, 64).unwrap(),
            "the unikernel panicked (out of memory)"
        );
        let bad = "rumprun: no match for key \"envs\"\r\n\r\n=== bootstrap failed\r\nhalted\r\n";
        assert_eq!(ended_from_console(bad), Some(None));
        assert_eq!(
            failure_from_console(bad, 64).unwrap(),
            "the unikernel could not start its program (rumprun: no match for key \"envs\")"
        );
        // Too little memory: a trap during bootstrap, and no halt.
        let small = "kern.module.path=/stand/amd64/7.99.34/modules\r\ncannot handle page request order 6/0x1000!\r\nFATAL TRAP: page fault at 0x27bfea (0x10)";
        assert_eq!(ended_from_console(small), Some(None));
        assert_eq!(
            failure_from_console(small, 6).unwrap(),
            "the unikernel ran out of memory while booting with 6 MiB; give it more with --memory"
        );
    }
}
