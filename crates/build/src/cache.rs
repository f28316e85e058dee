use std::path::{Path, PathBuf};

/// bakeoff's cache: artifacts, images, kernels, downloads. `$BAKEOFF_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/bakeoff`, else `~/.cache/bakeoff`.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn from_env() -> Cache {
        if let Some(dir) = std::env::var_os("BAKEOFF_CACHE_DIR") {
            return Cache::new(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Cache::new(PathBuf::from(dir).join("bakeoff"));
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        Cache::new(home.join(".cache/bakeoff"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn kernels(&self) -> PathBuf {
        self.root.join("kernels")
    }
    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }
    /// Creates the cache root, readable by its owner only (0700).
    pub fn create_root(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs_err::create_dir_all(&self.root)?;
        fs_err::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
    }

    /// Scratch space on the same file system as the cache, so finished work can be renamed in.
    /// Named `work-<pid>-*`; what a killed build left (its pid gone, or an unnamed one more
    /// than a day old) is removed first.
    pub fn tmp(&self) -> std::io::Result<tempfile::TempDir> {
        self.create_root()?;
        let dir = self.root.join("tmp");
        fs_err::create_dir_all(&dir)?;
        sweep_stale_work(&dir);
        tempfile::Builder::new()
            .prefix(&format!("work-{}-", std::process::id()))
            .tempdir_in(dir)
    }
}

/// Removes `work-*` directories of builds that are no longer running.
fn sweep_stale_work(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("work-") else {
            continue;
        };
        let stale = match rest
            .split_once('-')
            .and_then(|(p, _)| p.parse::<u32>().ok())
        {
            Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600)),
        };
        if stale {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build killed with SIGKILL left its `tmp/work-*` forever.
    #[test]
    fn work_dirs_of_dead_builds_are_swept() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path().join("cache"));
        let tmp = cache.root().join("tmp");
        fs_err::create_dir_all(&tmp).unwrap();
        // pid_max is at most 2^22: this pid cannot exist.
        let dead = tmp.join("work-4194305-abc");
        let alive = tmp.join(format!("work-{}-def", std::process::id()));
        fs_err::create_dir_all(dead.join("src")).unwrap();
        fs_err::create_dir_all(&alive).unwrap();
        let mine = cache.tmp().unwrap();
        assert!(!dead.exists(), "a dead build's work dir is removed");
        assert!(alive.exists(), "a live build's work dir stays");
        assert!(mine
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("work-{}-", std::process::id())));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs_err::metadata(cache.root()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
