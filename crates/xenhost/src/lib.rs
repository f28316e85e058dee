//! A Xen host for tests and for users without one: Xen 4.17 booted as a QEMU guest (TCG, no
//! KVM needed: `-cpu qemu64,+svm,+npt` gives Xen the emulated nested paging its PVH guests
//! need) with Debian's generic kernel as dom0, whose initramfs bakeoff builds itself:
//!
//! - the Debian packages (hypervisor, tools, libraries, iptables, busybox, the dom0 kernel) are
//!   fetched with `apt-get download` into the download cache and unpacked there ([`packages`]);
//!   nothing is installed on this host;
//! - the dom0 root is laid out with bakeoff's closure machinery and packed with bakeoff's PID 1,
//!   which loads the dom0 modules and runs a start script ([`rootfs`]): xenfs, xenstored,
//!   xen-init-dom0, xenconsoled, the bridge `xenbr0` (10.0.3.1/24) with NAT, then a command
//!   channel on a port forwarded from 127.0.0.1;
//! - [`XenHost::exec`] runs one shell command in dom0 and returns its output and exit status.
//!
//! Figures measured inside it are nested under emulation: they say nothing about Xen on hardware.

pub mod packages;
pub mod rootfs;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bakeoff_guest::{Kernel, ModuleFile};
use fs_err as fs;

pub use rootfs::{guest_kernel_path, AGENT_PORT, READY_LINE};

#[derive(Debug, thiserror::Error)]
pub enum XenHostError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(
        "apt cannot find {package}: the package lists are missing or stale; run apt-get update"
    )]
    AptLists { package: String },
    #[error("{command} failed: {reason}")]
    Tool { command: String, reason: String },
    #[error(transparent)]
    Elf(#[from] bakeoff_elf::ElfError),
    #[error(transparent)]
    Guest(#[from] bakeoff_guest::GuestError),
    #[error(
        "qemu-system-x86_64 is not installed (Debian's qemu-system-x86); the Xen host boots in it"
    )]
    NoQemu,
    #[error("the Xen host did not boot within {secs} s; its console ended with:\n{tail}")]
    BootTimeout { secs: u64, tail: String },
    #[error("the Xen host stopped during boot ({status}); its console ended with:\n{tail}")]
    BootFailed { status: String, tail: String },
    #[error("the command channel of the Xen host failed: {0}")]
    Channel(String),
}

/// What to boot.
pub struct HostOptions {
    /// The cache (downloads, unpacked packages): bakeoff's cache dir.
    pub cache_dir: PathBuf,
    /// Where this host's initramfs and console log are written.
    pub work_dir: PathBuf,
    /// The bakeoff binary to install in dom0.
    pub bakeoff: PathBuf,
    /// Extra files: (host path, absolute path in dom0).
    pub files: Vec<(PathBuf, String)>,
    /// Copy Debian's cloud kernel into dom0 for `--kernel`, and bakeoff's minimal kernel, when
    /// `bakeoff kernel build` has made it here, into dom0's cache (dom0's default guest kernel).
    pub guest_kernel: bool,
    /// dom0 TCP ports to forward from 127.0.0.1 (each gets a free port here).
    pub forwards: Vec<u16>,
    pub boot_timeout: Duration,
    pub log: fn(&str),
}

/// What [`prepare`] made: the files QEMU boots.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The hypervisor, gunzipped (a multiboot ELF for QEMU's `-kernel`).
    pub xen: PathBuf,
    pub dom0_kernel: PathBuf,
    pub initrd: PathBuf,
    /// Where `--kernel` finds the guest kernel inside dom0, when one was copied in.
    pub guest_kernel: Option<String>,
    /// bakeoff's minimal kernel in dom0's cache, when one was copied in: its version and config
    /// hash, as `bakeoff run` names it ("6.1.192 (config 47a37ad4c8e252af)").
    pub minimal_kernel: Option<String>,
    /// Xen's package version.
    pub xen_version: String,
}

fn cached_dir(cache: &Path) -> PathBuf {
    cache.join("xenhost")
}

/// Fetches and unpacks the packages (cached), lays out dom0 and writes its initramfs.
pub fn prepare(o: &HostOptions) -> Result<Prepared, XenHostError> {
    let pkgs = packages::resolve()?;
    let debs = packages::fetch(&pkgs, &o.cache_dir.join("downloads/debs"), &|m| (o.log)(m))?;
    let xen_version = pkgs
        .iter()
        .find(|p| p.name == "xen-hypervisor-4.17-amd64")
        .map(|p| p.version.clone())
        .unwrap_or_default();
    // One unpack of everything, keyed by the exact package set.
    let key = {
        use sha2::Digest;
        let mut names: Vec<String> = debs.iter().map(|d| d.display().to_string()).collect();
        names.sort();
        hex::encode(sha2::Sha256::digest(names.join("\n")))[..16].to_string()
    };
    let root = cached_dir(&o.cache_dir).join(format!("packages-{key}"));
    (o.log)("unpacking the Xen host's packages (once)");
    packages::unpack(&debs, &root)?;

    let xen = root.join("boot/xen.elf");
    if !xen.is_file() {
        let gz = fs::read_dir(root.join("boot"))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                n.starts_with("xen-") && n.ends_with(".gz")
            })
            .ok_or_else(|| XenHostError::Tool {
                command: "xen-hypervisor".into(),
                reason: format!("no /boot/xen-*.gz in {}", root.display()),
            })?;
        let mut elf = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(&gz)?).read_to_end(&mut elf)?;
        fs::write(&xen, elf)?;
    }
    let release = fs::read_dir(root.join("lib/modules"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with("-amd64") && !n.contains("cloud"))
        .ok_or_else(|| XenHostError::Tool {
            command: "linux-image".into(),
            reason: format!("no generic kernel modules in {}", root.display()),
        })?;
    let dom0 = Kernel {
        version: release.clone(),
        bzimage: root.join(format!("boot/vmlinuz-{release}")),
        vmlinux: root.join(format!("boot/vmlinuz-{release}")),
        modules_root: root.join(format!("lib/modules/{release}")),
    };
    let dom0_modules = dom0.modules_in_load_order(rootfs::DOM0_MODULES)?;

    let guest: Option<(Kernel, Vec<ModuleFile>)> = if o.guest_kernel {
        let k = bakeoff_guest::ensure_kernel(&o.cache_dir)?;
        let mut names: Vec<&str> = bakeoff_guest::NET_MODULES
            .iter()
            .chain(bakeoff_guest::POWER_MODULES)
            .copied()
            .collect();
        names.extend(["virtio_balloon", "xen_netfront"]);
        let mut mods = Vec::new();
        for n in names {
            if let Ok(m) = k.modules_in_load_order(&[n]) {
                mods.extend(m);
            }
        }
        mods.sort_by(|a, b| a.dest.cmp(&b.dest));
        mods.dedup_by(|a, b| a.dest == b.dest);
        Some((k, mods))
    } else {
        None
    };

    let minimal = o
        .guest_kernel
        .then(|| bakeoff_guest::find_minimal_kernel(&o.cache_dir))
        .flatten();
    fs::create_dir_all(&o.work_dir)?;
    let staging = tempfile::Builder::new()
        .prefix(".dom0-root-")
        .tempdir_in(&o.work_dir)?;
    (o.log)("laying out dom0 and writing its initramfs");
    rootfs::lay_out(
        &rootfs::RootInputs {
            packages: &root,
            bakeoff: &o.bakeoff,
            files: &o.files,
            guest_kernel: guest.as_ref().map(|(k, m)| (k, m.as_slice())),
            minimal_kernel: minimal.as_ref().map(|m| m.dir.as_path()),
        },
        staging.path(),
    )?;
    let initrd = o.work_dir.join("dom0-initrd.gz");
    rootfs::write_initramfs(staging.path(), &dom0_modules, &initrd)?;
    Ok(Prepared {
        xen,
        dom0_kernel: dom0.bzimage,
        initrd,
        guest_kernel: guest.as_ref().map(|(k, _)| guest_kernel_path(k)),
        minimal_kernel: minimal.map(|m| format!("{} (config {})", m.kernel.version, m.config_hash)),
        xen_version,
    })
}

/// Xen's command line: its console on the first serial port, a fixed dom0 size, and no reboot
/// (a crash stops the machine, so a test sees it).
pub const XEN_ARGS: &str = "console=com1 dom0_mem=1024M,max:1024M noreboot";
pub const DOM0_ARGS: &str = "console=hvc0 earlyprintk=xen";

/// QEMU's argv (without the program) for `p`, the console file and the forwards
/// (127.0.0.1:outer → dom0:inner).
pub fn qemu_argv(p: &Prepared, console: &Path, forwards: &[(u16, u16)]) -> Vec<String> {
    let mut net = "user,id=n0".to_string();
    for (outer, inner) in forwards {
        net.push_str(&format!(",hostfwd=tcp:127.0.0.1:{outer}-:{inner}"));
    }
    [
        "-M",
        "pc",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "qemu64,+svm,+npt",
        "-smp",
        "2",
        "-m",
        "2048",
        "-display",
        "none",
        "-vga",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "-serial".into(),
        format!("file:{}", console.display()),
        "-kernel".into(),
        p.xen.display().to_string(),
        "-append".into(),
        XEN_ARGS.into(),
        "-initrd".into(),
        format!(
            "{} {DOM0_ARGS},{}",
            p.dom0_kernel.display(),
            p.initrd.display()
        ),
        "-netdev".into(),
        net,
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
    ])
    .collect()
}

/// A running Xen host. Dropping it ends its QEMU.
pub struct XenHost {
    child: Child,
    pub console: PathBuf,
    /// (outer 127.0.0.1 port, dom0 port).
    pub forwards: Vec<(u16, u16)>,
    pub prepared: Prepared,
    /// From QEMU's start to dom0's ready line.
    pub boot_time: Duration,
}

/// The output of one command in dom0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i32,
    /// stdout and stderr, interleaved.
    pub output: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The last `n` lines of a file (the console), for errors.
pub fn tail(path: &Path, n: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl XenHost {
    /// Prepares and boots; returns once dom0 printed [`READY_LINE`] and the command channel
    /// answers, or fails with the console's last lines.
    pub fn boot(o: &HostOptions) -> Result<XenHost, XenHostError> {
        let qemu = which("qemu-system-x86_64").ok_or(XenHostError::NoQemu)?;
        let prepared = prepare(o)?;
        let mut forwards = vec![(free_port()?, AGENT_PORT)];
        for p in &o.forwards {
            forwards.push((free_port()?, *p));
        }
        let console = o.work_dir.join("console.log");
        fs::write(&console, b"")?;
        let argv = qemu_argv(&prepared, &console, &forwards);
        (o.log)(&format!(
            "booting Xen under QEMU (TCG): {} {}",
            qemu.display(),
            argv.join(" ")
        ));
        let started = Instant::now();
        let child = Command::new(&qemu)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs::File::create(o.work_dir.join("qemu.stderr"))?
                    .into_parts()
                    .0,
            )
            .spawn()?;
        let mut host = XenHost {
            child,
            console,
            forwards,
            prepared,
            boot_time: Duration::ZERO,
        };
        let deadline = started + o.boot_timeout;
        loop {
            if let Ok(Some(status)) = host.child.try_wait() {
                let mut tail_text = tail(&host.console, 30);
                let stderr =
                    std::fs::read_to_string(o.work_dir.join("qemu.stderr")).unwrap_or_default();
                if !stderr.trim().is_empty() {
                    tail_text.push_str(&format!("\nqemu: {}", stderr.trim()));
                }
                return Err(XenHostError::BootFailed {
                    status: status.to_string(),
                    tail: tail_text,
                });
            }
            let console = std::fs::read_to_string(&host.console).unwrap_or_default();
            if console.contains(READY_LINE)
                && host
                    .exec("true", Duration::from_secs(20))
                    .is_ok_and(|o| o.code == 0)
            {
                host.boot_time = started.elapsed();
                return Ok(host);
            }
            if Instant::now() > deadline {
                return Err(XenHostError::BootTimeout {
                    secs: o.boot_timeout.as_secs(),
                    tail: tail(&host.console, 30),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The 127.0.0.1 port here that reaches `dom0_port`.
    pub fn port(&self, dom0_port: u16) -> Option<u16> {
        self.forwards
            .iter()
            .find(|(_, inner)| *inner == dom0_port)
            .map(|(outer, _)| *outer)
    }

    /// Runs `command` with dom0's `sh -c` (no stdin); waits at most `limit`.
    pub fn exec(&self, command: &str, limit: Duration) -> Result<ExecOutput, XenHostError> {
        Channel {
            port: self.port(AGENT_PORT).unwrap_or(0),
        }
        .exec(command, limit)
    }
    /// Powers dom0 off (Xen then stops the machine); kills QEMU if it has not ended in `grace`.
    pub fn shutdown(mut self, grace: Duration) {
        let _ = self.exec("poweroff -f >/dev/null 2>&1 &", Duration::from_secs(5));
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The command channel of a running host: 127.0.0.1:`port` reaches dom0's agent.
#[derive(Debug, Clone, Copy)]
pub struct Channel {
    pub port: u16,
}

impl Channel {
    /// Runs `command` with dom0's `sh -c` (no stdin); waits at most `limit`.
    pub fn exec(&self, command: &str, limit: Duration) -> Result<ExecOutput, XenHostError> {
        if command.contains('\n') {
            return Err(XenHostError::Channel("a command is one line".into()));
        }
        let port = self.port;
        let deadline = Instant::now() + limit;
        let ch = |e: std::io::Error| XenHostError::Channel(e.to_string());
        let mut s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(10))
                .map_err(ch)?;
        s.write_all(format!("{command}\n").as_bytes()).map_err(ch)?;
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(XenHostError::Channel(format!(
                    "`{command}` did not finish within {} s; output so far: {}",
                    limit.as_secs(),
                    String::from_utf8_lossy(&out)
                )));
            }
            s.set_read_timeout(Some(left.min(Duration::from_secs(5))))
                .map_err(ch)?;
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(ch(e)),
            }
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        parse_exec(&text).ok_or_else(|| {
            XenHostError::Channel(format!("no exit status after `{command}`; output: {text}"))
        })
    }
}

/// Splits the agent's answer into the output and the exit status.
pub fn parse_exec(text: &str) -> Option<ExecOutput> {
    let at = text.rfind(rootfs::EXIT_MARKER)?;
    let code = text[at + rootfs::EXIT_MARKER.len()..].trim().parse().ok()?;
    Some(ExecOutput {
        code,
        output: text[..at].to_string(),
    })
}

impl Drop for XenHost {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Quotes one word for dom0's `sh`.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_answers_are_split_into_output_and_status() {
        assert_eq!(
            parse_exec("hello\nworld\n@@xenhost-exit 3\n"),
            Some(ExecOutput {
                code: 3,
                output: "hello\nworld\n".into()
            })
        );
        assert_eq!(parse_exec("cut short"), None);
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn qemu_boots_xen_with_dom0_as_a_module() {
        let p = Prepared {
            xen: "/c/xen.elf".into(),
            dom0_kernel: "/c/vmlinuz".into(),
            initrd: "/w/initrd.gz".into(),
            guest_kernel: None,
            minimal_kernel: None,
            xen_version: "4.17".into(),
        };
        let argv = qemu_argv(
            &p,
            Path::new("/w/console.log"),
            &[(4000, 7000), (4001, 8080)],
        );
        let s = argv.join(" ");
        assert!(s.contains("-cpu qemu64,+svm,+npt"), "{s}");
        assert!(
            s.contains("-kernel /c/xen.elf -append console=com1 dom0_mem=1024M,max:1024M noreboot"),
            "{s}"
        );
        assert!(
            s.contains("-initrd /c/vmlinuz console=hvc0 earlyprintk=xen,/w/initrd.gz"),
            "{s}"
        );
        assert!(
            s.contains("hostfwd=tcp:127.0.0.1:4000-:7000,hostfwd=tcp:127.0.0.1:4001-:8080"),
            "{s}"
        );
    }
}
