//! Services: one stable address (a [`Front`]) in front of a backend instance that can be
//! replaced live. `serve` runs the front and its supervisor in one process; `switch`, `stop`
//! and `ps` talk to it over a Unix socket in the service's directory (mode 0600 in a 0700
//! directory). Its record, `service.json`, lists every backend it owns before the backend
//! starts, so a front killed at any moment leaves nothing that `rm -f` cannot find.
//!
//! Layout: `<state>/services/<name>/{service.json, control.sock, service.log}`.

use std::future::Future;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bakeoff_front::{Backend, Front, Mode};
use bakeoff_spec::{HealthKind, Platform, PortMapping, Protocol};
use bakeoff_state::{now_secs, Instance};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};

use crate::placement::{
    self, Decision, Hysteresis, Observation, ObservedLatency, PlacementPolicy, Profile,
};
use crate::{run_options, Launch, Prepared, Readiness, Runtime, RuntimeError, Wait};

/// How often the supervisor looks at the backend.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Backend failures on one platform within [`FAILURE_WINDOW`] before the service moves on to
/// the next platform the check allows.
const FAILURES_BEFORE_MOVING: usize = 3;
const FAILURE_WINDOW: Duration = Duration::from_secs(120);
/// Restarts after a failure wait this long, doubled after each failure that follows, up to
/// [`RESTART_BACKOFF_MAX`]; a backend that serves resets it.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What `serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServeSpec {
    pub name: String,
    pub listen: SocketAddr,
    pub platform: Platform,
    /// Env, memory, CPUs, args for every backend (publish and name are the service's).
    pub flags: bakeoff_spec::RunOptions,
    pub kernel: Option<PathBuf>,
    /// How long a switch waits for the old backend's open requests/connections.
    pub drain: Duration,
    /// How long a new backend may take to pass its health check.
    pub ready_timeout: Duration,
    /// Also print events on stderr (a front in the foreground).
    pub echo: bool,
    /// `--on auto`: the platform follows the load (then `platform` is only a fallback).
    pub auto: Option<AutoSpec>,
    /// `--metrics [IP:]PORT`: the front's figures in the Prometheus text format.
    pub metrics: Option<SocketAddr>,
    /// HTTP front: how long a backend may take to send a response head (then `504`).
    pub response_timeout: Duration,
    /// HTTP front: how long a request body may stay silent (then `408`).
    pub body_timeout: Duration,
}

/// How an `--on auto` service chooses its platform.
#[derive(Debug, Clone)]
pub struct AutoSpec {
    pub policy: PlacementPolicy,
    pub slo: bakeoff_bench::Slo,
    pub profile: Profile,
    /// The observation window.
    pub window: Duration,
    pub hysteresis: Hysteresis,
}

/// What the record says about an auto service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoRecord {
    pub policy: PlacementPolicy,
    pub slo: String,
    /// A manual `switch` pins the service; `switch --to auto` resumes.
    pub pinned: bool,
    /// The last placement decision, in words.
    pub last_decision: Option<String>,
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    /// The front is starting its first backend.
    Starting,
    Serving,
    /// Stopped by `bakeoff stop`; backends removed.
    Stopped,
    /// The front process is gone without stopping (killed); its backends may still run.
    Down,
}

impl std::fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceStatus::Starting => "starting",
            ServiceStatus::Serving => "serving",
            ServiceStatus::Stopped => "stopped",
            ServiceStatus::Down => "down",
        })
    }
}

/// `service.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    /// APP as given to `serve`.
    pub app: String,
    pub listen: SocketAddr,
    pub mode: Mode,
    /// The platform new traffic goes to.
    pub platform: Platform,
    /// The backend instance new traffic goes to.
    pub backend: Option<String>,
    /// Every instance the service owns (the current one, one being started or drained).
    pub backends: Vec<String>,
    /// The process running the front.
    pub pid: u32,
    /// Its start time (clock ticks after boot, field 22 of /proc/PID/stat): a reused PID is
    /// another process. Absent in records of older bakeoffs.
    #[serde(default)]
    pub pid_start: Option<u64>,
    pub status: ServiceStatus,
    pub created: u64,
    /// Next backend number.
    pub generation: u64,
    #[serde(default)]
    pub auto: Option<AutoRecord>,
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// What a switch did, with timings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchReport {
    pub from: Platform,
    pub to: Platform,
    pub old_backend: String,
    pub new_backend: String,
    /// From the switch request until the new backend passed its health check.
    pub ready_after: Duration,
    /// How long the old backend took to drain, and what was in flight / cut.
    pub drained_after: Duration,
    pub in_flight: u64,
    pub cut: u64,
    /// From the request until the old backend was removed.
    pub total: Duration,
    /// Said for TCP apps: their in-memory state did not move.
    pub note: Option<String>,
}

/// Control requests (one JSON line each).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Switch {
        to: Platform,
    },
    /// `switch --to auto`: placement decides again.
    Resume,
    Stop,
    Stats,
    /// The front's figures over the last window.
    Window,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Switched(SwitchReport),
    Stopped,
    Stats(Box<bakeoff_front::Stats>),
    Window(bakeoff_front::Window),
    Resumed,
    Refused(String),
}

/// A service as `ps` shows it.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub record: ServiceRecord,
    /// `record.status`, corrected to `Down` when the front process is gone.
    pub status: ServiceStatus,
}

fn owner_only_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// The start time of a live (not zombie) process, in clock ticks after boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); a zombie has exited.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// When a process started, in seconds since the epoch (whole seconds; from its start time and
/// the boot time in /proc/stat).
fn process_started_at(start_ticks: u64) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|hz| *hz > 0)?;
    Some(btime + start_ticks / hz)
}

/// Whether the front of `rec` still runs: its PID with the start time recorded (a reused PID
/// is another process, which must be neither reported as the front nor signalled). A record
/// of an older bakeoff, without a start time, needs a bakeoff process on the PID that started
/// before the record was made (the front starts, then writes it).
fn front_alive(rec: &ServiceRecord) -> bool {
    let Some(started) = process_start(rec.pid) else {
        return false;
    };
    match rec.pid_start {
        Some(recorded) => started == recorded,
        None => {
            process_started_at(started).is_some_and(|at| at <= rec.created + 1)
                && std::fs::read(format!("/proc/{}/cmdline", rec.pid))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("bakeoff"))
        }
    }
}

impl Runtime {
    fn services_root(&self) -> PathBuf {
        self.state.root().join("services")
    }

    pub fn service_dir(&self, name: &str) -> PathBuf {
        self.services_root().join(name)
    }

    /// The service's event log.
    pub fn service_log(&self, name: &str) -> PathBuf {
        self.service_dir(name).join("service.log")
    }

    fn control_socket(&self, name: &str) -> PathBuf {
        self.service_dir(name).join("control.sock")
    }

    /// A service's name: its directory exists (with a record, or reserved by a `serve` that
    /// was killed before it wrote one).
    pub fn is_service(&self, name: &str) -> bool {
        bakeoff_spec::validate_name(name).is_ok() && self.service_dir(name).is_dir()
    }

    /// Reserves a service name (its directory, created atomically, owner-only), for this
    /// process, named in the directory's owner file as an instance reservation is. A reservation whose
    /// process died before writing the record held nothing else (no backend starts before the
    /// record), so it is taken over here and pruned by `services`.
    pub fn reserve_service(&self, name: &str) -> Result<PathBuf, RuntimeError> {
        bakeoff_spec::validate_name(name)?;
        owner_only_dir(&self.services_root())?;
        let dir = self.service_dir(name);
        if self.state.instance_dir(name).exists() {
            return Err(RuntimeError::Invalid(format!(
                "an instance named `{name}` already exists; choose another --name"
            )));
        }
        if self.abandoned_reservation(name) {
            self.release_service(name);
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                self.adopt_reservation(name)?;
                Ok(dir)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::Invalid(format!(
                    "a service named `{name}` already exists; choose another --name or remove it with `bakeoff rm -f {name}`"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes this process the holder of a reservation (a detached front takes it over from
    /// the `serve -d` that made it).
    pub fn adopt_reservation(&self, name: &str) -> Result<(), RuntimeError> {
        let dir = self.service_dir(name);
        if !dir.is_dir() {
            return Err(RuntimeError::Invalid(format!(
                "the reservation of service `{name}` is gone (its `serve -d` was killed)"
            )));
        }
        bakeoff_state::claim_reservation(&dir)?;
        Ok(())
    }

    /// A service directory without a record whose reserving process is gone.
    pub fn abandoned_reservation(&self, name: &str) -> bool {
        bakeoff_state::stale_reservation_of(&self.service_dir(name), "service.json")
    }

    /// Removes the reservations of `serve`s killed before they wrote a record (they hold
    /// nothing: no backend starts before the record), so that `ps` lists every service
    /// directory there is. Returns their names.
    pub fn forget_abandoned_services(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.services_root()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                bakeoff_spec::validate_name(name).is_ok()
                    && self.abandoned_reservation(name)
                    && std::fs::remove_dir_all(self.service_dir(name)).is_ok()
            })
            .collect()
    }

    /// Frees a reservation whose service never started.
    pub fn release_service(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.service_dir(name));
    }

    pub fn load_service(&self, name: &str) -> Result<ServiceRecord, RuntimeError> {
        // A path-like name (`../../x`) must not reach a record or a socket outside the state dir.
        bakeoff_spec::validate_name(name)?;
        let path = self.service_dir(name).join("service.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RuntimeError::Invalid(format!("no service named `{name}` (see `bakeoff ps`)"))
            } else {
                e.into()
            }
        })?;
        serde_json::from_str(&text).map_err(|e| {
            RuntimeError::Invalid(format!("the record {} is damaged: {e}", path.display()))
        })
    }

    fn save_service(&self, rec: &ServiceRecord) -> Result<(), RuntimeError> {
        let dir = self.service_dir(&rec.name);
        let tmp = dir.join("service.json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(rec).expect("record serializes"))?;
        drop(f);
        fs_err::rename(&tmp, dir.join("service.json"))?;
        Ok(())
    }

    /// Every service, with its front's liveness.
    pub fn services(&self) -> Result<Vec<ServiceView>, RuntimeError> {
        let root = self.services_root();
        if !root.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for e in fs_err::read_dir(&root)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            // Without a record: starting (it comes in a moment), or abandoned before it had
            // one (see `forget_abandoned_services`).
            let Ok(record) = self.load_service(&name) else {
                continue;
            };
            let status = match record.status {
                ServiceStatus::Serving | ServiceStatus::Starting if !front_alive(&record) => {
                    ServiceStatus::Down
                }
                s => s,
            };
            out.push(ServiceView { record, status });
        }
        out.sort_by(|a, b| {
            (a.record.created, &a.record.name).cmp(&(b.record.created, &b.record.name))
        });
        Ok(out)
    }

    /// Sends a request to a running service's front.
    pub async fn control(
        &self,
        name: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, RuntimeError> {
        let rec = self.load_service(name)?;
        if !front_alive(&rec) {
            return Err(RuntimeError::Invalid(format!(
                "service `{name}` is down (its front process is gone); remove it with `bakeoff rm -f {name}`"
            )));
        }
        bakeoff_front::control::call(&self.control_socket(name), request, timeout)
            .await
            .map_err(RuntimeError::from)
    }

    /// `switch NAME --to PLATFORM`.
    pub async fn switch(&self, name: &str, to: Platform) -> Result<SwitchReport, RuntimeError> {
        match self
            .control(name, &Request::Switch { to }, Duration::from_secs(900))
            .await?
        {
            Response::Switched(r) => Ok(r),
            Response::Refused(why) => Err(RuntimeError::Invalid(why)),
            other => Err(RuntimeError::Invalid(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// `switch NAME --to auto`: an `--on auto` service pinned by hand follows the load again.
    pub async fn resume(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .control(name, &Request::Resume, Duration::from_secs(10))
            .await?
        {
            Response::Resumed => Ok(()),
            Response::Refused(why) => Err(RuntimeError::Invalid(why)),
            other => Err(RuntimeError::Invalid(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// What a serving service's front saw over its last observation window.
    pub async fn window(&self, name: &str) -> Option<bakeoff_front::Window> {
        match self
            .control(name, &Request::Window, Duration::from_secs(1))
            .await
        {
            Ok(Response::Window(w)) => Some(w),
            _ => None,
        }
    }

    /// Stops a service: its front (if alive) and every backend; the record stays, stopped.
    pub async fn stop_service(&self, name: &str) -> Result<(), RuntimeError> {
        let rec = self.load_service(name)?;
        if front_alive(&rec) {
            match self
                .control(name, &Request::Stop, Duration::from_secs(120))
                .await
            {
                Ok(_) => {
                    // The front exits right after answering.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while front_alive(&rec) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    return Ok(());
                }
                Err(e) => tracing::warn!("the front of {name} did not stop cleanly: {e}"),
            }
        }
        self.remove_backends(&rec).await?;
        let mut rec = self.load_service(name)?;
        rec.status = ServiceStatus::Stopped;
        rec.backends.clear();
        rec.backend = None;
        self.save_service(&rec)
    }

    /// Removes a service and everything it started; a serving one only with `force`.
    pub async fn remove_service(&self, name: &str, force: bool) -> Result<(), RuntimeError> {
        bakeoff_spec::validate_name(name)?;
        let dir = self.service_dir(name);
        if dir.is_dir() && !dir.join("service.json").exists() {
            // Reserved by a `serve` that never wrote its record: it started nothing yet.
            fs_err::remove_dir_all(&dir)?;
            return Ok(());
        }
        let rec = self.load_service(name)?;
        let serving = front_alive(&rec) && rec.status != ServiceStatus::Stopped;
        if !force {
            let mut running = Vec::new();
            for b in &rec.backends {
                if let Ok(inst) = self.state.load(b) {
                    if self.status(&inst).await.is_ok_and(|s| s.is_running()) {
                        running.push(b.clone());
                    }
                }
            }
            if serving || !running.is_empty() {
                let what = if serving {
                    "is serving".to_string()
                } else {
                    format!("is down but its backend {} still runs", running.join(", "))
                };
                return Err(RuntimeError::Invalid(format!(
                    "service `{name}` {what}; stop it first with `bakeoff stop {name}` or use `bakeoff rm -f {name}`"
                )));
            }
        }
        if serving {
            self.stop_service(name).await?;
            if front_alive(&rec) {
                // It did not stop: end it (a process bakeoff started, by its pid).
                // SAFETY: kill(2) on a pid we recorded; no memory is touched.
                unsafe { libc::kill(rec.pid as i32, libc::SIGKILL) };
            }
        }
        let rec = self.load_service(name)?;
        self.remove_backends(&rec).await?;
        fs_err::remove_dir_all(self.service_dir(name))?;
        Ok(())
    }

    async fn remove_backends(&self, rec: &ServiceRecord) -> Result<(), RuntimeError> {
        for b in &rec.backends {
            match self.remove(b, true).await {
                Ok(()) => {}
                Err(RuntimeError::State(bakeoff_state::StateError::NotFound(_))) => {
                    // Never recorded (killed between reserving and starting): free the name.
                    self.state.release(b);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Runs a service until it is stopped (`bakeoff stop`) or `shutdown` fires: binds the
    /// stable address, starts the first backend, serves the control socket and watches the
    /// backend. The name must have been reserved with [`Runtime::reserve_service`].
    pub async fn serve(
        &self,
        prepared: Prepared,
        spec: ServeSpec,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        // The front holds a descriptor per client; a shell's low soft limit is raised to the
        // hard one, and the front sheds clients past its budget (see bakeoff_front::Options).
        let limit = bakeoff_front::raise_fd_limit();
        tracing::debug!(limit, "open-file limit of the front");
        let started = self.serve_start(prepared, spec).await;
        let sup = match started {
            Ok(s) => s,
            Err((e, name)) => {
                self.release_service(&name);
                return Err(e);
            }
        };
        let control = {
            let sup = sup.clone();
            let listener =
                bakeoff_front::control::ControlListener::bind(self.control_socket(&sup.spec.name))
                    .await
                    .map_err(RuntimeError::from)?;
            tokio::spawn(listener.serve(move |req: Request| {
                let sup = sup.clone();
                async move { sup.handle(req).await }
            }))
        };
        let watch = {
            let sup = sup.clone();
            tokio::spawn(async move { sup.watch().await })
        };
        let place = {
            let sup = sup.clone();
            tokio::spawn(async move { sup.place().await })
        };
        let metrics = match sup.spec.metrics {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| RuntimeError::Invalid(format!("--metrics {addr}: {e}")));
                match listener {
                    Ok(l) => {
                        let sup = sup.clone();
                        Some(tokio::spawn(async move {
                            crate::metrics::serve(l, sup.front.clone(), sup.metrics_labels()).await
                        }))
                    }
                    Err(e) => {
                        sup.event(&e.to_string());
                        None
                    }
                }
            }
            None => None,
        };
        tokio::select! {
            _ = sup.stopped.notified() => {}
            _ = shutdown => {
                sup.event("interrupted; stopping");
                sup.stop().await;
            }
        }
        watch.abort();
        place.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        control.abort();
        let _ = std::fs::remove_file(self.control_socket(&sup.spec.name));
        Ok(())
    }

    async fn serve_start(
        &self,
        prepared: Prepared,
        spec: ServeSpec,
    ) -> Result<Arc<Supervisor>, (RuntimeError, String)> {
        let name = spec.name.clone();
        let fail = |e: RuntimeError| (e, name.clone());
        if spec.auto.is_none() {
            prepared.check(spec.platform).map_err(fail)?;
        }
        let mut initial_reason = None;
        let mode = match prepared.plan.health.kind {
            HealthKind::Http => Mode::Http,
            HealthKind::Tcp => Mode::Tcp,
        };
        let guest_port = prepared
            .plan
            .health
            .port
            .or(prepared.plan.ports.first().copied())
            .ok_or_else(|| {
                fail(RuntimeError::Invalid(
                    "the app declares no port to serve; set `ports` in bakeoff.toml".into(),
                ))
            })?;
        let options = bakeoff_front::Options {
            response_timeout: spec.response_timeout,
            body_idle_timeout: spec.body_timeout,
            ..bakeoff_front::Options::default()
        };
        let front = Front::bind_with(spec.listen, mode, options)
            .await
            .map_err(|e| fail(e.into()))?;
        // An auto service may use every platform the check allows and this host has.
        let mut allowed = Vec::new();
        let mut platform = spec.platform;
        if let Some(auto) = &spec.auto {
            for p in prepared.runnable() {
                if self.available(p, &prepared.plan).await.is_ok() {
                    allowed.push(p);
                }
            }
            let first = placement::choose(&auto.profile, &allowed, 0.0, auto.policy, &auto.slo)
                .ok_or_else(|| {
                    fail(RuntimeError::Invalid(format!(
                        "no platform of the profile can run {} here (the profile has {}; this host and the check allow {})",
                        prepared.plan.name,
                        auto.profile.platforms.iter().map(|p| p.platform.to_string()).collect::<Vec<_>>().join(", "),
                        allowed.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
                    )))
                })?;
            platform = first.platform;
            initial_reason = Some(first.reason);
        }
        let record = ServiceRecord {
            name: spec.name.clone(),
            app: prepared.plan.input.clone(),
            listen: front.local_addr(),
            mode,
            platform,
            backend: None,
            backends: Vec::new(),
            pid: std::process::id(),
            pid_start: process_start(std::process::id()),
            status: ServiceStatus::Starting,
            created: now_secs(),
            generation: 1,
            auto: spec.auto.as_ref().map(|a| AutoRecord {
                policy: a.policy,
                slo: a.slo.to_string(),
                pinned: false,
                last_decision: None,
            }),
            metrics: spec.metrics,
        };
        self.save_service(&record).map_err(fail)?;
        let sup = Arc::new(Supervisor {
            rt: self.clone(),
            prepared,
            spec,
            guest_port,
            front,
            state: Mutex::new(Current {
                record,
                backend: None,
                failures: Vec::new(),
                since: Instant::now(),
                moves: Vec::new(),
                switches: 0,
                restart_not_before: None,
                restart_backoff: RESTART_BACKOFF_MIN,
                unchecked_since: None,
            }),
            stopped: Notify::new(),
            allowed,
        });
        sup.event(&format!(
            "serving {} on {} ({} front)",
            sup.prepared.plan.name,
            sup.front.local_addr(),
            mode
        ));
        if let Some(why) = &initial_reason {
            sup.event(&format!(
                "placement ({}): starting on {platform}: {why}",
                sup.auto_policy()
            ));
        }
        let first = {
            let mut cur = sup.state.lock().await;
            sup.start_backend(&mut cur, platform).await
        };
        match first {
            Ok((inst, ready)) => {
                let mut cur = sup.state.lock().await;
                sup.front.set_backend(Some(backend_of(&inst)));
                sup.event(&format!(
                    "backend {} ({}) ready after {:.2} s",
                    inst.name,
                    inst.platform,
                    ready.as_secs_f64()
                ));
                cur.record.backend = Some(inst.name.clone());
                cur.record.status = ServiceStatus::Serving;
                cur.backend = Some(inst);
                let rec = cur.record.clone();
                drop(cur);
                self.save_service(&rec).map_err(fail)?;
                Ok(sup)
            }
            Err(e) => {
                sup.front.shutdown().await;
                let rec = sup.state.lock().await.record.clone();
                let _ = self.remove_backends(&rec).await;
                Err(fail(e))
            }
        }
    }
}

fn backend_of(inst: &Instance) -> Backend {
    let p = inst.ports[0];
    let ip = if p.host_ip.is_unspecified() {
        Ipv4Addr::LOCALHOST
    } else {
        p.host_ip
    };
    Backend::new(inst.name.clone(), SocketAddr::from((ip, p.host_port)))
}

struct Current {
    record: ServiceRecord,
    backend: Option<Instance>,
    /// When backends failed on the current platform (recent ones only).
    failures: Vec<Instant>,
    /// Since when the service is on its current platform.
    since: Instant,
    /// When it moved (placement or by hand), for the moves-per-hour cap.
    moves: Vec<Instant>,
    /// Switches since the front started.
    switches: u64,
    /// No restart before this (back-off after failures).
    restart_not_before: Option<Instant>,
    /// The wait before the next restart after a failure.
    restart_backoff: Duration,
    /// The backend's status could not be checked since then (not counted as its end).
    unchecked_since: Option<Instant>,
}

/// The serving process's view of its service.
struct Supervisor {
    rt: Runtime,
    prepared: Prepared,
    spec: ServeSpec,
    guest_port: u16,
    front: Front,
    state: Mutex<Current>,
    stopped: Notify,
    /// The platforms placement may choose (the check allows them and this host has them).
    allowed: Vec<Platform>,
}

impl Supervisor {
    /// One line in the service log (and on stderr when the front runs in the foreground).
    fn event(&self, msg: &str) {
        let line = format!("{} {msg}\n", timestamp());
        if self.spec.echo {
            eprint!("{line}");
        }
        let path = self.rt.service_log(&self.spec.name);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn save(&self, cur: &Current) {
        if let Err(e) = self.rt.save_service(&cur.record) {
            self.event(&format!("cannot write the service record: {e}"));
        }
    }

    /// Launches a backend on `platform` (recorded in the service before it starts) and waits
    /// until it passes its health check. On failure nothing of it is left.
    async fn start_backend(
        &self,
        cur: &mut Current,
        platform: Platform,
    ) -> Result<(Instance, Duration), RuntimeError> {
        let t0 = Instant::now();
        let name = format!("{}.{}.{}", self.spec.name, platform, cur.record.generation);
        cur.record.generation += 1;
        cur.record.backends.push(name.clone());
        self.save(cur);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())?
            .port();
        let mut flags = self.spec.flags.clone();
        flags.name = Some(name.clone());
        flags.detach = true;
        flags.publish = vec![PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: port,
            guest_port: self.guest_port,
            protocol: Protocol::Tcp,
        }];
        let launch = Launch {
            platform,
            target: None,
            opts: run_options(&self.prepared.plan, flags),
            kernel: self.spec.kernel.clone(),
            wait: Wait::Ready(self.spec.ready_timeout),
        };
        let outcome = match self.rt.launch(&self.prepared, launch).await {
            Ok(l) => match l.readiness {
                Some(Readiness::Ready(_)) => Ok(l.instance),
                Some(Readiness::NotReady(why)) => {
                    let _ = self.rt.remove(&name, true).await;
                    Err(RuntimeError::Invalid(format!(
                        "{name} did not pass its health check within {} s ({why})",
                        self.spec.ready_timeout.as_secs()
                    )))
                }
                None => Ok(l.instance),
            },
            Err(e) => {
                let _ = self.rt.remove(&name, true).await;
                Err(e)
            }
        };
        match outcome {
            Ok(inst) => Ok((inst, t0.elapsed())),
            Err(e) => {
                if self.forget_if_removed(cur, &name).await {
                    self.save(cur);
                }
                Err(e)
            }
        }
    }

    async fn handle(self: &Arc<Self>, req: Request) -> Response {
        match req {
            Request::Stats => Response::Stats(Box::new(self.front.stats())),
            Request::Window => Response::Window(self.front.window(self.window())),
            Request::Resume => {
                let mut cur = self.state.lock().await;
                match cur.record.auto.as_mut() {
                    Some(a) => {
                        a.pinned = false;
                        self.save(&cur);
                        drop(cur);
                        self.event("placement resumed (switch --to auto)");
                        Response::Resumed
                    }
                    None => Response::Refused(format!(
                        "service `{}` was not started with --on auto",
                        self.spec.name
                    )),
                }
            }
            Request::Stop => {
                self.stop().await;
                Response::Stopped
            }
            Request::Switch { to } => match self.switch(to, true).await {
                Ok(r) => Response::Switched(r),
                Err(e) => {
                    let why = crate::bench::error_chain(&e);
                    self.event(&format!("switch to {to} refused: {why}"));
                    Response::Refused(why)
                }
            },
        }
    }

    /// New backend → ready → flip → drain old → remove old.
    async fn switch(&self, to: Platform, by_hand: bool) -> Result<SwitchReport, RuntimeError> {
        let t0 = Instant::now();
        let mut cur = self.state.lock().await;
        if by_hand {
            if let Some(a) = cur.record.auto.as_mut() {
                if !a.pinned {
                    a.pinned = true;
                    self.event(&format!(
                        "placement paused: pinned to {to} by hand (`switch --to auto` resumes)"
                    ));
                }
            }
        }
        if cur.record.status != ServiceStatus::Serving {
            return Err(RuntimeError::Invalid(format!(
                "service `{}` is {}",
                self.spec.name, cur.record.status
            )));
        }
        let from = cur.record.platform;
        if to == from && cur.backend.is_some() {
            return Err(RuntimeError::Invalid(format!(
                "service `{}` already runs on {to}",
                self.spec.name
            )));
        }
        self.prepared.check(to)?;
        self.rt
            .available(to, &self.prepared.plan)
            .await
            .map_err(|why| RuntimeError::Invalid(format!("{to} is unavailable here: {why}")))?;
        self.event(&format!("switch {from} → {to}: starting a new backend"));
        let (new, _) =
            self.start_backend(&mut cur, to)
                .await
                .map_err(|e| RuntimeError::SwitchFailed {
                    from,
                    to,
                    source: Box::new(e),
                })?;
        let ready_after = t0.elapsed();
        self.front.set_backend(Some(backend_of(&new)));
        self.event(&format!(
            "new backend {} ready after {:.2} s; switched",
            new.name,
            ready_after.as_secs_f64()
        ));
        let old = cur.backend.replace(new.clone());
        cur.record.platform = to;
        cur.record.backend = Some(new.name.clone());
        cur.failures.clear();
        cur.since = Instant::now();
        cur.moves.push(Instant::now());
        cur.switches += 1;
        self.save(&cur);
        let old_name = old.as_ref().map(|o| o.name.clone()).unwrap_or_default();
        let (drained_after, in_flight, cut) = match &old {
            Some(o) => {
                let d = self
                    .front
                    .drain(&o.name, self.spec.drain)
                    .await
                    .map_err(|e| RuntimeError::Invalid(format!("draining {}: {e}", o.name)))?;
                (d.took, d.in_flight_at_start, d.cut)
            }
            None => (Duration::ZERO, 0, 0),
        };
        if let Some(o) = &old {
            self.event(&format!(
                "old backend {} drained after {:.2} s ({in_flight} in flight, {cut} cut)",
                o.name,
                drained_after.as_secs_f64()
            ));
            if let Err(e) = self.rt.remove(&o.name, true).await {
                self.event(&format!("removing {}: {e}", o.name));
            }
            cur.record.backends.retain(|b| b != &o.name);
            self.save(&cur);
            self.event(&format!("removed {}", o.name));
        }
        let note = (self.front.mode() == Mode::Tcp).then(|| {
            "the new backend started empty: in-memory state (a cache's contents, sessions) did not move".to_string()
        });
        Ok(SwitchReport {
            from,
            to,
            old_backend: old_name,
            new_backend: new.name,
            ready_after,
            drained_after,
            in_flight,
            cut,
            total: t0.elapsed(),
            note,
        })
    }

    fn metrics_labels(self: &Arc<Self>) -> Arc<dyn Fn() -> crate::metrics::Labels + Send + Sync> {
        let sup = self.clone();
        Arc::new(move || {
            let cur = sup.state.try_lock();
            let (platform, backend, moves) = match cur {
                Ok(c) => (
                    c.record.platform.to_string(),
                    c.record.backend.clone().unwrap_or_default(),
                    c.switches,
                ),
                Err(_) => (String::new(), String::new(), 0),
            };
            crate::metrics::Labels {
                service: sup.spec.name.clone(),
                platform,
                backend,
                switches: moves,
                window: sup.window(),
            }
        })
    }

    fn window(&self) -> Duration {
        self.spec
            .auto
            .as_ref()
            .map(|a| a.window)
            .unwrap_or(Duration::from_secs(5))
    }

    fn auto_policy(&self) -> String {
        self.spec
            .auto
            .as_ref()
            .map(|a| a.policy.to_string())
            .unwrap_or_default()
    }

    /// `--on auto`: every window, what the front saw goes into [`placement::decide`]; a move
    /// goes through the same switch as `bakeoff switch`. Moves and held-back moves are logged
    /// with their figures.
    async fn place(self: Arc<Self>) {
        let Some(auto) = self.spec.auto.clone() else {
            return;
        };
        let mut history: Vec<Observation> = Vec::new();
        let mut last_held: Option<Platform> = None;
        loop {
            tokio::time::sleep(auto.window).await;
            let w = self.front.window(auto.window);
            history.push(Observation {
                rate: w.rate,
                latency: w.latency.map(|l| ObservedLatency {
                    p50: l.p50,
                    p90: l.p90,
                    p99: l.p99,
                    max: l.max,
                }),
                errors: w.front_errors,
            });
            if history.len() > 64 {
                history.remove(0);
            }
            let (current, on_for, moves, pinned, serving) = {
                let mut cur = self.state.lock().await;
                cur.moves
                    .retain(|t| t.elapsed() < Duration::from_secs(3600));
                (
                    cur.record.platform,
                    cur.since.elapsed(),
                    cur.moves.len(),
                    cur.record.auto.as_ref().is_some_and(|a| a.pinned),
                    cur.record.status == ServiceStatus::Serving && cur.backend.is_some(),
                )
            };
            if pinned || !serving {
                continue;
            }
            let d = placement::decide(
                &auto.profile,
                &self.allowed,
                &history,
                current,
                on_for,
                moves,
                auto.policy,
                &auto.slo,
                &auto.hysteresis,
                auto.window,
            );
            match d {
                Decision::Stay { .. } => last_held = None,
                Decision::Held { to, reason } => {
                    if last_held != Some(to) {
                        self.event(&format!("placement ({}): {reason}", auto.policy));
                        self.note_decision(&reason).await;
                    }
                    last_held = Some(to);
                }
                Decision::Move { to, reason } => {
                    last_held = None;
                    self.event(&format!("placement ({}): {reason}", auto.policy));
                    self.note_decision(&reason).await;
                    let t0 = Instant::now();
                    match self.switch(to, false).await {
                        Ok(r) => self.event(&format!(
                            "placement: moved to {to} in {:.2} s (new backend ready after {:.2} s)",
                            t0.elapsed().as_secs_f64(),
                            r.ready_after.as_secs_f64()
                        )),
                        Err(e) => self.event(&format!(
                            "placement: the move to {to} failed: {}",
                            crate::bench::error_chain(&e)
                        )),
                    }
                    // Windows before the move describe the old platform.
                    history.clear();
                }
            }
        }
    }

    async fn note_decision(&self, reason: &str) {
        let mut cur = self.state.lock().await;
        if let Some(a) = cur.record.auto.as_mut() {
            a.last_decision = Some(reason.to_string());
            self.save(&cur);
        }
    }

    /// Stops the front and removes every backend; the record stays, stopped.
    async fn stop(&self) {
        let mut cur = self.state.lock().await;
        self.front.set_backend(None);
        self.front.shutdown().await;
        let names = cur.record.backends.clone();
        for b in &names {
            if !self.forget_if_removed(&mut cur, b).await {
                self.event(&format!(
                    "{b} could not be removed; it stays in the record for `bakeoff rm -f {}`",
                    self.spec.name
                ));
            }
        }
        cur.record.backend = None;
        cur.backend = None;
        cur.record.status = ServiceStatus::Stopped;
        self.save(&cur);
        self.event("stopped");
        self.stopped.notify_one();
    }

    /// Failover: notices a dead backend within [`WATCH_EVERY`], takes it out of the front (so
    /// clients get 503 at once, not a hang), and starts another — on the same platform first,
    /// on the next platform the check allows after repeated failures.
    async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let mut cur = self.state.lock().await;
            if cur.record.status != ServiceStatus::Serving {
                continue;
            }
            self.remove_leftovers(&mut cur).await;
            let Some(inst) = cur.backend.clone() else {
                if cur.restart_not_before.is_none_or(|t| Instant::now() >= t) {
                    self.restart(&mut cur).await;
                }
                continue;
            };
            let status = match self.rt.status(&inst).await {
                Ok(s) if s.is_running() => {
                    if let Some(since) = cur.unchecked_since.take() {
                        self.event(&format!(
                            "backend {} can be checked again (it could not be for {:.1} s)",
                            inst.name,
                            since.elapsed().as_secs_f64()
                        ));
                    }
                    continue;
                }
                Ok(s) => s,
                Err(e) => {
                    // Could not check (no descriptor left, the engine busy or restarting): not
                    // the backend's end. It keeps serving; said once per spell.
                    if cur.unchecked_since.is_none() {
                        cur.unchecked_since = Some(Instant::now());
                        self.event(&format!(
                            "cannot check backend {} ({}); it keeps serving: {}",
                            inst.name,
                            inst.platform,
                            crate::bench::error_chain(&e)
                        ));
                    }
                    continue;
                }
            };
            cur.unchecked_since = None;
            self.front.set_backend(None);
            self.event(&format!(
                "backend {} ({}) ended: {status}; answering 503 until another is ready",
                inst.name, inst.platform
            ));
            cur.record.backend = None;
            cur.backend = None;
            self.forget_if_removed(&mut cur, &inst.name).await;
            cur.failures.push(Instant::now());
            self.save(&cur);
            self.restart(&mut cur).await;
        }
    }

    /// Removes the backend `name` and, once it is gone, drops it from the record; true then.
    /// One that could not be removed stays listed, so that nothing the service started is
    /// ever lost: the watch tries again and `rm -f` finds it.
    async fn forget_if_removed(&self, cur: &mut Current, name: &str) -> bool {
        let removed = match self.rt.remove(name, true).await {
            Ok(()) => true,
            Err(RuntimeError::State(bakeoff_state::StateError::NotFound(_))) => {
                // Never recorded (the launch failed before): only the reservation to free.
                self.rt.state.release(name);
                true
            }
            Err(e) => {
                tracing::debug!("removing {name}: {e}");
                false
            }
        };
        if removed {
            cur.record.backends.retain(|b| b != name);
        }
        removed
    }

    /// Backends in the record that are not the current one (a removal that failed before).
    async fn remove_leftovers(&self, cur: &mut Current) {
        let current = cur.backend.as_ref().map(|b| b.name.clone());
        let leftovers: Vec<String> = cur
            .record
            .backends
            .iter()
            .filter(|b| Some(*b) != current.as_ref())
            .cloned()
            .collect();
        let mut changed = false;
        for b in leftovers {
            if self.forget_if_removed(cur, &b).await {
                self.event(&format!("removed {b}, left over from a failed removal"));
                changed = true;
            }
        }
        if changed {
            self.save(cur);
        }
    }

    async fn restart(&self, cur: &mut Current) {
        cur.failures.retain(|t| t.elapsed() < FAILURE_WINDOW);
        let mut platform = cur.record.platform;
        if cur.failures.len() >= FAILURES_BEFORE_MOVING {
            if let Some(next) = self.next_platform(platform).await {
                self.event(&format!(
                    "{} failures on {platform} within {} s; moving to {next}",
                    cur.failures.len(),
                    FAILURE_WINDOW.as_secs()
                ));
                platform = next;
                cur.failures.clear();
            }
        }
        self.event(&format!("restarting on {platform}"));
        match self.start_backend(cur, platform).await {
            Ok((inst, took)) => {
                cur.restart_not_before = None;
                cur.restart_backoff = RESTART_BACKOFF_MIN;
                self.front.set_backend(Some(backend_of(&inst)));
                self.event(&format!(
                    "backend {} ({platform}) ready after {:.2} s; serving again",
                    inst.name,
                    took.as_secs_f64()
                ));
                cur.record.platform = platform;
                cur.record.backend = Some(inst.name.clone());
                cur.backend = Some(inst);
                self.save(cur);
            }
            Err(e) => {
                cur.failures.push(Instant::now());
                cur.record.platform = platform;
                self.save(cur);
                let wait = cur.restart_backoff;
                cur.restart_not_before = Some(Instant::now() + wait);
                cur.restart_backoff = (wait * 2).min(RESTART_BACKOFF_MAX);
                self.event(&format!(
                    "restart on {platform} failed: {}; next try in {:.1} s",
                    crate::bench::error_chain(&e),
                    wait.as_secs_f64()
                ));
            }
        }
    }

    /// The next platform after `from` (in [`Platform::ALL`] order, wrapping) that the check
    /// allows and this host has.
    async fn next_platform(&self, from: Platform) -> Option<Platform> {
        let all = Platform::ALL;
        let at = all.iter().position(|p| *p == from).unwrap_or(0);
        for i in 1..all.len() {
            let p = all[(at + i) % all.len()];
            if self.prepared.check(p).is_ok()
                && self.rt.available(p, &self.prepared.plan).await.is_ok()
            {
                return Some(p);
            }
        }
        None
    }
}

/// Wall-clock time as `HH:MM:SS.mmm` UTC, for log lines.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = now.as_secs();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        now.subsec_millis()
    )
}
