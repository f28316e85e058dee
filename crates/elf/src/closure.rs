//! The file closure of a program: the program, its interpreter and every library ld.so would
//! load for it, found the way glibc's ld.so finds them, inside a filesystem root.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::inspect::{describe, parse, read_file, read_head, verify, Ident, Parsed, Verify};
use crate::ldcache::{parse_ld_so_cache, CacheEntry};
use crate::rootfs::{Resolved, Root};
use crate::ElfError;

/// What ld.so would load for a program, as files to lay out in a new root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// Sorted by path, no duplicates; every parent directory of a file or symlink is a `Dir`
    /// entry (except `/`), so the entries can be laid out in order.
    pub entries: Vec<ClosureEntry>,
    /// The objects in the order ld.so loads them: the program, its interpreter, then its
    /// libraries breadth first.
    pub loaded: Vec<LoadedObject>,
    /// Directories outside the default ones where a library was found only through
    /// `/etc/ld.so.cache`. A root built from this closure has no cache, so they must be on
    /// `LD_LIBRARY_PATH` there (or a cache must be generated).
    pub extra_library_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClosureEntry {
    /// Absolute, as seen inside the root.
    pub path: PathBuf,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file; `source` is where to copy it from on this host.
    File {
        source: PathBuf,
    },
    /// A symbolic link; `target` as stored in the link (relative or absolute inside the root).
    Symlink {
        target: PathBuf,
    },
    Dir,
}

/// One object ld.so would map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedObject {
    /// The name it was asked for by: the program's path, PT_INTERP, or a DT_NEEDED entry.
    pub name: String,
    /// Where it was found, inside the root, before resolving symlinks.
    pub path: PathBuf,
    /// The file itself, inside the root, with all symlinks resolved.
    pub real: PathBuf,
}

impl Closure {
    /// The entry at `path`, following the closure's own symlinks; `None` if the path would not
    /// exist in a root laid out from this closure.
    pub fn lookup(&self, path: &Path) -> Option<&ClosureEntry> {
        let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
        let mut current = PathBuf::from("/");
        let mut hops = 0;
        while let Some(p) = pending.pop() {
            let mut comps: Vec<_> = p.components().collect();
            comps.reverse();
            if p.is_absolute() {
                current = PathBuf::from("/");
            }
            while let Some(c) = comps.pop() {
                match c {
                    std::path::Component::Normal(name) => {
                        let candidate = current.join(name);
                        let entry = self.entry(&candidate)?;
                        match &entry.kind {
                            EntryKind::Symlink { target } => {
                                hops += 1;
                                if hops > 40 {
                                    return None;
                                }
                                let rest: PathBuf = comps.iter().rev().collect();
                                pending.push(rest);
                                pending.push(target.clone());
                                break;
                            }
                            EntryKind::Dir => current = candidate,
                            EntryKind::File { .. } if comps.is_empty() => current = candidate,
                            EntryKind::File { .. } => return None,
                        }
                    }
                    std::path::Component::ParentDir => {
                        current.pop();
                    }
                    _ => {}
                }
            }
        }
        if current == Path::new("/") {
            return None;
        }
        self.entry(&current)
    }

    fn entry(&self, path: &Path) -> Option<&ClosureEntry> {
        self.entries
            .binary_search_by(|e| e.path.as_path().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The regular files of the closure (inside-root paths).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .map(|e| e.path.as_path())
    }
}

/// Everything ld.so would load for `exe`, resolved inside the filesystem `root` (`/` for this
/// host, or a staging directory such as unpacked Debian packages). `exe` is a host path under
/// `root` (absolute or relative to the current directory), or else a path inside `root`
/// (`/usr/sbin/nginx`). Absolute paths found in ELF files and in `root`'s `/etc/ld.so.cache` are
/// interpreted inside `root`, and so are symlink targets: nothing outside `root` is read.
///
/// The search follows glibc: for each DT_NEEDED not already loaded (by name or SONAME), the
/// DT_RPATH of the object that needs it and of the objects that loaded it up to the program
/// (each only if it has no DT_RUNPATH), then the DT_RUNPATH of the object that needs it, then
/// `ld.so.cache`, then the default directories (the last two skipped for DF_1_NODEFLIB);
/// `$ORIGIN`, `$LIB` and `$PLATFORM` are substituted; candidates of another class, byte order or
/// machine are skipped. LD_LIBRARY_PATH, LD_PRELOAD and `glibc-hwcaps` subdirectories are not
/// considered: the result is the baseline set of files that works on any CPU of the architecture.
/// Libraries opened later with dlopen() (NSS modules, gconv, plugins) are not in the closure.
///
/// At run time ld.so takes the *program's* `$ORIGIN` from `/proc/self/exe`: a root laid out from
/// this closure needs `/proc` mounted when the program's RPATH/RUNPATH uses `$ORIGIN`.
pub fn closure(exe: &Path, root: &Path) -> Result<Closure, ElfError> {
    let root_host = std::fs::canonicalize(root).map_err(|source| ElfError::BadRoot {
        root: root.to_path_buf(),
        source,
    })?;
    let exe_inside = path_inside_root(exe, root, &root_host)?;
    Walk::new(Root::new(&root_host)).run(&exe_inside)
}

fn path_inside_root(exe: &Path, root: &Path, root_host: &Path) -> Result<PathBuf, ElfError> {
    let exe_abs = std::path::absolute(exe).map_err(|source| ElfError::Unreadable {
        path: exe.into(),
        source,
    })?;
    if root_host == Path::new("/") {
        return Ok(exe_abs);
    }
    let root_abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    for base in [root_host, root_abs.as_path()] {
        if let Ok(rel) = exe_abs.strip_prefix(base) {
            return Ok(Path::new("/").join(rel));
        }
    }
    Ok(Path::new("/").join(exe))
}

struct Object {
    /// Names ld.so would match a DT_NEEDED against: the names it was loaded by and its SONAME.
    names: Vec<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    nodeflib: bool,
    /// `$ORIGIN`: the directory of the path it was found at (the program: of its real path,
    /// which is what the kernel reports in /proc/self/exe).
    origin: PathBuf,
    /// The object whose DT_NEEDED loaded it.
    loader: Option<usize>,
}

struct Walk {
    root: Root,
    entries: BTreeMap<PathBuf, EntryKind>,
    objects: Vec<Object>,
    loaded: Vec<LoadedObject>,
    by_real: BTreeMap<PathBuf, usize>,
    extra_dirs: BTreeSet<PathBuf>,
    cache: Option<Vec<CacheEntry>>,
    /// Set from the program: libraries must match it.
    ident: Option<Ident>,
    machine: String,
}

/// A library found by [`Walk::search`].
struct Found {
    /// The name it was asked by, inside the root.
    path: PathBuf,
    resolved: Resolved,
    via_cache: bool,
}

impl Walk {
    fn new(root: Root) -> Walk {
        Walk {
            root,
            entries: BTreeMap::new(),
            objects: Vec::new(),
            loaded: Vec::new(),
            by_real: BTreeMap::new(),
            extra_dirs: BTreeSet::new(),
            cache: None,
            ident: None,
            machine: String::new(),
        }
    }

    fn run(mut self, exe: &Path) -> Result<Closure, ElfError> {
        let resolved = self
            .root
            .resolve(exe)?
            .ok_or_else(|| ElfError::ProgramNotFound {
                path: exe.to_path_buf(),
                root: self.root.host().to_path_buf(),
            })?;
        let parsed = self.parse_at(&resolved.real)?;
        self.ident = Some(parsed.ident);
        self.machine = parsed.info.machine.clone();
        let origin = parent(&resolved.real);
        let interpreter = parsed.info.interpreter.clone();
        self.add(
            exe.to_string_lossy().into_owned(),
            exe,
            resolved,
            parsed,
            origin,
            None,
        );

        if let Some(interp) = interpreter {
            let interp_path = PathBuf::from(&interp);
            let resolved = self
                .root
                .resolve(&interp_path)?
                .filter(|r| self.root.host_path(&r.real).is_file())
                .ok_or_else(|| ElfError::InterpreterNotFound {
                    interpreter: interp_path.clone(),
                    needed_by: exe.to_path_buf(),
                    root: self.root.host().to_path_buf(),
                })?;
            let parsed = self.parse_at(&resolved.real)?;
            self.check_matches(&resolved.real, &parsed, exe)?;
            let origin = parent(&interp_path);
            self.add(interp, &interp_path, resolved, parsed, origin, None);
        }

        let mut next = 0;
        while next < self.objects.len() {
            for name in self.objects[next].needed.clone() {
                if self.objects.iter().any(|o| o.names.contains(&name)) {
                    continue;
                }
                let found = self.search(&name, next)?;
                self.record(&found.resolved, false);
                if found.via_cache {
                    let dir = parent(&found.path);
                    if !self.default_dirs().contains(&dir) {
                        self.extra_dirs.insert(dir);
                    }
                }
                if let Some(&same) = self.by_real.get(&found.resolved.real) {
                    // the same file under another name (ld.so compares device and inode)
                    self.objects[same].names.push(name);
                    continue;
                }
                let parsed = self.parse_at(&found.resolved.real)?;
                let origin = parent(&found.path);
                self.add(
                    name,
                    &found.path,
                    found.resolved,
                    parsed,
                    origin,
                    Some(next),
                );
            }
            next += 1;
        }

        let entries = self
            .entries
            .into_iter()
            .map(|(path, kind)| ClosureEntry { path, kind })
            .collect::<Vec<_>>();
        Ok(Closure {
            entries,
            loaded: self.loaded,
            extra_library_dirs: self.extra_dirs.into_iter().collect(),
        })
    }

    fn parse_at(&self, real: &Path) -> Result<Parsed, ElfError> {
        let host = self.root.host_path(real);
        let bytes = read_file(&host)?;
        parse(&host, &bytes)
    }

    fn check_matches(
        &self,
        real: &Path,
        parsed: &Parsed,
        needed_by: &Path,
    ) -> Result<(), ElfError> {
        match self.ident {
            Some(ident) if ident != parsed.ident => Err(ElfError::WrongArchitecture {
                path: real.to_path_buf(),
                needed_by: needed_by.to_path_buf(),
                found: describe(parsed.ident),
                expected: describe(ident),
            }),
            _ => Ok(()),
        }
    }

    fn add(
        &mut self,
        name: String,
        path: &Path,
        resolved: Resolved,
        parsed: Parsed,
        origin: PathBuf,
        loader: Option<usize>,
    ) {
        self.record(&resolved, true);
        let mut names = vec![name.clone()];
        if let Some(soname) = &parsed.info.soname {
            names.push(soname.clone());
        }
        self.by_real
            .insert(resolved.real.clone(), self.objects.len());
        self.loaded.push(LoadedObject {
            name,
            path: path.to_path_buf(),
            real: resolved.real.clone(),
        });
        self.objects.push(Object {
            names,
            needed: parsed.info.needed,
            rpath: parsed.info.rpath,
            runpath: parsed.info.runpath,
            nodeflib: parsed.nodeflib,
            origin,
            loader,
        });
    }

    /// Adds the symlinks of `resolved` and, if `with_file`, the file itself, plus parent directories.
    fn record(&mut self, resolved: &Resolved, with_file: bool) {
        let mut paths = Vec::new();
        for (link, target) in &resolved.links {
            self.entries.insert(
                link.clone(),
                EntryKind::Symlink {
                    target: target.clone(),
                },
            );
            paths.push(link.clone());
        }
        if with_file {
            let source = self.root.host_path(&resolved.real);
            self.entries
                .insert(resolved.real.clone(), EntryKind::File { source });
            paths.push(resolved.real.clone());
        }
        for path in paths {
            for dir in path.ancestors().skip(1) {
                if dir == Path::new("/") || dir.as_os_str().is_empty() {
                    break;
                }
                self.entries
                    .entry(dir.to_path_buf())
                    .or_insert(EntryKind::Dir);
            }
        }
    }

    /// Finds DT_NEEDED `name` of object `loader` the way `_dl_map_object` does.
    fn search(&mut self, name: &str, loader: usize) -> Result<Found, ElfError> {
        let needed_by = self.loaded[loader].path.clone();
        let mut skipped = Vec::new();
        if name.contains('/') {
            // A path: used as is (relative to the working directory, `/` in our images).
            if let Some(expanded) = self.expand(name, &self.objects[loader].origin) {
                let path = Path::new("/").join(expanded);
                if let Some(resolved) = self.candidate(&path, &needed_by, &mut skipped)? {
                    return Ok(Found {
                        path,
                        resolved,
                        via_cache: false,
                    });
                }
            }
            return Err(ElfError::LibraryNotFound {
                name: name.to_string(),
                needed_by,
                skipped,
            });
        }

        let mut dirs: Vec<PathBuf> = Vec::new();
        let object = &self.objects[loader];
        if object.runpath.is_empty() {
            let mut at = Some(loader);
            let mut saw_program = false;
            while let Some(i) = at {
                let o = &self.objects[i];
                if o.runpath.is_empty() {
                    dirs.extend(self.expand_dirs(&o.rpath, &o.origin));
                }
                saw_program |= i == 0;
                at = o.loader;
            }
            let program = &self.objects[0];
            if !saw_program && program.runpath.is_empty() {
                dirs.extend(self.expand_dirs(&program.rpath, &program.origin));
            }
        }
        dirs.extend(self.expand_dirs(&object.runpath, &object.origin));
        let nodeflib = object.nodeflib;

        for dir in dirs {
            let path = dir.join(name);
            if let Some(resolved) = self.candidate(&path, &needed_by, &mut skipped)? {
                return Ok(Found {
                    path,
                    resolved,
                    via_cache: false,
                });
            }
        }
        if !nodeflib {
            // cache order is ld.so's preference; glibc-hwcaps variants go last (we want the
            // baseline build, which runs on every CPU of the architecture)
            let mut cached: Vec<(bool, PathBuf)> = self
                .cache()?
                .iter()
                .filter(|e| e.key == name)
                .map(|e| (e.hwcap != 0, PathBuf::from(&e.value)))
                .collect();
            cached.sort_by_key(|(hwcap, _)| *hwcap);
            let cached: Vec<PathBuf> = cached.into_iter().map(|(_, p)| p).collect();
            for path in cached {
                if let Some(resolved) = self.candidate(&path, &needed_by, &mut skipped)? {
                    return Ok(Found {
                        path,
                        resolved,
                        via_cache: true,
                    });
                }
            }
            for dir in self.default_dirs() {
                let path = dir.join(name);
                if let Some(resolved) = self.candidate(&path, &needed_by, &mut skipped)? {
                    return Ok(Found {
                        path,
                        resolved,
                        via_cache: false,
                    });
                }
            }
        }
        Err(ElfError::LibraryNotFound {
            name: name.to_string(),
            needed_by,
            skipped,
        })
    }

    /// `Some` if `path` exists inside the root and is a library ld.so would load for the program;
    /// `None` if it is absent or ld.so would skip it (noted in `skipped`); an error where ld.so
    /// would stop with one.
    fn candidate(
        &self,
        path: &Path,
        needed_by: &Path,
        skipped: &mut Vec<String>,
    ) -> Result<Option<Resolved>, ElfError> {
        let Some(resolved) = self.root.resolve(path)? else {
            return Ok(None);
        };
        let host = self.root.host_path(&resolved.real);
        if !host.is_file() {
            return Ok(None);
        }
        let Some(want) = self.ident else {
            return Ok(Some(resolved));
        };
        match verify(&read_head(&host)?, want) {
            Verify::Load => Ok(Some(resolved)),
            Verify::Skip(reason) => {
                let note = format!("{} {reason}", path.display());
                if !skipped.contains(&note) {
                    skipped.push(note);
                }
                Ok(None)
            }
            Verify::Fatal(reason) => Err(ElfError::BadLibrary {
                path: path.to_path_buf(),
                needed_by: needed_by.to_path_buf(),
                reason,
            }),
        }
    }

    fn cache(&mut self) -> Result<&[CacheEntry], ElfError> {
        if self.cache.is_none() {
            let mut entries = Vec::new();
            if let Some(resolved) = self.root.resolve(Path::new("/etc/ld.so.cache"))? {
                let host = self.root.host_path(&resolved.real);
                if host.is_file() {
                    // ld.so ignores a cache it cannot read or understand; so do we.
                    if let Ok(bytes) = fs_err::read(&host) {
                        entries = parse_ld_so_cache(&bytes).unwrap_or_default();
                    }
                }
            }
            self.cache = Some(entries);
        }
        Ok(self.cache.as_deref().unwrap_or_default())
    }

    fn default_dirs(&self) -> Vec<PathBuf> {
        let triplet = self.triplet();
        let mut dirs = vec![
            PathBuf::from(format!("/lib/{triplet}")),
            PathBuf::from(format!("/usr/lib/{triplet}")),
        ];
        let bits = if self
            .ident
            .is_some_and(|i| i.class == crate::ElfClass::Elf32)
        {
            "32"
        } else {
            "64"
        };
        dirs.push(PathBuf::from(format!("/lib{bits}")));
        dirs.push(PathBuf::from(format!("/usr/lib{bits}")));
        dirs.push(PathBuf::from("/lib"));
        dirs.push(PathBuf::from("/usr/lib"));
        dirs
    }

    /// Debian's multiarch directory name for the program's architecture.
    fn triplet(&self) -> String {
        let little = self.ident.is_none_or(|i| i.little_endian);
        match self.machine.as_str() {
            "arm" => "arm-linux-gnueabihf".to_string(),
            "ppc64" if little => "powerpc64le-linux-gnu".to_string(),
            "ppc64" => "powerpc64-linux-gnu".to_string(),
            "powerpc" => "powerpc-linux-gnu".to_string(),
            "mips64" if little => "mips64el-linux-gnuabi64".to_string(),
            "mips64" => "mips64-linux-gnuabi64".to_string(),
            "mips" if little => "mipsel-linux-gnu".to_string(),
            other => format!("{other}-linux-gnu"),
        }
    }

    /// `$PLATFORM` as ld.so reports it.
    fn platform(&self) -> &str {
        match self.machine.as_str() {
            "i386" => "i686",
            other => other,
        }
    }

    fn expand_dirs(&self, entries: &[String], origin: &Path) -> Vec<PathBuf> {
        entries
            .iter()
            .filter_map(|e| self.expand(e, origin))
            .map(|e| Path::new("/").join(e))
            .collect()
    }

    /// Substitutes `$ORIGIN`, `$LIB` and `$PLATFORM` (also in `${...}` form); other `$` text is kept.
    fn expand(&self, text: &str, origin: &Path) -> Option<String> {
        let lib = format!("lib/{}", self.triplet());
        Some(substitute(
            text,
            &origin.to_string_lossy(),
            &lib,
            self.platform(),
        ))
    }
}

/// Replaces ld.so's dynamic string tokens in `text`.
fn substitute(text: &str, origin: &str, lib: &str, platform: &str) -> String {
    expand_vars(text, |token| match token {
        "ORIGIN" => Some(origin.to_string()),
        "LIB" => Some(lib.to_string()),
        "PLATFORM" => Some(platform.to_string()),
        _ => None,
    })
}

/// Replaces `$NAME` and `${NAME}` with `lookup(NAME)`; names it does not know are left as
/// they are. (ld.so's dynamic string tokens, shell variables in maintainer scripts.)
pub fn expand_vars(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match lookup(name).filter(|_| len > 0 && !name.is_empty()) {
            Some(v) => {
                out.push_str(&v);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// Lays `closure` out under `dest_root`: directories, files (with their permission bits) and
/// symlinks, at the same paths as inside the original root. Existing files and symlinks at those
/// paths are replaced; an existing directory where a file or symlink must go is an error.
pub fn copy_into(closure: &Closure, dest_root: &Path) -> Result<(), ElfError> {
    for entry in &closure.entries {
        let rel = entry.path.strip_prefix("/").unwrap_or(&entry.path);
        let dest = dest_root.join(rel);
        let layout_error = |reason: String| ElfError::Layout {
            path: entry.path.clone(),
            dest_root: dest_root.to_path_buf(),
            reason,
        };
        let existing = match fs_err::symlink_metadata(&dest) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        match &entry.kind {
            EntryKind::Dir => match existing {
                None => fs_err::create_dir_all(&dest)?,
                Some(meta) if meta.is_dir() => {}
                Some(meta) if meta.file_type().is_symlink() && dest.is_dir() => {}
                Some(_) => {
                    return Err(layout_error(
                        "something other than a directory is already there".into(),
                    ))
                }
            },
            EntryKind::File { source } => {
                if let Some(meta) = existing {
                    if meta.is_dir() {
                        return Err(layout_error("a directory is already there".into()));
                    }
                    fs_err::remove_file(&dest)?;
                }
                if let Some(dir) = dest.parent() {
                    fs_err::create_dir_all(dir)?;
                }
                fs_err::copy(source, &dest)?;
            }
            EntryKind::Symlink { target } => {
                if let Some(meta) = existing {
                    if meta.file_type().is_symlink() && fs_err::read_link(&dest)? == *target {
                        continue;
                    }
                    if meta.is_dir() {
                        return Err(layout_error(format!(
                            "a directory is already there, where a symbolic link to {} belongs",
                            target.display()
                        )));
                    }
                    fs_err::remove_file(&dest)?;
                }
                if let Some(dir) = dest.parent() {
                    fs_err::create_dir_all(dir)?;
                }
                fs_err::os::unix::fs::symlink(target, &dest)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_string_tokens_are_substituted() {
        let s = |t: &str| substitute(t, "/opt/app/bin", "lib/x86_64-linux-gnu", "x86_64");
        assert_eq!(s("$ORIGIN/../lib"), "/opt/app/bin/../lib");
        assert_eq!(s("${ORIGIN}/../lib"), "/opt/app/bin/../lib");
        assert_eq!(s("/opt/$LIB/$PLATFORM"), "/opt/lib/x86_64-linux-gnu/x86_64");
        assert_eq!(s("/opt/${LIB}x"), "/opt/lib/x86_64-linux-gnux");
        assert_eq!(s("$ORIGINAL/x"), "$ORIGINAL/x");
        assert_eq!(s("/a/$"), "/a/$");
        assert_eq!(s("/a/${ORIGIN"), "/a/${ORIGIN");
    }

    fn entry(path: &str, kind: EntryKind) -> ClosureEntry {
        ClosureEntry {
            path: PathBuf::from(path),
            kind,
        }
    }

    #[test]
    fn lookup_follows_the_closures_own_symlinks() {
        let link = |t: &str| EntryKind::Symlink {
            target: PathBuf::from(t),
        };
        let file = EntryKind::File {
            source: PathBuf::from("/src"),
        };
        let mut entries = vec![
            entry("/lib", link("usr/lib")),
            entry("/lib64", link("usr/lib64")),
            entry("/usr", EntryKind::Dir),
            entry("/usr/lib", EntryKind::Dir),
            entry("/usr/lib/x86_64-linux-gnu", EntryKind::Dir),
            entry(
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                file.clone(),
            ),
            entry("/usr/lib64", EntryKind::Dir),
            entry(
                "/usr/lib64/ld-linux-x86-64.so.2",
                link("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            ),
            entry("/loop", link("loop")),
        ];
        entries.sort();
        let closure = Closure {
            entries,
            loaded: vec![],
            extra_library_dirs: vec![],
        };
        let found = closure
            .lookup(Path::new("/lib64/ld-linux-x86-64.so.2"))
            .unwrap();
        assert_eq!(
            found.path,
            Path::new("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        assert_eq!(found.kind, file);
        assert_eq!(
            closure.lookup(Path::new("/lib64")).unwrap().path,
            Path::new("/usr/lib64")
        );
        assert!(closure.lookup(Path::new("/lib64/libc.so.6")).is_none());
        assert!(closure.lookup(Path::new("/loop")).is_none());
        assert!(closure
            .lookup(Path::new(
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2/x"
            ))
            .is_none());
    }
}
