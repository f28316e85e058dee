//! Xen `xl` domain configurations (xl.cfg(5)):
//! - the Linux microVM as a **PVH** guest: `kernel` = the PVH vmlinux, `ramdisk` = our
//!   initramfs, `cmdline` with the same `bakeoff.*` values as on QEMU (console on `hvc0`);
//! - the Rumprun image baked with `xen_pv` as a **PV** guest. Rumprun on Xen reads its JSON
//!   configuration from xenstore (`/local/domain/<domid>/rumprun/cfg`), written between
//!   `xl create -p` and `xl unpause`, as Rumprun's own `rumprun xen` script does.
//!
//! Both get one `vif` on a host bridge (default `xenbr0`) and a static address on
//! [`SUBNET`]; the bridge must carry [`GATEWAY`].

use std::net::Ipv4Addr;
use std::path::Path;

use bakeoff_spec::{RunOptions, Target};

use crate::cmdline::{kernel_cmdline, Console, KernelCmdline};
use crate::net::{mac_for, GuestAddress};
use crate::rumprun::{RumprunConfig, RumprunNet};
use crate::{memory_mib, vcpus, Image, LaunchError};

pub const DEFAULT_BRIDGE: &str = "xenbr0";
/// The guests' subnet on the bridge, and the bridge's own address (their gateway).
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 3, 0), 24);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 1);
/// Guests take 10.0.3.10 upwards, one per running instance.
pub const FIRST_GUEST: u8 = 10;
pub const MAX_SLOTS: u8 = 240;

/// The xenstore key, under the domain's path, where Rumprun looks for its configuration.
pub const RUMPRUN_CFG_KEY: &str = "rumprun/cfg";

/// The address of the guest in `slot` (0-based).
pub fn address(slot: u8) -> GuestAddress {
    let ip = Ipv4Addr::new(
        10,
        0,
        3,
        FIRST_GUEST.saturating_add(slot.min(MAX_SLOTS - 1)),
    );
    GuestAddress {
        ip,
        prefix: SUBNET.1,
        gateway: GATEWAY,
        mac: mac_for(ip),
    }
}

/// The Xen domain name of an instance.
pub fn domain_name(instance: &str) -> String {
    format!("bakeoff-{instance}")
}

/// One domain, ready for `xl create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlDomain {
    pub name: String,
    /// The xl.cfg text.
    pub config: String,
    /// For Rumprun: the JSON to write to `/local/domain/<domid>/rumprun/cfg` before unpausing.
    pub rumprun_cfg: Option<String>,
}

/// An xl.cfg string: double quotes, with `\` and `"` escaped.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn common(lines: &mut Vec<String>, memory: u64, vcpus: u32, addr: &GuestAddress, bridge: &str) {
    lines.push(format!("memory = {memory}"));
    lines.push(format!("vcpus = {vcpus}"));
    lines.push(format!(
        "vif = [ {} ]",
        q(&format!("bridge={bridge},mac={}", addr.mac))
    ));
    // Like QEMU's -no-reboot: when the guest ends, the domain goes.
    lines.push("on_poweroff = \"destroy\"".into());
    lines.push("on_reboot = \"destroy\"".into());
    lines.push("on_crash = \"destroy\"".into());
}

/// The microVM image as a PVH domain, every run-time value on its command line (what
/// `bakeoff export --format xl` gives: a file with no companion).
pub fn render_pvh(
    image: &Image,
    opts: &RunOptions,
    instance: &str,
    addr: &GuestAddress,
    bridge: &str,
) -> Result<XlDomain, LaunchError> {
    render_pvh_with(image, opts, instance, addr, bridge, None, None)
}

fn render_pvh_with(
    image: &Image,
    opts: &RunOptions,
    instance: &str,
    addr: &GuestAddress,
    bridge: &str,
    run_ramdisk: Option<&Path>,
    host_tsc_khz: Option<u32>,
) -> Result<XlDomain, LaunchError> {
    if image.target != Target::MicroVm {
        return Err(LaunchError::WrongImage(format!(
            "a Xen PVH domain boots the microvm image, not a {} image",
            image.target
        )));
    }
    let kernel = image.require("vmlinux", "vmlinux (a PVH kernel)")?;
    let initrd = image.require("initrd", "initrd")?;
    let initrd = run_ramdisk.map(Path::to_path_buf).unwrap_or(initrd);
    let for_run = KernelCmdline::for_run(Some(addr.into()), instance, opts);
    // With a per-run ramdisk, `-e` and `-- ARGS` travel in it, not on the command line (which
    // every dom0 user can read in `xl list -l`).
    let overrides = if run_ramdisk.is_some() {
        Default::default()
    } else {
        for_run.overrides.clone()
    };
    let name = domain_name(instance);
    let mut lines = vec![
        format!(
            "# {name}: the {} microVM as a Xen PVH guest, written by bakeoff",
            image.name
        ),
        format!("name = {}", q(&name)),
        "type = \"pvh\"".into(),
        format!("kernel = {}", q(&kernel.display().to_string())),
        format!("ramdisk = {}", q(&initrd.display().to_string())),
        format!(
            "cmdline = {}",
            q(&kernel_cmdline(&KernelCmdline {
                console: Console::Hvc0,
                // bakeoff's minimal kernel (the one with a timer rate) takes the TSC's rate
                // from the command line and then skips its PIT probe: a PVH domain has no PIT,
                // and the stock kernel polls the missing one 100,000 times, each poll a trap
                // to Xen (nested under QEMU, seconds; and now and then a triple fault).
                tsc_khz: host_tsc_khz
                    .filter(|_| image.details.kernel_timer_hz.is_some_and(|hz| hz > 0)),
                overrides,
                ..for_run
            }))
        ),
    ];
    common(&mut lines, memory_mib(opts), vcpus(opts), addr, bridge);
    Ok(XlDomain {
        name,
        config: lines.join("\n") + "\n",
        rumprun_cfg: None,
    })
}

/// The Rumprun image (`xen_pv`) as a PV domain, and the configuration for xenstore.
pub fn render_rumprun_pv(
    image: &Image,
    opts: &RunOptions,
    instance: &str,
    addr: &GuestAddress,
    bridge: &str,
) -> Result<XlDomain, LaunchError> {
    if image.target != Target::Rumprun {
        return Err(LaunchError::WrongImage(format!(
            "a Rumprun Xen PV domain boots the rumprun image, not a {} image",
            image.target
        )));
    }
    let kernel = image.require(
        "xen_kernel",
        "xen_kernel: its Rumprun toolchain has no Xen platform (build one with `./build-rr.sh xen`)",
    )?;
    let name = domain_name(instance);
    let net = RumprunNet {
        interface: "xenif0".into(),
        cloner: true,
        addr: addr.ip,
        prefix: addr.prefix,
        gateway: Some(addr.gateway),
    };
    let cfg = RumprunConfig::for_run(image, opts, instance, Some(net)).render()?;
    let mut lines = vec![
        format!(
            "# {name}: the {} Rumprun unikernel as a Xen PV guest, written by bakeoff",
            image.name
        ),
        format!("name = {}", q(&name)),
        "type = \"pv\"".into(),
        format!("kernel = {}", q(&kernel.display().to_string())),
    ];
    // Rumprun schedules its threads on one CPU.
    common(&mut lines, memory_mib(opts), 1, addr, bridge);
    Ok(XlDomain {
        name,
        config: lines.join("\n") + "\n",
        rumprun_cfg: Some(cfg),
    })
}

/// The domain for an image: PVH for the microVM, PV for Rumprun.
pub fn render_domain(
    image: &Image,
    opts: &RunOptions,
    instance: &str,
    addr: &GuestAddress,
    bridge: &str,
) -> Result<XlDomain, LaunchError> {
    match image.target {
        Target::MicroVm => render_pvh(image, opts, instance, addr, bridge),
        Target::Rumprun => render_rumprun_pv(image, opts, instance, addr, bridge),
        Target::Oci => Err(LaunchError::WrongImage(
            "Xen cannot boot an OCI image; build the microvm or rumprun target".into(),
        )),
    }
}

/// The domain for a run: like [`render_domain`], but a PVH guest boots `run_ramdisk` (the
/// image's initramfs with [`run_archive`] appended) and its command line carries no `-e` value
/// or argument. `host_tsc_khz` is the Xen host's TSC rate (`xl info`), which a PVH guest's TSC
/// keeps under Xen's default `tsc_mode`.
pub fn render_domain_for_run(
    image: &Image,
    opts: &RunOptions,
    instance: &str,
    addr: &GuestAddress,
    bridge: &str,
    run_ramdisk: &Path,
    host_tsc_khz: Option<u32>,
) -> Result<XlDomain, LaunchError> {
    match image.target {
        Target::MicroVm => render_pvh_with(
            image,
            opts,
            instance,
            addr,
            bridge,
            Some(run_ramdisk),
            host_tsc_khz,
        ),
        _ => render_domain(image, opts, instance, addr, bridge),
    }
}

/// `/sbin/poweroff` for a PVH guest: what Linux runs when `xl shutdown` asks the domain to power
/// off (xenstore `control/shutdown`; a PVH guest has no ACPI power button). It sends SIGTERM to
/// PID 1, bakeoff's init, which passes it to the app and powers the domain off once the app has
/// ended. A 158-byte static x86_64 ELF: `kill(1, SIGTERM); exit(0)`.
pub fn poweroff_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    #[rustfmt::skip]
    let code: [u8; 30] = [
        0xb8, 62, 0, 0, 0, // mov eax, SYS_kill
        0xbf, 1, 0, 0, 0, // mov edi, 1
        0xbe, 15, 0, 0, 0, // mov esi, SIGTERM
        0x0f, 0x05, // syscall
        0xb8, 60, 0, 0, 0, // mov eax, SYS_exit
        0x31, 0xff, // xor edi, edi
        0x0f, 0x05, // syscall
        0xf4, 0xf4, 0xf4, 0xf4, // hlt (never reached)
    ];
    let total = (64 + 56 + code.len()) as u64;
    let mut e = Vec::with_capacity(total as usize);
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(BASE + 64 + 56).to_le_bytes()); // e_entry
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // ehsize phentsize phnum shentsize shnum shstrndx
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0, BASE, BASE, total, total, 0x1000u64] {
        e.extend_from_slice(&v.to_le_bytes()); // offset vaddr paddr filesz memsz align
    }
    e.extend_from_slice(&code);
    e
}

/// The per-run ramdisk of a PVH guest: the image's initramfs `base`, then an archive with the
/// run's `-e` values and arguments (0400, read and removed by PID 1) and `/sbin/poweroff`.
pub fn run_archive(base: &[u8], opts: &RunOptions) -> Vec<u8> {
    let poweroff = poweroff_elf();
    crate::runfile::run_initrd_with(
        base,
        &crate::run_overrides(opts),
        &[
            ("sbin", 0o40755, b""),
            ("sbin/poweroff", 0o100755, &poweroff),
        ],
    )
}

/// What `bakeoff export --format xl` prints: the xl.cfg of the first guest slot on
/// `xenbr0`, and for Rumprun the commands that hand it its configuration.
pub fn render_xl(image: &Image, opts: &RunOptions, instance: &str) -> Result<String, LaunchError> {
    let d = render_domain(image, opts, instance, &address(0), DEFAULT_BRIDGE)?;
    let mut text = d.config;
    if let Some(cfg) = &d.rumprun_cfg {
        text.push_str(&format!(
            "# Rumprun reads its configuration from xenstore, not from this file. Start it with:\n\
             #   xl create -p {name}.cfg\n\
             #   xenstore-write /local/domain/$(xl domid {name})/{RUMPRUN_CFG_KEY} '{cfg}'\n\
             #   xl unpause {name}\n",
            name = d.name
        ));
    }
    text.push_str(&format!(
        "# Network: the bridge {DEFAULT_BRIDGE} must carry {GATEWAY}/{}; the guest is {}.\n",
        SUBNET.1,
        address(0).ip
    ));
    Ok(text)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    pub(crate) fn microvm_image() -> Image {
        Image {
            target: Target::MicroVm,
            name: "hello".into(),
            artifact_id: "0".repeat(64),
            digest: "sha256:1".into(),
            dir: PathBuf::from("/cache/images/microvm/abc"),
            files: [
                ("initrd".to_string(), PathBuf::from("initramfs.cpio.lz4")),
                (
                    "kernel".to_string(),
                    PathBuf::from("/cache/kernels/6.1.0-27-amd64/vmlinuz"),
                ),
                (
                    "vmlinux".to_string(),
                    PathBuf::from("/cache/kernels/6.1.0-27-amd64/vmlinux"),
                ),
            ]
            .into_iter()
            .collect(),
            size_bytes: 1,
            compressed_bytes: 1,
            reference: None,
            details: Default::default(),
        }
    }

    pub(crate) fn rumprun_image(xen: bool) -> Image {
        let mut files: std::collections::BTreeMap<String, PathBuf> =
            [("kernel".to_string(), PathBuf::from("hello-hw_virtio.bin"))]
                .into_iter()
                .collect();
        if xen {
            files.insert("xen_kernel".into(), PathBuf::from("hello-xen_pv.bin"));
        }
        Image {
            target: Target::Rumprun,
            name: "hello".into(),
            artifact_id: "0".repeat(64),
            digest: "sha256:2".into(),
            dir: PathBuf::from("/cache/images/rumprun/def"),
            files,
            size_bytes: 1,
            compressed_bytes: 1,
            reference: None,
            details: crate::ImageDetails {
                argv0: Some("hello".into()),
                args: Some(vec![]),
                env: Some(vec![]),
                ..Default::default()
            },
        }
    }

    fn opts() -> RunOptions {
        RunOptions {
            publish: vec![bakeoff_spec::parse_publish("8080:8080").unwrap()],
            env: vec![("GREETING".into(), "x".into())],
            memory: Some(64 << 20),
            args: vec!["--verbose".into()],
            ..Default::default()
        }
    }

    #[test]
    fn pvh_config_for_the_example() {
        insta::assert_snapshot!("pvh", render_xl(&microvm_image(), &opts(), "web").unwrap());
    }

    #[test]
    fn rumprun_pv_config_for_the_example() {
        insta::assert_snapshot!(
            "rumprun_pv",
            render_xl(&rumprun_image(true), &opts(), "web").unwrap()
        );
        let d = render_domain(&rumprun_image(true), &opts(), "web", &address(3), "br1").unwrap();
        let cfg = d.rumprun_cfg.unwrap();
        assert!(cfg.starts_with(r#"{"net":{"if":"xenif0","cloner":"true","type":"inet","method":"static","addr":"10.0.3.13","mask":"24","gw":"10.0.3.1"}"#), "{cfg}");
        assert!(
            d.config
                .contains("vif = [ \"bridge=br1,mac=06:00:0a:00:03:0d\" ]"),
            "{}",
            d.config
        );
    }

    #[test]
    fn images_xen_cannot_boot_are_refused() {
        let e = render_xl(&rumprun_image(false), &opts(), "web")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the rumprun image in /cache/images/rumprun/def has no xen_kernel: its Rumprun toolchain has no Xen platform (build one with `./build-rr.sh xen`)"
        );
        let mut oci = microvm_image();
        oci.target = Target::Oci;
        assert!(render_xl(&oci, &opts(), "web")
            .unwrap_err()
            .to_string()
            .starts_with("Xen cannot boot an OCI image"));
    }

    /// `/sbin/poweroff` sends SIGTERM to PID 1 and exits 0: run here as a child of a shell that
    /// is PID 1 of a new PID namespace and traps SIGTERM.
    #[test]
    fn poweroff_signals_pid_1() {
        let elf = poweroff_elf();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf.len(), 64 + 56 + 30);
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("poweroff");
        std::fs::write(&bin, &elf).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = format!(
            "got=no; trap 'got=yes' TERM; {}; echo poweroff exited $?; echo pid1 got TERM: $got",
            bin.display()
        );
        let out = std::process::Command::new("unshare")
            .args(["--fork", "--pid", "sh", "-c", &script])
            .output()
            .expect("unshare runs (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("poweroff exited 0")
                && text.contains("pid1 got TERM")
                && !text.contains("no signal"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The config of run `web` of `image` with a per-run ramdisk, on a host whose TSC runs at
    /// 2,596,122 kHz.
    fn run_config(image: &Image) -> String {
        render_domain_for_run(
            image,
            &opts(),
            "web",
            &address(0),
            "xenbr0",
            Path::new("/state/web/initrd-run.img"),
            Some(2_596_122),
        )
        .unwrap()
        .config
    }

    /// The per-run ramdisk: the base, then the run file, `sbin/` and the poweroff program; no
    /// `-e` value on the command line of a run's config.
    #[test]
    fn run_values_travel_in_the_ramdisk_not_the_config() {
        let bytes = run_archive(b"BASE", &opts());
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("bakeoff-run.json")
                && text.contains("GREETING")
                && text.contains("sbin/poweroff")
        );
        let config = run_config(&microvm_image());
        assert!(
            config.contains("ramdisk = \"/state/web/initrd-run.img\""),
            "{config}"
        );
        assert!(!config.contains("bakeoff.run"), "{config}");
        // export (no companion ramdisk) keeps them on the command line
        assert!(render_xl(&microvm_image(), &opts(), "web")
            .unwrap()
            .contains("bakeoff.run="));
    }

    /// bakeoff's minimal kernel gets the host's TSC rate (and so skips its PIT probe); Debian's
    /// kernel, which would probe anyway, and an exported file, which runs on another host, do not.
    #[test]
    fn only_the_minimal_kernel_gets_the_hosts_tsc_rate() {
        let debian = microvm_image();
        let mut minimal = microvm_image();
        minimal.details.kernel_timer_hz = Some(100);
        assert!(
            run_config(&minimal).contains(" tsc_early_khz=2596122 "),
            "{}",
            run_config(&minimal)
        );
        assert!(
            !run_config(&debian).contains("tsc_early_khz"),
            "{}",
            run_config(&debian)
        );
        let exported = render_xl(&minimal, &opts(), "web").unwrap();
        assert!(!exported.contains("tsc_early_khz"), "{exported}");
    }

    #[test]
    fn strings_are_quoted_for_xl() {
        assert_eq!(q(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
    }
}
