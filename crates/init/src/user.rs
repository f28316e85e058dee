//! The user the app runs as (a unit's `User=`/`Group=`, an OCI image's `User`, bakeoff.toml's
//! `user`), resolved to numbers on the host at build time from the image's own `/etc/passwd`
//! and `/etc/group`, so PID 1 needs no name lookup inside the guest.
//!
//! JSON shape inside `/bakeoff/config.json`: `"user":{"uid":100,"gid":101,"groups":[101]}`,
//! with `"owns":["/var/lib/x"]` when the user owns paths of the image.

use crate::json::Value;

/// Numeric credentials for the app's process: PID 1 calls `setgroups(groups)`, `setgid(gid)`,
/// then `setuid(uid)` in the child before `exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (as `initgroups(3)` would give them: the primary group and every
    /// group of `/etc/group` listing the user).
    #[cfg_attr(feature = "serde", serde(default))]
    pub groups: Vec<u32>,
    /// Absolute paths that belong to the user (each with what is below it): PID 1 makes each
    /// directory that is missing (a `RuntimeDirectory=` under the fresh /run) and gives it and
    /// its contents to uid:gid before the start, as systemd does for a unit's directories.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub owns: Vec<String>,
}

impl RunAs {
    pub(crate) fn write(&self, out: &mut String) {
        out.push_str(&format!(
            "{{\"uid\":{},\"gid\":{},\"groups\":[",
            self.uid, self.gid
        ));
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        out.push_str(&groups.join(","));
        out.push(']');
        if !self.owns.is_empty() {
            out.push_str(",\"owns\":");
            crate::json::write_string_array(out, &self.owns);
        }
        out.push('}');
    }

    pub(crate) fn read(value: &Value) -> Result<RunAs, String> {
        let Value::Object(fields) = value else {
            return Err(format!("`user` must be an object, found {}", value.kind()));
        };
        let (mut uid, mut gid, mut groups, mut owns) = (None, None, Vec::new(), Vec::new());
        for (key, v) in fields {
            match key.as_str() {
                "uid" => uid = Some(number(v, "user.uid")?),
                "gid" => gid = Some(number(v, "user.gid")?),
                "groups" => {
                    let Value::Array(items) = v else {
                        return Err(format!(
                            "`user.groups` must be an array of numbers, found {}",
                            v.kind()
                        ));
                    };
                    groups = items
                        .iter()
                        .map(|g| number(g, "user.groups"))
                        .collect::<Result<_, _>>()?;
                }
                "owns" => {
                    owns = crate::json::string_array(v, "user.owns")?;
                    if let Some(p) = owns.iter().find(|p| !p.starts_with('/')) {
                        return Err(format!("`user.owns` must hold absolute paths, found {p:?}"));
                    }
                }
                other => return Err(format!("unknown field `user.{other}`")),
            }
        }
        Ok(RunAs {
            uid: uid.ok_or("`user` needs `uid`")?,
            gid: gid.ok_or("`user` needs `gid`")?,
            groups,
            owns,
        })
    }
}

fn number(v: &Value, what: &str) -> Result<u32, String> {
    match v {
        Value::Number(n) => n
            .parse::<u32>()
            .map_err(|_| format!("`{what}` must be a number from 0 to 4294967295, found {n}")),
        other => Err(format!("`{what}` must be a number, found {}", other.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    #[test]
    fn round_trips_and_refuses_bad_values() {
        let u = RunAs {
            uid: 100,
            gid: 101,
            groups: vec![101, 4],
            owns: Vec::new(),
        };
        let mut s = String::new();
        u.write(&mut s);
        assert_eq!(s, r#"{"uid":100,"gid":101,"groups":[101,4]}"#);
        assert_eq!(RunAs::read(&json::parse(&s).unwrap()), Ok(u.clone()));
        let owner = RunAs {
            owns: vec!["/run/x".into(), "/var/lib/a \"b\"".into()],
            ..u
        };
        let mut s = String::new();
        owner.write(&mut s);
        assert_eq!(
            s,
            r#"{"uid":100,"gid":101,"groups":[101,4],"owns":["/run/x","/var/lib/a \"b\""]}"#
        );
        assert_eq!(RunAs::read(&json::parse(&s).unwrap()), Ok(owner));
        assert!(
            RunAs::read(&json::parse(r#"{"uid":1,"gid":1,"owns":["x"]}"#).unwrap())
                .unwrap_err()
                .contains("absolute")
        );
        for (text, msg) in [
            (
                r#"{"uid":-1,"gid":0}"#,
                "`user.uid` must be a number from 0",
            ),
            (r#"{"uid":"x","gid":0}"#, "`user.uid` must be a number"),
            (r#"{"gid":0}"#, "`user` needs `uid`"),
            (
                r#"{"uid":0,"gid":0,"groups":[1.5]}"#,
                "`user.groups` must be a number",
            ),
            (
                r#"{"uid":0,"gid":0,"home":"/"}"#,
                "unknown field `user.home`",
            ),
            (r#""root""#, "`user` must be an object"),
        ] {
            let e = RunAs::read(&json::parse(text).unwrap()).unwrap_err();
            assert!(e.contains(msg), "{text}: {e}");
        }
    }
}
