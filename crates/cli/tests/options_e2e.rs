//! `bench` and `check` take `run`'s `-e K=V`, `-p`, `--port` and `-- ARGS` (issue 13 item 5):
//! a `run` command line can be checked or benched as it is, and what it sets reaches the app.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

#[test]
fn check_takes_runs_options_and_refuses_a_taken_port() {
    let env = Env::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let out = env.ok(&[
        "check",
        "examples/hello",
        "-e",
        "GREETING=x",
        "-p",
        &publish,
        "--port",
        "8080",
        "--memory",
        "128M",
        "--",
        "a",
        "b",
    ]);
    assert!(out.contains("docker"), "{out}");
    // The same bad value gets the same sentence as with `run`.
    let run_err = env.fails(&["run", "examples/hello", "--on", "docker", "-e", "NOEQUALS"]);
    let check_err = env.fails(&["check", "examples/hello", "-e", "NOEQUALS"]);
    let sentence = |e: &str| {
        e.lines()
            .find(|l| l.contains("NOEQUALS"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(!sentence(&run_err).is_empty(), "{run_err}");
    assert_eq!(sentence(&check_err), sentence(&run_err));
    // A host port that is taken stops every platform: the check says so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let err = env.fails(&[
        "check",
        "examples/hello",
        "-p",
        &format!("127.0.0.1:{busy}:8080"),
    ]);
    assert!(
        err.contains(&format!(
            "host port 127.0.0.1:{busy} is already in use; choose another with -p"
        )),
        "{err}"
    );
}

/// The bench's instances get `-e` and `-- ARGS`, and are measured through the `-p` host port:
/// a reader polls that port during the bench and sees the app's body with both.
#[test]
fn bench_takes_runs_options_and_they_reach_the_app() {
    if !docker_or_skip("bench_takes_runs_options_and_they_reach_the_app") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(None::<String>));
    let reader = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            // Bounded: the bench ends the loop, and it gives up after 5 minutes anyway.
            let start = std::time::Instant::now();
            while !stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(300) {
                if let Ok((200, body)) = http_get(port, "/") {
                    *seen.lock().unwrap() = Some(body);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = env.dir.path().join("report");
    let report = env.ok(&[
        "bench",
        "examples/hello",
        "--on",
        "docker",
        "--runs",
        "1",
        "--duration",
        "1",
        "--out",
        out.to_str().unwrap(),
        "-e",
        "GREETING=from-bench",
        "-p",
        &publish,
        "--port",
        "8080",
        "--",
        "bench-arg-1",
        "bench-arg-2",
    ]);
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    assert!(report.contains("| docker   | measured |"), "{report}");
    let body = seen
        .lock()
        .unwrap()
        .clone()
        .expect("no answer on the -p port during the bench");
    assert!(body.contains("greeting=from-bench"), "{body}");
    assert!(body.contains("args=bench-arg-1 bench-arg-2"), "{body}");
}
