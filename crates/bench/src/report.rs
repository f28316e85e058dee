//! The report of one bench: a stable JSON schema (see [`SCHEMA_VERSION`]).

use std::collections::BTreeMap;

use bakeoff_spec::Platform;
use serde::{Deserialize, Serialize};

use crate::{
    BenchError, ErrorCounts, LatencySummary, LoadResult, LoadShape, Policy, Recommendation, Slo,
    Stat,
};

/// Bumped whenever a field is renamed or removed, or changes meaning. Adding optional fields
/// does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything one `bakeoff bench` measured, and what it recommends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool_version: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub host: HostInfo,
    pub app: AppInfo,
    pub load_shape: LoadShape,
    pub runs_per_platform: u32,
    pub policy: Policy,
    pub platforms: Vec<PlatformReport>,
    /// Filled in by [`crate::recommend`] once the platforms are measured.
    pub recommendation: Option<Recommendation>,
}

impl Report {
    /// A report created now on this host, with no platforms yet.
    pub fn new(
        tool_version: &str,
        app: AppInfo,
        load_shape: LoadShape,
        runs_per_platform: u32,
        policy: Policy,
    ) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            tool_version: tool_version.to_string(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            host: HostInfo::detect(),
            app,
            load_shape,
            runs_per_platform,
            policy,
            platforms: Vec::new(),
            recommendation: None,
        }
    }

    pub fn platform(&self, platform: Platform) -> Option<&PlatformReport> {
        self.platforms.iter().find(|p| p.platform == platform)
    }
}

/// The machine the bench ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// `uname -r`.
    pub kernel: String,
    /// PRETTY_NAME from os-release.
    pub os: String,
}

impl HostInfo {
    /// Reads this host's facts from /proc and /etc/os-release; a fact that cannot be read is
    /// "unknown" (or 0), never an error.
    pub fn detect() -> HostInfo {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
        };
        let memory_bytes = read("/proc/meminfo")
            .and_then(|m| {
                m.lines().find_map(|l| {
                    let kib = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
                    kib.trim().parse::<u64>().ok()
                })
            })
            .map_or(0, |kib| kib * 1024);
        let os = read("/etc/os-release")
            .and_then(|r| {
                r.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "unknown".to_string());
        HostInfo {
            hostname: read("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".to_string()),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
            memory_bytes,
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".to_string()),
            os,
        }
    }
}

/// The app under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: String,
    /// What the user gave: a directory, a file, `deb:NAME` ...
    pub input: String,
    pub build_seconds: Option<f64>,
    /// Bytes of the app's main binary.
    pub binary_size: Option<u64>,
    /// The content hash of the built artifact: which build these figures belong to.
    #[serde(default)]
    pub artifact_id: Option<String>,
}

/// One platform's figures. Anything not measured is absent (`null`), never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformReport {
    pub platform: Platform,
    /// The image kind, when the bench was asked for one (`--on xen:rumprun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<bakeoff_spec::Target>,
    pub status: Status,
    pub conditions: Option<Conditions>,
    pub image_size: Option<ImageSize>,
    /// Seconds from the start request to the first successful probe, over N runs.
    pub launch_to_ready: Option<Stat>,
    pub memory: Option<MemoryStats>,
    pub load: Option<LoadStats>,
    #[serde(default)]
    pub notes: Vec<String>,
    /// Latency against offered rate (`bench --sweep`), when swept.
    #[serde(default)]
    pub sweep: Option<Sweep>,
    /// A VM's launch split into phases (seconds from the start request, over the runs), from
    /// PID 1's console lines; empty where the platform has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launch_phases: Vec<crate::PhaseStat>,
    /// Seconds a fixed reference workload took just before each run's launch, in the order of
    /// `launch_to_ready`'s samples: the host's own speed at that moment
    /// ([`crate::reference_seconds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_reference: Option<Stat>,
    /// What the VMM's translator held when each launch first answered (QEMU under TCG), over
    /// the runs; absent where nothing is translated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<TranslationStats>,
}

impl PlatformReport {
    /// A measured platform; fill in the figures.
    pub fn measured(platform: Platform, conditions: Conditions) -> PlatformReport {
        PlatformReport {
            platform,
            target: None,
            status: Status::Measured,
            conditions: Some(conditions),
            image_size: None,
            launch_to_ready: None,
            memory: None,
            load: None,
            notes: Vec::new(),
            sweep: None,
            launch_phases: Vec::new(),
            host_reference: None,
            translation: None,
        }
    }

    /// A platform that cannot run here (no Docker, no Rumprun toolchain ...).
    pub fn unavailable(platform: Platform, reason: impl Into<String>) -> PlatformReport {
        PlatformReport {
            status: Status::Unavailable {
                reason: reason.into(),
            },
            conditions: None,
            ..PlatformReport::measured(platform, Conditions::native(""))
        }
    }

    /// A platform that should have run but whose measurement failed.
    pub fn failed(platform: Platform, reason: impl Into<String>) -> PlatformReport {
        PlatformReport {
            status: Status::Failed {
                reason: reason.into(),
            },
            conditions: None,
            ..PlatformReport::measured(platform, Conditions::native(""))
        }
    }

    pub fn is_measured(&self) -> bool {
        self.status == Status::Measured
    }

    /// Which row of the bench this is: `xen`, or `xen:rumprun` when an image kind was asked for.
    pub fn row(&self) -> bakeoff_spec::Row {
        bakeoff_spec::Row::new(self.platform, self.target)
    }

    pub fn with_target(self, target: Option<bakeoff_spec::Target>) -> PlatformReport {
        PlatformReport { target, ..self }
    }

    /// Whether its figures come from an emulated CPU (QEMU TCG).
    pub fn is_emulated(&self) -> bool {
        self.conditions
            .as_ref()
            .is_some_and(|c| c.emulated || c.accelerator == Accelerator::Tcg)
    }
}

/// Whether a platform was measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    Measured,
    Unavailable { reason: String },
    Failed { reason: String },
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Measured => "measured",
            Status::Unavailable { .. } => "unavailable",
            Status::Failed { .. } => "failed",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Measured => None,
            Status::Unavailable { reason } | Status::Failed { reason } => Some(reason),
        }
    }
}

/// How the CPU was provided to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's Tiny Code Generator: every guest instruction is emulated.
    Tcg,
    /// No virtual CPU (a container process on the host).
    Native,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
            Accelerator::Native => "native",
        }
    }

    /// For people: TCG figures are always labelled as emulated.
    pub fn label(self) -> &'static str {
        match self {
            Accelerator::Kvm => "KVM",
            Accelerator::Tcg => "emulated (TCG)",
            Accelerator::Native => "native",
        }
    }
}

/// The conditions a platform's figures were measured under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    pub accelerator: Accelerator,
    pub emulated: bool,
    /// The VMM's command-line flags (or the container runtime's options).
    #[serde(default)]
    pub vmm_flags: Vec<String>,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// The guest kernel, for VMs.
    pub kernel: Option<String>,
    /// The image that ran (tag, path or digest).
    pub image: String,
    /// Versions of the components involved, e.g. "qemu" -> "7.2.19".
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
}

impl Conditions {
    /// A process on the host (containers).
    pub fn native(image: &str) -> Conditions {
        Conditions {
            accelerator: Accelerator::Native,
            emulated: false,
            vmm_flags: Vec::new(),
            cpus: None,
            memory_bytes: None,
            kernel: None,
            image: image.to_string(),
            versions: BTreeMap::new(),
        }
    }

    /// A VM with this accelerator; `emulated` follows from it.
    pub fn vm(accelerator: Accelerator, image: &str) -> Conditions {
        Conditions {
            accelerator,
            emulated: accelerator == Accelerator::Tcg,
            ..Conditions::native(image)
        }
    }
}

/// Image bytes on disk and, where known, compressed (as shipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    pub bytes: u64,
    pub compressed_bytes: Option<u64>,
}

/// Memory in bytes over N runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// The container's cgroup usage, or the VMM process's RSS.
    pub host_bytes: Stat,
    /// What the guest reports as used, when it reports it.
    pub guest_bytes: Option<Stat>,
    /// Where the VMM's resident memory is (VMs whose VMM bakeoff runs): `guest_ram`,
    /// `translation_cache`, `vmm_code`, `boot_files`, `other`, in that order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_parts: Vec<MemoryPart>,
}

/// An emulating VMM's translation work at the first successful probe of each launch, over N
/// runs (QEMU's `info jit` under TCG): under emulation a boot's time goes mostly to translating
/// the guest's code, so these tell a launch that translated more, or flushed its cache, from one
/// that ran on a slower host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranslationStats {
    /// Blocks of guest code translated since the cache's last flush.
    pub blocks: Stat,
    /// Host code those blocks take in the translation cache.
    pub code_bytes: Stat,
    /// The translation cache's size.
    pub capacity_bytes: Stat,
    /// Times the cache filled up and was emptied during the launch.
    pub flushes: Stat,
}

/// One part of a VMM's resident memory over N runs, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPart {
    pub part: String,
    pub bytes: Stat,
}

impl MemoryPart {
    /// Per-part statistics over runs of `(part, bytes)` samples, in the order parts first
    /// appear; a part missing from a run counts as zero there.
    pub fn from_runs(runs: &[Vec<(String, u64)>]) -> Result<Vec<MemoryPart>, BenchError> {
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in runs.iter().flatten() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
            .into_iter()
            .map(|name| {
                let samples: Vec<f64> = runs
                    .iter()
                    .map(|run| {
                        run.iter()
                            .find(|(n, _)| n == name)
                            .map_or(0.0, |(_, b)| *b as f64)
                    })
                    .collect();
                Ok(MemoryPart {
                    part: name.to_string(),
                    bytes: Stat::from_samples(&samples)?,
                })
            })
            .collect()
    }

    /// How the report names a part.
    pub fn label(&self) -> &str {
        match self.part.as_str() {
            "guest_ram" => "guest RAM",
            "translation_cache" => "translation cache",
            "vmm_code" => "VMM code",
            "boot_files" => "kernel + initramfs files",
            "other" => "heap, stacks, other",
            other => other,
        }
    }
}

/// Latency percentiles in milliseconds, over every response of every run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencyMs {
    /// The percentile curve, for plotting: (label, milliseconds).
    pub fn curve(&self) -> [(&'static str, f64); 6] {
        [
            ("p50", self.p50),
            ("p75", self.p75),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p999),
            ("max", self.max),
        ]
    }
}

/// The load figures of N runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadStats {
    pub runs: u32,
    /// Complete responses over all runs.
    pub requests: u64,
    pub ok: u64,
    pub non_2xx: u64,
    /// Requests without a complete response over all runs ...
    pub errors: u64,
    /// ... by cause.
    pub error_kinds: ErrorCounts,
    /// Complete responses per second, one sample per run.
    pub req_per_sec: Stat,
    /// `None` when no response completed (no latency to speak of).
    pub latency_ms: Option<LatencyMs>,
    /// When no response completed in any run: the longest a request cut by the end of a run
    /// had been in flight, in milliseconds. Such a platform has no rate to compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_in_flight_ms: Option<f64>,
}

impl LoadStats {
    /// Whether any response completed: a run in which none did has no rate, not a rate of 0.
    pub fn completed_any(&self) -> bool {
        self.requests > 0
    }
}

impl LoadStats {
    /// Summarises runs; latency percentiles come from all runs' histograms merged.
    pub fn from_runs(runs: &[LoadResult]) -> Result<LoadStats, BenchError> {
        let first = runs.first().ok_or_else(|| BenchError::InvalidSamples {
            what: "load runs".to_string(),
            reason: "there are no runs".to_string(),
        })?;
        let mut hist = first.histogram.clone();
        hist.reset();
        let mut errors = ErrorCounts::default();
        for r in runs {
            hist.add(&r.histogram)
                .map_err(|e| BenchError::InvalidSamples {
                    what: "load runs".to_string(),
                    reason: format!("their latency histograms cannot be merged: {e}"),
                })?;
            errors.connect += r.errors.connect;
            errors.timeout += r.errors.timeout;
            errors.closed += r.errors.closed;
            errors.io += r.errors.io;
            errors.protocol += r.errors.protocol;
        }
        let rates: Vec<f64> = runs.iter().map(|r| r.req_per_sec).collect();
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = (!hist.is_empty()).then(|| LatencyMs {
            p50: ms(hist.value_at_quantile(0.50)),
            p75: ms(hist.value_at_quantile(0.75)),
            p90: ms(hist.value_at_quantile(0.90)),
            p99: ms(hist.value_at_quantile(0.99)),
            p999: ms(hist.value_at_quantile(0.999)),
            max: ms(hist.max()),
            mean: hist.mean() / 1000.0,
        });
        Ok(LoadStats {
            runs: runs.len() as u32,
            requests: runs.iter().map(|r| r.requests).sum(),
            ok: runs.iter().map(|r| r.ok).sum(),
            non_2xx: runs.iter().map(|r| r.non_2xx).sum(),
            errors: errors.total(),
            error_kinds: errors,
            req_per_sec: Stat::of("requests per second", &rates)?,
            latency_ms,
            longest_in_flight_ms: runs
                .iter()
                .filter_map(|r| r.longest_in_flight)
                .max()
                .filter(|_| runs.iter().all(|r| r.requests == 0))
                .map(|d| d.as_secs_f64() * 1000.0),
        })
    }
}

/// Open-loop load at one offered rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Requests per second asked for.
    pub offered_rate: f64,
    /// Complete responses per second measured.
    pub achieved_rate: f64,
    /// Latency from each request's intended send time.
    pub latency: LatencySummary,
    /// Requests without a complete response.
    pub errors: u64,
    /// The container's cgroup usage or the VMM's RSS at the end of the point, when measured.
    pub memory_bytes: Option<u64>,
    /// Which side could not keep up, when the achieved rate fell short of the offered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturated: Option<crate::load::Saturation>,
}

impl SweepPoint {
    /// Whether this point counts as sustained: within the objective, no errors, and at least
    /// [`SUSTAINED_SHARE`] of the offered rate achieved.
    pub fn sustains(&self, slo: &Slo) -> bool {
        self.errors == 0
            && self.achieved_rate >= SUSTAINED_SHARE * self.offered_rate
            && slo.met_by(&self.latency)
    }
}

/// The share of the offered rate a point must achieve to count as sustained.
pub const SUSTAINED_SHARE: f64 = 0.95;

/// A platform's latency against offered rate, with the highest rate sustained within an
/// objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub slo: Slo,
    /// Measured seconds per point.
    pub duration_seconds: f64,
    pub connections: u32,
    /// By offered rate, ascending.
    pub points: Vec<SweepPoint>,
    /// See [`sustainable_rate`]; `None` when no point is sustained.
    pub sustainable_rate: Option<f64>,
}

impl Sweep {
    /// Sorts the points by offered rate and computes the sustainable rate.
    pub fn new(
        slo: Slo,
        duration_seconds: f64,
        connections: u32,
        mut points: Vec<SweepPoint>,
    ) -> Sweep {
        points.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
        let sustainable_rate = sustainable_rate(&points, &slo);
        Sweep {
            slo,
            duration_seconds,
            connections,
            points,
            sustainable_rate,
        }
    }

    /// The point with the smallest offered rate at or above `rate`: what the platform did at
    /// the first measured load no lighter than `rate`. `None` when `rate` exceeds every point.
    pub fn at(&self, rate: f64) -> Option<&SweepPoint> {
        self.points
            .iter()
            .filter(|p| p.offered_rate >= rate)
            .min_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate))
    }
}

/// The highest offered rate whose point meets the objective with no errors and achieves at
/// least 95 % of what was offered; the points may come in any order. `None` when none does.
pub fn sustainable_rate(points: &[SweepPoint], slo: &Slo) -> Option<f64> {
    points
        .iter()
        .filter(|p| p.sustains(slo))
        .map(|p| p.offered_rate)
        .max_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LatencySummary;
    use std::time::Duration;

    #[test]
    fn memory_parts_over_runs_keep_their_order_and_count_a_missing_part_as_zero() {
        let runs = vec![
            vec![("guest_ram".to_string(), 20), ("other".to_string(), 4)],
            vec![
                ("guest_ram".to_string(), 22),
                ("translation_cache".to_string(), 16),
                ("other".to_string(), 6),
            ],
            vec![("guest_ram".to_string(), 21), ("other".to_string(), 5)],
        ];
        let parts = MemoryPart::from_runs(&runs).unwrap();
        let names: Vec<&str> = parts.iter().map(|p| p.part.as_str()).collect();
        assert_eq!(names, ["guest_ram", "other", "translation_cache"]);
        assert_eq!(parts[0].bytes.median, 21.0);
        assert_eq!(parts[2].bytes.samples, [0.0, 16.0, 0.0]);
        assert_eq!(parts[2].label(), "translation cache");
        assert!(MemoryPart::from_runs(&[]).unwrap().is_empty());
    }

    fn run(rate: f64, latencies_us: &[u64], errors: ErrorCounts) -> LoadResult {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &l in latencies_us {
            h.record(l).unwrap();
        }
        LoadResult {
            requests: latencies_us.len() as u64,
            ok: latencies_us.len() as u64,
            non_2xx: 0,
            errors,
            bytes: 0,
            elapsed: Duration::from_secs(1),
            req_per_sec: rate,
            bytes_per_sec: 0.0,
            latency: LatencySummary::from_histogram(&h),
            histogram: h,
            capped: false,
            offered_rate: None,
            longest_in_flight: None,
            schedule_lag: None,
            generator_busy: 0.0,
            saturated: None,
        }
    }

    #[test]
    fn load_stats_merge_runs() {
        let e = ErrorCounts {
            closed: 2,
            ..ErrorCounts::default()
        };
        let s = LoadStats::from_runs(&[
            run(100.0, &[1000; 99], e),
            run(300.0, &[1000, 50_000], ErrorCounts::default()),
            run(200.0, &[2000], e),
        ])
        .unwrap();
        assert_eq!(
            (s.runs, s.requests, s.errors, s.error_kinds.closed),
            (3, 102, 4, 4)
        );
        assert_eq!(
            (s.req_per_sec.median, s.req_per_sec.min, s.req_per_sec.max),
            (200.0, 100.0, 300.0)
        );
        let l = s.latency_ms.unwrap();
        assert_eq!(l.p50, 1.0);
        assert!((49.9..=50.1).contains(&l.max), "{}", l.max);
        assert!(LoadStats::from_runs(&[]).is_err());
    }

    #[test]
    fn runs_without_responses_have_no_latency_rather_than_zeros() {
        let s = LoadStats::from_runs(&[run(
            0.0,
            &[],
            ErrorCounts {
                connect: 9,
                ..Default::default()
            },
        )])
        .unwrap();
        assert_eq!(s.latency_ms, None);
        assert_eq!(s.errors, 9);
    }

    #[test]
    fn unavailable_platforms_carry_a_reason_and_no_figures() {
        let p = PlatformReport::unavailable(Platform::Rumprun, "rumprun-bake is not on PATH");
        assert_eq!(p.status.reason(), Some("rumprun-bake is not on PATH"));
        assert!(!p.is_measured() && p.conditions.is_none() && p.load.is_none());
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["status"]["state"], "unavailable");
        assert!(json["launch_to_ready"].is_null());
    }

    #[test]
    fn tcg_is_emulated() {
        let p = PlatformReport::measured(
            Platform::Qemu,
            Conditions::vm(Accelerator::Tcg, "hello.vmlinux"),
        );
        assert!(p.is_emulated());
        assert_eq!(Accelerator::Tcg.label(), "emulated (TCG)");
        let d = PlatformReport::measured(Platform::Docker, Conditions::native("hello:latest"));
        assert!(!d.is_emulated());
    }

    #[test]
    fn report_json_schema() {
        // A report made now on this host, with the example's platforms: time and host redacted.
        let example = crate::example::report();
        let mut report = Report::new(
            "0.1.0",
            example.app.clone(),
            example.load_shape.clone(),
            example.runs_per_platform,
            example.policy,
        );
        report.platforms = example.platforms.clone();
        report.recommendation = example.recommendation.clone();
        assert!(
            humantime::parse_rfc3339(&report.created).is_ok(),
            "{}",
            report.created
        );
        insta::assert_json_snapshot!(report, {
            ".created" => "[created]",
            ".host.*" => "[host]",
        });
    }

    #[test]
    fn reports_read_back_as_written() {
        let report = crate::example::report();
        let json = serde_json::to_string_pretty(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    fn point(offered: f64, achieved: f64, p99_ms: u64, errors: u64) -> SweepPoint {
        SweepPoint {
            offered_rate: offered,
            achieved_rate: achieved,
            latency: LatencySummary {
                min_us: 50,
                p50_us: 200,
                p90_us: p99_ms * 500,
                p99_us: p99_ms * 1000,
                max_us: p99_ms * 2000,
                ..LatencySummary::default()
            },
            errors,
            memory_bytes: Some(10 << 20),
            saturated: None,
        }
    }

    #[test]
    fn sustainable_rate_is_the_highest_point_within_the_objective() {
        let slo: Slo = "p99=20ms".parse().unwrap();
        let cases: [(&str, Vec<SweepPoint>, Option<f64>); 7] = [
            ("no points", vec![], None),
            (
                "all within, any order",
                vec![
                    point(1000.0, 1000.0, 5, 0),
                    point(100.0, 100.0, 1, 0),
                    point(500.0, 499.0, 3, 0),
                ],
                Some(1000.0),
            ),
            (
                "the top rate is too slow",
                vec![point(100.0, 100.0, 1, 0), point(1000.0, 1000.0, 21, 0)],
                Some(100.0),
            ),
            (
                "the top rate has errors",
                vec![point(100.0, 100.0, 1, 0), point(1000.0, 1000.0, 2, 1)],
                Some(100.0),
            ),
            (
                "the top rate achieves under 95 %",
                vec![point(100.0, 100.0, 1, 0), point(1000.0, 940.0, 2, 0)],
                Some(100.0),
            ),
            (
                "exactly 95 % counts",
                vec![point(100.0, 100.0, 1, 0), point(1000.0, 950.0, 2, 0)],
                Some(1000.0),
            ),
            (
                "nothing within the objective",
                vec![point(100.0, 100.0, 30, 0), point(1000.0, 1000.0, 90, 0)],
                None,
            ),
        ];
        for (name, points, want) in cases {
            assert_eq!(sustainable_rate(&points, &slo), want, "{name}");
            assert_eq!(
                Sweep::new(slo, 5.0, 16, points).sustainable_rate,
                want,
                "{name}"
            );
        }
        // A non-monotonic profile: the highest sustained point counts, even above a failing one.
        let bumpy = [
            point(100.0, 100.0, 1, 0),
            point(200.0, 200.0, 40, 0),
            point(400.0, 400.0, 5, 0),
        ];
        assert_eq!(sustainable_rate(&bumpy, &slo), Some(400.0));
    }

    #[test]
    fn sweep_at_is_the_first_point_no_lighter_than_the_rate() {
        let s = Sweep::new(
            Slo::default(),
            5.0,
            16,
            vec![
                point(5000.0, 4000.0, 90, 0),
                point(100.0, 100.0, 1, 0),
                point(1000.0, 1000.0, 4, 0),
            ],
        );
        assert_eq!(
            s.points.iter().map(|p| p.offered_rate).collect::<Vec<_>>(),
            [100.0, 1000.0, 5000.0]
        );
        let at = |r: f64| s.at(r).map(|p| p.offered_rate);
        assert_eq!(at(0.0), Some(100.0));
        assert_eq!(at(100.0), Some(100.0));
        assert_eq!(at(100.5), Some(1000.0));
        assert_eq!(at(1000.0), Some(1000.0));
        assert_eq!(at(4999.0), Some(5000.0));
        assert_eq!(at(5000.1), None);
        assert_eq!(Sweep::new(Slo::default(), 5.0, 16, vec![]).at(1.0), None);
    }

    #[test]
    fn reports_without_a_sweep_still_read() {
        let report = crate::example::report();
        let mut json = serde_json::to_value(&report).unwrap();
        for p in json["platforms"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("sweep");
        }
        json["load_shape"].as_object_mut().unwrap().remove("rate");
        let back: Report = serde_json::from_value(json).unwrap();
        assert!(back.platforms.iter().all(|p| p.sweep.is_none()));
    }

    #[test]
    fn host_detection_reads_this_machine() {
        let h = HostInfo::detect();
        assert!(h.cpus >= 1);
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(h.memory_bytes > 0);
            assert_ne!(h.kernel, "unknown");
        }
    }
}
