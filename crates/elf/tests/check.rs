//! Verdicts for real programs, as snapshots: what `bakeoff check` tells a user.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bakeoff_elf::{check, inspect, ElfInfo};
use common::{fixture, gcc, have_gcc};

fn compiled(name: &str, out: &Path, args: &[&str]) -> ElfInfo {
    inspect(&gcc(&fixture(name), out, args)).unwrap()
}

#[test]
fn static_http_server() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("http_server.c", &tmp.path().join("srv"), &["-static"]);
    insta::assert_yaml_snapshot!(check(&info, true));
}

#[test]
fn forking_server() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("fork_server.c", &tmp.path().join("srv"), &["-static"]);
    insta::assert_yaml_snapshot!(check(&info, true));
}

#[test]
fn threaded_server() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("thread_server.c", &tmp.path().join("srv"), &["-pthread"]);
    insta::assert_yaml_snapshot!(check(&info, true));
}

#[test]
fn shell_and_exec_program() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("cgi_server.c", &tmp.path().join("cgi"), &[]);
    insta::assert_yaml_snapshot!(check(&info, true));
}

#[test]
fn stripped_static_binary_without_source() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("http_server.c", &tmp.path().join("srv"), &["-static", "-s"]);
    insta::assert_yaml_snapshot!(check(&info, false));
}

#[test]
fn prebuilt_curl() {
    let curl = Path::new("/usr/bin/curl");
    if !curl.exists() {
        eprintln!("skipping: /usr/bin/curl is not installed");
        return;
    }
    let info = inspect(curl).unwrap();
    insta::assert_yaml_snapshot!(check(&info, false));
}

#[test]
fn aarch64_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("arm64-app");
    std::fs::write(&path, common::elf_header(183)).unwrap(); // EM_AARCH64
    let info = inspect(&path).unwrap();
    assert_eq!(info.machine, "aarch64");
    insta::assert_yaml_snapshot!(check(&info, false));
}

/// Debian's nginx binary, fetched with `apt-get download` and unpacked with `dpkg-deb -x`
/// (kept under the target's test tmpdir between runs).
fn debian_nginx() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bakeoff-elf-nginx");
    let binary = dir.join("root/usr/sbin/nginx");
    if binary.is_file() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut last = String::new();
    for package in ["nginx-core", "nginx"] {
        let out = Command::new("timeout")
            .args(["180", "apt-get", "download", package])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !out.status.success() {
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            continue;
        }
        let debs = std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect::<Vec<_>>();
        for deb in debs {
            let status = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(dir.join("root"))
                .status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(format!("dpkg-deb -x {} failed", deb.display()));
            }
        }
        if binary.is_file() {
            return Ok(binary);
        }
    }
    Err(format!(
        "apt-get download nginx-core/nginx did not give /usr/sbin/nginx: {last}"
    ))
}

#[test]
fn prebuilt_debian_nginx() {
    let nginx = match debian_nginx() {
        Ok(path) => path,
        Err(reason) => {
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let info = inspect(&nginx).unwrap();
    assert!(
        info.features.forks && info.features.execs,
        "{:?}",
        info.features
    );
    insta::assert_yaml_snapshot!(check(&info, false));
}
