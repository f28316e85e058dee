//! The HTTP/1.1 load generator: a fixed number of connections, each sending GET requests back to
//! back (closed loop) or on a fixed schedule (open loop, [`LoadShape::rate`]), for a fixed time
//! and at most a fixed number of requests.
//!
//! In the open loop each request has an intended send time, and its latency is measured from
//! that time, not from when it could actually be sent: a server that stalls for a second makes
//! every request scheduled during the stall late, and that lateness is part of their latency
//! (the coordinated-omission correction of wrk2). A closed loop hides it: its connections just
//! wait, and only the one request per connection in flight sees the stall.
//!
//! It runs on its own thread(s), each with a single-threaded tokio runtime (like `wrk -t1`), so it
//! measures the same way whatever runtime the caller uses and never blocks it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http::{Feed, ResponseReader, MAX_HEAD};
use crate::BenchError;

/// At most this many concurrent connections.
pub const MAX_CONNECTIONS: u32 = 10_000;
/// At most this long a run (and, separately, a warm-up).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// At most this many requests in one run, whatever `max_requests` says.
pub const MAX_REQUESTS: u64 = 10_000_000;
/// A request without a complete response after this long counts as a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many requests per second in an open-loop run.
pub const MAX_RATE: f64 = 1_000_000.0;
/// The shortest run that gives meaningful rates.
const MIN_DURATION: Duration = Duration::from_millis(10);
/// Bytes read at once; the buffer grows up to the largest accepted response head.
const READ_BUFFER: usize = 8 * 1024;
/// Latencies are recorded in microseconds, from 1 µs to this many.
const HIST_MAX_US: u64 = 3_600_000_000;

/// Where load is sent. Only loopback addresses are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadTarget {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The request target, starting with `/`.
    pub path: String,
}

impl LoadTarget {
    /// `GET /` with the address as the Host header.
    pub fn new(addr: SocketAddr) -> LoadTarget {
        LoadTarget {
            addr,
            host: addr.to_string(),
            path: "/".to_string(),
        }
    }

    /// Refuses non-loopback addresses and header values that would break the request.
    pub fn validate(&self) -> Result<(), BenchError> {
        if !self.addr.ip().is_loopback() {
            return Err(BenchError::NotLoopback { addr: self.addr });
        }
        if self.addr.port() == 0 {
            return Err(BenchError::InvalidTarget {
                reason: format!("{} has port 0; give the published port", self.addr),
            });
        }
        let bad = |s: &str| s.bytes().any(|b| b.is_ascii_control() || b == b' ');
        if !self.path.starts_with('/') || bad(&self.path) {
            return Err(BenchError::InvalidTarget {
                reason: format!(
                    "the path `{}` must start with '/' and contain no spaces or control characters",
                    self.path.escape_default()
                ),
            });
        }
        if self.host.is_empty() || bad(&self.host) {
            return Err(BenchError::InvalidTarget {
                reason: format!(
                    "the Host header `{}` must be non-empty with no spaces or control characters",
                    self.host.escape_default()
                ),
            });
        }
        Ok(())
    }

    /// The exact bytes of one request.
    fn request(&self, keepalive: bool) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bakeoff\r\n{}\r\n",
            self.path,
            self.host,
            if keepalive {
                ""
            } else {
                "Connection: close\r\n"
            }
        )
        .into_bytes()
    }
}

/// How much load: bounded in time and in requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadShape {
    /// Concurrent connections, 1 to [`MAX_CONNECTIONS`].
    pub connections: u32,
    /// The measured part of the run.
    #[serde(rename = "duration_seconds", with = "seconds")]
    pub duration: Duration,
    /// Reuse connections (HTTP keep-alive); otherwise one TCP connection per request, with
    /// `Connection: close`, and the connect time is part of each request's latency.
    pub keepalive: bool,
    /// Load sent before measuring starts, not counted.
    #[serde(rename = "warmup_seconds", with = "seconds")]
    pub warmup: Duration,
    /// Stop after this many measured requests (never more than [`MAX_REQUESTS`]).
    pub max_requests: Option<u64>,
    /// Open loop: this many requests per second in total, spread evenly over the connections,
    /// each on a fixed schedule, latency measured from each request's intended send time.
    /// `None`: closed loop, every connection sends its next request as soon as the last one
    /// is answered.
    #[serde(default)]
    pub rate: Option<f64>,
}

impl Default for LoadShape {
    fn default() -> LoadShape {
        LoadShape {
            connections: 16,
            duration: Duration::from_secs(10),
            keepalive: true,
            warmup: Duration::from_secs(1),
            max_requests: None,
            rate: None,
        }
    }
}

impl LoadShape {
    pub fn validate(&self) -> Result<(), BenchError> {
        let err = |reason: String| Err(BenchError::InvalidShape { reason });
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return err(format!(
                "connections must be between 1 and {MAX_CONNECTIONS}, got {}",
                self.connections
            ));
        }
        if self.duration < MIN_DURATION || self.duration > MAX_DURATION {
            return err(format!(
                "the duration must be between {MIN_DURATION:?} and {}s, got {:?}",
                MAX_DURATION.as_secs(),
                self.duration
            ));
        }
        if self.warmup > MAX_DURATION {
            return err(format!(
                "the warm-up must be at most {}s, got {:?}",
                MAX_DURATION.as_secs(),
                self.warmup
            ));
        }
        match self.max_requests {
            Some(0) => return err("max_requests must be at least 1 (or unset)".to_string()),
            Some(n) if n > MAX_REQUESTS => {
                return err(format!(
                    "max_requests must be at most {MAX_REQUESTS}, got {n}"
                ))
            }
            _ => {}
        }
        match self.rate {
            Some(r) if !(r.is_finite() && r > 0.0 && r <= MAX_RATE) => err(format!(
                "the rate must be a number of requests per second above 0 and at most {MAX_RATE}, got {r}"
            )),
            _ => Ok(()),
        }
    }

    /// The time between two requests of one connection in an open-loop run.
    fn interval(&self) -> Option<Duration> {
        self.rate.map(|r| {
            Duration::try_from_secs_f64(f64::from(self.connections) / r)
                .map_or(MAX_DURATION, |d| d.min(MAX_DURATION))
        })
    }

    /// The request budget: `max_requests` or the hard cap.
    pub fn request_cap(&self) -> u64 {
        self.max_requests.unwrap_or(MAX_REQUESTS).min(MAX_REQUESTS)
    }
}

/// Serde for a `Duration` as (fractional) seconds.
pub(crate) mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v)
            .map_err(|_| serde::de::Error::custom(format!("{v} is not a valid number of seconds")))
    }
}

/// Requests that got no complete response, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// The TCP connection could not be made (refused, unreachable, out of ports ...).
    pub connect: u64,
    /// No complete response within [`REQUEST_TIMEOUT`].
    pub timeout: u64,
    /// The server closed the connection before a complete response.
    pub closed: u64,
    /// Other read/write failures, such as a connection reset.
    pub io: u64,
    /// The response was not valid HTTP/1.x.
    pub protocol: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.closed + self.io + self.protocol
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.closed += o.closed;
        self.io += o.io;
        self.protocol += o.protocol;
    }

    fn count(&mut self, kind: Failure) {
        match kind {
            Failure::Connect => self.connect += 1,
            Failure::Closed => self.closed += 1,
            Failure::Io => self.io += 1,
            Failure::Protocol => self.protocol += 1,
        }
    }
}

/// Latency of complete responses (2xx or not), in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub min_us: u64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub p50_us: u64,
    pub p75_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarises a histogram of microseconds; all zeros when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            min_us: h.min(),
            mean_us: h.mean(),
            stdev_us: h.stdev(),
            p50_us: h.value_at_quantile(0.50),
            p75_us: h.value_at_quantile(0.75),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Which side could not keep up with an open-loop rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Saturation {
    /// The server answered slower than the rate asked (the generator had time to spare).
    Server,
    /// The load generator itself could not keep its schedule (its threads were busy).
    Generator,
}

impl std::fmt::Display for Saturation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Saturation::Server => "the server",
            Saturation::Generator => "the load generator",
        })
    }
}

/// A loader thread busier than this share of the run could not keep its schedule.
const GENERATOR_BUSY: f64 = 0.9;
/// An open-loop run achieving less than this share of its rate saturated one side.
const SATURATED_BELOW: f64 = 0.95;

/// What one run measured (the warm-up excluded).
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Complete responses, whatever their status.
    pub requests: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Complete responses with another status.
    pub non_2xx: u64,
    pub errors: ErrorCounts,
    /// Response bytes received (heads and bodies).
    pub bytes: u64,
    /// The measured time.
    pub elapsed: Duration,
    /// Complete responses per second of `elapsed`.
    pub req_per_sec: f64,
    pub bytes_per_sec: f64,
    pub latency: LatencySummary,
    /// Every complete response's latency in microseconds; merge runs with `Histogram::add`.
    pub histogram: Histogram<u64>,
    /// The run ended because the request budget was used, before the duration elapsed.
    pub capped: bool,
    /// The open-loop rate asked for ([`LoadShape::rate`]); `None` for a closed loop.
    pub offered_rate: Option<f64>,
    /// The longest a request cut by the end of the run had been in flight (from its send).
    pub longest_in_flight: Option<Duration>,
    /// Open loop: how far behind its schedule the most belated connection was at the end.
    pub schedule_lag: Option<Duration>,
    /// The busiest loader thread's CPU time over the run's wall time (0 to 1).
    pub generator_busy: f64,
    /// Open loop: which side could not keep up, when less than 95 % of the rate was achieved.
    pub saturated: Option<Saturation>,
}

/// Sends load to `target` as `shape` says and measures it. Failed requests are counted in
/// [`LoadResult::errors`]; only invalid arguments (or failing to start a thread) are errors.
pub async fn load(target: LoadTarget, shape: LoadShape) -> Result<LoadResult, BenchError> {
    target.validate()?;
    shape.validate()?;
    ensure_open_files(shape.connections)?;
    let threads = loader_threads(shape.connections);
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bakeoff-load".to_string())
        .spawn(move || {
            let _ = tx.send(run(&target, &shape, threads, cancel));
        })
        .map_err(BenchError::Runtime)?;
    rx.await
        .map_err(|_| BenchError::Worker("the load thread ended without a result".to_string()))?
}

/// File descriptors kept free besides the connections.
const SPARE_FILES: libc::rlim_t = 128;

/// Makes sure `connections` sockets can be open at once: raises the soft open-files limit to the
/// hard one if needed, else fails with a clear error (instead of counting every connect
/// beyond the limit as an error).
fn ensure_open_files(connections: u32) -> Result<(), BenchError> {
    let needed = libc::rlim_t::from(connections) + SPARE_FILES;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // Unknown limit: let connects report their own errors.
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max >= needed {
        // All the way to the hard limit: the rest of the process (an in-process server, say)
        // may need descriptors too.
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(BenchError::InvalidShape {
        reason: format!(
            "{connections} connections need about {needed} open files, but this process may open only {} (hard limit {}); lower --connections or raise the limit with `ulimit -n`",
            lim.rlim_cur, lim.rlim_max
        ),
    })
}

/// Stops the workers when `load`'s future is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One loader thread per two CPUs (the rest is left to the server under test), never more
/// threads than connections. On a 2-CPU machine that is one thread, like `wrk -t1`.
fn loader_threads(connections: u32) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus / 2).clamp(1, connections as usize)
}

/// What every connection shares.
struct Shared {
    addr: SocketAddr,
    request: Vec<u8>,
    keepalive: bool,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// Open loop: the time between two sends of one connection.
    interval: Option<Duration>,
    /// Open loop: the connections' start offsets are spread over one interval.
    connections: u32,
    cap: u64,
    issued: AtomicU64,
    /// Hands out connection indexes across threads (for the open-loop offsets).
    slot: std::sync::atomic::AtomicU32,
    cancel: Arc<AtomicBool>,
}

impl Shared {
    /// Takes one request from the budget.
    fn ticket(&self) -> bool {
        self.issued.fetch_add(1, Ordering::Relaxed) < self.cap
    }
}

/// Counters of one loader thread.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    non_2xx: u64,
    errors: ErrorCounts,
    bytes: u64,
    longest_in_flight: Option<Duration>,
    schedule_lag: Option<Duration>,
    busy: f64,
}

impl Tally {
    fn new() -> Result<Tally, BenchError> {
        Ok(Tally {
            hist: new_histogram()?,
            ok: 0,
            non_2xx: 0,
            errors: ErrorCounts::default(),
            bytes: 0,
            longest_in_flight: None,
            schedule_lag: None,
            busy: 0.0,
        })
    }
}

fn max_of(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3)
        .map_err(|e| BenchError::Worker(format!("could not create the latency histogram: {e}")))
}

fn run(
    target: &LoadTarget,
    shape: &LoadShape,
    threads: usize,
    cancel: Arc<AtomicBool>,
) -> Result<LoadResult, BenchError> {
    let start = Instant::now();
    let measure_from = start + shape.warmup;
    let shared = Arc::new(Shared {
        addr: target.addr,
        request: target.request(shape.keepalive),
        keepalive: shape.keepalive,
        start,
        measure_from,
        end: measure_from + shape.duration,
        interval: shape.interval(),
        connections: shape.connections,
        cap: shape.request_cap(),
        issued: AtomicU64::new(0),
        slot: std::sync::atomic::AtomicU32::new(0),
        cancel,
    });
    let per_thread: Vec<u32> = (0..threads as u32)
        .map(|i| {
            shape.connections / threads as u32 + u32::from(i < shape.connections % threads as u32)
        })
        .collect();
    let tallies: Vec<Result<Tally, BenchError>> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = per_thread
                .iter()
                .skip(1)
                .map(|&n| {
                    let shared = shared.clone();
                    scope.spawn(move || run_thread(shared, n))
                })
                .collect();
            let mut out = vec![run_thread(shared.clone(), per_thread[0])];
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| {
                    Err(BenchError::Worker("a load thread panicked".to_string()))
                }));
            }
            out
        });
    let finished = Instant::now().min(shared.end);
    let elapsed = finished.saturating_duration_since(measure_from);

    let mut total = Tally::new()?;
    for t in tallies {
        let t = t?;
        total
            .hist
            .add(&t.hist)
            .map_err(|e| BenchError::Worker(format!("could not merge latency histograms: {e}")))?;
        total.ok += t.ok;
        total.non_2xx += t.non_2xx;
        total.errors.add(&t.errors);
        total.bytes += t.bytes;
        total.longest_in_flight = max_of(total.longest_in_flight, t.longest_in_flight);
        total.schedule_lag = max_of(total.schedule_lag, t.schedule_lag);
        total.busy = total.busy.max(t.busy);
    }
    let requests = total.ok + total.non_2xx;
    let secs = elapsed.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Ok(LoadResult {
        requests,
        ok: total.ok,
        non_2xx: total.non_2xx,
        errors: total.errors,
        bytes: total.bytes,
        elapsed,
        req_per_sec: per_sec(requests),
        bytes_per_sec: per_sec(total.bytes),
        latency: LatencySummary::from_histogram(&total.hist),
        histogram: total.hist,
        capped: shared.issued.load(Ordering::Relaxed) >= shared.cap,
        offered_rate: shape.rate,
        longest_in_flight: total.longest_in_flight,
        schedule_lag: total.schedule_lag,
        generator_busy: total.busy,
        saturated: shape.rate.and_then(|rate| {
            (per_sec(requests) < SATURATED_BELOW * rate).then_some(
                if total.busy >= GENERATOR_BUSY {
                    Saturation::Generator
                } else {
                    Saturation::Server
                },
            )
        }),
    })
}

fn run_thread(shared: Arc<Shared>, connections: u32) -> Result<Tally, BenchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let tally = Rc::new(RefCell::new(Tally::new()?));
    let local = tokio::task::LocalSet::new();
    for _ in 0..connections {
        let index = shared.slot.fetch_add(1, Ordering::Relaxed);
        local.spawn_local(connection(shared.clone(), tally.clone(), index));
    }
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    rt.block_on(local);
    let (cpu, wall) = (thread_cpu().saturating_sub(cpu0), wall0.elapsed());
    drop(rt);
    let mut tally = Rc::try_unwrap(tally)
        .map(RefCell::into_inner)
        .map_err(|_| BenchError::Worker("a connection task outlived its thread".to_string()))?;
    if !wall.is_zero() {
        tally.busy = (cpu.as_secs_f64() / wall.as_secs_f64()).min(1.0);
    }
    Ok(tally)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Closed,
    Io,
    Protocol,
}

/// One connection slot: requests back to back (or, in the open loop, each at its intended time)
/// until the end, the budget, or cancellation.
async fn connection(shared: Arc<Shared>, tally: Rc<RefCell<Tally>>, index: u32) {
    let lag = run_connection(&shared, &tally, index).await;
    let mut t = tally.borrow_mut();
    t.schedule_lag = max_of(t.schedule_lag, lag);
}

/// [`connection`]'s loop; returns how far behind its schedule it ended (open loop).
async fn run_connection(
    shared: &Arc<Shared>,
    tally: &Rc<RefCell<Tally>>,
    index: u32,
) -> Option<Duration> {
    let mut conn = Conn {
        stream: None,
        buf: vec![0; READ_BUFFER],
    };
    // Open loop: the intended send time of the next request; connection `index` starts
    // `index / connections` of an interval after the others, so that sends are spread evenly.
    let mut scheduled = shared
        .interval
        .map(|i| shared.start + i.mul_f64(f64::from(index) / f64::from(shared.connections.max(1))));
    let mut now = Instant::now();
    loop {
        if let Some(at) = scheduled {
            if at >= shared.end {
                break;
            }
            if at > now {
                tokio::time::sleep_until(at).await;
                now = Instant::now();
            }
        }
        if now >= shared.end || shared.cancel.load(Ordering::Relaxed) {
            break;
        }
        // Latency is counted from the intended send time when there is one. A request counts
        // when it is *sent* within the measured time: one scheduled during the warm-up but
        // sent after it (the schedule fell behind) is measured too, or an overloaded run would
        // count almost nothing and report a collapsed rate.
        let started = scheduled.unwrap_or(now);
        let sent = now;
        let measured = sent >= shared.measure_from;
        if measured && !shared.ticket() {
            break;
        }
        if let (Some(at), Some(i)) = (scheduled.as_mut(), shared.interval) {
            *at += i;
        }
        let timeout_at = now + REQUEST_TIMEOUT;
        let deadline = timeout_at.min(shared.end);
        let result = tokio::time::timeout_at(deadline, conn.request(shared)).await;
        now = Instant::now();
        let mut t = tally.borrow_mut();
        match result {
            Ok(Ok((status, bytes))) => {
                if measured {
                    let us = now.saturating_duration_since(started).as_micros() as u64;
                    t.hist.saturating_record(us.max(1));
                    if (200..300).contains(&status) {
                        t.ok += 1;
                    } else {
                        t.non_2xx += 1;
                    }
                    t.bytes += bytes;
                }
            }
            Ok(Err(failure)) => {
                conn.stream = None;
                if measured {
                    t.errors.count(failure);
                }
            }
            Err(_) => {
                conn.stream = None;
                // Cut by the end of the run: neither a response nor an error; how long it had
                // been waiting is kept (a window in which nothing completed says so).
                if deadline < timeout_at {
                    t.longest_in_flight = max_of(
                        t.longest_in_flight,
                        Some(now.saturating_duration_since(sent)),
                    );
                    break;
                }
                if measured {
                    t.errors.timeout += 1;
                }
            }
        }
    }
    // How late the next send would have been: the schedule the connection could not keep.
    scheduled
        .filter(|at| *at < shared.end)
        .map(|at| shared.end.saturating_duration_since(at))
}

struct Conn {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

fn io_failure(e: &std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Failure::Closed,
        _ => Failure::Io,
    }
}

impl Conn {
    /// One request and its complete response: (status, response bytes).
    async fn request(&mut self, shared: &Shared) -> Result<(u16, u64), Failure> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(shared.addr)
                    .await
                    .map_err(|_| Failure::Connect)?;
                if shared.keepalive {
                    let _ = s.set_nodelay(true);
                }
                self.stream.insert(s)
            }
        };
        stream
            .write_all(&shared.request)
            .await
            .map_err(|e| io_failure(&e))?;
        let mut reader = ResponseReader::new();
        let mut filled = 0;
        let mut bytes = 0u64;
        loop {
            if filled == self.buf.len() {
                // Only a head in progress keeps bytes; grow for a big head.
                if self.buf.len() >= MAX_HEAD {
                    return Err(Failure::Protocol);
                }
                let len = (self.buf.len() * 2).min(MAX_HEAD);
                self.buf.resize(len, 0);
            }
            let n = stream
                .read(&mut self.buf[filled..])
                .await
                .map_err(|e| io_failure(&e))?;
            if n == 0 {
                self.stream = None;
                return if reader.eof() {
                    Ok((reader.outcome().status, bytes))
                } else {
                    Err(Failure::Closed)
                };
            }
            bytes += n as u64;
            filled += n;
            match reader.feed(&self.buf[..filled]) {
                Err(_) => return Err(Failure::Protocol),
                Ok(Feed::NeedMore) => {
                    if !reader.in_head() {
                        filled = 0;
                    }
                }
                Ok(Feed::Done { consumed }) => {
                    let outcome = reader.outcome();
                    // Bytes beyond the response were never asked for: do not reuse the stream.
                    if !shared.keepalive || !outcome.keep_alive || consumed != filled {
                        self.stream = None;
                    }
                    return Ok((outcome.status, bytes));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> LoadShape {
        LoadShape {
            connections: 4,
            duration: Duration::from_secs(1),
            keepalive: true,
            warmup: Duration::ZERO,
            max_requests: None,
            rate: None,
        }
    }

    #[test]
    fn shapes_outside_the_bounds_are_refused_with_the_limit() {
        let cases = [
            (
                LoadShape {
                    connections: 0,
                    ..shape()
                },
                "invalid load shape: connections must be between 1 and 10000, got 0",
            ),
            (
                LoadShape {
                    connections: 10_001,
                    ..shape()
                },
                "invalid load shape: connections must be between 1 and 10000, got 10001",
            ),
            (
                LoadShape {
                    duration: Duration::ZERO,
                    ..shape()
                },
                "invalid load shape: the duration must be between 10ms and 3600s, got 0ns",
            ),
            (
                LoadShape {
                    duration: Duration::from_secs(3601),
                    ..shape()
                },
                "invalid load shape: the duration must be between 10ms and 3600s, got 3601s",
            ),
            (
                LoadShape {
                    warmup: Duration::from_secs(7200),
                    ..shape()
                },
                "invalid load shape: the warm-up must be at most 3600s, got 7200s",
            ),
            (
                LoadShape {
                    max_requests: Some(0),
                    ..shape()
                },
                "invalid load shape: max_requests must be at least 1 (or unset)",
            ),
            (
                LoadShape {
                    max_requests: Some(MAX_REQUESTS + 1),
                    ..shape()
                },
                "invalid load shape: max_requests must be at most 10000000, got 10000001",
            ),
            (
                LoadShape {
                    rate: Some(0.0),
                    ..shape()
                },
                "invalid load shape: the rate must be a number of requests per second above 0 and at most 1000000, got 0",
            ),
            (
                LoadShape {
                    rate: Some(f64::NAN),
                    ..shape()
                },
                "invalid load shape: the rate must be a number of requests per second above 0 and at most 1000000, got NaN",
            ),
            (
                LoadShape {
                    rate: Some(2e6),
                    ..shape()
                },
                "invalid load shape: the rate must be a number of requests per second above 0 and at most 1000000, got 2000000",
            ),
        ];
        for (s, msg) in cases {
            assert_eq!(s.validate().unwrap_err().to_string(), msg);
        }
        assert!(shape().validate().is_ok());
        assert_eq!(shape().request_cap(), MAX_REQUESTS);
        assert_eq!(
            LoadShape {
                max_requests: Some(7),
                ..shape()
            }
            .request_cap(),
            7
        );
    }

    #[test]
    fn only_loopback_targets_with_clean_headers_are_accepted() {
        let ok = LoadTarget::new("127.0.0.2:8080".parse().unwrap());
        assert!(ok.validate().is_ok());
        assert!(LoadTarget::new("[::1]:80".parse().unwrap())
            .validate()
            .is_ok());
        let remote = LoadTarget::new("10.0.2.15:80".parse().unwrap());
        assert_eq!(
            remote.validate().unwrap_err().to_string(),
            "refusing to send load to 10.0.2.15:80: only loopback addresses (127.0.0.0/8, ::1) may be load targets"
        );
        let bad_path = LoadTarget {
            path: "/a b".into(),
            ..ok.clone()
        };
        assert!(bad_path
            .validate()
            .unwrap_err()
            .to_string()
            .contains("the path `/a b` must start with '/'"));
        let relative = LoadTarget {
            path: "index.html".into(),
            ..ok.clone()
        };
        assert!(relative.validate().is_err());
        let injected = LoadTarget {
            host: "x\r\nEvil: 1".into(),
            ..ok.clone()
        };
        assert!(injected
            .validate()
            .unwrap_err()
            .to_string()
            .contains("Host header"));
        let port0 = LoadTarget::new("127.0.0.1:0".parse().unwrap());
        assert!(port0.validate().unwrap_err().to_string().contains("port 0"));
    }

    #[test]
    fn requests_say_close_only_without_keepalive() {
        let t = LoadTarget {
            path: "/x?y=1".into(),
            ..LoadTarget::new("127.0.0.1:8080".parse().unwrap())
        };
        assert_eq!(
            String::from_utf8(t.request(true)).unwrap(),
            "GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bakeoff\r\n\r\n"
        );
        assert!(String::from_utf8(t.request(false))
            .unwrap()
            .ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn shape_serialises_durations_as_seconds() {
        let json = serde_json::to_string(&LoadShape {
            warmup: Duration::from_millis(500),
            ..shape()
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"connections":4,"duration_seconds":1.0,"keepalive":true,"warmup_seconds":0.5,"max_requests":null,"rate":null}"#
        );
        let back: LoadShape = serde_json::from_str(&json).unwrap();
        assert_eq!(back.warmup, Duration::from_millis(500));
        // Shapes written before open-loop load read back as closed loop.
        let old: LoadShape = serde_json::from_str(&json.replace(r#","rate":null"#, "")).unwrap();
        assert_eq!(old.rate, None);
        assert_eq!(
            LoadShape {
                rate: Some(200.0),
                ..shape()
            }
            .interval(),
            Some(Duration::from_millis(20))
        );
        assert!(serde_json::from_str::<LoadShape>(&json.replace("0.5", "-1")).is_err());
    }

    #[test]
    fn one_thread_per_two_cpus_never_more_than_connections() {
        assert_eq!(loader_threads(1), 1);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(loader_threads(10_000), (cpus / 2).max(1));
    }
}
