//! The kernel command line as PID 1 sees it in `/proc/cmdline`, and what the app gets from it.

use std::net::Ipv4Addr;

use crate::{GuestConfig, InitError, RunOverrides};

/// Static IPv4 settings from `bakeoff.ip=A.B.C.D/N`, `bakeoff.gw=`, `bakeoff.dns=A,B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl NetConfig {
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }
}

/// Everything bakeoff puts on the kernel command line, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    /// `None`: no `bakeoff.ip=`; only `lo` is configured.
    pub net: Option<NetConfig>,
    pub hostname: Option<String>,
    pub run: RunOverrides,
    /// `bakeoff.wait=console`: a warm-start template. PID 1 waits for the run's values on its
    /// console ([`crate::resume`]) before it configures the network and starts the app.
    pub wait_for_run: bool,
    /// `(module, "param=value")` from every `module.param=value`, module names with `-` as `_`.
    pub module_params: Vec<(String, String)>,
}

impl BootParams {
    /// The parameter string for `finit_module` of `module` (file stem; `-` and `_` are equivalent).
    pub fn params_for(&self, module: &str) -> String {
        let module = normalize_module_name(module);
        let params: Vec<&str> = self
            .module_params
            .iter()
            .filter(|(m, _)| *m == module)
            .map(|(_, p)| p.as_str())
            .collect();
        params.join(" ")
    }
}

/// Module names treat `-` and `_` as the same character; the kernel reports them with `_`.
pub fn normalize_module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Splits a kernel command line into `(param, value)` exactly as the kernel's `next_arg()` does:
/// whitespace separates, double quotes group (`"a=b c"` or `a="b c"`; the quotes are removed),
/// the first `=` splits, and `--` ends the kernel's parameters.
pub fn split_cmdline(line: &str) -> Vec<(String, Option<String>)> {
    let s = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= s.len() {
            break;
        }
        let mut start = i;
        let mut in_quote = false;
        let quoted = s[i] == b'"';
        if quoted {
            start += 1;
            in_quote = true;
        }
        let mut j = start;
        let mut equals = None;
        while j < s.len() {
            if s[j].is_ascii_whitespace() && !in_quote {
                break;
            }
            if equals.is_none() && s[j] == b'=' {
                equals = Some(j);
            }
            if s[j] == b'"' {
                in_quote = !in_quote;
            }
            j += 1;
        }
        let mut end = j;
        let strip_last = |end: usize| end > start && s[end - 1] == b'"';
        let text = |a: usize, b: usize| String::from_utf8_lossy(&s[a..b.max(a)]).into_owned();
        let (param, value) = match equals {
            None => {
                if quoted && strip_last(end) {
                    end -= 1;
                }
                (text(start, end), None)
            }
            Some(eq) => {
                let mut vstart = eq + 1;
                if vstart < end && s[vstart] == b'"' {
                    vstart += 1;
                    if end > vstart && s[end - 1] == b'"' {
                        end -= 1;
                    }
                } else if quoted && strip_last(end) {
                    end -= 1;
                }
                (text(start, eq), Some(text(vstart, end)))
            }
        };
        i = j;
        if param == "--" && value.is_none() && !quoted {
            break;
        }
        out.push((param, value));
    }
    out
}

/// Parses `/proc/cmdline`. Unknown `bakeoff.*` keys and malformed values are errors, so that a
/// typo cannot silently leave the VM without network.
pub fn parse_cmdline(line: &str) -> Result<BootParams, InitError> {
    let bad = |m: String| InitError::Cmdline(m);
    let mut p = BootParams::default();
    let mut ip = None;
    let mut gw = None;
    let mut dns = None;
    for (param, value) in split_cmdline(line) {
        let Some((module, key)) = param.split_once('.') else {
            continue;
        };
        if module.is_empty() || key.is_empty() {
            continue;
        }
        if module != "bakeoff" {
            let param = match value {
                None => key.to_string(),
                Some(v) if v.contains(|c: char| c.is_ascii_whitespace()) => {
                    format!("{key}=\"{v}\"")
                }
                Some(v) => format!("{key}={v}"),
            };
            p.module_params.push((normalize_module_name(module), param));
            continue;
        }
        let value = value.ok_or_else(|| bad(format!("`{param}` needs a value (`{param}=...`)")))?;
        match key {
            "ip" => {
                ip = Some(
                    parse_cidr(&value).map_err(|m| bad(format!("bakeoff.ip=`{value}`: {m}")))?,
                )
            }
            "gw" => {
                gw = Some(parse_ip(&value).map_err(|m| bad(format!("bakeoff.gw=`{value}`: {m}")))?)
            }
            "dns" => {
                let list: Result<Vec<_>, _> = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(parse_ip)
                    .collect();
                dns = Some(list.map_err(|m| bad(format!("bakeoff.dns=`{value}`: {m}")))?);
            }
            "hostname" => {
                if value.is_empty() || value.len() > 64 || value.contains(['/', '\0']) {
                    return Err(bad(format!(
                        "bakeoff.hostname=`{value}`: a hostname is 1 to 64 bytes without '/'"
                    )));
                }
                p.hostname = Some(value);
            }
            "wait" => {
                if value != "console" {
                    return Err(bad(format!(
                        "bakeoff.wait=`{value}`: the only way to wait is `console`"
                    )));
                }
                p.wait_for_run = true;
            }
            "run" => {
                p.run =
                    RunOverrides::decode(&value).map_err(|m| bad(format!("bakeoff.run: {m}")))?
            }
            _ => return Err(bad(format!("unknown parameter `{param}`"))),
        }
    }
    match ip {
        Some((address, prefix)) => {
            p.net = Some(NetConfig {
                address,
                prefix,
                gateway: gw,
                dns: dns.unwrap_or_default(),
            });
        }
        None if gw.is_some() || dns.is_some() => {
            return Err(bad(
                "bakeoff.gw or bakeoff.dns is given without bakeoff.ip".to_string()
            ));
        }
        None => {}
    }
    Ok(p)
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address"))
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, n) = s
        .split_once('/')
        .ok_or("expected ADDRESS/PREFIX such as 10.0.2.15/24")?;
    let prefix = match n.parse::<u8>() {
        Ok(n) if n <= 32 => n,
        _ => {
            return Err(format!(
                "the prefix length `{n}` must be a number from 0 to 32"
            ))
        }
    };
    Ok((parse_ip(a)?, prefix))
}

/// The app's process as PID 1 will start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLaunch {
    /// `argv[0]` is the program: an absolute path, or a name looked up in the app's `PATH`.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub hostname: Option<String>,
}

/// Used when neither the config nor the overrides set `PATH` (the value Docker uses).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Combines the build-time config with the run-time overrides: env is the config's, then each
/// override (replacing a name in place or appending it), plus `PATH` if nobody set it; args are
/// the override's when given, else the config's.
pub fn app_launch(config: &GuestConfig, boot: &BootParams) -> AppLaunch {
    let mut env = config.env.clone();
    for (k, v) in &boot.run.env {
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
    let args = boot.run.args.as_ref().unwrap_or(&config.args);
    let hostname = boot
        .hostname
        .clone()
        .or_else(|| Some(config.hostname.clone()).filter(|h| !h.is_empty()));
    AppLaunch {
        argv: config.command.iter().chain(args).cloned().collect(),
        env,
        workdir: config.workdir.clone(),
        hostname,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Vec<(String, Option<String>)> {
        split_cmdline(line)
    }

    fn pv(p: &str, v: Option<&str>) -> (String, Option<String>) {
        (p.to_string(), v.map(str::to_string))
    }

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(
            split("  console=ttyS0 quiet  a.b=\"x y\" \"c.d=e f\" g=\"h\" k=l\"m n\"\n"),
            vec![
                pv("console", Some("ttyS0")),
                pv("quiet", None),
                pv("a.b", Some("x y")),
                pv("c.d", Some("e f")),
                pv("g", Some("h")),
                pv("k", Some("l\"m n\"")),
            ]
        );
        assert_eq!(
            split("a= b=c=d"),
            vec![pv("a", Some("")), pv("b", Some("c=d"))]
        );
        assert_eq!(split("x -- y.z=1"), vec![pv("x", None)]);
        assert_eq!(split("\"unterminated x"), vec![pv("unterminated x", None)]);
        assert_eq!(split(""), vec![]);
    }

    #[test]
    fn parses_bakeoff_values() {
        let run = RunOverrides {
            env: vec![("GREETING".into(), "hi".into())],
            args: None,
        };
        let line = format!(
            "console=ttyS0 panic=-1 bakeoff.ip=10.0.2.15/24 bakeoff.gw=10.0.2.2 bakeoff.dns=10.0.2.3,1.1.1.1 \
             bakeoff.hostname=web bakeoff.run={}\n",
            run.encode()
        );
        let p = parse_cmdline(&line).unwrap();
        let net = p.net.as_ref().unwrap();
        assert_eq!(net.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(net.prefix, 24);
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(net.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            net.dns,
            vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(p.hostname.as_deref(), Some("web"));
        assert_eq!(p.run, run);
        assert!(p.module_params.is_empty());
        assert!(!p.wait_for_run);
        // A warm-start template waits for its run on the console; nothing else is a way to wait.
        assert!(parse_cmdline("bakeoff.wait=console").unwrap().wait_for_run);
        let e = parse_cmdline("bakeoff.wait=disk").unwrap_err().to_string();
        assert!(e.contains("the only way to wait is `console`"), "{e}");
    }

    #[test]
    fn netmask_covers_the_edges() {
        let n = |prefix| {
            NetConfig {
                address: Ipv4Addr::UNSPECIFIED,
                prefix,
                gateway: None,
                dns: vec![],
            }
            .netmask()
        };
        assert_eq!(n(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(n(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(n(31), Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(n(32), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn collects_module_params_with_dash_underscore_equivalence() {
        let p = parse_cmdline(
            "virtio-net.napi_tx=1 virtio_net.foo virtio_mmio.device=\"a b\" x.y=z tsc=reliable",
        )
        .unwrap();
        assert_eq!(p.params_for("virtio_net"), "napi_tx=1 foo");
        assert_eq!(p.params_for("virtio-net"), "napi_tx=1 foo");
        assert_eq!(p.params_for("virtio_mmio"), "device=\"a b\"");
        assert_eq!(p.params_for("virtio_ring"), "");
        assert_eq!(p.net, None);
    }

    #[test]
    fn rejects_bad_values_with_reasons() {
        for (line, msg) in [
            (
                "bakeoff.ip=10.0.2.15",
                "bakeoff.ip=`10.0.2.15`: expected ADDRESS/PREFIX",
            ),
            (
                "bakeoff.ip=10.0.2.15/33",
                "prefix length `33` must be a number from 0 to 32",
            ),
            ("bakeoff.ip=10.0.2/24", "`10.0.2` is not an IPv4 address"),
            (
                "bakeoff.ip=10.0.2.15/24 bakeoff.gw=gateway",
                "bakeoff.gw=`gateway`",
            ),
            (
                "bakeoff.ip=10.0.2.15/24 bakeoff.dns=1.1.1.1,x",
                "`x` is not an IPv4 address",
            ),
            ("bakeoff.gw=10.0.2.2", "without bakeoff.ip"),
            ("bakeoff.run=@@", "bakeoff.run: invalid base64url character"),
            ("bakeoff.run", "`bakeoff.run` needs a value"),
            ("bakeoff.hostname=a/b", "a hostname is 1 to 64 bytes"),
            ("bakeoff.colour=red", "unknown parameter `bakeoff.colour`"),
        ] {
            let e = parse_cmdline(line).unwrap_err().to_string();
            assert!(e.starts_with("invalid kernel command line: "), "{e}");
            assert!(e.contains(msg), "{line}: {e}");
        }
    }

    fn config() -> GuestConfig {
        GuestConfig {
            command: vec!["/app/hello".into(), "--serve".into()],
            args: vec!["default".into()],
            env: vec![
                ("PORT".into(), "8080".into()),
                ("GREETING".into(), "built".into()),
            ],
            workdir: "/app".into(),
            hostname: "built-name".into(),
            modules: vec![],
            user: None,
        }
    }

    #[test]
    fn launch_uses_the_config_when_nothing_is_overridden() {
        let l = app_launch(&config(), &BootParams::default());
        assert_eq!(l.argv, ["/app/hello", "--serve", "default"]);
        assert_eq!(
            l.env,
            [
                ("PORT".into(), "8080".into()),
                ("GREETING".into(), "built".into()),
                ("PATH".into(), DEFAULT_PATH.into())
            ]
        );
        assert_eq!(l.workdir, "/app");
        assert_eq!(l.hostname.as_deref(), Some("built-name"));
    }

    #[test]
    fn launch_applies_overrides() {
        let boot = BootParams {
            hostname: Some("run-name".into()),
            run: RunOverrides {
                env: vec![
                    ("GREETING".into(), "from run".into()),
                    ("PATH".into(), "/app".into()),
                ],
                args: Some(vec!["a b".into()]),
            },
            ..BootParams::default()
        };
        let l = app_launch(&config(), &boot);
        assert_eq!(l.argv, ["/app/hello", "--serve", "a b"]);
        assert_eq!(
            l.env,
            [
                ("PORT".into(), "8080".into()),
                ("GREETING".into(), "from run".into()),
                ("PATH".into(), "/app".into())
            ]
        );
        assert_eq!(l.hostname.as_deref(), Some("run-name"));
        let clear = BootParams {
            run: RunOverrides {
                env: vec![],
                args: Some(vec![]),
            },
            ..BootParams::default()
        };
        assert_eq!(
            app_launch(&config(), &clear).argv,
            ["/app/hello", "--serve"]
        );
        let unnamed = GuestConfig {
            hostname: String::new(),
            ..config()
        };
        assert_eq!(app_launch(&unnamed, &BootParams::default()).hostname, None);
    }
}
