//! bakeoff's own guest kernel: Debian's `linux-source-6.1` configured with `make tinyconfig` plus
//! the fragment in `crates/guest/kernel/microvm.config` (exactly what the microVM needs, every
//! driver built in), built once per machine into `<cache>/kernels/minimal-<hash>/` and used by
//! default from then on. The hash covers the source package version, the fragment and the build
//! recipe, so a change to any of them builds a new kernel; nothing else is rebuilt.
//!
//! A build works in a `.build-*` directory beside the result and renames only the finished
//! kernel into place (with [`COMPLETE_MARKER`] written last), so a killed build leaves no half
//! kernel behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fs_err as fs;
use sha2::{Digest, Sha256};

use crate::kernel::Kernel;
use crate::{elf, GuestError};

/// The configuration fragment applied on top of `make tinyconfig`.
pub const MINIMAL_FRAGMENT: &str = include_str!("../kernel/microvm.config");

/// Patches applied to the source before configuring (`patch -p1`), by file name, in order.
/// `boot-timers.patch`, two hunks: `lapic_timer_period=` (a VMM that knows its APIC bus
/// frequency spares the boot the APIC timer's ~0.1 s calibration) and, with `tsc_early_khz=`, no
/// probing for a PIT that QEMU's microvm does not have (~20 ms); both are waits under emulation,
/// not work. `no-init-poison.patch`: the freed init sections, section padding and initrd are not
/// overwritten with 0xcc, so the VMM never backs the padding's pages (~3.5 MB).
/// `free-page-reporting.patch`: free page reporting (virtio-balloon) takes the
/// `page_reporting.page_reporting_order=` the VMM gives (6.1 ignored it and reported only free
/// 2 MiB blocks, which a booted guest hardly has), reports a whole free list per pass, and 0.1 s
/// after a free instead of 2 s, so the memory the boot freed goes back before the first request.
/// `no-pci-is-no-error.patch`: on a machine without PCI (QEMU's microvm, Xen PVH) the kernel says
/// so at info level instead of "PCI: Fatal: No config space access function found" at error
/// level, which was the first line of every microVM's `bakeoff logs`.
/// `no-ioapic-is-no-error.patch`: likewise for the IO-APIC a Xen PVH domain does not have:
/// there "No IOAPIC entries present" is said at info level, not error.
pub const PATCHES: [(&str, &str); 5] = [
    (
        "boot-timers.patch",
        include_str!("../kernel/boot-timers.patch"),
    ),
    (
        "no-init-poison.patch",
        include_str!("../kernel/no-init-poison.patch"),
    ),
    (
        "free-page-reporting.patch",
        include_str!("../kernel/free-page-reporting.patch"),
    ),
    (
        "no-pci-is-no-error.patch",
        include_str!("../kernel/no-pci-is-no-error.patch"),
    ),
    (
        "no-ioapic-is-no-error.patch",
        include_str!("../kernel/no-ioapic-is-no-error.patch"),
    ),
];

/// The minimal kernel's CONFIG_HZ (the fragment's `CONFIG_HZ_100=y`): what a VMM divides its
/// APIC bus frequency by for `lapic_timer_period=`.
pub const MINIMAL_HZ: u32 = 100;

/// The Debian source package the kernel is built from (fetched with `apt-get download`).
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";

/// What the build does, in words; part of the cache key, so change it whenever the steps change.
const RECIPE: &str = "recipe 5: tar -xJf linux-source-6.1.tar.xz; patch -p1 with each of \
PATCHES in order; make O=out tinyconfig; \
append microvm.config to out/.config; make O=out olddefconfig; check every fragment line; \
nice make O=out -j2 bzImage KBUILD_BUILD_USER=bakeoff KBUILD_BUILD_HOST=bakeoff; \
keep arch/x86/boot/bzImage, System.map, and vmlinux's loadable segments without zero runs of 64 KiB or \
more (elf::without_zero_gaps)";

/// Written last into `minimal-<hash>/`: `key=value` lines (source, release, config_hash,
/// build_seconds). A directory without it is never used.
const COMPLETE_MARKER: &str = ".bakeoff-complete";

/// A built minimal kernel and what it was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct MinimalKernel {
    pub kernel: Kernel,
    /// The Debian version of `linux-source-6.1` (e.g. `6.1.192-3`).
    pub source_version: String,
    /// 16 hex digits of SHA-256 over (source version, fragment, recipe): the cache key.
    pub config_hash: String,
    /// `minimal-<hash>/`, holding `bzImage`, `vmlinux`, `System.map`, `config` and the marker.
    pub dir: PathBuf,
    /// How long the build took (cold), as recorded by the build.
    pub build_seconds: Option<f64>,
}

/// The lines of a fragment that set an option: `CONFIG_X=v` or `# CONFIG_X is not set`.
pub fn fragment_lines(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set"))
        })
        .collect()
}

/// The fragment's option lines that `config` (a `.config`) does not honour: a `CONFIG_X=v` that
/// is not in it (Kconfig dropped it: a dependency is missing or the value is invalid), or a
/// `# CONFIG_X is not set` whose option is set anyway (another option selects it). An option
/// that is off and hidden has no line at all, which honours `is not set`.
pub fn missing_fragment_lines(fragment: &str, config: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    let set: std::collections::HashSet<&str> = have
        .iter()
        .filter_map(|l| l.split_once('=').map(|(name, _)| name))
        .collect();
    fragment_lines(fragment)
        .into_iter()
        .filter(|l| match l.strip_prefix("# ") {
            Some(off) => set.contains(off.trim_end_matches(" is not set")),
            None => !have.contains(l),
        })
        .map(str::to_string)
        .collect()
}

/// The cache key of a minimal kernel built from `source_version` with this fragment and recipe.
pub fn minimal_config_hash(source_version: &str) -> String {
    let mut h = Sha256::new();
    let patches = PATCHES.iter().flat_map(|(name, text)| [*name, *text]);
    for part in [source_version, MINIMAL_FRAGMENT, RECIPE]
        .into_iter()
        .chain(patches)
    {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..16].to_string()
}

fn read_marker(dir: &Path) -> Option<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(dir.join(COMPLETE_MARKER)).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    )
}

fn load(dir: &Path) -> Option<MinimalKernel> {
    let m = read_marker(dir)?;
    let source_version = m.get("source")?.clone();
    let config_hash = m.get("config_hash")?.clone();
    // A kernel built from an older fragment or recipe is not this one.
    if config_hash != minimal_config_hash(&source_version) {
        return None;
    }
    let vmlinux = dir.join("vmlinux");
    let bzimage = dir.join("bzImage");
    if !vmlinux.is_file() || !bzimage.is_file() {
        return None;
    }
    Some(MinimalKernel {
        kernel: Kernel {
            version: m
                .get("release")
                .cloned()
                .unwrap_or_else(|| "unknown".into()),
            // What an image counts as its kernel and q35 boots (XZ, a third of the vmlinux);
            // microvm and Xen load the vmlinux.
            bzimage,
            vmlinux,
            // Everything is built in: no modules directory.
            modules_root: dir.join("lib/modules/none"),
        },
        source_version,
        config_hash,
        dir: dir.to_path_buf(),
        build_seconds: m.get("build_seconds").and_then(|s| s.parse().ok()),
    })
}

/// The minimal kernel in `cache_dir/kernels/`, if one was built with today's fragment and recipe
/// (the newest such, when several source versions were built). Reads only the cache: no apt.
pub fn find_minimal_kernel(cache_dir: &Path) -> Option<MinimalKernel> {
    let entries = std::fs::read_dir(cache_dir.join("kernels")).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("minimal-"))
        .filter_map(|e| {
            let k = load(&e.path())?;
            let t = std::fs::metadata(e.path().join(COMPLETE_MARKER))
                .and_then(|m| m.modified())
                .ok()?;
            Some((t, k))
        })
        .max_by_key(|(t, _)| *t)
        .map(|(_, k)| k)
}

/// The candidate version of the source package, from apt's lists (offline).
fn source_version() -> Result<String, GuestError> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", SOURCE_PACKAGE])
        .output()
        .map_err(|e| GuestError::Tool {
            command: "apt-cache show".into(),
            reason: e.to_string(),
        })?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_string()))
        .ok_or_else(|| GuestError::AptLists {
            package: SOURCE_PACKAGE.to_string(),
        })
}

/// Builds the minimal kernel unless it is already in the cache, and returns it. `progress`
/// receives one line per step and, while `make` runs, one line every 30 s. Takes minutes
/// (about 9 with `make -j2` on a 2-core machine); needs bc, bison, flex, libelf-dev, xz, patch and make
/// (scripts/install-deps.sh installs them).
pub fn build_minimal_kernel(
    cache_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<MinimalKernel, GuestError> {
    let version = source_version()?;
    let hash = minimal_config_hash(&version);
    let kernels = cache_dir.join("kernels");
    let final_dir = kernels.join(format!("minimal-{hash}"));
    if let Some(k) = load(&final_dir) {
        return Ok(k);
    }
    for tool in ["make", "gcc", "bc", "bison", "flex", "tar", "xz", "patch"] {
        if which(tool).is_none() {
            return Err(GuestError::Tool {
                command: tool.into(),
                reason: "it is not installed; run scripts/install-deps.sh (the kernel build needs make, gcc, bc, bison, flex, libelf-dev, xz-utils and patch)".into(),
            });
        }
    }
    fs::create_dir_all(&kernels)?;
    remove_stale_builds(&kernels);
    let started = Instant::now();
    let tmp = crate::kernel::scratch_dir(&kernels, ".build-")?;
    let deb = source_deb(cache_dir, &version, progress)?;
    progress(&format!("unpacking {SOURCE_PACKAGE} {version}"));
    let pkg = tmp.path().join("pkg");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&pkg),
        "dpkg-deb -x",
    )?;
    let tarball = pkg.join("usr/src/linux-source-6.1.tar.xz");
    run(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(tmp.path()),
        "tar -xJf linux-source-6.1.tar.xz",
    )?;
    let _ = std::fs::remove_dir_all(&pkg);
    let src = tmp.path().join("linux-source-6.1");
    for (name, text) in PATCHES {
        progress(&format!("applying crates/guest/kernel/{name}"));
        let file = tmp.path().join(name);
        fs::write(&file, text)?;
        run(
            Command::new("patch")
                .args(["-p1", "--forward", "--batch", "--silent", "-i"])
                .arg(&file)
                .current_dir(&src),
            &format!("patch -p1 -i {name}"),
        )?;
    }
    let out = tmp.path().join("out");
    fs::create_dir_all(&out)?;
    let make = |args: &[&str]| {
        let mut c = Command::new("make");
        c.current_dir(&src)
            .arg(format!("O={}", out.display()))
            .args(args)
            .env("KBUILD_BUILD_USER", "bakeoff")
            .env("KBUILD_BUILD_HOST", "bakeoff");
        c
    };
    progress(
        "configuring: make tinyconfig + crates/guest/kernel/microvm.config + make olddefconfig",
    );
    run(&mut make(&["-s", "tinyconfig"]), "make tinyconfig")?;
    let config_path = out.join(".config");
    let mut config = fs::read_to_string(&config_path)?;
    config.push('\n');
    config.push_str(MINIMAL_FRAGMENT);
    fs::write(&config_path, config)?;
    run(&mut make(&["-s", "olddefconfig"]), "make olddefconfig")?;
    let config = fs::read_to_string(&config_path)?;
    let missing = missing_fragment_lines(MINIMAL_FRAGMENT, &config);
    if !missing.is_empty() {
        return Err(GuestError::Kernel {
            path: config_path,
            reason: format!(
                "Kconfig dropped these lines of the fragment (a dependency is missing): {}",
                missing.join(", ")
            ),
        });
    }
    progress("building bzImage with make -j2 (about 6 minutes on 2 cores; progress every 30 s)");
    make_vmlinux(&src, &out, started, progress)?;
    let release = std::fs::read_to_string(out.join("include/config/kernel.release"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| version.split('-').next().unwrap_or(&version).to_string());
    // Only what boots: the loadable segments without their padding runs and without symbols or
    // section headers (16 MB of file held 5.2 MB of kernel; see elf::without_zero_gaps).
    let built = out.join("vmlinux");
    let vmlinux = elf::without_zero_gaps(&fs::read(&built)?).ok_or_else(|| GuestError::Kernel {
        path: built.clone(),
        reason: "the build's vmlinux is not an x86_64 executable ELF".into(),
    })?;
    if !elf::has_pvh_note(&vmlinux) {
        return Err(GuestError::Kernel {
            path: built,
            reason: "the build has no PVH entry note although CONFIG_PVH=y".into(),
        });
    }
    let result = tmp.path().join("result");
    fs::create_dir_all(&result)?;
    fs::write(result.join("vmlinux"), &vmlinux)?;
    fs::copy(out.join("arch/x86/boot/bzImage"), result.join("bzImage"))?;
    // The symbols of the stripped vmlinux, for reading an `initcall_debug` boot timeline.
    fs::copy(out.join("System.map"), result.join("System.map"))?;
    fs::write(result.join("config"), &config)?;
    let seconds = started.elapsed().as_secs_f64();
    fs::write(
        result.join(COMPLETE_MARKER),
        format!(
            "source={version}\nrelease={release}\nconfig_hash={hash}\nbuild_seconds={seconds:.0}\n"
        ),
    )?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?; // a leftover without a valid marker
    }
    match std::fs::rename(&result, &final_dir) {
        Ok(()) => {}
        Err(_) if load(&final_dir).is_some() => {} // another build finished first
        Err(e) => {
            return Err(GuestError::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot move {} to {}: {e}",
                    result.display(),
                    final_dir.display()
                ),
            )))
        }
    }
    progress(&format!("kernel built in {seconds:.0} s"));
    load(&final_dir).ok_or_else(|| GuestError::Kernel {
        path: final_dir.clone(),
        reason: "the finished kernel cannot be read back".into(),
    })
}

/// The source .deb, kept in `<cache>/downloads/` so a new fragment does not download it again.
fn source_deb(
    cache_dir: &Path,
    version: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, GuestError> {
    let downloads = cache_dir.join("downloads");
    let name = format!("{SOURCE_PACKAGE}_{}_all.deb", version.replace(':', "%3a"));
    let deb = downloads.join(&name);
    if deb.is_file() {
        return Ok(deb);
    }
    fs::create_dir_all(&downloads)?;
    progress(&format!(
        "downloading {SOURCE_PACKAGE} {version} with apt-get download (about 140 MB)"
    ));
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&downloads)?;
    let out = Command::new("apt-get")
        .args(["download", "-q", &format!("{SOURCE_PACKAGE}={version}")])
        .current_dir(tmp.path())
        .output()
        .map_err(|e| GuestError::Tool {
            command: "apt-get download".into(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason: Vec<&str> = stderr.lines().filter(|l| l.starts_with("E:")).collect();
        return Err(GuestError::Tool {
            command: format!("apt-get download {SOURCE_PACKAGE}"),
            reason: if reason.is_empty() {
                format!("it exited with {}", out.status)
            } else {
                reason.join(" ")
            },
        });
    }
    let got = fs::read_dir(tmp.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| GuestError::Tool {
            command: format!("apt-get download {SOURCE_PACKAGE}"),
            reason: "it succeeded but left no .deb".into(),
        })?;
    fs::rename(&got, &deb)?;
    Ok(deb)
}

/// `nice make -j2 bzImage` (vmlinux, then its XZ-compressed boot image), reporting the number
/// of compiled files every 30 s.
fn make_vmlinux(
    src: &Path,
    out: &Path,
    started: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<(), GuestError> {
    let log_path = out.join("build.log");
    let mut log = fs::File::create(&log_path)?;
    let mut child = Command::new("nice")
        .args(["-n", "10", "make"])
        .arg(format!("O={}", out.display()))
        .args(["-j2", "bzImage"])
        .current_dir(src)
        .env("KBUILD_BUILD_USER", "bakeoff")
        .env("KBUILD_BUILD_HOST", "bakeoff")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| GuestError::Tool {
            command: "make bzImage".into(),
            reason: e.to_string(),
        })?;
    // stderr on its own thread (so neither pipe fills); stdout counted here.
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut tail: Vec<String> = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
        tail
    });
    let stdout = child.stdout.take().expect("piped");
    let (mut compiled, mut last) = (0u64, Instant::now());
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        use std::io::Write;
        let _ = writeln!(log, "{line}");
        if line.trim_start().starts_with("CC ") {
            compiled += 1;
        }
        if last.elapsed() >= Duration::from_secs(30) {
            last = Instant::now();
            progress(&format!(
                "  {compiled} files compiled, {} s",
                started.elapsed().as_secs()
            ));
        }
    }
    let status = child.wait().map_err(|e| GuestError::Tool {
        command: "make bzImage".into(),
        reason: e.to_string(),
    })?;
    let tail = err_thread.join().unwrap_or_default();
    if !status.success() {
        return Err(GuestError::Tool {
            command: "make bzImage".into(),
            reason: format!("{} ({status})", tail.join(" | ")),
        });
    }
    Ok(())
}

/// Removes `.build-*` directories left by builds killed more than three hours ago.
fn remove_stale_builds(kernels: &Path) {
    let Ok(entries) = std::fs::read_dir(kernels) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3 * 3600));
        if old && e.file_name().to_string_lossy().starts_with(".build-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<(), GuestError> {
    let out = cmd.output().map_err(|e| GuestError::Tool {
        command: what.into(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(GuestError::Tool {
            command: what.into(),
            reason: format!(
                "{} ({})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                out.status
            ),
        })
    }
}

/// Whether `kernel` is a minimal kernel built by bakeoff (its directory holds the marker).
pub fn is_minimal_kernel(kernel: &Kernel) -> bool {
    kernel.vmlinux.parent().is_some_and(|dir| {
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("minimal-"))
            && load(dir).is_some()
    })
}

/// Why an app cannot run on the minimal kernel, if it cannot: the kernel has no module support,
/// so an app whose files include kernel modules (it expects to load them) needs Debian's kernel.
/// One phrase naming the feature and the file that shows the need.
pub fn minimal_kernel_lacks(rootfs: &Path) -> Option<String> {
    let modules = rootfs.join("lib/modules");
    let mut stack = vec![modules.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > 100_000 {
                return None;
            }
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if name.ends_with(".ko")
                || name.ends_with(".ko.xz")
                || name.ends_with(".ko.zst")
                || name.ends_with(".ko.gz")
            {
                let shown = p.strip_prefix(rootfs).unwrap_or(&p).display().to_string();
                return Some(format!(
                    "the app ships kernel modules (/{shown}) and the minimal kernel has no module support (CONFIG_MODULES is off)"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patches_are_unified_diffs_and_the_fragment_sets_their_hz() {
        for (name, text) in PATCHES {
            assert!(name.ends_with(".patch"));
            assert!(text.starts_with("--- a/"), "{name}");
            assert!(
                text.contains("\n+++ b/") && text.contains("\n@@ "),
                "{name}"
            );
        }
        // The APIC timer's ticks per jiffy that a VMM passes depend on the kernel's HZ.
        assert!(fragment_lines(MINIMAL_FRAGMENT)
            .contains(&format!("CONFIG_HZ_{MINIMAL_HZ}=y").as_str()));
        // A change to a patch is a new kernel.
        let h = minimal_config_hash("6.1.192-3");
        assert_eq!(h.len(), 16);
        assert_eq!(h, minimal_config_hash("6.1.192-3"));
        assert_ne!(h, minimal_config_hash("6.1.192-4"));
    }

    #[test]
    fn fragment_lines_are_the_option_lines() {
        let f = "# a comment\n\nCONFIG_A=y\n# CONFIG_B is not set\n  CONFIG_C=\"x\"\n# CONFIG_D\n";
        assert_eq!(
            fragment_lines(f),
            vec!["CONFIG_A=y", "# CONFIG_B is not set", "CONFIG_C=\"x\""]
        );
    }

    #[test]
    fn the_checker_names_each_dropped_line() {
        let f = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n";
        let config = "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n";
        assert_eq!(
            missing_fragment_lines(f, config),
            vec!["# CONFIG_B is not set", "CONFIG_C=y"]
        );
        let full = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=y\n";
        assert!(missing_fragment_lines(f, full).is_empty());
        // An option that is off and hidden by its dependencies has no line: that is `not set`.
        assert!(missing_fragment_lines(f, "CONFIG_A=y\nCONFIG_C=y\n").is_empty());
        // `CONFIG_BB=y` does not set `CONFIG_B`.
        assert!(missing_fragment_lines(f, "CONFIG_A=y\nCONFIG_BB=y\nCONFIG_C=y\n").is_empty());
        // A value must match exactly, not as a prefix.
        assert_eq!(
            missing_fragment_lines("CONFIG_HZ=100\n", "CONFIG_HZ=1000\n"),
            vec!["CONFIG_HZ=100"]
        );
    }

    #[test]
    fn the_fragment_has_what_the_microvm_needs() {
        let lines = fragment_lines(MINIMAL_FRAGMENT);
        for needed in [
            "CONFIG_PVH=y",
            "CONFIG_VIRTIO_MMIO=y",
            "CONFIG_VIRTIO_PCI=y",
            "CONFIG_VIRTIO_NET=y",
            "CONFIG_VIRTIO_BALLOON=y",
            "CONFIG_SERIAL_8250_CONSOLE=y",
            "CONFIG_ACPI_BUTTON=y",
            "CONFIG_RD_GZIP=y",
            "CONFIG_EPOLL=y",
            "CONFIG_XEN_PVH=y",
            "CONFIG_XEN_NETDEV_FRONTEND=y",
            "# CONFIG_MODULES is not set",
        ] {
            assert!(
                lines.contains(&needed),
                "{needed} missing from the fragment"
            );
        }
    }

    #[test]
    fn the_hash_covers_the_source_version() {
        let a = minimal_config_hash("6.1.192-3");
        assert_eq!(a.len(), 16);
        assert_eq!(a, minimal_config_hash("6.1.192-3"));
        assert_ne!(a, minimal_config_hash("6.1.193-1"));
    }

    #[test]
    fn an_incomplete_or_stale_build_is_not_used() {
        let cache = tempfile::tempdir().unwrap();
        let hash = minimal_config_hash("6.1.192-3");
        let dir = cache.path().join(format!("kernels/minimal-{hash}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinux"), b"x").unwrap();
        assert!(find_minimal_kernel(cache.path()).is_none(), "no marker yet");
        std::fs::write(
            dir.join(COMPLETE_MARKER),
            "source=6.1.192-3\nrelease=6.1.192\nconfig_hash=0000000000000000\n",
        )
        .unwrap();
        assert!(find_minimal_kernel(cache.path()).is_none(), "wrong hash");
        std::fs::write(
            dir.join(COMPLETE_MARKER),
            format!("source=6.1.192-3\nrelease=6.1.192\nconfig_hash={hash}\nbuild_seconds=509\n"),
        )
        .unwrap();
        assert!(
            find_minimal_kernel(cache.path()).is_none(),
            "a build of an older recipe, without bzImage"
        );
        std::fs::write(dir.join("bzImage"), b"x").unwrap();
        let k = find_minimal_kernel(cache.path()).unwrap();
        assert_eq!(k.kernel.bzimage, dir.join("bzImage"));
        assert_eq!(k.kernel.version, "6.1.192");
        assert_eq!(k.build_seconds, Some(509.0));
        assert!(!k.kernel.modules_root.exists());
    }

    #[test]
    fn an_app_with_kernel_modules_needs_debians_kernel() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(minimal_kernel_lacks(root.path()), None);
        let d = root.path().join("lib/modules/6.1.0-1-amd64/kernel/fs");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("fuse.ko.xz"), b"").unwrap();
        let why = minimal_kernel_lacks(root.path()).unwrap();
        assert!(
            why.contains("/lib/modules/6.1.0-1-amd64/kernel/fs/fuse.ko.xz"),
            "{why}"
        );
        assert!(why.contains("CONFIG_MODULES"), "{why}");
    }
}
