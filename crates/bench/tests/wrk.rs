//! `load` against `wrk` on the same local server: bakeoff's req/s must be within 10 % of wrk's.
//!
//! A performance comparison needs a quiet machine and a release build, so it is ignored by
//! default: `cargo test --release -p bakeoff-bench --test wrk -- --ignored --nocapture`.

use std::process::Command;
use std::time::Duration;

use bakeoff_bench::{load, LoadShape, LoadTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\nHello from bakeoff!\n";

/// A keep-alive HTTP server on one tokio worker thread of its own.
fn start_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut filled = 0;
                    loop {
                        match s.read(&mut buf[filled..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => filled += n,
                        }
                        while let Some(end) =
                            buf[..filled].windows(4).position(|w| w == b"\r\n\r\n")
                        {
                            if s.write_all(RESPONSE).await.is_err() {
                                return;
                            }
                            buf.copy_within(end + 4..filled, 0);
                            filled -= end + 4;
                        }
                    }
                });
            }
        });
    });
    addr
}

fn wrk(addr: std::net::SocketAddr, seconds: u64) -> f64 {
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c16",
            &format!("-d{seconds}s"),
            &format!("http://{addr}/"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "performance comparison with wrk: run on a quiet machine with --release"]
fn load_is_within_ten_percent_of_wrk() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("skipping: wrk is not installed (apt-get install -y wrk)");
        return;
    }
    let addr = start_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seconds = 3;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=5 {
        let w = wrk(addr, seconds);
        let shape = LoadShape {
            connections: 16,
            duration: Duration::from_secs(seconds),
            keepalive: true,
            warmup: Duration::ZERO,
            max_requests: None,
            rate: None,
        };
        let r = rt.block_on(load(LoadTarget::new(addr), shape)).unwrap();
        assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
        eprintln!(
            "round {round}: wrk {w:.0} req/s, bakeoff {:.0} req/s",
            r.req_per_sec
        );
        theirs.push(w);
        ours.push(r.req_per_sec);
    }
    let (w, b) = (median(theirs), median(ours));
    eprintln!(
        "median: wrk {w:.0} req/s, bakeoff {b:.0} req/s ({:+.1} %)",
        100.0 * (b / w - 1.0)
    );
    assert!(
        b >= 0.9 * w,
        "bakeoff {b:.0} req/s is more than 10 % below wrk's {w:.0}"
    );
}
