//! Packing: an [`Artifact`] becomes an [`Image`] for one [`Target`]. One module per target,
//! each a [`Packager`]. Images are cached beside the artifact they came from, written under a
//! scratch name and renamed into place, so a half-written image is never picked up. The
//! [`Image`] value itself, and how it is launched, live in `bakeoff-launch`.

pub mod microvm;
pub mod oci;
pub mod rumprun;
pub mod toolchain;

use std::path::{Path, PathBuf};

use bakeoff_build::{Artifact, Cache};
use bakeoff_spec::Target;
use serde::Serialize;

pub use bakeoff_launch::{Image, ImageDetails};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// File errors come from `fs-err`, so they name their path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Build(#[from] bakeoff_build::BuildError),
    #[error(transparent)]
    Launch(#[from] bakeoff_launch::LaunchError),
    #[error(transparent)]
    Rumprun(#[from] rumprun::RumprunError),
    #[error(transparent)]
    Guest(#[from] bakeoff_guest::GuestError),
    #[error("the kernel {} does not exist", .0.display())]
    NoKernel(PathBuf),
    #[error("--kernel minimal: bakeoff's minimal kernel is not built yet; run `bakeoff kernel build` (about 9 minutes, once per machine)")]
    MinimalKernelMissing,
    #[error("{} failed on {}: {output}", tool.display(), file.display())]
    Tool {
        tool: PathBuf,
        file: PathBuf,
        output: String,
    },
}

/// What packagers may need besides the artifact.
pub struct PackContext<'a> {
    pub cache: &'a Cache,
    /// `--kernel PATH` for VM targets.
    pub kernel: Option<PathBuf>,
    pub log: &'a dyn Fn(&str),
}

/// One image format.
pub trait Packager {
    fn target(&self) -> Target;
    fn pack(&self, artifact: &Artifact, ctx: &PackContext) -> Result<Image, PackError>;
}

/// The packager for a target.
pub fn packager_for(target: Target) -> Result<Box<dyn Packager>, PackError> {
    match target {
        Target::Oci => Ok(Box::new(oci::OciPackager)),
        Target::MicroVm => Ok(Box::new(microvm::MicroVmPackager)),
        Target::Rumprun => Ok(Box::new(rumprun::RumprunPackager)),
    }
}

/// Runs `write` into a scratch directory and renames it to `final_dir` (the commit point);
/// returns the cached image when `final_dir` already holds one.
pub fn cached_image(
    cache: &Cache,
    final_dir: &Path,
    write: impl FnOnce(&Path) -> Result<Image, PackError>,
) -> Result<Image, PackError> {
    if final_dir.join("image.json").is_file() {
        return Ok(Image::load(final_dir)?);
    }
    let work = cache.tmp()?;
    let staging = work.path().join("image");
    fs_err::create_dir_all(&staging)?;
    let image = write(&staging)?;
    let mut stored = image.clone();
    stored.dir = PathBuf::new();
    fs_err::write(
        staging.join("image.json"),
        serde_json::to_vec_pretty(&stored).expect("image serializes"),
    )?;
    fs_err::create_dir_all(final_dir.parent().expect("image dir has a parent"))?;
    if let Err(e) = std::fs::rename(&staging, final_dir) {
        if !final_dir.join("image.json").is_file() {
            return Err(e.into());
        }
    }
    Ok(Image::load(final_dir)?)
}

/// JSON with object keys sorted at every level, so digests do not depend on hash-map order.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::to_value(value).expect("serializable")))
        .expect("serializable")
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
