//! The initramfs: a deterministic newc cpio holding our PID 1, its config, the kernel modules and
//! the app's rootfs, in LZ4's legacy frame: of the formats the kernel unpacks, the fastest to
//! unpack (under TCG, gzip took about 0.5 s of the boot).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use bakeoff_init::{GuestConfig, CONFIG_PATH};
use fs_err as fs;

use crate::modules::ModuleFile;
use crate::GuestError;

/// What [`write_initramfs`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsInfo {
    /// Bytes on disk (compressed).
    pub size: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Number of cpio entries (files, directories, links, device nodes).
    pub entries: usize,
}

#[derive(Debug, Clone)]
enum Data {
    Host(PathBuf),
    Bytes(Vec<u8>),
    Module(ModuleFile),
}

#[derive(Debug, Clone)]
enum Node {
    Dir { perm: u32 },
    File { perm: u32, data: Data },
    Symlink { target: String },
    Char { perm: u32, major: u32, minor: u32 },
    Block { perm: u32, major: u32, minor: u32 },
    Fifo { perm: u32 },
}

/// The image's file tree, keyed by path without the leading `/`, so that iteration order is
/// the (sorted, parents-first) cpio order.
#[derive(Default)]
struct Tree(BTreeMap<String, Node>);

const MAX_SYMLINK_HOPS: usize = 40;

impl Tree {
    /// Resolves `path` inside the tree, following symlinks in every component (and in the last
    /// one when `follow_last`). Returns the path without a leading `/`.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<String, String> {
        let mut done: Vec<String> = Vec::new();
        let mut todo: VecDeque<String> = path.split('/').map(str::to_string).collect();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let mut candidate = done.clone();
            candidate.push(c.clone());
            let key = candidate.join("/");
            match self.0.get(&key) {
                Some(Node::Symlink { target }) if follow_last || !todo.is_empty() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(format!("too many levels of symbolic links in /{path}"));
                    }
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for part in target.split('/').rev() {
                        todo.push_front(part.to_string());
                    }
                }
                _ => done = candidate,
            }
        }
        Ok(done.join("/"))
    }

    /// Makes `dir` (already resolved) and its parents directories, creating missing ones.
    fn ensure_dirs(&mut self, dir: &str) -> Result<(), String> {
        let mut prefix = String::new();
        for c in dir.split('/').filter(|c| !c.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            match self.0.get(&prefix) {
                None => {
                    self.0.insert(prefix.clone(), Node::Dir { perm: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => return Err(format!("/{prefix} is not a directory in the rootfs")),
            }
        }
        Ok(())
    }

    /// Puts `node` at absolute `path`, following symlinks in its parent directories (so that
    /// `/lib/modules/...` lands in `/usr/lib/modules/...` when `/lib` links to `usr/lib`).
    fn place(&mut self, path: &str, node: Node) -> Result<(), String> {
        let (parent, name) = path
            .trim_start_matches('/')
            .rsplit_once('/')
            .unwrap_or(("", path.trim_start_matches('/')));
        let parent = self.resolve(parent, true)?;
        self.ensure_dirs(&parent)?;
        let key = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}/{name}")
        };
        match (&node, self.0.get(&key)) {
            (Node::Dir { .. }, Some(Node::Dir { .. })) => {} // keep the rootfs's mode
            (_, Some(Node::Dir { .. })) => {
                return Err(format!("/{key} is a directory in the rootfs"))
            }
            _ => {
                self.0.insert(key, node);
            }
        }
        Ok(())
    }

    fn file_at(&self, path: &str) -> Option<&Node> {
        let key = self.resolve(path, true).ok()?;
        self.0.get(&key)
    }
}

/// Reads the rootfs tree (not following symlinks) into `tree`.
fn load_rootfs(rootfs: &Path, tree: &mut Tree) -> Result<(), GuestError> {
    let meta = fs::metadata(rootfs)?;
    if !meta.is_dir() {
        return Err(GuestError::Rootfs {
            path: rootfs.to_path_buf(),
            reason: "it is not a directory".into(),
        });
    }
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            rootfs.to_path_buf()
        } else {
            rootfs.join(&rel)
        };
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| GuestError::Rootfs {
                    path: dir.join(&n),
                    reason: "its name is not UTF-8".into(),
                })?;
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let m = fs::symlink_metadata(&path)?;
            let ft = m.file_type();
            let perm = m.mode() & 0o7777;
            let rdev = m.rdev();
            let major = (((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000)) as u32;
            let minor = ((rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00)) as u32;
            let node = if ft.is_dir() {
                stack.push(key.clone());
                Node::Dir { perm }
            } else if ft.is_file() {
                Node::File {
                    perm,
                    data: Data::Host(path),
                }
            } else if ft.is_symlink() {
                let target = fs::read_link(&path)?;
                let target =
                    target
                        .into_os_string()
                        .into_string()
                        .map_err(|_| GuestError::Rootfs {
                            path: path.clone(),
                            reason: "its symlink target is not UTF-8".into(),
                        })?;
                Node::Symlink { target }
            } else if ft.is_fifo() {
                Node::Fifo { perm }
            } else if ft.is_char_device() {
                Node::Char { perm, major, minor }
            } else if ft.is_block_device() {
                Node::Block { perm, major, minor }
            } else {
                return Err(GuestError::Rootfs {
                    path,
                    reason: "it is a socket, which a cpio image cannot hold".into(),
                });
            };
            tree.0.insert(key, node);
        }
    }
    Ok(())
}

/// Writes the initramfs for `rootfs` to `out` (atomically: a temp file renamed into place).
///
/// Contents, in sorted order with mtime 0, uid/gid 0 and inode numbers by position (so the same
/// inputs give the same bytes): the rootfs tree (modes and symlinks kept), then bakeoff's own
/// entries, which win over the rootfs: `/init` (PID 1, from `init`), `/bakeoff/config.json`,
/// every module at its `dest` (decompressed), `/dev/console` and `/dev/null` nodes (the kernel
/// opens the console before /init runs) and the directories `/proc /sys /dev /tmp /run /etc`.
///
/// `config.modules` may be left empty: it is then filled with the `modules` in the given order.
/// Otherwise every path in it must end up in the image. The absolute `command` must be an
/// executable file in the image.
pub fn write_initramfs(
    rootfs: &Path,
    config: &GuestConfig,
    modules: &[ModuleFile],
    init: &[u8],
    out: &Path,
) -> Result<InitramfsInfo, GuestError> {
    config
        .validate()
        .map_err(|e| GuestError::Config(e.to_string()))?;
    let mut config = config.clone();
    if config.modules.is_empty() {
        config.modules = modules.iter().map(|m| m.dest.clone()).collect();
    }

    let mut tree = Tree::default();
    load_rootfs(rootfs, &mut tree)?;
    let place_err = |path: &str| {
        let rootfs = rootfs.to_path_buf();
        let path = path.to_string();
        move |reason: String| GuestError::Rootfs {
            path: rootfs.clone(),
            reason: format!("cannot place {path}: {reason}"),
        }
    };
    for (dir, perm) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("run", 0o755),
        ("etc", 0o755),
    ] {
        if !tree.0.contains_key(dir) {
            tree.0.insert(dir.to_string(), Node::Dir { perm });
        }
    }
    tree.place(
        "/dev/console",
        Node::Char {
            perm: 0o600,
            major: 5,
            minor: 1,
        },
    )
    .map_err(place_err("/dev/console"))?;
    tree.place(
        "/dev/null",
        Node::Char {
            perm: 0o666,
            major: 1,
            minor: 3,
        },
    )
    .map_err(place_err("/dev/null"))?;
    tree.place(
        "/init",
        Node::File {
            perm: 0o755,
            data: Data::Bytes(init.to_vec()),
        },
    )
    .map_err(place_err("/init"))?;
    let config_json = config.to_json().into_bytes();
    tree.place(
        CONFIG_PATH,
        Node::File {
            perm: 0o644,
            data: Data::Bytes(config_json),
        },
    )
    .map_err(place_err(CONFIG_PATH))?;
    for m in modules {
        tree.place(
            &m.dest,
            Node::File {
                perm: 0o644,
                data: Data::Module(m.clone()),
            },
        )
        .map_err(place_err(&m.dest))?;
    }

    for m in &config.modules {
        if !matches!(tree.file_at(m), Some(Node::File { .. })) {
            return Err(GuestError::Config(format!(
                "it lists the module {m}, which is not in the initramfs"
            )));
        }
    }
    let program = &config.command[0];
    if program.starts_with('/') {
        match tree.file_at(program) {
            Some(Node::File { perm, .. }) if perm & 0o111 != 0 => {}
            Some(Node::File { .. }) => {
                return Err(GuestError::Rootfs {
                    path: rootfs.to_path_buf(),
                    reason: format!("the command {program} is not executable"),
                })
            }
            _ => {
                return Err(GuestError::Rootfs {
                    path: rootfs.to_path_buf(),
                    reason: format!("the command {program} is not in it"),
                })
            }
        }
    }

    let mut entries = 0;
    let (size, sha256) = crate::write_atomically_hashed(out, |w| {
        let mut cpio = CpioWriter {
            w: crate::lz4::Lz4Writer::new(w)?,
            ino: 0,
        };
        for (name, node) in &tree.0 {
            cpio.node(name, node)?;
            entries += 1;
        }
        cpio.trailer()?;
        cpio.w.finish()?;
        Ok(())
    })?;
    Ok(InitramfsInfo {
        size,
        sha256,
        entries,
    })
}

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// A newc ("070701") cpio writer.
struct CpioWriter<W: Write> {
    w: W,
    ino: u32,
}

impl<W: Write> CpioWriter<W> {
    fn node(&mut self, name: &str, node: &Node) -> Result<(), GuestError> {
        match node {
            Node::Dir { perm } => self.entry(name, S_IFDIR | perm, 2, (0, 0), &[])?,
            Node::Symlink { target } => {
                self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())?
            }
            Node::Char { perm, major, minor } => {
                self.entry(name, S_IFCHR | perm, 1, (*major, *minor), &[])?
            }
            Node::Block { perm, major, minor } => {
                self.entry(name, S_IFBLK | perm, 1, (*major, *minor), &[])?
            }
            Node::Fifo { perm } => self.entry(name, S_IFIFO | perm, 1, (0, 0), &[])?,
            Node::File { perm, data } => {
                let bytes = match data {
                    Data::Bytes(b) => std::borrow::Cow::Borrowed(b.as_slice()),
                    Data::Host(p) => std::borrow::Cow::Owned(fs::read(p)?),
                    Data::Module(m) => std::borrow::Cow::Owned(m.read()?),
                };
                self.entry(name, S_IFREG | perm, 1, (0, 0), &bytes)?;
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        self.ino += 1;
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::other(format!(
                "{name} is larger than the 4 GiB a cpio entry can hold"
            ))
        })?;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0
        );
        self.w.write_all(header.as_bytes())?;
        self.w.write_all(name.as_bytes())?;
        self.w.write_all(&[0])?;
        self.pad(110 + namesize)?;
        self.w.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.w.write_all(&[0u8; 3][..n])
    }

    fn trailer(&mut self) -> io::Result<()> {
        self.ino = 0;
        let header = format!(
            "070701{:08X}{:08X}{}{:08X}{:08X}",
            0,
            0,
            "00000000".repeat(9),
            11,
            0
        );
        self.w.write_all(header.as_bytes())?;
        self.w.write_all(b"TRAILER!!!\0")?;
        self.pad(110 + 11)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;

    /// One entry of a parsed newc archive.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Entry {
        pub name: String,
        pub ino: u32,
        pub mode: u32,
        pub uid: u32,
        pub mtime: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    /// An independent newc reader for the tests.
    pub(crate) fn read_cpio(path: &Path) -> Vec<Entry> {
        let mut raw = Vec::new();
        crate::lz4::decode(&std::fs::read(path).unwrap(), &mut raw).unwrap();
        let mut out = Vec::new();
        let mut p = 0;
        let field = |raw: &[u8], p: usize, i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&raw[p + 6 + 8 * i..p + 14 + 8 * i]).unwrap(),
                16,
            )
            .unwrap()
        };
        loop {
            assert_eq!(&raw[p..p + 6], b"070701", "bad magic at {p}");
            let namesize = field(&raw, p, 11) as usize;
            let filesize = field(&raw, p, 6) as usize;
            let name = std::str::from_utf8(&raw[p + 110..p + 110 + namesize - 1])
                .unwrap()
                .to_string();
            let data_start = (p + 110 + namesize).div_ceil(4) * 4;
            let data = raw[data_start..data_start + filesize].to_vec();
            if name == "TRAILER!!!" {
                break;
            }
            out.push(Entry {
                name,
                ino: field(&raw, p, 0),
                mode: field(&raw, p, 1),
                uid: field(&raw, p, 2),
                mtime: field(&raw, p, 5),
                rdev: (field(&raw, p, 9), field(&raw, p, 10)),
                data,
            });
            p = (data_start + filesize).div_ceil(4) * 4;
        }
        out
    }

    fn rootfs(dir: &Path) -> PathBuf {
        let r = dir.join("rootfs");
        std::fs::create_dir_all(r.join("app")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("app/hello"), b"\x7fELF fake app").unwrap();
        std::fs::set_permissions(r.join("app/hello"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::fs::write(r.join("app/data.txt"), b"data").unwrap();
        std::fs::set_permissions(
            r.join("app/data.txt"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        std::os::unix::fs::symlink("hello", r.join("app/hi")).unwrap();
        std::fs::write(r.join("init"), b"an app file called init").unwrap();
        r
    }

    fn config() -> GuestConfig {
        GuestConfig {
            command: vec!["/app/hi".into()],
            ..GuestConfig::default()
        }
    }

    fn module(dir: &Path) -> ModuleFile {
        let src = dir.join("virtio_net.ko");
        std::fs::write(&src, crate::elf::tests::build_elf(1, &[], b"depends=\0")).unwrap();
        ModuleFile {
            name: "virtio_net".into(),
            source: src,
            dest: "/lib/modules/6.1.0-t/kernel/drivers/net/virtio_net.ko".into(),
        }
    }

    #[test]
    fn writes_a_complete_newc_image() {
        let dir = tempfile::tempdir().unwrap();
        let r = rootfs(dir.path());
        let m = module(dir.path());
        let out = dir.path().join("out/initrd.lz4");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let info = write_initramfs(&r, &config(), std::slice::from_ref(&m), b"PID1", &out).unwrap();
        assert_eq!(info.size, std::fs::metadata(&out).unwrap().len());
        assert_eq!(
            info.sha256,
            hex::encode(Sha256::digest(std::fs::read(&out).unwrap()))
        );

        let entries = read_cpio(&out);
        assert_eq!(info.entries, entries.len());
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries must be sorted");
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.name == n)
                .unwrap_or_else(|| panic!("{n} missing: {names:?}"))
        };
        assert_eq!(
            get("init").data,
            b"PID1",
            "our /init wins over the rootfs's"
        );
        assert_eq!(get("init").mode, 0o100755);
        assert_eq!(get("app/hello").mode, 0o104755, "setuid bit kept");
        assert_eq!(get("app/data.txt").mode, 0o100640);
        assert_eq!(
            (get("app/hi").mode, get("app/hi").data.as_slice()),
            (0o120777, &b"hello"[..])
        );
        assert_eq!(
            (get("lib").mode, get("lib").data.as_slice()),
            (0o120777, &b"usr/lib"[..])
        );
        // /lib -> usr/lib: modules land in the real directory.
        let ko = get("usr/lib/modules/6.1.0-t/kernel/drivers/net/virtio_net.ko");
        assert_eq!(ko.data, m.read().unwrap());
        assert_eq!(get("dev/console").mode, 0o020600);
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert_eq!(get("dev/null").rdev, (1, 3));
        assert_eq!(get("tmp").mode, 0o041777);
        for d in [
            "proc",
            "sys",
            "dev",
            "run",
            "etc",
            "bakeoff",
            "usr/lib/modules/6.1.0-t/kernel/drivers/net",
        ] {
            assert_eq!(get(d).mode & 0o170000, 0o040000, "{d} is a directory");
        }
        let cfg =
            GuestConfig::from_json(std::str::from_utf8(&get("bakeoff/config.json").data).unwrap())
                .unwrap();
        assert_eq!(cfg.modules, vec![m.dest.clone()], "module list filled in");
        assert!(entries.iter().all(|e| e.uid == 0 && e.mtime == 0));
        let inos: Vec<u32> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inos, (1..=entries.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let r = rootfs(dir.path());
        let m = module(dir.path());
        let a = write_initramfs(
            &r,
            &config(),
            std::slice::from_ref(&m),
            b"PID1",
            &dir.path().join("a"),
        )
        .unwrap();
        // Touch a file: mtimes must not matter.
        std::fs::write(r.join("app/data.txt"), b"data").unwrap();
        let b = write_initramfs(&r, &config(), &[m], b"PID1", &dir.path().join("b")).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            std::fs::read(dir.path().join("a")).unwrap(),
            std::fs::read(dir.path().join("b")).unwrap()
        );
    }

    #[test]
    fn rejects_what_would_not_boot() {
        let dir = tempfile::tempdir().unwrap();
        let r = rootfs(dir.path());
        let out = dir.path().join("x.lz4");
        let missing = GuestConfig {
            command: vec!["/app/nope".into()],
            ..GuestConfig::default()
        };
        let e = write_initramfs(&r, &missing, &[], b"", &out)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("rootfs {}: the command /app/nope is not in it", r.display())
        );
        let not_exec = GuestConfig {
            command: vec!["/app/data.txt".into()],
            ..GuestConfig::default()
        };
        assert!(write_initramfs(&r, &not_exec, &[], b"", &out)
            .unwrap_err()
            .to_string()
            .contains("is not executable"));
        let bad_module = GuestConfig {
            modules: vec!["/lib/modules/x/y.ko".into()],
            ..config()
        };
        let e = write_initramfs(&r, &bad_module, &[], b"", &out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("it lists the module /lib/modules/x/y.ko, which is not in the initramfs"),
            "{e}"
        );
        let empty = GuestConfig::default();
        assert!(write_initramfs(&r, &empty, &[], b"", &out)
            .unwrap_err()
            .to_string()
            .contains("`command` is empty"));
        let e = write_initramfs(&dir.path().join("nope"), &config(), &[], b"", &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        assert!(!out.exists(), "no output on failure");
        // A relative command is looked up in PATH at run time, so it is not checked here.
        let relative = GuestConfig {
            command: vec!["nginx".into()],
            ..GuestConfig::default()
        };
        write_initramfs(&r, &relative, &[], b"", &out).unwrap();
    }

    #[test]
    fn symlink_resolution_stays_inside_the_tree() {
        let mut t = Tree::default();
        t.0.insert("usr".into(), Node::Dir { perm: 0o755 });
        t.0.insert("usr/lib".into(), Node::Dir { perm: 0o755 });
        t.0.insert(
            "lib".into(),
            Node::Symlink {
                target: "usr/lib".into(),
            },
        );
        t.0.insert(
            "abs".into(),
            Node::Symlink {
                target: "/usr/../usr/lib/".into(),
            },
        );
        t.0.insert(
            "loop".into(),
            Node::Symlink {
                target: "loop".into(),
            },
        );
        assert_eq!(
            t.resolve("lib/modules/x", true).unwrap(),
            "usr/lib/modules/x"
        );
        assert_eq!(t.resolve("/abs/a", true).unwrap(), "usr/lib/a");
        assert_eq!(t.resolve("../../lib", false).unwrap(), "lib");
        assert!(t
            .resolve("loop/x", true)
            .unwrap_err()
            .contains("too many levels"));
    }
}
