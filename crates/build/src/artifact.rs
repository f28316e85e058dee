use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bakeoff_detect::Source;
use bakeoff_spec::HealthSpec;
use serde::{Deserialize, Serialize};

use crate::BuildError;

/// How to run what was built; stored beside the rootfs as `artifact.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactManifest {
    /// Content hash of the build inputs (hex sha256).
    pub id: String,
    pub name: String,
    pub input: String,
    pub source: Source,
    /// Program and fixed leading arguments inside the image.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<u16>,
    pub workdir: String,
    pub health: HealthSpec,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    /// The main executable's path inside the image, and its size in bytes.
    pub binary: String,
    pub binary_size: u64,
    /// "static" or "dynamic".
    pub linkage: String,
    /// Seconds the cold build took.
    pub build_seconds: f64,
    /// Who the command runs as (none: root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<crate::RunUser>,
}

/// A finished, immutable build: `dir/rootfs` is the file closure laid out as in the image.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: ArtifactManifest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { source: PathBuf, size: u64 },
    Symlink { target: PathBuf },
}

/// One path of the rootfs, as a packager writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the image root, without a leading slash (e.g. `app/hello`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    pub kind: EntryKind,
}

impl Artifact {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub(crate) fn load(dir: &Path) -> Result<Artifact, BuildError> {
        let path = dir.join("artifact.json");
        let text = fs_err::read_to_string(&path)?;
        let manifest = serde_json::from_str(&text).map_err(|e| BuildError::BadCache {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Artifact {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Every path of the rootfs, parents before children, sorted bytewise — the order every
    /// packager writes, so that images are reproducible.
    pub fn entries(&self) -> Result<Vec<Entry>, BuildError> {
        let mut out = Vec::new();
        walk(&self.rootfs(), "", &mut out)?;
        Ok(out)
    }

    /// Total bytes of regular files in the rootfs.
    pub fn closure_size(&self) -> Result<u64, BuildError> {
        Ok(self
            .entries()?
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum())
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Entry>) -> Result<(), BuildError> {
    let mut names: Vec<_> = fs_err::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = format!("{prefix}{}", name.to_string_lossy());
        let meta = fs_err::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            out.push(Entry {
                path: rel,
                mode: 0o777,
                kind: EntryKind::Symlink {
                    target: fs_err::read_link(&path)?,
                },
            });
        } else if meta.is_dir() {
            out.push(Entry {
                path: rel.clone(),
                mode,
                kind: EntryKind::Dir,
            });
            walk(&path, &format!("{rel}/"), out)?;
        } else {
            out.push(Entry {
                path: rel,
                mode,
                kind: EntryKind::File {
                    source: path,
                    size: meta.len(),
                },
            });
        }
    }
    Ok(())
}
