//! The cost of `serve`'s front, measured side by side in one run: the example served on Docker,
//! loaded by bakeoff's own generator directly on the backend's published port and through the
//! service's stable address, alternating, N rounds each, keep-alive and not; then the time of
//! docker → qemu → docker switches.
//!
//! ```sh
//! cargo build --release -p bakeoff-cli --examples
//! target/release/examples/serve_overhead [ROUNDS] [SECONDS] [CONNECTIONS] [SWITCHES] [RATE]
//! ```
//! Without RATE the load is closed-loop (as fast as it goes: on a small machine the front's
//! own CPU then shows as lost throughput); with RATE it is open-loop at that many requests per
//! second, which shows the latency the extra hop adds below saturation.
//! Uses `target/release/bakeoff` (or `$BAKEOFF_BIN`), and its own state directory.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bakeoff_bench::{load, LoadShape, LoadTarget};

fn bakeoff(state: &std::path::Path, args: &[&str]) -> String {
    let bin = std::env::var("BAKEOFF_BIN").unwrap_or_else(|_| "target/release/bakeoff".into());
    let out = Command::new(bin)
        .args(args)
        .env("BAKEOFF_STATE_DIR", state)
        .output()
        .expect("bakeoff runs");
    if !out.status.success() {
        panic!(
            "bakeoff {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).unwrap()
}

/// Per path: req/s, p50 ms, p99 ms samples, and failed requests.
#[derive(Default)]
struct Figures {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    failed: u64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, d: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (rounds, seconds, connections, switches) = (arg(1, 5), arg(2, 3), arg(3, 8), arg(4, 10));
    let rate = match arg(5, 0) {
        0 => None,
        r => Some(r as f64),
    };
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = port.to_string();
    bakeoff(
        state.path(),
        &[
            "serve",
            "examples/hello",
            "--port",
            &p,
            "--name",
            "ovh",
            "-d",
        ],
    );
    let ps: serde_json::Value =
        serde_json::from_str(&bakeoff(state.path(), &["ps", "--json"])).unwrap();
    let backend = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ovh.docker.1")
        .expect("the backend instance");
    let direct_port: u16 = backend["ports"][0]
        .as_str()
        .unwrap()
        .split(['>', ':', '-'])
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    println!(
        "front overhead: {rounds} rounds × {seconds} s × {connections} connections, {}, alternating direct (127.0.0.1:{direct_port}) and front (127.0.0.1:{port})",
        match rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        }
    );
    println!("| mode | path | req/s (median) | p50 | p99 | failed |");
    println!("|---|---|---|---|---|---|");
    for keepalive in [true, false] {
        let mut figs: [Figures; 2] = Default::default();
        for round in 0..rounds {
            for k in 0..2 {
                // Alternate which goes first, so neither always runs on a warmer machine.
                let which = (k + round as usize) % 2;
                let port = if which == 0 { direct_port } else { port };
                let shape = LoadShape {
                    connections: connections as u32,
                    duration: Duration::from_secs(seconds),
                    keepalive,
                    warmup: Duration::from_millis(500),
                    max_requests: None,
                    rate,
                };
                let r = load(
                    LoadTarget::new(SocketAddr::from(([127, 0, 0, 1], port))),
                    shape,
                )
                .await
                .unwrap();
                let f = &mut figs[which];
                f.rps.push(r.req_per_sec);
                f.p50.push(r.latency.p50_us as f64 / 1000.0);
                f.p99.push(r.latency.p99_us as f64 / 1000.0);
                f.failed += r.errors.total() + r.non_2xx;
            }
        }
        let mode = if keepalive {
            "keep-alive"
        } else {
            "new connection"
        };
        let mut row = Vec::new();
        for (which, f) in figs.iter_mut().enumerate() {
            let (rps, p50, p99) = (median(&mut f.rps), median(&mut f.p50), median(&mut f.p99));
            row.push((rps, p50, p99));
            println!(
                "| {mode} | {} | {rps:.0} | {p50:.2} ms | {p99:.2} ms | {} |",
                if which == 0 { "direct" } else { "front" },
                f.failed
            );
        }
        println!(
            "| {mode} | front/direct | {:.2}× | {:.2}× | {:.2}× | |",
            row[1].0 / row[0].0,
            row[1].1 / row[0].1,
            row[1].2 / row[0].2
        );
    }
    if switches > 0 {
        let mut to_qemu = Vec::new();
        let mut to_docker = Vec::new();
        for _ in 0..switches {
            for (to, v) in [("qemu", &mut to_qemu), ("docker", &mut to_docker)] {
                let out = bakeoff(state.path(), &["switch", "ovh", "--to", to]);
                let s: f64 = out
                    .split(" s in all")
                    .next()
                    .unwrap()
                    .rsplit(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                v.push(s);
            }
        }
        println!(
            "switch docker → qemu: median {:.2} s (min {:.2}, max {:.2}); qemu → docker: median {:.2} s (min {:.2}, max {:.2}); {switches} each",
            median(&mut to_qemu),
            to_qemu[0],
            to_qemu[to_qemu.len() - 1],
            median(&mut to_docker),
            to_docker[0],
            to_docker[to_docker.len() - 1]
        );
    }
    bakeoff(state.path(), &["rm", "-f", "ovh"]);
}
