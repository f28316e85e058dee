//! Build once: an app's [`BuildPlan`] becomes an [`Artifact`] — a directory tree holding the
//! app's file closure exactly as every image will contain it, plus a manifest saying how to run
//! it. Artifacts are cached by a content hash of their inputs, and written atomically: a failed
//! build leaves nothing a later run could mistake for a complete artifact.

mod artifact;
mod cache;
mod compile;
mod deb;
mod hash;
mod lang;
mod oci_input;
mod probe;
mod run_user;

pub use artifact::{Artifact, ArtifactManifest, Entry, EntryKind};
pub use cache::Cache;
pub use compile::{build, executables, BuildOutcome};
pub use deb::source as deb_source;
pub use deb::{built_from, DebOrigin};
pub use probe::{observe_ports, Observation};
pub use run_user::RunUser;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("`{tool}` was not found on PATH: {hint}")]
    ToolMissing { tool: String, hint: String },
    #[error("building {what} failed (exit status {status}):\n{output}")]
    CommandFailed {
        what: String,
        status: String,
        output: String,
    },
    #[error("the build of {dir} produced no executable; set `output` in bakeoff.toml [build]")]
    NoOutput { dir: PathBuf },
    #[error("the build of {dir} produced several executables ({found}); set `output` in bakeoff.toml [build]")]
    SeveralOutputs { dir: PathBuf, found: String },
    #[error("the build output {0} does not exist")]
    MissingOutput(PathBuf),
    #[error("{path} is not an ELF executable")]
    NotElf { path: PathBuf },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Closure(String),
    /// A `[[files]]` destination that would be written outside the image.
    #[error("{0}")]
    FileEscapes(String),
    #[error("file {0} listed in bakeoff.toml does not exist")]
    MissingFile(PathBuf),
    #[error(
        "deb: inputs need Debian's apt (apt-get, dpkg-deb), which is not installed on this host"
    )]
    AptMissing,
    #[error("no Debian package named `{0}` (apt-cache knows nothing of it; run apt-get update?)")]
    UnknownPackage(String),
    #[error("Debian package `{name}` is virtual (provided by {providers}); name one of them, for example deb:{first}")]
    VirtualPackage {
        name: String,
        providers: String,
        first: String,
    },
    #[error("deb:{0} ships no systemd service and bakeoff knows no command for it; add `command = [...]` to a bakeoff.toml beside `package = \"{0}\"` in a directory, and give that directory as APP")]
    NoDaemonCommand(String),
    #[error("{0}")]
    Deb(String),
    #[error("the cached artifact {path} is damaged ({reason}); remove it and build again")]
    BadCache { path: PathBuf, reason: String },
}
