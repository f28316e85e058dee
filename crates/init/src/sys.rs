//! The few Linux/glibc calls PID 1 needs that `std` does not offer, declared by hand (x86_64
//! glibc ABI) so the binary needs no crates.io dependency. Each wrapper returns `io::Result`.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_long, c_short, c_ulong, c_ushort, c_void, CString};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub type pid_t = c_int;

/// glibc's `sigset_t` is 1024 bits.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sigset_t {
    _val: [c_ulong; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct sockaddr_in {
    sin_family: c_ushort,
    sin_port: u16,
    sin_addr: [u8; 4],
    sin_zero: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
union ifr_ifru {
    addr: sockaddr_in,
    flags: c_short,
    ifindex: c_int,
    _pad: [u8; 24],
}

#[repr(C)]
struct ifreq {
    ifr_name: [u8; 16],
    ifru: ifr_ifru,
}

/// `struct rtentry` from <net/route.h>; field order and padding follow the C layout.
#[repr(C)]
struct rtentry {
    rt_pad1: c_ulong,
    rt_dst: sockaddr_in,
    rt_gateway: sockaddr_in,
    rt_genmask: sockaddr_in,
    rt_flags: c_ushort,
    rt_pad2: c_short,
    rt_pad3: c_ulong,
    rt_pad4: *mut c_void,
    rt_metric: c_short,
    rt_dev: *mut c_char,
    rt_mtu: c_ulong,
    rt_window: c_ulong,
    rt_irtt: c_ushort,
}

#[repr(C)]
pub struct pollfd {
    pub fd: c_int,
    pub events: c_short,
    pub revents: c_short,
}

/// The part of `struct signalfd_siginfo` (128 bytes) that we read.
#[repr(C)]
struct signalfd_siginfo {
    ssi_signo: u32,
    _rest: [u8; 124],
}

extern "C" {
    fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn syscall(num: c_long, ...) -> c_long;
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn sethostname(name: *const c_char, len: usize) -> c_int;
    fn reboot(cmd: c_int) -> c_int;
    fn sync();
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t;
    fn kill(pid: pid_t, sig: c_int) -> c_int;
    fn sigemptyset(set: *mut sigset_t) -> c_int;
    fn sigaddset(set: *mut sigset_t, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int;
    fn signalfd(fd: c_int, mask: *const sigset_t, flags: c_int) -> c_int;
    fn poll(fds: *mut pollfd, nfds: c_ulong, timeout: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn clock_settime(clock: c_int, ts: *const timespec) -> c_int;
}

#[repr(C)]
struct timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// The kernel's `struct termios` (what TCGETS/TCSETS take): four flag words, the line
/// discipline, then 19 control characters.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Termios {
    iflag: u32,
    oflag: u32,
    cflag: u32,
    lflag: u32,
    line: u8,
    cc: [u8; 19],
}

const TCGETS: c_ulong = 0x5401;
const TCSETS: c_ulong = 0x5402;
const ICANON: u32 = 0o2;
const ECHO: u32 = 0o10;
const VTIME: usize = 5;
const VMIN: usize = 6;
/// `_IOW('R', 0x03, int[2])` and `_IO('R', 0x07)`.
const RNDADDENTROPY: c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: c_ulong = 0x5207;

pub const SIGHUP: c_int = 1;
pub const SIGINT: c_int = 2;
pub const SIGKILL: c_int = 9;
pub const SIGTERM: c_int = 15;
pub const SIGCHLD: c_int = 17;
pub const POLLIN: c_short = 1;

pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;

const SYS_FINIT_MODULE: c_long = 313;
const AF_INET: c_int = 2;
const SOCK_DGRAM: c_int = 2;
const SOCK_CLOEXEC: c_int = 0o2000000;
const SIOCADDRT: c_ulong = 0x890B;
const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
const SIOCSIFADDR: c_ulong = 0x8916;
const SIOCSIFNETMASK: c_ulong = 0x891C;
const SIOCGIFINDEX: c_ulong = 0x8933;
const IFF_UP: c_short = 0x1;
const IFF_RUNNING: c_short = 0x40;
const RTF_UP: c_ushort = 0x1;
const RTF_GATEWAY: c_ushort = 0x2;
const RB_POWER_OFF: c_int = 0x4321_FEDCu32 as c_int;
const RB_DISABLE_CAD: c_int = 0;
const SIG_BLOCK: c_int = 0;
const SIG_SETMASK: c_int = 2;
const SFD_CLOEXEC: c_int = 0o2000000;
const WNOHANG: c_int = 1;

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

/// `mount(2)`.
pub fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (
        cstring(source)?,
        cstring(target)?,
        cstring(fstype)?,
        cstring(data)?,
    );
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    check(unsafe { mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) }).map(drop)
}

/// `finit_module(2)` on an open module file.
pub fn finit_module(file: &std::fs::File, params: &str) -> io::Result<()> {
    let p = cstring(params)?;
    // SAFETY: finit_module(int fd, const char *params, int flags); p outlives the call.
    let r = unsafe {
        syscall(
            SYS_FINIT_MODULE,
            file.as_raw_fd() as c_long,
            p.as_ptr(),
            0 as c_long,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Puts the terminal on `fd` in raw input mode (no echo, no line editing, no line-length limit),
/// returning its previous settings for [`restore_terminal`].
pub fn raw_terminal(fd: c_int) -> io::Result<Termios> {
    let mut t = Termios {
        iflag: 0,
        oflag: 0,
        cflag: 0,
        lflag: 0,
        line: 0,
        cc: [0; 19],
    };
    // SAFETY: TCGETS writes one kernel termios into `t`.
    check(unsafe { ioctl(fd, TCGETS, &mut t as *mut Termios) })?;
    let old = t;
    t.lflag &= !(ICANON | ECHO);
    t.cc[VMIN] = 1;
    t.cc[VTIME] = 0;
    // SAFETY: TCSETS reads one kernel termios from `t`.
    check(unsafe { ioctl(fd, TCSETS, &t as *const Termios) })?;
    Ok(old)
}

pub fn restore_terminal(fd: c_int, t: &Termios) -> io::Result<()> {
    // SAFETY: TCSETS reads one kernel termios from `t`.
    check(unsafe { ioctl(fd, TCSETS, t as *const Termios) }).map(drop)
}

/// Sets the wall clock (CLOCK_REALTIME) to `unix_ns`.
pub fn set_wall_clock(unix_ns: u64) -> io::Result<()> {
    let ts = timespec {
        tv_sec: (unix_ns / 1_000_000_000) as i64,
        tv_nsec: (unix_ns % 1_000_000_000) as i64,
    };
    // SAFETY: `ts` is a valid timespec for the duration of the call.
    check(unsafe { clock_settime(0, &ts) }).map(drop)
}

/// Mixes `seed` into the kernel's random pool, credited as entropy, then reseeds the kernel's
/// generator at once so that nothing drawn after this repeats what another copy of the same
/// snapshot draws.
pub fn add_entropy_and_reseed(seed: &[u8; 32]) -> io::Result<()> {
    #[repr(C)]
    struct PoolInfo {
        entropy_count: c_int,
        buf_size: c_int,
        buf: [u8; 32],
    }
    let info = PoolInfo {
        entropy_count: 256,
        buf_size: 32,
        buf: *seed,
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of `buf_size` bytes of data from `info`.
    check(unsafe { ioctl(f.as_raw_fd(), RNDADDENTROPY, &info as *const PoolInfo) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    check(unsafe { ioctl(f.as_raw_fd(), RNDRESEEDCRNG) }).map(drop)
}

/// Makes Ctrl-Alt-Del send SIGINT to PID 1 instead of rebooting at once.
pub fn disable_ctrl_alt_del() {
    // SAFETY: plain syscall without pointers.
    unsafe { reboot(RB_DISABLE_CAD) };
}

/// Flushes file systems and powers the machine off. Returns only if that failed.
pub fn power_off() -> io::Error {
    // SAFETY: plain syscalls without pointers.
    unsafe {
        sync();
        reboot(RB_POWER_OFF);
    }
    io::Error::last_os_error()
}

pub fn send_signal(pid: pid_t, sig: c_int) -> io::Result<()> {
    // SAFETY: plain syscall without pointers.
    check(unsafe { kill(pid, sig) }).map(drop)
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// `waitpid(-1, WNOHANG)`: one reaped child, or `None` when no child has ended (or none exists).
pub fn reap_one() -> Option<(pid_t, Exit)> {
    let mut status: c_int = 0;
    // SAFETY: status points to a valid c_int.
    let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let exit = if status & 0x7f == 0 {
        Exit::Code((status >> 8) & 0xff)
    } else {
        Exit::Signal(status & 0x7f)
    };
    Some((pid, exit))
}

/// Blocks `signals` for this process and returns a signalfd delivering them.
pub fn block_into_signalfd(signals: &[c_int]) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; the glibc functions initialise and fill it.
    unsafe {
        let mut set: sigset_t = std::mem::zeroed();
        sigemptyset(&mut set);
        for &s in signals {
            sigaddset(&mut set, s);
        }
        check(sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut()))?;
        let fd = check(signalfd(-1, &set, SFD_CLOEXEC))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Unblocks every signal. Called in the app's process between fork and exec: `std::process`
/// keeps the parent's signal mask, and the app must not inherit ours.
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset and sigprocmask are async-signal-safe.
    unsafe {
        let mut set: sigset_t = std::mem::zeroed();
        sigemptyset(&mut set);
        check(sigprocmask(SIG_SETMASK, &set, std::ptr::null_mut())).map(drop)
    }
}

/// Reads one pending signal number from a signalfd (blocking).
pub fn read_signal(fd: &OwnedFd) -> io::Result<c_int> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<signalfd_siginfo>();
    // SAFETY: buffer is `size` bytes long.
    let n = unsafe {
        read(
            fd.as_raw_fd(),
            (&mut info as *mut signalfd_siginfo).cast(),
            size,
        )
    };
    if n != size as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(info.ssi_signo as c_int)
}

/// `poll(2)`; returns how many entries have events. EINTR counts as zero.
pub fn poll_fds(fds: &mut [pollfd], timeout_ms: c_int) -> io::Result<usize> {
    // SAFETY: the slice is valid for its length.
    let r = unsafe { poll(fds.as_mut_ptr(), fds.len() as c_ulong, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(r as usize)
}

/// A socket for interface ioctls.
pub struct NetCtl(OwnedFd);

fn ifreq_for(name: &str) -> io::Result<ifreq> {
    if name.is_empty() || name.len() >= 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names are 1 to 15 bytes",
        ));
    }
    let mut ifr = ifreq {
        ifr_name: [0; 16],
        ifru: ifr_ifru { _pad: [0; 24] },
    };
    ifr.ifr_name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(ifr)
}

fn sin(addr: Ipv4Addr) -> sockaddr_in {
    sockaddr_in {
        sin_family: AF_INET as c_ushort,
        sin_port: 0,
        sin_addr: addr.octets(),
        sin_zero: [0; 8],
    }
}

impl NetCtl {
    pub fn open() -> io::Result<NetCtl> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = check(unsafe { socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) })?;
        // SAFETY: fd is a fresh, valid descriptor.
        Ok(NetCtl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl(&self, request: c_ulong, arg: *mut c_void) -> io::Result<()> {
        // SAFETY: callers pass a pointer to the struct the request expects.
        check(unsafe { ioctl(self.0.as_raw_fd(), request, arg) }).map(drop)
    }

    /// Whether the interface exists (SIOCGIFINDEX).
    pub fn exists(&self, name: &str) -> bool {
        match ifreq_for(name) {
            Ok(mut ifr) => self
                .ioctl(SIOCGIFINDEX, (&mut ifr as *mut ifreq).cast())
                .is_ok(),
            Err(_) => false,
        }
    }

    pub fn set_address(&self, name: &str, addr: Ipv4Addr, netmask: Ipv4Addr) -> io::Result<()> {
        let mut ifr = ifreq_for(name)?;
        ifr.ifru.addr = sin(addr);
        self.ioctl(SIOCSIFADDR, (&mut ifr as *mut ifreq).cast())?;
        let mut ifr = ifreq_for(name)?;
        ifr.ifru.addr = sin(netmask);
        self.ioctl(SIOCSIFNETMASK, (&mut ifr as *mut ifreq).cast())
    }

    pub fn bring_up(&self, name: &str) -> io::Result<()> {
        let mut ifr = ifreq_for(name)?;
        self.ioctl(SIOCGIFFLAGS, (&mut ifr as *mut ifreq).cast())?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        let flags = unsafe { ifr.ifru.flags };
        ifr.ifru.flags = flags | IFF_UP | IFF_RUNNING;
        self.ioctl(SIOCSIFFLAGS, (&mut ifr as *mut ifreq).cast())
    }

    pub fn add_default_route(&self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut rt = rtentry {
            rt_pad1: 0,
            rt_dst: sin(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sin(gateway),
            rt_genmask: sin(Ipv4Addr::UNSPECIFIED),
            rt_flags: RTF_UP | RTF_GATEWAY,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: std::ptr::null_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        self.ioctl(SIOCADDRT, (&mut rt as *mut rtentry).cast())
    }
}

/// The message of an OS error without Rust's " (os error N)" suffix, like `strerror`.
pub fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if e.raw_os_error().is_some() => s[..i].to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_struct_layouts_match_the_x86_64_abi() {
        assert_eq!(std::mem::size_of::<ifreq>(), 40);
        assert_eq!(std::mem::size_of::<rtentry>(), 120);
        assert_eq!(std::mem::size_of::<sigset_t>(), 128);
        assert_eq!(std::mem::size_of::<signalfd_siginfo>(), 128);
        assert_eq!(std::mem::size_of::<pollfd>(), 8);
    }

    #[test]
    fn describe_drops_the_os_error_suffix() {
        assert_eq!(
            describe(&io::Error::from_raw_os_error(2)),
            "No such file or directory"
        );
        assert_eq!(describe(&io::Error::other("plain")), "plain");
    }
}
