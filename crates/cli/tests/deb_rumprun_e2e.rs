//! End to end: Debian packages rebuilt from Debian's own source packages with a real Rumprun
//! toolchain and run as unikernels under QEMU — nginx serves Debian's welcome page, redis
//! answers PING/SET/GET — and the refusals (a daemon that forks, a package without a source
//! package). Needs the toolchain (`rumprun_or_skip`), QEMU and apt's archive (the source
//! packages are downloaded through bakeoff's own deb-src list); each test skips with a printed
//! reason otherwise, and fails instead under BAKEOFF_REQUIRE_ENGINES=1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A cold source build of nginx took ~2 min here, redis ~1–3 min (2 shared cores).
const BUILD_AND_BOOT: Duration = Duration::from_secs(20 * 60);

fn apt_or_skip(test: &str) -> bool {
    let ok = Command::new("apt-get")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!("{test}: apt-get is missing and BAKEOFF_REQUIRE_ENGINES=1");
        }
        eprintln!("SKIPPED {test}: apt-get is not installed");
    }
    ok
}

/// Runs a command to its end or kills it after `limit` (then panics); returns its status,
/// stdout and stderr.
fn output_within(cmd: &mut Command, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} took over {limit:?}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    (status, stdout, stderr)
}

/// Runs bakeoff and requires success within `limit`; returns stdout.
fn ok_within(env: &Env, args: &[&str], limit: Duration) -> String {
    let (status, stdout, stderr) = output_within(&mut env.cmd(args), limit);
    eprintln!("$ bakeoff {}\n{stdout}{stderr}", args.join(" "));
    assert!(
        status.success(),
        "bakeoff {} failed: {stderr}",
        args.join(" ")
    );
    stdout
}

fn ready(test: &str) -> bool {
    rumprun_or_skip(test) && qemu_or_skip(test) && apt_or_skip(test)
}

/// The instance is gone from `ps`, and no QEMU of this test's state dir is left.
fn assert_removed(env: &Env, name: &str) {
    env.ok(&["rm", "-f", name]);
    assert!(env.ps_row(name).is_none(), "{name} still listed");
    let state = env.dir.path().join("state").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !qemu_pids(&state).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(qemu_pids(&state).is_empty(), "QEMU left behind for {name}");
}

#[test]
fn debian_nginx_rebuilt_from_source_serves_debians_welcome_page_on_rumprun() {
    let test = "debian_nginx_rebuilt_from_source_serves_debians_welcome_page_on_rumprun";
    if !ready(test) {
        return;
    }
    let env = Env::new();
    let check = env.ok(&["check", "deb:nginx"]);
    assert!(
        check.contains("rebuilt from Debian's source package nginx 1.22.1 with the Rumprun toolchain, as one process (master_process off; daemon off;)"),
        "{check}"
    );

    let built: serde_json::Value = serde_json::from_str(&ok_within(
        &env,
        &["build", "deb:nginx", "--target", "rumprun", "--json"],
        BUILD_AND_BOOT,
    ))
    .unwrap();
    let image = &built["images"][0];
    assert_eq!(image["files"]["kernel"], "nginx-hw_virtio.bin");
    // The toolchain has the Xen platform: the PV bake is made beside it.
    assert_eq!(image["files"]["xen_kernel"], "nginx-xen_pv.bin");
    let dir = std::path::PathBuf::from(image["dir"].as_str().unwrap());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("debsrc.json")).unwrap()).unwrap();
    assert_eq!(record["source_package"], "nginx");
    assert_eq!(record["build_system"], "NginxAuto");
    assert_eq!(
        record["args"],
        serde_json::json!(["-g", "daemon off; master_process off;"])
    );

    let (port, name, _guard) = run_detached(&env, "deb:nginx", "nginx", 80);
    let body = wait_http(port, Duration::from_secs(60));
    assert!(body.contains("<title>Welcome to nginx!</title>"), "{body}");
    assert!(
        body.contains("If you see this page, the nginx web server is successfully installed"),
        "{body}"
    );
    // Debian's own file name, from Debian's default site (root /var/www/html).
    let (status, page) = http_get(port, "/index.nginx-debian.html").unwrap();
    assert_eq!(status, 200, "{page}");
    let row = env.ps_row(&name).unwrap();
    assert_eq!(row["platform"], "rumprun");
    assert_eq!(row["status"], "running");
    let logs = env.ok(&["logs", &name]);
    assert!(logs.contains("=== calling \"nginx\" main() ==="), "{logs}");

    env.ok(&["stop", &name]);
    let row = env.ps_row(&name).unwrap();
    assert!(
        row["status"].as_str().unwrap().starts_with("exited"),
        "{row}"
    );
    assert_removed(&env, &name);
}

/// One RESP exchange per command; returns what redis answered.
fn resp(port: u16, commands: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    for c in commands {
        write!(s, "{c}\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

#[test]
fn debian_redis_rebuilt_from_source_answers_ping_set_get_on_rumprun() {
    let test = "debian_redis_rebuilt_from_source_answers_ping_set_get_on_rumprun";
    if !ready(test) {
        return;
    }
    let env = Env::new();
    let check = env.ok(&["check", "deb:redis-server"]);
    assert!(
        check.contains("rebuilt from Debian's source package redis 7.0.15 with the Rumprun toolchain, as one process"),
        "{check}"
    );
    let (port, name, _guard) = run_detached(&env, "deb:redis-server", "redis", 6379);
    // Ready means redis's own "Ready to accept connections" (QEMU's forwarder accepts earlier).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = env.ok(&["logs", &name]);
        if logs.contains("Ready to accept connections") {
            break;
        }
        assert!(Instant::now() < deadline, "redis never got ready: {logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = resp(port, &["PING", "SET bakeoff unikernel", "GET bakeoff"]);
    assert_eq!(got, "+PONG\r\n+OK\r\n$9\r\nunikernel\r\n");
    env.ok(&["stop", &name]);
    assert_removed(&env, &name);
}

/// Removes an instance when the test ends, however it ends.
/// `run APP --on rumprun -d` published on a free port of 127.0.0.1; removed when the guard drops.
fn run_detached<'a>(
    env: &'a Env,
    app: &str,
    label: &str,
    guest_port: u16,
) -> (u16, String, Removal<'a>) {
    let port = free_port();
    let name = format!("e2e-debrr-{label}-{port}");
    let publish = format!("127.0.0.1:{port}:{guest_port}");
    let guard = Removal(env, name.clone());
    ok_within(
        env,
        &[
            "run", app, "--on", "rumprun", "-p", &publish, "--name", &name, "-d",
        ],
        BUILD_AND_BOOT,
    );
    (port, name, guard)
}

struct Removal<'a>(&'a Env, String);

impl Drop for Removal<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd(&["rm", "-f", &self.1]).output();
    }
}

#[test]
fn a_debian_daemon_that_forks_is_refused_for_rumprun_with_the_reason() {
    let test = "a_debian_daemon_that_forks_is_refused_for_rumprun_with_the_reason";
    if !ready(test) {
        return;
    }
    let env = Env::new();
    // lighttpd's binary calls fork() and execve() (CGI, daemonizing) and bakeoff knows no
    // single-process mode for it.
    let err = env.fails(&[
        "run",
        "deb:lighttpd",
        "--on",
        "rumprun",
        "--name",
        "e2e-debrr-lighttpd",
    ]);
    assert!(
        err.contains("lighttpd cannot run on rumprun: calls fork(): a Rumprun unikernel runs a single process, and bakeoff knows no way to run this daemon as one"),
        "{err}"
    );
    let check = env.ok(&["check", "deb:lighttpd"]);
    assert!(check.contains("rumprun      cannot run"), "{check}");
}

/// A package from a local repository that has binaries but no sources: apt (and bakeoff, which
/// derives its deb-src list from apt's configuration) is pointed at it with APT_CONFIG.
#[test]
fn a_debian_package_without_a_source_package_is_refused_in_one_sentence() {
    let test = "a_debian_package_without_a_source_package_is_refused_in_one_sentence";
    if !ready(test) {
        return;
    }
    let env = Env::new();
    let root = env.dir.path().join("nosrc");
    let pkg = root.join("pkg");
    let repo = root.join("repo");
    for d in ["DEBIAN", "usr/sbin", "lib/systemd/system"] {
        std::fs::create_dir_all(pkg.join(d)).unwrap();
    }
    std::fs::create_dir_all(&repo).unwrap();
    let src = root.join("demo.c");
    std::fs::write(
        &src,
        "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
    )
    .unwrap();
    let cc = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(pkg.join("usr/sbin/bakeoff-nosrc-demo"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(cc.success());
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: bakeoff-nosrc-demo\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: bakeoff tests <tests@invalid>\nDescription: a daemon with no source package\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("lib/systemd/system/bakeoff-nosrc-demo.service"),
        "[Service]\nExecStart=/usr/sbin/bakeoff-nosrc-demo\n",
    )
    .unwrap();
    let built = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&pkg)
        .arg(repo.join("bakeoff-nosrc-demo_1.0-1_amd64.deb"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let scan = Command::new("dpkg-scanpackages")
        .args(["-m", "."])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(scan.status.success(), "{scan:?}");
    std::fs::write(repo.join("Packages"), &scan.stdout).unwrap();
    // An index of sources that has none.
    std::fs::write(repo.join("Sources"), "").unwrap();
    std::fs::write(
        root.join("sources.list"),
        format!("deb [trusted=yes] file:{} ./\n", repo.display()),
    )
    .unwrap();
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let conf = root.join("apt.conf");
    std::fs::write(
        &conf,
        format!(
            "Dir::Etc::SourceList \"{0}/sources.list\";\nDir::Etc::SourceParts \"{0}/parts.d\";\nDir::State::Lists \"{0}/lists\";\nDir::Cache \"{0}/cache\";\n",
            root.display()
        ),
    )
    .unwrap();
    let (status, _, err) = output_within(
        Command::new("apt-get")
            .args(["-q", "update"])
            .env("APT_CONFIG", &conf),
        Duration::from_secs(120),
    );
    assert!(status.success(), "{err}");

    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let _guard = Removal(&env, "e2e-debrr-nosrc".into());
    let mut cmd = env.cmd(&[
        "run",
        "deb:bakeoff-nosrc-demo",
        "--on",
        "rumprun",
        "-p",
        &publish,
        "--name",
        "e2e-debrr-nosrc",
    ]);
    cmd.env("APT_CONFIG", &conf);
    let (status, _, err) = output_within(&mut cmd, BUILD_AND_BOOT);
    eprintln!("{err}");
    assert!(!status.success());
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(
        last.contains("deb:bakeoff-nosrc-demo has no source package in the deb-src lists bakeoff derived from this host's apt sources"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A configuration that asks for workers and daemonizing (a user's nginx.conf given with
/// bakeoff.toml `[[files]]`) is overridden for the unikernel, and `check` says so.
#[test]
fn check_says_a_config_asking_for_workers_and_daemonizing_is_overridden() {
    let test = "check_says_a_config_asking_for_workers_and_daemonizing_is_overridden";
    if !ready(test) {
        return;
    }
    let env = Env::new();
    let app = env.dir.path().join("workers");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("bakeoff.toml"),
        "package = \"nginx\"\n[[files]]\nsrc = \"nginx.conf\"\ndst = \"/etc/nginx/nginx.conf\"\n",
    )
    .unwrap();
    std::fs::write(
        app.join("nginx.conf"),
        "user www-data;\nworker_processes 4;\nmaster_process on;\ndaemon on;\nevents { worker_connections 64; }\nhttp { server { listen 80; root /var/www/html; } }\n",
    )
    .unwrap();
    let check = ok_within(
        &env,
        &["check", app.to_str().unwrap()],
        Duration::from_secs(300),
    );
    for said in [
        "as one process (master_process off; daemon off;)",
        "nginx.conf's `worker_processes 4;` is overridden: it runs as one process",
        "nginx.conf's `master_process on;` is overridden: it runs as one process",
        "nginx.conf's `daemon on;` is overridden: it runs as one process",
    ] {
        assert!(check.contains(said), "{said}\n{check}");
    }
}
