//! Xen through `xl`: the microVM as a PVH domain and the Rumprun unikernel (`xen_pv` bake) as a
//! PV domain, configs rendered by `bakeoff_pack::launch::xl`. Each guest has a static address on
//! the bridge (`xenbr0`, or `BAKEOFF_XEN_BRIDGE`), which must carry 10.0.3.1/24; each `-p` is a
//! DNAT rule the driver adds and removes. Rumprun's configuration goes to xenstore between
//! `xl create -p` and `xl unpause`. The console is `xl console` copied into `console.log`.

use std::path::Path;
use std::process::{Command, Stdio};
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
    run_cmd(&argv, Duration::from_secs(30))
}

fn domain_exists(domain: &str) -> bool {
    xl(&["domid", domain]).is_ok()
}

/// The exit status the guest printed: our init's line (microVM) or Rumprun's `_exit(N)`.
fn ended(h: &XenHandle) -> Option<Option<i32>> {
    let console = vmm::read_console(&h.console);
    match h.target {
        Target::Rumprun => vmm::rumprun_ended_from_console(&console),
        _ => vmm::exit_status_from_console(&console).map(Some),
    }
}

/// Removes what the domain holds on the host: the domain, the console copier, the DNAT rules,
/// the address slot. Safe to repeat.
fn clean_up(h: &XenHandle, name: &str) {
    if domain_exists(&h.domain) {
        let _ = xl(&["destroy", &h.domain]);
    }
    if let Some(pid) = h.console_pid {
        if vmm::pid_alive(pid) {
            vmm::signal(pid, libc::SIGTERM);
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

    async fn start(&self, req: StartRequest<'_>) -> Result<Handle, DriverError> {
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
        let fail = |e: DriverError| {
            release_slot(req.instance_dir, Platform::Xen, req.name, slot);
            e
        };
        let domain =
            render_domain(image, req.opts, req.name, &addr, &bridge).map_err(|e| fail(e.into()))?;
        let config = req.instance_dir.join("domain.cfg");
        fs_err::write(&config, &domain.config)?;
        let net = publish_plan(&bridge, xl::GATEWAY, addr.ip, &req.opts.publish, req.name);
        apply_plan(&net).map_err(|e| fail(e.into()))?;
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
            return Err(fail(e.into()));
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
        vmm::follow_console(&h.console, follow, out, || {
            domain_exists(&h.domain) && ended(h).is_none()
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
