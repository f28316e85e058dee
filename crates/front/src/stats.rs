//! What the front observed: cumulative counters and a rolling per-second record.
//!
//! Counters are atomics. Completed requests, their response class and the upstream
//! response-head latency also go into one slot per second of a 60-slot ring (one short lock per
//! request), from which [`Recorder::window`] merges the last few seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::{Backend, InFlightById, Mode};

/// Seconds of history kept for [`Recorder::window`].
const SLOTS: u64 = 60;
/// Latencies are recorded in microseconds, up to this (longer ones count as this).
const MAX_LATENCY_US: u64 = 60_000_000;
/// 1 % precision is plenty for p50/p90/p99 and keeps each slot around 20 KB.
const SIGNIFICANT_FIGURES: u8 = 2;

/// Responses sent to clients, by status class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseClasses {
    /// 1xx and anything outside 100..=599 (rare; kept so the classes add up).
    pub other: u64,
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
}

impl ResponseClasses {
    fn add(&mut self, status: StatusCode) {
        match status.as_u16() / 100 {
            2 => self.s2xx += 1,
            3 => self.s3xx += 1,
            4 => self.s4xx += 1,
            5 => self.s5xx += 1,
            _ => self.other += 1,
        }
    }

    fn merge(&mut self, other: &ResponseClasses) {
        self.other += other.other;
        self.s2xx += other.s2xx;
        self.s3xx += other.s3xx;
        self.s4xx += other.s4xx;
        self.s5xx += other.s5xx;
    }

    pub fn total(&self) -> u64 {
        self.other + self.s2xx + self.s3xx + self.s4xx + self.s5xx
    }
}

/// Cumulative counters since the front started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub mode: Mode,
    pub uptime: Duration,
    /// The backend new traffic goes to.
    pub backend: Option<Backend>,
    pub connections_accepted: u64,
    pub connections_active: u64,
    /// HTTP requests received (TCP mode: 0).
    pub requests: u64,
    /// HTTP responses sent, by class, whether from a backend or from the front.
    pub responses: ResponseClasses,
    /// Responses the front made up itself (502, 503; also counted in `responses`), or, in TCP
    /// mode, client connections closed because no backend could be reached.
    pub front_errors: u64,
    /// Responses whose body broke off because the backend failed mid-stream (the client
    /// connection is closed; the head had already been sent).
    pub upstream_aborts: u64,
    /// Client connections closed because their bytes were not HTTP (hyper answered 400 or 431).
    pub malformed: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Requests (HTTP) or connections (TCP) in flight per backend id not yet drained.
    pub in_flight: InFlightById,
}

/// Upstream response-head latency percentiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// What happened over a recent span of time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The time actually covered: whole seconds plus the current partial one, never before the
    /// front started.
    pub span: Duration,
    /// Requests whose response head went back to the client within the span.
    pub requests: u64,
    /// `requests` per second of `span`.
    pub rate: f64,
    pub responses: ResponseClasses,
    pub front_errors: u64,
    /// From the moment the front began forwarding a request until the backend's response head
    /// arrived (connect time included); `None` when no backend answered within the span.
    pub latency: Option<Latency>,
}

struct Slot {
    /// Seconds since the recorder started; tells a live slot from one left over a lap ago.
    second: u64,
    classes: ResponseClasses,
    front_errors: u64,
    latency_us: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

impl Slot {
    fn reset(&mut self, second: u64) {
        self.second = second;
        self.classes = ResponseClasses::default();
        self.front_errors = 0;
        self.latency_us.reset();
    }
}

pub(crate) struct Recorder {
    started: Instant,
    connections_accepted: AtomicU64,
    connections_active: AtomicU64,
    requests: AtomicU64,
    front_errors: AtomicU64,
    upstream_aborts: AtomicU64,
    malformed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    responses: Mutex<ResponseClasses>,
    ring: Mutex<Vec<Slot>>,
}

/// Counts a client connection as active until dropped.
pub(crate) struct ActiveConnection {
    recorder: Arc<Recorder>,
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.recorder
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            started: Instant::now(),
            connections_accepted: AtomicU64::new(0),
            connections_active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            front_errors: AtomicU64::new(0),
            upstream_aborts: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            responses: Mutex::new(ResponseClasses::default()),
            ring: Mutex::new(
                (0..SLOTS)
                    .map(|_| Slot {
                        second: u64::MAX,
                        classes: ResponseClasses::default(),
                        front_errors: 0,
                        latency_us: histogram(),
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn connection_opened(self: &Arc<Self>) -> ActiveConnection {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_active.fetch_add(1, Ordering::Relaxed);
        ActiveConnection {
            recorder: self.clone(),
        }
    }

    pub(crate) fn request_received(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn upstream_aborted(&self) {
        self.upstream_aborts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// A TCP client connection closed because no backend could be reached.
    pub(crate) fn connection_refused(&self) {
        self.front_errors.fetch_add(1, Ordering::Relaxed);
        let now = self.started.elapsed().as_secs();
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        slot(&mut ring, now).front_errors += 1;
    }

    /// A response head went back to a client. `upstream_latency` is `None` for responses the
    /// front made up itself; those that are 5xx count as front errors.
    pub(crate) fn response(&self, status: StatusCode, upstream_latency: Option<Duration>) {
        let generated = upstream_latency.is_none() && status.is_server_error();
        if generated {
            self.front_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(status);
        let now = self.started.elapsed().as_secs();
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slot(&mut ring, now);
        slot.classes.add(status);
        if generated {
            slot.front_errors += 1;
        }
        if let Some(latency) = upstream_latency {
            let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US);
            slot.latency_us
                .saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }

    pub(crate) fn snapshot(
        &self,
        mode: Mode,
        backend: Option<Backend>,
        in_flight: InFlightById,
    ) -> Stats {
        Stats {
            mode,
            uptime: self.started.elapsed(),
            backend,
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_active: self.connections_active.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            responses: *self
                .responses
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            front_errors: self.front_errors.load(Ordering::Relaxed),
            upstream_aborts: self.upstream_aborts.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            in_flight,
        }
    }

    pub(crate) fn window(&self, last: Duration) -> Window {
        let elapsed = self.started.elapsed();
        let now = elapsed.as_secs();
        // Whole seconds asked for, the current partial one being the last of them.
        let seconds = last.as_secs_f64().ceil().clamp(1.0, SLOTS as f64) as u64;
        let first = now.saturating_sub(seconds - 1);
        let span = elapsed - Duration::from_secs(first);

        let mut classes = ResponseClasses::default();
        let mut front_errors = 0;
        let mut latency_us = histogram();
        {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            for slot in ring.iter().filter(|s| (first..=now).contains(&s.second)) {
                classes.merge(&slot.classes);
                front_errors += slot.front_errors;
                // Same bounds on both sides, so this cannot fail.
                let _ = latency_us.add(&slot.latency_us);
            }
        }
        let requests = classes.total();
        let us = |q: f64| Duration::from_micros(latency_us.value_at_quantile(q));
        let latency = (!latency_us.is_empty()).then(|| Latency {
            samples: latency_us.len(),
            p50: us(0.50),
            p90: us(0.90),
            p99: us(0.99),
            max: Duration::from_micros(latency_us.max()),
        });
        Window {
            span,
            requests,
            rate: requests as f64 / span.as_secs_f64().max(1e-3),
            responses: classes,
            front_errors,
            latency,
        }
    }
}

/// The ring slot for `second`, cleared if it still holds a second from a previous lap.
fn slot(ring: &mut [Slot], second: u64) -> &mut Slot {
    let slot = &mut ring[(second % SLOTS) as usize];
    if slot.second != second {
        slot.reset(second);
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_reports_counts_and_percentiles() {
        let recorder = Recorder::new();
        for ms in 1..=100u64 {
            recorder.response(StatusCode::OK, Some(Duration::from_millis(ms)));
        }
        recorder.response(StatusCode::SERVICE_UNAVAILABLE, None);
        recorder.response(StatusCode::NOT_FOUND, Some(Duration::from_millis(1)));

        let window = recorder.window(Duration::from_secs(10));
        assert_eq!(window.requests, 102);
        assert_eq!(window.responses.s2xx, 100);
        assert_eq!(window.responses.s4xx, 1);
        assert_eq!(window.responses.s5xx, 1);
        assert_eq!(window.front_errors, 1);
        let latency = window.latency.expect("upstream responses were recorded");
        assert_eq!(latency.samples, 101);
        // 2 significant figures: within 1 % of the exact order statistic.
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() <= ms * 0.01 + 0.01;
        assert!(near(latency.p50, 50.0), "p50 = {:?}", latency.p50);
        assert!(near(latency.p90, 90.0), "p90 = {:?}", latency.p90);
        assert!(near(latency.p99, 99.0), "p99 = {:?}", latency.p99);
        assert!(near(latency.max, 100.0), "max = {:?}", latency.max);
        assert!(window.span <= recorder.started.elapsed());
        assert!(window.rate > 0.0);

        let stats = recorder.snapshot(Mode::Http, None, InFlightById::new());
        assert_eq!(stats.responses.total(), 102);
        assert_eq!(stats.front_errors, 1);
    }

    #[test]
    fn an_empty_window_has_no_latency() {
        let recorder = Recorder::new();
        let window = recorder.window(Duration::from_secs(5));
        assert_eq!(window.requests, 0);
        assert_eq!(window.latency, None);
        assert_eq!(window.rate, 0.0);
    }

    #[test]
    fn slots_from_a_previous_lap_are_cleared() {
        let mut ring: Vec<Slot> = (0..SLOTS)
            .map(|_| Slot {
                second: u64::MAX,
                classes: ResponseClasses::default(),
                front_errors: 0,
                latency_us: histogram(),
            })
            .collect();
        slot(&mut ring, 3).classes.add(StatusCode::OK);
        assert_eq!(slot(&mut ring, 3).classes.s2xx, 1);
        assert_eq!(slot(&mut ring, 3 + SLOTS).classes.s2xx, 0);
    }
}
