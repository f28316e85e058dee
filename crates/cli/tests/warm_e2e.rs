//! Warm starts on real QEMU (`run --warm`): the guest boots once into a snapshot, and each run
//! is loaded from it and gets its own values (environment, hostname, clock, randomness).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const BOOT: Duration = Duration::from_secs(120);

const PRINTS_ITS_RUN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
int main(void) {
    unsigned char r[16];
    char host[65] = {0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return 3;
    gethostname(host, 64);
    const char *who = getenv("WHO");
    printf("who=%s host=%s time=%ld random=", who ? who : "", host, (long)time(NULL));
    for (int i = 0; i < 16; i++) printf("%02x", r[i]);
    printf("\n");
    return 0;
}
"#;

fn snapshots() -> usize {
    std::fs::read_dir(shared_cache().join("snapshots"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("state").is_file())
                .count()
        })
        .unwrap_or(0)
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn warm_runs_share_one_snapshot_and_each_gets_its_own_values() {
    let test = "warm_runs_share_one_snapshot_and_each_gets_its_own_values";
    if !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let app = c_file(&env, "run.c", PRINTS_ITS_RUN);

    // Two runs of one image at one size: the first makes the snapshot, the second reuses it.
    let mut seen = Vec::new();
    let mut counts = Vec::new();
    for who in ["first", "second"] {
        let name = format!("e2e-warm-{who}-{}", free_port());
        let run = env.run(&[
            "run",
            &app,
            "--on",
            "qemu",
            "--warm",
            "--name",
            &name,
            "-e",
            &format!("WHO={who}"),
        ]);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(run.status.success(), "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("who="))
            .unwrap_or_else(|| panic!("the app printed nothing: {out}"))
            .to_string();
        assert_eq!(field(&line, "who="), who, "{line}");
        assert_eq!(field(&line, "host="), name, "{line}");
        // The wall clock is the host's, not the snapshot's.
        let guest: i64 = field(&line, "time=").parse().unwrap();
        let host = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((host - guest).abs() < 120, "guest {guest} vs host {host}");
        seen.push(field(&line, "random=").to_string());
        counts.push(snapshots());
    }
    // Every copy of the snapshot draws its own random numbers.
    assert_ne!(
        seen[0], seen[1],
        "two warm starts drew the same random bytes"
    );
    assert!(counts[0] >= 1);
    assert_eq!(counts[0], counts[1], "the second run made another snapshot");
    // The template zeroed its free memory before it was saved (so copies do not load it).
    let newest = std::fs::read_dir(shared_cache().join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("state").is_file())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .unwrap()
        .path();
    let template = std::fs::read_to_string(newest.join("template.log")).unwrap_or_default();
    let zeroed: u64 = template
        .lines()
        .find_map(|l| l.strip_prefix("bakeoff-init: zeroed "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `zeroed` line in {}: {template}", newest.display()));
    assert!(zeroed > 0, "{template}");

    // A server from a snapshot: serves with its own values, stops gracefully.
    let port = free_port();
    let name = format!("e2e-warm-web-{port}");
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "--warm",
        "-d",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-e",
        "GREETING=warm",
        "--name",
        &name,
        "--",
        "a1",
    ]);
    let body = wait_http(port, BOOT);
    assert!(body.contains("greeting=warm"), "{body}");
    assert!(body.contains(&format!("host={name}")), "{body}");
    assert!(body.contains("args=a1"), "{body}");
    let logs = env.ok(&["logs", &name]);
    assert!(logs.contains("bakeoff-init: phase resumed 0 ms"), "{logs}");
    assert!(!logs.contains("bakeoff-init: phase pid1"), "{logs}");
    env.ok(&["stop", &name]);
    let logs = env.ok(&["logs", &name]);
    assert!(logs.contains("hello: shutting down"), "{logs}");
    assert!(qemu_pids(&name).is_empty(), "QEMU still runs after stop");

    // Refused where it cannot work, in one sentence.
    let err = env.fails(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "--warm",
        "--machine",
        "q35",
    ]);
    assert!(
        err.contains("--warm starts microVMs on QEMU's `microvm` machine only"),
        "{err}"
    );
}
