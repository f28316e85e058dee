//! Bad inputs a skeptical user tries (issue 16), through the real binary: each is refused with
//! one sentence and touches nothing outside the state and cache dirs. No engine is needed.

mod common;

use common::*;

/// `rm -f ../../somewhere` used to delete a directory outside the state dir.
#[test]
fn verbs_refuse_path_like_names_and_touch_nothing() {
    let env = Env::new();
    let victim = env.dir.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("instance.json"), "{}").unwrap();
    let abs = victim.display().to_string();
    for name in ["../victim", "../../victim", abs.as_str(), "a/b", ".."] {
        for verb in [&["rm", "-f"][..], &["stop"], &["logs"]] {
            let mut args = verb.to_vec();
            args.push(name);
            let err = env.fails(&args);
            assert!(
                err.contains(&format!("invalid name `{name}`")),
                "{args:?}: {err}"
            );
        }
    }
    assert!(victim.join("instance.json").exists(), "the victim survives");
}

/// `[[files]] dst = "/../../x"` used to make `build` write `x` on the host.
#[test]
fn files_cannot_escape_the_image() {
    let env = Env::new();
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(
        repo_root().join("examples/hello/hello.c"),
        app.join("hello.c"),
    )
    .unwrap();
    std::fs::write(app.join("conf"), "x").unwrap();
    std::fs::write(
        app.join("bakeoff.toml"),
        "[[files]]\nsrc = \"conf\"\ndst = \"/../../../../../../../../../tmp/escaped-by-bakeoff\"\n",
    )
    .unwrap();
    let err = env.fails(&["build", app.to_str().unwrap()]);
    assert!(
        err.contains("`files` entry `conf` → `/../../../../../../../../../tmp/escaped-by-bakeoff`: the destination must stay inside the image"),
        "{err}"
    );
    assert!(!std::path::Path::new("/tmp/escaped-by-bakeoff").exists());
}

#[test]
fn deb_options_are_not_package_names() {
    let env = Env::new();
    let err = env.fails(&["build", "deb:--version"]);
    assert!(
        err.contains("invalid Debian package name `--version`"),
        "{err}"
    );
}

/// A named pipe as APP used to hang `build` forever.
#[test]
fn a_named_pipe_as_app_is_refused() {
    let env = Env::new();
    let fifo = env.dir.path().join("pipe.c");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = env
        .cmd(&["build", fifo.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("build on a named pipe hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("is not a regular file"), "{err}");
}

/// `check` exited 0 when no platform could run the app.
#[test]
fn check_fails_when_no_platform_can_run_the_app() {
    let env = Env::new();
    let out = env
        .cmd(&["check", "/bin/true"])
        .env("PATH", env.dir.path().join("empty-path"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no platform can run /bin/true on this host"),
        "{err}"
    );
}

/// `[[files]] src` could copy any host file (e.g. /etc/shadow) into an image without a word.
#[test]
fn files_from_outside_the_app_dir_are_warned_about() {
    let env = Env::new();
    let app = env.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(
        repo_root().join("examples/hello/hello.c"),
        app.join("hello.c"),
    )
    .unwrap();
    std::fs::write(
        app.join("bakeoff.toml"),
        "[[files]]\nsrc = \"/etc/hostname\"\ndst = \"/etc/copied\"\n",
    )
    .unwrap();
    let out = env.run(&["build", app.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("bakeoff: warning: `[[files]]` copies /etc/hostname into the image at /etc/copied, from outside the app directory"),
        "{err}"
    );
}
