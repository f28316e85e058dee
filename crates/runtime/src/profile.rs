//! Load profiles: the sweeps of a bench report, kept per artifact in the cache so that
//! `serve --on auto` finds the latest one for the app it serves.

use std::path::{Path, PathBuf};

use bakeoff_bench::Report;

use crate::placement::{PlatformProfile, Profile};
use crate::{Prepared, Runtime, RuntimeError};

impl Profile {
    /// The swept platforms of a report. Fails when it holds no sweep.
    pub fn from_report(report: &Report) -> Option<Profile> {
        let platforms: Vec<PlatformProfile> = report
            .platforms
            .iter()
            .filter(|p| p.is_measured())
            .filter_map(|p| {
                Some(PlatformProfile {
                    platform: p.platform,
                    sweep: p.sweep.clone()?,
                    memory_bytes: p.memory.as_ref().map(|m| m.host_bytes.median as u64),
                    emulated: p.is_emulated(),
                })
            })
            .collect();
        if platforms.is_empty() {
            return None;
        }
        Some(Profile {
            artifact_id: report.app.artifact_id.clone().unwrap_or_default(),
            platforms,
        })
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl Runtime {
    fn profiles_dir(&self) -> PathBuf {
        self.cache.root().join("profiles")
    }

    /// Keeps a report with a sweep as the latest profile of its artifact.
    pub fn save_profile(&self, report: &Report) -> Result<Option<PathBuf>, RuntimeError> {
        let Some(id) = &report.app.artifact_id else {
            return Ok(None);
        };
        if Profile::from_report(report).is_none() {
            return Ok(None);
        }
        let dir = self.profiles_dir();
        fs_err::create_dir_all(&dir)?;
        let path = dir.join(format!("{id}.json"));
        let tmp = dir.join(format!(".{id}.json.tmp"));
        fs_err::write(
            &tmp,
            serde_json::to_vec_pretty(report).expect("a report serializes"),
        )?;
        fs_err::rename(&tmp, &path)?;
        Ok(Some(path))
    }

    /// The profile for `prepared`: from `file` (a bench report.json), or the latest sweep of
    /// this same artifact. Refuses a profile of another build.
    pub fn load_profile(
        &self,
        prepared: &Prepared,
        file: Option<&Path>,
    ) -> Result<Profile, RuntimeError> {
        let id = &prepared.artifact.manifest.id;
        let name = &prepared.plan.name;
        let how = format!(
            "make one with `bakeoff bench {} --on docker,qemu --sweep 50,200,1000,5000`",
            prepared.plan.input
        );
        let path = match file {
            Some(f) => f.to_path_buf(),
            None => {
                let p = self.profiles_dir().join(format!("{id}.json"));
                if !p.is_file() {
                    return Err(RuntimeError::Invalid(format!(
                        "there is no load profile of {name} (artifact {}) yet; {how}, or give --profile FILE",
                        short(id)
                    )));
                }
                p
            }
        };
        let text =
            std::fs::read_to_string(&path).map_err(|source| RuntimeError::ProfileUnreadable {
                path: path.clone(),
                source,
            })?;
        let report: Report =
            serde_json::from_str(&text).map_err(|source| RuntimeError::ProfileDamaged {
                path: path.clone(),
                source,
            })?;
        let profile = Profile::from_report(&report).ok_or_else(|| {
            RuntimeError::Invalid(format!("the report {} has no sweep; {how}", path.display()))
        })?;
        if &profile.artifact_id != id {
            return Err(RuntimeError::Invalid(format!(
                "the profile {} was measured on artifact {} but {name} is now artifact {}; {how}",
                path.display(),
                if profile.artifact_id.is_empty() {
                    "(unknown)"
                } else {
                    short(&profile.artifact_id)
                },
                short(id)
            )));
        }
        Ok(profile)
    }
}
