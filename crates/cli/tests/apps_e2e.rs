//! End to end with interpreted apps nobody here wrote the runtime for: examples/python-web
//! (Bottle from PyPI) and examples/node-web (`ms` from npm) are built once each, with Debian's
//! python3 / nodejs packages as the interpreter, and serve their page from inside a Docker
//! container and a QEMU microVM. Bad input is refused in one sentence. Skipped (with the
//! reason) when an engine, apt's archive, PyPI or npm is unreachable.

mod common;

use std::time::Duration;

use common::*;

/// Under TCG a microVM with python3 or node answers in ~10 s; allow for a loaded machine.
const BOOT: Duration = Duration::from_secs(150);

/// Builds `app` once (downloading packages and dependencies); false, with the reason printed,
/// when the archive or the registry cannot be reached here.
fn build_or_skip(env: &Env, test: &str, app: &str) -> bool {
    let out = env.run(&["build", app]);
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    for offline in [
        "apt-get download",
        "not installed on this host",
        "was not found on PATH",
        "Could not fetch URL",
        "ENOTFOUND",
        "EAI_AGAIN",
    ] {
        if err.contains(offline) {
            if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
                panic!(
                    "{test}: cannot fetch what {app} needs and BAKEOFF_REQUIRE_ENGINES=1: {err}"
                );
            }
            eprintln!("SKIPPED {test}: cannot fetch what {app} needs here: {err}");
            return false;
        }
    }
    panic!("{test}: bakeoff build {app} failed: {err}");
}

fn serves(app: &str, platform: &str, want: &str) {
    let test = format!("{app}_on_{platform}");
    let ok = match platform {
        "docker" => docker_or_skip(&test),
        _ => qemu_or_skip(&test),
    };
    if !ok {
        return;
    }
    let env = Env::new();
    let path = format!("examples/{app}");
    if !build_or_skip(&env, &test, &path) {
        return;
    }
    let port = free_port();
    let name = format!("e2e-{app}-{platform}-{port}");
    let publish = format!("127.0.0.1:{port}:8080");
    env.ok(&[
        "run", &path, "--on", platform, "-p", &publish, "--name", &name, "-d",
    ]);
    // The body is what the app computed inside: the interpreter's version from Debian and the
    // dependency's behaviour.
    let body = wait_http(port, BOOT);
    assert!(body.starts_with(want), "{test}: body {body:?}");
    if platform == "qemu" {
        assert_boots_the_minimal_kernel(&test, &name);
    }
    env.ok(&["rm", "-f", &name]);
}

#[test]
fn python_web_on_docker() {
    serves(
        "python-web",
        "docker",
        "hello from python 3.11 and bottle 0.13.4",
    );
}

#[test]
fn python_web_on_qemu() {
    serves(
        "python-web",
        "qemu",
        "hello from python 3.11 and bottle 0.13.4",
    );
}

#[test]
fn node_web_on_docker() {
    serves("node-web", "docker", "hello from node 18.");
}

#[test]
fn node_web_on_qemu() {
    serves("node-web", "qemu", "hello from node 18.");
}

#[test]
fn bad_apps_are_refused_in_one_sentence() {
    let env = Env::new();
    let t = tempfile::tempdir().unwrap();
    let write = |dir: &str, file: &str, text: &str| {
        let d = t.path().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), text).unwrap();
        d.display().to_string()
    };
    // A Python file with a syntax error: the file and line, before anything is downloaded.
    let bad = write("syntax", "app.py", "def f(:\n    pass\n");
    let err = env.fails(&["build", &bad]);
    assert!(
        err.contains("the Python app has a syntax error: app.py line 1"),
        "{err}"
    );
    // package.json without a start script (and no main).
    let nostart = write(
        "nostart",
        "package.json",
        r#"{"name": "x", "scripts": {"test": "jest"}}"#,
    );
    let err = env.fails(&["detect", &nostart]);
    assert!(
        err.contains(
            "bakeoff cannot tell how to start this app: it has no `scripts.start` and no `main`"
        ),
        "{err}"
    );
    // A requirement that does not exist on PyPI: pip's own error is shown.
    let dir = write(
        "missing",
        "requirements.txt",
        "bakeoff-no-such-package-7f3a==1.0\n",
    );
    write("missing", "app.py", "print('hi')\n");
    let out = env.run(&["build", &dir]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("apt-get download") {
        eprintln!("SKIPPED the PyPI case: Debian packages cannot be fetched here: {err}");
        return;
    }
    assert!(
        err.contains("pip install (requirements.txt) failed"),
        "{err}"
    );
    assert!(
        err.contains("No matching distribution found for bakeoff-no-such-package-7f3a==1.0"),
        "{err}"
    );
}
