//! SIGKILL during `run -d` (issue 16): the record is written before the engine is asked, so
//! whatever an interrupted start leaves is listed by `ps` and removed by `rm -f`. Each test
//! kills the CLI `BAKEOFF_KILLS` times (default 10) at pseudo-random points and counts leaks.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn kills() -> u32 {
    std::env::var("BAKEOFF_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// A small xorshift, seeded from the clock (the seed is printed, to replay a failure).
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("BAKEOFF_KILL_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("kill seed {seed} (BAKEOFF_KILL_SEED to replay)");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Starts `run -d` for each name and SIGKILLs it after a random delay below `full` (the time
/// a complete `run -d` takes, measured first); returns how many were killed before finishing.
fn kill_runs(env: &Env, platform: &str, names: &[String], full: Duration) -> u32 {
    let mut rng = Rng::new();
    let mut killed = 0;
    for name in names {
        let mut child = env
            .cmd(&[
                "run",
                "examples/hello",
                "--on",
                platform,
                "-d",
                "--name",
                name,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.below(full.as_millis() as u64));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        // SAFETY: the pid is our own child's, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        eprintln!("{name}: killed after {delay:?}");
    }
    killed
}

/// The names `ps` lists.
fn listed(env: &Env) -> Vec<String> {
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
    ps.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn timed_full_run(env: &Env, platform: &str, name: &str) -> Duration {
    let t = Instant::now();
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        platform,
        "-d",
        "--name",
        name,
    ]);
    let full = t.elapsed();
    env.ok(&["rm", "-f", name]);
    eprintln!("a full `run -d` on {platform} takes {full:?}");
    full
}

#[test]
fn killing_run_d_on_docker_leaks_no_container() {
    if !docker_or_skip("killing_run_d_on_docker_leaks_no_container") {
        return;
    }
    let env = Env::new();
    env.ok(&["build", "examples/hello"]);
    let tag = std::process::id();
    let full = timed_full_run(&env, "docker", &format!("kd{tag}-warm"));
    let names: Vec<String> = (0..kills()).map(|i| format!("kd{tag}-{i}")).collect();
    let killed = kill_runs(&env, "docker", &names, full);
    let ps = listed(&env);
    let exists = |n: &str| engine_container_status(&format!("bakeoff-{n}")) == "200";
    let started: Vec<&String> = names.iter().filter(|n| exists(n)).collect();
    let unseen: Vec<&&String> = started.iter().filter(|n| !ps.contains(n)).collect();
    for n in &ps {
        env.ok(&["rm", "-f", n]);
    }
    let left: Vec<&String> = names.iter().filter(|n| exists(n)).collect();
    eprintln!(
        "docker: {} kills ({killed} before `run -d` returned), {} containers started, {} unseen by ps, {} left after rm -f",
        names.len(),
        started.len(),
        unseen.len(),
        left.len()
    );
    assert!(unseen.is_empty(), "containers not listed by ps: {unseen:?}");
    assert!(left.is_empty(), "containers left after rm -f: {left:?}");
    assert!(listed(&env).is_empty());
}

#[test]
fn killing_run_d_on_qemu_leaks_no_vm() {
    if !qemu_or_skip("killing_run_d_on_qemu_leaks_no_vm") {
        return;
    }
    let env = Env::new();
    env.ok(&["build", "examples/hello"]);
    let tag = std::process::id();
    let full = timed_full_run(&env, "qemu", &format!("kq{tag}-warm"));
    let names: Vec<String> = (0..kills()).map(|i| format!("kq{tag}-{i}")).collect();
    let killed = kill_runs(&env, "qemu", &names, full);
    let state = env.dir.path().join("state/instances");
    let vm = |n: &str| qemu_pids(&format!("{}/", state.join(n).display()));
    // QEMU may still be starting: give a killed start a moment to become a process.
    std::thread::sleep(Duration::from_millis(500));
    let ps = listed(&env);
    let started: Vec<&String> = names.iter().filter(|n| !vm(n).is_empty()).collect();
    let unseen: Vec<&&String> = started.iter().filter(|n| !ps.contains(n)).collect();
    for n in &ps {
        env.ok(&["rm", "-f", n]);
    }
    let left: Vec<&String> = names.iter().filter(|n| !vm(n).is_empty()).collect();
    eprintln!(
        "qemu: {} kills ({killed} before `run -d` returned), {} VMs started, {} unseen by ps, {} left after rm -f",
        names.len(),
        started.len(),
        unseen.len(),
        left.len()
    );
    // Whatever the verdict, no QEMU outlives the test.
    for n in &names {
        for pid in vm(n) {
            // SAFETY: a QEMU this test started (its command line names this test's state dir).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    assert!(unseen.is_empty(), "VMs not listed by ps: {unseen:?}");
    assert!(left.is_empty(), "VMs left after rm -f: {left:?}");
    assert!(listed(&env).is_empty());
}

/// SIGTERM and SIGHUP to a foreground `run` left the instance running, and Ctrl-C exited 0:
/// each now stops the instance and exits 128 + the signal number.
#[test]
fn signals_to_a_foreground_run_stop_the_instance() {
    if !docker_or_skip("signals_to_a_foreground_run_stop_the_instance") {
        return;
    }
    let env = Env::new();
    env.ok(&["build", "examples/hello"]);
    for (sig, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
        (libc::SIGINT, 130),
    ] {
        let port = free_port();
        let name = format!("sig{}-{sig}", std::process::id());
        let mut child = env
            .cmd(&[
                "run",
                "examples/hello",
                "--on",
                "docker",
                "--name",
                &name,
                "-p",
                &format!("127.0.0.1:{port}:8080"),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_http(port, Duration::from_secs(60));
        // SAFETY: our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        let row = env.ps_row(&name).expect("listed");
        let engine = engine_container_status(&format!("bakeoff-{name}"));
        env.ok(&["rm", "-f", &name]);
        assert_eq!(status.code(), Some(code), "signal {sig}");
        assert_ne!(row["status"], "running", "signal {sig}: {row}");
        assert_eq!(engine, "200");
    }
}

/// SIGKILL during `build` (a fresh cache each time, so every build really works): the cache is
/// never corrupted (a rebuild gives the uninterrupted digest) and the killed builds' scratch
/// dirs are swept by the next build.
#[test]
fn killing_build_corrupts_nothing_and_leaves_no_scratch() {
    let env = Env::new();
    let cache = env.dir.path().join("cache");
    let build = |cache: &std::path::Path| {
        env.cmd(&["build", "examples/hello", "--target", "oci", "--json"])
            .env("BAKEOFF_CACHE_DIR", cache)
            .output()
            .unwrap()
    };
    let digest = |out: std::process::Output| -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["images"][0]["digest"].as_str().unwrap().to_string()
    };
    let t = Instant::now();
    let reference = digest(build(&env.dir.path().join("reference-cache")));
    let full = t.elapsed();
    let mut rng = Rng::new();
    let mut killed = 0;
    for i in 0..kills() {
        let mut child = env
            .cmd(&["build", "examples/hello", "--target", "oci"])
            .env("BAKEOFF_CACHE_DIR", &cache)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.below(full.as_millis() as u64));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        eprintln!("build {i}: killed after {delay:?}");
        // Start over from nothing but what the killed builds left.
        if i % 2 == 1 {
            let _ = std::fs::remove_dir_all(cache.join("artifacts"));
            let _ = std::fs::remove_dir_all(cache.join("images"));
        }
    }
    // Nothing a killed build started lives on (the port probe runs the app from the cache).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut strays = processes_naming(&cache);
    while !strays.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        strays = processes_naming(&cache);
    }
    eprintln!("build: {} processes left running", strays.len());
    assert!(strays.is_empty(), "killed builds left {strays:?}");
    let again = digest(build(&cache));
    let left: Vec<String> = std::fs::read_dir(cache.join("tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("work-"))
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "build: {} kills ({killed} before it finished), digest {} the uninterrupted one, {} scratch dirs left",
        kills(),
        if again == reference { "equal to" } else { "DIFFERENT from" },
        left.len()
    );
    assert_eq!(again, reference);
    assert!(left.is_empty(), "{left:?}");
}

/// Live processes whose command line names `dir` (not zombies): (pid, command line).
fn processes_naming(dir: &std::path::Path) -> Vec<(u32, String)> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if cmd.contains(&needle) && !zombie {
            out.push((pid, cmd));
        }
    }
    out
}

/// Processes whose environment names this state dir (detached fronts and anything they run),
/// not zombies: (pid, command line).
fn state_processes(state: &std::path::Path) -> Vec<(u32, String)> {
    let needle = format!("BAKEOFF_STATE_DIR={}", state.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let has = environ.split(|b| *b == 0).any(|v| v == needle.as_bytes());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if has && !zombie {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}

/// Containers the engine holds for this state dir (by bakeoff's state label): their names.
fn state_containers(state: &std::path::Path) -> Vec<String> {
    let filter = format!("{{\"label\":[\"bakeoff.state={}\"]}}", state.display());
    let out = std::process::Command::new("curl")
        .args(["-s", "-G", "--unix-socket", "/var/run/docker.sock"])
        .arg("--data-urlencode")
        .arg(format!("filters={filter}"))
        .arg("http://localhost/containers/json?all=1")
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["Names"][0].as_str())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect()
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL of `bakeoff serve` (detached and foreground, alternately) at random points: every
/// service and backend it left is listed by `ps` and removed by `rm -f`; no container, front
/// process, record or reservation is left.
#[test]
fn killing_serve_leaks_no_service_backend_or_front() {
    if !docker_or_skip("killing_serve_leaks_no_service_backend_or_front") {
        return;
    }
    let env = Env::new();
    env.ok(&["build", "examples/hello"]);
    let state = env.dir.path().join("state");
    let tag = std::process::id();
    let warm = format!("ks{tag}-warm");
    let t = Instant::now();
    env.ok(&[
        "serve",
        "examples/hello",
        "--port",
        &free_port().to_string(),
        "--name",
        &warm,
        "-d",
    ]);
    let full = t.elapsed();
    env.ok(&["rm", "-f", &warm]);
    eprintln!("a full `serve -d` takes {full:?}");

    let mut rng = Rng::new();
    let names: Vec<String> = (0..kills()).map(|i| format!("ks{tag}-{i}")).collect();
    let mut killed = 0;
    let started = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let port = free_port().to_string();
        let mut args = vec!["serve", "examples/hello", "--port", &port, "--name", name];
        if i % 2 == 0 {
            args.push("-d");
        }
        let mut child = env
            .cmd(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Foreground: the process serves until killed, so kill it anywhere up to a bit after
        // the time a start takes.
        let limit = full.as_millis() as u64 + if i % 2 == 0 { 0 } else { 500 };
        let delay = Duration::from_millis(rng.below(limit));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        // SAFETY: the pid is our own child's, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        eprintln!("{name}: killed after {delay:?}");
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the loop is bounded in time"
        );
    }
    // A detached front may still be starting its backend: let what was begun settle a little.
    std::thread::sleep(Duration::from_secs(2));
    let ps = listed(&env);
    let services = dir_names(&state.join("services"));
    let instances = dir_names(&state.join("instances"));
    let containers = state_containers(&state);
    let mut unseen: Vec<String> = services
        .iter()
        .chain(&instances)
        .filter(|n| !ps.contains(n))
        .cloned()
        .collect();
    unseen.extend(
        containers
            .iter()
            .filter(|c| !ps.iter().any(|n| **c == format!("bakeoff-{n}")))
            .cloned(),
    );
    let fronts_before = state_processes(&state).len();
    // Services first (their backends go with them), then whatever instances remain.
    for n in &ps {
        if services.contains(n) {
            env.ok(&["rm", "-f", n]);
        }
    }
    for n in listed(&env) {
        env.ok(&["rm", "-f", &n]);
    }
    let left_services = dir_names(&state.join("services"));
    let left_instances = dir_names(&state.join("instances"));
    let left_containers = state_containers(&state);
    let left_processes = state_processes(&state);
    eprintln!(
        "serve: {} kills ({killed} before the command ended), {} services, {} instances, {} containers, {} front processes found; {} unseen by ps; left after rm -f: {} services, {} instances, {} containers, {} processes",
        names.len(),
        services.len(),
        instances.len(),
        containers.len(),
        fronts_before,
        unseen.len(),
        left_services.len(),
        left_instances.len(),
        left_containers.len(),
        left_processes.len(),
    );
    // Whatever the verdict, nothing this test started outlives it.
    for (pid, _) in &left_processes {
        // SAFETY: a process whose environment names this test's own state dir.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    for c in &left_containers {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", c])
            .output();
    }
    assert!(unseen.is_empty(), "not listed by ps: {unseen:?}");
    assert!(left_services.is_empty(), "services left: {left_services:?}");
    assert!(
        left_instances.is_empty(),
        "instances left: {left_instances:?}"
    );
    assert!(
        left_containers.is_empty(),
        "containers left: {left_containers:?}"
    );
    assert!(
        left_processes.is_empty(),
        "processes left: {left_processes:?}"
    );
}
