//! Instances on disk: `<state>/instances/<name>/instance.json`, plus whatever files the driver
//! keeps for it (console log, QMP socket, ...) in the same directory. A name is reserved by
//! creating its directory, which is atomic, so two `run --name x` can never both win.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bakeoff_spec::{Platform, PortMapping};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("an instance named `{0}` already exists; choose another --name or remove it with `bakeoff rm -f {0}`")]
    NameTaken(String),
    #[error("no instance named `{0}` (see `bakeoff ps`)")]
    NotFound(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the record {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Status {
    Created,
    Running,
    /// The app ended by itself or was stopped; `code` when known.
    Exited {
        code: Option<i32>,
    },
    /// The engine no longer knows it (container removed by hand, VM process gone unexpectedly).
    Missing,
}

impl Status {
    pub fn is_running(self) -> bool {
        matches!(self, Status::Running)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Created => f.write_str("created"),
            Status::Running => f.write_str("running"),
            Status::Exited { code: Some(c) } => write!(f, "exited ({c})"),
            Status::Exited { code: None } => f.write_str("exited"),
            Status::Missing => f.write_str("missing"),
        }
    }
}

/// One running (or ran) app on one platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    pub platform: Platform,
    /// APP as given to `run`.
    pub app: String,
    /// Image reference or path, and its digest.
    pub image: String,
    pub image_digest: String,
    /// Unix seconds.
    pub created: u64,
    pub ports: Vec<PortMapping>,
    pub status: Status,
    /// Driver-specific handle (container id, VMM pid, sockets, ...).
    pub handle: serde_json::Value,
}

impl Instance {
    pub fn age(&self) -> std::time::Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        std::time::Duration::from_secs(now.saturating_sub(self.created))
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The state directory: `$BAKEOFF_STATE_DIR`, else `$XDG_STATE_HOME/bakeoff`, else
/// `~/.local/state/bakeoff`.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn from_env() -> StateDir {
        if let Some(d) = std::env::var_os("BAKEOFF_STATE_DIR") {
            return StateDir::new(d);
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            return StateDir::new(PathBuf::from(d).join("bakeoff"));
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        StateDir::new(home.join(".local/state/bakeoff"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory where an instance's record and driver files live.
    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.root.join("instances").join(name)
    }

    /// Reserves `name`; fails if it is taken. The reservation is the directory itself.
    pub fn reserve(&self, name: &str) -> Result<PathBuf, StateError> {
        fs_err::create_dir_all(self.root.join("instances"))?;
        let dir = self.instance_dir(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::NameTaken(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Frees a reservation that never became an instance (a failed start).
    pub fn release(&self, name: &str) {
        let _ = fs_err::remove_dir_all(self.instance_dir(name));
    }

    /// Writes the record atomically (temp file + rename).
    pub fn save(&self, inst: &Instance) -> Result<(), StateError> {
        let dir = self.instance_dir(&inst.name);
        let tmp = dir.join("instance.json.tmp");
        fs_err::write(
            &tmp,
            serde_json::to_vec_pretty(inst).expect("instance serializes"),
        )?;
        fs_err::rename(&tmp, dir.join("instance.json"))?;
        Ok(())
    }

    pub fn load(&self, name: &str) -> Result<Instance, StateError> {
        let path = self.instance_dir(name).join("instance.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(name.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_str(&text).map_err(|e| StateError::Damaged {
            path,
            reason: e.to_string(),
        })
    }

    /// Every recorded instance, oldest first. Reservations without a record are skipped.
    pub fn list(&self) -> Result<Vec<Instance>, StateError> {
        let dir = self.root.join("instances");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for e in fs_err::read_dir(&dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            match self.load(&name) {
                Ok(i) => out.push(i),
                Err(StateError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let dir = self.instance_dir(name);
        if !dir.join("instance.json").exists() {
            return Err(StateError::NotFound(name.to_string()));
        }
        fs_err::remove_dir_all(dir)?;
        Ok(())
    }

    /// A fresh name like `hello-1`, `hello-2` that is not taken.
    pub fn unique_name(&self, base: &str) -> String {
        (1..)
            .map(|i| format!("{base}-{i}"))
            .find(|n| !self.instance_dir(n).exists())
            .expect("unbounded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str) -> Instance {
        Instance {
            name: name.into(),
            platform: Platform::Docker,
            app: "examples/hello".into(),
            image: "bakeoff/hello:abc".into(),
            image_digest: "sha256:00".into(),
            created: now_secs(),
            ports: vec![bakeoff_spec::parse_publish("8080:80").unwrap()],
            status: Status::Running,
            handle: serde_json::json!({"container_id": "x"}),
        }
    }

    #[test]
    fn names_are_unique_and_records_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        s.reserve("web").unwrap();
        assert_eq!(
            s.reserve("web").unwrap_err().to_string(),
            "an instance named `web` already exists; choose another --name or remove it with `bakeoff rm -f web`"
        );
        s.save(&inst("web")).unwrap();
        assert_eq!(StateDir::new(t.path()).load("web").unwrap(), inst("web"));
        assert_eq!(s.list().unwrap().len(), 1);
        assert_eq!(s.unique_name("web"), "web-1");
        s.remove("web").unwrap();
        assert_eq!(
            s.load("web").unwrap_err().to_string(),
            "no instance named `web` (see `bakeoff ps`)"
        );
        assert!(s.remove("web").is_err());
    }

    #[test]
    fn a_failed_start_releases_the_name() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        s.reserve("a").unwrap();
        assert!(
            s.list().unwrap().is_empty(),
            "a bare reservation is not an instance"
        );
        s.release("a");
        s.reserve("a").unwrap();
    }
}
