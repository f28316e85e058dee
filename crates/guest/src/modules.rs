//! Kernel modules: resolving names and dependencies into a load order, and reading them
//! (decompressed) for the initramfs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::kernel::Kernel;
use crate::{elf, GuestError};

/// What a guest needs for `eth0` under QEMU, on Debian's kernel where all of these are `=m`:
/// virtio-mmio transport (microvm; devices found through ACPI), virtio-pci transport (q35),
/// and the virtio-net driver. Their dependencies (virtio, virtio_ring, virtio_pci_modern_dev,
/// virtio_pci_legacy_dev, net_failover, failover) come with them.
pub const NET_MODULES: &[&str] = &["virtio_mmio", "virtio_pci", "virtio_net"];

/// Optional: the ACPI power button and evdev, so that QEMU's `system_powerdown` reaches PID 1,
/// which then sends SIGTERM to the app (a graceful stop).
pub const POWER_MODULES: &[&str] = &["button", "evdev"];

/// One module to put into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Module name with `_` (e.g. `virtio_net`).
    pub name: String,
    /// The file on the host, possibly compressed (`.ko.xz`, `.ko.zst`, `.ko.gz`).
    pub source: PathBuf,
    /// Absolute path inside the initramfs, always an uncompressed `.ko`
    /// (e.g. `/lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko`).
    pub dest: String,
}

impl ModuleFile {
    /// The module's ELF bytes, decompressed when the file is compressed.
    pub fn read(&self) -> Result<Vec<u8>, GuestError> {
        read_module(&self.source)
    }
}

fn read_module(path: &Path) -> Result<Vec<u8>, GuestError> {
    let raw = fs::read(path)?;
    let name = path.to_string_lossy();
    let bad = |reason: String| GuestError::Module {
        path: path.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    if name.ends_with(".ko.xz") {
        xz2::read::XzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("cannot decompress it: {e}")))?;
    } else if name.ends_with(".ko.zst") {
        ruzstd::decoding::StreamingDecoder::new(raw.as_slice())
            .map_err(std::io::Error::other)
            .and_then(|mut d| d.read_to_end(&mut out))
            .map_err(|e| bad(format!("cannot decompress it: {e}")))?;
    } else if name.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("cannot decompress it: {e}")))?;
    } else {
        out = raw;
    }
    if !elf::is_x86_64_rel(&out) {
        return Err(bad(
            "it is not an x86_64 kernel module (relocatable ELF)".into()
        ));
    }
    Ok(out)
}

/// `virtio-net.ko.xz` → `virtio_net`; `None` for files that are not modules.
fn module_name(file_name: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file_name.strip_suffix(ext))?;
    Some(bakeoff_init::normalize_module_name(stem))
}

/// Name → path relative to the modules root. From `modules.dep` when depmod has run, otherwise
/// (Debian's package: depmod runs in postinst) by walking the tree.
fn index(root: &Path) -> Result<BTreeMap<String, String>, GuestError> {
    let mut map = BTreeMap::new();
    let dep = root.join("modules.dep");
    if dep.is_file() {
        for line in fs::read_to_string(&dep)?.lines() {
            if let Some((path, _)) = line.split_once(':') {
                if let Some(name) = path.rsplit('/').next().and_then(module_name) {
                    map.entry(name).or_insert_with(|| path.to_string());
                }
            }
        }
        return Ok(map);
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(root.join(&rel))?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ft = e.file_type()?;
            let rel_child = rel.join(e.file_name());
            if ft.is_dir() {
                stack.push(rel_child);
            } else if ft.is_file() {
                if let Some(name) = module_name(&e.file_name().to_string_lossy()) {
                    map.entry(name)
                        .or_insert_with(|| rel_child.to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(map)
}

/// Names of modules compiled into the kernel, from `modules.builtin`.
fn builtin(root: &Path) -> Result<BTreeSet<String>, GuestError> {
    let path = root.join("modules.builtin");
    if !path.is_file() {
        return Ok(BTreeSet::new());
    }
    Ok(fs::read_to_string(&path)?
        .lines()
        .filter_map(|l| l.rsplit('/').next().and_then(module_name))
        .collect())
}

impl Kernel {
    /// Resolves `names` and their dependencies (from each module's `.modinfo` `depends=`) into
    /// the order they must be loaded: dependencies first, each module once. A name that is built
    /// into the kernel (`modules.builtin`) is skipped; so is everything when the kernel has no
    /// modules directory. Every module's `vermagic` must match the kernel release.
    pub fn modules_in_load_order(&self, names: &[&str]) -> Result<Vec<ModuleFile>, GuestError> {
        let root = &self.modules_root;
        if !root.is_dir() {
            return Ok(Vec::new());
        }
        let index = index(root)?;
        let builtin = builtin(root)?;
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in names {
            let name = bakeoff_init::normalize_module_name(name);
            self.visit(
                &name,
                &index,
                &builtin,
                &mut done,
                &mut Vec::new(),
                &mut order,
            )?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        index: &BTreeMap<String, String>,
        builtin: &BTreeSet<String>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        order: &mut Vec<ModuleFile>,
    ) -> Result<(), GuestError> {
        if done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            path.push(name.to_string());
            return Err(GuestError::ModuleCycle {
                chain: path.join(" -> "),
            });
        }
        let Some(rel) = index.get(name) else {
            if builtin.contains(name) {
                done.insert(name.to_string());
                return Ok(());
            }
            return Err(GuestError::ModuleNotFound {
                name: name.to_string(),
                root: self.modules_root.clone(),
            });
        };
        let source = self.modules_root.join(rel);
        let data = read_module(&source)?;
        let info = elf::modinfo(&data);
        let get = |k: &str| {
            info.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        if let Some(vermagic) = get("vermagic") {
            if vermagic.split_whitespace().next() != Some(self.version.as_str()) {
                return Err(GuestError::Module {
                    path: source,
                    reason: format!("it was built for kernel `{vermagic}`, not {}", self.version),
                });
            }
        }
        path.push(name.to_string());
        for dep in get("depends")
            .unwrap_or("")
            .split(',')
            .filter(|d| !d.is_empty())
        {
            self.visit(
                &bakeoff_init::normalize_module_name(dep),
                index,
                builtin,
                done,
                path,
                order,
            )?;
        }
        path.pop();
        let rel_ko = [".xz", ".zst", ".gz"]
            .iter()
            .find_map(|x| rel.strip_suffix(x))
            .unwrap_or(rel);
        order.push(ModuleFile {
            name: name.to_string(),
            source,
            dest: format!("/lib/modules/{}/{}", self.version, rel_ko),
        });
        done.insert(name.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build_elf;

    fn module(depends: &str, vermagic: &str) -> Vec<u8> {
        build_elf(
            1,
            &[],
            format!("license=GPL\0depends={depends}\0vermagic={vermagic} SMP mod_unload\0")
                .as_bytes(),
        )
    }

    fn fake_kernel(dir: &Path, with_dep_file: bool) -> Kernel {
        let root = dir.join("lib/modules/6.1.0-t");
        let v = "6.1.0-t";
        let files = [
            ("kernel/drivers/virtio/virtio_ring.ko", module("", v)),
            ("kernel/drivers/virtio/virtio.ko", module("virtio_ring", v)),
            (
                "kernel/drivers/virtio/virtio_mmio.ko",
                module("virtio,virtio_ring", v),
            ),
            ("kernel/net/core/failover.ko", module("", v)),
            ("kernel/drivers/net/net_failover.ko", module("failover", v)),
            (
                "kernel/drivers/net/virtio_net.ko",
                module("virtio_ring,virtio,net_failover", v),
            ),
            ("kernel/drivers/misc/old.ko", module("", "5.10.0-x")),
            ("kernel/drivers/misc/loop_a.ko", module("loop_b", v)),
            ("kernel/drivers/misc/loop_b.ko", module("loop_a", v)),
        ];
        for (rel, data) in &files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        // A compressed one, with a dash in its file name.
        let mut xz = Vec::new();
        xz2::read::XzEncoder::new(module("virtio", v).as_slice(), 6)
            .read_to_end(&mut xz)
            .unwrap();
        std::fs::create_dir_all(root.join("kernel/drivers/char/hw_random")).unwrap();
        std::fs::write(
            root.join("kernel/drivers/char/hw_random/virtio-rng.ko.xz"),
            xz,
        )
        .unwrap();
        std::fs::write(
            root.join("modules.builtin"),
            "kernel/drivers/block/loop.ko\n",
        )
        .unwrap();
        if with_dep_file {
            let dep: String = files
                .iter()
                .map(|(r, _)| format!("{r}:\n"))
                .chain(["kernel/drivers/char/hw_random/virtio-rng.ko.xz:\n".to_string()])
                .collect();
            std::fs::write(root.join("modules.dep"), dep).unwrap();
        }
        Kernel {
            version: v.into(),
            bzimage: dir.join("bz"),
            vmlinux: dir.join("vm"),
            modules_root: root,
        }
    }

    #[test]
    fn orders_dependencies_first_with_or_without_modules_dep() {
        for with_dep in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let k = fake_kernel(dir.path(), with_dep);
            let mods = k
                .modules_in_load_order(&["virtio_mmio", "virtio-net", "loop"])
                .unwrap();
            let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "virtio_ring",
                    "virtio",
                    "virtio_mmio",
                    "failover",
                    "net_failover",
                    "virtio_net"
                ]
            );
            assert_eq!(
                mods[5].dest,
                "/lib/modules/6.1.0-t/kernel/drivers/net/virtio_net.ko"
            );
            assert_eq!(
                mods[5].source,
                k.modules_root.join("kernel/drivers/net/virtio_net.ko")
            );
        }
    }

    #[test]
    fn decompresses_compressed_modules_and_names_them_ko() {
        let dir = tempfile::tempdir().unwrap();
        let k = fake_kernel(dir.path(), false);
        let mods = k.modules_in_load_order(&["virtio_rng"]).unwrap();
        let last = mods.last().unwrap();
        assert_eq!(last.name, "virtio_rng");
        assert_eq!(
            last.dest,
            "/lib/modules/6.1.0-t/kernel/drivers/char/hw_random/virtio-rng.ko"
        );
        assert_eq!(last.read().unwrap(), module("virtio", "6.1.0-t"));
    }

    #[test]
    fn reports_missing_mismatched_and_cyclic_modules() {
        let dir = tempfile::tempdir().unwrap();
        let k = fake_kernel(dir.path(), false);
        let e = k.modules_in_load_order(&["nope"]).unwrap_err().to_string();
        assert!(e.starts_with("kernel module nope is neither in "), "{e}");
        let e = k.modules_in_load_order(&["old"]).unwrap_err().to_string();
        assert!(
            e.contains("it was built for kernel `5.10.0-x SMP mod_unload`, not 6.1.0-t"),
            "{e}"
        );
        let e = k
            .modules_in_load_order(&["loop_a"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("loop_a -> loop_b -> loop_a"), "{e}");
    }

    #[test]
    fn a_kernel_without_modules_assumes_built_ins() {
        let dir = tempfile::tempdir().unwrap();
        let k = Kernel {
            version: "x".into(),
            bzimage: dir.path().join("a"),
            vmlinux: dir.path().join("b"),
            modules_root: dir.path().join("none"),
        };
        assert_eq!(k.modules_in_load_order(NET_MODULES).unwrap(), vec![]);
    }
}
