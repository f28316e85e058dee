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
