//! Helpers shared by the integration tests: C fixtures compiled with the host's gcc.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `true` if gcc runs; otherwise prints why the calling test is skipped.
pub fn have_gcc() -> bool {
    let ok = Command::new("gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: gcc is not installed");
    }
    ok
}

/// Compiles `src` (a fixture name or a path) to `out` with extra gcc arguments; panics with
/// gcc's message if it fails (gcc is there, so a failure is a real problem).
pub fn gcc(src: &Path, out: &Path, args: &[&str]) -> PathBuf {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut cmd = Command::new("gcc");
    cmd.arg("-O2").arg("-o").arg(out).arg(src);
    cmd.args(args);
    let output = cmd.output().expect("gcc runs");
    assert!(
        output.status.success(),
        "gcc {} failed: {}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    out.to_path_buf()
}

pub fn write_c(dir: &Path, name: &str, code: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, code).unwrap();
    path
}

/// A header-only 64-bit little-endian ELF executable for `machine` (no program headers).
pub fn elf_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // little endian
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    h[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    h
}

/// A 32-bit i386 shared object (a header, padded): a library ld.so skips for a 64-bit program.
pub fn elf32_library() -> Vec<u8> {
    let mut h = vec![0u8; 4096];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 1; // ELFCLASS32
    h[5] = 1;
    h[6] = 1;
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    h[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[40..42].copy_from_slice(&52u16.to_le_bytes());
    h[42..44].copy_from_slice(&32u16.to_le_bytes());
    h[46..48].copy_from_slice(&40u16.to_le_bytes());
    h
}

/// `true` when this process may chroot (root); otherwise prints why the caller skips.
pub fn can_chroot() -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let root = uid.is_ok_and(|u| u == "0");
    let tool = Command::new("chroot")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && tool) {
        eprintln!("skipping the chroot run: it needs root and the chroot command");
    }
    root && tool
}

/// Debian packages fetched with `apt-get download` and unpacked with `dpkg-deb -x` into one
/// staging root, kept under the target's test tmpdir (`key` names it) between runs.
pub fn debian_root(key: &str, packages: &[&str]) -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bakeoff-elf-debs")
        .join(key);
    let root = dir.join("root");
    let done = dir.join("unpacked");
    if done.exists() {
        return Ok(root);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = Command::new("timeout")
        .args(["300", "apt-get", "download"])
        .args(packages)
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-get download {} failed: {}",
            packages.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
        let deb = entry.map_err(|e| e.to_string())?.path();
        if deb.extension().is_some_and(|x| x == "deb") {
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(&root)
                .status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(format!("dpkg-deb -x {} failed", deb.display()));
            }
        }
    }
    std::fs::write(&done, "").map_err(|e| e.to_string())?;
    Ok(root)
}
