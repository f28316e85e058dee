//! Instances by name: list, logs, stop, remove, and following a foreground run.

use std::future::Future;
use std::time::Duration;

use bakeoff_driver::LogSink;
use bakeoff_state::{Instance, Status};

use crate::ready::wait_settled;
use crate::{Runtime, RuntimeError};

pub use bakeoff_state::Entry;

/// How a followed instance ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub status: Status,
    /// A specific sentence about why it ended early, where the driver can say.
    pub diagnosis: Option<String>,
    /// True when `interrupt` fired and the instance was stopped for it.
    pub interrupted: bool,
}

impl Runtime {
    /// Every recorded instance, oldest first, with its status as the engine sees it now
    /// (saved back when it changed).
    pub async fn list(&self) -> Result<Vec<Entry>, RuntimeError> {
        let mut rows = Vec::new();
        for entry in self.state.entries()? {
            let mut inst = match entry {
                Entry::Instance(i) => i,
                damaged => {
                    rows.push(damaged);
                    continue;
                }
            };
            match self.driver(inst.platform).status(&inst).await {
                Ok(s) if s != inst.status => {
                    inst.status = s;
                    if let Err(e) = self.state.save(&inst) {
                        if !self.state.instance_dir(&inst.name).exists() {
                            // Removed while we looked (a service replacing its backend).
                            continue;
                        }
                        tracing::warn!("cannot record the status of {}: {e}", inst.name);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot ask {} about {}: {e}", inst.platform, inst.name),
            }
            rows.push(Entry::Instance(inst));
        }
        Ok(rows)
    }

    pub fn load(&self, name: &str) -> Result<Instance, RuntimeError> {
        Ok(self.state.load(name)?)
    }

    /// The instance's status as the engine sees it now.
    pub async fn status(&self, inst: &Instance) -> Result<Status, RuntimeError> {
        Ok(self.driver(inst.platform).status(inst).await?)
    }

    /// Writes the instance's output to `out`; with `follow`, until it ends.
    pub async fn logs(
        &self,
        name: &str,
        follow: bool,
        out: LogSink<'_>,
    ) -> Result<(), RuntimeError> {
        let inst = self.state.load(name)?;
        self.driver(inst.platform)
            .logs(&inst, follow, out)
            .await
            .map_err(|source| RuntimeError::Step {
                what: "reading the output of",
                name: name.to_string(),
                source,
            })
    }

    /// Asks the app to stop, kills it after `grace`, records how it ended.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<Instance, RuntimeError> {
        let mut inst = self.state.load(name)?;
        let driver = self.driver(inst.platform);
        driver
            .stop(&inst, grace)
            .await
            .map_err(|source| RuntimeError::Step {
                what: "stopping",
                name: name.to_string(),
                source,
            })?;
        inst.status = driver
            .status(&inst)
            .await
            .unwrap_or(Status::Exited { code: None });
        self.state.save(&inst)?;
        Ok(inst)
    }

    /// Removes the instance and its record; a running one only with `force`.
    pub async fn remove(&self, name: &str, force: bool) -> Result<(), RuntimeError> {
        let inst = match self.state.load(name) {
            Err(
                bakeoff_state::StateError::Damaged { .. }
                | bakeoff_state::StateError::Unrecorded(_),
            ) if force => {
                // A record this version cannot read: nothing to ask an engine about.
                self.state.remove(name)?;
                return Ok(());
            }
            r => r?,
        };
        let driver = self.driver(inst.platform);
        let status = driver.status(&inst).await.unwrap_or(inst.status);
        if status.is_running() && !force {
            return Err(RuntimeError::StillRunning(name.to_string()));
        }
        driver
            .remove(&inst)
            .await
            .map_err(|source| RuntimeError::Step {
                what: "removing",
                name: name.to_string(),
                source,
            })?;
        self.state.remove(name)?;
        Ok(())
    }

    /// Streams the output of a foreground instance until it ends or `interrupt` fires (then
    /// stops it), and records its final status.
    pub async fn follow(
        &self,
        inst: &Instance,
        out: LogSink<'_>,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Ended, RuntimeError> {
        let driver = self.driver(inst.platform);
        let interrupted = tokio::select! {
            r = driver.logs(inst, true, out) => { r?; false }
            _ = interrupt => {
                self.say(&format!("stopping {}", inst.name));
                driver.stop(inst, Duration::from_secs(10)).await?;
                true
            }
        };
        let status = wait_settled(&*driver, inst).await?;
        let mut inst = inst.clone();
        inst.status = status;
        self.state.save(&inst)?;
        Ok(Ended {
            status,
            diagnosis: driver.diagnose(&inst).await,
            interrupted,
        })
    }
}
