//! End to end with real Debian daemons: `deb:nginx` serves its default page and
//! `deb:redis-server` answers PING, on Docker and in a QEMU microVM, from one artifact each;
//! `deb:prometheus-node-exporter`, which bakeoff has no built-in knowledge of, starts from its
//! systemd unit alone on the port a probe run observed; a directory's bakeoff.toml runs a package
//! bakeoff has no built-in command for; bad inputs (a Type=forking unit, a script wrapper) are
//! refused in one sentence. Skipped (with the reason) when an engine or apt's archive is missing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Under TCG a microVM with nginx answers in a few seconds; allow for a loaded machine.
const BOOT: Duration = Duration::from_secs(120);
// No `--memory` for the microVM tests: the driver's default (128 MiB, or the image's estimated
// floor when larger) is what a user gets. Measured with Debian's cloud kernel under TCG, the
// smallest that serves is 82 MiB for nginx and 97 MiB for redis (docs/deb.md).

/// Builds `app` once (downloading its packages); false, with the reason printed, when apt cannot
/// download here.
fn deb_or_skip(env: &Env, test: &str, app: &str) -> bool {
    let out = env.run(&["build", app]);
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("apt-get download") || err.contains("not installed on this host") {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!(
                "{test}: Debian packages cannot be fetched and BAKEOFF_REQUIRE_ENGINES=1: {err}"
            );
        }
        eprintln!("SKIPPED {test}: Debian packages cannot be fetched here: {err}");
        return false;
    }
    panic!("{test}: bakeoff build {app} failed: {err}");
}

/// Sends one command to a Redis-protocol (or memcached text) server; returns the first reply.
fn ask(port: u16, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(format!("{line}\r\n").as_bytes())?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Asks until the reply starts with `want` (or panics after `limit`). A TCP accept alone proves
/// nothing here: QEMU's user networking accepts before the guest listens.
fn wait_reply(port: u16, line: &str, want: &str, limit: Duration) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match ask(port, line) {
            Ok(r) if r.starts_with(want) => return r,
            Ok(r) => last = format!("reply {r:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no `{want}` from 127.0.0.1:{port} within {limit:?}; last: {last}");
}

fn serves_nginx(platform: &str, extra: &[&str], limit: Duration) {
    let test = format!("deb_nginx_on_{platform}");
    let env = Env::new();
    if !deb_or_skip(&env, &test, "deb:nginx") {
        return;
    }
    let port = free_port();
    let name = format!("e2e-deb-nginx-{platform}-{port}");
    let publish = format!("127.0.0.1:{port}:80");
    let mut args = vec![
        "run",
        "deb:nginx",
        "--on",
        platform,
        "-p",
        &publish,
        "--name",
        &name,
        "-d",
    ];
    args.extend_from_slice(extra);
    assert_eq!(env.ok(&args).trim(), name);
    let body = wait_http(port, limit);
    assert!(body.contains("<title>Welcome to nginx!</title>"), "{body}");
    if platform == "qemu" {
        assert_boots_the_minimal_kernel(&test, &name);
    }
    // nginx's access log goes to the instance's output.
    let logs = env.ok(&["logs", &name]);
    assert!(logs.contains("\"GET / HTTP/1.0\" 200 615"), "{logs}");
    env.ok(&["rm", "-f", &name]);
    assert!(
        http_get(port, "/").is_err(),
        "nginx still answers after rm -f"
    );
}

fn answers_ping(platform: &str, extra: &[&str], limit: Duration) {
    let test = format!("deb_redis_on_{platform}");
    let env = Env::new();
    if !deb_or_skip(&env, &test, "deb:redis-server") {
        return;
    }
    let port = free_port();
    let name = format!("e2e-deb-redis-{platform}-{port}");
    let publish = format!("127.0.0.1:{port}:6379");
    let mut args = vec![
        "run",
        "deb:redis-server",
        "--on",
        platform,
        "-p",
        &publish,
        "--name",
        &name,
        "-d",
    ];
    args.extend_from_slice(extra);
    assert_eq!(env.ok(&args).trim(), name);
    assert_eq!(wait_reply(port, "PING", "+PONG", limit), "+PONG\r\n");
    assert_eq!(ask(port, "SET bakeoff deb").unwrap(), "+OK\r\n");
    assert_eq!(ask(port, "GET bakeoff").unwrap(), "$3\r\ndeb\r\n");
    let logs = env.ok(&["logs", &name]);
    assert!(logs.contains("Ready to accept connections"), "{logs}");
    env.ok(&["rm", "-f", &name]);
}

/// A Debian daemon bakeoff knows nothing of: its command, environment file and user come from
/// prometheus-node-exporter.service, its port (9100) from a probe run of the build.
fn node_exporter_serves_metrics(platform: &str, limit: Duration) {
    let test = format!("deb_node_exporter_on_{platform}");
    let env = Env::new();
    if !deb_or_skip(&env, &test, "deb:prometheus-node-exporter") {
        return;
    }
    let detected = env.ok(&["detect", "deb:prometheus-node-exporter"]);
    assert!(
        detected.contains("command:  /usr/bin/prometheus-node-exporter\n"),
        "{detected}"
    );
    assert!(detected.contains("ports:    9100 (observed)"), "{detected}");
    // The unit says User=prometheus: the build resolves it in the image's own /etc/passwd.
    let built: serde_json::Value =
        serde_json::from_str(&env.ok(&["build", "deb:prometheus-node-exporter", "--json"]))
            .unwrap();
    let user = &built["user"];
    assert_eq!(user["spec"], "prometheus", "{built}");
    let (uid, gid) = (user["uid"].as_u64().unwrap(), user["gid"].as_u64().unwrap());
    assert_ne!(uid, 0, "{built}");
    let port = free_port();
    let name = format!("e2e-deb-node-exporter-{platform}-{port}");
    let publish = format!("127.0.0.1:{port}:9100");
    let args = [
        "run",
        "deb:prometheus-node-exporter",
        "--on",
        platform,
        "-p",
        &publish,
        "--name",
        &name,
        "-d",
    ];
    assert_eq!(env.ok(&args).trim(), name);
    let body = wait_http(port, limit);
    assert!(body.contains("<title>Node Exporter</title>"), "{body}");
    let (status, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("node_exporter_build_info{"), "{metrics}");
    // Who the daemon runs as, as the kernel reports it: for the container from the host's
    // /proc (the engine gives the PID), for the microVM from /proc inside the guest, which PID 1
    // reads after the exec and prints on the console.
    let want = format!("uid={uid} gid={gid} groups={gid}");
    let seen = match platform {
        "docker" => proc_credentials(container_pid(&format!("bakeoff-{name}"))),
        _ => {
            let logs = env.ok(&["logs", &name]);
            logs.lines()
                .find_map(|l| l.strip_prefix("bakeoff-init: app runs as "))
                .unwrap_or_else(|| panic!("no `app runs as` line in the console: {logs}"))
                .to_string()
        }
    };
    assert_eq!(seen, want, "{platform}");
    env.ok(&["rm", "-f", &name]);
}

/// The PID (in the host's namespace) of a container's main process, from the Engine API.
fn container_pid(container: &str) -> u32 {
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket", "/var/run/docker.sock"])
        .arg(format!("http://localhost/containers/{container}/json"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["State"]["Pid"]
        .as_u64()
        .expect("a running container has a PID") as u32
}

/// `uid=U gid=G groups=A,B` from /proc/PID/status (real uid and gid; every one of the four
/// uid/gid fields must agree: no saved root id).
fn proc_credentials(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let (uids, gids) = (field("Uid:"), field("Gid:"));
    assert!(uids.iter().all(|u| *u == uids[0]), "{status}");
    assert!(gids.iter().all(|g| *g == gids[0]), "{status}");
    format!(
        "uid={} gid={} groups={}",
        uids[0],
        gids[0],
        field("Groups:").join(",")
    )
}

/// `deb:prometheus-alertmanager` runs as `prometheus` (its unit's `User=`) and writes its state
/// under /var/lib/prometheus/alertmanager, which its postinst chowns to that user: the directory
/// must be the user's in the image (Docker) and on the guest (PID 1 gives it before the start),
/// else the daemon's writes fail with "permission denied".
fn daemon_writes_what_it_owns(platform: &str, limit: Duration) {
    let test = format!("deb_daemon_writes_what_it_owns_on_{platform}");
    let env = Env::new();
    let app = "deb:prometheus-alertmanager";
    if !deb_or_skip(&env, &test, app) {
        return;
    }
    let built: serde_json::Value =
        serde_json::from_str(&env.ok(&["build", app, "--json"])).unwrap();
    let dir = "/var/lib/prometheus/alertmanager";
    assert!(
        built["user"]["owns"]
            .as_array()
            .is_some_and(|o| o.iter().any(|p| p == dir)),
        "{built}"
    );
    let uid = built["user"]["uid"].as_u64().unwrap();
    let port = free_port();
    let name = format!("e2e-deb-owns-{platform}-{port}");
    let publish = format!("127.0.0.1:{port}:9093");
    let args = [
        "run", app, "--on", platform, "-p", &publish, "--name", &name, "-d",
    ];
    assert_eq!(env.ok(&args).trim(), name);
    wait_http(port, limit);
    if platform == "docker" {
        use std::os::unix::fs::MetadataExt;
        let pid = container_pid(&format!("bakeoff-{name}"));
        let meta = std::fs::metadata(format!("/proc/{pid}/root{dir}")).unwrap();
        assert_eq!(u64::from(meta.uid()), uid, "{dir} in the container");
    }
    // A silence is state the daemon writes to its directory when it stops.
    let silence = r#"{"matchers":[{"name":"job","value":"e2e","isRegex":false}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2036-01-01T00:00:00Z","createdBy":"e2e","comment":"owned"}"#;
    let posted = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-H",
            "Content-Type: application/json",
            "-d",
            silence,
        ])
        .arg(format!("http://127.0.0.1:{port}/api/v2/silences"))
        .output()
        .unwrap();
    let posted = String::from_utf8_lossy(&posted.stdout);
    assert!(posted.contains("silenceID"), "{posted}");
    env.ok(&["stop", &name]);
    let logs = env.ok(&["logs", &name]);
    assert!(logs.contains("Received SIGTERM"), "{logs}");
    assert!(!logs.to_lowercase().contains("permission denied"), "{logs}");
    if platform == "docker" {
        // The snapshot it wrote on the way out holds the silence.
        let out = env.dir.path().join("silences");
        let cp = std::process::Command::new("docker")
            .arg("cp")
            .arg(format!("bakeoff-{name}:{dir}/silences"))
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            cp.status.success(),
            "{}",
            String::from_utf8_lossy(&cp.stderr)
        );
        let saved = std::fs::read(&out).unwrap();
        assert!(
            String::from_utf8_lossy(&saved).contains("owned"),
            "{saved:?}"
        );
    }
    env.ok(&["rm", "-f", &name]);
}

#[test]
fn deb_daemon_writes_what_it_owns_on_docker() {
    if docker_or_skip("deb_daemon_writes_what_it_owns_on_docker") {
        daemon_writes_what_it_owns("docker", Duration::from_secs(60));
    }
}

#[test]
fn deb_daemon_writes_what_it_owns_on_qemu() {
    if qemu_or_skip("deb_daemon_writes_what_it_owns_on_qemu") {
        daemon_writes_what_it_owns("qemu", BOOT);
    }
}

#[test]
fn deb_daemon_from_its_unit_alone_on_docker() {
    if docker_or_skip("deb_daemon_from_its_unit_alone_on_docker") {
        node_exporter_serves_metrics("docker", Duration::from_secs(60));
    }
}

#[test]
fn deb_daemon_from_its_unit_alone_on_qemu() {
    if qemu_or_skip("deb_daemon_from_its_unit_alone_on_qemu") {
        node_exporter_serves_metrics("qemu", BOOT);
    }
}

/// A single C file that listens on 9090 (not the 8080 of the examples), no bakeoff.toml: the
/// port is observed, not guessed, and `bench` loads it.
#[test]
fn a_c_server_on_an_odd_port_is_benched_without_bakeoff_toml() {
    let test = "a_c_server_on_an_odd_port_is_benched_without_bakeoff_toml";
    if !docker_or_skip(test) {
        return;
    }
    let env = Env::new();
    let app = repo_root().join("examples/odd-port/odd-port.c");
    let app = app.to_str().unwrap();
    let detected = env.ok(&["detect", app]);
    assert!(detected.contains("ports:    9090 (observed)"), "{detected}");
    // A flag wins over what is observed.
    let declared = env.ok(&["detect", app, "--port", "9091"]);
    assert!(declared.contains("ports:    9091 (declared)"), "{declared}");
    let out = env.dir.path().join("report");
    let report = env.ok(&[
        "bench",
        app,
        "--runs",
        "1",
        "--duration",
        "1",
        "--on",
        "docker",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(report.contains("| docker   | measured |"), "{report}");
    // A program that listens on nothing is a batch job: bench says so instead of waiting.
    let batch = c_file(
        &env,
        "batch.c",
        "#include <stdio.h>\nint main(void) { puts(\"done\"); return 0; }\n",
    );
    let detected = env.ok(&["detect", &batch]);
    assert!(
        detected.contains("ports:    none (it exited with status 0"),
        "{detected}"
    );
    let err = env.fails(&[
        "bench",
        &batch,
        "--runs",
        "1",
        "--duration",
        "1",
        "--on",
        "docker",
    ]);
    assert!(err.contains("batch listens on no port"), "{err}");
}

#[test]
fn deb_nginx_serves_its_default_page_on_docker() {
    if docker_or_skip("deb_nginx_serves_its_default_page_on_docker") {
        serves_nginx("docker", &[], Duration::from_secs(30));
    }
}

#[test]
fn deb_redis_answers_ping_on_docker() {
    if docker_or_skip("deb_redis_answers_ping_on_docker") {
        answers_ping("docker", &[], Duration::from_secs(30));
    }
}

#[test]
fn deb_nginx_serves_its_default_page_on_qemu() {
    if qemu_or_skip("deb_nginx_serves_its_default_page_on_qemu") {
        serves_nginx("qemu", &[], BOOT);
    }
}

#[test]
fn deb_redis_answers_ping_on_qemu() {
    if qemu_or_skip("deb_redis_answers_ping_on_qemu") {
        answers_ping("qemu", &[], BOOT);
    }
}

/// A package without a built-in command runs from a directory whose bakeoff.toml names it.
#[test]
fn deb_package_with_a_command_from_bakeoff_toml_on_docker() {
    let test = "deb_package_with_a_command_from_bakeoff_toml_on_docker";
    if !docker_or_skip(test) {
        return;
    }
    let env = Env::new();
    let dir = env.dir.path().join("cache-server");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bakeoff.toml"),
        "package = \"memcached\"\n\
         command = [\"/usr/bin/memcached\", \"-u\", \"memcache\", \"-l\", \"0.0.0.0\", \"-p\", \"11211\"]\n\
         ports = [11211]\n[health]\nkind = \"tcp\"\n",
    )
    .unwrap();
    let app = dir.display().to_string();
    if !deb_or_skip(&env, test, &app) {
        return;
    }
    let port = free_port();
    let name = format!("e2e-deb-memcached-{port}");
    env.ok(&[
        "run",
        &app,
        "--on",
        "docker",
        "-p",
        &format!("127.0.0.1:{port}:11211"),
        "--name",
        &name,
        "-d",
    ]);
    // memcached refuses to run as root: `-u memcache` needs the user its postinst creates.
    let reply = wait_reply(port, "version", "VERSION 1.", Duration::from_secs(30));
    assert!(reply.ends_with("\r\n"), "{reply:?}");
    env.ok(&["rm", "-f", &name]);
}

#[test]
fn deb_bad_inputs_are_refused_in_one_sentence() {
    let env = Env::new();
    let last_line = |err: &str| err.lines().last().unwrap_or_default().to_string();
    let err = env.fails(&["build", "deb:nginxx"]);
    if err.contains("not installed on this host") {
        eprintln!("SKIPPED deb_bad_inputs_are_refused_in_one_sentence: {err}");
        return;
    }
    assert_eq!(last_line(&err), "bakeoff: no Debian package named `nginxx` (apt-cache knows nothing of it; run apt-get update?)");
    // memcached's unit starts a Perl wrapper, not the daemon.
    let err = env.fails(&["build", "deb:memcached"]);
    assert_eq!(
        last_line(&err),
        "bakeoff: deb:memcached: the command /usr/share/memcached/scripts/systemd-memcached-wrapper, \
         a script run by /usr/bin/perl -w is not an ELF program; give the daemon's own program in a \
         bakeoff.toml beside the app: `package = \"memcached\"` and `command = [\"/usr/bin/...\", ...]`"
    );
    // ngircd's unit is Type=forking.
    let err = env.fails(&["build", "deb:ngircd"]);
    assert_eq!(
        last_line(&err),
        "bakeoff: deb:ngircd: ngircd.service is Type=forking: the daemon puts itself in the \
         background, which a container or microVM cannot follow; give the foreground command in a \
         bakeoff.toml beside the app: `package = \"ngircd\"` and `command = [\"/usr/sbin/ngircd\", ...]` \
         with the daemon's own no-detach flag (see its manual)"
    );
    let err = env.fails(&["build", "deb:Nginx"]);
    assert_eq!(
        last_line(&err),
        "bakeoff: invalid Debian package name `Nginx`"
    );
    // A host without apt: PATH holds neither apt-get nor dpkg-deb.
    let empty = env.dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env
        .cmd(&["build", "deb:nginx"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        last_line(&err),
        "bakeoff: deb: inputs need Debian's apt (apt-get, dpkg-deb), which is not installed on this host"
    );
}

#[test]
fn check_of_nginx_names_its_platforms_and_what_its_image_holds() {
    let env = Env::new();
    if !deb_or_skip(
        &env,
        "check_of_nginx_names_its_platforms_and_what_its_image_holds",
        "deb:nginx",
    ) {
        return;
    }
    let out: serde_json::Value =
        serde_json::from_str(&env.ok(&["check", "deb:nginx", "--json"])).unwrap();
    let platform = |name: &str| {
        out["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["platform"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(out["binary"]["path"], "/usr/sbin/nginx");
    // nginx forks its workers: fine on Linux; for the single-process unikernel it is rebuilt
    // from Debian's source package and run as one process (docs/platforms/rumprun.md).
    assert_eq!(platform("docker")["runnable"], true);
    assert_eq!(platform("qemu")["runnable"], true);
    let rumprun = platform("rumprun");
    assert_eq!(rumprun["runnable"], true);
    let reasons = rumprun["reasons"].to_string();
    assert!(
        reasons.contains("rebuilt from Debian's source package nginx")
            && reasons.contains("as one process")
            && reasons.contains("fork"),
        "{reasons}"
    );
    let notes = platform("docker")["reasons"].to_string();
    assert!(
        !notes.contains("holds only this program"),
        "a package's image holds more than the program: {notes}"
    );
}

/// An app that talks to itself over loopback before it serves (a self-check, as some servers
/// and master/worker apps do) is observed too: the probe run's network namespace has its
/// loopback up. A fresh namespace's `lo` is down: the bind works but the connect fails
/// (`Network is unreachable`), so the app used to exit and be reported as listening on nothing.
#[test]
fn an_app_that_reaches_itself_over_loopback_is_observed() {
    let env = Env::new();
    let app = c_file(
        &env,
        "loopback.c",
        r#"
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    int port = 9100 + 91; /* no literal: the port is to be observed, not read */
    a.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind 127.0.0.1:9191"); return 1; }
    listen(s, 8);
    int self = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(self, (struct sockaddr *)&a, sizeof a) != 0) { perror("self-check"); return 1; }
    close(self);
    for (;;) { int c = accept(s, 0, 0); if (c >= 0) close(c); }
}
"#,
    );
    let detected = env.ok(&["detect", &app]);
    assert!(detected.contains("ports:    9191 (observed)"), "{detected}");
}
