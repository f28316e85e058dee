//! Detection: an app input → a [`BuildPlan`], a pure value saying how to build and run it.
//!
//! Each way of building is a [`Detector`]; they are asked in order and the first that
//! recognises the source tree wins. `bakeoff.toml` then overrides what was guessed.

mod detectors;
mod lang;
pub mod oci;
mod plan;

use std::path::{Path, PathBuf};

pub use detectors::{default_detectors, Detector, SourceTree};
pub use lang::{python_requirements, APP_DIR, NODE, PYTHON, PYTHON_DEPS_DIR};
pub use plan::{app_binary_path, BuildPlan, PortsFrom, Source};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{0} does not exist")]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} has nothing bakeoff can build: expected bakeoff.toml with [build], a Cargo.toml, a Makefile, a package.json, a Python app (requirements.txt, pyproject.toml, Pipfile.lock, app.py, main.py or __main__.py), exactly one .c file, or a Linux executable")]
    NothingBuildable(PathBuf),
    #[error("{path} holds several C files ({files}); add a Makefile or a bakeoff.toml [build] section saying how to build them")]
    SeveralCFiles { path: PathBuf, files: String },
    #[error("{0} is neither a directory, a C source file (.c), a Python file (.py) nor an ELF executable")]
    UnknownFile(PathBuf),
    #[error("`deb:` needs a package name, for example deb:nginx")]
    EmptyDeb,
    #[error("invalid Debian package name `{0}`")]
    BadDebName(String),
    #[error("{path} cannot be read: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("{path}: bakeoff cannot tell how to start this app: {hint}")]
    NoEntry { path: PathBuf, hint: String },
    #[error("{} is not a regular file, a directory or deb:NAME (a named pipe, socket or device cannot be an app)", .0.display())]
    NotRegular(PathBuf),
    #[error("{} cannot be used as an image: {reason}", .path.display())]
    BadImage { path: PathBuf, reason: String },
    #[error("`oci-archive:` needs a file, for example oci-archive:hello.tar")]
    EmptyImage,
    #[error("`oci:` needs an OCI image layout directory, for example oci:./hello-layout")]
    EmptyLayout,
    #[error("{} is not a directory; `oci:` reads an OCI image layout directory (use oci-archive: for a tarball)", .0.display())]
    LayoutNotDir(PathBuf),
    #[error(transparent)]
    Spec(#[from] bakeoff_spec::SpecError),
}

/// What the user named as APP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppInput {
    Dir(PathBuf),
    CFile(PathBuf),
    Elf(PathBuf),
    Deb(String),
    PyFile(PathBuf),
    /// `oci-archive:FILE`: a `docker save` or OCI layout tarball; or `oci:DIR`, an OCI image
    /// layout directory (the path is then a directory).
    OciArchive(PathBuf),
}

impl AppInput {
    /// Classifies `app` (a path, or `deb:NAME`) by looking at the file system.
    pub fn resolve(app: &str) -> Result<AppInput, DetectError> {
        if let Some(pkg) = app.strip_prefix("deb:") {
            if pkg.is_empty() {
                return Err(DetectError::EmptyDeb);
            }
            // Debian policy's rule, which also keeps `deb:--version` from reaching apt as an option.
            if !bakeoff_spec::is_debian_package_name(pkg) {
                return Err(DetectError::BadDebName(pkg.to_string()));
            }
            return Ok(AppInput::Deb(pkg.to_string()));
        }
        if let Some(file) = app.strip_prefix("oci-archive:") {
            if file.is_empty() {
                return Err(DetectError::EmptyImage);
            }
            let path = PathBuf::from(file);
            if !path.is_file() {
                return Err(DetectError::NotFound(path));
            }
            return Ok(AppInput::OciArchive(path));
        }
        // `oci:DIR`: an OCI image layout directory, read like the tarball of one.
        if let Some(dir) = app.strip_prefix("oci:") {
            if dir.is_empty() {
                return Err(DetectError::EmptyLayout);
            }
            let path = PathBuf::from(dir);
            if !path.exists() {
                return Err(DetectError::NotFound(path));
            }
            if !path.is_dir() {
                return Err(DetectError::LayoutNotDir(path));
            }
            return Ok(AppInput::OciArchive(path));
        }
        let path = PathBuf::from(app);
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DetectError::NotFound(path.clone()),
            _ => DetectError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        if meta.is_dir() {
            return Ok(AppInput::Dir(path));
        }
        // A named pipe or a device would block the first read forever (or never end).
        if !meta.is_file() {
            return Err(DetectError::NotRegular(path));
        }
        if path.extension().is_some_and(|e| e == "c") {
            return Ok(AppInput::CFile(path));
        }
        if path.extension().is_some_and(|e| e == "py") {
            return Ok(AppInput::PyFile(path));
        }
        if is_elf(&path) {
            return Ok(AppInput::Elf(path));
        }
        Err(DetectError::UnknownFile(path))
    }
}

/// True when the file starts with the ELF magic.
pub fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Detects the plan for `app` with the default detectors.
pub fn detect(app: &str) -> Result<BuildPlan, DetectError> {
    let input = AppInput::resolve(app)?;
    plan::plan_for(app, input, &default_detectors())
}
