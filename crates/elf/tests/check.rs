//! Verdicts for real programs, as snapshots: what `bakeoff check` tells a user.

mod common;

use std::path::Path;

use bakeoff_elf::{check, inspect, ElfInfo};
use bakeoff_spec::Origin;
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
    insta::assert_yaml_snapshot!(check(&info, Origin::Source));
}

#[test]
fn forking_server() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("fork_server.c", &tmp.path().join("srv"), &["-static"]);
    insta::assert_yaml_snapshot!(check(&info, Origin::Source));
}

#[test]
fn threaded_server() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("thread_server.c", &tmp.path().join("srv"), &["-pthread"]);
    insta::assert_yaml_snapshot!(check(&info, Origin::Source));
}

#[test]
fn shell_and_exec_program() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("cgi_server.c", &tmp.path().join("cgi"), &[]);
    insta::assert_yaml_snapshot!(check(&info, Origin::Source));
}

#[test]
fn stripped_static_binary_without_source() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let info = compiled("http_server.c", &tmp.path().join("srv"), &["-static", "-s"]);
    insta::assert_yaml_snapshot!(check(&info, Origin::Binary));
}

#[test]
fn prebuilt_curl() {
    let curl = Path::new("/usr/bin/curl");
    if !curl.exists() {
        eprintln!("skipping: /usr/bin/curl is not installed");
        return;
    }
    let info = inspect(curl).unwrap();
    insta::assert_yaml_snapshot!(check(&info, Origin::Binary));
}

#[test]
fn aarch64_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("arm64-app");
    std::fs::write(&path, common::elf_header(183)).unwrap(); // EM_AARCH64
    let info = inspect(&path).unwrap();
    assert_eq!(info.machine, "aarch64");
    insta::assert_yaml_snapshot!(check(&info, Origin::Binary));
}

#[test]
fn prebuilt_debian_nginx() {
    let nginx = match common::debian_root("nginx-only", &["nginx"]) {
        Ok(root) => root.join("usr/sbin/nginx"),
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
    insta::assert_yaml_snapshot!(check(&info, Origin::Package));
}
