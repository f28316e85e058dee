//! `bakeoff prune`: what interrupted or crashed runs left behind that no record accounts for,
//! found and removed. Only this state dir's and this cache's objects are considered: a
//! container must carry this state dir's label, a VMM process must name this state dir's
//! instance directory on its command line.
//!
//! Strays:
//! - a Docker container labelled for this state dir whose instance has no record (and no start
//!   under way);
//! - a VMM process (QEMU, Firecracker) whose instance directory has no record;
//! - a reservation whose start was interrupted before it wrote a record (its process is gone);
//! - a service whose front process is gone (removed with every backend it started), or a
//!   service name reserved by a `serve` killed before it wrote its record (its process is gone;
//!   `ps` forgets these too);
//! - build scratch `tmp/work-<pid>-*` of a build that no longer runs, kernel unpack
//!   directories `kernels/.unpack-*` and half-made warm-start snapshots `snapshots/.making-*`
//!   that no process uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bakeoff_state::StateError;

use crate::{Runtime, RuntimeError, ServiceStatus};

/// One thing `prune` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    /// `container bakeoff-web`, `qemu pid 4242`, `reservation web`, `service api`, a path.
    pub what: String,
    /// Why it is a stray, in words.
    pub why: String,
    /// `None` when removed (or with `--dry-run`), else why removing it failed.
    pub error: Option<String>,
}

/// The programs whose processes a microVM or unikernel instance runs as.
const VMM_PROGRAMS: &[&str] = &["qemu-system-x86_64", "firecracker", "cloud-hypervisor"];

/// A kernel unpack directory no process uses is a stray once it is this old (an unpack takes
/// seconds; the age only keeps prune off one that is between two steps).
const UNPACK_IDLE: Duration = Duration::from_secs(600);

impl Runtime {
    /// Finds the strays and, unless `dry_run`, removes them.
    pub async fn prune(&self, dry_run: bool) -> Result<Vec<Stray>, RuntimeError> {
        let mut out = Vec::new();
        let root = self.state.root().to_path_buf();

        // Instance names: recorded, under way, or an interrupted start.
        enum Known {
            Recorded,
            UnderWay,
            Interrupted,
            Missing,
        }
        let known = |name: &str| match self.state.load(name) {
            // A label or path naming no valid instance is nobody's record (and no path is made
            // from it).
            _ if bakeoff_spec::validate_name(name).is_err() => Known::Missing,
            Ok(_) => Known::Recorded,
            Err(StateError::Damaged { .. }) => Known::Recorded,
            Err(StateError::Unrecorded(_)) => Known::Interrupted,
            Err(_) if self.state.instance_dir(name).is_dir() => Known::UnderWay,
            Err(_) => Known::Missing,
        };

        // Containers.
        let docker = bakeoff_driver::docker::DockerDriver::new();
        if let Ok(containers) = docker.labelled(&root.display().to_string()).await {
            for (container, instance) in containers {
                if matches!(known(&instance), Known::Missing | Known::Interrupted) {
                    let error = if dry_run {
                        None
                    } else {
                        docker
                            .remove_container(&container)
                            .await
                            .err()
                            .map(|e| e.to_string())
                    };
                    out.push(Stray {
                        what: format!("container {container}"),
                        why: format!("instance `{instance}` has no record"),
                        error,
                    });
                }
            }
        }

        // VMM processes.
        let instances = root.join("instances");
        for (pid, name) in vmm_processes(&instances) {
            if matches!(known(&name), Known::Missing | Known::Interrupted) {
                let error = if dry_run {
                    None
                } else {
                    end_process(pid).await
                };
                out.push(Stray {
                    what: format!("vmm pid {pid}"),
                    why: format!("instance `{name}` has no record"),
                    error,
                });
            }
        }

        // Interrupted reservations (after their VMMs, whose pid files live there).
        if let Ok(entries) = std::fs::read_dir(&instances) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if bakeoff_spec::validate_name(&name).is_ok()
                    && matches!(known(&name), Known::Interrupted)
                {
                    let error = if dry_run {
                        None
                    } else {
                        self.state.remove(&name).err().map(|e| e.to_string())
                    };
                    out.push(Stray {
                        what: format!("reservation {name}"),
                        why: "a start was interrupted before it wrote its record".into(),
                        error,
                    });
                }
            }
        }

        // Services.
        for view in self.services()? {
            if view.status == ServiceStatus::Down {
                let name = view.record.name.clone();
                let error = if dry_run {
                    None
                } else {
                    self.remove_service(&name, true)
                        .await
                        .err()
                        .map(|e| e.to_string())
                };
                out.push(Stray {
                    what: format!("service {name}"),
                    why: format!(
                        "its front (pid {}) is gone; with its backends {}",
                        view.record.pid,
                        if view.record.backends.is_empty() {
                            "(none)".to_string()
                        } else {
                            view.record.backends.join(", ")
                        }
                    ),
                    error,
                });
            }
        }
        if let Ok(entries) = std::fs::read_dir(root.join("services")) {
            for e in entries.flatten() {
                let dir = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if bakeoff_spec::validate_name(&name).is_ok() && self.abandoned_reservation(&name) {
                    let error = if dry_run {
                        None
                    } else {
                        std::fs::remove_dir_all(&dir).err().map(|e| e.to_string())
                    };
                    out.push(Stray {
                        what: format!("service reservation {name}"),
                        why: "a `serve` was interrupted before it wrote its record".into(),
                        error,
                    });
                }
            }
        }

        // Scratch of builds and kernel unpacks.
        let mut scratch = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.cache.root().join("tmp")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix("work-")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(p, _)| p.parse::<u32>().ok());
                if let Some(pid) = pid {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        scratch.push((e.path(), format!("build pid {pid} no longer runs")));
                    }
                }
            }
        }
        for (dir, prefix, what) in [
            (
                "kernels",
                ".unpack-",
                "an interrupted kernel unpack; no process uses it",
            ),
            (
                "snapshots",
                ".making-",
                "an interrupted warm-start snapshot; no process uses it",
            ),
        ] {
            let Ok(entries) = std::fs::read_dir(self.cache.root().join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if e.file_name().to_string_lossy().starts_with(prefix)
                    && older_than(&path, UNPACK_IDLE)
                    && !in_use(&path)
                {
                    scratch.push((path, what.into()));
                }
            }
        }
        for (path, why) in scratch {
            let error = if dry_run {
                None
            } else {
                std::fs::remove_dir_all(&path).err().map(|e| e.to_string())
            };
            out.push(Stray {
                what: path.display().to_string(),
                why,
                error,
            });
        }
        Ok(out)
    }
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a > age)
}

/// Live (not zombie) VMM processes whose command line names an instance directory under
/// `instances`: (pid, instance name).
fn vmm_processes(instances: &Path) -> Vec<(u32, String)> {
    let needle = format!("{}/", instances.display());
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .unwrap_or_default();
        if !VMM_PROGRAMS.contains(&program.as_str()) || zombie(pid) {
            continue;
        }
        let name = args.iter().find_map(|a| {
            let rest = &a[a.find(&needle)? + needle.len()..];
            let name = rest.split('/').next()?;
            bakeoff_spec::validate_name(name).ok()?;
            Some(name.to_string())
        });
        if let Some(name) = name {
            out.push((pid, name));
        }
    }
    out
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// SIGTERM, then SIGKILL after 3 s: a stray VMM ends (found by its pid, checked just before).
async fn end_process(pid: u32) -> Option<String> {
    // SAFETY: kill(2) on a pid whose command line was just checked; no memory is touched.
    if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
        return Some(std::io::Error::last_os_error().to_string());
    }
    for _ in 0..30 {
        if zombie(pid) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    None
}

/// True when some process has its working directory or an open file inside `dir`.
fn in_use(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    let inside = |p: PathBuf| p.starts_with(dir);
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let proc_dir = e.path();
        if std::fs::read_link(proc_dir.join("cwd")).is_ok_and(inside) {
            return true;
        }
        if let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) {
            if fds
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(inside))
            {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_processes_are_matched_by_program_and_instance_dir() {
        // This test's own process is no VMM: nothing is found for any directory.
        assert!(vmm_processes(Path::new("/")).is_empty());
        let t = tempfile::tempdir().unwrap();
        assert!(!in_use(t.path()));
        let f = std::fs::File::create(t.path().join("open")).unwrap();
        assert!(in_use(t.path()), "an open file inside counts");
        drop(f);
        assert!(!in_use(t.path()));
    }
}
