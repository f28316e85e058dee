//! Is KVM usable? `/dev/kvm` existing proves nothing here (a nested guest hangs right after
//! real-mode setup), so boot the guest kernel under KVM with a deadline and see whether it gets
//! far enough to panic for want of a root file system. The verdict is cached per host kernel,
//! QEMU and guest kernel.
//! Shared by the QEMU and Rumprun drivers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use bakeoff_launch::qemu::Accel;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmVerdict {
    pub usable: bool,
    /// Why, in words (shown in the TCG warning).
    pub reason: String,
}

const DEADLINE: Duration = Duration::from_secs(8);

/// Probes once per (host kernel, QEMU, guest kernel) and caches the verdict under `cache_dir`.
pub fn kvm_verdict(qemu: &Path, kernel: &Path, cache_dir: &Path) -> KvmVerdict {
    let key = format!("{}|{}", qemu.display(), kernel.display());
    cached_verdict(cache_dir, "kvm-probe.json", &key, || {
        boot_probe(qemu, kernel)
    })
}

/// The shared part of every KVM probe: `/dev/kvm` must open; then the verdict cached in
/// `cache_dir/file` for this host kernel and `key`, else `boot()`'s, which is then cached.
pub fn cached_verdict(
    cache_dir: &Path,
    file: &str,
    key: &str,
    boot: impl FnOnce() -> KvmVerdict,
) -> KvmVerdict {
    if let Err(reason) = open_kvm() {
        return KvmVerdict {
            usable: false,
            reason,
        };
    }
    let key = format!(
        "{}|{key}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    super::host_fact(cache_dir, file, &key, |_| true, boot)
}

/// The accelerator for a VM: `forced` (`--accel`), else KVM when `verdict()` says it works,
/// else TCG with a one-line warning (once per process). Returns it with the reason.
pub fn choose_accel(
    forced: Option<Accel>,
    verdict: impl FnOnce() -> KvmVerdict,
) -> (Accel, String) {
    if let Some(a) = forced {
        return (a, "forced with --accel".into());
    }
    let v = verdict();
    if v.usable {
        return (Accel::Kvm, v.reason);
    }
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("bakeoff: warning: KVM is not usable ({}); using TCG software emulation, which is much slower", v.reason);
    }
    (Accel::Tcg, v.reason)
}

fn open_kvm() -> Result<(), String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("/dev/kvm does not exist".into()),
        Err(e) => Err(format!("/dev/kvm cannot be opened ({e})")),
    }
}

fn boot_probe(qemu: &Path, kernel: &Path) -> KvmVerdict {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            return KvmVerdict {
                usable: false,
                reason: format!("cannot create a probe dir: {e}"),
            }
        }
    };
    let log: PathBuf = dir.path().join("console.log");
    let child = Command::new(qemu)
        .args([
            "-M",
            "microvm",
            "-accel",
            "kvm",
            "-cpu",
            "host,-arch-capabilities",
            "-m",
            "64M",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
        ])
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 tsc=reliable"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return KvmVerdict {
                usable: false,
                reason: format!("QEMU could not start ({e})"),
            }
        }
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < DEADLINE => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return KvmVerdict {
                    usable: false,
                    reason: format!("a guest kernel under KVM did not finish booting within {} s (nested virtualization?)", DEADLINE.as_secs()),
                };
            }
        }
    }
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    if console.contains("Kernel panic") || console.contains("Run /init") || console.contains("VFS:")
    {
        KvmVerdict {
            usable: true,
            reason: format!(
                "a guest kernel booted under KVM in {:.1} s",
                start.elapsed().as_secs_f64()
            ),
        }
    } else {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        let why = err
            .lines()
            .last()
            .unwrap_or("the guest printed nothing")
            .to_string();
        KvmVerdict {
            usable: false,
            reason: format!("a guest kernel under KVM failed: {why}"),
        }
    }
}
