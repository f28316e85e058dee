//! `serve` probed as an attacker and as an unlucky user would (issue 35): secrets of a detached
//! service, path-like names, a reused front PID, the reason a detached service failed, and the
//! front at its file-descriptor limit.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Every process's command line (as text, NULs as spaces) with its PID.
fn command_lines() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            out.push((pid, String::from_utf8_lossy(&c).replace('\0', " ")));
        }
    }
    out
}

fn service_record(env: &Env, name: &str) -> serde_json::Value {
    let path = env
        .dir
        .path()
        .join("state/services")
        .join(name)
        .join("service.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Issue 35 item 1: `serve -d -e SECRET=…` re-executed itself with the secret in its argv,
/// readable by every local user (`ps`, /proc/PID/cmdline) for the service's whole life.
#[test]
fn a_detached_service_keeps_its_secrets_off_every_command_line() {
    if !docker_or_skip("a_detached_service_keeps_its_secrets_off_every_command_line") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let secret = format!("s3cr3t-{}", std::process::id());
    let greeting = format!("GREETING={secret}");
    // The app's own argument is on the app's command line (it is the app's); the front must
    // not carry it.
    let arg = format!("argtok-{}", std::process::id());
    let port_s = port.to_string();
    env.ok(&[
        "serve",
        "examples/hello",
        "--port",
        &port_s,
        "--name",
        "sec",
        "-d",
        "-e",
        &greeting,
        "--",
        &arg,
    ]);
    // The secret reached the app: it is in the body, with the app's argument.
    let body = wait_http(port, Duration::from_secs(60));
    assert!(body.contains(&format!("greeting={secret}")), "{body}");
    assert!(body.contains(&arg), "{body}");
    let front = service_record(&env, "sec")["pid"].as_u64().unwrap() as u32;
    let cmdline = std::fs::read(format!("/proc/{front}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("serve"),
        "the recorded front is the serving process"
    );
    let leaks: Vec<_> = command_lines()
        .into_iter()
        .filter(|(_, c)| c.contains(&secret))
        .collect();
    assert!(
        leaks.is_empty(),
        "the secret is on command lines: {leaks:?}"
    );
    let front_line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(!front_line.contains(&arg), "{front_line}");
    let environ = std::fs::read(format!("/proc/{front}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(&secret),
        "the secret is in the front's environment"
    );
    env.ok(&["rm", "-f", "sec"]);
}

/// Issue 35 item 9: `serve -d` printed `the service did not start (exit status: 1): ` with
/// nothing after it: the front removed its log before the parent read it.
#[test]
fn a_detached_service_that_fails_says_why() {
    if !docker_or_skip("a_detached_service_that_fails_says_why") {
        return;
    }
    let env = Env::new();
    // No port: the front itself refuses it, after `serve -d` has handed over.
    let app = c_file(&env, "noport.c", "int main(void) { return 0; }\n");
    let port = free_port().to_string();
    let err = env.fails(&["serve", &app, "--port", &port, "--name", "np", "-d"]);
    assert!(
        err.contains(
            "the service did not start (exit status: 1): the app declares no port to serve"
        ),
        "{err}"
    );
    assert!(!env.dir.path().join("state/services/np").exists());
}

/// Issue 35 item 8: `switch ../../x --to docker` read a record (and would have talked to a
/// socket) outside the state dir.
#[test]
fn service_verbs_refuse_path_like_names() {
    let env = Env::new();
    let state = env.dir.path().join("state");
    std::fs::create_dir_all(state.join("services")).unwrap();
    // A record outside the state dir, where `services/../../x` leads.
    let outside = env.dir.path().join("x");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("service.json"), r#"{"name":"x"}"#).unwrap();
    for name in ["../../x", "../x", "/abs/x", "a/b", ".."] {
        for verb in [
            &["switch", name, "--to", "docker"][..],
            &["switch", name, "--to", "auto"],
        ] {
            let err = env.fails(verb);
            assert!(
                err.contains(&format!("invalid name `{name}`")),
                "{verb:?}: {err}"
            );
            assert!(!err.contains("service.json"), "{verb:?}: {err}");
        }
    }
    let port = free_port().to_string();
    let err = env.fails(&["serve", "examples/hello", "--port", &port, "--name", "../x"]);
    assert!(err.contains("invalid name `../x`"), "{err}");
    assert!(outside.join("service.json").exists());
}

/// Issue 35 item 6: after the front died and its PID was reused, `ps` said `serving` and
/// `rm -f` SIGKILLed the unrelated process that had the PID now.
#[test]
fn a_reused_front_pid_is_neither_serving_nor_killed() {
    let env = Env::new();
    let dir = env.dir.path().join("state/services");
    for (name, pid_start) in [("old", None), ("new", Some(1u64))] {
        // Another process, with "bakeoff" in its command line, has the front's PID now.
        let mut victim = std::process::Command::new("bash")
            .args(["-c", "exec -a bakeoff-lookalike sleep 60"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut record = serde_json::json!({
            "name": name, "app": "examples/hello", "listen": "127.0.0.1:1", "mode": "http",
            "platform": "docker", "backend": null, "backends": [], "pid": victim.id(),
            "status": "serving", "created": 1_000_000_000u64, "generation": 1,
        });
        if let Some(start) = pid_start {
            // As a new front records it: its own start time, not the victim's.
            record["pid_start"] = start.into();
        }
        std::fs::write(d.join("service.json"), record.to_string()).unwrap();
        let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
        let row = ps
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap();
        assert_eq!(row["status"], "down", "{name}: {row}");
        env.ok(&["rm", "-f", name]);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            victim.try_wait().unwrap().is_none(),
            "{name}: rm -f killed the process that reused the front's PID"
        );
        let _ = victim.kill();
        let _ = victim.wait();
        assert!(!d.exists());
    }
}

/// Removes a service the test started outside `Env::run` (through a shell), whatever happens.
struct RmOnDrop<'a>(&'a Env, &'static str);

impl Drop for RmOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd(&["rm", "-f", self.1]).output();
    }
}

/// The number of backends `name` has listed and the containers of the service the engine has.
fn backends_and_containers(env: &Env, name: &str) -> (usize, usize) {
    let rec = service_record(env, name);
    let listed = rec["backends"].as_array().map_or(0, Vec::len);
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket", "/var/run/docker.sock"])
        .arg("http://localhost/containers/json?all=1")
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let prefix = format!("/bakeoff-{name}.");
    let containers = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["Names"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n.as_str().is_some_and(|n| n.starts_with(&prefix)))
        })
        .count();
    (listed, containers)
}

/// Issue 35 item 2: under `ulimit -n 1024`, 2,000 idle clients made the supervisor's status
/// check fail for want of a descriptor; it took that for "backend ended" and started a
/// backend every 250 ms (~120 in 30 s), losing some of them. Here the hard limit is 256 and
/// 600 clients connect: the front turns the ones it has no room for away with a 503, the one
/// backend keeps serving, and `rm -f` leaves no container.
#[test]
fn at_its_descriptor_limit_the_front_sheds_clients_and_keeps_its_backend() {
    if !docker_or_skip("at_its_descriptor_limit_the_front_sheds_clients_and_keeps_its_backend") {
        return;
    }
    let env = Env::new();
    let _cleanup = RmOnDrop(&env, "fdlimit35");
    let port = free_port();
    let script = format!(
        "ulimit -n 256 && exec {} serve examples/hello --port {port} --name fdlimit35 -d",
        env!("CARGO_BIN_EXE_bakeoff")
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(repo_root())
        .env("BAKEOFF_STATE_DIR", env.dir.path().join("state"))
        .env("BAKEOFF_CACHE_DIR", shared_cache())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_http(port, Duration::from_secs(60));
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..600 {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => clients.push(s),
            Err(_) => refused += 1,
        }
    }
    // Over 8 supervisor rounds: still one backend, answering.
    // Every client gets an answer at once: 200, or 503 (or, while the front is still turning
    // the flood away, a closed connection: status 0), never a hang.
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let status = http_get(port, "/").map(|(s, _)| s).unwrap_or(0);
        assert!(t.elapsed() < Duration::from_secs(2), "a request hung");
        *statuses.entry(status).or_insert(0) += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (listed, containers) = backends_and_containers(&env, "fdlimit35");
    let log = std::fs::read_to_string(env.dir.path().join("state/services/fdlimit35/service.log"))
        .unwrap_or_default();
    eprintln!("refused {refused}, statuses {statuses:?}\n{log}");
    assert_eq!((listed, containers), (1, 1), "{log}");
    assert!(!log.contains("ended"), "{log}");
    assert!(
        statuses.keys().all(|s| [0, 200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains_key(&503), "{statuses:?}");
    drop(clients);
    let body = wait_http(port, Duration::from_secs(10));
    assert!(body.contains("host=fdlimit35.docker.1"), "{body}");
    env.ok(&["rm", "-f", "fdlimit35"]);
    assert_eq!(backends_and_containers_after_rm("fdlimit35"), 0);
    assert!(!Path::new(&env.dir.path().join("state/services/fdlimit35")).exists());
}

fn backends_and_containers_after_rm(name: &str) -> usize {
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket", "/var/run/docker.sock"])
        .arg("http://localhost/containers/json?all=1")
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let prefix = format!("/bakeoff-{name}.");
    list.as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["Names"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n.as_str().is_some_and(|n| n.starts_with(&prefix)))
        })
        .count()
}
