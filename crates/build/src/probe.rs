//! Ports found, not guessed: a short probe run of a built artifact, and the TCP sockets it
//! listens on.
//!
//! As root the artifact's command runs with its own rootfs as `/`, in a throwaway network and
//! PID namespace (`unshare --pid --kill-child --root`, the network namespace made just before
//! with its loopback up, so an app that binds 127.0.0.1 is seen): it can reach nothing beyond
//! itself, and when the probe kills `unshare` by its PID every process of the app goes with the
//! namespace. The
//! sockets are read from `/proc/<unshare's pid>/net/tcp{,6}`, which shows that namespace only.
//! Without root, a program built here (not a Debian package) runs on the host itself and only
//! the sockets whose inodes are among its open files count. The run is bounded (3 s by
//! default) and the outcome is cached beside the artifact.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Artifact, BuildError};

/// What a probe run saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// TCP ports in LISTEN state, sorted.
    Listening { ports: Vec<u16> },
    /// No listening socket; the sentence says what happened instead.
    Nothing { reason: String },
}

/// Bumped when the way of observing changes, so cached observations are made again.
const PROBE_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Cached {
    version: u32,
    observation: Observation,
}

/// The ports `artifact` listens on when run for at most `bound`; cached in `observed.json`.
pub fn observe_ports(artifact: &Artifact, bound: Duration) -> Result<Observation, BuildError> {
    let path = artifact.dir.join("observed.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(c) = serde_json::from_str::<Cached>(&text) {
            if c.version == PROBE_VERSION {
                return Ok(c.observation);
            }
        }
    }
    let observation = probe(artifact, bound)?;
    let tmp = artifact
        .dir
        .join(format!("observed.json.{}", std::process::id()));
    let cached = Cached {
        version: PROBE_VERSION,
        observation: observation.clone(),
    };
    fs_err::write(
        &tmp,
        serde_json::to_vec_pretty(&cached).expect("observation serializes"),
    )?;
    fs_err::rename(&tmp, &path)?;
    Ok(observation)
}

fn probe(artifact: &Artifact, bound: Duration) -> Result<Observation, BuildError> {
    let m = &artifact.manifest;
    let rootfs = artifact.rootfs();
    let argv: Vec<&String> = m.command.iter().chain(&m.args).collect();
    let Some((program, rest)) = argv.split_first() else {
        return Ok(Observation::Nothing {
            reason: "the artifact has no command".into(),
        });
    };
    let isolated = euid_is_root();
    // A killed bakeoff (Ctrl-C, SIGKILL) must not leave the probe running: it dies with the
    // thread that started it, and `unshare --kill-child` takes the app with it. First of the
    // hooks: a new network namespace takes milliseconds, and a bakeoff killed meanwhile would
    // be gone before the request.
    let parent = std::process::id();
    let die_with_parent = move || die_with_parent(parent);
    let mut cmd = if isolated {
        let mut c = Command::new("unshare");
        // SAFETY: both hooks only make system calls (prctl, getppid, unshare, socket, ioctl,
        // close) on values they own; they allocate nothing.
        unsafe {
            c.pre_exec(die_with_parent);
            c.pre_exec(own_network_with_loopback);
        }
        c.arg("--pid").arg("--kill-child");
        // A fresh /proc of the namespace where the rootfs has the mount point (Debian layouts).
        if rootfs.join("proc").is_dir() {
            c.arg("--mount-proc=/proc");
        }
        c.arg(format!("--root={}", rootfs.display()))
            .arg(format!("--wd={}", m.workdir))
            .arg("--")
            .arg(program.as_str());
        c
    } else if m.source.origin() == bakeoff_spec::Origin::Package {
        return Ok(Observation::Nothing {
            reason: "observing a Debian package's ports needs root (it runs inside its own \
                     rootfs); set `ports` in bakeoff.toml"
                .into(),
        });
    } else {
        let host = rootfs.join(program.trim_start_matches('/'));
        let mut c = Command::new(host);
        c.current_dir(&rootfs);
        // SAFETY: prctl and getppid are plain system calls; the hook allocates nothing.
        unsafe { c.pre_exec(die_with_parent) };
        c
    };
    cmd.args(rest.iter().map(|s| s.as_str()))
        .env_clear()
        .envs(m.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        BuildError::Io(std::io::Error::new(
            e.kind(),
            format!("starting the probe run of {program}: {e}"),
        ))
    })?;
    let pid = child.id();
    let started = Instant::now();
    let mut seen: BTreeSet<u16> = BTreeSet::new();
    let mut seen_at = None;
    let exited = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let now = listening(pid, !isolated);
        if !now.is_empty() && seen_at.is_none() {
            seen_at = Some(Instant::now());
        }
        seen.extend(now);
        // A moment after the first socket, for the daemons that open several.
        if seen_at.is_some_and(|t| t.elapsed() > Duration::from_millis(300))
            || started.elapsed() > bound
        {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if exited.is_none() {
        // By its PID: unshare (and with it the namespace's processes), or the program itself.
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.by_ref().take(4096).read_to_string(&mut stderr);
    }
    if !seen.is_empty() {
        return Ok(Observation::Listening {
            ports: seen.into_iter().collect(),
        });
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(" (its last words: {})", l.trim()))
        .unwrap_or_default();
    let reason = match exited {
        Some(s) if s.success() => format!(
            "it exited with status 0 after {:.1} s without listening: a batch job, or a \
             daemon that put itself in the background{last}",
            started.elapsed().as_secs_f64()
        ),
        Some(s) => format!(
            "it exited ({s}) after {:.1} s without listening{last}",
            started.elapsed().as_secs_f64()
        ),
        None => format!(
            "it ran for {:.1} s and listened on no TCP port{last}",
            bound.as_secs_f64()
        ),
    };
    Ok(Observation::Nothing { reason })
}

/// Asks the kernel to SIGKILL the calling process when the thread that forked it ends, and
/// fails when that parent (`parent`, its PID before the fork) has already ended: the request
/// would then never fire. Runs between fork and exec.
fn die_with_parent(parent: u32) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid take plain integers.
    let (set, ppid) = unsafe {
        (
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL),
            libc::getppid(),
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if ppid as u32 != parent {
        return Err(std::io::Error::other(
            "bakeoff ended before the probe started",
        ));
    }
    Ok(())
}

/// Moves the calling process into a new network namespace and brings its loopback up (a new
/// namespace has `lo` down: binding 127.0.0.1 would fail there). Runs between fork and exec.
fn own_network_with_loopback() -> std::io::Result<()> {
    let fail = || Err(std::io::Error::last_os_error());
    // SAFETY: plain system calls; `ifr` is a zeroed C struct owned here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return fail();
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return fail();
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let up = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) == 0
        } else {
            false
        };
        libc::close(fd);
        if !up {
            return fail();
        }
    }
    Ok(())
}

fn euid_is_root() -> bool {
    // /proc/self/status: `Uid: real effective saved fs`.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Ports in LISTEN state in `pid`'s network namespace; with `own_only`, only the sockets among
/// `pid`'s open files (the namespace is the host's).
fn listening(pid: u32, own_only: bool) -> BTreeSet<u16> {
    if !own_only {
        // Until unshare has made the new namespace, its /proc/PID/net is the host's.
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
        let theirs = ns(&pid.to_string());
        if theirs.is_none() || theirs == ns("self") {
            return BTreeSet::new();
        }
    }
    let inodes = own_only.then(|| socket_inodes(pid));
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for (port, inode) in parse_listen_table(&text) {
            if inodes.as_ref().is_none_or(|set| set.contains(&inode)) {
                ports.insert(port);
            }
        }
    }
    ports
}

fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            t.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// `(local port, inode)` of each LISTEN (state `0A`) row of /proc/net/tcp or tcp6.
pub(crate) fn parse_listen_table(text: &str) -> Vec<(u16, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                return None;
            }
            let port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            Some((port, f[9].parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn listen_rows_are_read() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(parse_listen_table(t), vec![(9090, 4242)]);
        let t6 = "header\n   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listen_table(t6), vec![(80, 77)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn tables_never_panic(s in "([0-9A-F: ]{0,40}\n){0,6}") {
            let _ = parse_listen_table(&s);
        }
    }
}
