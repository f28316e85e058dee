//! The QEMU command line, as a pure function of a [`QemuConfig`].

use std::path::PathBuf;

use bakeoff_spec::PortMapping;
use serde::{Deserialize, Serialize};

/// The frequency of the local APIC's timer in a QEMU guest, TCG or KVM: 1 GHz (QEMU's
/// APIC_BUS_CYCLE_NS is 1 ns, as is KVM's). A guest kernel's own calibration on QEMU 7.2 here
/// measured 999.8 MHz. Divided by the kernel's HZ, it is `lapic_timer_period=`.
pub const APIC_BUS_HZ: u64 = 1_000_000_000;

/// The CPU model under TCG: x86-64-v2 (see [`qemu_argv`]).
pub const TCG_CPU: &str = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// QEMU's `microvm`: no PCI, no firmware, boots a PVH vmlinux; virtio-mmio devices.
    Microvm,
    /// A standard PC (`q35`): boots a bzImage through the firmware; virtio-pci devices.
    Q35,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// Everything that decides the QEMU command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QemuConfig {
    pub machine: Machine,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Each `-p` becomes a user-networking hostfwd.
    pub forwards: Vec<PortMapping>,
    /// A NIC is attached when true (the guest needs virtio_net then).
    pub network: bool,
    /// Lets the guest reach the host (10.0.2.2 is the host's loopback) and beyond. Off by
    /// default: slirp's `restrict=on` isolates the guest; the `-p` forwards still work.
    #[serde(default)]
    pub open_network: bool,
    pub serial_log: PathBuf,
    pub qmp_socket: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    /// A warm start: the console also takes input from this socket (the run's values, written
    /// once after the restore); its output still goes to `serial_log`.
    #[serde(default)]
    pub console_socket: Option<PathBuf>,
    /// A warm start: the guest's state is loaded from this snapshot instead of booting.
    #[serde(default)]
    pub incoming: Option<PathBuf>,
}

/// The argv (without the program name, which is `qemu-system-x86_64`).
pub fn qemu_argv(c: &QemuConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(|s| s.to_string()));
    match c.machine {
        // No legacy PIT/PIC. Not `rtc=off`: measured here, the kernel then spends 2 s failing to
        // read the clock (the app started 3.2 s after QEMU instead of 1.2 s, under TCG).
        Machine::Microvm => push(&["-M", "microvm,pit=off,pic=off"]),
        Machine::Q35 => push(&["-M", "q35"]),
    }
    match c.accel {
        // `-cpu host` aborts on an MSR under nested KVM unless arch-capabilities is off.
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
        // A small translation cache instead of QEMU's 1 GiB default (it is touched as it fills):
        // measured here with the minimal kernel at -m 32, QEMU's RSS is 90 MiB with 8, 100 with
        // 16, 114 with 32 and 118 with 64; a boot writes ~27 MB of translated code and is slower
        // with 8 than with 16 (and with 12: PID 1 ~60 ms later). A warm start translates no boot
        // code: with 11 MiB its RSS is 3.5 MiB lower than with 16 and its launch the same; with
        // 10 or 8 the launch is slower.
        //
        // The CPU is x86-64-v2 (SSE4.2, POPCNT), not `max`: with `max` glibc and the kernel
        // pick their AVX2 string routines, which TCG emulates slowly. Measured in six
        // alternating benches of the example (minimal kernel): req/s 23.4k/23.8k vs 20.2k/19.1k,
        // first 200 0.41/0.39 s vs 0.43/0.48 s. v2 rather than bare qemu64 (as fast): apps
        // built for the v2 baseline run.
        Accel::Tcg => {
            let mib = if c.incoming.is_some() { 11 } else { 16 };
            push(&["-accel", &format!("tcg,tb-size={mib}"), "-cpu", TCG_CPU]);
        }
    }
    let mem = format!("{}M", c.memory_mib);
    let smp = c.cpus.max(1).to_string();
    push(&["-m", &mem, "-smp", &smp]);
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    if c.machine == Machine::Q35 {
        push(&["-vga", "none"]);
    }
    match &c.console_socket {
        None => push(&["-serial", &format!("file:{}", c.serial_log.display())]),
        Some(sock) => {
            let chardev = format!(
                "socket,id=console,path={},server=on,wait=off,logfile={}",
                sock.display(),
                c.serial_log.display()
            );
            push(&["-chardev", &chardev, "-serial", "chardev:console"]);
        }
    }
    push(&["-kernel", &c.kernel.display().to_string()]);
    if let Some(initrd) = &c.initrd {
        push(&["-initrd", &initrd.display().to_string()]);
    }
    push(&["-append", &c.cmdline]);
    if c.network {
        // `restrict=on`: the guest cannot reach the host (10.0.2.2 → the host's 127.0.0.1) nor
        // anything else; hostfwd rules (the `-p` ports) still come in.
        let mut netdev = if c.open_network {
            "user,id=n0".to_string()
        } else {
            "user,id=n0,restrict=on".to_string()
        };
        for f in &c.forwards {
            let proto = crate::proto(f.protocol);
            netdev.push_str(&format!(
                ",hostfwd={proto}:{}:{}-:{}",
                f.host_ip, f.host_port, f.guest_port
            ));
        }
        push(&["-netdev", &netdev]);
        let nic = match c.machine {
            Machine::Microvm => "virtio-net-device,netdev=n0",
            Machine::Q35 => "virtio-net-pci,netdev=n0,romfile=",
        };
        push(&["-device", nic]);
    }
    // The guest reports its own memory use through the balloon's statistics (read over QMP),
    // and gives back the memory it freed (free page reporting: QEMU drops those pages).
    match c.machine {
        Machine::Microvm => push(&[
            "-device",
            "virtio-balloon-device,id=balloon0,free-page-reporting=on",
        ]),
        Machine::Q35 => push(&[
            "-device",
            "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
        ]),
    }
    if let Some(q) = &c.qmp_socket {
        push(&["-qmp", &format!("unix:{},server=on,wait=off", q.display())]);
    }
    if let Some(p) = &c.pidfile {
        push(&["-pidfile", &p.display().to_string()]);
    }
    if let Some(state) = &c.incoming {
        // QEMU runs this through `sh -c`; bakeoff's cache paths have no quote (the caller checks).
        push(&["-incoming", &format!("exec:cat '{}'", state.display())]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(machine: Machine, accel: Accel) -> QemuConfig {
        QemuConfig {
            machine,
            accel,
            memory_mib: 64,
            cpus: 1,
            kernel: "/cache/kernels/6.1/vmlinux".into(),
            initrd: Some("/cache/images/microvm/abc/initramfs.cpio.lz4".into()),
            cmdline: "console=ttyS0 panic=-1 bakeoff.ip=10.0.2.15/24".into(),
            forwards: vec![
                bakeoff_spec::parse_publish("8080:80").unwrap(),
                bakeoff_spec::parse_publish("127.0.0.2:5353:53/udp").unwrap(),
            ],
            network: true,
            open_network: false,
            serial_log: "/state/instances/web/console.log".into(),
            qmp_socket: Some("/state/instances/web/qmp.sock".into()),
            pidfile: Some("/state/instances/web/qemu.pid".into()),
            console_socket: None,
            incoming: None,
        }
    }

    /// A warm start differs from a boot only in the console (a socket that also logs), the
    /// state it loads and the translation cache's size (not part of the state): the rest must
    /// stay the same for the snapshot to load.
    #[test]
    fn a_warm_start_adds_a_console_socket_and_the_snapshot() {
        let boot = config(Machine::Microvm, Accel::Tcg);
        let warm = QemuConfig {
            console_socket: Some("/state/instances/web/console.sock".into()),
            incoming: Some("/cache/snapshots/abc/state".into()),
            ..boot.clone()
        };
        let (a, b) = (qemu_argv(&boot), qemu_argv(&warm));
        let serial = |argv: &[String]| argv.iter().position(|x| x == "-serial").unwrap();
        assert_eq!(a[serial(&a) + 1], "file:/state/instances/web/console.log");
        assert_eq!(b[serial(&b) + 1], "chardev:console");
        assert_eq!(
            b[serial(&b) - 1],
            "socket,id=console,path=/state/instances/web/console.sock,server=on,wait=off,logfile=/state/instances/web/console.log"
        );
        assert_eq!(
            b[b.len() - 2..],
            ["-incoming", "exec:cat '/cache/snapshots/abc/state'"]
        );
        // A smaller translation cache: a warm start translates no boot code.
        assert!(a.contains(&"tcg,tb-size=16".to_string()), "{a:?}");
        assert!(b.contains(&"tcg,tb-size=11".to_string()), "{b:?}");
        let strip = |argv: &[String]| -> Vec<String> {
            argv.iter()
                .filter(|x| !x.contains("console") && !x.contains("snapshots"))
                .filter(|x| !x.starts_with("tcg,"))
                .filter(|x| !matches!(x.as_str(), "-serial" | "-chardev" | "-incoming"))
                .cloned()
                .collect()
        };
        assert_eq!(strip(&a), strip(&b));
    }

    #[test]
    fn microvm_tcg_argv() {
        insta::assert_snapshot!(qemu_argv(&config(Machine::Microvm, Accel::Tcg)).join("\n"));
    }

    #[test]
    fn q35_kvm_argv() {
        insta::assert_snapshot!(qemu_argv(&config(Machine::Q35, Accel::Kvm)).join("\n"));
    }

    /// A microVM reached the host's loopback services through 10.0.2.2 (issue 16): the user
    /// network is restricted unless opened, and the forwards stay.
    #[test]
    fn user_network_is_restricted_unless_opened() {
        let mut c = config(Machine::Microvm, Accel::Tcg);
        let argv = qemu_argv(&c);
        let netdev = &argv[argv.iter().position(|a| a == "-netdev").unwrap() + 1];
        assert_eq!(
            netdev,
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.2:5353-:53"
        );
        c.open_network = true;
        let argv = qemu_argv(&c);
        assert!(!argv.iter().any(|a| a.contains("restrict")), "{argv:?}");
    }

    #[test]
    fn no_network_no_nic() {
        let mut c = config(Machine::Microvm, Accel::Tcg);
        c.network = false;
        let argv = qemu_argv(&c);
        assert!(!argv.iter().any(|a| a.contains("netdev")), "{argv:?}");
    }
}
