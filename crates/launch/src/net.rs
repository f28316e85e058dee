//! The host network of guests on a tap or bridge (Xen, Firecracker): the DNAT plan that gives
//! them the same `-p` contract as QEMU's user networking, and their static addresses.

use std::net::Ipv4Addr;

use bakeoff_spec::{PortMapping, Protocol};

/// Host commands, each an argv (program first), to run in order.
pub type Commands = Vec<Vec<String>>;

/// What a driver runs on the host to give a VM its network and published ports, and what
/// undoes it. Teardown commands may fail harmlessly when a step never happened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetPlan {
    pub setup: Commands,
    pub teardown: Commands,
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// DNAT rules that publish `ports` (each `-p [IP:]HOST:GUEST`) to `guest_ip`, reached through
/// the host interface `iface` whose address is `iface_ip`. Every rule carries the comment
/// `bakeoff:<owner>` so it can be found and removed.
///
/// - the host's own connections are DNATed in `OUTPUT`; to a loopback host IP (the default,
///   127.0.0.1, and 0.0.0.0 which includes it) they leave through `iface` with a loopback
///   source, so `route_localnet` must be on for `iface` and that source is SNATed to `iface_ip`
///   in `POSTROUTING`;
/// - a host IP other than loopback (or 0.0.0.0) is also DNATed in `PREROUTING` for connections
///   from elsewhere, allowed through `FORWARD`.
pub fn publish_plan(
    iface: &str,
    iface_ip: Ipv4Addr,
    guest_ip: Ipv4Addr,
    ports: &[PortMapping],
    owner: &str,
) -> NetPlan {
    let comment = format!("bakeoff:{owner}");
    let mut rules: Vec<Vec<String>> = Vec::new(); // iptables arguments after -A/-D
    let mut loopback = false;
    let mut forward = false;
    for p in ports {
        let proto = if p.protocol == Protocol::Udp {
            "udp"
        } else {
            "tcp"
        };
        let to = format!("{guest_ip}:{}", p.guest_port);
        let dport = p.host_port.to_string();
        let dst: Vec<String> = if p.host_ip.is_unspecified() {
            argv(&["-m", "addrtype", "--dst-type", "LOCAL"])
        } else {
            argv(&["-d", &format!("{}/32", p.host_ip)])
        };
        let rule = |chain: &str| {
            let mut r = argv(&["-t", "nat", chain]);
            r.extend(dst.clone());
            r.extend(argv(&[
                "-p",
                proto,
                "--dport",
                &dport,
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ]));
            r
        };
        rules.push(rule("OUTPUT"));
        // The host's own connections to 127.0.0.1 (0.0.0.0 includes it) leave with a loopback source.
        loopback |= p.host_ip.is_loopback() || p.host_ip.is_unspecified();
        if !p.host_ip.is_loopback() {
            rules.push(rule("PREROUTING"));
            forward = true;
            let mut f = argv(&[
                "-t",
                "filter",
                "FORWARD",
                "-o",
                iface,
                "-d",
                &guest_ip.to_string(),
                "-p",
                proto,
                "--dport",
            ]);
            f.extend(argv(&[
                &p.guest_port.to_string(),
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                "ACCEPT",
            ]));
            rules.push(f);
        }
    }
    if loopback {
        rules.push(argv(&[
            "-t",
            "nat",
            "POSTROUTING",
            "-o",
            iface,
            "-s",
            "127.0.0.0/8",
            "-d",
            &guest_ip.to_string(),
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "SNAT",
            "--to-source",
            &iface_ip.to_string(),
        ]));
    }
    if forward {
        rules.push(argv(&[
            "-t",
            "filter",
            "FORWARD",
            "-i",
            iface,
            "-s",
            &guest_ip.to_string(),
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "ACCEPT",
        ]));
    }
    let with = |op: &str, r: &[String]| {
        // iptables -t TABLE -A|-D CHAIN rest...
        let mut c = argv(&["iptables", "-w"]);
        c.extend(r[..2].iter().cloned());
        c.push(op.to_string());
        c.extend(r[2..].iter().cloned());
        c
    };
    let mut setup = Vec::new();
    if loopback {
        setup.push(argv(&[
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv4.conf.{iface}.route_localnet=1"),
        ]));
    }
    if forward {
        setup.push(argv(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]));
    }
    setup.extend(rules.iter().map(|r| with("-A", r)));
    let teardown = rules.iter().rev().map(|r| with("-D", r)).collect();
    NetPlan { setup, teardown }
}

/// A guest's static address on a host interface the driver owns or uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestAddress {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
}

/// A locally administered MAC derived from the guest IP (`06:00:` + the four IP bytes), as
/// Firecracker's examples do, so addresses never clash between bakeoff's guests.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<PortMapping> {
        vec![
            bakeoff_spec::parse_publish("8080:80").unwrap(),
            bakeoff_spec::parse_publish("0.0.0.0:5353:53/udp").unwrap(),
        ]
    }

    #[test]
    fn publish_plan_snapshot() {
        let plan = publish_plan(
            "bkfc0",
            Ipv4Addr::new(172, 30, 0, 1),
            Ipv4Addr::new(172, 30, 0, 2),
            &ports(),
            "web",
        );
        let text: Vec<String> = plan
            .setup
            .iter()
            .chain(&plan.teardown)
            .map(|c| c.join(" "))
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn teardown_deletes_exactly_what_setup_added() {
        let plan = publish_plan(
            "xenbr0",
            Ipv4Addr::new(10, 0, 3, 1),
            Ipv4Addr::new(10, 0, 3, 10),
            &ports(),
            "web",
        );
        let added: Vec<String> = plan
            .setup
            .iter()
            .filter(|c| c[0] == "iptables")
            .map(|c| c.join(" ").replace(" -A ", " "))
            .collect();
        let mut deleted: Vec<String> = plan
            .teardown
            .iter()
            .map(|c| c.join(" ").replace(" -D ", " "))
            .collect();
        deleted.reverse();
        assert_eq!(added, deleted);
        assert!(plan
            .teardown
            .iter()
            .all(|c| c.contains(&"bakeoff:web".to_string())));
        // No ports, nothing to do.
        assert_eq!(
            publish_plan(
                "xenbr0",
                Ipv4Addr::new(10, 0, 3, 1),
                Ipv4Addr::new(10, 0, 3, 10),
                &[],
                "web"
            ),
            NetPlan {
                setup: vec![],
                teardown: vec![]
            }
        );
    }
}
