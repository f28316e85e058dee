//! bakeoff's measuring and reporting library.
//!
//! - [`load`]: a fast HTTP/1.1 load generator (fixed concurrent connections, keep-alive or not,
//!   closed loop or open loop at a fixed rate, bounded in time and in requests) with an HDR
//!   latency histogram;
//! - [`Slo`]: a latency objective such as `p99=20ms`; [`Sweep`]: latency against offered rate,
//!   and the highest rate sustained within an objective;
//! - [`wait_ready`]: polls an address until the app really answers (launch-to-ready);
//! - [`reference_seconds`]: a fixed workload timed before every launch, the host's own speed;
//! - [`Report`]: the stable JSON record of one bench, with [`Stat`] summaries of N runs;
//! - [`recommend`]: picks a platform for a [`Policy`], with reasons in words;
//! - [`markdown`], [`html`], [`write_outputs`]: pure renderings of a report.
//!
//! Nothing here launches an instance: the orchestrator passes addresses and samples in.

mod error;
pub mod example;
mod format;
mod hostspeed;
mod http;
mod load;
mod phases;
mod ready;
mod recommend;
mod render;
mod report;
mod slo;
mod stat;

pub use error::BenchError;
pub use hostspeed::{host_speed_sentence, reference_seconds, spread, STEADY_SPREAD};
pub use load::{
    load, ErrorCounts, LatencySummary, LoadResult, LoadShape, LoadTarget, Saturation,
    MAX_CONNECTIONS, MAX_DURATION, MAX_RATE, MAX_REQUESTS, REQUEST_TIMEOUT,
};
pub use phases::{phase_stats, LaunchPhases, PhaseStat, PHASES};
pub use ready::{wait_ready, Probe, TCP_HOLD};
pub use recommend::{recommend, Policy, Recommendation, Verdict, BALANCED_WEIGHTS};
pub use render::{html, markdown, write_outputs, OutputPaths};
pub use report::{
    sustainable_rate, Accelerator, AppInfo, Conditions, HostInfo, ImageSize, LatencyMs, LoadStats,
    MemoryPart, MemoryStats, PlatformReport, Report, Status, Sweep, SweepPoint, TranslationStats,
    SCHEMA_VERSION,
};
pub use slo::{Quantile, Slo};
pub use stat::Stat;
