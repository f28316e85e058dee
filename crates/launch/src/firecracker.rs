//! Firecracker: the Linux microVM image as a VM configuration (the JSON `firecracker
//! --config-file` takes, whose sections are also the bodies of the API calls the driver makes),
//! and the host network it needs: a tap per VM on its own /30, plus DNAT for each `-p`.
//!
//! Firecracker boots Linux kernels only (an uncompressed vmlinux); the Rumprun image is
//! refused with that reason.

use std::net::Ipv4Addr;
use std::path::Path;

use bakeoff_spec::{PortMapping, RunOptions, Target};
use serde_json::{json, Value};

use crate::cmdline::{kernel_cmdline, KernelCmdline};
use crate::net::{mac_for, publish_plan, GuestAddress, NetPlan};
use crate::{memory_mib, vcpus, Image, LaunchError};

/// Each VM gets 172.30.0.0/16 carved in /30s: the tap's (host) address is .1 of its /30, the
/// guest .2.
pub const NET_BASE: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 0);
pub const MAX_SLOTS: u16 = 16384;

/// A VM's tap device and addresses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TapNet {
    /// The host's tap device (`bkfc<slot>`).
    pub tap: String,
    /// The host side of the /30.
    pub host_ip: Ipv4Addr,
    /// The guest's address; its gateway is `host_ip`.
    pub guest: GuestAddress,
}

/// The tap network of the VM in `slot` (0-based, below [`MAX_SLOTS`]).
pub fn tap_net(slot: u16) -> TapNet {
    let base = u32::from(NET_BASE) + u32::from(slot.min(MAX_SLOTS - 1)) * 4;
    let host_ip = Ipv4Addr::from(base + 1);
    let ip = Ipv4Addr::from(base + 2);
    TapNet {
        tap: format!("bkfc{slot}"),
        host_ip,
        guest: GuestAddress {
            ip,
            prefix: 30,
            gateway: host_ip,
            mac: mac_for(ip),
        },
    }
}

/// The kernel command line: our usual one on ttyS0 with the tap address, plus `pci=off`
/// (Firecracker's devices are virtio-mmio) and `reboot=k` so a guest reboot ends Firecracker
/// (it has no reset) and SendCtrlAltDel reaches init.
pub fn boot_args(net: &TapNet, instance: &str, opts: &RunOptions) -> String {
    kernel_cmdline(&KernelCmdline {
        microvm: true,
        extra: vec!["pci=off".into(), "reboot=k".into()],
        ..KernelCmdline::for_run(Some((&net.guest).into()), instance, opts)
    })
}

/// The run's `-e` values and `-- ARGS` as PID 1 reads them; empty when the run sets none.
pub fn run_overrides(instance: &str, opts: &RunOptions) -> bakeoff_init::RunOverrides {
    KernelCmdline::for_run(None, instance, opts).overrides
}

/// The VM configuration of a run bakeoff starts itself: like [`render_firecracker`], but the
/// run's `-e` values and `-- ARGS` are not on the kernel command line (which the guest's
/// `/proc/cmdline` and Firecracker's API log show): they travel in `run_initrd`, the image's
/// initramfs with the run file appended ([`crate::runfile::run_initrd`], 0600 in the instance
/// dir), given when the run has any.
pub fn render_firecracker_run(
    image: &Image,
    opts: &RunOptions,
    instance: &str,
    net: &TapNet,
    log_path: &Path,
    run_initrd: Option<&Path>,
) -> Result<Value, LaunchError> {
    let mut config = render_firecracker(image, opts, instance, net, log_path)?;
    if let Some(initrd) = run_initrd {
        let quiet = RunOptions {
            env: Vec::new(),
            args: Vec::new(),
            ..opts.clone()
        };
        config["boot-source"]["boot_args"] = json!(boot_args(net, instance, &quiet));
        config["boot-source"]["initrd_path"] = json!(initrd);
    }
    Ok(config)
}

/// The VM configuration: boot-source (vmlinux, initrd, boot_args), machine-config,
/// network-interfaces (eth0 on the tap) and logger.
pub fn render_firecracker(
    image: &Image,
    opts: &RunOptions,
    instance: &str,
    net: &TapNet,
    log_path: &Path,
) -> Result<Value, LaunchError> {
    match image.target {
        Target::MicroVm => {}
        Target::Rumprun => {
            return Err(LaunchError::WrongImage(
                "Firecracker boots only Linux kernels, not a Rumprun unikernel; run it --on rumprun (QEMU) or --on xen".into(),
            ))
        }
        Target::Oci => {
            return Err(LaunchError::WrongImage(
                "Firecracker cannot boot an OCI image; build the microvm target".into(),
            ))
        }
    }
    let kernel = image.require(
        "vmlinux",
        "vmlinux (Firecracker needs the uncompressed kernel)",
    )?;
    let initrd = image.require("initrd", "initrd")?;
    Ok(json!({
        "boot-source": {
            "kernel_image_path": kernel,
            "initrd_path": initrd,
            "boot_args": boot_args(net, instance, opts),
        },
        "drives": [],
        "machine-config": {
            "vcpu_count": vcpus(opts),
            "mem_size_mib": memory_mib(opts),
            "smt": false,
        },
        "network-interfaces": [{
            "iface_id": "eth0",
            "host_dev_name": net.tap,
            "guest_mac": net.guest.mac,
        }],
        "logger": {
            "log_path": log_path,
            "level": "Info",
            "show_level": true,
            "show_log_origin": false,
        },
    }))
}

/// What `bakeoff export --format firecracker` prints: the configuration of the first slot,
/// logging to `firecracker-<instance>.log`.
pub fn export_firecracker(
    image: &Image,
    opts: &RunOptions,
    instance: &str,
) -> Result<Value, LaunchError> {
    render_firecracker(
        image,
        opts,
        instance,
        &tap_net(0),
        Path::new(&format!("firecracker-{instance}.log")),
    )
}

/// One call on Firecracker's API socket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiRequest {
    pub method: &'static str,
    pub path: String,
    pub body: Value,
}

/// The API calls that configure and boot a VM from its configuration, in order: the logger
/// first (it must exist before anything else logs), then machine, boot source, NICs, start.
pub fn api_requests(config: &Value) -> Vec<ApiRequest> {
    let put = |path: String, body: &Value| ApiRequest {
        method: "PUT",
        path,
        body: body.clone(),
    };
    let mut calls = Vec::new();
    for (key, path) in [
        ("logger", "/logger"),
        ("machine-config", "/machine-config"),
        ("boot-source", "/boot-source"),
    ] {
        if let Some(body) = config.get(key) {
            calls.push(put(path.to_string(), body));
        }
    }
    for nic in config
        .get("network-interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = nic
            .get("iface_id")
            .and_then(Value::as_str)
            .unwrap_or("eth0");
        calls.push(put(format!("/network-interfaces/{id}"), nic));
    }
    calls.push(put(
        "/actions".into(),
        &json!({"action_type": "InstanceStart"}),
    ));
    calls
}

/// The graceful stop: Ctrl-Alt-Del through the emulated keyboard controller.
pub fn stop_request() -> ApiRequest {
    ApiRequest {
        method: "PUT",
        path: "/actions".into(),
        body: json!({"action_type": "SendCtrlAltDel"}),
    }
}

/// The HTTP/1.1 request for one API call.
pub fn http_request(req: &ApiRequest) -> String {
    let body = req.body.to_string();
    format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        req.method,
        req.path,
        body.len()
    )
}

/// `Ok` for a 2xx answer; otherwise Firecracker's `fault_message` (or the status line).
pub fn check_response(status_line: &str, body: &str) -> Result<(), String> {
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if (200..300).contains(&code) {
        return Ok(());
    }
    let fault = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("fault_message")
                .and_then(|m| m.as_str())
                .map(String::from)
        });
    Err(fault.unwrap_or_else(|| status_line.trim().to_string()))
}

/// The host side: create the tap, give it the /30's host address, bring it up, then publish
/// `ports` with DNAT; teardown undoes the rules and deletes the tap.
pub fn network_plan(net: &TapNet, ports: &[PortMapping], owner: &str) -> NetPlan {
    let s = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<String>>();
    let cidr = format!("{}/{}", net.host_ip, net.guest.prefix);
    let publish = publish_plan(&net.tap, net.host_ip, net.guest.ip, ports, owner);
    let mut setup = vec![
        s(&["ip", "tuntap", "add", "dev", &net.tap, "mode", "tap"]),
        s(&["ip", "addr", "add", &cidr, "dev", &net.tap]),
        s(&["ip", "link", "set", "dev", &net.tap, "up"]),
    ];
    setup.extend(publish.setup);
    let mut teardown = publish.teardown;
    teardown.push(s(&["ip", "link", "del", "dev", &net.tap]));
    NetPlan { setup, teardown }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xl::tests::{microvm_image, rumprun_image};

    fn opts() -> RunOptions {
        RunOptions {
            publish: vec![bakeoff_spec::parse_publish("127.0.0.1:18080:8080").unwrap()],
            env: vec![("GREETING".into(), "x".into())],
            memory: Some(256 << 20),
            cpus: Some(2.0),
            ..Default::default()
        }
    }

    #[test]
    fn vm_config_for_the_example() {
        let config = render_firecracker(
            &microvm_image(),
            &opts(),
            "web",
            &tap_net(0),
            Path::new("/state/instances/web/firecracker.log"),
        )
        .unwrap();
        insta::assert_json_snapshot!("vm_config", config);
    }

    /// A run's secrets stay off `boot_args`: they are in the per-run initramfs instead, and
    /// the rest of the configuration is the same.
    #[test]
    fn a_runs_env_and_args_travel_in_the_per_run_initrd() {
        let secret = RunOptions {
            env: vec![("TOKEN".into(), "s3cret".into())],
            args: vec!["--flag".into()],
            ..opts()
        };
        let log = Path::new("/state/instances/web/firecracker.log");
        let per_run = Path::new("/state/instances/web/initrd-run.img");
        let plain = render_firecracker(&microvm_image(), &secret, "web", &tap_net(0), log).unwrap();
        let args = plain["boot-source"]["boot_args"].as_str().unwrap();
        assert!(args.contains("bakeoff.run="), "{args}");
        let run = render_firecracker_run(
            &microvm_image(),
            &secret,
            "web",
            &tap_net(0),
            log,
            Some(per_run),
        )
        .unwrap();
        let args = run["boot-source"]["boot_args"].as_str().unwrap();
        assert!(!args.contains("bakeoff.run"), "{args}");
        assert_eq!(run["boot-source"]["initrd_path"], json!(per_run));
        let overrides = run_overrides("web", &secret);
        assert_eq!(
            overrides.env,
            vec![("TOKEN".to_string(), "s3cret".to_string())]
        );
        assert_eq!(overrides.args, Some(vec!["--flag".to_string()]));
        // Everything else is as before.
        let mut same = run.clone();
        same["boot-source"] = plain["boot-source"].clone();
        assert_eq!(same, plain);
        assert!(run_overrides("web", &RunOptions::default()).is_empty());
    }

    #[test]
    fn api_calls_follow_the_config() {
        let config = render_firecracker(
            &microvm_image(),
            &opts(),
            "web",
            &tap_net(0),
            Path::new("/state/instances/web/firecracker.log"),
        )
        .unwrap();
        let calls: Vec<String> = api_requests(&config)
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect();
        assert_eq!(
            calls,
            [
                "PUT /logger",
                "PUT /machine-config",
                "PUT /boot-source",
                "PUT /network-interfaces/eth0",
                "PUT /actions"
            ]
        );
        assert_eq!(
            api_requests(&config)[1].body,
            json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false})
        );
    }

    #[test]
    fn network_plan_for_the_example() {
        let plan = network_plan(&tap_net(0), &opts().publish, "web");
        let text: Vec<String> = plan
            .setup
            .iter()
            .map(|c| format!("setup:    {}", c.join(" ")))
            .chain(
                plan.teardown
                    .iter()
                    .map(|c| format!("teardown: {}", c.join(" "))),
            )
            .collect();
        insta::assert_snapshot!("network_plan", text.join("\n"));
    }

    #[test]
    fn slots_get_separate_subnets() {
        let (a, b) = (tap_net(0), tap_net(1));
        assert_eq!(
            (a.host_ip, a.guest.ip, a.tap.as_str()),
            (
                Ipv4Addr::new(172, 30, 0, 1),
                Ipv4Addr::new(172, 30, 0, 2),
                "bkfc0"
            )
        );
        assert_eq!(
            (b.host_ip, b.guest.ip, b.tap.as_str()),
            (
                Ipv4Addr::new(172, 30, 0, 5),
                Ipv4Addr::new(172, 30, 0, 6),
                "bkfc1"
            )
        );
        assert_eq!(tap_net(300).guest.ip, Ipv4Addr::new(172, 30, 4, 178));
        let args = boot_args(&b, "web", &RunOptions::default());
        assert!(
            args.contains("bakeoff.ip=172.30.0.6/30 bakeoff.gw=172.30.0.5")
                && args.ends_with(" reboot=k"),
            "{args}"
        );
    }

    #[test]
    fn rumprun_images_are_refused() {
        let e = export_firecracker(&rumprun_image(false), &opts(), "web").unwrap_err();
        assert_eq!(e.to_string(), "Firecracker boots only Linux kernels, not a Rumprun unikernel; run it --on rumprun (QEMU) or --on xen");
    }

    #[test]
    fn api_calls_are_http_on_the_socket() {
        let req = ApiRequest {
            method: "PUT",
            path: "/machine-config".into(),
            body: serde_json::json!({"vcpu_count": 1, "mem_size_mib": 128}),
        };
        insta::assert_snapshot!(http_request(&req).replace("\r\n", "\n"));
        assert_eq!(check_response("HTTP/1.1 204 No Content\r\n", ""), Ok(()));
        assert_eq!(
            check_response(
                "HTTP/1.1 400 Bad Request\r\n",
                r#"{"fault_message":"The kernel file cannot be opened: No such file or directory (os error 2)"}"#
            ),
            Err("The kernel file cannot be opened: No such file or directory (os error 2)".into())
        );
        assert_eq!(
            check_response("HTTP/1.1 500 Internal Server Error\r\n", "oops"),
            Err("HTTP/1.1 500 Internal Server Error".into())
        );
    }
}
