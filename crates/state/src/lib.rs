//! Instances on disk: `<state>/instances/<name>/instance.json`, plus whatever files the driver
//! keeps for it (console log, QMP socket, ...) in the same directory. A name is reserved by
//! creating its directory, which is atomic, so two `run --name x` can never both win.

mod handle;

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use fs_err::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bakeoff_spec::{Platform, PortMapping};
use serde::{Deserialize, Serialize};

pub use handle::{DockerHandle, FirecrackerHandle, Handle, QemuHandle, RumprunHandle, XenHandle};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("an instance named `{0}` already exists; choose another --name or remove it with `bakeoff rm -f {0}`")]
    NameTaken(String),
    #[error("no instance named `{0}` (see `bakeoff ps`)")]
    NotFound(String),
    /// A reservation without a record whose reserving process is gone (or, without an owner
    /// file, older than [`UNRECORDED_AFTER`]): a start killed between reserving the name and
    /// writing its record.
    #[error("`{0}` has no record (a start was interrupted before writing it); remove it with `bakeoff rm -f {0}`")]
    Unrecorded(String),
    /// A name that is not an instance name (`../x`, `/abs`): refused before any path is made.
    #[error(transparent)]
    Name(#[from] bakeoff_spec::SpecError),
    /// File errors come from `fs-err`, so they name their path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the record {} is damaged: {source}", path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum Status {
    /// The record is written and the engine has been (or is being) asked to start it; an
    /// interrupted start stays in this state, where `ps` shows it and `rm -f` removes it.
    Starting,
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
            Status::Starting => f.write_str("starting"),
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
#[serde(try_from = "RawInstance", into = "RawInstance")]
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
    /// The driver's handle (container id, VMM pid, sockets, ...).
    pub handle: Handle,
}

/// `instance.json` as stored: the handle is the driver's plain JSON object, read according to
/// `platform`.
#[derive(Serialize, Deserialize)]
struct RawInstance {
    name: String,
    platform: Platform,
    app: String,
    image: String,
    image_digest: String,
    created: u64,
    ports: Vec<PortMapping>,
    status: Status,
    handle: serde_json::Value,
}

impl TryFrom<RawInstance> for Instance {
    type Error = String;
    fn try_from(r: RawInstance) -> Result<Instance, String> {
        let handle = Handle::from_json(r.platform, r.handle)
            .map_err(|e| format!("its {} handle cannot be read ({e})", r.platform))?;
        Ok(Instance {
            name: r.name,
            platform: r.platform,
            app: r.app,
            image: r.image,
            image_digest: r.image_digest,
            created: r.created,
            ports: r.ports,
            status: r.status,
            handle,
        })
    }
}

impl From<Instance> for RawInstance {
    fn from(i: Instance) -> RawInstance {
        RawInstance {
            handle: i.handle.to_json(),
            name: i.name,
            platform: i.platform,
            app: i.app,
            image: i.image,
            image_digest: i.image_digest,
            created: i.created,
            ports: i.ports,
            status: i.status,
        }
    }
}

/// One entry of the state directory: a record that reads, or one that does not (written by an
/// incompatible version, or damaged), which `remove` still removes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // most entries are instances; boxing them buys nothing
pub enum Entry {
    Instance(Instance),
    Damaged {
        name: String,
        path: PathBuf,
        reason: String,
    },
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

/// Only for a reservation without an owner file (a start killed between making the directory
/// and writing the file, or one made by an older bakeoff): how old it must be before it counts
/// as left by an interrupted start. Every other reservation is judged by its owner.
pub const UNRECORDED_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// The file in a reservation naming the process that made it: `PID START`, START being the
/// process's start time in clock ticks after boot (field 22 of /proc/PID/stat), so a reused PID
/// is not mistaken for the owner.
const OWNER_FILE: &str = "reserved-by";

/// `PID START` of a process, from /proc.
fn process_identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); a zombie has ended.
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some(format!("{pid} {}", fields.get(19)?))
}

/// Makes this process the owner of the reservation `dir` (a detached `serve` hands its
/// reservation to the front it starts).
pub fn claim_reservation(dir: &Path) -> std::io::Result<()> {
    if let Some(me) = process_identity(std::process::id()) {
        write_private(&dir.join(OWNER_FILE), me.as_bytes())?;
    }
    Ok(())
}

/// True when `dir` is a reservation without a record whose start cannot still be under way:
/// the process named in its owner file is gone, or (no owner file) it is older than
/// [`UNRECORDED_AFTER`].
fn stale_reservation(dir: &Path) -> bool {
    stale_reservation_of(dir, "instance.json")
}

/// [`stale_reservation`] for a reservation whose record is the file `record` (a service's
/// `service.json`).
pub fn stale_reservation_of(dir: &Path, record: &str) -> bool {
    if !dir.is_dir() || dir.join(record).exists() {
        return false;
    }
    match std::fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(owner) => {
            let pid = owner.split_whitespace().next().and_then(|p| p.parse().ok());
            pid.and_then(process_identity).as_deref() != Some(owner.trim())
        }
        Err(_) => fs_err::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > UNRECORDED_AFTER),
    }
}

/// Creates `dir` (and its parents) and makes it 0700: records, consoles and sockets are the
/// user's own.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs_err::create_dir_all(dir)?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to a new file readable and writable by its owner only (0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
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
        bakeoff_spec::validate_name(name)?;
        create_private_dir(&self.root)?;
        create_private_dir(&self.root.join("instances"))?;
        let dir = self.instance_dir(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                claim_reservation(&dir)?;
                Ok(dir)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::NameTaken(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Frees a reservation that never became an instance (a failed start).
    pub fn release(&self, name: &str) {
        if bakeoff_spec::validate_name(name).is_err() {
            return;
        }
        let _ = fs_err::remove_dir_all(self.instance_dir(name));
    }

    /// Writes the record atomically (temp file + rename).
    /// The record is readable by its owner only (it names images, ports and the VMM's argv).
    pub fn save(&self, inst: &Instance) -> Result<(), StateError> {
        bakeoff_spec::validate_name(&inst.name)?;
        let dir = self.instance_dir(&inst.name);
        let tmp = dir.join("instance.json.tmp");
        write_private(
            &tmp,
            &serde_json::to_vec_pretty(inst).expect("instance serializes"),
        )?;
        fs_err::rename(&tmp, dir.join("instance.json"))?;
        Ok(())
    }

    pub fn load(&self, name: &str) -> Result<Instance, StateError> {
        bakeoff_spec::validate_name(name)?;
        let path = self.instance_dir(name).join("instance.json");
        let text = match fs_err::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(if stale_reservation(&self.instance_dir(name)) {
                    StateError::Unrecorded(name.to_string())
                } else {
                    StateError::NotFound(name.to_string())
                });
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_str(&text).map_err(|source| StateError::Damaged { path, source })
    }

    /// Every record, good ones oldest first, then the damaged ones by name. Reservations
    /// without a record are skipped.
    pub fn entries(&self) -> Result<Vec<Entry>, StateError> {
        let dir = self.root.join("instances");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut good = Vec::new();
        let mut damaged = Vec::new();
        for e in fs_err::read_dir(&dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            match self.load(&name) {
                Ok(i) => good.push(i),
                Err(StateError::NotFound(_)) => {}
                Err(StateError::Damaged { path, source }) => damaged.push(Entry::Damaged {
                    name,
                    path,
                    reason: source.to_string(),
                }),
                Err(e) => damaged.push(Entry::Damaged {
                    path: self.instance_dir(&name).join("instance.json"),
                    name,
                    reason: e.to_string(),
                }),
            }
        }
        good.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        damaged.sort_by(|a, b| match (a, b) {
            (Entry::Damaged { name: x, .. }, Entry::Damaged { name: y, .. }) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
        Ok(good
            .into_iter()
            .map(Entry::Instance)
            .chain(damaged)
            .collect())
    }

    /// Every record that reads, oldest first; damaged records are left out (see [`entries`]).
    ///
    /// [`entries`]: StateDir::entries
    pub fn list(&self) -> Result<Vec<Instance>, StateError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|e| match e {
                Entry::Instance(i) => Some(i),
                Entry::Damaged { .. } => None,
            })
            .collect())
    }

    /// Removes a record and its directory, whether the record reads or is damaged.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        bakeoff_spec::validate_name(name)?;
        let dir = self.instance_dir(name);
        if !dir.join("instance.json").exists() && !stale_reservation(&dir) {
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
            handle: Handle::Docker(DockerHandle {
                container_id: "x".into(),
                container_name: format!("bakeoff-{name}"),
                image: "bakeoff/hello:abc".into(),
            }),
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

    /// A path-like name never reaches the file system: every method refuses it with the name
    /// rule, so no verb can touch anything outside the state dir.
    #[test]
    fn path_like_names_are_refused_everywhere() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path().join("state"));
        // A victim beside the state dir that `rm -f ../victim` used to delete.
        let victim = t.path().join("victim");
        fs_err::create_dir_all(&victim).unwrap();
        fs_err::write(victim.join("instance.json"), "{}").unwrap();
        s.reserve("ok").unwrap();
        for bad in ["../victim", "../../victim", "/abs", "a/b", ".", "..", ""] {
            for e in [
                s.remove(bad).unwrap_err(),
                s.load(bad).unwrap_err(),
                s.reserve(bad).unwrap_err(),
            ] {
                assert!(
                    matches!(e, StateError::Name(_)) && e.to_string().starts_with("invalid name"),
                    "{bad}: {e}"
                );
            }
            s.release(bad);
            let mut i = inst("x");
            i.name = bad.into();
            assert!(matches!(s.save(&i), Err(StateError::Name(_))));
        }
        assert!(victim.join("instance.json").exists());
    }

    /// A start killed between reserving the name and writing the record left a directory
    /// that `ps` did not list and `rm -f` could not remove: once old, it is listed and removed.
    #[test]
    fn an_old_reservation_without_a_record_is_listed_and_removable() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        let dir = s.reserve("fresh").unwrap();
        assert!(
            s.entries().unwrap().is_empty(),
            "a start under way is not listed"
        );
        assert!(matches!(s.remove("fresh"), Err(StateError::NotFound(_))));
        // No owner file (killed between mkdir and writing it): judged by its age.
        fs_err::remove_file(dir.join(OWNER_FILE)).unwrap();
        assert!(s.entries().unwrap().is_empty(), "young: maybe under way");
        let old = std::time::SystemTime::now() - UNRECORDED_AFTER * 2;
        fs_err::File::open(&dir).unwrap().set_modified(old).unwrap();
        match &s.entries().unwrap()[..] {
            [Entry::Damaged { name, reason, .. }] => {
                assert_eq!(name, "fresh");
                assert!(reason.contains("a start was interrupted"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(s.load("fresh"), Err(StateError::Unrecorded(_))));
        s.remove("fresh").unwrap();
        assert!(!dir.exists());
    }

    /// The owner file decides at once: a reservation whose process is alive (however old) is a
    /// start under way; one whose process has ended is listed and removable right away.
    #[test]
    fn a_reservation_is_stale_exactly_when_its_owner_is_gone() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        let dir = s.reserve("mine").unwrap();
        let owner = fs_err::read_to_string(dir.join(OWNER_FILE)).unwrap();
        assert!(
            owner.starts_with(&format!("{} ", std::process::id())),
            "{owner}"
        );
        let old = std::time::SystemTime::now() - UNRECORDED_AFTER * 10;
        fs_err::File::open(&dir).unwrap().set_modified(old).unwrap();
        assert!(s.entries().unwrap().is_empty(), "alive owner: under way");
        assert!(matches!(s.load("mine"), Err(StateError::NotFound(_))));

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let identity = process_identity(pid);
        child.wait().unwrap();
        let dead = s.reserve("theirs").unwrap();
        let gone = identity.unwrap_or_else(|| format!("{pid} 1"));
        fs_err::write(dead.join(OWNER_FILE), &gone).unwrap();
        assert!(matches!(s.load("theirs"), Err(StateError::Unrecorded(_))));
        // A reused PID with another start time is not the owner either.
        let me = process_identity(std::process::id()).unwrap();
        let pid_only = me.split_whitespace().next().unwrap();
        fs_err::write(dead.join(OWNER_FILE), format!("{pid_only} 1")).unwrap();
        assert!(matches!(s.load("theirs"), Err(StateError::Unrecorded(_))));
        s.remove("theirs").unwrap();
        assert!(!dead.exists());
    }

    #[test]
    fn state_dir_and_records_are_private() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path().join("state"));
        let dir = s.reserve("web").unwrap();
        s.save(&inst("web")).unwrap();
        let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.root()), 0o700);
        assert_eq!(mode(&s.root().join("instances")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("instance.json")), 0o600);
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

    /// `instance.json` exactly as the version before typed handles wrote it (handle = the
    /// driver's untagged JSON object), for Docker and QEMU; written back unchanged.
    #[test]
    fn records_of_the_previous_version_are_read() {
        let docker = r#"{
  "name": "web",
  "platform": "docker",
  "app": "examples/hello",
  "image": "bakeoff/hello:3f2a",
  "image_digest": "sha256:9c1e",
  "created": 1767000000,
  "ports": [{"host_ip": "127.0.0.1", "host_port": 8080, "guest_port": 8080, "protocol": "tcp"}],
  "status": {"state": "running"},
  "handle": {"container_id": "4d5e6f", "container_name": "bakeoff-web", "image": "bakeoff/hello:3f2a"}
}"#;
        let qemu = r#"{
  "name": "vm",
  "platform": "qemu",
  "app": "examples/hello",
  "image": "/cache/images/microvm/abc",
  "image_digest": "sha256:77",
  "created": 1767000001,
  "ports": [],
  "status": {"state": "exited", "code": 0},
  "handle": {"pid": 4242, "machine": "microvm", "accel": "tcg", "memory_mib": 128,
    "console": "/state/instances/vm/console.log", "qmp": "/state/instances/vm/qmp.sock",
    "argv": ["-M", "microvm,pit=off,pic=off", "-accel", "tcg,tb-size=64"],
    "accel_reason": "KVM hangs here"}
}"#;
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        for (name, text) in [("web", docker), ("vm", qemu)] {
            let dir = s.reserve(name).unwrap();
            fs_err::write(dir.join("instance.json"), text).unwrap();
        }
        let web = s.load("web").unwrap();
        let h = web.handle.docker().unwrap();
        assert_eq!(
            (h.container_id.as_str(), h.container_name.as_str()),
            ("4d5e6f", "bakeoff-web")
        );
        assert_eq!(web.handle.accel(), None);
        let vm = s.load("vm").unwrap();
        assert_eq!(vm.status, Status::Exited { code: Some(0) });
        assert_eq!(vm.handle.accel(), Some(bakeoff_launch::qemu::Accel::Tcg));
        assert_eq!(vm.handle.memory_mib(), Some(128));
        assert_eq!(vm.handle.vmm_argv().unwrap()[0], "-M");
        assert_eq!(vm.handle.qemu().unwrap().pid, 4242);
        // Saved again, the record has the same shape.
        for (inst, text) in [(web, docker), (vm, qemu)] {
            s.save(&inst).unwrap();
            let again: serde_json::Value = serde_json::from_str(
                &fs_err::read_to_string(s.instance_dir(&inst.name).join("instance.json")).unwrap(),
            )
            .unwrap();
            let before: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(again, before);
        }
    }

    #[test]
    fn a_damaged_record_is_listed_apart_and_can_be_removed() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path());
        s.reserve("good").unwrap();
        s.save(&inst("good")).unwrap();
        let dir = s.reserve("old").unwrap();
        // A QEMU record whose handle lacks what the driver needs.
        let mut bad = serde_json::to_value(inst("old")).unwrap();
        bad["platform"] = "qemu".into();
        fs_err::write(dir.join("instance.json"), bad.to_string()).unwrap();
        let entries = s.entries().unwrap();
        assert!(matches!(&entries[0], Entry::Instance(i) if i.name == "good"));
        match &entries[1] {
            Entry::Damaged { name, reason, .. } => {
                assert_eq!(name, "old");
                assert!(
                    reason.contains("its qemu handle cannot be read"),
                    "{reason}"
                );
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(s.list().unwrap().len(), 1);
        let e = s.load("old").unwrap_err().to_string();
        assert!(
            e.starts_with("the record ") && e.contains("is damaged: "),
            "{e}"
        );
        s.remove("old").unwrap();
        assert!(!dir.exists());
        assert_eq!(s.entries().unwrap().len(), 1);
    }
}
