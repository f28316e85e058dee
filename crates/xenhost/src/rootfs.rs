//! The dom0 root filesystem, laid out with bakeoff's own closure machinery (`bakeoff-elf`) from
//! the unpacked Debian packages, and packed as an initramfs by `bakeoff-guest` with bakeoff's
//! PID 1, which loads the dom0 modules and runs [`START`].

use std::path::{Path, PathBuf};

use bakeoff_elf::{closure, copy_into, Closure, EntryKind};
use bakeoff_guest::{GuestConfig, Kernel, ModuleFile};
use fs_err as fs;

use crate::XenHostError;

/// Where the Xen tools live in Debian's packages.
pub const XEN_BIN: &str = "/usr/lib/xen-4.17/bin";

/// The dom0 port the command channel listens on (forwarded from 127.0.0.1 on the outer host).
pub const AGENT_PORT: u16 = 7000;

/// The line the start script prints once dom0 can create guests.
pub const READY_LINE: &str = "xenhost: ready";

/// Modules dom0 loads (with their dependencies): Xen's device drivers, the guests' NIC backend
/// and bridge, dom0's own NIC (virtio-net on QEMU), and what iptables needs for the driver's
/// DNAT rules and the guests' outbound NAT.
pub const DOM0_MODULES: &[&str] = &[
    "xen_evtchn",
    "xen_gntdev",
    "xen_gntalloc",
    "xen_privcmd",
    "xenfs",
    "xen_netback",
    "bridge",
    "virtio_pci",
    "virtio_net",
    "crc32c_generic",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
    "xt_comment",
    "xt_addrtype",
    "xt_conntrack",
    "xt_nat",
    "xt_tcpudp",
    "xt_MASQUERADE",
];

/// Programs (inside the unpacked packages) whose closures go into dom0.
const PROGRAMS: &[&str] = &[
    "/usr/lib/xen-4.17/bin/xl",
    "/usr/lib/xen-4.17/bin/xenstored",
    "/usr/lib/xen-4.17/bin/xenconsoled",
    "/usr/lib/xen-4.17/bin/xenconsole",
    "/usr/lib/xen-4.17/bin/xen-init-dom0",
    "/usr/lib/xen-4.17/bin/libxl-save-helper",
    "/usr/bin/xenstore",
    "/usr/sbin/xtables-legacy-multi",
    // glibc dlopen()s it for pthread_cancel and unwinding; xl needs it.
    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
];

/// dom0's start: Xen's daemons, the network for guests, then the command channel.
pub const START: &str = r#"#!/bin/sh
# dom0 of bakeoff's nested Xen host (written by bakeoff-xenhost; run by bakeoff's PID 1).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root BAKEOFF_STATE_DIR=/var/lib/bakeoff BAKEOFF_CACHE_DIR=/var/cache/bakeoff
say() { echo "xenhost: $*"; }
fail() { say "$*"; exit 1; }
X=/usr/lib/xen-4.17/bin
mkdir -p /proc/xen /run/xen /run/xenstored /run/lock /var/lib/xen /var/lib/xenstored \
  /var/log/xen/console /root /var/lib/bakeoff /var/cache/bakeoff
mount -t xenfs xenfs /proc/xen || fail "cannot mount xenfs on /proc/xen"
grep -q control_d /proc/xen/capabilities || fail "this kernel is not Xen's control domain"
$X/xenstored --pid-file=/run/xenstored.pid || fail "xenstored did not start"
$X/xen-init-dom0 || fail "xen-init-dom0 failed"
$X/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console ||
  fail "xenconsoled did not start"
ip link set lo up
{ ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; } ||
  fail "dom0 has no eth0"
{ brctl addbr xenbr0 && ip addr add 10.0.3.1/24 dev xenbr0 && ip link set xenbr0 up; } ||
  fail "cannot create the bridge xenbr0"
sysctl -q -w net.ipv4.ip_forward=1
iptables -w -t nat -A POSTROUTING -s 10.0.3.0/24 -o eth0 -j MASQUERADE || fail "iptables does not work"
say "$(xl info | grep -E '^(xen_version|virt_caps|free_memory)' | tr -s ' ' | tr '\n' ' ')"
say "ready"
exec nc -ll -p 7000 -e /usr/lib/xenhost/agent
"#;

/// One command per connection: a line in, its output and `@@xenhost-exit N` out.
pub const AGENT: &str = r#"#!/bin/sh
IFS= read -r line || exit 0
cd /root || exit 1
sh -c "$line" </dev/null 2>&1
echo "@@xenhost-exit $?"
"#;

/// The marker the agent prints after a command's output.
pub const EXIT_MARKER: &str = "@@xenhost-exit ";

/// libxl's hotplug script for guest NICs (named by `vif.default.script` in xl.conf): puts the
/// backend interface on the bridge the guest's config names. Debian's `vif-bridge` needs bash.
pub const VIF_SCRIPT: &str = r#"#!/bin/sh
# bakeoff-xenhost: libxl runs this with online/offline/add/remove; $vif is the backend NIC.
bridge=$(xenstore-read "$XENBUS_PATH/bridge" 2>/dev/null) || bridge=xenbr0
case "$1" in
online|add)
  ip link set "$vif" up || exit 1
  brctl addif "$bridge" "$vif" || exit 1
  xenstore-write "$XENBUS_PATH/hotplug-status" connected
  ;;
offline|remove)
  brctl delif "$bridge" "$vif" 2>/dev/null
  ;;
esac
exit 0
"#;

pub const XL_CONF: &str =
    "# bakeoff-xenhost\nvif.default.script=\"vif-bakeoff-host\"\nautoballoon=\"off\"\n";

/// What to put into dom0 besides the Xen tools.
pub struct RootInputs<'a> {
    /// The unpacked Debian packages.
    pub packages: &'a Path,
    /// bakeoff itself (on this host); installed as /usr/local/bin/bakeoff, debug info stripped.
    pub bakeoff: &'a Path,
    /// Extra files: (host path, absolute path inside dom0).
    pub files: &'a [(PathBuf, String)],
    /// A guest kernel for `bakeoff run --kernel` in dom0, copied to `/opt/guest-kernel` with the
    /// modules bakeoff's microVM image takes.
    pub guest_kernel: Option<(&'a Kernel, &'a [ModuleFile])>,
    /// bakeoff's minimal kernel (its cache directory, `minimal-<hash>/`), copied into dom0's
    /// bakeoff cache, where it is the microVM's default kernel as on any machine that built it.
    pub minimal_kernel: Option<&'a Path>,
}

/// bakeoff's cache directory in dom0 (`BAKEOFF_CACHE_DIR` of dom0's shell and agent).
pub const DOM0_CACHE_DIR: &str = "/var/cache/bakeoff";

/// Where a guest kernel goes in dom0: `--kernel` takes this path (its modules are found beside).
pub fn guest_kernel_path(k: &Kernel) -> String {
    format!("/opt/guest-kernel/boot/vmlinux-{}", k.version)
}

fn write_file(root: &Path, inside: &str, text: &[u8], mode: u32) -> Result<(), XenHostError> {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(inside.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap_or(root))?;
    fs::write(&p, text)?;
    fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn symlink(root: &Path, inside: &str, target: &str) -> Result<(), XenHostError> {
    let p = root.join(inside.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap_or(root))?;
    if std::fs::symlink_metadata(&p).is_ok() {
        return Ok(());
    }
    std::os::unix::fs::symlink(target, &p).map_err(|e| {
        XenHostError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot link {}: {e}", p.display()),
        ))
    })
}

/// The closure of `exe` without `exe` itself (its libraries and interpreter).
fn libraries_of(c: &Closure, exe: &Path) -> Closure {
    let mut c = c.clone();
    c.entries.retain(|e| {
        e.path != exe && !(matches!(e.kind, EntryKind::Dir) && exe.starts_with(&e.path))
    });
    c
}

/// Lays out the dom0 root in `dest` (an empty directory).
pub fn lay_out(inputs: &RootInputs<'_>, dest: &Path) -> Result<(), XenHostError> {
    // bakeoff's libraries come from this host (it was linked here); the packages' own
    // libraries are laid over them (the same Debian release).
    let host_closure = closure(inputs.bakeoff, Path::new("/"))?;
    let exe = std::path::absolute(inputs.bakeoff)?;
    copy_into(&libraries_of(&host_closure, &exe), dest)?;
    for prog in PROGRAMS {
        let c = closure(Path::new(prog), inputs.packages)?;
        copy_into(&c, dest)?;
    }
    // xenstore-read/-write/... are links to `xenstore`.
    for tool in [
        "read", "write", "ls", "list", "rm", "exists", "chmod", "watch",
    ] {
        symlink(dest, &format!("/usr/bin/xenstore-{tool}"), "xenstore")?;
    }
    // iptables' extensions are dlopen()ed: all of them, with their closures.
    let xt = inputs.packages.join("usr/lib/x86_64-linux-gnu/xtables");
    for e in fs::read_dir(&xt)?.flatten() {
        let inside = format!(
            "/usr/lib/x86_64-linux-gnu/xtables/{}",
            e.file_name().to_string_lossy()
        );
        copy_into(&closure(Path::new(&inside), inputs.packages)?, dest)?;
    }
    for link in ["iptables", "iptables-save", "iptables-restore"] {
        symlink(dest, &format!("/usr/sbin/{link}"), "xtables-legacy-multi")?;
    }
    symlink(dest, "/usr/sbin/xl", "../lib/xen-4.17/bin/xl")?;
    // busybox: the shell and the small tools.
    let busybox = inputs.packages.join("bin/busybox");
    write_file(dest, "/bin/busybox", &fs::read(&busybox)?, 0o755)?;
    for applet in busybox_applets(&busybox) {
        if applet == "busybox" || dest.join("usr/sbin").join(&applet).exists() {
            continue;
        }
        symlink(dest, &format!("/bin/{applet}"), "busybox")?;
    }
    symlink(dest, "/var/run", "../run")?;
    symlink(dest, "/var/lock", "../run/lock")?;
    write_file(dest, "/etc/xen/xl.conf", XL_CONF.as_bytes(), 0o644)?;
    write_file(
        dest,
        "/etc/xen/scripts/vif-bakeoff-host",
        VIF_SCRIPT.as_bytes(),
        0o755,
    )?;
    write_file(dest, "/usr/lib/xenhost/start", START.as_bytes(), 0o755)?;
    write_file(dest, "/usr/lib/xenhost/agent", AGENT.as_bytes(), 0o755)?;
    write_file(
        dest,
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write_file(dest, "/etc/group", b"root:x:0:\n", 0o644)?;
    // bakeoff, without its debug information (a third of the size).
    let bin = dest.join("usr/local/bin/bakeoff");
    fs::create_dir_all(bin.parent().unwrap_or(dest))?;
    fs::copy(inputs.bakeoff, &bin)?;
    let _ = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg(&bin)
        .status();
    for (host, inside) in inputs.files {
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(host)?.permissions().mode() & 0o7777
        };
        write_file(dest, inside, &fs::read(host)?, mode)?;
    }
    if let Some((k, modules)) = inputs.guest_kernel {
        let base = "/opt/guest-kernel";
        write_file(dest, &guest_kernel_path(k), &fs::read(&k.vmlinux)?, 0o644)?;
        let builtin = k.modules_root.join("modules.builtin");
        if builtin.is_file() {
            write_file(
                dest,
                &format!("{base}/lib/modules/{}/modules.builtin", k.version),
                &fs::read(&builtin)?,
                0o644,
            )?;
        }
        for m in modules {
            write_file(dest, &format!("{base}{}", m.dest), &m.read()?, 0o644)?;
        }
    }
    if let Some(dir) = inputs.minimal_kernel {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        for e in fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                let inside = format!(
                    "{DOM0_CACHE_DIR}/kernels/{name}/{}",
                    e.file_name().to_string_lossy()
                );
                write_file(dest, &inside, &fs::read(e.path())?, 0o644)?;
            }
        }
    }
    Ok(())
}

/// The applets of busybox (`busybox --list`), or a fixed set when it cannot run here.
fn busybox_applets(busybox: &Path) -> Vec<String> {
    let listed = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        });
    listed.filter(|l| !l.is_empty()).unwrap_or_else(|| {
        "sh ash cat echo ls mkdir mount ip brctl sysctl nc grep sed tr sleep ps kill timeout wget head tail env true false test [ printf cp mv rm ln chmod uname free dmesg hostname date awk sort wc seq cut xargs find"
            .split(' ')
            .map(str::to_string)
            .collect()
    })
}

/// The dom0 initramfs: the root in `root_dir` with bakeoff's PID 1 running [`START`] after
/// loading `modules`.
pub fn write_initramfs(
    root_dir: &Path,
    modules: &[ModuleFile],
    out: &Path,
) -> Result<(), XenHostError> {
    let config = GuestConfig {
        command: vec!["/bin/sh".into(), "/usr/lib/xenhost/start".into()],
        hostname: "xenhost".into(),
        ..Default::default()
    };
    let init = bakeoff_guest::init_binary()?;
    bakeoff_guest::write_initramfs(root_dir, &config, modules, &init, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripts are what busybox's sh can run: no bashisms the dom0 shell would trip on.
    #[test]
    fn scripts_are_posix_sh() {
        for (name, text) in [("start", START), ("agent", AGENT), ("vif", VIF_SCRIPT)] {
            assert!(text.starts_with("#!/bin/sh\n"), "{name}");
            for bashism in ["[[", "function ", "$'", "<<<", "source "] {
                assert!(!text.contains(bashism), "{name} uses {bashism}");
            }
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", text])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(START.contains(READY_LINE.trim_start_matches("xenhost: ")));
        assert!(START.contains(&format!("nc -ll -p {AGENT_PORT}")));
        assert!(AGENT.contains(EXIT_MARKER.trim_end()));
    }
}
