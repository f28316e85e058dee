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
    /// Scratch space on the same file system as the cache, so finished work can be renamed in.
    pub fn tmp(&self) -> std::io::Result<tempfile::TempDir> {
        let dir = self.root.join("tmp");
        fs_err::create_dir_all(&dir)?;
        tempfile::Builder::new().prefix("work-").tempdir_in(dir)
    }
}
