//! ELF inspection for bakeoff: what a Linux program is ([`inspect`]), every file the dynamic
//! loader would load for it inside a filesystem root ([`closure`], laid out elsewhere with
//! [`copy_into`]), and which platforms can run it ([`check`]).
//!
//! [`inspect`] and [`closure`] read files; [`check`] is pure.

mod check;
mod closure;
mod inspect;
mod ldcache;
mod rootfs;
#[cfg(test)]
mod test_support;

use std::io;
use std::path::{Path, PathBuf};

pub use check::{check, rumprun_rebuilt, Verdict};
pub use closure::{
    closure, copy_into, expand_vars, Closure, ClosureEntry, EntryKind, LoadedObject,
};
pub use inspect::{inspect, ElfClass, ElfInfo, ElfKind, Linkage, ProcessFeatures};

/// Everything that can go wrong while reading ELF files or computing a closure.
/// Each message is one sentence naming the file or library concerned; causes are kept as
/// `source` so that one printer can show the chain once.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{} is not an ELF file", path.display())]
    NotElf { path: PathBuf },

    #[error("{} is truncated or corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error("cannot read {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{} does not exist{}", path.display(), in_root(root))]
    ProgramNotFound { path: PathBuf, root: PathBuf },

    #[error("cannot use {} as a filesystem root", root.display())]
    BadRoot {
        root: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `skipped` lists candidates that exist but that ld.so would reject (wrong class or machine).
    #[error(
        "{name} (needed by {}) was not found in ld.so.cache or the default library directories{}",
        needed_by.display(),
        skipped_note(skipped)
    )]
    LibraryNotFound {
        name: String,
        needed_by: PathBuf,
        skipped: Vec<String>,
    },

    #[error(
        "the program interpreter {} (needed by {}) was not found in {}",
        interpreter.display(),
        needed_by.display(),
        root.display()
    )]
    InterpreterNotFound {
        interpreter: PathBuf,
        needed_by: PathBuf,
        root: PathBuf,
    },

    #[error("{} (needed by {}) cannot be loaded: {reason}", path.display(), needed_by.display())]
    BadLibrary {
        path: PathBuf,
        needed_by: PathBuf,
        reason: String,
    },

    #[error("{} (needed by {}) is for {found}, but {} is for {expected}", path.display(), needed_by.display(), needed_by.display())]
    WrongArchitecture {
        path: PathBuf,
        needed_by: PathBuf,
        found: String,
        expected: String,
    },

    #[error("{} cannot be resolved inside {}: too many levels of symbolic links", path.display(), root.display())]
    SymlinkLoop { path: PathBuf, root: PathBuf },

    #[error("cannot lay out {} in {}: {reason}", path.display(), dest_root.display())]
    Layout {
        path: PathBuf,
        dest_root: PathBuf,
        reason: String,
    },

    /// An I/O error from `fs-err`, whose message names the path.
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn in_root(root: &Path) -> String {
    if root == Path::new("/") {
        String::new()
    } else {
        format!(" in {}", root.display())
    }
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    }
}
