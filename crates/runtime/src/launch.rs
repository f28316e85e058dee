//! From a prepared app to a running instance: one sequence, everything released on failure.

use std::path::PathBuf;
use std::time::Duration;

use bakeoff_detect::BuildPlan;
use bakeoff_driver::{check_ports_free, StartRequest};
use bakeoff_launch::Image;
use bakeoff_spec::{Platform, RunOptions, Target};
use bakeoff_state::{now_secs, Instance, Status};

use crate::prepare::available_with;
use crate::{Prepared, Runtime, RuntimeError};

/// The one place run options are made: what the user said (`run`, `serve`, `export` flags)
/// over the app's own defaults (memory and CPUs from its plan where the flags leave them unset).
pub fn run_options(plan: &BuildPlan, flags: RunOptions) -> RunOptions {
    RunOptions {
        memory: flags.memory.or(plan.memory),
        cpus: flags.cpus.or(plan.cpus),
        ..flags
    }
}

/// The image kind to boot on `platform`: its default, or `asked` if the platform boots it.
pub fn pick_target(platform: Platform, asked: Option<Target>) -> Result<Target, RuntimeError> {
    match asked {
        None => Ok(platform.target()),
        Some(t) if platform.targets().contains(&t) => Ok(t),
        Some(t) => Err(RuntimeError::WrongTarget {
            platform,
            asked: t,
            wanted: platform
                .targets()
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
        }),
    }
}

/// Whether [`Runtime::launch`] returns at once or once the app is ready.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wait {
    /// Return as soon as the engine has started it (a foreground run follows its output).
    Started,
    /// Return once the app answers its health probe (or, without a published port, once it
    /// has kept running a moment). A probe that never passes within the limit is a warning
    /// in the returned [`Readiness`](crate::Readiness), not an error; the app ending is an error.
    Ready(Duration),
}

/// One launch: where, with what, and how long to wait.
#[derive(Debug, Clone)]
pub struct Launch {
    pub platform: Platform,
    /// The image kind (`--target`), where the platform boots several.
    pub target: Option<Target>,
    /// `opts.name` None → a fresh `<app>-N`.
    pub opts: RunOptions,
    /// `--kernel` for VM images.
    pub kernel: Option<PathBuf>,
    pub wait: Wait,
}

/// A launched instance and how its readiness went.
#[derive(Debug, Clone)]
pub struct Launched {
    pub instance: Instance,
    pub image: Image,
    pub readiness: Option<crate::Readiness>,
}

impl Runtime {
    /// Check → availability → ports → pack → reserve the name → start → persist → wait.
    /// On any failure before the app runs, nothing is left: no name, no record, no instance.
    pub async fn launch(
        &self,
        prepared: &Prepared,
        launch: Launch,
    ) -> Result<Launched, RuntimeError> {
        if let Some(n) = &launch.opts.name {
            bakeoff_spec::validate_name(n)?;
        }
        let target = pick_target(launch.platform, launch.target)?;
        // The check's reason matters more than a missing engine.
        prepared.check(launch.platform)?;
        let driver = self.driver(launch.platform);
        available_with(&*driver, launch.platform, &prepared.plan)
            .await
            .map_err(RuntimeError::Unavailable)?;
        check_ports_free(&launch.opts.publish)?;
        let image = self.image_for(prepared, target, launch.kernel.clone())?;
        let instance = self
            .start(&prepared.plan, &image, launch.platform, launch.opts)
            .await?;
        let readiness = match launch.wait {
            Wait::Started => None,
            Wait::Ready(limit) => {
                let r = self.wait_ready(&instance, &prepared.plan, limit).await?;
                if matches!(r, crate::Readiness::Ready(_)) {
                    driver.app_ready(&instance).await;
                }
                Some(r)
            }
        };
        Ok(Launched {
            instance,
            image,
            readiness,
        })
    }

    /// Reserve the name → start → persist. The low step under [`Runtime::launch`], for callers
    /// that checked and packed once already (bench starts many instances of one image).
    pub async fn start(
        &self,
        plan: &BuildPlan,
        image: &Image,
        platform: Platform,
        mut opts: RunOptions,
    ) -> Result<Instance, RuntimeError> {
        let name = match &opts.name {
            Some(n) => n.clone(),
            None => self.state.unique_name(&plan.name),
        };
        opts.name = Some(name.clone());
        let dir = self.state.reserve(&name)?;
        let driver = self.driver(platform);
        let req = StartRequest {
            name: &name,
            image,
            opts: &opts,
            instance_dir: &dir,
        };
        let record = |status, handle| Instance {
            name: name.clone(),
            platform,
            app: plan.input.clone(),
            image: image
                .reference
                .clone()
                .unwrap_or_else(|| image.dir.display().to_string()),
            image_digest: image.digest.clone(),
            created: now_secs(),
            ports: opts.publish.clone(),
            status,
            handle,
        };
        // Intent before effect: the record that finds the engine's object is on disk before
        // the engine is asked for it, so an interrupted start leaves something `ps` lists
        // and `rm -f` removes.
        let intent = driver.intent(&req).map(|h| record(Status::Starting, h));
        if let Some(i) = &intent {
            if let Err(e) = self.state.save(i) {
                self.state.release(&name);
                return Err(e.into());
            }
        }
        let handle = match driver.start(req).await {
            Ok(h) => h,
            Err(e) => {
                if let Some(i) = &intent {
                    let _ = driver.remove(i).await;
                }
                self.state.release(&name);
                return Err(e.into());
            }
        };
        let inst = record(Status::Running, handle);
        if let Err(e) = self.state.save(&inst) {
            let _ = driver.remove(&inst).await;
            self.state.release(&name);
            return Err(e.into());
        }
        Ok(inst)
    }
}
