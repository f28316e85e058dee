//! What the drivers share, so that no driver imports another: finding programs, running host
//! commands with a deadline, spawning a VMM in its own process group, recognising and ending
//! our own VMM processes, reading and following a serial console, QMP, the host's address
//! slots and network plans, and host probes (KVM, the TSC frequency, a process's RSS).

pub mod kvm;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bakeoff_launch::NetPlan;
use bakeoff_spec::Platform;

use crate::{DriverError, LogSink};

pub const QEMU: &str = "qemu-system-x86_64";

/// Choices the user can force for QEMU-run VMs (`--accel`, `--machine`; the Rumprun driver
/// takes the accelerator only); `None` decides automatically.
#[derive(Debug, Clone, Default)]
pub struct QemuOptions {
    pub accel: Option<bakeoff_launch::qemu::Accel>,
    pub machine: Option<bakeoff_launch::qemu::Machine>,
    /// Where the KVM probe verdict is cached.
    pub cache_dir: Option<PathBuf>,
    /// `--host-loopback`: the microVM may reach the host's loopback (and the outside) through
    /// slirp; by default its network is restricted to the `-p` forwards.
    pub host_loopback: bool,
    /// `--warm`: start microVMs from a snapshot of their booted guest (see [`crate::warm`]).
    pub warm: bool,
}

/// A program's path on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// QEMU on PATH, or why it is unavailable.
pub fn find_qemu() -> Result<PathBuf, DriverError> {
    which(QEMU).ok_or_else(|| {
        DriverError::Unavailable(format!(
            "QEMU is not installed ({QEMU} is not on PATH); install Debian's qemu-system-x86 with `apt-get install -y qemu-system-x86`"
        ))
    })
}

/// A host command that did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{shown}` could not start ({source})")]
    Spawn {
        shown: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{shown}` failed ({status}): {why}")]
    Failed {
        shown: String,
        status: ExitStatus,
        /// The last line of its error output (or of its output).
        why: String,
    },
    #[error("`{shown}` did not finish within {:.1} s", deadline.as_secs_f64())]
    Timeout { shown: String, deadline: Duration },
}

/// Runs a command with a deadline; returns its output.
pub fn run_cmd(argv: &[String], deadline: Duration) -> Result<String, CommandError> {
    let shown = argv.join(" ");
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            shown: shown.clone(),
            source,
        })?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                if status.success() {
                    return Ok(out);
                }
                let last = |t: &str| {
                    t.lines()
                        .rfind(|l| !l.trim().is_empty())
                        .map(|l| l.trim().to_string())
                };
                let why = last(&err)
                    .or_else(|| last(&out))
                    .unwrap_or_else(|| "no output".into());
                return Err(CommandError::Failed { shown, status, why });
            }
            Ok(None) if start.elapsed() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Timeout { shown, deadline });
            }
        }
    }
}

/// Runs a network plan's setup; on a failure runs the teardown and returns the failure.
pub fn apply_plan(plan: &NetPlan) -> Result<(), CommandError> {
    for cmd in &plan.setup {
        if let Err(e) = run_cmd(cmd, Duration::from_secs(10)) {
            undo_plan(plan);
            return Err(e);
        }
    }
    Ok(())
}

/// Runs a network plan's teardown, ignoring failures (a step may never have happened).
pub fn undo_plan(plan: &NetPlan) {
    for cmd in &plan.teardown {
        let _ = run_cmd(cmd, Duration::from_secs(10));
    }
}

/// Claims the lowest free address slot of `platform` for `owner`: a file
/// `<state>/slots/<platform>/<n>` created atomically, holding the owner's name. A slot whose
/// owner's instance directory is gone is taken back.
pub fn claim_slot(
    instance_dir: &Path,
    platform: Platform,
    owner: &str,
    max: u16,
) -> Result<u16, DriverError> {
    let instances = instance_dir
        .parent()
        .ok_or_else(|| DriverError::NotInStateDir(instance_dir.to_path_buf()))?;
    let slots = instances
        .parent()
        .unwrap_or(instances)
        .join("slots")
        .join(platform.as_str());
    fs_err::create_dir_all(&slots)?;
    for n in 0..max {
        let file = slots.join(n.to_string());
        match fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
        {
            Ok(mut f) => {
                f.write_all(owner.as_bytes())?;
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&file).unwrap_or_default();
                if holder == owner || (!holder.is_empty() && !instances.join(&holder).exists()) {
                    fs_err::write(&file, owner)?;
                    return Ok(n);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(DriverError::SlotsTaken { max, platform })
}

/// Gives a slot back (only when `owner` holds it).
pub fn release_slot(instance_dir: &Path, platform: Platform, owner: &str, slot: u16) {
    let Some(root) = instance_dir.parent().and_then(Path::parent) else {
        return;
    };
    let file = root
        .join("slots")
        .join(platform.as_str())
        .join(slot.to_string());
    if std::fs::read_to_string(&file)
        .map(|h| h == owner)
        .unwrap_or(false)
    {
        let _ = std::fs::remove_file(file);
    }
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

/// The PID is still our VMM (not a reused PID): its command line names `marker` (the
/// instance's console log or API socket).
pub fn is_ours(pid: u32, marker: &Path) -> bool {
    pid_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&marker.display().to_string()))
            .unwrap_or(false)
}

/// Sends `signal` to a process.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale PID is checked by callers.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Ends our VMM by PID: SIGTERM, then SIGKILL if it lingers (3 s).
pub fn kill_vmm(pid: u32, marker: &Path) {
    if !is_ours(pid, marker) {
        return;
    }
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && is_ours(pid, marker) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_ours(pid, marker) {
        signal(pid, libc::SIGKILL);
    }
}

/// The VMM of an instance recorded before its pid was known: the pid in `pidfile` if that
/// process is ours (its command line names `marker`), else any live process whose command line
/// names `marker` (the VMM was spawned but had not written its pid file yet).
pub fn find_vmm(pidfile: &Path, marker: &Path) -> Option<u32> {
    if let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    {
        if is_ours(pid, marker) {
            return Some(pid);
        }
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| pid != std::process::id() && is_ours(pid, marker))
}

/// The environment every VMM runs with (a bench report records it before the VMM's flags):
/// glibc's mmap threshold held at its starting value of 128 KiB. Left alone, glibc raises it to
/// the size of every large block QEMU frees (up to 32 MiB) and then keeps up to twice that free
/// on its heaps, so a microVM's resident memory grew under load and jumped by up to 32 MiB at
/// times. Measured here (2 Dec, the example under TCG, two alternating benches each): RSS 64.3
/// and 64.9 MiB with samples 63.9–65.8, against 66.1 and 66.9 with samples up to 81.8; req/s
/// and launch no different.
pub const VMM_ENV: [(&str, &str); 1] = [("MALLOC_MMAP_THRESHOLD_", "131072")];

/// Starts a VMM with `argv` in its own process group (a Ctrl-C at the terminal reaches bakeoff,
/// which stops the VM gracefully, not the VMM directly), its output in `dir/qemu.log` and the
/// guest's serial console in `console`. The VMM refuses bad kernels, busy ports and bad options
/// at once, so this waits until it either exits (an error, with its words) or the guest prints
/// something (at most 5 s). A thread reaps the VMM if it ends while this process lives.
pub async fn spawn_vmm(
    program: &Path,
    argv: &[String],
    dir: &Path,
    console: &Path,
) -> Result<u32, DriverError> {
    let printed = || {
        fs_err::metadata(console)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    };
    spawn_vmm_until(program, argv, dir, console, &printed).await
}

/// [`spawn_vmm`], waiting for `ready` instead of the guest's first output (a VMM loading a
/// snapshot prints nothing until it is resumed).
pub async fn spawn_vmm_until(
    program: &Path,
    argv: &[String],
    dir: &Path,
    console: &Path,
    ready: &(dyn Fn() -> bool + Sync),
) -> Result<u32, DriverError> {
    fs_err::write(console, b"")?;
    let vmm_log = dir.join("qemu.log");
    let log = fs_err::File::create(&vmm_log)?;
    let mut cmd = Command::new(program);
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?.into_parts().0)
        .stderr(log.into_parts().0)
        .process_group(0);
    cmd.envs(VMM_ENV);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe { cmd.pre_exec(small_pages) };
    let mut child = cmd.spawn().map_err(|source| DriverError::Spawn {
        program: program.to_path_buf(),
        source,
    })?;
    let pid = child.id();
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let said = tail(&vmm_log, 3).replace(&format!("{QEMU}: "), "");
            let printed = tail(console, 5);
            let why = match (said.is_empty(), printed.is_empty()) {
                (false, _) => said,
                (true, false) => printed,
                (true, true) => "the guest reset before printing anything (too little memory, or a kernel QEMU cannot boot this way)".into(),
            };
            return Err(DriverError::VmmExited { status, why });
        }
        if ready() || start.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// Runs in the VMM's process before exec: no transparent huge pages (PR_SET_THP_DISABLE, kept
/// across exec). QEMU asks for huge pages on the guest's RAM and its translation cache, so each
/// page the guest touches made 2 MiB resident: measured here, the minimal kernel's VM held 30
/// MiB of guest RAM at `-m 32` and `-m 64` alike, 23 MiB with small pages, and its RSS went from
/// 96 to 85 MiB. Resident memory is then what the guest really uses, as the bench reports it.
fn small_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pid file QEMU writes at its start (`-pidfile`), next to the instance's console.
pub fn qemu_pidfile(console: &Path) -> PathBuf {
    console.with_file_name("qemu.pid")
}

/// A console log as text (empty when it cannot be read).
pub fn read_console(console: &Path) -> String {
    std::fs::read(console)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` non-empty lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    last_lines(&read_console(path), n)
}

/// The last `n` non-empty lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The app's exit status as our init (the microVM's PID 1) printed it on the console.
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

/// How a Rumprun program ended, read from the console: `Some(Some(n))` after `_exit(n)`,
/// `Some(None)` when Rumprun halted without an exit status (a panic or a failed bootstrap),
/// `None` while it runs.
pub fn rumprun_ended_from_console(console: &str) -> Option<Option<i32>> {
    let mut halted = false;
    for l in console.lines().map(|l| l.trim_end_matches('\r').trim()) {
        // "=== _exit(0) called ===", "=== ERROR: _exit(3) called ==="
        if let Some(rest) = l
            .strip_prefix("=== ")
            .map(|r| r.trim_start_matches("ERROR: "))
        {
            if let Some(n) = rest
                .strip_prefix("_exit(")
                .and_then(|r| r.split_once(") called"))
                .and_then(|(n, _)| n.parse().ok())
            {
                return Some(Some(n));
            }
            if rest.starts_with("bootstrap failed") {
                halted = true;
            }
        }
        if l == "halted" || l.starts_with("PANIC: ") || l.starts_with("FATAL TRAP") {
            halted = true;
        }
    }
    halted.then_some(None)
}

/// Writes a VM's serial console log to `out` (without the serial line's `\r`); with `follow`,
/// keeps writing what arrives until `running()` says the VM has ended, then writes the rest.
pub async fn follow_console(
    console: &Path,
    follow: bool,
    out: LogSink<'_>,
    mut running: impl FnMut() -> bool,
) -> Result<(), DriverError> {
    use std::io::{Seek, SeekFrom};
    use tokio::io::AsyncWriteExt;
    let Ok(mut file) = fs_err::File::open(console) else {
        return Ok(());
    };
    let mut pos = 0u64;
    let mut buf = Vec::new();
    loop {
        // Asked before reading, so that what a VM printed as it ended is still written.
        let alive = running();
        file.seek(SeekFrom::Start(pos))?;
        buf.clear();
        file.read_to_end(&mut buf)?;
        pos += buf.len() as u64;
        if !buf.is_empty() {
            let text: Vec<u8> = buf.iter().copied().filter(|b| *b != b'\r').collect();
            out.write_all(&text).await?;
            out.flush().await?;
        }
        if !follow || !alive {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory of a VMM process (VmRSS), in bytes.
pub fn vmm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Where a QEMU process's resident memory is, as `(part, bytes)` in a fixed order (the parts
/// with nothing resident are left out; empty if its smaps cannot be read), from
/// `/proc/PID/smaps`: `guest_ram` (the anonymous mapping of the guest's `memory_mib`),
/// `translation_cache` (TCG's executable anonymous buffer), `vmm_code` (QEMU's binary and
/// libraries), `boot_files` (its mappings of the `-kernel` and `-initrd` of `argv`) and `other`
/// (heap, stacks, thread arenas).
pub fn vmm_rss_parts(pid: u32, memory_mib: u64, argv: &[String]) -> Vec<(String, u64)> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map(|smaps| rss_parts(&smaps, memory_mib << 20, &boot_files(argv)))
        .unwrap_or_default()
}

/// Gives back what a running VMM read once and will not read again, as clean file pages (so
/// this writes nothing, and a later read would fetch them from the file again):
/// - its mappings of the files it booted from (`-kernel` and `-initrd` of `argv`; 6.2 MiB for
///   the example on the minimal kernel), kept only to load them again at a guest reset, which
///   `-no-reboot` turns into an exit;
/// - the dynamic linker's tables of its binary and of each library (the read-only segment at
///   offset 0 of every file it runs code from: symbols, hashes, relocations; 7.4 MiB for QEMU
///   7.2, 4 MiB of them its own relocations), read while the process started.
///
/// Call it once the guest runs (its firmware has read the initrd by then). Pages that another
/// process maps too are left alone by the host kernel. Best effort: where
/// `process_madvise(MADV_PAGEOUT)` is refused (before Linux 5.10, or without CAP_SYS_NICE) the
/// pages simply stay. Returns the bytes advised.
///
/// Paging out also drops the pages from the host's page cache, and the next QEMU would read
/// them from the disk again while it starts and boots (~25 ms of a launch here). So the same
/// ranges of the same files are then read back into the page cache (`POSIX_FADV_WILLNEED`,
/// asynchronous): the host keeps them as shared, reclaimable cache, mapped by no process, and
/// the VMM's resident set stays without them.
pub fn page_out_read_once(pid: u32, argv: &[String]) -> u64 {
    let files = boot_files(argv);
    page_out(pid, |maps| read_once_ranges(maps, &files))
}

/// Gives back the VMM's code and read-only data (every read-only mapping of its binary and
/// libraries) once the app answers. Much of it ran only while the VMM started (option parsing,
/// device set-up, the libraries' constructors); what the guest's work still runs (the
/// translator, the devices, user networking) comes back on first use from the page cache, as
/// these ranges too are read back into it. Done at readiness, not with
/// [`page_out_read_once`]: the boot runs much of the same code, and evicting it then delayed
/// the guest's clock (0.12–0.14 s after the start request instead of 0.08–0.13 s, in four
/// alternating benches). Best effort, as [`page_out_read_once`]; returns the bytes advised.
pub fn page_out_code(pid: u32) -> u64 {
    page_out(pid, code_ranges)
}

/// `process_madvise(MADV_PAGEOUT)` of the ranges `select` takes from the process's maps, then
/// the same ranges of the same files read back into the host's page cache.
fn page_out(pid: u32, select: impl for<'m> Fn(&'m str) -> Vec<(u64, u64, &'m str, u64)>) -> u64 {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return 0;
    };
    let ranges = select(&maps);
    if ranges.is_empty() {
        return 0;
    }
    let iov: Vec<libc::iovec> = ranges
        .iter()
        .map(|&(start, end, ..)| libc::iovec {
            iov_base: start as *mut libc::c_void,
            iov_len: (end - start) as usize,
        })
        .collect();
    // SAFETY: plain syscalls on integers and on `iov`, which outlives them; the addresses are
    // the other process's and are never dereferenced here.
    let done = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as libc::c_int;
        if pidfd < 0 {
            return 0;
        }
        let done = libc::syscall(
            libc::SYS_process_madvise,
            pidfd,
            iov.as_ptr(),
            iov.len(),
            libc::MADV_PAGEOUT,
            0u32,
        );
        libc::close(pidfd);
        u64::try_from(done).unwrap_or(0)
    };
    if done > 0 {
        for &(start, end, path, offset) in &ranges {
            read_ahead(Path::new(path), offset, end - start);
        }
    }
    done
}

/// Asks the host kernel to read `len` bytes of `path` from `offset` into its page cache, without
/// waiting for them. Best effort: a file that cannot be opened is skipped.
fn read_ahead(path: &Path, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise takes the descriptor of a file that stays open across the call, and
    // integers.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
}

/// One line of `/proc/PID/maps`: start, end, permissions, file offset and path (may be empty).
fn map_line(line: &str) -> Option<(u64, u64, &str, u64, &str)> {
    let mut fields = line.splitn(6, char::is_whitespace);
    let (a, b) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let path = fields.nth(2).unwrap_or("").trim();
    let (a, b) = (
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    );
    (a < b).then_some((a, b, perms, offset, path))
}

/// The ranges of `maps` (a `/proc/PID/maps` text) that [`page_out_read_once`] gives back: every
/// mapping of `files`, and the read-only mapping at offset 0 of each file that is also mapped
/// executable (an ELF object's first segment, with the dynamic linker's tables). Each as its
/// start and end address, the file and the file's offset there.
fn read_once_ranges<'a>(maps: &'a str, files: &[PathBuf]) -> Vec<(u64, u64, &'a str, u64)> {
    let lines: Vec<_> = maps.lines().filter_map(map_line).collect();
    let code = code_files(&lines);
    lines
        .iter()
        .filter(|&&(_, _, perms, offset, path)| {
            files.iter().any(|f| Path::new(path) == f)
                || (perms == "r--p" && offset == 0 && code.contains(path))
        })
        .map(|&(a, b, _, offset, path)| (a, b, path, offset))
        .collect()
}

/// The ranges of `maps` that [`page_out_code`] gives back: every read-only mapping (code,
/// read-only data, the linker's tables) of each file the process runs code from. Writable
/// mappings are left: their touched pages are the process's own copies.
fn code_ranges(maps: &str) -> Vec<(u64, u64, &str, u64)> {
    let lines: Vec<_> = maps.lines().filter_map(map_line).collect();
    let code = code_files(&lines);
    lines
        .iter()
        .filter(|&&(_, _, perms, _, path)| !perms.contains('w') && code.contains(path))
        .map(|&(a, b, _, offset, path)| (a, b, path, offset))
        .collect()
}

/// The files that `lines` (of `/proc/PID/maps`, parsed) map executable: the binary and its
/// libraries.
fn code_files<'a>(lines: &[(u64, u64, &str, u64, &'a str)]) -> std::collections::HashSet<&'a str> {
    lines
        .iter()
        .filter(|l| l.2.contains('x') && l.4.starts_with('/'))
        .map(|l| l.4)
        .collect()
}

/// The files a QEMU command line loads: the values of `-kernel` and `-initrd`, with symbolic
/// links resolved as `/proc/PID/maps` shows them (a cache directory reached through a link).
fn boot_files(argv: &[String]) -> Vec<PathBuf> {
    argv.windows(2)
        .filter(|w| w[0] == "-kernel" || w[0] == "-initrd")
        .map(|w| std::fs::canonicalize(&w[1]).unwrap_or_else(|_| PathBuf::from(&w[1])))
        .collect()
}

const RSS_PARTS: [&str; 5] = [
    "guest_ram",
    "translation_cache",
    "vmm_code",
    "boot_files",
    "other",
];

/// [`vmm_rss_parts`] of a smaps text, the guest's RAM being `ram_bytes` long. Lines it does not
/// understand are skipped.
pub fn rss_parts(smaps: &str, ram_bytes: u64, boot_files: &[PathBuf]) -> Vec<(String, u64)> {
    let mut totals = [0u64; RSS_PARTS.len()];
    let mut current: Option<usize> = None;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            let kb = rss.trim().trim_end_matches("kB").trim().parse::<u64>();
            if let (Some(i), Ok(kb)) = (current, kb) {
                totals[i] = totals[i].saturating_add(kb.saturating_mul(1024));
            }
            continue;
        }
        // A mapping's header: "start-end perms offset dev inode [path]" (a path may hold spaces).
        let mut rest = line;
        let mut field = [""; 5];
        for f in field.iter_mut() {
            rest = rest.trim_start();
            let (a, b) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            *f = a;
            rest = b;
        }
        let [range, perms, ..] = field;
        let Some((start, end)) = range.split_once('-').and_then(|(a, b)| {
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        }) else {
            continue;
        };
        if perms.len() != 4 {
            continue;
        }
        let path = rest.trim();
        let size = end.saturating_sub(start);
        let anonymous = path.is_empty() || path.starts_with('[');
        current = Some(if anonymous && perms.contains('x') {
            1
        } else if anonymous && ram_bytes > 0 && size >= ram_bytes && size <= ram_bytes + (4 << 20) {
            0
        } else if boot_files.iter().any(|f| Path::new(path) == f) {
            3
        } else if path.starts_with('/') {
            2
        } else {
            4
        });
    }
    RSS_PARTS
        .iter()
        .zip(totals)
        .filter(|(_, b)| *b > 0)
        .map(|(n, b)| (n.to_string(), b))
        .collect()
}

/// What QEMU's translator holds at some moment of a TCG guest's life (HMP `info jit`): the
/// blocks of guest code in its translation cache, the host code they take, the cache's size,
/// and how often the cache filled and was flushed (every block in use is translated again after
/// a flush, so a flush during a boot costs it time). Under TCG a boot is mostly translation:
/// these say where a launch's time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Blocks translated since the last flush.
    pub blocks: u64,
    /// Host code those blocks take.
    pub code_bytes: u64,
    /// The translation cache's size (`tb-size`).
    pub capacity_bytes: u64,
    pub flushes: u64,
}

/// [`Translation`] from the text of `info jit`; None when a figure is missing (not TCG, or a
/// QEMU whose output differs).
pub fn parse_info_jit(text: &str) -> Option<Translation> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
    };
    let number = |name: &str| field(name)?.parse::<u64>().ok();
    let (used, capacity) = field("gen code size")?.split_once('/')?;
    Some(Translation {
        blocks: number("TB count")?,
        code_bytes: used.parse().ok()?,
        capacity_bytes: capacity.parse().ok()?,
        flushes: number("TB flush count")?,
    })
}

/// The translator's figures of a running QEMU, over its QMP socket; None under KVM or when
/// QEMU does not answer.
pub fn translation(qmp_socket: &Path) -> Option<Translation> {
    let cmd = serde_json::json!({"execute": "human-monitor-command",
        "arguments": {"command-line": "info jit"}});
    let replies = qmp(qmp_socket, &[cmd]).ok()?;
    let reply: serde_json::Value = serde_json::from_str(replies.last()?).ok()?;
    parse_info_jit(reply["return"].as_str()?)
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

/// The host's TSC frequency in kHz, which is also the guest's under TCG (QEMU's emulated TSC
/// reads the host's), for `tsc_early_khz=`. Measured over ~30 ms against the monotonic clock;
/// `None` off x86_64 or when /proc/cpuinfo does not report `constant_tsc`.
pub fn host_tsc_khz() -> Option<u32> {
    // Measured once per process (30 ms): a bench launches the VM six times per platform.
    static KHZ: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        if !has_constant_tsc(&cpuinfo) {
            return None;
        }
        measure_tsc_khz()
    })
}

/// [`host_tsc_khz`], kept in `cache_dir` for the rest of the host's boot (keyed by its boot id):
/// a `bakeoff run` is one process per launch, and measuring took 30 ms of each before QEMU
/// started.
pub fn host_tsc_khz_cached(cache_dir: Option<&Path>) -> Option<u32> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
    let (Some(dir), Some(boot_id)) = (cache_dir, boot_id.as_deref().map(str::trim)) else {
        return host_tsc_khz();
    };
    let plausible = |k: &Option<u32>| k.is_none_or(|k| (100_000..20_000_000).contains(&k));
    host_fact(dir, "host-tsc.json", boot_id, plausible, host_tsc_khz)
}

/// A fact about this host that takes time to learn (the TSC's rate, whether KVM boots a guest),
/// kept in `dir/file` as the JSON `[key, value]`. A file for another key (another boot, another
/// host kernel), one that does not parse, or a value `valid` refuses is learned anew with
/// `learn` and written whole (a temporary file, then a rename). Best effort: a failed write only
/// means learning it again next time.
pub fn host_fact<T: serde::Serialize + serde::de::DeserializeOwned>(
    dir: &Path,
    file: &str,
    key: &str,
    valid: impl Fn(&T) -> bool,
    learn: impl FnOnce() -> T,
) -> T {
    let path = dir.join(file);
    if let Some((_, v)) = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<(String, T)>(&bytes).ok())
        .filter(|(k, v)| k == key && valid(v))
    {
        return v;
    }
    let value = learn();
    let tmp = dir.join(format!(".{file}.{}", std::process::id()));
    let written = std::fs::create_dir_all(dir).is_ok()
        && serde_json::to_vec(&(key, &value))
            .is_ok_and(|bytes| std::fs::write(&tmp, bytes).is_ok());
    if written && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    value
}

fn has_constant_tsc(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "constant_tsc"))
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u32> {
    use std::time::{Duration, Instant};
    // Median of three short windows: one preempted window may read off, the median will not.
    let mut samples: Vec<f64> = (0..3)
        .map(|_| {
            // SAFETY: RDTSC has no preconditions on x86_64.
            let (t0, c0) = (Instant::now(), unsafe { core::arch::x86_64::_rdtsc() });
            std::thread::sleep(Duration::from_millis(10));
            let (c1, t1) = (unsafe { core::arch::x86_64::_rdtsc() }, Instant::now());
            (c1.wrapping_sub(c0)) as f64 / (t1 - t0).as_secs_f64() / 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let khz = samples[1].round();
    (100_000.0..20_000_000.0)
        .contains(&khz)
        .then_some(khz as u32)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {

    /// QEMU 7.2's `info jit` after a boot of the minimal kernel under TCG with `tb-size=16`.
    const INFO_JIT: &str = "Translation buffer state:\r\ngen code size       11117523/16772096\r\nTB count            19206\r\nTB avg target size  18 max=1666 bytes\r\nTB avg host size    336 bytes (expansion ratio: 17.9)\r\ncross page TB count 65 (0%)\r\n\r\nStatistics:\r\nTB flush count      1\r\nTB invalidate count 62\r\nTLB full flushes    0\r\n";

    #[test]
    fn info_jit_gives_blocks_code_capacity_and_flushes() {
        assert_eq!(
            parse_info_jit(INFO_JIT),
            Some(Translation {
                blocks: 19206,
                code_bytes: 11_117_523,
                capacity_bytes: 16_772_096,
                flushes: 1
            })
        );
        // Under KVM QEMU says there is nothing to show; a figure missing or garbled is None.
        assert_eq!(
            parse_info_jit("JIT information is only available with accel=tcg\r\n"),
            None
        );
        assert_eq!(
            parse_info_jit(&INFO_JIT.replace("TB flush count      1", "")),
            None
        );
        assert_eq!(
            parse_info_jit(&INFO_JIT.replace("11117523/16772096", "11117523")),
            None
        );
        assert_eq!(parse_info_jit(&INFO_JIT.replace("19206", "many")), None);
    }

    proptest::proptest! {
        #[test]
        fn info_jit_never_panics(text in "\\PC{0,300}") {
            let _ = parse_info_jit(&text);
        }
    }
    use super::*;

    #[test]
    fn exit_status_is_read_from_the_console() {
        let console =
            "hello: listening\r\nbakeoff-init: app exited with status 3\r\nreboot: Power down\r\n";
        assert_eq!(exit_status_from_console(console), Some(3));
        assert_eq!(exit_status_from_console("booting\n"), None);
    }

    #[test]
    fn constant_tsc_flag_is_required() {
        assert!(has_constant_tsc(
            "processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n"
        ));
        assert!(!has_constant_tsc("flags\t\t: fpu tsc\n"));
        assert!(!has_constant_tsc(""));
    }

    #[test]
    fn a_host_fact_counts_only_for_its_key_and_when_valid() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fact.json");
        let fact =
            |learned: u32| host_fact(dir.path(), "fact.json", "boot-1", |v| *v < 100, || learned);
        // Learned, then kept: a second call does not learn.
        assert_eq!(fact(7), 7);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"["boot-1",7]"#);
        assert_eq!(fact(8), 7);
        // Another key's value, or one `valid` refuses, is learned anew and replaced.
        std::fs::write(&file, r#"["boot-0",5]"#).unwrap();
        assert_eq!(fact(9), 9);
        std::fs::write(&file, r#"["boot-1",500]"#).unwrap();
        assert_eq!(fact(10), 10);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"["boot-1",10]"#);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Whatever the file holds, it is used only if it parses to this key's valid value.
        proptest::proptest!(|(text in "\\PC{0,40}")| {
            std::fs::write(&file, &text).unwrap();
            let got = fact(11);
            proptest::prop_assert!(got == 11 || text.contains("boot-1"), "{text:?} gave {got}");
        });
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_tsc_rate_is_kept_for_the_hosts_boot() {
        let dir = tempfile::tempdir().unwrap();
        let Some(a) = host_tsc_khz_cached(Some(dir.path())) else {
            assert!(
                std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() != Ok("1"),
                "this host has no constant_tsc"
            );
            eprintln!("skipping: this host has no constant_tsc");
            return;
        };
        let kept = std::fs::read_to_string(dir.path().join("host-tsc.json")).unwrap();
        assert!(kept.ends_with(&format!(",{a}]")), "{kept}");
        // Another boot's value is not taken; this boot's is, as written.
        std::fs::write(
            dir.path().join("host-tsc.json"),
            r#"["another-boot",1000000]"#,
        )
        .unwrap();
        assert_eq!(host_tsc_khz_cached(Some(dir.path())), Some(a));
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        std::fs::write(
            dir.path().join("host-tsc.json"),
            format!(r#"["{}",1000000]"#, boot_id.trim()),
        )
        .unwrap();
        assert_eq!(host_tsc_khz_cached(Some(dir.path())), Some(1_000_000));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn measured_tsc_is_plausible_and_stable() {
        let Some(a) = host_tsc_khz() else {
            // The microVM's boot leans on it (tsc_early_khz): where engines are required, so is it.
            assert!(
                std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() != Ok("1"),
                "this host has no constant_tsc"
            );
            eprintln!("skipping: this host has no constant_tsc");
            return;
        };
        // Two fresh measurements agree; the process keeps the first.
        let b = measure_tsc_khz().unwrap();
        let diff = (f64::from(a) - f64::from(b)).abs() / f64::from(a);
        assert!(diff < 0.01, "{a} vs {b}");
        assert_eq!(host_tsc_khz(), Some(a));
    }

    #[test]
    fn slots_are_claimed_reused_and_reclaimed() {
        let t = tempfile::tempdir().unwrap();
        let dir = |n: &str| {
            let d = t.path().join("instances").join(n);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let (a, b) = (dir("a"), dir("b"));
        assert_eq!(claim_slot(&a, Platform::Xen, "a", 4).unwrap(), 0);
        assert_eq!(claim_slot(&b, Platform::Xen, "b", 4).unwrap(), 1);
        // Other platforms count separately.
        assert_eq!(claim_slot(&b, Platform::Firecracker, "b", 4).unwrap(), 0);
        release_slot(&a, Platform::Xen, "a", 0);
        assert_eq!(claim_slot(&dir("c"), Platform::Xen, "c", 4).unwrap(), 0);
        // b's instance was removed without releasing: its slot is taken back.
        std::fs::remove_dir_all(&b).unwrap();
        assert_eq!(claim_slot(&dir("d"), Platform::Xen, "d", 4).unwrap(), 1);
        let e = claim_slot(&dir("e"), Platform::Xen, "e", 2)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "all 2 xen address slots are taken; remove instances with `bakeoff rm`"
        );
    }

    #[test]
    fn commands_fail_with_one_line() {
        let e = run_cmd(
            &[
                "sh".into(),
                "-c".into(),
                "echo first >&2; echo the reason >&2; exit 3".into(),
            ],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "`sh -c echo first >&2; echo the reason >&2; exit 3` failed (exit status: 3): the reason");
        let e = run_cmd(&["/nonexistent/xl".into()], Duration::from_secs(5)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`/nonexistent/xl` could not start"),
            "{e}"
        );
        let e = run_cmd(&["sleep".into(), "5".into()], Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.to_string(), "`sleep 5` did not finish within 0.2 s");
    }

    /// One mapping of a smaps file: its header and the lines the kernel writes after it.
    fn mapping(start: u64, len: u64, perms: &str, path: &str, rss_kb: u64) -> String {
        format!(
            "{start:x}-{:x} {perms} 00000000 00:00 0          {path}\nSize:           {} kB\nRss:            {rss_kb} kB\nPss:            {rss_kb} kB\nVmFlags: rd wr mr mw me ac sd\n",
            start + len,
            len / 1024
        )
    }

    #[test]
    fn read_once_ranges_are_the_boot_files_and_the_linker_tables() {
        let maps = "\
5649b0055000-5649b045c000 r--p 00000000 fe:00 10199080                   /usr/bin/qemu-system-x86_64
5649b045c000-5649b09f3000 r-xp 00407000 fe:00 10199080                   /usr/bin/qemu-system-x86_64
5649b09f3000-5649b0cea000 r--p 0099e000 fe:00 10199080                   /usr/bin/qemu-system-x86_64
5649b0cea000-5649b0e39000 r--p 00c94000 fe:00 10199080                   /usr/bin/qemu-system-x86_64
7f61cbe00000-7f61d3e00000 rw-p 00000000 00:00 0 
7f61d4000000-7f61d4029000 r--p 00000000 fe:00 7001                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f61d4029000-7f61d417e000 r-xp 00028000 fe:00 7001                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f61d5000000-7f61d5100000 r--p 00000000 fe:00 7002                       /usr/lib/locale/locale-archive
7f61dba00000-7f61dbefb000 rw-p 00000000 fe:00 5752275                    /c/kernels/m-1/vmlinux
7f61e00c7000-7f61e01ff000 r--p 00000000 fe:00 5357601                    /c/images/a b/initramfs.cpio.lz4
7f61e0a00000-7f61e19ff000 rwxp 00000000 00:00 0
7f61e2000000-7f61e2001000 r--p 00000000 fe:00 5752275                    /c/kernels/m-1/vmlinux (deleted)
garbage line
";
        let argv: Vec<String> = [
            "-kernel",
            "/c/kernels/m-1/vmlinux",
            "-initrd",
            "/c/images/a b/initramfs.cpio.lz4",
        ]
        .map(String::from)
        .to_vec();
        // Not the code, the read-only data after it, anonymous memory or a data file.
        assert_eq!(
            read_once_ranges(maps, &boot_files(&argv)),
            [
                (
                    0x5649_b005_5000,
                    0x5649_b045_c000,
                    "/usr/bin/qemu-system-x86_64",
                    0
                ),
                (
                    0x7f61_d400_0000,
                    0x7f61_d402_9000,
                    "/usr/lib/x86_64-linux-gnu/libc.so.6",
                    0
                ),
                (
                    0x7f61_dba0_0000,
                    0x7f61_dbef_b000,
                    "/c/kernels/m-1/vmlinux",
                    0
                ),
                (
                    0x7f61_e00c_7000,
                    0x7f61_e01f_f000,
                    "/c/images/a b/initramfs.cpio.lz4",
                    0
                )
            ]
        );
        assert_eq!(read_once_ranges(maps, &[]).len(), 2);
        // A process that is gone, or has no such mapping: nothing to do.
        assert_eq!(page_out_read_once(u32::MAX, &argv), 0);
        // At readiness: every read-only mapping of the binary and of each library; not a data
        // file (the locale archive, the kernel), nor anonymous or writable memory.
        let code: Vec<_> = code_ranges(maps)
            .into_iter()
            .map(|(a, _, path, offset)| (a, path, offset))
            .collect();
        let qemu = "/usr/bin/qemu-system-x86_64";
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        assert_eq!(
            code,
            [
                (0x5649_b005_5000, qemu, 0),
                (0x5649_b045_c000, qemu, 0x40_7000),
                (0x5649_b09f_3000, qemu, 0x99_e000),
                (0x5649_b0ce_a000, qemu, 0xc9_4000),
                (0x7f61_d400_0000, libc, 0),
                (0x7f61_d402_9000, libc, 0x2_8000),
            ]
        );
        assert_eq!(page_out_code(u32::MAX), 0);
    }

    /// QEMU's maps name a file by its real path: a kernel reached through a linked cache
    /// directory is still recognised as a boot file.
    #[test]
    fn boot_files_resolve_symbolic_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("vmlinux"), b"k").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let argv: Vec<String> = [
            "-kernel".to_string(),
            dir.path().join("link/vmlinux").display().to_string(),
            "-initrd".to_string(),
            "/no/such/initramfs".to_string(),
        ]
        .to_vec();
        assert_eq!(
            boot_files(&argv),
            [
                std::fs::canonicalize(real.join("vmlinux")).unwrap(),
                PathBuf::from("/no/such/initramfs")
            ]
        );
    }

    /// Whatever `/proc/PID/maps` holds, the ranges are well formed and the parser never panics.
    #[test]
    fn read_once_ranges_of_any_text_are_well_formed() {
        proptest::proptest!(|(maps in "([0-9a-f]{1,12}-[0-9a-f]{1,12} (r--p|r-xp|rw-p) [0-9a-f]{1,8} fe:00 1 +(/q|/l|)?\n){0,8}")| {
            for (a, b, ..) in read_once_ranges(&maps, &[PathBuf::from("/q")]) {
                proptest::prop_assert!(a < b);
            }
            for (a, b, ..) in code_ranges(&maps) {
                proptest::prop_assert!(a < b);
            }
        });
    }

    #[test]
    fn rss_parts_of_a_qemu_process_are_told_apart() {
        let kernel = "/cache/kernels/minimal-1/vmlinux";
        let initrd = "/cache/images/microvm/x/initramfs.cpio.lz4";
        let smaps = [
            mapping(
                0x5649_0000_0000,
                4 << 20,
                "r--p",
                "/usr/bin/qemu-system-x86_64",
                4124,
            ),
            mapping(
                0x5649_1000_0000,
                6 << 20,
                "r-xp",
                "/usr/bin/qemu-system-x86_64",
                5496,
            ),
            mapping(0x5649_2000_0000, 9 << 20, "rw-p", "[heap]", 4556),
            mapping(0x7f7a_a800_0000, 4 << 20, "rw-p", "", 3848),
            // The guest's RAM: 128 MiB plus QEMU's 2 MiB of alignment.
            mapping(0x7f7a_af00_0000, 130 << 20, "rw-p", "", 20920),
            mapping(0x7f7a_be00_0000, 2 << 20, "r--p", initrd, 1244),
            mapping(0x7f7a_bf00_0000, 5 << 20, "rw-p", kernel, 5100),
            // TCG's translation cache.
            mapping(0x7f7a_c000_0000, 16 << 20, "rwxp", "", 16380),
            mapping(
                0x7f7a_d000_0000,
                2 << 20,
                "r-xp",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                1112,
            ),
            mapping(
                0x7f7a_e000_0000,
                1 << 20,
                "r--p",
                "/tmp/a b/lib (deleted)",
                8,
            ),
            mapping(0x7ffc_0000_0000, 1 << 20, "rw-p", "[stack]", 132),
        ]
        .concat();
        let parts = rss_parts(
            &smaps,
            128 << 20,
            &boot_files(&[
                "-kernel".into(),
                kernel.into(),
                "-initrd".into(),
                initrd.into(),
                "-append".into(),
                "console=ttyS0".into(),
            ]),
        );
        let kb = |n: u64| n * 1024;
        assert_eq!(
            parts,
            [
                ("guest_ram".to_string(), kb(20920)),
                ("translation_cache".to_string(), kb(16380)),
                ("vmm_code".to_string(), kb(4124 + 5496 + 1112 + 8)),
                ("boot_files".to_string(), kb(1244 + 5100)),
                ("other".to_string(), kb(4556 + 3848 + 132)),
            ]
        );
        // Without the guest's size, its RAM is not guessed.
        let unknown = rss_parts(&smaps, 0, &[]);
        assert!(unknown.iter().all(|(p, _)| p != "guest_ram"), "{unknown:?}");
        assert_eq!(
            unknown.iter().map(|(_, b)| b).sum::<u64>(),
            parts.iter().map(|(_, b)| b).sum::<u64>()
        );
    }

    proptest::proptest! {
        #[test]
        fn rss_parts_never_panic_and_count_every_mapping_once(
            maps in proptest::collection::vec(
                (1u64..1 << 30, 0usize..4, 0usize..5, 0u64..1 << 20),
                0..24,
            ),
            ram_mib in 0u64..512,
            garbage in ".{0,200}",
        ) {
            let perms = ["rw-p", "rwxp", "r-xp", "r--s"];
            let paths = ["", "[heap]", "/usr/bin/qemu", "/k/vmlinux", "/x y/z"];
            let mut text = String::new();
            let mut start = 0x1000_0000u64;
            let mut total = 0;
            for (len, p, q, rss) in &maps {
                text.push_str(&mapping(start, *len, perms[*p], paths[*q], *rss));
                start += len + 4096;
                total += rss * 1024;
            }
            let parts = rss_parts(&text, ram_mib << 20, &[PathBuf::from("/k/vmlinux")]);
            proptest::prop_assert_eq!(parts.iter().map(|(_, b)| b).sum::<u64>(), total);
            // Lines of any kind around the mappings: no panic.
            let _ = rss_parts(&format!("{garbage}\n{text}{garbage}"), ram_mib << 20, &[]);
        }
    }
}
