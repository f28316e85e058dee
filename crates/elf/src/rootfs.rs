//! Path resolution inside a filesystem root, the way the kernel would do it after
//! `chroot(root)`: absolute symlink targets and `..` never leave the root. Every symlink met on
//! the way is recorded so that the same path can be reproduced in another root.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::ElfError;

/// Linux gives up after 40 symlinks (ELOOP).
const MAX_SYMLINKS: usize = 40;

/// A path resolved inside a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Absolute path inside the root with no symlink in it.
    pub real: PathBuf,
    /// `(link, target)` for every symlink followed, in order; `link` is absolute inside the root
    /// and its parent has no symlink in it; `target` is as stored in the link.
    pub links: Vec<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Root {
    host: PathBuf,
}

impl Root {
    pub fn new(host: &Path) -> Root {
        Root {
            host: host.to_path_buf(),
        }
    }

    pub fn host(&self) -> &Path {
        &self.host
    }

    /// The host path of an absolute path inside the root (no symlink resolution).
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        let rel = inside.strip_prefix("/").unwrap_or(inside);
        if rel.as_os_str().is_empty() {
            self.host.clone()
        } else {
            self.host.join(rel)
        }
    }

    /// Resolves `path` (absolute inside the root; a relative one is taken from `/`).
    /// `Ok(None)` when it, or a directory on the way, does not exist.
    pub fn resolve(&self, path: &Path) -> Result<Option<Resolved>, ElfError> {
        let mut pending: VecDeque<OsString> = components(path).collect();
        let mut real = PathBuf::from("/");
        let mut links = Vec::new();
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                real.pop();
                continue;
            }
            let candidate = real.join(&name);
            let host = self.host_path(&candidate);
            let meta = match fs_err::symlink_metadata(&host) {
                Ok(meta) => meta,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(ElfError::Io(e)),
            };
            if meta.file_type().is_symlink() {
                if links.len() >= MAX_SYMLINKS {
                    return Err(ElfError::SymlinkLoop {
                        path: path.to_path_buf(),
                        root: self.host.clone(),
                    });
                }
                let target = fs_err::read_link(&host)?;
                if target.is_absolute() {
                    real = PathBuf::from("/");
                }
                for (i, c) in components(&target).enumerate() {
                    pending.insert(i, c);
                }
                links.push((candidate, target));
            } else {
                if !pending.is_empty() && !meta.is_dir() {
                    return Ok(None);
                }
                real = candidate;
            }
        }
        Ok(Some(Resolved { real, links }))
    }
}

/// Normal and `..` components of a path; `/` and `.` are dropped.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// A merged-/usr root: /lib -> usr/lib, /lib64 -> usr/lib64, an absolute ld.so link and a
    /// relative soname link.
    fn merged_usr() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib64")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("usr/lib64", r.join("lib64")).unwrap();
        std::fs::write(
            r.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            b"ld",
        )
        .unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"libc").unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            r.join("usr/lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        symlink("libc.so.6", r.join("usr/lib/x86_64-linux-gnu/libc.so")).unwrap();
        dir
    }

    #[test]
    fn interpreter_path_through_merged_usr_records_every_link() {
        let dir = merged_usr();
        let root = Root::new(dir.path());
        let r = root
            .resolve(Path::new("/lib64/ld-linux-x86-64.so.2"))
            .unwrap()
            .unwrap();
        assert_eq!(r.real, p("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
        assert_eq!(
            r.links,
            vec![
                (p("/lib64"), p("usr/lib64")),
                (
                    p("/usr/lib64/ld-linux-x86-64.so.2"),
                    p("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
                ),
                (p("/lib"), p("usr/lib")),
            ]
        );
    }

    #[test]
    fn relative_links_and_dotdot_stay_inside_the_root() {
        let dir = merged_usr();
        let root = Root::new(dir.path());
        let r = root
            .resolve(Path::new("/usr/lib/x86_64-linux-gnu/libc.so"))
            .unwrap()
            .unwrap();
        assert_eq!(r.real, p("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        let r = root
            .resolve(Path::new(
                "/../../../usr/lib/../lib/x86_64-linux-gnu/libc.so.6",
            ))
            .unwrap()
            .unwrap();
        assert_eq!(r.real, p("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        // an absolute link pointing at the host's /etc stays in the root
        symlink("/etc/passwd", dir.path().join("escape")).unwrap();
        assert_eq!(root.resolve(Path::new("/escape")).unwrap(), None);
    }

    #[test]
    fn missing_paths_and_files_used_as_dirs_are_absent() {
        let dir = merged_usr();
        let root = Root::new(dir.path());
        assert_eq!(root.resolve(Path::new("/nope/libc.so.6")).unwrap(), None);
        assert_eq!(
            root.resolve(Path::new("/lib/x86_64-linux-gnu/libc.so.6/x"))
                .unwrap(),
            None
        );
    }

    #[test]
    fn symlink_loops_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let err = Root::new(dir.path())
            .resolve(Path::new("/a"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "/a cannot be resolved inside {}: too many levels of symbolic links",
                dir.path().display()
            )
        );
    }
}
