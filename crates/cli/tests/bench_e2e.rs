//! The bake-off end to end: a short bench of the example on Docker and QEMU, with the JSON,
//! Markdown and HTML report, the HTML opened in headless Chromium.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn bench_of_the_example_on_docker_and_qemu() {
    if !docker_or_skip("bench_of_the_example_on_docker_and_qemu")
        || !qemu_or_skip("bench_of_the_example_on_docker_and_qemu")
    {
        return;
    }
    let env = Env::new();
    let out = env.dir.path().join("report");
    let out_s = out.display().to_string();
    let out_put = env.run(&[
        "bench",
        "examples/hello",
        "--on",
        "docker,qemu,firecracker",
        "--runs",
        "2",
        "--duration",
        "1",
        "--connections",
        "4",
        "--out",
        &out_s,
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out_put.stdout).to_string(),
        String::from_utf8_lossy(&out_put.stderr).to_string(),
    );
    assert!(out_put.status.success(), "{stderr}");
    // The runs go in rounds, one run of each platform per round, the order reversed every
    // other round: a slow spell of the host lands on both platforms, not on one.
    let order: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("bakeoff: "))
        .filter(|l| l.contains(": warm-up") || l.contains(": run "))
        .collect();
    assert_eq!(
        order,
        [
            "qemu: warm-up",
            "docker: warm-up",
            "docker: run 1/2",
            "qemu: run 1/2",
            "qemu: run 2/2",
            "docker: run 2/2"
        ],
        "{stderr}"
    );
    // The terminal table has both platforms and a recommendation.
    assert!(
        stdout.contains("| docker") && stdout.contains("| qemu"),
        "{stdout}"
    );
    assert!(stdout.contains("## Recommendation:"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["app"]["name"], "hello");
    assert_eq!(report["runs_per_platform"], 2);
    let platform = |name: &str| {
        report["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["platform"] == name)
            .cloned()
            .unwrap()
    };
    for name in ["docker", "qemu"] {
        let p = platform(name);
        assert_eq!(p["status"]["state"], "measured", "{p}");
        assert_eq!(
            p["launch_to_ready"]["samples"].as_array().unwrap().len(),
            2,
            "{p}"
        );
        assert!(p["launch_to_ready"]["median"].as_f64().unwrap() > 0.0);
        assert!(p["load"]["requests"].as_u64().unwrap() > 10, "{p}");
        assert_eq!(p["load"]["errors"], 0, "{p}");
        assert!(
            p["memory"]["host_bytes"]["median"].as_f64().unwrap() > 0.0,
            "{p}"
        );
        assert!(p["image_size"]["bytes"].as_u64().unwrap() > 0, "{p}");
        // The host's speed just before each measured run: one reference per launch sample.
        let refs = p["host_reference"]["samples"]
            .as_array()
            .expect("host_reference");
        assert_eq!(refs.len(), 2, "{p}");
        assert!(refs.iter().all(|r| r.as_f64().unwrap() > 0.0), "{p}");
    }
    assert!(
        stdout.contains("a fixed reference workload, timed before every launch, took"),
        "{stdout}"
    );
    assert_eq!(
        platform("qemu")["conditions"]["accelerator"]
            .as_str()
            .map(|a| a == "tcg" || a == "kvm"),
        Some(true)
    );
    assert_eq!(platform("docker")["conditions"]["accelerator"], "native");
    // The microVM's kernel reports its own memory use (virtio balloon statistics), beside the VMM's RSS.
    let guest = platform("qemu")["memory"]["guest_bytes"]["median"]
        .as_f64()
        .expect("guest memory of the microVM");
    assert!(guest > 4e6 && guest < 128.0 * 1048576.0, "{guest}");
    // Where QEMU's resident memory is: the parts, from its smaps, add up to about its RSS.
    let qemu_memory = &platform("qemu")["memory"];
    let parts = qemu_memory["host_parts"].as_array().expect("host_parts");
    let part = |name: &str| {
        parts
            .iter()
            .find(|p| p["part"] == name)
            .and_then(|p| p["bytes"]["median"].as_f64())
            .unwrap_or(0.0)
    };
    assert!(part("guest_ram") > 4e6, "{qemu_memory}");
    // The minimal kernel gives back what its boot freed (free page reporting): its RAM in
    // QEMU's RSS was 18.0 MiB without that, 15.1-15.2 with it.
    assert!(part("guest_ram") < 17.0 * 1048576.0, "{qemu_memory}");
    assert!(part("vmm_code") > 4e6, "{qemu_memory}");
    // QEMU maps the 5 MB vmlinux and the initramfs to load them; once the guest runs, the
    // driver has the host reclaim those pages (they would serve only a reset).
    assert!(part("boot_files") < 1e6, "{qemu_memory}");
    if platform("qemu")["conditions"]["accelerator"] == "tcg" {
        assert!(part("translation_cache") > 1e6, "{qemu_memory}");
        // What QEMU had translated by the first 200 (its `info jit`): thousands of blocks of
        // the kernel's, PID 1's and the app's code, within the cache's size.
        let t = &platform("qemu")["translation"];
        let median = |k: &str| t[k]["median"].as_f64().unwrap_or(-1.0);
        assert!(median("blocks") > 5000.0, "{t}");
        assert!(median("code_bytes") > 1e6, "{t}");
        assert!(median("code_bytes") <= median("capacity_bytes"), "{t}");
        assert!(median("flushes") >= 0.0, "{t}");
        assert!(
            stdout.contains("What the emulator had translated"),
            "{stdout}"
        );
    }
    assert!(platform("docker")["translation"].is_null());
    let sum: f64 = parts
        .iter()
        .map(|p| p["bytes"]["median"].as_f64().unwrap())
        .sum();
    let rss = qemu_memory["host_bytes"]["median"].as_f64().unwrap();
    assert!(
        (sum / rss - 1.0).abs() < 0.2,
        "parts {sum} vs RSS {rss}: {qemu_memory}"
    );
    assert!(platform("docker")["memory"]["host_parts"].is_null());
    // A platform this host lacks appears with its reason, never as zeros.
    let fc = platform("firecracker");
    assert_eq!(fc["status"]["state"], "unavailable", "{fc}");
    assert!(!fc["status"]["reason"].as_str().unwrap().is_empty());
    assert!(fc["launch_to_ready"].is_null());
    let rec = &report["recommendation"];
    assert!(
        rec["platform"] == "docker" || rec["platform"] == "qemu",
        "{rec}"
    );
    assert!(!rec["reasons"].as_array().unwrap().is_empty());

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| docker") && md.contains("| qemu") && md.contains("firecracker"),
        "{md}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 4, "charts in the HTML");
    // Self-contained: nothing is fetched from anywhere.
    assert!(
        !html.contains("src=\"http")
            && !html.contains("href=\"http")
            && !html.contains("<script src"),
        "external resources in the HTML"
    );

    // No instance of the bench is left behind.
    let ps: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "--json"])).unwrap();
    assert!(ps.as_array().unwrap().is_empty(), "{ps}");
    let state = env.dir.path().join("state").display().to_string();
    assert!(qemu_pids(&state).is_empty());

    // The page opens in headless Chromium, without script errors, and lays out its charts.
    let chromium = "/usr/bin/chromium";
    if !std::path::Path::new(chromium).exists() {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!("chromium is missing and BAKEOFF_REQUIRE_ENGINES=1");
        }
        eprintln!(
            "SKIPPED the Chromium part: {chromium} is not installed (apt-get install -y chromium)"
        );
        return;
    }
    let profile = env.dir.path().join("chromium-profile");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", out.join("report.html").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        dom.matches("<svg").count() >= 4,
        "the rendered DOM has the charts"
    );
    assert!(dom.contains("qemu") && dom.contains("docker"));
    assert!(
        !log.contains("Uncaught"),
        "script errors in the page: {log}"
    );
}
