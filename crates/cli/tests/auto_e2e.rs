//! Dynamic placement against the real engines: a real sweep of the example on docker and qemu,
//! then a service `--on auto --policy isolation` that starts on the microVM under light load,
//! moves to the container when the offered rate goes above what the microVM sustains within the
//! SLO, and moves back when the load falls — with 0 failed requests through all of it.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SLO: &str = "p99=25ms";

fn service(env: &Env, name: &str) -> serde_json::Value {
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
    ps.as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "service" && r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// The sustainable rate of `platform` in a report, as the report computed it.
fn sustainable(report: &serde_json::Value, platform: &str) -> Option<f64> {
    report["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == platform)?["sweep"]["sustainable_rate"]
        .as_f64()
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    ok: u64,
    failed: u64,
}

/// Open-loop load at the rate in `rate` (requests/s, re-read every second) until `stop`, at
/// most 10 minutes.
fn load(stop: Arc<AtomicBool>, rate: Arc<AtomicU64>, port: u16) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut t = Tally::default();
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let shape = bakeoff_bench::LoadShape {
                connections: 8,
                duration: Duration::from_secs(1),
                keepalive: true,
                warmup: Duration::ZERO,
                max_requests: Some(200_000),
                rate: Some(rate.load(Ordering::SeqCst) as f64),
            };
            let target = bakeoff_bench::LoadTarget::new(SocketAddr::from(([127, 0, 0, 1], port)));
            let r = rt.block_on(bakeoff_bench::load(target, shape)).unwrap();
            t.ok += r.ok;
            t.failed += r.errors.total() + r.non_2xx;
        }
        t
    })
}

fn wait_platform(env: &Env, name: &str, platform: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let s = service(env, name);
        if s["platform"] == platform && s["backends"].as_array().unwrap().len() == 1 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{name} did not move to {platform} within {limit:?}; log:\n{}",
            env.ok(&["logs", name])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn auto_service_follows_the_load_between_microvm_and_container() {
    let test = "auto_service_follows_the_load_between_microvm_and_container";
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let out = env.dir.path().join("report");
    let out_s = out.display().to_string();
    env.ok(&[
        "bench",
        "examples/hello",
        "--on",
        "docker,qemu",
        "--runs",
        "1",
        "--duration",
        "2",
        "--connections",
        "8",
        "--sweep",
        "20,200,1000,4000,12000",
        "--slo",
        SLO,
        "--out",
        &out_s,
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let sq = sustainable(&report, "qemu");
    let sd = sustainable(&report, "docker");
    eprintln!("sustainable within {SLO}: qemu {sq:?}, docker {sd:?}");
    let sq = sq.expect("the microVM sustains none of the swept rates; the test needs it to meet the SLO at light load");
    let sd = sd.expect("docker sustains none of the swept rates");
    let rates: Vec<f64> = report["platforms"][0]["sweep"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offered_rate"].as_f64().unwrap())
        .collect();
    let step = rates
        .iter()
        .copied()
        .find(|r| *r > sq && *r <= sd)
        .unwrap_or_else(|| {
            panic!("no swept rate separates qemu ({sq}) from docker ({sd}) within {SLO}")
        });
    // The live load steps a little above the microVM's sustainable rate (the next swept
    // rate), so the verdict does not hang on the front's own overhead.
    let light = 20u64;

    let port = free_port();
    let name = format!("e2e-auto-{port}");
    let p = port.to_string();
    env.ok(&[
        "serve",
        "examples/hello",
        "--port",
        &p,
        "--name",
        &name,
        "-d",
        "--on",
        "auto",
        "--policy",
        "isolation",
        "--slo",
        SLO,
        "--window",
        "1",
        "--hold-windows",
        "3",
        "--min-stay",
        "5",
    ]);
    // Light load: the most isolated platform that meets the SLO, the microVM.
    assert_eq!(service(&env, &name)["platform"], "qemu");
    let stop = Arc::new(AtomicBool::new(false));
    let rate = Arc::new(AtomicU64::new(light));
    let loader = load(stop.clone(), rate.clone(), port);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        service(&env, &name)["platform"],
        "qemu",
        "moved under light load"
    );

    // Step up: above what the microVM sustains.
    rate.store(step as u64, Ordering::SeqCst);
    let up = wait_platform(&env, &name, "docker", Duration::from_secs(120));
    // Step down.
    std::thread::sleep(Duration::from_secs(2));
    rate.store(light, Ordering::SeqCst);
    let down = wait_platform(&env, &name, "qemu", Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let tally = loader.join().unwrap();
    eprintln!(
        "step to {step} req/s → on docker {:.1} s later; step to {light} req/s → on qemu {:.1} s later; load {tally:?}",
        up.as_secs_f64(),
        down.as_secs_f64()
    );
    assert_eq!(tally.failed, 0, "failed requests: {tally:?}");
    assert!(tally.ok > 100, "{tally:?}");
    let log = env.ok(&["logs", &name]);
    assert!(log.contains("moving to docker"), "{log}");
    assert!(log.contains("moving to qemu"), "{log}");
    assert!(
        log.contains("req/s over 3 s"),
        "the decision lacks its figures:\n{log}"
    );
    assert!(log.contains("qemu sustains"), "{log}");

    // A manual switch pins it; `--to auto` resumes.
    env.ok(&["switch", &name, "--to", "docker"]);
    let s = service(&env, &name);
    assert_eq!(s["auto"]["pinned"], true, "{s}");
    assert_eq!(
        env.ok(&["switch", &name, "--to", "auto"]).trim(),
        format!("{name}: placement resumed")
    );
    assert_eq!(service(&env, &name)["auto"]["pinned"], false);
    env.ok(&["rm", "-f", &name]);
    assert!(qemu_pids(&name).is_empty());

    // Bad input.
    let report_json = out.join("report.json").display().to_string();
    let err = env.fails(&[
        "serve",
        "examples/hello",
        "--port",
        &free_port().to_string(),
        "--on",
        "auto",
        "--policy",
        "fastest",
    ]);
    assert!(err.contains("unknown placement policy `fastest`"), "{err}");
    let other = c_file(
        &env,
        "other.c",
        &std::fs::read_to_string(repo_root().join("examples/hello/hello.c"))
            .unwrap()
            .replace("Hello from bakeoff!", "Hello from another build!"),
    );
    let err = env.fails(&[
        "serve",
        &other,
        "--port",
        &free_port().to_string(),
        "--on",
        "auto",
        "--profile",
        &report_json,
    ]);
    assert!(
        err.contains("was measured on artifact") && err.contains("is now artifact"),
        "{err}"
    );
    let err = env.fails(&[
        "serve",
        &other,
        "--port",
        &free_port().to_string(),
        "--on",
        "auto",
    ]);
    assert!(err.contains("there is no load profile of"), "{err}");
    // An SLO no platform meets at any rate: it says so and runs the best one.
    let port = free_port();
    let name = format!("e2e-auto-slo-{port}");
    env.ok(&[
        "serve",
        "examples/hello",
        "--port",
        &port.to_string(),
        "--name",
        &name,
        "-d",
        "--on",
        "auto",
        "--slo",
        "p99=1us",
        "--profile",
        &report_json,
    ]);
    let log = env.ok(&["logs", &name]);
    assert!(log.contains("no platform meets p99=1us"), "{log}");
    assert_eq!(http_get(port, "/").unwrap().0, 200);
    env.ok(&["rm", "-f", &name]);
}
