//! Detect + build once + check: what every verb needs before it can pack or launch.

use std::path::{Path, PathBuf};

use bakeoff_build::Artifact;
use bakeoff_detect::{BuildPlan, PortsFrom};
use bakeoff_driver::Driver;
use bakeoff_elf::{ElfInfo, Verdict};
use bakeoff_launch::Image;
use bakeoff_pack::{packager_for, PackContext};
use bakeoff_spec::{Platform, Target};

use crate::{Runtime, RuntimeError};

/// An app built once: its plan, its artifact, and which platforms can run it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub plan: BuildPlan,
    pub artifact: Artifact,
    /// True when the artifact came from the cache.
    pub cached: bool,
    /// Wall time of the build step, seconds.
    pub build_seconds: f64,
    /// The main executable, as inspected.
    pub elf: ElfInfo,
    /// One verdict per platform, in [`Platform::ALL`] order.
    pub verdicts: Vec<Verdict>,
    /// Things the user should know but that do not stop the build (one sentence each).
    pub warnings: Vec<String>,
    /// The container image, when APP was a registry reference: each platform then boots what
    /// was pushed for it ([`Runtime::image_for`]).
    pub pulled: Option<crate::registry::PulledImage>,
}

/// `[[files]]` sources outside the app's directory (e.g. `/etc/shadow`): allowed, but said.
pub fn files_warnings(plan: &BuildPlan) -> Vec<String> {
    let input = std::path::Path::new(&plan.input);
    let base = if input.is_dir() {
        input.to_path_buf()
    } else {
        input.parent().map(|p| p.to_path_buf()).unwrap_or_default()
    };
    let Ok(base) = std::fs::canonicalize(if base.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        &base
    }) else {
        return Vec::new();
    };
    plan.files
        .iter()
        .filter_map(|(src, dst)| {
            let real = std::fs::canonicalize(src).ok()?;
            (!real.starts_with(&base)).then(|| {
                format!(
                    "`[[files]]` copies {} into the image at {dst}, from outside the app directory {}",
                    real.display(),
                    base.display()
                )
            })
        })
        .collect()
}

/// The ports of a `--port` flag: they win, and the health probe moves to the first unless
/// bakeoff.toml's `[health]` named another of them.
pub fn declare_ports(plan: &mut BuildPlan, ports: &[u16]) {
    if ports.is_empty() {
        return;
    }
    if !plan.health.port.is_some_and(|p| ports.contains(&p)) {
        plan.health.port = Some(ports[0]);
    }
    // The PORT bakeoff set by convention follows (one the user set in bakeoff.toml stays).
    if plan.ports_from == PortsFrom::Convention {
        for (k, v) in plan.env.iter_mut() {
            if k == "PORT" && plan.ports.first().is_some_and(|p| p.to_string() == *v) {
                *v = ports[0].to_string();
            }
        }
    }
    plan.ports = ports.to_vec();
    plan.ports_from = PortsFrom::Declared;
}

/// How long the probe run that observes an app's ports may last.
pub const OBSERVE_BOUND: std::time::Duration = std::time::Duration::from_secs(3);

/// Fills the plan's (and the artifact's) ports from a probe run of the artifact.
pub fn observed(
    plan: &mut BuildPlan,
    artifact: &mut Artifact,
    bound: std::time::Duration,
) -> Result<(), RuntimeError> {
    match bakeoff_build::observe_ports(artifact, bound)? {
        bakeoff_build::Observation::Listening { ports } => {
            plan.health.port = plan.health.port.or(ports.first().copied());
            plan.ports = ports.clone();
            plan.ports_from = PortsFrom::Observed;
            artifact.manifest.ports = ports;
            artifact.manifest.health = plan.health.clone();
        }
        bakeoff_build::Observation::Nothing { reason } => {
            plan.ports_from = PortsFrom::Nothing { reason };
        }
    }
    Ok(())
}

impl Prepared {
    /// Fails with the check's reasons when `platform` cannot run this app.
    pub fn check(&self, platform: Platform) -> Result<(), RuntimeError> {
        match self
            .verdicts
            .iter()
            .find(|v| v.platform == platform && !v.runnable)
        {
            Some(v) => Err(RuntimeError::CannotRun {
                app: self.plan.name.clone(),
                platform,
                reasons: v.reasons.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The platforms the check allows, in [`Platform::ALL`] order.
    pub fn runnable(&self) -> Vec<Platform> {
        Platform::ALL
            .iter()
            .copied()
            .filter(|p| self.check(*p).is_ok())
            .collect()
    }
}

impl Runtime {
    /// Detects the app, builds it once (or takes it from the cache) and checks it against
    /// every platform.
    pub fn prepare(&self, app: &str) -> Result<Prepared, RuntimeError> {
        self.prepare_with_ports(app, &[])
    }

    /// [`Runtime::prepare`] with the ports of a `--port` flag, which win over bakeoff.toml and
    /// detection (and spare the probe run).
    pub fn prepare_with_ports(&self, app: &str, ports: &[u16]) -> Result<Prepared, RuntimeError> {
        let (input, pulled) = self.import(app)?;
        let mut plan = bakeoff_detect::detect(&input)?;
        // The user's words stay the input (`docker:IMAGE`), not the exported file's name.
        plan.input = app.to_string();
        declare_ports(&mut plan, ports);
        self.say(&format!("building {}", plan.name));
        let outcome = bakeoff_build::build(&plan, &self.cache, &|m| self.say(m))?;
        let mut artifact = outcome.artifact;
        if plan.ports_from == PortsFrom::Observe {
            self.say("observing the ports of a probe run (at most 3 s, no network)");
            observed(&mut plan, &mut artifact, OBSERVE_BOUND)?;
        }
        let m = &artifact.manifest;
        let binary = artifact.rootfs().join(m.binary.trim_start_matches('/'));
        let elf = bakeoff_elf::inspect(&binary).map_err(RuntimeError::Inspect)?;
        let mut verdicts = bakeoff_elf::check(&elf, m.source.origin());
        // A Debian package is rebuilt from its source package for Rumprun.
        if let Some(v) = bakeoff_pack::rumprun::deb_verdict(&artifact, &elf) {
            for slot in verdicts
                .iter_mut()
                .filter(|s| s.platform == Platform::Rumprun)
            {
                *slot = v.clone();
            }
        }
        if let Some(p) = &pulled {
            self.pushed_verdicts(p, &mut verdicts);
        }
        let warnings = files_warnings(&plan);
        Ok(Prepared {
            warnings,
            plan,
            artifact,
            cached: outcome.cached,
            build_seconds: outcome.seconds,
            elf,
            verdicts,
            pulled,
        })
    }

    /// Packs the artifact for `target` (cached beside the artifact).
    pub fn pack(
        &self,
        artifact: &Artifact,
        target: Target,
        kernel: Option<PathBuf>,
    ) -> Result<Image, RuntimeError> {
        let log = |m: &str| self.say(m);
        let ctx = PackContext {
            cache: &self.cache,
            kernel,
            log: &log,
        };
        self.say(&format!("packing the {target} image"));
        packager_for(target)
            .and_then(|p| p.pack(artifact, &ctx))
            .map_err(|source| RuntimeError::Pack { target, source })
    }

    /// The targets `build --target all` makes: the container and the microVM, and the
    /// unikernel where a Rumprun toolchain is installed.
    pub fn default_targets(&self) -> Vec<Target> {
        let mut all = vec![Target::Oci, Target::MicroVm];
        if bakeoff_pack::rumprun::find_toolchain(None, None).is_ok() {
            all.push(Target::Rumprun);
        }
        all
    }

    /// Whether `platform` can be used here for this app: the driver's probe, plus, for Rumprun,
    /// a toolchain (from the environment, PATH, or the app's bakeoff.toml). `Err` says why not.
    pub async fn available(&self, platform: Platform, plan: &BuildPlan) -> Result<(), String> {
        let driver = self.driver(platform);
        available_with(&*driver, platform, plan).await
    }
}

pub(crate) async fn available_with(
    driver: &dyn Driver,
    platform: Platform,
    plan: &BuildPlan,
) -> Result<(), String> {
    driver.available().await.map_err(|e| e.to_string())?;
    // A unikernel pulled from a registry needs no toolchain, only QEMU.
    let pulled =
        !Path::new(&plan.input).exists() && bakeoff_registry::Reference::parse(&plan.input).is_ok();
    if platform == Platform::Rumprun && !pulled {
        let app_dir = Path::new(&plan.input);
        let app_dir = app_dir.is_dir().then_some(app_dir);
        bakeoff_pack::rumprun::find_toolchain(plan.rumprun_toolchain.as_deref(), app_dir)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
