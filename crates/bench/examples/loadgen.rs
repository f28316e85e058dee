//! A wrk-like front end to `bakeoff_bench::load`, for measuring the load generator itself.
//!
//! cargo run --release -p bakeoff-bench --example loadgen -- 127.0.0.1:8080 -c 16 -d 5 [--close] [--warmup 1] [--path /]

use std::time::Duration;

use bakeoff_bench::{load, LoadShape, LoadTarget};

fn usage() -> ! {
    eprintln!("usage: loadgen ADDR [-c CONNECTIONS] [-d SECONDS] [--warmup SECONDS] [--max N] [--close] [--path PATH]");
    std::process::exit(2)
}

fn num<T: std::str::FromStr>(v: Option<String>) -> T {
    v.and_then(|v| v.parse().ok()).unwrap_or_else(|| usage())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next().and_then(|a| a.parse().ok()) else {
        usage()
    };
    let mut target = LoadTarget::new(addr);
    let mut shape = LoadShape {
        warmup: Duration::ZERO,
        ..LoadShape::default()
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "-c" => shape.connections = num(args.next()),
            "-d" => shape.duration = Duration::from_secs_f64(num(args.next())),
            "--warmup" => shape.warmup = Duration::from_secs_f64(num(args.next())),
            "--max" => shape.max_requests = Some(num(args.next())),
            "--close" => shape.keepalive = false,
            "--path" => target.path = args.next().unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    match load(target, shape).await {
        Ok(r) => {
            let l = r.latency;
            println!(
                "{} requests in {:.2?}, {:.2} MB read",
                r.requests,
                r.elapsed,
                r.bytes as f64 / 1e6
            );
            println!(
                "Latency: mean {:.1}us stdev {:.1}us p50 {}us p90 {}us p99 {}us p99.9 {}us max {}us",
                l.mean_us, l.stdev_us, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
            );
            println!("2xx {} non-2xx {} errors {:?}", r.ok, r.non_2xx, r.errors);
            println!("Requests/sec: {:.2}", r.req_per_sec);
            println!("Transfer/sec: {:.2} MB", r.bytes_per_sec / 1e6);
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}
