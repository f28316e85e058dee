use std::net::SocketAddr;
use std::time::Duration;

/// Everything that can go wrong in bakeoff-bench. Each message is one sentence naming the thing.
///
/// Failed requests during a load run are *not* errors here: they are counted in
/// [`crate::ErrorCounts`], because a server that drops requests is a measurement, not a bug.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("refusing to send load to {addr}: only loopback addresses (127.0.0.0/8, ::1) may be load targets")]
    NotLoopback { addr: SocketAddr },
    #[error("invalid load target: {reason}")]
    InvalidTarget { reason: String },
    #[error("invalid load shape: {reason}")]
    InvalidShape { reason: String },
    #[error("unknown policy `{value}`; expected one of: {expected}")]
    UnknownPolicy { value: String, expected: String },
    #[error("invalid latency objective `{value}`: {reason} (write it like p99=20ms, p50=5ms, p99=1.5s or max=200ms)")]
    InvalidSlo { value: String, reason: String },
    #[error("cannot summarise {what}: {reason}")]
    InvalidSamples { what: String, reason: String },
    #[error("{probe} was not ready after {waited:.2?} ({attempts} attempts; last: {last})")]
    NotReady {
        probe: String,
        waited: Duration,
        attempts: u64,
        last: String,
    },
    #[error("could not start the load generator: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the load generator stopped unexpectedly: {0}")]
    Worker(String),
    #[error("could not serialise the report to JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// File errors from `fs-err`, whose messages already name the path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
