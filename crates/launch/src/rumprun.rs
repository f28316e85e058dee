//! Rumprun's boot configuration (the JSON it reads at boot: network, env, hostname, argv; see
//! Rumprun's doc/config.md) and the QEMU command line that boots a `hw_virtio` unikernel with it.
//! On Xen the same JSON goes to xenstore (see [`crate::xl`]).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use bakeoff_spec::{PortMapping, RunOptions};
use serde::{Deserialize, Serialize};

use crate::qemu::Accel;
use crate::{Image, LaunchError};

/// Rumprun copies its configuration into a 4096-byte buffer (BMK_MULTIBOOT_CMDLINE_SIZE on hw;
/// a xenstore value is at most 4096 bytes too).
pub const CONFIG_MAX: usize = 4095;

/// A network interface as Rumprun configures it at boot (static IPv4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RumprunNet {
    /// `vioif0` (virtio on QEMU), `xenif0` (Xen netfront).
    pub interface: String,
    /// Xen's netfront interfaces must be created at boot ("cloner").
    pub cloner: bool,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl RumprunNet {
    /// QEMU user networking: 10.0.2.15/24 behind the gateway 10.0.2.2 on virtio's `vioif0`.
    pub fn qemu_user() -> RumprunNet {
        RumprunNet {
            interface: "vioif0".into(),
            cloner: false,
            addr: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        }
    }
}

/// What Rumprun reads at boot (doc/config.md): network, env, hostname and the program's argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RumprunConfig {
    pub net: Option<RumprunNet>,
    pub env: Vec<(String, String)>,
    pub hostname: Option<String>,
    /// argv[0] first.
    pub argv: Vec<String>,
}

impl RumprunConfig {
    /// The configuration of one run: the image's env with `-e` applied over it, `-- ARGS`
    /// replacing the default args, the instance name as hostname.
    pub fn for_run(
        image: &Image,
        opts: &RunOptions,
        hostname: &str,
        net: Option<RumprunNet>,
    ) -> RumprunConfig {
        let details = &image.details;
        let mut env: Vec<(String, String)> = details.env.clone().unwrap_or_default();
        for (k, v) in &opts.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        let default_args: Vec<String> = details.args.clone().unwrap_or_default();
        let argv0 = details
            .argv0
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| image.name.clone());
        let mut argv = vec![argv0];
        argv.extend(if opts.args.is_empty() {
            default_args
        } else {
            opts.args.clone()
        });
        RumprunConfig {
            net,
            env,
            hostname: Some(hostname.to_string()).filter(|h| !h.is_empty()),
            argv,
        }
    }

    /// The JSON text, as Rumprun's own `rumprun` script writes it: one `"env"` key per variable
    /// (its parser walks keys in order and allows repeats). Rumprun's JSON reader does not
    /// unescape strings and its argv splitter honours only `'…'` and backslashes, so values
    /// that cannot survive both are refused rather than passed altered.
    pub fn render(&self) -> Result<String, LaunchError> {
        let mut parts: Vec<String> = Vec::new();
        if let Some(n) = &self.net {
            let mut net = vec![format!(
                "\"if\":\"{}\"",
                plain(&n.interface, "the interface name")?
            )];
            if n.cloner {
                net.push("\"cloner\":\"true\"".into());
            }
            net.push("\"type\":\"inet\"".into());
            net.push("\"method\":\"static\"".into());
            net.push(format!("\"addr\":\"{}\"", n.addr));
            net.push(format!("\"mask\":\"{}\"", n.prefix));
            if let Some(gw) = n.gateway {
                net.push(format!("\"gw\":\"{gw}\""));
            }
            parts.push(format!("\"net\":{{{}}}", net.join(",")));
        }
        for (k, v) in &self.env {
            let what = format!("the environment variable {k}");
            parts.push(format!(
                "\"env\":\"{}={}\"",
                plain(k, &what)?,
                plain(v, &what)?
            ));
        }
        if let Some(h) = &self.hostname {
            parts.push(format!("\"hostname\":\"{}\"", plain(h, "the hostname")?));
        }
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| quote_arg(a))
            .collect::<Result<_, _>>()?;
        parts.push(format!("\"cmdline\":\"{}\"", argv.join(" ")));
        let text = format!("{{{}}}", parts.join(","));
        if text.len() > CONFIG_MAX {
            return Err(LaunchError::ConfigTooLong { len: text.len() });
        }
        Ok(text)
    }
}

/// A string Rumprun takes verbatim inside JSON quotes: no quote, backslash or control character.
fn plain<'a>(s: &'a str, what: &str) -> Result<&'a str, LaunchError> {
    match s
        .chars()
        .find(|c| matches!(c, '"' | '\\') || c.is_control())
    {
        Some(c) => Err(LaunchError::BadValue {
            what: what.to_string(),
            reason: format!(
                "it contains {}, which Rumprun's configuration reader would pass on altered",
                describe(c)
            ),
        }),
        None => Ok(s),
    }
}

fn describe(c: char) -> String {
    match c {
        '"' => "a double quote".into(),
        '\\' => "a backslash".into(),
        '\'' => "a single quote".into(),
        c => format!("the control character U+{:04X}", c as u32),
    }
}

/// One argv element for Rumprun's splitter (rumprun_parseargs): plain words as they are,
/// others in single quotes; `"` and `\` go as JSON escapes, which the splitter reads back as the
/// characters themselves. A single quote cannot be expressed.
fn quote_arg(arg: &str) -> Result<String, LaunchError> {
    if let Some(c) = arg.chars().find(|c| *c == '\'' || c.is_control()) {
        return Err(LaunchError::BadValue {
            what: format!("the argument `{arg}`"),
            reason: format!(
                "it contains {}, which Rumprun's argument splitter cannot receive",
                describe(c)
            ),
        });
    }
    let escaped: String = arg
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    if !arg.is_empty()
        && !arg
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\\'))
    {
        Ok(escaped)
    } else {
        Ok(format!("'{escaped}'"))
    }
}

/// Everything that decides the QEMU command line of a Rumprun guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RumprunQemuConfig {
    pub accel: Accel,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    /// Rumprun's JSON configuration, passed as the kernel command line.
    pub config: String,
    /// Each `-p` becomes a user-networking hostfwd; `None` means no NIC at all.
    pub forwards: Option<Vec<PortMapping>>,
    pub serial_log: PathBuf,
    pub qmp_socket: Option<PathBuf>,
}

/// The argv (without the program name, `qemu-system-x86_64`).
pub fn rumprun_qemu_argv(c: &RumprunQemuConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(|s| s.to_string()));
    // A multiboot kernel on a standard PC; Rumprun finds the virtio NIC on PCI. SeaBIOS keeps
    // off the serial console (its banner and escape codes would land in `logs`, and printing to
    // an emulated UART costs ~0.1 s under TCG).
    push(&["-M", "q35", "-fw_cfg", "name=etc/sercon-port,string=0"]);
    match c.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
        // As for the microVM: cap the translation cache so the VMM RSS reflects the guest.
        Accel::Tcg => push(&["-accel", "tcg,tb-size=64"]),
    }
    let mem = format!("{}M", c.memory_mib);
    // Rumprun runs on one CPU.
    push(&["-m", &mem, "-smp", "1"]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-vga",
        "none",
        "-no-reboot",
    ]);
    push(&["-serial", &format!("file:{}", c.serial_log.display())]);
    push(&["-kernel", &c.kernel.display().to_string()]);
    push(&["-append", &c.config]);
    if let Some(forwards) = &c.forwards {
        // Restricted like the microVM's (see `qemu_argv`): the forwards come in, the guest
        // reaches neither the host's loopback (10.0.2.2) nor beyond.
        let mut netdev = "user,id=n0,restrict=on".to_string();
        for f in forwards {
            let proto = crate::proto(f.protocol);
            netdev.push_str(&format!(
                ",hostfwd={proto}:{}:{}-:{}",
                f.host_ip, f.host_port, f.guest_port
            ));
        }
        push(&[
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ]);
    }
    if let Some(q) = &c.qmp_socket {
        push(&["-qmp", &format!("unix:{},server=on,wait=off", q.display())]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageDetails;
    use bakeoff_spec::Target;

    fn image() -> Image {
        Image {
            target: Target::Rumprun,
            name: "hello".into(),
            artifact_id: "0".repeat(64),
            digest: "sha256:0".into(),
            dir: PathBuf::from("/cache/images/rumprun/abc"),
            files: [("kernel".to_string(), PathBuf::from("hello-hw_virtio.bin"))]
                .into_iter()
                .collect(),
            size_bytes: 1,
            compressed_bytes: 1,
            reference: None,
            details: ImageDetails {
                argv0: Some("hello".into()),
                args: Some(vec!["--default".into()]),
                env: Some(vec![
                    ("PORT".into(), "8080".into()),
                    ("GREETING".into(), "hi".into()),
                ]),
                ..Default::default()
            },
        }
    }

    #[test]
    fn config_for_qemu_user_networking() {
        let opts = RunOptions {
            env: vec![("GREETING".into(), "x".into())],
            ..Default::default()
        };
        let c = RumprunConfig::for_run(&image(), &opts, "web", Some(RumprunNet::qemu_user()));
        insta::assert_snapshot!(c.render().unwrap());
    }

    #[test]
    fn args_replace_defaults_and_are_quoted_for_rumprun() {
        let opts = RunOptions {
            args: vec![
                "a b".into(),
                "say \"hi\"".into(),
                "c:\\x".into(),
                "".into(),
                "plain".into(),
            ],
            ..Default::default()
        };
        let c = RumprunConfig::for_run(&image(), &opts, "web", None);
        assert_eq!(c.argv[0], "hello");
        let json = c.render().unwrap();
        assert!(
            json.ends_with(r#""cmdline":"hello 'a b' 'say \"hi\"' 'c:\\x' '' plain"}"#),
            "{json}"
        );
        // The text is JSON a strict parser accepts too (apart from the repeated "env" keys).
        serde_json::from_str::<serde_json::Value>(&json).unwrap();
    }

    #[test]
    fn values_rumprun_cannot_receive_are_refused() {
        let mut c = RumprunConfig::for_run(&image(), &RunOptions::default(), "web", None);
        c.argv.push("it's".into());
        assert_eq!(
            c.render().unwrap_err().to_string(),
            "cannot pass the argument `it's` to Rumprun: it contains a single quote, which Rumprun's argument splitter cannot receive"
        );
        c.argv.pop();
        c.env.push(("Q".into(), "a\"b".into()));
        assert_eq!(
            c.render().unwrap_err().to_string(),
            "cannot pass the environment variable Q to Rumprun: it contains a double quote, which Rumprun's configuration reader would pass on altered"
        );
        c.env.pop();
        c.argv.push("x".repeat(5000));
        assert!(
            c.render()
                .unwrap_err()
                .to_string()
                .starts_with("the Rumprun configuration is 5"),
            "too long"
        );
    }

    fn config() -> RumprunQemuConfig {
        RumprunQemuConfig {
            accel: Accel::Tcg,
            memory_mib: 64,
            kernel: "/cache/images/rumprun/abc/hello-hw_virtio.bin".into(),
            config: r#"{"net":{"if":"vioif0","type":"inet","method":"static","addr":"10.0.2.15","mask":"24","gw":"10.0.2.2"},"env":"GREETING=x","hostname":"web","cmdline":"hello"}"#.into(),
            forwards: Some(vec![bakeoff_spec::parse_publish("18080:8080").unwrap(), bakeoff_spec::parse_publish("127.0.0.2:5353:53/udp").unwrap()]),
            serial_log: "/state/instances/web/console.log".into(),
            qmp_socket: Some("/state/instances/web/qmp.sock".into()),
        }
    }

    #[test]
    fn tcg_argv() {
        insta::assert_snapshot!(rumprun_qemu_argv(&config()).join("\n"));
    }

    #[test]
    fn kvm_argv_and_no_nic() {
        let mut c = config();
        c.accel = Accel::Kvm;
        c.forwards = None;
        let argv = rumprun_qemu_argv(&c);
        assert!(
            argv.windows(2)
                .any(|w| w == ["-cpu", "host,-arch-capabilities"]),
            "{argv:?}"
        );
        assert!(!argv.iter().any(|a| a.contains("netdev")), "{argv:?}");
    }
}
