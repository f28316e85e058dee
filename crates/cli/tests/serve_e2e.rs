//! `serve` and `switch` against the real engines: one stable address, the example moved between
//! a container and a microVM while the built-in load generator runs, with zero failed requests;
//! a TCP app (redis) switched; failover after SIGKILL of the backend; no orphan after SIGKILL of
//! the front; bad input refused in one sentence.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A VM's start under TCG while the machine is loaded.
const BOOT: Duration = Duration::from_secs(120);

fn ps_services(env: &Env) -> Vec<serde_json::Value> {
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
    ps.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "service")
        .cloned()
        .collect()
}

fn service(env: &Env, name: &str) -> serde_json::Value {
    ps_services(env)
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("service {name} not in ps"))
}

/// Containers whose name starts with `prefix` (the engine's own view).
fn containers(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket", "/var/run/docker.sock"])
        .arg("http://localhost/containers/json?all=1")
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["Names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(|s| s.trim_start_matches('/').to_string()))
        .filter(|n| n.contains(prefix))
        .collect()
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    requests: u64,
    ok: u64,
    failed: u64,
}

/// Runs the built-in load generator against `port` in 1 s rounds until `stop` (at most 15
/// minutes): 2 connections, keep-alive or a new connection per request.
fn load_until(stop: Arc<AtomicBool>, port: u16, keepalive: bool) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(900);
        let mut t = Tally::default();
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let shape = bakeoff_bench::LoadShape {
                connections: 2,
                duration: Duration::from_secs(1),
                keepalive,
                warmup: Duration::ZERO,
                max_requests: Some(100_000),
                ..Default::default()
            };
            let target = bakeoff_bench::LoadTarget::new(SocketAddr::from(([127, 0, 0, 1], port)));
            let r = rt.block_on(bakeoff_bench::load(target, shape)).unwrap();
            t.requests += r.requests + r.errors.total();
            t.ok += r.ok;
            t.failed += r.errors.total() + r.non_2xx;
            if r.errors.total() + r.non_2xx > 0 {
                eprintln!(
                    "load round with failures: {:?}, non-2xx {}",
                    r.errors, r.non_2xx
                );
            }
        }
        t
    })
}

/// "… 1.23 s in all" → 1.23
fn seconds_in_all(out: &str) -> f64 {
    let before = out.split(" s in all").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn http_service_switches_docker_qemu_20_times_without_a_failed_request() {
    let test = "http_service_switches_docker_qemu_20_times_without_a_failed_request";
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let name = format!("e2e-svc-{port}");
    let addr = port.to_string();
    let out = env.ok(&[
        "serve",
        "examples/hello",
        "--port",
        &addr,
        "--name",
        &name,
        "-d",
        "-e",
        "GREETING=served",
    ]);
    assert_eq!(out.trim(), name);
    let (status, body) = http_get(port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("greeting=served host={name}.docker.1")),
        "{body}"
    );
    let row = service(&env, &name);
    assert_eq!(row["status"], "serving");
    assert_eq!(row["platform"], "docker");
    assert_eq!(row["address"], format!("127.0.0.1:{port}"));

    let stop = Arc::new(AtomicBool::new(false));
    let keepalive = load_until(stop.clone(), port, true);
    let close = load_until(stop.clone(), port, false);
    let mut times = (Vec::new(), Vec::new());
    let mut generation = 1;
    for round in 0..10 {
        for to in ["qemu", "docker"] {
            generation += 1;
            let out = env.ok(&["switch", &name, "--to", to]);
            assert!(out.contains("switched"), "{out}");
            if to == "qemu" {
                times.0.push(seconds_in_all(&out));
            } else {
                times.1.push(seconds_in_all(&out));
            }
            let (status, body) = http_get(port, "/").unwrap();
            assert_eq!(status, 200, "round {round}: {body}");
            assert!(
                body.contains(&format!("host={name}.{to}.{generation}")),
                "round {round} to {to}: the body shows another backend: {body}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    let keepalive = keepalive.join().unwrap();
    let close = close.join().unwrap();
    eprintln!("keep-alive load: {keepalive:?}; new connection per request: {close:?}");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    eprintln!(
        "switch docker → qemu: median {:.2} s; qemu → docker: median {:.2} s (20 switches)",
        median(&mut times.0),
        median(&mut times.1)
    );
    assert_eq!(
        keepalive.failed, 0,
        "keep-alive requests failed: {keepalive:?}"
    );
    assert_eq!(close.failed, 0, "requests failed: {close:?}");
    assert!(
        keepalive.ok > 1000 && close.ok > 100,
        "too little load: {keepalive:?} {close:?}"
    );

    // Only the current backend is left; the log tells the story.
    let row = service(&env, &name);
    assert_eq!(row["backends"].as_array().unwrap().len(), 1, "{row}");
    let log = env.ok(&["logs", &name]);
    assert!(log.contains("drained after"), "{log}");
    assert_eq!(log.matches("; switched").count(), 20, "{log}");

    env.ok(&["stop", &name]);
    assert!(
        http_get(port, "/").is_err(),
        "the front still answers after stop"
    );
    assert_eq!(service(&env, &name)["status"], "stopped");
    assert!(containers(&name).is_empty());
    assert!(qemu_pids(&name).is_empty());
    env.ok(&["rm", &name]);
    assert!(ps_services(&env).is_empty());
}

/// The thesis's move, live: a service goes docker → rumprun → qemu → rumprun → docker twice
/// under keep-alive and connection-per-request load, with no failed request.
#[test]
fn http_service_switches_through_the_rumprun_unikernel_without_a_failed_request() {
    let test = "http_service_switches_through_the_rumprun_unikernel_without_a_failed_request";
    if !docker_or_skip(test) || !qemu_or_skip(test) || !rumprun_or_skip(test) {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let name = format!("e2e-uk-{port}");
    env.ok(&[
        "serve",
        "examples/hello",
        "--port",
        &port.to_string(),
        "--name",
        &name,
        "-d",
        "-e",
        "GREETING=moved",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let keepalive = load_until(stop.clone(), port, true);
    let close = load_until(stop.clone(), port, false);
    let mut generation = 1;
    let mut times: Vec<(String, f64)> = Vec::new();
    let mut from = "docker";
    for to in [
        "rumprun", "qemu", "rumprun", "docker", "rumprun", "qemu", "rumprun", "docker",
    ] {
        generation += 1;
        let out = env.ok(&["switch", &name, "--to", to]);
        assert!(out.contains("switched"), "{out}");
        times.push((format!("{from} → {to}"), seconds_in_all(&out)));
        let (status, body) = http_get(port, "/").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&format!("greeting=moved host={name}.{to}.{generation}")),
            "after the switch to {to} the body shows another backend: {body}"
        );
        if to == "rumprun" {
            let row = service(&env, &name);
            assert_eq!(row["platform"], "rumprun", "{row}");
        }
        from = to;
    }
    stop.store(true, Ordering::SeqCst);
    let keepalive = keepalive.join().unwrap();
    let close = close.join().unwrap();
    eprintln!("keep-alive load: {keepalive:?}; new connection per request: {close:?}");
    for (step, secs) in &times {
        eprintln!("FIGURE switch {step}: {secs:.2} s");
    }
    assert_eq!(
        keepalive.failed, 0,
        "keep-alive requests failed: {keepalive:?}"
    );
    assert_eq!(close.failed, 0, "requests failed: {close:?}");
    assert!(
        keepalive.ok > 100 && close.ok > 10,
        "too little load: {keepalive:?} {close:?}"
    );
    env.ok(&["stop", &name]);
    assert!(qemu_pids(&name).is_empty(), "a VMM outlived the service");
    assert!(containers(&name).is_empty());
    env.ok(&["rm", &name]);
}

/// One command to a Redis server on a fresh connection.
fn redis(port: u16, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    redis_on(&mut s, line)
}

fn redis_on(s: &mut TcpStream, line: &str) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{line}\r\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf)?;
    if n == 0 {
        return Err(std::io::Error::other("closed"));
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn run_id(info: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or_else(|| panic!("no run_id in {info}"))
        .trim()
        .to_string()
}

#[test]
fn tcp_service_switch_moves_new_connections_and_drains_open_ones() {
    let test = "tcp_service_switch_moves_new_connections_and_drains_open_ones";
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let name = format!("e2e-tcp-{port}");
    let addr = port.to_string();
    env.ok(&[
        "serve",
        "deb:redis-server",
        "--port",
        &addr,
        "--name",
        &name,
        "-d",
        "--drain",
        "12",
    ]);
    assert_eq!(service(&env, &name)["mode"], "tcp");
    assert_eq!(redis(port, "SET k docker").unwrap(), "+OK\r\n");
    let old_id = run_id(&redis(port, "INFO server").unwrap());
    // A connection opened before the switch stays on the old backend while it drains.
    let mut open = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(redis_on(&mut open, "PING").unwrap(), "+PONG\r\n");

    let switch = {
        let cmd = env.cmd(&["switch", &name, "--to", "qemu"]);
        std::thread::spawn(move || {
            let mut cmd = cmd;
            cmd.output().unwrap()
        })
    };
    // Once the service points at the new backend, new connections reach it…
    let deadline = Instant::now() + BOOT;
    while service(&env, &name)["platform"] != "qemu" {
        assert!(Instant::now() < deadline, "the switch did not happen");
        std::thread::sleep(Duration::from_millis(200));
    }
    let new_id = run_id(&redis(port, "INFO server").unwrap());
    assert_ne!(
        new_id, old_id,
        "a new connection still reached the old backend"
    );
    // …its memory is new (the switch says so)…
    assert_eq!(redis(port, "GET k").unwrap(), "$-1\r\n");
    // …and the open one still talks to the old backend until the drain ends.
    assert_eq!(run_id(&redis_on(&mut open, "INFO server").unwrap()), old_id);
    let out = switch.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 cut"), "{text}");
    assert!(text.contains("in-memory state"), "{text}");
    assert!(
        redis_on(&mut open, "PING").is_err(),
        "the drained connection stayed open"
    );
    assert_eq!(redis(port, "PING").unwrap(), "+PONG\r\n");
    env.ok(&["rm", "-f", &name]);
    assert!(containers(&name).is_empty());
    assert!(qemu_pids(&name).is_empty());
}

/// The pid of the QEMU process of a service's backend.
fn vmm_of(name: &str) -> u32 {
    let pids = qemu_pids(name);
    assert_eq!(pids.len(), 1, "expected one QEMU for {name}: {pids:?}");
    pids[0]
}

#[test]
fn failover_restarts_a_killed_backend_and_a_killed_front_leaves_no_orphan() {
    let test = "failover_restarts_a_killed_backend_and_a_killed_front_leaves_no_orphan";
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let name = format!("e2e-fail-{port}");
    let addr = port.to_string();
    env.ok(&[
        "serve",
        "examples/hello",
        "--port",
        &addr,
        "--name",
        &name,
        "-d",
    ]);
    assert!(wait_http(port, BOOT).contains(&format!("host={name}.docker.1")));

    // The container is killed behind bakeoff's back.
    let killed = std::process::Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "POST",
            "--unix-socket",
            "/var/run/docker.sock",
        ])
        .arg(format!(
            "http://localhost/containers/bakeoff-{name}.docker.1/kill"
        ))
        .status()
        .unwrap();
    assert!(killed.success());
    let t0 = Instant::now();
    // Requests never hang: each gets 200 (old or new backend) or 503 while none is ready.
    let mut statuses = Vec::new();
    loop {
        let (s, body) = http_get(port, "/").unwrap();
        statuses.push(s);
        assert!(s == 200 || s == 503, "{s}: {body}");
        if s == 200 && body.contains(&format!("host={name}.docker.2")) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not serving again: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "serving again {:.2} s after the kill",
        t0.elapsed().as_secs_f64()
    );
    let log = env.ok(&["logs", &name]);
    assert!(
        log.contains(&format!("backend {name}.docker.1 (docker) ended")),
        "{log}"
    );
    assert!(log.contains("serving again"), "{log}");

    // The same on QEMU: SIGKILL of the VMM.
    env.ok(&["switch", &name, "--to", "qemu"]);
    let vmm = vmm_of(&name);
    // SAFETY: kill(2) of a QEMU this test's service started.
    unsafe { libc::kill(vmm as i32, libc::SIGKILL) };
    let t0 = Instant::now();
    loop {
        if let Ok((200, body)) = http_get(port, "/") {
            if body.contains(&format!("host={name}.qemu.4")) {
                break;
            }
        }
        assert!(
            t0.elapsed() < BOOT,
            "not serving again after the VMM was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = env.ok(&["logs", &name]);
    assert!(
        log.contains(&format!("backend {name}.qemu.3 (qemu) ended")),
        "{log}"
    );

    // SIGKILL of the front: the service shows as down with its backend; nothing is orphaned.
    let pid = service(&env, &name)["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) of the front this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    let row = service(&env, &name);
    assert_eq!(row["status"], "down", "{row}");
    assert_eq!(row["backend"], format!("{name}.qemu.4"));
    assert_eq!(qemu_pids(&name).len(), 1, "the backend should still run");
    let err = env.fails(&["rm", &name]);
    assert!(err.contains("still runs"), "{err}");
    let err = env.fails(&["switch", &name, "--to", "docker"]);
    assert!(err.contains("is down"), "{err}");
    env.ok(&["rm", "-f", &name]);
    assert!(qemu_pids(&name).is_empty(), "QEMU left after rm -f");
    assert!(containers(&name).is_empty(), "containers left after rm -f");
    assert!(ps_services(&env).is_empty());
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
    assert!(ps.as_array().unwrap().is_empty(), "{ps}");
}

#[test]
fn serve_and_switch_refuse_bad_input() {
    let test = "serve_and_switch_refuse_bad_input";
    if !docker_or_skip(test) {
        return;
    }
    let env = Env::new();
    let err = env.fails(&["switch", "nothing-here", "--to", "qemu"]);
    assert!(err.contains("no service named `nothing-here`"), "{err}");

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port().to_string();
    let err = env.fails(&[
        "serve",
        "examples/hello",
        "--port",
        &busy,
        "--name",
        "busy",
        "-d",
    ]);
    assert!(
        err.contains(&format!("127.0.0.1:{busy} is already in use")),
        "{err}"
    );
    assert!(
        ps_services(&env).is_empty(),
        "a refused serve left a record"
    );

    // An app the check refuses on rumprun: it forks.
    let forking = c_file(
        &env,
        "forking.c",
        &std::fs::read_to_string(repo_root().join("examples/hello/hello.c"))
            .unwrap()
            .replace(
                "int main(int argc, char **argv) {",
                "#include <unistd.h>\nint main(int argc, char **argv) {\n    if (argc > 99) fork();",
            ),
    );
    let port = free_port();
    let name = format!("e2e-bad-{port}");
    let addr = port.to_string();
    env.ok(&["serve", &forking, "--port", &addr, "--name", &name, "-d"]);
    let err = env.fails(&["switch", &name, "--to", "rumprun"]);
    assert!(
        err.contains("cannot run on rumprun") && err.contains("fork"),
        "{err}"
    );
    let err = env.fails(&["switch", &name, "--to", "firecracker"]);
    assert!(err.contains("firecracker is unavailable here"), "{err}");
    let err = env.fails(&["switch", &name, "--to", "docker"]);
    assert!(err.contains("already runs on docker"), "{err}");
    // The same name twice, and a serving service removed without -f.
    let other = free_port().to_string();
    let err = env.fails(&["serve", &forking, "--port", &other, "--name", &name, "-d"]);
    assert!(
        err.contains(&format!("a service named `{name}` already exists")),
        "{err}"
    );
    let err = env.fails(&["rm", &name]);
    assert!(err.contains("is serving"), "{err}");
    // Still serving after all that.
    assert_eq!(http_get(port, "/").unwrap().0, 200);
    env.ok(&["rm", "-f", &name]);
    assert!(containers(&name).is_empty());
}
