//! `/bakeoff/config.json` (written at build time) and the `bakeoff.run` overrides (given at run time).

use crate::json::{self, Value};
use crate::{base64url, InitError};

/// What PID 1 runs, fixed when the initramfs is built. Stored as `/bakeoff/config.json`.
///
/// JSON shape (the same with or without the `serde` feature):
/// `{"command":["/app/hello"],"args":[],"env":[["PORT","8080"]],"workdir":"/","hostname":"hello",
///   "modules":["/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio_ring.ko"]}`.
/// Only `command` is required.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct GuestConfig {
    /// The entrypoint: program and its fixed leading arguments (like an OCI `Entrypoint`).
    pub command: Vec<String>,
    /// Default arguments after `command` (like an OCI `Cmd`); `bakeoff.run` may replace them.
    #[cfg_attr(feature = "serde", serde(default))]
    pub args: Vec<String>,
    #[cfg_attr(feature = "serde", serde(default))]
    pub env: Vec<(String, String)>,
    #[cfg_attr(feature = "serde", serde(default = "default_workdir"))]
    pub workdir: String,
    /// Empty: keep whatever `bakeoff.hostname=` says, or the kernel's default.
    #[cfg_attr(feature = "serde", serde(default))]
    pub hostname: String,
    /// Kernel modules to load, as absolute paths inside the initramfs, in load order.
    #[cfg_attr(feature = "serde", serde(default))]
    pub modules: Vec<String>,
    /// Who the app runs as; `None` keeps root.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub user: Option<crate::RunAs>,
}

#[cfg(feature = "serde")]
fn default_workdir() -> String {
    "/".to_string()
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            workdir: "/".to_string(),
            hostname: String::new(),
            modules: Vec::new(),
            user: None,
        }
    }
}

impl GuestConfig {
    /// Compact, deterministic JSON (fields in declaration order).
    pub fn to_json(&self) -> String {
        let mut s = String::from("{\"command\":");
        json::write_string_array(&mut s, &self.command);
        s.push_str(",\"args\":");
        json::write_string_array(&mut s, &self.args);
        s.push_str(",\"env\":");
        json::write_pairs(&mut s, &self.env);
        s.push_str(",\"workdir\":");
        json::write_string(&mut s, &self.workdir);
        s.push_str(",\"hostname\":");
        json::write_string(&mut s, &self.hostname);
        s.push_str(",\"modules\":");
        json::write_string_array(&mut s, &self.modules);
        if let Some(user) = &self.user {
            s.push_str(",\"user\":");
            user.write(&mut s);
        }
        s.push('}');
        s
    }

    /// Parses and validates the JSON written by [`GuestConfig::to_json`] (or by serde).
    pub fn from_json(text: &str) -> Result<GuestConfig, InitError> {
        let bad = |m: String| InitError::Config(m);
        let Value::Object(fields) = json::parse(text).map_err(bad)? else {
            return Err(bad("the top level must be a JSON object".to_string()));
        };
        let mut c = GuestConfig::default();
        let mut seen_command = false;
        for (key, value) in &fields {
            match key.as_str() {
                "command" => {
                    c.command = json::string_array(value, "command").map_err(bad)?;
                    seen_command = true;
                }
                "args" => c.args = json::string_array(value, "args").map_err(bad)?,
                "env" => c.env = json::pairs(value, "env").map_err(bad)?,
                "workdir" => c.workdir = string(value, "workdir").map_err(bad)?,
                "hostname" => c.hostname = string(value, "hostname").map_err(bad)?,
                "modules" => c.modules = json::string_array(value, "modules").map_err(bad)?,
                "user" => c.user = Some(crate::RunAs::read(value).map_err(bad)?),
                other => return Err(bad(format!("unknown field `{other}`"))),
            }
        }
        if !seen_command {
            return Err(bad("missing field `command`".to_string()));
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks what PID 1 relies on: a program to run, an absolute workdir, sane names.
    pub fn validate(&self) -> Result<(), InitError> {
        let bad = |m: &str| Err(InitError::Config(m.to_string()));
        match self.command.first() {
            None => return bad("`command` is empty: there is no program to run"),
            Some(p) if p.is_empty() => return bad("`command` starts with an empty program name"),
            _ => {}
        }
        if !self.workdir.starts_with('/') {
            return bad("`workdir` must be an absolute path");
        }
        if let Some((k, _)) = self
            .env
            .iter()
            .find(|(k, _)| k.is_empty() || k.contains('='))
        {
            return Err(InitError::Config(format!(
                "environment variable name `{k}` is empty or contains '='"
            )));
        }
        if let Some(m) = self.modules.iter().find(|m| !m.starts_with('/')) {
            return Err(InitError::Config(format!(
                "module path `{m}` must be absolute"
            )));
        }
        if self.hostname.len() > 64 {
            return bad("`hostname` is longer than 64 bytes");
        }
        let strings = self
            .command
            .iter()
            .chain(&self.args)
            .chain(self.env.iter().flat_map(|(k, v)| [k, v]));
        if strings
            .chain([&self.workdir, &self.hostname])
            .chain(&self.modules)
            .any(|s| s.contains('\0'))
        {
            return bad("a string contains a NUL byte");
        }
        Ok(())
    }
}

fn string(value: &Value, what: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{what} must be a string, found {}", other.kind())),
    }
}

/// Run-time changes to the app, carried by `bakeoff.run=` (base64url, no padding, of
/// `{"env":[["K","V"],...],"args":[...] or null}`) so that no quoting rule of the kernel
/// command line can mangle them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct RunOverrides {
    /// Set after the config's env; a name already there is replaced in place.
    #[cfg_attr(feature = "serde", serde(default))]
    pub env: Vec<(String, String)>,
    /// `Some` replaces the config's `args` (even with an empty list); `None` keeps them.
    #[cfg_attr(feature = "serde", serde(default))]
    pub args: Option<Vec<String>>,
}

impl RunOverrides {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.args.is_none()
    }

    pub fn to_json(&self) -> String {
        let mut s = String::from("{\"env\":");
        json::write_pairs(&mut s, &self.env);
        s.push_str(",\"args\":");
        match &self.args {
            Some(a) => json::write_string_array(&mut s, a),
            None => s.push_str("null"),
        }
        s.push('}');
        s
    }

    pub fn from_json(text: &str) -> Result<RunOverrides, String> {
        let Value::Object(fields) = json::parse(text)? else {
            return Err("the top level must be a JSON object".to_string());
        };
        let mut o = RunOverrides::default();
        for (key, value) in &fields {
            match key.as_str() {
                "env" => o.env = json::pairs(value, "env")?,
                "args" => {
                    o.args = match value {
                        Value::Null => None,
                        v => Some(json::string_array(v, "args")?),
                    }
                }
                other => return Err(format!("unknown field `{other}`")),
            }
        }
        if let Some((k, _)) = o.env.iter().find(|(k, _)| k.is_empty() || k.contains('=')) {
            return Err(format!(
                "environment variable name `{k}` is empty or contains '='"
            ));
        }
        Ok(o)
    }

    /// The value for `bakeoff.run=`.
    pub fn encode(&self) -> String {
        base64url::encode(self.to_json().as_bytes())
    }

    /// Decodes a `bakeoff.run=` value.
    pub fn decode(value: &str) -> Result<RunOverrides, String> {
        let bytes = base64url::decode(value)?;
        let text =
            String::from_utf8(bytes).map_err(|_| "the decoded value is not UTF-8".to_string())?;
        RunOverrides::from_json(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GuestConfig {
        GuestConfig {
            command: vec!["/app/hello".into()],
            args: vec!["--x".into(), "a b".into()],
            env: vec![
                ("PORT".into(), "8080".into()),
                ("Q".into(), "say \"hi\"".into()),
            ],
            workdir: "/app".into(),
            hostname: "hello".into(),
            modules: vec!["/lib/modules/6.1.0/kernel/drivers/virtio/virtio_ring.ko".into()],
            user: None,
        }
    }

    #[test]
    fn config_with_a_user_round_trips() {
        let c = GuestConfig {
            user: Some(crate::RunAs {
                uid: 107,
                gid: 113,
                groups: vec![113],
                owns: Vec::new(),
            }),
            ..sample()
        };
        let text = c.to_json();
        assert!(
            text.ends_with(r#","user":{"uid":107,"gid":113,"groups":[113]}}"#),
            "{text}"
        );
        assert_eq!(GuestConfig::from_json(&text).unwrap(), c);
        assert!(
            !sample().to_json().contains("user"),
            "no user: the old shape"
        );
    }

    #[test]
    fn config_json_round_trips() {
        let c = sample();
        let text = c.to_json();
        assert_eq!(
            text,
            r#"{"command":["/app/hello"],"args":["--x","a b"],"env":[["PORT","8080"],["Q","say \"hi\""]],"workdir":"/app","hostname":"hello","modules":["/lib/modules/6.1.0/kernel/drivers/virtio/virtio_ring.ko"]}"#
        );
        assert_eq!(GuestConfig::from_json(&text).unwrap(), c);
    }

    #[test]
    fn config_defaults_everything_but_command() {
        let c = GuestConfig::from_json(r#"{"command":["/app/x"]}"#).unwrap();
        assert_eq!(
            c,
            GuestConfig {
                command: vec!["/app/x".into()],
                ..GuestConfig::default()
            }
        );
        assert_eq!(c.workdir, "/");
    }

    #[test]
    fn config_errors_name_the_problem() {
        for (text, msg) in [
            ("[]", "the top level must be a JSON object"),
            ("{}", "missing field `command`"),
            (r#"{"command":[]}"#, "`command` is empty"),
            (
                r#"{"command":"/app/x"}"#,
                "command must be an array of strings, found a string",
            ),
            (r#"{"command":["/x"],"colour":1}"#, "unknown field `colour`"),
            (
                r#"{"command":["/x"],"workdir":"app"}"#,
                "`workdir` must be an absolute path",
            ),
            (
                r#"{"command":["/x"],"env":[["A=B","1"]]}"#,
                "`A=B` is empty or contains '='",
            ),
            (
                r#"{"command":["/x"],"env":{"A":"1"}}"#,
                "env must be an array of",
            ),
            (
                r#"{"command":["/x"],"modules":["virtio.ko"]}"#,
                "module path `virtio.ko` must be absolute",
            ),
            (r#"{"command":["/x\u0000"]}"#, "NUL byte"),
            (r#"{"command":["/x"]"#, "expected ',' or '}'"),
        ] {
            let e = GuestConfig::from_json(text).unwrap_err().to_string();
            assert!(e.starts_with("invalid /bakeoff/config.json: "), "{e}");
            assert!(e.contains(msg), "{text}: {e}");
        }
    }

    #[test]
    fn overrides_encode_to_a_cmdline_safe_token_and_back() {
        let o = RunOverrides {
            env: vec![
                ("GREETING".into(), "hi there \"quoted\" = ok".into()),
                ("EMPTY".into(), String::new()),
            ],
            args: Some(vec!["-v".into(), "two words".into()]),
        };
        let token = o.encode();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_eq!(RunOverrides::decode(&token).unwrap(), o);
        let keep = RunOverrides {
            env: vec![],
            args: None,
        };
        assert!(keep.is_empty());
        assert_eq!(keep.to_json(), r#"{"env":[],"args":null}"#);
        assert_eq!(RunOverrides::decode(&keep.encode()).unwrap(), keep);
        let clear = RunOverrides {
            env: vec![],
            args: Some(vec![]),
        };
        assert!(!clear.is_empty());
        assert_eq!(RunOverrides::decode(&clear.encode()).unwrap(), clear);
    }

    #[test]
    fn overrides_reject_bad_values() {
        assert!(RunOverrides::decode("not base64!")
            .unwrap_err()
            .contains("invalid base64url character"));
        assert!(RunOverrides::decode(&base64url::encode(b"{\"env\":5}"))
            .unwrap_err()
            .contains("env must be"));
        assert!(RunOverrides::decode(&base64url::encode(b"{\"argv\":[]}"))
            .unwrap_err()
            .contains("unknown field"));
        assert!(RunOverrides::decode(&base64url::encode(&[0xff, 0xfe]))
            .unwrap_err()
            .contains("not UTF-8"));
        assert!(RunOverrides::decode(&base64url::encode(b"{\"env\":[[\"\",\"x\"]]}")).is_err());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_and_the_hand_written_json_agree() {
        let c = sample();
        let via_serde = serde_json::to_string(&c).unwrap();
        assert_eq!(GuestConfig::from_json(&via_serde).unwrap(), c);
        assert_eq!(
            serde_json::from_str::<GuestConfig>(&c.to_json()).unwrap(),
            c
        );
        let minimal: GuestConfig = serde_json::from_str(r#"{"command":["/x"]}"#).unwrap();
        assert_eq!(
            minimal,
            GuestConfig::from_json(r#"{"command":["/x"]}"#).unwrap()
        );
        let o = RunOverrides {
            env: vec![("A".into(), "1".into())],
            args: None,
        };
        assert_eq!(serde_json::to_string(&o).unwrap(), o.to_json());
    }
}
