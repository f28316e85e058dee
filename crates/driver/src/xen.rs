//! Xen through `xl`: the microVM as a PVH domain and the Rumprun unikernel (`xen_pv` bake) as a
//! PV domain, configs rendered by `bakeoff_pack::launch::xl`. Each guest has a static address on
//! the bridge (`xenbr0`, or `BAKEOFF_XEN_BRIDGE`), which must carry 10.0.3.1/24; each `-p` is a
//! DNAT rule the driver adds and removes. Rumprun's configuration goes to xenstore between
//! `xl create -p` and `xl unpause`. The console is `xl console` copied into `console.log`.
//!
//! Also here: host helpers the Firecracker driver shares (running commands with a deadline,
//! network plans with rollback, per-platform address slots).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bakeoff_pack::launch::xl::{self, address, render_domain, RUMPRUN_CFG_KEY};
use bakeoff_pack::launch::{publish_plan, NetPlan};
use bakeoff_spec::{Platform, Target};
use bakeoff_state::{Instance, Status};
use serde::{Deserialize, Serialize};

use crate::{Driver, DriverError, LogSink, StartRequest};

/// The bridge guests attach to, unless `BAKEOFF_XEN_BRIDGE` names another.
pub fn bridge() -> String {
    std::env::var("BAKEOFF_XEN_BRIDGE")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| xl::DEFAULT_BRIDGE.to_string())
}

/// A program's path on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Runs a command with a deadline; `Err` holds one line saying what went wrong.
pub fn run_cmd(argv: &[String], deadline: Duration) -> Result<String, String> {
    let shown = argv.join(" ");
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{shown}` could not start ({e})"))?;
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
                // The last line of the error output (or of the output), which says what failed.
                let last = |t: &str| {
                    t.lines()
                        .rfind(|l| !l.trim().is_empty())
                        .map(|l| l.trim().to_string())
                };
                let why = last(&err)
                    .or_else(|| last(&out))
                    .unwrap_or_else(|| "no output".into());
                return Err(format!("`{shown}` failed ({status}): {why}"));
            }
            Ok(None) if start.elapsed() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{shown}` did not finish within {:.1} s",
                    deadline.as_secs_f64()
                ));
            }
        }
    }
}

/// Runs a network plan's setup; on a failure runs the teardown and returns the failure.
pub fn apply_plan(plan: &NetPlan) -> Result<(), String> {
    for cmd in &plan.setup {
        if let Err(e) = run_cmd(cmd, Duration::from_secs(10)) {
            undo_plan(plan);
            return Err(e);
        }
    }
    Ok(())
}

/// Runs a plan's teardown, ignoring steps that fail (they never happened or are already undone).
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
        .ok_or_else(|| DriverError::Engine(format!("{} has no parent", instance_dir.display())))?;
    let slots = instances
        .parent()
        .unwrap_or(instances)
        .join("slots")
        .join(platform.as_str());
    fs_err::create_dir_all(&slots)?;
    for n in 0..max {
        let file = slots.join(n.to_string());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
        {
            Ok(mut f) => {
                use std::io::Write;
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
    Err(DriverError::Engine(format!(
        "all {max} {platform} address slots are taken; remove instances with `bakeoff rm`"
    )))
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

/// What the probe saw on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenFacts {
    pub xl: bool,
    pub proc_xen: bool,
    /// `/proc/xen/capabilities` says `control_d` (this is dom0).
    pub dom0: bool,
    /// `xl info`'s failure, if it failed.
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
        run_cmd(&["xl".into(), "info".into()], Duration::from_secs(10)).map(|_| ())
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

/// What we record for a domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XenHandle {
    pub domain: String,
    pub target: Target,
    pub slot: u16,
    pub config: PathBuf,
    pub console: PathBuf,
    /// The `xl console` copying the console into `console`.
    pub console_pid: Option<u32>,
    pub net: NetPlan,
    pub instance_dir: PathBuf,
}

fn handle(inst: &Instance) -> Result<XenHandle, DriverError> {
    serde_json::from_value(inst.handle.clone()).map_err(|e| {
        DriverError::Engine(format!(
            "the record of `{}` has no usable Xen handle ({e})",
            inst.name
        ))
    })
}

fn xl(args: &[&str]) -> Result<String, String> {
    let argv: Vec<String> = std::iter::once("xl")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    run_cmd(&argv, Duration::from_secs(30))
}

fn domain_exists(domain: &str) -> bool {
    xl(&["domid", domain]).is_ok()
}

/// The exit status the guest printed: our init's line (microVM) or Rumprun's `_exit(N)`.
fn ended(h: &XenHandle) -> Option<Option<i32>> {
    let console = std::fs::read(&h.console)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    match h.target {
        Target::Rumprun => crate::rumprun::ended_from_console(&console),
        _ => crate::qemu::exit_status_from_console(&console).map(Some),
    }
}

/// Removes what the domain holds on the host: the domain, the console copier, the DNAT rules,
/// the address slot. Safe to repeat.
fn clean_up(h: &XenHandle, name: &str) {
    if domain_exists(&h.domain) {
        let _ = xl(&["destroy", &h.domain]);
    }
    if let Some(pid) = h.console_pid {
        if crate::qemu::pid_alive(pid) {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    let done = h.instance_dir.join("net-removed");
    if !done.exists() {
        undo_plan(&h.net);
        let _ = std::fs::write(&done, b"");
    }
    release_slot(&h.instance_dir, Platform::Xen, name, h.slot);
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

    async fn start(&self, req: StartRequest<'_>) -> Result<serde_json::Value, DriverError> {
        self.available().await?;
        let image = req.image;
        crate::check_image(Platform::Xen, image)?;
        if image.target == Target::Rumprun && which("xenstore-write").is_none() {
            return Err(DriverError::Unavailable("Rumprun on Xen needs `xenstore-write` (Debian's xenstore-utils) to pass its configuration".into()));
        }
        let bridge = bridge();
        let slot = claim_slot(
            req.instance_dir,
            Platform::Xen,
            req.name,
            u16::from(xl::MAX_SLOTS),
        )?;
        let addr = address(slot as u8);
        let fail = |e: String| {
            release_slot(req.instance_dir, Platform::Xen, req.name, slot);
            DriverError::Engine(e)
        };
        let domain = render_domain(image, req.opts, req.name, &addr, &bridge)
            .map_err(|e| fail(e.to_string()))?;
        let config = req.instance_dir.join("domain.cfg");
        fs_err::write(&config, &domain.config)?;
        let net = publish_plan(&bridge, xl::GATEWAY, addr.ip, &req.opts.publish, req.name);
        apply_plan(&net).map_err(fail)?;
        let cfg = config.display().to_string();
        let created = match &domain.rumprun_cfg {
            None => xl(&["create", &cfg]).map(|_| ()),
            Some(json) => xl(&["create", "-p", &cfg]).and_then(|_| {
                let domid = xl(&["domid", &domain.name])?.trim().to_string();
                let key = format!("/local/domain/{domid}/{RUMPRUN_CFG_KEY}");
                run_cmd(
                    &["xenstore-write".into(), key, json.clone()],
                    Duration::from_secs(10),
                )?;
                xl(&["unpause", &domain.name]).map(|_| ())
            }),
        };
        if let Err(e) = created {
            let _ = xl(&["destroy", &domain.name]);
            undo_plan(&net);
            return Err(fail(e));
        }
        let console = req.instance_dir.join("console.log");
        let out = fs_err::File::create(&console)?;
        use std::os::unix::process::CommandExt;
        let console_pid = Command::new("xl")
            .args(["console", &domain.name])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?.into_parts().0)
            .stderr(out.into_parts().0)
            .process_group(0)
            .spawn()
            .ok()
            .map(|mut c| {
                let pid = c.id();
                std::thread::spawn(move || {
                    let _ = c.wait();
                });
                pid
            });
        let h = XenHandle {
            domain: domain.name,
            target: image.target,
            slot,
            config,
            console,
            console_pid,
            net,
            instance_dir: req.instance_dir.to_path_buf(),
        };
        Ok(serde_json::to_value(h).expect("handle serializes"))
    }

    async fn status(&self, inst: &Instance) -> Result<Status, DriverError> {
        let h = handle(inst)?;
        if let Some(code) = ended(&h) {
            clean_up(&h, &inst.name);
            return Ok(Status::Exited { code });
        }
        if domain_exists(&h.domain) {
            return Ok(Status::Running);
        }
        clean_up(&h, &inst.name);
        Ok(Status::Exited { code: None })
    }

    async fn logs(
        &self,
        inst: &Instance,
        follow: bool,
        out: LogSink<'_>,
    ) -> Result<(), DriverError> {
        let h = handle(inst)?;
        crate::follow_console(&h.console, follow, out, || {
            domain_exists(&h.domain) && ended(&h).is_none()
        })
        .await
    }

    async fn stop(&self, inst: &Instance, grace: Duration) -> Result<(), DriverError> {
        let h = handle(inst)?;
        if domain_exists(&h.domain) {
            // The guest's orderly shutdown (xenstore control/shutdown), then the hard way.
            let _ = xl(&["shutdown", &h.domain]);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && domain_exists(&h.domain) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        clean_up(&h, &inst.name);
        Ok(())
    }

    async fn remove(&self, inst: &Instance) -> Result<(), DriverError> {
        clean_up(&handle(inst)?, &inst.name);
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_probe_on_this_host_gives_a_reason_or_none() {
        // CI has no Xen: the reason must be a sentence; where Xen exists this passes too.
        match xen_verdict(&super::facts()) {
            Ok(()) => eprintln!("Xen is available here"),
            Err(e) => assert!(e.starts_with("Xen ") && !e.contains('\n'), "{e}"),
        }
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
        assert_eq!(e, "`sh -c echo first >&2; echo the reason >&2; exit 3` failed (exit status: 3): the reason");
        let e = run_cmd(&["/nonexistent/xl".into()], Duration::from_secs(5)).unwrap_err();
        assert!(e.starts_with("`/nonexistent/xl` could not start"), "{e}");
        let e = run_cmd(&["sleep".into(), "5".into()], Duration::from_millis(200)).unwrap_err();
        assert_eq!(e, "`sleep 5` did not finish within 0.2 s");
    }
}
