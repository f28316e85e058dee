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

/// Runs `bakeoff build APP` and returns (success, stderr, seconds, peak RSS in KiB of the
/// child), killing it after 60 s.
fn build_bounded(env: &Env, app: &std::path::Path) -> (bool, String, f64, u64) {
    let started = std::time::Instant::now();
    let mut child = env
        .cmd(&["build", app.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("build of {} hangs (peak RSS {peak} KiB)", app.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), err, started.elapsed().as_secs_f64(), peak)
}

/// Issue 35 item 7: a FIFO as `[[files]] src`, inside a `[[files]]` directory or in a
/// Makefile app's directory hung `build`; `src = "/dev/zero"` took 2 GB of RSS in 3 s.
#[test]
fn pipes_and_devices_among_an_apps_inputs_do_not_hang_build() {
    let env = Env::new();
    let mkfifo = |p: &std::path::Path| {
        assert!(std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .unwrap()
            .success())
    };
    let hello = repo_root().join("examples/hello/hello.c");
    let app = |name: &str, toml: &str| {
        let dir = env.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&hello, dir.join("hello.c")).unwrap();
        std::fs::write(dir.join("bakeoff.toml"), toml).unwrap();
        dir
    };
    // A pipe or a device named as a file: refused in one sentence, at once.
    let fifo_src = app(
        "fifo-src",
        "[[files]]\nsrc = \"pipe\"\ndst = \"/etc/pipe\"\n",
    );
    mkfifo(&fifo_src.join("pipe"));
    let zero = app(
        "zero-src",
        "[[files]]\nsrc = \"/dev/zero\"\ndst = \"/etc/zero\"\n",
    );
    for (dir, what) in [
        (&fifo_src, "is a named pipe"),
        (&zero, "/dev/zero is a character device"),
    ] {
        let (ok, err, secs, peak) = build_bounded(&env, dir);
        assert!(!ok, "{err}");
        assert!(
            err.contains(what) && err.contains("not a regular file"),
            "{err}"
        );
        assert!(secs < 30.0 && peak < 512 * 1024, "{secs} s, {peak} KiB");
    }
    // Inside a [[files]] directory: hashing skips it, and copying refuses it in a sentence.
    let fifo_dir = app(
        "fifo-dir",
        "[[files]]\nsrc = \"conf\"\ndst = \"/etc/conf\"\n",
    );
    std::fs::create_dir_all(fifo_dir.join("conf")).unwrap();
    std::fs::write(fifo_dir.join("conf/a.conf"), "a").unwrap();
    mkfifo(&fifo_dir.join("conf/pipe"));
    let make = env.dir.path().join("make-app");
    std::fs::create_dir_all(&make).unwrap();
    std::fs::copy(&hello, make.join("hello.c")).unwrap();
    std::fs::write(
        make.join("Makefile"),
        "hello: hello.c\n\tcc -O2 -o hello hello.c\n",
    )
    .unwrap();
    mkfifo(&make.join("pipe"));
    let (ok, err, _, _) = build_bounded(&env, &fifo_dir);
    assert!(!ok, "{err}");
    assert!(
        err.contains("conf/pipe is neither a file, a directory nor a symlink"),
        "{err}"
    );
    // In a Makefile app's directory: skipped; the app builds.
    let (ok, err, _, _) = build_bounded(&env, &make);
    assert!(ok, "{}: {err}", make.display());
}
