//! Switching the app's process to its user before `exec` (the config's `user`), and reading
//! back from the kernel which credentials the running app really has.

use std::ffi::c_int;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use bakeoff_init::RunAs;

extern "C" {
    fn setgroups(size: usize, list: *const u32) -> c_int;
    fn setgid(gid: u32) -> c_int;
    fn setuid(uid: u32) -> c_int;
}

fn check(rc: c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `command`'s child drop root: supplementary groups, then the group, then the user (the
/// order in which each call is still permitted). Runs after fork, before exec.
pub fn switch_user(command: &mut Command, user: &RunAs) {
    let user = user.clone();
    // SAFETY: setgroups/setgid/setuid are async-signal-safe system calls; the closure allocates
    // nothing (the group list was built before fork).
    unsafe {
        command.pre_exec(move || {
            check(setgroups(user.groups.len(), user.groups.as_ptr()))?;
            check(setgid(user.gid))?;
            check(setuid(user.uid))
        })
    };
}

/// Gives the user what it owns ([`RunAs::owns`]): each path is made if missing (a unit's
/// `RuntimeDirectory=` lies under the fresh tmpfs on /run) and it and everything below it get
/// the user's uid and gid (symbolic links themselves, never their targets). Runs as root before
/// the start; what cannot be changed is said on the console, and the app starts anyway.
pub fn give_owned(user: &RunAs, say: impl Fn(&str)) {
    fn walk(path: &std::path::Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        if std::fs::symlink_metadata(path)?.is_dir() {
            for entry in std::fs::read_dir(path)? {
                walk(&entry?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    for path in &user.owns {
        let p = std::path::Path::new(path);
        if std::fs::symlink_metadata(p).is_err() {
            if let Err(e) = std::fs::create_dir_all(p) {
                say(&format!("cannot make {path} for the app's user: {e}"));
                continue;
            }
        }
        if let Err(e) = walk(p, user.uid, user.gid) {
            say(&format!("cannot give {path} to uid {}: {e}", user.uid));
        }
    }
}

/// The `Uid:`, `Gid:` and `Groups:` of a running process as the kernel reports them in
/// `/proc/PID/status`, e.g. `uid=107 gid=113 groups=113`.
pub fn credentials(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
    };
    let uid = field("Uid:")?;
    let gid = field("Gid:")?;
    let groups = field("Groups:").unwrap_or_default();
    Some(format!(
        "uid={} gid={} groups={}",
        uid.first()?,
        gid.first()?,
        groups.join(",")
    ))
}
