//! Warm starts of QEMU microVMs (`--warm`). The guest boots once per image, memory size and
//! CPU count into a template whose PID 1 waits on its console for the run's values
//! (`bakeoff.wait=console`); QEMU saves that state into the cache. Each warm run then loads the
//! state instead of booting, and QEMU's driver writes the run's values on the console as one
//! line (`bakeoff_init::resume`): the wall clock, fresh randomness, the hostname, `-e` and
//! `-- ARGS`. The kernel's boot, most of a microVM's launch under TCG, is paid once.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bakeoff_init::phases::{parse_phase_line, Phase};
use bakeoff_init::resume::{RunLine, WAITING};
use bakeoff_init::{RunOverrides, LOG_PREFIX};
use bakeoff_launch::qemu::{qemu_argv, QemuConfig};
use sha2::{Digest, Sha256};

use crate::vmm::{self, qmp};
use crate::DriverError;

/// What the kernel command line of a template carries.
pub const WAIT_FLAG: &str = "bakeoff.wait=console";

/// How long a template may take to boot to PID 1's wait, to be saved, and to be loaded.
const BOOT_LIMIT: Duration = Duration::from_secs(90);
const SAVE_LIMIT: Duration = Duration::from_secs(60);
const LOAD_LIMIT: Duration = Duration::from_secs(30);

/// The cache key of a template: QEMU (path, size, time), the kernel's and initramfs' files
/// (path, size, time) and the whole argv but for the per-run paths.
fn key(qemu: &Path, template: &QemuConfig) -> String {
    hex::encode(&Sha256::digest(key_text(qemu, template).as_bytes())[..8])
}

/// What [`key`] hashes, one item per line (kept beside the snapshot as `key.txt`).
fn key_text(qemu: &Path, template: &QemuConfig) -> String {
    let stamp = |p: &Path| -> String {
        let m = std::fs::metadata(p).ok();
        format!(
            "{} {} {:?}",
            p.display(),
            m.as_ref().map_or(0, |m| m.len()),
            m.and_then(|m| m.modified().ok())
        )
    };
    // The host's TSC rate is measured anew by every process and varies in its last digits;
    // a restored guest keeps the template's (it read the command line when it booted).
    let cmdline: Vec<&str> = template
        .cmdline
        .split(' ')
        .filter(|w| !w.starts_with("tsc_early_khz="))
        .collect();
    let neutral = QemuConfig {
        cmdline: cmdline.join(" "),
        serial_log: "console".into(),
        qmp_socket: Some("qmp".into()),
        pidfile: None,
        forwards: Vec::new(),
        console_socket: None,
        incoming: None,
        ..template.clone()
    };
    let mut lines = vec![stamp(qemu), stamp(&template.kernel)];
    lines.extend(template.initrd.as_deref().map(stamp));
    lines.extend(qemu_argv(&neutral));
    lines.join("\n") + "\n"
}

/// The saved state for `template` (a microVM config whose command line carries
/// [`WAIT_FLAG`]; its console, QMP socket, pid file and forwards are not used), made now when
/// `cache` has none. Takes one boot of the guest and ~0.2 s to save, the first time.
pub async fn snapshot(
    qemu: &Path,
    template: &QemuConfig,
    cache: &Path,
) -> Result<PathBuf, DriverError> {
    let root = cache.join("snapshots");
    let dir = root.join(key(qemu, template));
    let state = dir.join("state");
    if state.is_file() {
        return Ok(state);
    }
    if root.display().to_string().contains('\'') {
        return Err(DriverError::Refused(format!(
            "--warm cannot keep its snapshot under {}: the path has a quote",
            root.display()
        )));
    }
    tracing::info!("booting the guest once for its warm-start snapshot");
    fs_err::create_dir_all(&root)?;
    let tmp = tempfile::Builder::new()
        .prefix(".making-")
        .tempdir_in(&root)?;
    let console = tmp.path().join("console.log");
    let qmp_sock = tmp.path().join("qmp.sock");
    let config = QemuConfig {
        serial_log: console.clone(),
        qmp_socket: Some(qmp_sock.clone()),
        pidfile: None,
        forwards: Vec::new(),
        console_socket: None,
        incoming: None,
        ..template.clone()
    };
    let log = fs_err::File::create(tmp.path().join("qemu.log"))?;
    let mut cmd = Command::new(qemu);
    cmd.args(qemu_argv(&config))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?.into_parts().0)
        .stderr(log.into_parts().0)
        .process_group(0);
    // The template has no instance record: if bakeoff dies while making it, so does QEMU (and
    // if bakeoff died before the request, QEMU does not start).
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of ours.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("bakeoff ended before QEMU started"));
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().map_err(|source| DriverError::Spawn {
        program: qemu.to_path_buf(),
        source,
    })?;
    fs_err::write(tmp.path().join("key.txt"), key_text(qemu, template))?;
    let made = save(&mut child, &console, &qmp_sock, &tmp.path().join("state")).await;
    let _ = child.kill();
    let _ = child.wait();
    made?;
    let kept = tmp.keep();
    if std::fs::rename(&kept, &dir).is_err() {
        // Another run made it meanwhile: keep theirs.
        let _ = std::fs::remove_dir_all(&kept);
    }
    // The template's console stays beside its state (what its boot printed: `zeroed … MiB`).
    let _ = std::fs::rename(dir.join("console.log"), dir.join("template.log"));
    for f in ["qmp.sock", "qemu.log"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    if state.is_file() {
        Ok(state)
    } else {
        Err(DriverError::Refused(format!(
            "the warm-start snapshot was not kept in {}",
            dir.display()
        )))
    }
}

/// Waits for the template's PID 1 to wait, then has QEMU save the stopped guest into `state`.
async fn save(
    child: &mut std::process::Child,
    console: &Path,
    qmp_sock: &Path,
    state: &Path,
) -> Result<(), DriverError> {
    let failed =
        |why: String| DriverError::Refused(format!("the warm-start template failed: {why}"));
    let begun = Instant::now();
    let waiting = format!("{LOG_PREFIX}{WAITING}");
    loop {
        let text = vmm::read_console(console);
        if text.contains(&waiting) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!(
                "QEMU ended ({status}) before PID 1 waited: {}",
                vmm::tail(console, 5)
            )));
        }
        if begun.elapsed() > BOOT_LIMIT {
            return Err(failed(format!(
                "PID 1 did not wait for its run within {} s: {}",
                BOOT_LIMIT.as_secs(),
                vmm::tail(console, 5)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let uri = format!("exec:cat > '{}'", state.display());
    let replies = qmp(
        qmp_sock,
        &[
            serde_json::json!({"execute": "stop"}),
            serde_json::json!({"execute": "migrate", "arguments": {"uri": uri}}),
        ],
    )
    .map_err(|e| failed(format!("QMP: {e}")))?;
    if let Some(e) = replies.iter().find(|r| r.contains("\"error\"")) {
        return Err(failed(format!("QEMU refused to save the guest: {e}")));
    }
    migrated(qmp_sock, SAVE_LIMIT, None).await.map_err(failed)?;
    let _ = qmp(qmp_sock, &[serde_json::json!({"execute": "quit"})]);
    Ok(())
}

/// Waits until QEMU's migration (a save, or the load of `-incoming`) completed.
async fn migrated(qmp_sock: &Path, limit: Duration, pid: Option<u32>) -> Result<(), String> {
    let begun = Instant::now();
    loop {
        if pid.is_some_and(|p| !vmm::pid_alive(p)) {
            let log = qmp_sock.with_file_name("qemu.log");
            return Err(format!("QEMU ended: {}", vmm::tail(&log, 3)));
        }
        let replies =
            qmp(qmp_sock, &[serde_json::json!({"execute": "query-migrate"})]).unwrap_or_default();
        // The first reply is the capabilities handshake's.
        let reply = replies.last().map(String::as_str).unwrap_or("");
        if reply.contains("\"completed\"") {
            return Ok(());
        }
        if reply.contains("\"failed\"") || reply.contains("\"cancelled\"") {
            return Err(format!("QEMU's migration stopped: {reply}"));
        }
        if begun.elapsed() > limit {
            return Err(format!(
                "QEMU did not finish moving the guest's state within {} s ({reply})",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// After QEMU started with `incoming`: waits until the state is loaded, resumes the guest and
/// gives its PID 1 the run's values on the console.
pub async fn resume(
    pid: u32,
    qmp_sock: &Path,
    console_sock: &Path,
    hostname: &str,
    run: RunOverrides,
) -> Result<(), DriverError> {
    let failed = |why: String| DriverError::Refused(format!("the warm start failed: {why}"));
    migrated(qmp_sock, LOAD_LIMIT, Some(pid))
        .await
        .map_err(failed)?;
    qmp(qmp_sock, &[serde_json::json!({"execute": "cont"})])
        .map_err(|e| failed(format!("QMP: {e}")))?;
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(&mut fs_err::File::open("/dev/urandom")?, &mut seed)?;
    let line = RunLine {
        unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        seed,
        hostname: match bakeoff_launch::cmdline::guest_hostname(hostname) {
            h if h.is_empty() => "bakeoff".to_string(),
            h => h,
        },
        run,
    };
    let mut s = UnixStream::connect(console_sock)
        .map_err(|e| failed(format!("cannot reach the console: {e}")))?;
    s.write_all(format!("{}\n", line.to_line()).as_bytes())
        .map_err(|e| failed(format!("cannot write on the console: {e}")))?;
    // Stay connected until PID 1 answers (QEMU drops what a closed connection left unread),
    // reading what the guest prints meanwhile (it also goes to the console's log).
    let begun = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(failed(format!("the console: {e}"))),
        }
        // Whole lines only: a read can end mid-line.
        let text = String::from_utf8_lossy(&seen);
        let whole = text.rsplit_once('\n').map_or("", |(w, _)| w);
        for line in whole.lines().map(|l| l.trim_end_matches('\r')) {
            match parse_phase_line(line) {
                Some((Phase::Resumed, _)) => return Ok(()),
                Some(_) => {}
                None if line.starts_with(LOG_PREFIX) => {
                    return Err(failed(format!("PID 1 said: {line}")))
                }
                None => {}
            }
        }
        if begun.elapsed() > LOAD_LIMIT || !vmm::pid_alive(pid) {
            break;
        }
    }
    Err(failed(format!(
        "PID 1 did not take the run's values within {} s",
        LOAD_LIMIT.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakeoff_launch::qemu::{Accel, Machine};

    fn config() -> QemuConfig {
        QemuConfig {
            machine: Machine::Microvm,
            accel: Accel::Tcg,
            memory_mib: 128,
            cpus: 1,
            kernel: "/nonexistent/vmlinux".into(),
            initrd: Some("/nonexistent/initrd".into()),
            cmdline: format!("console=ttyS0 {WAIT_FLAG}"),
            forwards: Vec::new(),
            network: true,
            open_network: false,
            serial_log: "/a/console.log".into(),
            qmp_socket: Some("/a/qmp.sock".into()),
            pidfile: None,
            console_socket: None,
            incoming: None,
        }
    }

    /// One snapshot serves every run of an image at one size: the per-run paths and ports do
    /// not change the key; what the guest is made of does.
    #[test]
    fn the_key_ignores_per_run_paths_and_ports() {
        let q = Path::new("/usr/bin/qemu-system-x86_64");
        let a = config();
        let b = QemuConfig {
            serial_log: "/b/console.log".into(),
            qmp_socket: Some("/b/qmp.sock".into()),
            pidfile: Some("/b/qemu.pid".into()),
            forwards: vec![bakeoff_spec::parse_publish("127.0.0.1:8080:8080").unwrap()],
            console_socket: Some("/b/console.sock".into()),
            incoming: Some("/c/state".into()),
            ..a.clone()
        };
        assert_eq!(key(q, &a), key(q, &b));
        // Nor the host's TSC rate, measured anew by each process.
        let c = QemuConfig {
            cmdline: format!("{} tsc_early_khz=2099589", a.cmdline),
            ..a.clone()
        };
        let d = QemuConfig {
            cmdline: format!("{} tsc_early_khz=2099650", a.cmdline),
            ..a.clone()
        };
        assert_eq!(key(q, &c), key(q, &d));
        for other in [
            QemuConfig {
                memory_mib: 64,
                ..a.clone()
            },
            QemuConfig {
                cpus: 2,
                ..a.clone()
            },
            QemuConfig {
                cmdline: format!("{} bakeoff.ip=10.0.2.15/24", a.cmdline),
                ..a.clone()
            },
            QemuConfig {
                initrd: Some("/nonexistent/other".into()),
                ..a.clone()
            },
        ] {
            assert_ne!(key(q, &a), key(q, &other));
        }
    }
}
