//! bakeoff's orchestration: the one path by which an app becomes a running instance, used by
//! `run`, `bench`, `serve` and `export` alike.
//!
//! ```text
//! prepare(app)            detect → build once (cached) → compatibility verdicts   = Prepared
//! launch(&Prepared, ..)   check → availability → ports → pack → reserve name → start
//!                         → persist → wait until ready; everything released on failure
//! stop / remove / logs / list                                                 (by name)
//! ```
//!
//! Nothing here prints: progress goes to the [`Runtime`]'s progress callback and errors carry
//! their causes ([`RuntimeError`]), for the caller to show.

mod bench;
mod error;
mod export;
mod import;
mod launch;
mod manage;
mod metrics;
pub mod placement;
mod prepare;
mod profile;
mod prune;
mod ready;
mod registry;
mod service;

use std::sync::Arc;

use bakeoff_build::Cache;
use bakeoff_driver::{driver_with, Driver, DriverOptions};
use bakeoff_spec::Platform;
use bakeoff_state::StateDir;

pub use bench::{BenchConfig, BenchOutcome};
pub use error::RuntimeError;
pub use export::{placement_from_report, ExportFormat, K8sExport, ReportPlacement};
pub use launch::Launched;
pub use launch::{pick_target, run_options, Launch, Wait};
pub use manage::{Ended, Entry};
pub use prepare::{declare_ports, Prepared};
pub use prune::Stray;
pub use ready::{probe_for, Readiness};
pub use registry::{artifact_tag, rumprun_artifact, PulledImage, Pushed};
pub use service::{
    AutoRecord, AutoSpec, Request, Response, ServeSpec, ServiceRecord, ServiceStatus, ServiceView,
    SwitchReport,
};

/// Makes the driver for a platform; tests swap in a fake one.
pub type DriverFactory = Arc<dyn Fn(Platform, &DriverOptions) -> Box<dyn Driver> + Send + Sync>;

/// Where progress messages go (a spinner, a log line, nowhere).
pub type ProgressFn = Arc<dyn Fn(&str) + Send + Sync>;

/// The orchestrator: a state directory (instance records), a build cache, the drivers and
/// their options.
#[derive(Clone)]
pub struct Runtime {
    state: StateDir,
    cache: Cache,
    options: DriverOptions,
    drivers: DriverFactory,
    progress: ProgressFn,
}

impl Runtime {
    /// State and cache from `$BAKEOFF_STATE_DIR` / `$BAKEOFF_CACHE_DIR` (or their defaults),
    /// the real drivers, no progress output.
    pub fn from_env() -> Runtime {
        let cache = Cache::from_env();
        let mut options = DriverOptions::default();
        options.qemu.cache_dir = Some(cache.root().to_path_buf());
        Runtime {
            state: StateDir::from_env(),
            cache,
            options,
            drivers: Arc::new(|p, o| driver_with(p, o.clone())),
            progress: Arc::new(|_| {}),
        }
    }

    /// The user's per-run driver choices (`--accel`, `--machine`); the probe cache stays ours.
    pub fn with_options(mut self, mut options: DriverOptions) -> Runtime {
        if options.qemu.cache_dir.is_none() {
            options.qemu.cache_dir = self.options.qemu.cache_dir.clone();
        }
        self.options = options;
        self
    }

    pub fn with_progress(mut self, progress: impl Fn(&str) + Send + Sync + 'static) -> Runtime {
        self.progress = Arc::new(progress);
        self
    }

    pub fn with_cache(mut self, cache: Cache) -> Runtime {
        self.options.qemu.cache_dir = Some(cache.root().to_path_buf());
        self.cache = cache;
        self
    }

    pub fn with_state(mut self, state: StateDir) -> Runtime {
        self.state = state;
        self
    }

    /// Replaces the drivers (for tests of the orchestration without engines).
    pub fn with_drivers(mut self, drivers: DriverFactory) -> Runtime {
        self.drivers = drivers;
        self
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The driver for `platform`, with this runtime's options.
    pub fn driver(&self, platform: Platform) -> Box<dyn Driver> {
        (self.drivers)(platform, &self.options)
    }

    pub(crate) fn say(&self, msg: &str) {
        (self.progress)(msg)
    }
}
