//! Who the app runs as, resolved to numbers from the image's own `/etc/passwd` and
//! `/etc/group` at build time (PID 1 of the microVM has no name service; Docker reads the same
//! files and gets the same numbers).
//!
//! The forms are the OCI image config's `User` (which systemd's `User=`/`Group=` map onto):
//! `NAME`, `UID`, `NAME:GROUP`, `UID:GID`, `NAME:GID`, `UID:GROUP`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The user an artifact's command runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUser {
    /// As written by its source (e.g. `prometheus`, `1000:1000`).
    pub spec: String,
    /// Where it came from: `User= of foo.service`, `the image's User`, `bakeoff.toml`.
    pub from: String,
    pub uid: u32,
    pub gid: u32,
    /// The primary group and every group of `/etc/group` that lists the user (initgroups).
    pub groups: Vec<u32>,
    /// The user's home directory from `/etc/passwd`, if the user is listed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Absolute paths in the image that belong to this user (each with what is below it): a
    /// unit's `RuntimeDirectory=`, `StateDirectory=` ... and what its maintainer scripts chown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owns: Vec<String>,
}

impl RunUser {
    /// The value for an OCI image config's `User`: numbers, so Docker needs no lookup.
    pub fn oci_user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7).then_some(())?;
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn groups(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then_some(())?;
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Resolves `spec` (with an optional separate `group`, as systemd's `Group=`) against the
/// files of `rootfs`, or says in one sentence what is missing.
pub fn resolve(
    rootfs: &Path,
    spec: &str,
    group: Option<&str>,
    from: &str,
) -> Result<RunUser, String> {
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap_or_default();
    resolve_in(&read("etc/passwd"), &read("etc/group"), spec, group, from)
}

pub(crate) fn resolve_in(
    passwd_text: &str,
    group_text: &str,
    spec: &str,
    group: Option<&str>,
    from: &str,
) -> Result<RunUser, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, group),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
    };
    if !valid(user_part) || group_part.is_some_and(|g| !valid(g)) {
        return Err(format!(
            "{from}: `{spec}` is not a user: expected NAME, UID, NAME:GROUP or UID:GID"
        ));
    }
    let users = passwd(passwd_text);
    let all_groups = groups(group_text);
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users.iter().find(|u| u.uid == uid),
        Err(_) => Some(users.iter().find(|u| u.name == user_part).ok_or_else(|| {
            format!(
                "{from}: the user `{user_part}` is not in the image's /etc/passwd; add it (a \
                 [[files]] entry for /etc/passwd) or give a number"
            )
        })?),
    };
    let uid = match (entry, user_part.parse::<u32>()) {
        (Some(e), _) => e.uid,
        (None, Ok(n)) => n,
        (None, Err(_)) => unreachable!("a name was found above"),
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                all_groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| {
                        format!("{from}: the group `{g}` is not in the image's /etc/group")
                    })?
                    .gid
            }
        },
        // A number without a passwd entry: group 0, as Docker does.
        None => entry.map_or(0, |e| e.gid),
    };
    let mut ids = vec![gid];
    if let Some(e) = entry {
        for g in &all_groups {
            if g.members.iter().any(|m| m == &e.name) && !ids.contains(&g.gid) {
                ids.push(g.gid);
            }
        }
    }
    Ok(RunUser {
        spec: match group {
            Some(g) if !spec.contains(':') => format!("{spec}:{g}"),
            _ => spec.to_string(),
        },
        from: from.to_string(),
        uid,
        gid,
        groups: ids,
        home: entry.map(|e| e.home.clone()),
        owns: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        prometheus:x:100:101:Prometheus daemon:/var/lib/prometheus:/usr/sbin/nologin\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:prometheus\nprometheus:x:101:\nnogroup:x:65534:\n";

    fn r(spec: &str, group: Option<&str>) -> Result<RunUser, String> {
        resolve_in(PASSWD, GROUP, spec, group, "test")
    }

    #[test]
    fn names_and_numbers_resolve_like_docker() {
        let p = r("prometheus", None).unwrap();
        assert_eq!((p.uid, p.gid, p.groups.clone()), (100, 101, vec![101, 4]));
        assert_eq!(p.home.as_deref(), Some("/var/lib/prometheus"));
        assert_eq!(p.oci_user(), "100:101");
        let g = r("prometheus", Some("nogroup")).unwrap();
        assert_eq!(
            (g.uid, g.gid, g.spec.as_str()),
            (100, 65534, "prometheus:nogroup")
        );
        let n = r("1234", None).unwrap();
        assert_eq!(
            (n.uid, n.gid, n.groups.clone(), n.home),
            (1234, 0, vec![0], None)
        );
        let ng = r("1234:77", None).unwrap();
        assert_eq!((ng.uid, ng.gid), (1234, 77));
        let by_uid = r("65534", None).unwrap();
        assert_eq!((by_uid.uid, by_uid.gid), (65534, 65534));
    }

    #[test]
    fn unknown_names_and_bad_forms_are_one_sentence() {
        assert_eq!(
            r("ghost", None).unwrap_err(),
            "test: the user `ghost` is not in the image's /etc/passwd; add it (a [[files]] \
             entry for /etc/passwd) or give a number"
        );
        assert_eq!(
            r("prometheus:ghosts", None).unwrap_err(),
            "test: the group `ghosts` is not in the image's /etc/group"
        );
        for bad in ["", "a b", "a:b:c", ":", "x/y", "root:"] {
            assert!(
                r(bad, None)
                    .unwrap_err()
                    .contains("expected NAME, UID, NAME:GROUP or UID:GID"),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn any_files_and_spec_give_a_value_or_a_sentence(
            p in "([a-z0-9:]{0,12}\n){0,6}",
            g in "([a-z0-9:,]{0,12}\n){0,6}",
            spec in "[a-z0-9:$ ]{0,10}",
        ) {
            match resolve_in(&p, &g, &spec, None, "t") {
                Ok(u) => prop_assert!(u.groups.first() == Some(&u.gid)),
                Err(e) => prop_assert!(e.starts_with("t: ")),
            }
        }
    }
}
