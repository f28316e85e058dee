//! Xen through `xl`: the microVM as a PVH domain and the Rumprun unikernel (`xen_pv` bake) as a
//! PV domain, configs rendered by `bakeoff_pack::launch::xl`. Each guest has a static address on
//! the bridge (`xenbr0`, or `BAKEOFF_XEN_BRIDGE`), which must carry 10.0.3.1/24; each `-p` is a
//! DNAT rule the driver adds and removes. Rumprun's configuration goes to xenstore between
//! `xl create -p` and `xl unpause`. The console is `xl console` copied into `console.log`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bakeoff_launch::publish_plan;
use bakeoff_launch::xl::{self, address, render_domain, RUMPRUN_CFG_KEY};
use bakeoff_spec::{Platform, Target};
use bakeoff_state::{Handle, Instance, Status, XenHandle};

use crate::vmm::{
    self, apply_plan, claim_slot, release_slot, run_cmd, undo_plan, which, CommandError,
};
use crate::{Driver, DriverError, LogSink, StartRequest};

/// The bridge guests attach to, unless `BAKEOFF_XEN_BRIDGE` names another.
pub fn bridge() -> String {
    std::env::var("BAKEOFF_XEN_BRIDGE")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| xl::DEFAULT_BRIDGE.to_string())
}

/// What the probe saw on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenFacts {
    pub xl: bool,
    pub proc_xen: bool,
    /// `/proc/xen/capabilities` says `control_d` (this is dom0).
    pub dom0: bool,
    /// `xl info`'s failure, if it failed (one line).
    pub xl_info: Result<(), String>,
    pub bridge: String,
    pub bridge_exists: bool,
}

/// Why Xen cannot be used here, as one sentence; `Ok` when it can.
pub fn xen_verdict(f: &XenFacts) -> Result<(), String> {
    if !f.xl {
        return Err("Xen is not available: `xl` is not installed (install Debian's xen-utils and boot the host under the Xen hypervisor)".into());
    }
    if !f.proc_xen {
        return Err("Xen is not available: this host is not running under the Xen hypervisor (/proc/xen does not exist)".into());
    }
    if !f.dom0 {
        return Err("Xen is not available: this is not Xen's control domain (dom0), so it cannot create guests".into());
    }
    if let Err(e) = &f.xl_info {
        return Err(format!(
            "Xen is not available: `xl info` fails ({e}); is xencommons running?"
        ));
    }
    if !f.bridge_exists {
        return Err(format!(
            "Xen guests need the bridge {b}, which does not exist; create it with `ip link add {b} type bridge && ip addr add {}/{} dev {b} && ip link set {b} up` (or set BAKEOFF_XEN_BRIDGE)",
            xl::GATEWAY,
            xl::SUBNET.1,
            b = f.bridge
        ));
    }
    Ok(())
}

fn facts() -> XenFacts {
    let xl = which("xl").is_some();
    let proc_xen = Path::new("/proc/xen").exists();
    let dom0 = std::fs::read_to_string("/proc/xen/capabilities")
        .map(|c| c.contains("control_d"))
        .unwrap_or(false);
    let xl_info = if xl && proc_xen && dom0 {
        run_cmd(&["xl".into(), "info".into()], Duration::from_secs(10))
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    let bridge = bridge();
    let bridge_exists = Path::new("/sys/class/net").join(&bridge).exists();
    XenFacts {
        xl,
        proc_xen,
        dom0,
        xl_info,
        bridge,
        bridge_exists,
    }
}

fn handle(inst: &Instance) -> Result<&XenHandle, DriverError> {
    inst.handle
        .xen()
        .ok_or_else(|| DriverError::wrong_handle(inst, Platform::Xen))
}

fn xl(args: &[&str]) -> Result<String, CommandError> {
    let argv: Vec<String> = std::iter::once("xl")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    run_cmd(&argv, Duration::from_secs(60))
}

fn domain_exists(domain: &str) -> bool {
    xl(&["domid", domain]).is_ok()
}

/// Written just before `xl create`: only a domain this instance created is ever destroyed (a
/// start refused because the name is taken must not destroy the other domain).
const CREATED_MARKER: &str = "domain-created";
/// Written just before the DNAT rules are added.
const NET_MARKER: &str = "net-applied";

/// `cpu_mhz                : 2596.122` in `xl info` output, in kHz: the host's TSC rate, which
/// a PVH guest's TSC keeps under Xen's default `tsc_mode` (native, or emulated at the rate of
/// the host it was created on).
pub fn parse_cpu_khz(info: &str) -> Option<u32> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != "cpu_mhz" {
            return None;
        }
        let mhz: f64 = v.trim().parse().ok()?;
        let khz = (mhz * 1000.0).round();
        (khz >= 1.0 && khz < f64::from(u32::MAX)).then_some(khz as u32)
    })
}

/// `free_memory            : 843` in `xl info` output.
pub fn parse_free_memory(info: &str) -> Option<u64> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "free_memory").then(|| v.trim().parse().ok())?
    })
}

/// The console text: what `xl console` copied, or else xenconsoled's own log of the guest
/// (`--log=guest`), when the host keeps one.
fn console_text(h: &XenHandle) -> String {
    let text = vmm::read_console(&h.console);
    if !text.trim().is_empty() {
        return text;
    }
    vmm::read_console(&Path::new(GUEST_LOG_DIR).join(format!("guest-{}.log", h.domain)))
}

/// Where `xl create` logs a domain's life (`xl-NAME.log`: how and why it shut down).
const XL_LOG_DIR: &str = "/var/log/xen";

/// Xen's last report in `dmesg` (`xl dmesg`): from two lines before its last dump header
/// (`----[ Xen-…`, preceded by what made Xen print it: a crashed domain, a warning) to the end,
/// within the last 40 lines; the last 6 lines when there is no dump among them.
fn xen_last_report(dmesg: &str) -> String {
    let lines: Vec<&str> = dmesg
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    let recent = &lines[lines.len().saturating_sub(40)..];
    let start = match recent.iter().rposition(|l| l.contains("----[ Xen-")) {
        Some(header) => header.saturating_sub(2),
        None => recent.len().saturating_sub(6),
    };
    recent[start..].join("\n")
}

fn or_nothing(text: &str) -> &str {
    if text.trim().is_empty() {
        "(nothing)"
    } else {
        text
    }
}

/// Where xenconsoled writes guest consoles with `--log=guest` (Debian's default directory).
const GUEST_LOG_DIR: &str = "/var/log/xen/console";

/// The exit status the guest printed: our init's line (microVM) or Rumprun's `_exit(N)`.
fn ended(h: &XenHandle) -> Option<Option<i32>> {
    let console = console_text(h);
    match h.target {
        Target::Rumprun => vmm::rumprun_ended_from_console(&console),
        _ => vmm::exit_status_from_console(&console).map(Some),
    }
}

/// Removes what the domain holds on the host: the domain (only one this instance created), the
/// console copier, the DNAT rules, the address slot. Safe to repeat.
fn clean_up(h: &XenHandle, name: &str) {
    if h.instance_dir.join(CREATED_MARKER).exists() && domain_exists(&h.domain) {
        let _ = xl(&["destroy", &h.domain]);
    }
    if let Some(pid) = h.console_pid {
        if vmm::pid_alive(pid) {
            vmm::signal(pid, libc::SIGTERM);
        }
    }
    // Only rules this instance added: a start refused earlier must not delete another
    // instance's identical rules.
    let done = h.instance_dir.join("net-removed");
    if h.instance_dir.join(NET_MARKER).exists() && !done.exists() {
        undo_plan(&h.net);
        let _ = std::fs::write(&done, b"");
    }
    release_slot(&h.instance_dir, Platform::Xen, name, h.slot);
}

/// `xl console DOMAIN` copying the guest's console into `console`. Its input is a FIFO it holds
/// open for reading and writing, so it never sees the end of its input (which would end it).
fn spawn_console(domain: &str, console: &Path, dir: &Path) -> Option<u32> {
    use std::os::unix::process::CommandExt;
    let fifo = dir.join("console.in");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return None;
    }
    let input = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .ok()?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(console)
        .ok()?;
    let mut child = Command::new("xl")
        .args(["console", domain])
        .stdin(input)
        .stdout(out.try_clone().ok()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .ok()?;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    // Wait (briefly) until it holds the guest's pty, so the first lines are not missed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let attached = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with("/dev/pts/"))
                })
            })
            .unwrap_or(false);
        if attached || !vmm::pid_alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(pid)
}

/// The handle of `req` in address slot `slot`: everything is known before `xl create`.
fn planned(req: &StartRequest<'_>, slot: u16) -> XenHandle {
    let addr = address(slot as u8);
    XenHandle {
        domain: xl::domain_name(req.name),
        target: req.image.target,
        slot,
        config: req.instance_dir.join("domain.cfg"),
        console: req.instance_dir.join("console.log"),
        console_pid: None,
        net: publish_plan(&bridge(), xl::GATEWAY, addr.ip, &req.opts.publish, req.name),
        instance_dir: req.instance_dir.to_path_buf(),
    }
}

/// What a bench report says about Xen here: its version, the guest type, and, when Xen itself
/// runs in a virtual machine (the machine's DMI names QEMU, KVM, ...), that the figures are
/// nested and say nothing about Xen on hardware.
pub fn bench_notes(xl_info: &str, target: Target, machine: &str) -> Vec<String> {
    let field = |k: &str| {
        xl_info.lines().find_map(|l| {
            let (key, v) = l.split_once(':')?;
            (key.trim() == k).then(|| v.trim().to_string())
        })
    };
    let version = field("xen_version").unwrap_or_else(|| "unknown".into());
    let guest = match target {
        Target::Rumprun => "PV",
        _ => "PVH",
    };
    let mut notes = vec![format!(
        "Xen {version}, the guest as a {guest} domain (xl toolstack; virt_caps: {})",
        field("virt_caps").unwrap_or_else(|| "unknown".into())
    )];
    let m = machine.to_ascii_lowercase();
    if ["qemu", "kvm", "bochs", "virtualbox", "vmware"]
        .iter()
        .any(|v| m.contains(v))
    {
        notes.push(format!(
            "nested under emulation: Xen itself runs in a virtual machine ({}), so these figures say nothing about Xen on hardware",
            machine.trim()
        ));
    }
    notes
}

pub struct XenDriver;

#[async_trait]
impl Driver for XenDriver {
    fn platform(&self) -> Platform {
        Platform::Xen
    }

    async fn available(&self) -> Result<(), DriverError> {
        xen_verdict(&facts()).map_err(DriverError::Unavailable)
    }

    /// The domain name, address slot and DNAT plan, recorded before `xl create`.
    fn intent(&self, req: &StartRequest<'_>) -> Option<Handle> {
        let slot = claim_slot(
            req.instance_dir,
            Platform::Xen,
            req.name,
            u16::from(xl::MAX_SLOTS),
        )
        .ok()?;
        Some(Handle::Xen(planned(req, slot)))
    }

    async fn start(&self, req: StartRequest<'_>) -> Result<Handle, DriverError> {
        self.available().await?;
        let image = req.image;
        crate::check_image(Platform::Xen, image)?;
        if image.target == Target::Rumprun && which("xenstore-write").is_none() {
            return Err(DriverError::Unavailable("Rumprun on Xen needs `xenstore-write` (Debian's xenstore-utils) to pass its configuration".into()));
        }
        let domain_name = xl::domain_name(req.name);
        if domain_exists(&domain_name) {
            return Err(DriverError::Refused(format!(
                "a Xen domain named {domain_name} already exists (`xl list` shows it); choose another --name or remove that domain"
            )));
        }
        // The same floor as on QEMU: below it the kernel cannot unpack the initramfs.
        let floor = image.details.min_memory_mib;
        let memory_mib = req
            .opts
            .memory
            .map(|b| b.div_ceil(1 << 20))
            .unwrap_or(bakeoff_launch::DEFAULT_MEMORY_MIB.max(floor.unwrap_or(0)));
        if let Some(floor) = floor.filter(|f| memory_mib < *f) {
            return Err(DriverError::Refused(format!(
                "--memory {memory_mib}M is too small to boot this microVM: it needs at least {floor} MiB (its kernel takes most of it; `--kernel` can give a smaller one)"
            )));
        }
        let info = xl(&["info"]).unwrap_or_default();
        if let Some(free) = parse_free_memory(&info).filter(|f| memory_mib > *f) {
            return Err(DriverError::Refused(format!(
                "--memory {memory_mib}M is more than Xen's free memory ({free} MiB, `xl info`); give the domain less or stop other domains"
            )));
        }
        let opts = bakeoff_spec::RunOptions {
            memory: Some(memory_mib << 20),
            ..req.opts.clone()
        };
        let slot = claim_slot(
            req.instance_dir,
            Platform::Xen,
            req.name,
            u16::from(xl::MAX_SLOTS),
        )?;
        let mut h = planned(&req, slot);
        let fail = |h: &XenHandle, e: DriverError| {
            clean_up(h, req.name);
            e
        };
        let addr = address(slot as u8);
        let bridge = bridge();
        let dir = req.instance_dir;
        // `-e` values and `-- ARGS` travel in a per-run ramdisk (0600), not on the command line
        // or in the config; it also brings the /sbin/poweroff that `xl shutdown` runs.
        let domain = if image.target == Target::MicroVm {
            let base = fs_err::read(
                image
                    .require("initrd", "initrd")
                    .map_err(|e| fail(&h, e.into()))?,
            )?;
            let ramdisk = dir.join("initrd-run.img");
            bakeoff_state::write_private(&ramdisk, &xl::run_archive(&base, &opts))?;
            xl::render_domain_for_run(
                image,
                &opts,
                req.name,
                &addr,
                &bridge,
                &ramdisk,
                parse_cpu_khz(&info),
            )
        } else {
            render_domain(image, &opts, req.name, &addr, &bridge)
        }
        .map_err(|e| fail(&h, e.into()))?;
        bakeoff_state::write_private(&h.config, domain.config.as_bytes())?;
        fs_err::write(dir.join(NET_MARKER), b"")?;
        apply_plan(&h.net).map_err(|e| fail(&h, e.into()))?;
        let cfg = h.config.display().to_string();
        fs_err::write(dir.join(CREATED_MARKER), b"")?;
        xl(&["create", "-p", &cfg]).map_err(|e| fail(&h, e.into()))?;
        if let Some(json) = &domain.rumprun_cfg {
            let written = xl(&["domid", &domain.name]).and_then(|domid| {
                let key = format!("/local/domain/{}/{RUMPRUN_CFG_KEY}", domid.trim());
                run_cmd(
                    &["xenstore-write".into(), key, json.clone()],
                    Duration::from_secs(10),
                )
            });
            written.map_err(|e| fail(&h, e.into()))?;
        }
        h.console_pid = spawn_console(&domain.name, &h.console, dir);
        xl(&["unpause", &domain.name]).map_err(|e| fail(&h, e.into()))?;
        Ok(Handle::Xen(h))
    }

    async fn status(&self, inst: &Instance) -> Result<Status, DriverError> {
        let h = handle(inst)?;
        if let Some(code) = ended(h) {
            clean_up(h, &inst.name);
            return Ok(Status::Exited { code });
        }
        if domain_exists(&h.domain) {
            return Ok(Status::Running);
        }
        // The domain is gone, but the console copy can lag the guest's last lines (the exit
        // status our init prints just before it powers off): give it a moment to catch up.
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(code) = ended(h) {
                clean_up(h, &inst.name);
                return Ok(Status::Exited { code });
            }
        }
        clean_up(h, &inst.name);
        Ok(Status::Exited { code: None })
    }

    async fn logs(
        &self,
        inst: &Instance,
        follow: bool,
        out: LogSink<'_>,
    ) -> Result<(), DriverError> {
        let h = handle(inst)?;
        let console = if vmm::read_console(&h.console).trim().is_empty() {
            Path::new(GUEST_LOG_DIR).join(format!("guest-{}.log", h.domain))
        } else {
            h.console.clone()
        };
        vmm::follow_console(&console, follow, out, || {
            domain_exists(&h.domain) && ended(h).is_none()
        })
        .await
    }

    async fn stop(&self, inst: &Instance, grace: Duration) -> Result<(), DriverError> {
        let h = handle(inst)?;
        if h.instance_dir.join(CREATED_MARKER).exists() && domain_exists(&h.domain) {
            // The guest's orderly shutdown (xenstore control/shutdown → /sbin/poweroff → SIGTERM
            // to our init → the app), then the hard way.
            let _ = xl(&["shutdown", &h.domain]);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && domain_exists(&h.domain) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        clean_up(h, &inst.name);
        Ok(())
    }

    async fn remove(&self, inst: &Instance) -> Result<(), DriverError> {
        clean_up(handle(inst)?, &inst.name);
        Ok(())
    }

    async fn memory_bytes(&self, inst: &Instance) -> Result<Option<u64>, DriverError> {
        let h = handle(inst)?;
        // `xl list NAME`: Name ID Mem VCPUs State Time(s); Mem is MiB given to the domain.
        let Ok(out) = xl(&["list", &h.domain]) else {
            return Ok(None);
        };
        Ok(out
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|m| m.parse::<u64>().ok())
            .map(|m| m << 20))
    }

    async fn app_started(&self, inst: &Instance) -> bool {
        let Ok(h) = handle(inst) else { return true };
        match h.target {
            Target::MicroVm => console_text(h).contains("bakeoff-init: starting "),
            _ => true,
        }
    }

    async fn bench_notes(&self, image: &bakeoff_launch::Image) -> Vec<String> {
        let info = xl(&["info"]).unwrap_or_default();
        let vendor = std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").unwrap_or_default();
        let product = std::fs::read_to_string("/sys/class/dmi/id/product_name").unwrap_or_default();
        bench_notes(
            &info,
            image.target,
            &format!("{} {}", vendor.trim(), product.trim()),
        )
    }

    async fn diagnose(&self, inst: &Instance) -> Option<String> {
        let h = handle(inst).ok()?;
        let console = console_text(h);
        let oom = [
            "Out of memory",
            "Initramfs unpacking failed",
            "System is deadlocked on memory",
            "Kernel panic - not syncing: VFS",
        ]
        .iter()
        .any(|s| console.contains(s));
        let no_status = vmm::exit_status_from_console(&console).is_none();
        if oom && no_status {
            return Some("the domain did not boot with the memory it was given (the kernel ran out of memory unpacking the initramfs); give it more with --memory".to_string());
        }
        // A domain that vanished without a word (on_crash = "destroy"): what xl and Xen said
        // about its end is the only trace left.
        (no_status && !domain_exists(&h.domain)).then(|| {
            let xl_log = vmm::tail(&Path::new(XL_LOG_DIR).join(format!("xl-{}.log", h.domain)), 6);
            let dmesg = xl(&["dmesg"]).unwrap_or_default();
            let xen_log = xen_last_report(&dmesg);
            format!(
                "the domain ended without an exit status; xl's log of it:\n{}\nXen's last messages:\n{}",
                or_nothing(&xl_log),
                or_nothing(&xen_log)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_domain_is_told_by_the_end_of_the_logs() {
        let dmesg = "(XEN) one\n\n(XEN) two\r\n(XEN) d3v0 Triple fault\n";
        assert_eq!(
            vmm::last_lines(dmesg, 2),
            "(XEN) two\n(XEN) d3v0 Triple fault"
        );
        assert_eq!(vmm::last_lines("", 6), "");
        // A register dump is shown whole, with the lines that say why Xen printed it.
        let mut dmesg = String::from("(XEN) boot\n");
        for i in 0..50 {
            dmesg.push_str(&format!("(XEN) earlier {i}\n"));
        }
        dmesg.push_str("(XEN) d4v0 Unhandled page fault\n(XEN) Xen WARN at x.c:1\n(XEN) ----[ Xen-4.17.7  x86_64  debug=n ]----\n");
        for r in ["rax", "rbx", "cr0", "cr3", "ds", "fsb", "gsb", "r9"] {
            dmesg.push_str(&format!("(XEN) {r}: 0\n"));
        }
        let report = xen_last_report(&dmesg);
        assert!(
            report.starts_with("(XEN) d4v0 Unhandled page fault\n(XEN) Xen WARN"),
            "{report}"
        );
        assert!(report.ends_with("(XEN) r9: 0"), "{report}");
        assert_eq!(report.lines().count(), 11);
        let without_dump = &dmesg[..dmesg.find("(XEN) d4v0").unwrap()];
        assert_eq!(
            xen_last_report(without_dump),
            vmm::last_lines(without_dump, 6)
        );
        assert_eq!(xen_last_report(""), "");
        assert_eq!(or_nothing(""), "(nothing)");
        assert_eq!(or_nothing("x"), "x");
    }

    fn facts() -> XenFacts {
        XenFacts {
            xl: true,
            proc_xen: true,
            dom0: true,
            xl_info: Ok(()),
            bridge: "xenbr0".into(),
            bridge_exists: true,
        }
    }

    #[test]
    fn bench_notes_say_version_guest_type_and_nesting() {
        let info = "host                   : xenhost\nvirt_caps              : pv hvm hap\nxen_version            : 4.17.7\nfree_memory            : 843\n";
        let n = bench_notes(
            info,
            Target::MicroVm,
            "QEMU Standard PC (i440FX + PIIX, 1996)",
        );
        assert_eq!(
            n[0],
            "Xen 4.17.7, the guest as a PVH domain (xl toolstack; virt_caps: pv hvm hap)"
        );
        assert!(
            n[1].starts_with(
                "nested under emulation: Xen itself runs in a virtual machine (QEMU Standard PC"
            ),
            "{n:?}"
        );
        let n = bench_notes(info, Target::Rumprun, "Dell Inc. PowerEdge R640");
        assert_eq!(n.len(), 1);
        assert!(n[0].contains("as a PV domain"));
        assert_eq!(parse_free_memory(info), Some(843));
        assert_eq!(parse_free_memory("nothing"), None);
        assert_eq!(
            parse_cpu_khz("cpu_mhz                : 2596.122\n"),
            Some(2_596_122)
        );
        for bad in [
            "cpu_mhz : fast",
            "cpu_mhz : -3",
            "cpu_mhz : 1e30",
            "nothing",
            "",
        ] {
            assert_eq!(parse_cpu_khz(bad), None, "{bad}");
        }
    }

    #[test]
    fn probe_says_why_xen_is_unavailable() {
        assert_eq!(xen_verdict(&facts()), Ok(()));
        let cases: Vec<(XenFacts, &str)> = vec![
            (XenFacts { xl: false, ..facts() }, "`xl` is not installed"),
            (XenFacts { proc_xen: false, ..facts() }, "not running under the Xen hypervisor (/proc/xen does not exist)"),
            (XenFacts { dom0: false, ..facts() }, "not Xen's control domain (dom0)"),
            (XenFacts { xl_info: Err("`xl info` failed (exit status: 1): libxl: error".into()), ..facts() }, "`xl info` fails"),
            (XenFacts { bridge_exists: false, ..facts() }, "the bridge xenbr0, which does not exist; create it with `ip link add xenbr0 type bridge && ip addr add 10.0.3.1/24"),
        ];
        for (f, words) in cases {
            let e = xen_verdict(&f).unwrap_err();
            assert!(e.contains(words), "{e}");
        }
    }

    /// The probe's facts agree with what this host shows independently, and its verdict is
    /// the sentence for the first missing one (this CI host has no Xen: it must say why).
    #[test]
    fn the_probe_on_this_host_gives_the_right_reason() {
        let f = super::facts();
        let on_path = |p: &str| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|d| d.join(p).is_file())
        };
        assert_eq!(f.xl, on_path("xl"), "xl on PATH");
        assert_eq!(f.proc_xen, Path::new("/proc/xen").exists(), "/proc/xen");
        let caps = std::fs::read_to_string("/proc/xen/capabilities").unwrap_or_default();
        assert_eq!(f.dom0, caps.contains("control_d"), "dom0");
        assert_eq!(
            f.bridge_exists,
            Path::new("/sys/class/net").join(&f.bridge).exists(),
            "bridge"
        );
        let verdict = xen_verdict(&f);
        if !f.xl {
            assert!(verdict.unwrap_err().contains("`xl` is not installed"));
        } else if !f.proc_xen {
            assert!(verdict.unwrap_err().contains("/proc/xen does not exist"));
        } else if !f.dom0 {
            assert!(verdict.unwrap_err().contains("(dom0)"));
        } else {
            // A real dom0: the verdict is Ok, or names `xl info` or the bridge.
            if let Err(e) = verdict {
                assert!(e.contains("xl info") || e.contains(&f.bridge), "{e}");
            }
        }
    }
}
