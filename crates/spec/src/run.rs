use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::SpecError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// One `-p [IP:]HOST:GUEST[/tcp|/udp]`. Without an IP the port binds 127.0.0.1, never all interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}",
            self.host_ip, self.host_port, self.guest_port
        )?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

/// Parses `-p` the way `docker run -p` does, except that the default host IP is 127.0.0.1.
pub fn parse_publish(value: &str) -> Result<PortMapping, SpecError> {
    let err = |reason: &str| SpecError::Publish {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let (spec, protocol) = match value.rsplit_once('/') {
        Some((s, "tcp")) => (s, Protocol::Tcp),
        Some((s, "udp")) => (s, Protocol::Udp),
        Some(_) => return Err(err("the protocol after '/' must be tcp or udp")),
        None => (value, Protocol::Tcp),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, guest) = match parts.as_slice() {
        [host, guest] => (None, *host, *guest),
        [ip, host, guest] => (Some(*ip), *host, *guest),
        _ => {
            return Err(err(
                "expected [IP:]HOST_PORT:GUEST_PORT, for example 8080:80 or 127.0.0.1:8080:80",
            ))
        }
    };
    let host_ip = match ip {
        None | Some("") => Ipv4Addr::LOCALHOST,
        Some(ip) => ip
            .parse()
            .map_err(|_| err("the IP must be an IPv4 address such as 127.0.0.1"))?,
    };
    let port = |s: &str, which: &str| -> Result<u16, SpecError> {
        match s.parse::<u16>() {
            Ok(0) | Err(_) => Err(err(&format!(
                "the {which} port must be a number from 1 to 65535"
            ))),
            Ok(p) => Ok(p),
        }
    };
    Ok(PortMapping {
        host_ip,
        host_port: port(host, "host")?,
        guest_port: port(guest, "guest")?,
        protocol,
    })
}

/// Parses `-e KEY=VALUE`.
pub fn parse_env(value: &str) -> Result<(String, String), SpecError> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(SpecError::Env {
            value: value.to_string(),
        }),
    }
}

/// Parses `--memory` like Docker: a number with an optional b, k, m or g suffix (binary units).
/// A bare number is bytes. Returns bytes.
pub fn parse_memory(value: &str) -> Result<u64, SpecError> {
    let err = |reason: &str| SpecError::Memory {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let v = value.trim().to_ascii_lowercase();
    let v = v
        .strip_suffix('b')
        .filter(|s| !s.is_empty() && s.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&v);
    let (digits, mult) = match v.chars().last() {
        Some('k') => (&v[..v.len() - 1], 1u64 << 10),
        Some('m') => (&v[..v.len() - 1], 1 << 20),
        Some('g') => (&v[..v.len() - 1], 1 << 30),
        Some('b') => (&v[..v.len() - 1], 1),
        Some(c) if c.is_ascii_digit() => (v, 1),
        _ => return Err(err("expected a size such as 128M, 512m or 1G")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| err("expected a size such as 128M, 512m or 1G"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| err("the size is too large"))?;
    if bytes < 4 << 20 {
        return Err(err("the minimum is 4M"));
    }
    Ok(bytes)
}

/// Parses `--cpus`: a positive decimal.
pub fn parse_cpus(value: &str) -> Result<f64, SpecError> {
    match value.parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 && c <= 1024.0 => Ok(c),
        _ => Err(SpecError::Cpus {
            value: value.to_string(),
        }),
    }
}

/// How the user asked for an instance to run; the same for every platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    pub publish: Vec<PortMapping>,
    /// Extra environment, applied over the app's own env.
    pub env: Vec<(String, String)>,
    pub name: Option<String>,
    pub detach: bool,
    /// Bytes.
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    /// Replaces the app's default args when non-empty.
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_defaults_to_loopback() {
        let m = parse_publish("8080:80").unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.guest_port),
            (Ipv4Addr::LOCALHOST, 8080, 80)
        );
        let m = parse_publish("0.0.0.0:8080:80/udp").unwrap();
        assert_eq!(
            (m.host_ip, m.protocol),
            (Ipv4Addr::UNSPECIFIED, Protocol::Udp)
        );
        assert_eq!(m.to_string(), "0.0.0.0:8080->80/udp");
    }

    #[test]
    fn publish_rejects_bad_values_with_reasons() {
        for (input, reason) in [
            ("80", "expected [IP:]HOST_PORT:GUEST_PORT"),
            ("x:80", "the host port must be a number from 1 to 65535"),
            ("8080:70000", "the guest port must be a number"),
            ("8080:0", "the guest port must be a number"),
            ("1.2.3:8080:80", "the IP must be an IPv4 address"),
            ("8080:80/sctp", "tcp or udp"),
        ] {
            let e = parse_publish(input).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("invalid port mapping `{input}`: ")),
                "{e}"
            );
            assert!(e.contains(reason), "{input}: {e}");
        }
    }

    #[test]
    fn env_needs_a_key() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(parse_env("A=").unwrap(), ("A".into(), "".into()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("128M").unwrap(), 128 << 20);
        assert_eq!(parse_memory("128mb").unwrap(), 128 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("8388608").unwrap(), 8 << 20);
        assert_eq!(
            parse_memory("lots").unwrap_err().to_string(),
            "invalid memory size `lots`: expected a size such as 128M, 512m or 1G"
        );
        assert!(parse_memory("1k")
            .unwrap_err()
            .to_string()
            .contains("minimum is 4M"));
        assert!(parse_memory("99999999999999g")
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("nan").is_err());
    }
}
