//! Registry credentials the way Docker keeps them, and the challenges registries send.
//!
//! Credentials come from the Docker config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `auths` maps a registry (`host:port`, with or without a scheme)
//! to a base64 `auth` of `user:password` (or to `username` and `password`). A registry that
//! answers 401 says in `WWW-Authenticate` how to log in: `Basic` (send the credentials), or
//! `Bearer realm=…,service=…,scope=…` (ask the realm for a token, with the credentials when
//! there are any, then send the token).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::RegistryError;

/// A user and password for one registry, and the file they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// Where they were read (named in error messages).
    pub source: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    /// `Basic base64(user:password)`.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.user, self.password))
        )
    }
}

/// The Docker config file this process would read: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `https://host:port/v1/` → `host:port`.
fn registry_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credentials `path` holds for `registry`; `Ok(None)` when the file is absent or has
/// none for it. A file that cannot be parsed, or an `auth` that is not base64 `user:password`,
/// is an error naming the file.
pub fn credentials_from(path: &Path, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError::BadConfig {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let bad = |reason: String| RegistryError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let config: DockerConfig =
        serde_json::from_slice(&text).map_err(|e| bad(format!("it is not JSON ({e})")))?;
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(k, _)| registry_key(k) == registry)
    else {
        return Ok(None);
    };
    let (user, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(a), _, _) if !a.is_empty() => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|_| bad(format!("the `auth` of {key} is not base64")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| bad(format!("the `auth` of {key} is not text")))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad(format!("the `auth` of {key} is not user:password")))?;
            (u.to_string(), p.to_string())
        }
        (_, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return Ok(None),
    };
    Ok(Some(Credentials {
        user,
        password,
        source: path.to_path_buf(),
    }))
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = BTreeMap::new();
    // key="value" pairs separated by commas; values may hold commas (scopes do).
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => None,
    }
}

/// The token a Bearer realm answers with (`token`, or OAuth2's `access_token`).
#[derive(serde::Deserialize)]
pub(crate) struct TokenAnswer {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

/// `%`-encodes a query value (RFC 3986 unreserved characters pass).
pub(crate) fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_as_registries_send_them() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/hello:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:team/hello:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="http://127.0.0.1:1/t""#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
    }

    #[test]
    fn credentials_from_the_docker_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &path,
            serde_json::json!({"auths": {
                "127.0.0.1:5000": {"auth": b64("alice:s3cret:with:colons")},
                "https://127.0.0.1:5001/v1/": {"auth": b64("bob:pw")},
                "127.0.0.1:5002": {"username": "carol", "password": "pw2"},
                "127.0.0.1:5003": {"auth": "%%%"},
                "127.0.0.1:5004": {}
            }})
            .to_string(),
        )
        .unwrap();
        let c = credentials_from(&path, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("alice", "s3cret:with:colons")
        );
        assert_eq!(
            c.basic(),
            format!("Basic {}", b64("alice:s3cret:with:colons"))
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            credentials_from(&path, "127.0.0.1:5001")
                .unwrap()
                .unwrap()
                .user,
            "bob"
        );
        assert_eq!(
            credentials_from(&path, "127.0.0.1:5002")
                .unwrap()
                .unwrap()
                .user,
            "carol"
        );
        let e = credentials_from(&path, "127.0.0.1:5003")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("the `auth` of 127.0.0.1:5003 is not base64"),
            "{e}"
        );
        assert_eq!(credentials_from(&path, "127.0.0.1:5004").unwrap(), None);
        assert_eq!(credentials_from(&path, "127.0.0.1:9").unwrap(), None);
        assert_eq!(
            credentials_from(&dir.path().join("none.json"), "x").unwrap(),
            None
        );
        std::fs::write(&path, "not json").unwrap();
        let e = credentials_from(&path, "x").unwrap_err().to_string();
        assert!(
            e.contains("config.json cannot be read: it is not JSON"),
            "{e}"
        );
    }
}
