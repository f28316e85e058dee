//! What the front costs: req/s and latency of a trivial HTTP backend, directly and through a
//! front in HTTP mode, with keep-alive connections and with a new connection per request.
//!
//! The backend, the front and the load generator each run on their own single-threaded tokio
//! runtime, on their own OS thread. Every cell runs for `BAKEOFF_OVERHEAD_SECS` seconds (default
//! 2, at most 10) after a 0.3 s warm-up, with 4 closed-loop connections.
//!
//! ```text
//! cargo run --release -p bakeoff-front --example overhead
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bakeoff_front::{Backend, Front, Mode};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const CONNECTIONS: usize = 4;
const WARM_UP: Duration = Duration::from_millis(300);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs `setup` on a new thread with its own current-thread runtime and keeps that runtime
/// alive until the returned sender is dropped.
fn on_own_thread<F, Fut, T>(setup: F) -> Result<(T, oneshot::Sender<()>), Error>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, Error>>,
    T: Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready_tx.send(Err(Error::from(e)));
                return;
            }
        };
        runtime.block_on(async move {
            let _ = ready_tx.send(setup().await);
            let _ = stop_rx.await;
        });
    });
    let value = ready_rx.recv()??;
    Ok((value, stop_tx))
}

async fn backend() -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

struct Cell {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

async fn one_request(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    close: bool,
) -> Result<(), Error> {
    let mut request = Request::get("/").header("host", addr.to_string());
    if close {
        request = request.header("connection", "close");
    }
    sender.ready().await?;
    let response = sender
        .send_request(request.body(Full::new(Bytes::new()))?)
        .await?;
    response.into_body().collect().await?;
    Ok(())
}

async fn connect(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Closed-loop load: `CONNECTIONS` tasks until `measure` has passed after the warm-up.
async fn run(addr: SocketAddr, keep_alive: bool, measure: Duration) -> Result<Cell, Error> {
    let start = Instant::now();
    let measuring_from = start + WARM_UP;
    let end = measuring_from + measure;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut requests, mut errors) = (0u64, 0u64);
            let mut sender = None;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let result = async {
                    if sender.is_none() || !keep_alive {
                        sender = Some(connect(addr).await?);
                    }
                    match sender.as_mut() {
                        Some(s) => one_request(s, addr, !keep_alive).await,
                        None => Err(Error::from("no connection")),
                    }
                }
                .await;
                if now >= measuring_from {
                    match result {
                        Ok(()) => {
                            requests += 1;
                            let us = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX);
                            latency_us.saturating_record(us.max(1));
                        }
                        Err(_) => {
                            errors += 1;
                            sender = None;
                        }
                    }
                } else if result.is_err() {
                    sender = None;
                }
            }
            Ok::<_, Error>((requests, errors, latency_us))
        }));
    }
    let mut cell = Cell {
        requests: 0,
        errors: 0,
        elapsed: measure,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for task in tasks {
        let (requests, errors, latency_us) = task.await??;
        cell.requests += requests;
        cell.errors += errors;
        cell.latency_us.add(&latency_us)?;
    }
    Ok(cell)
}

fn main() -> Result<(), Error> {
    let seconds: u64 = std::env::var("BAKEOFF_OVERHEAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .clamp(1, 10);
    let measure = Duration::from_secs(seconds);

    let (backend_addr, _backend) = on_own_thread(backend)?;
    let (front, _front_runtime) = on_own_thread(move || async move {
        let front = Front::bind("127.0.0.1:0".parse()?, Mode::Http).await?;
        front.set_backend(Some(Backend::new("trivial", backend_addr)));
        Ok(front)
    })?;
    let front_addr = front.local_addr();

    let load = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{} build, {CONNECTIONS} connections, {seconds} s per cell after {WARM_UP:?} warm-up, {} CPUs",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "{:<12} {:<8} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "connections", "path", "req/s", "p50", "p90", "p99", "errors"
    );
    for keep_alive in [true, false] {
        for (path, addr) in [("direct", backend_addr), ("front", front_addr)] {
            let cell = load.block_on(run(addr, keep_alive, measure))?;
            let q = |q: f64| Duration::from_micros(cell.latency_us.value_at_quantile(q));
            println!(
                "{:<12} {:<8} {:>10.0} {:>10} {:>10} {:>10} {:>7}",
                if keep_alive {
                    "keep-alive"
                } else {
                    "per-request"
                },
                path,
                cell.requests as f64 / cell.elapsed.as_secs_f64(),
                format!("{:.0?}", q(0.50)),
                format!("{:.0?}", q(0.90)),
                format!("{:.0?}", q(0.99)),
                cell.errors,
            );
        }
    }
    let stats = front.stats();
    println!(
        "front: {} requests, {} front errors, {} connections accepted",
        stats.requests, stats.front_errors, stats.connections_accepted
    );
    Ok(())
}
