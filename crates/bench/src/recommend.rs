//! Choosing a platform for an app from its report, with reasons in words.

use std::fmt;
use std::str::FromStr;

use bakeoff_spec::{Platform, Row};
use serde::{Deserialize, Serialize};

use crate::format;
use crate::{BenchError, PlatformReport, Report};

/// What matters most when choosing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Lowest launch-to-ready median.
    FastestStart,
    /// Highest requests per second (median of runs).
    Throughput,
    /// Lowest p99 latency.
    Latency,
    /// Lowest host memory (median).
    Memory,
    /// Smallest image on disk.
    Size,
    /// A weighted score over all five, see [`BALANCED_WEIGHTS`].
    #[default]
    Balanced,
}

impl Policy {
    pub const ALL: [Policy; 6] = [
        Policy::FastestStart,
        Policy::Throughput,
        Policy::Latency,
        Policy::Memory,
        Policy::Size,
        Policy::Balanced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::FastestStart => "fastest-start",
            Policy::Throughput => "throughput",
            Policy::Latency => "latency",
            Policy::Memory => "memory",
            Policy::Size => "size",
            Policy::Balanced => "balanced",
        }
    }

    /// The one metric a single-metric policy ranks by.
    fn metric(self) -> Option<Metric> {
        match self {
            Policy::FastestStart => Some(Metric::Start),
            Policy::Throughput => Some(Metric::Throughput),
            Policy::Latency => Some(Metric::Latency),
            Policy::Memory => Some(Metric::Memory),
            Policy::Size => Some(Metric::Size),
            Policy::Balanced => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Policy, BenchError> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| BenchError::UnknownPolicy {
                value: s.to_string(),
                expected: Policy::ALL.map(Policy::as_str).join(", "),
            })
    }
}

/// The Balanced policy's weights: each metric is normalised among the candidates (1 for the best,
/// `best/value` or `value/best` for the others), then weighted. Metrics no candidate has are left
/// out and the remaining weights rescaled; a candidate missing a metric others have scores 0 on it.
pub const BALANCED_WEIGHTS: [(&str, f64); 5] = [
    ("launch-to-ready", 0.25),
    ("throughput", 0.25),
    ("p99 latency", 0.20),
    ("memory", 0.15),
    ("image size", 0.15),
];

/// What the check said about a platform: (platform, runnable, reasons).
pub type Verdict = (Platform, bool, Vec<String>);

/// The choice, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// `None` when no platform could compete.
    pub platform: Option<Platform>,
    /// The winner's image kind, when its row named one (`xen:rumprun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<bakeoff_spec::Target>,
    pub policy: Policy,
    /// Sentences, the decisive one first.
    pub reasons: Vec<String>,
    /// Competing platforms, best first, with their score in 0..=1 (1 = best on every ranked metric).
    pub ranking: Vec<(Row, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Start,
    Throughput,
    Latency,
    Memory,
    Size,
}

impl Metric {
    const ALL: [Metric; 5] = [
        Metric::Start,
        Metric::Throughput,
        Metric::Latency,
        Metric::Memory,
        Metric::Size,
    ];

    fn weight(self) -> f64 {
        BALANCED_WEIGHTS[self as usize].1
    }

    fn name(self) -> &'static str {
        BALANCED_WEIGHTS[self as usize].0
    }

    fn higher_is_better(self) -> bool {
        self == Metric::Throughput
    }

    /// The figure this metric ranks by, if the platform has a usable one.
    fn value(self, p: &PlatformReport) -> Option<f64> {
        let v = match self {
            Metric::Start => p.launch_to_ready.as_ref().map(|s| s.median),
            // A window in which nothing completed has no rate (not a rate of 0): it never
            // enters a ratio ("infinitely fewer requests per second").
            Metric::Throughput => p
                .load
                .as_ref()
                .filter(|l| l.completed_any())
                .map(|l| l.req_per_sec.median),
            Metric::Latency => p.load.as_ref().and_then(|l| l.latency_ms).map(|l| l.p99),
            Metric::Memory => p.memory.as_ref().map(|m| m.host_bytes.median),
            Metric::Size => p.image_size.map(|s| s.bytes as f64),
        }?;
        (v.is_finite() && v >= 0.0).then_some(v)
    }

    fn show(self, v: f64) -> String {
        match self {
            Metric::Start => format::seconds(v),
            Metric::Throughput => format!("{} req/s", format::rate(v)),
            Metric::Latency => format::millis(v),
            Metric::Memory | Metric::Size => format::bytes(v),
        }
    }

    /// Why a platform lacks this figure.
    fn missing(self) -> &'static str {
        match self {
            Metric::Start => "it has no launch-to-ready figures",
            Metric::Throughput => "it has no load figures",
            Metric::Latency => "it has no latency figures",
            Metric::Memory => "it has no memory figures",
            Metric::Size => "it has no image size",
        }
    }

    /// 1 for the best value, less for worse ones.
    fn score(self, v: f64, best: f64) -> f64 {
        if self.higher_is_better() {
            if best <= 0.0 {
                0.0
            } else {
                v / best
            }
        } else if v <= 0.0 {
            1.0
        } else {
            best / v
        }
    }

    /// "qemu starts 3.1× slower than docker (1.95 s vs 0.63 s, emulated TCG)".
    fn compare(self, other: &PlatformReport, ov: f64, winner: &PlatformReport, wv: f64) -> String {
        let (o, w) = (other.row(), winner.row());
        // How many times worse `other` is (< 1: better).
        let worse = match (self.higher_is_better(), ov > 0.0, wv > 0.0) {
            (_, false, false) => 1.0,
            (true, false, true) | (false, true, false) => f64::INFINITY,
            (true, true, false) | (false, false, true) => 0.0,
            (true, true, true) => wv / ov,
            (false, true, true) => ov / wv,
        };
        // Emulation slows the CPU: it changes timing, throughput and latency, and the VMM's
        // memory (TCG's translation cache), but not how big an image is.
        let emulation = match (other.is_emulated(), winner.is_emulated()) {
            _ if matches!(self, Metric::Size) => String::new(),
            (true, true) => ", both emulated TCG".to_string(),
            (true, false) => ", emulated TCG".to_string(),
            (false, true) => format!(", {w} emulated TCG"),
            (false, false) => String::new(),
        };
        let figures = format!("({} vs {}{emulation})", self.show(ov), self.show(wv));
        let times = |r: f64| {
            if r.is_finite() {
                format::ratio(r)
            } else {
                "infinitely".to_string()
            }
        };
        let same = (worse - 1.0).abs() < 0.005;
        let (worse_word, better_word, same_phrase) = match self {
            Metric::Start => ("slower", "faster", "starts as fast as"),
            Metric::Throughput => ("fewer", "more", "serves as many requests per second as"),
            Metric::Latency => ("higher", "lower", "has the same p99 latency as"),
            Metric::Memory => ("more", "less", "uses as much memory as"),
            Metric::Size => ("larger", "smaller", "has an image the same size as"),
        };
        if same {
            return format!("{o} {same_phrase} {w} {figures}.");
        }
        let (word, r) = if worse > 1.0 {
            (worse_word, worse)
        } else {
            (
                better_word,
                if worse > 0.0 {
                    1.0 / worse
                } else {
                    f64::INFINITY
                },
            )
        };
        let r = times(r);
        match self {
            Metric::Start => format!("{o} starts {r} {word} than {w} {figures}."),
            Metric::Throughput => {
                format!("{o} serves {r} {word} requests per second than {w} {figures}.")
            }
            Metric::Latency => format!("{o}'s p99 latency is {r} {word} than {w}'s {figures}."),
            Metric::Memory => format!("{o} uses {r} {word} memory than {w} {figures}."),
            Metric::Size => format!("{o}'s image is {r} {word} than {w}'s {figures}."),
        }
    }
}

/// Scores within this distance are a tie, broken by the order of `Platform::ALL`.
const TIE: f64 = 1e-9;

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Chooses a platform for `policy`. Only platforms that were measured and that the check allows
/// compete (a platform the verdicts do not mention is allowed). A platform without the figure a
/// single-metric policy ranks by cannot win it. Ties go to the platform listed first in
/// `Platform::ALL` (docker, qemu, rumprun, xen, firecracker).
pub fn recommend(report: &Report, verdicts: &[Verdict], policy: Policy) -> Recommendation {
    let mut excluded: Vec<String> = Vec::new();
    let mut candidates: Vec<&PlatformReport> = Vec::new();
    for p in &report.platforms {
        let verdict = verdicts.iter().find(|v| v.0 == p.platform);
        match (&p.status, verdict) {
            (crate::Status::Unavailable { reason }, _) => excluded.push(format!(
                "{} was not considered: it is unavailable ({reason}).",
                p.row()
            )),
            (crate::Status::Failed { reason }, _) => excluded.push(format!(
                "{} was not considered: its measurement failed ({reason}).",
                p.row()
            )),
            (crate::Status::Measured, Some((_, false, why))) => {
                let why = if why.is_empty() {
                    "no reason given".to_string()
                } else {
                    why.join("; ")
                };
                excluded.push(format!(
                    "{} was not considered: the check says it cannot run this app ({why}).",
                    p.row()
                ))
            }
            (crate::Status::Measured, _) => candidates.push(p),
        }
    }
    candidates.sort_by_key(|p| p.row());
    candidates.dedup_by_key(|p| p.row());

    // Every metric's best value among the candidates that have it.
    let best = |m: Metric| -> Option<f64> {
        let values = candidates.iter().filter_map(|p| m.value(p));
        if m.higher_is_better() {
            values.reduce(f64::max)
        } else {
            values.reduce(f64::min)
        }
    };

    let metrics: Vec<Metric> = match policy.metric() {
        Some(m) => vec![m],
        None => Metric::ALL
            .into_iter()
            .filter(|&m| best(m).is_some())
            .collect(),
    };
    let total_weight: f64 = metrics.iter().map(|m| m.weight()).sum();

    let mut ranking: Vec<(Row, f64)> = Vec::new();
    for p in &candidates {
        let mut score = 0.0;
        let mut eligible = true;
        for &m in &metrics {
            match (m.value(p), best(m)) {
                (Some(v), Some(b)) => {
                    let s = m.score(v, b);
                    score += if policy.metric().is_some() {
                        s
                    } else {
                        s * m.weight() / total_weight
                    };
                }
                _ if policy.metric().is_some() => {
                    eligible = false;
                    excluded.push(format!(
                        "{} cannot win on {}: {}.",
                        p.row(),
                        m.name(),
                        m.missing()
                    ));
                }
                _ => excluded.push(format!(
                    "{} scores 0 on {}: {}.",
                    p.row(),
                    m.name(),
                    m.missing()
                )),
            }
        }
        if eligible {
            ranking.push((p.row(), round4(score)));
        }
    }
    ranking.sort_by(|a, b| {
        if (a.1 - b.1).abs() < TIE {
            a.0.cmp(&b.0)
        } else {
            b.1.total_cmp(&a.1)
        }
    });

    let Some(&(winner, top)) = ranking.first() else {
        let headline = if candidates.is_empty() {
            "No platform can be recommended: none was both measured and allowed by the check."
                .to_string()
        } else {
            let m = policy.metric().unwrap_or(Metric::Start);
            format!(
                "No platform can be recommended for the {policy} policy: no measured platform has {} figures.",
                m.name()
            )
        };
        let mut reasons = vec![headline];
        reasons.extend(excluded);
        return Recommendation {
            platform: None,
            target: None,
            policy,
            reasons,
            ranking,
        };
    };
    // The ranking only holds candidates, so this always finds the winner.
    let Some(w) = candidates.iter().find(|p| p.row() == winner).copied() else {
        return Recommendation {
            platform: None,
            target: None,
            policy,
            reasons: excluded,
            ranking,
        };
    };

    let mut reasons = Vec::new();
    let runs = report.runs_per_platform;
    let of_runs = if runs > 1 {
        format!(" (median of {runs} runs)")
    } else {
        String::new()
    };
    let value = |m: Metric| m.value(w).map(|v| m.show(v)).unwrap_or_default();
    let why = match policy {
        Policy::FastestStart => format!(
            "it is ready first, {} after the start request{of_runs}",
            value(Metric::Start)
        ),
        Policy::Throughput => format!(
            "it serves the most requests, {}{of_runs}",
            value(Metric::Throughput)
        ),
        Policy::Latency => format!("it has the lowest p99 latency, {}", value(Metric::Latency)),
        Policy::Memory => format!(
            "it uses the least memory, {}{of_runs}",
            value(Metric::Memory)
        ),
        Policy::Size => format!("it has the smallest image, {}", value(Metric::Size)),
        Policy::Balanced => {
            let weights: Vec<String> = metrics
                .iter()
                .map(|m| format!("{} {:.0}%", m.name(), 100.0 * m.weight() / total_weight))
                .collect();
            format!(
                "it has the best weighted score, {top:.2} of 1 ({})",
                weights.join(", ")
            )
        }
    };
    let emulated = if w.is_emulated() && policy != Policy::Size {
        " Its figures were measured under emulation (TCG); with KVM it would do better."
    } else {
        ""
    };
    reasons.push(format!(
        "{winner} is recommended ({policy} policy): {why}.{emulated}"
    ));
    let tied: Vec<String> = ranking[1..]
        .iter()
        .filter(|r| (r.1 - top).abs() < TIE)
        .map(|r| r.0.to_string())
        .collect();
    if !tied.is_empty() {
        reasons.push(format!(
            "It ties with {} on score; ties go to the platform listed first (docker, qemu, rumprun, xen, firecracker).",
            tied.join(", ")
        ));
    }
    for &(other, _) in &ranking[1..] {
        let Some(o) = candidates.iter().find(|p| p.row() == other) else {
            continue;
        };
        for &m in &metrics {
            if let (Some(ov), Some(wv)) = (m.value(o), m.value(w)) {
                reasons.push(m.compare(o, ov, w, wv));
            }
        }
    }
    reasons.extend(excluded);
    Recommendation {
        platform: Some(winner.platform),
        target: winner.target,
        policy,
        reasons,
        ranking,
    }
}

#[cfg(test)]
mod tests {
    /// The ranking by platform, for rows without an image kind.
    fn plat(r: &[(Row, f64)]) -> Vec<(Platform, f64)> {
        r.iter().map(|(row, s)| (row.platform, *s)).collect()
    }

    use super::*;
    use crate::{
        Accelerator, AppInfo, Conditions, ErrorCounts, HostInfo, ImageSize, LatencyMs, LoadShape,
        LoadStats, MemoryStats, Stat,
    };

    /// A measured platform: (launch s, req/s, p99 ms, memory MiB, image MiB); `None` = not measured.
    #[derive(Clone, Copy)]
    struct Fig {
        start: Option<f64>,
        rps: Option<f64>,
        p99: Option<f64>,
        mem: Option<f64>,
        size: Option<f64>,
    }

    const fn fig(start: f64, rps: f64, p99: f64, mem: f64, size: f64) -> Fig {
        Fig {
            start: Some(start),
            rps: Some(rps),
            p99: Some(p99),
            mem: Some(mem),
            size: Some(size),
        }
    }

    fn platform(p: Platform, f: Fig, tcg: bool) -> PlatformReport {
        let cond = if tcg {
            Conditions::vm(Accelerator::Tcg, "img")
        } else {
            Conditions::native("img")
        };
        let mut r = PlatformReport::measured(p, cond);
        r.launch_to_ready = f.start.map(|s| Stat::single(s).unwrap());
        r.load = f.rps.map(|rps| LoadStats {
            runs: 1,
            requests: 1000,
            ok: 1000,
            non_2xx: 0,
            errors: 0,
            error_kinds: ErrorCounts::default(),
            req_per_sec: Stat::single(rps).unwrap(),
            longest_in_flight_ms: None,
            latency_ms: f.p99.map(|p99| LatencyMs {
                p50: p99 / 4.0,
                p75: p99 / 3.0,
                p90: p99 / 2.0,
                p99,
                p999: p99 * 2.0,
                max: p99 * 3.0,
                mean: p99 / 3.5,
            }),
        });
        r.memory = f.mem.map(|m| MemoryStats {
            host_bytes: Stat::single(m * 1048576.0).unwrap(),
            guest_bytes: None,
            host_parts: Vec::new(),
        });
        r.image_size = f.size.map(|s| ImageSize {
            bytes: (s * 1048576.0) as u64,
            compressed_bytes: None,
        });
        r
    }

    #[test]
    fn two_images_of_one_platform_are_two_rows() {
        use bakeoff_spec::Target;
        let uk = platform(Platform::Xen, fig(2.0, 900.0, 9.0, 40.0, 3.0), true)
            .with_target(Some(Target::Rumprun));
        let vm = platform(Platform::Xen, fig(7.0, 600.0, 12.0, 128.0, 3.2), true)
            .with_target(Some(Target::MicroVm));
        let r = report(vec![vm, uk]);
        let rec = recommend(&r, &[], Policy::FastestStart);
        assert_eq!(
            (rec.platform, rec.target),
            (Some(Platform::Xen), Some(Target::Rumprun))
        );
        let rows: Vec<String> = rec.ranking.iter().map(|(row, _)| row.to_string()).collect();
        assert_eq!(rows, ["xen:rumprun", "xen:microvm"]);
        assert!(
            rec.reasons[0].starts_with("xen:rumprun is recommended"),
            "{:?}",
            rec.reasons
        );
        assert!(
            rec.reasons.iter().any(|r| r.starts_with("xen:microvm ")),
            "{:?}",
            rec.reasons
        );
    }

    fn report(platforms: Vec<PlatformReport>) -> Report {
        Report {
            schema_version: 1,
            tool_version: "0.1.0".into(),
            created: "2026-01-01T00:00:00Z".into(),
            host: HostInfo {
                hostname: "h".into(),
                cpus: 2,
                memory_bytes: 1 << 30,
                kernel: "6.1".into(),
                os: "Debian".into(),
            },
            app: AppInfo {
                name: "hello".into(),
                input: "hello.c".into(),
                build_seconds: None,
                binary_size: None,
                artifact_id: None,
            },
            load_shape: LoadShape::default(),
            runs_per_platform: 5,
            policy: Policy::Balanced,
            platforms,
            recommendation: None,
        }
    }

    const DOCKER: Fig = fig(0.63, 20_000.0, 1.0, 4.0, 0.8);
    const QEMU: Fig = fig(1.95, 5_000.0, 4.0, 40.0, 12.0);
    const RUMPRUN: Fig = fig(0.35, 8_000.0, 2.0, 16.0, 2.9);

    fn three() -> Report {
        report(vec![
            platform(Platform::Docker, DOCKER, false),
            platform(Platform::Qemu, QEMU, true),
            platform(Platform::Rumprun, RUMPRUN, true),
        ])
    }

    /// Issue 35 item 10: a Flask app on a slow microVM completed no request in its window;
    /// it was reported as 0.0 req/s and the recommendation said it "serves infinitely fewer
    /// requests per second". A platform with no completed request has no rate to compare.
    #[test]
    fn a_platform_that_completed_nothing_never_enters_a_throughput_ratio() {
        let mut qemu = platform(Platform::Qemu, fig(1.95, 0.0, 4.0, 40.0, 12.0), true);
        if let Some(l) = qemu.load.as_mut() {
            l.requests = 0;
            l.ok = 0;
            l.latency_ms = None;
            l.longest_in_flight_ms = Some(2000.0);
        }
        let r = report(vec![platform(Platform::Docker, DOCKER, false), qemu]);
        for policy in [Policy::Throughput, Policy::Balanced] {
            let rec = recommend(&r, &[], policy);
            assert_eq!(rec.platform, Some(Platform::Docker), "{policy}");
            for reason in &rec.reasons {
                assert!(!reason.contains("infinitely"), "{policy}: {reason}");
                assert!(
                    !(reason.contains("qemu serves") && reason.contains("fewer requests")),
                    "{policy}: {reason}"
                );
            }
        }
    }

    #[test]
    fn every_single_metric_policy_picks_the_best_on_its_metric() {
        let cases = [
            (Policy::FastestStart, Platform::Rumprun, "rumprun is recommended (fastest-start policy): it is ready first, 0.35 s after the start request (median of 5 runs). Its figures were measured under emulation (TCG); with KVM it would do better."),
            (Policy::Throughput, Platform::Docker, "docker is recommended (throughput policy): it serves the most requests, 20,000 req/s (median of 5 runs)."),
            (Policy::Latency, Platform::Docker, "docker is recommended (latency policy): it has the lowest p99 latency, 1.00 ms."),
            (Policy::Memory, Platform::Docker, "docker is recommended (memory policy): it uses the least memory, 4.00 MiB (median of 5 runs)."),
            (Policy::Size, Platform::Docker, "docker is recommended (size policy): it has the smallest image, 819 KiB."),
        ];
        for (policy, want, headline) in cases {
            let r = recommend(&three(), &[], policy);
            assert_eq!(r.platform, Some(want), "{policy}");
            assert_eq!(r.reasons[0], headline);
            assert_eq!(r.ranking.len(), 3);
            assert_eq!(plat(&r.ranking)[0], (want, 1.0));
            assert!(
                r.ranking.windows(2).all(|w| w[0].1 >= w[1].1),
                "{:?}",
                r.ranking
            );
        }
    }

    #[test]
    fn single_metric_reasons_compare_with_figures_and_name_emulation() {
        let r = recommend(&three(), &[], Policy::FastestStart);
        assert_eq!(
            r.reasons[1..],
            [
                "docker starts 1.80× slower than rumprun (0.63 s vs 0.35 s, rumprun emulated TCG).",
                "qemu starts 5.6× slower than rumprun (1.95 s vs 0.35 s, both emulated TCG).",
            ]
        );
        let r = recommend(&three(), &[], Policy::Throughput);
        assert_eq!(
            plat(&r.ranking),
            vec![
                (Platform::Docker, 1.0),
                (Platform::Rumprun, 0.4),
                (Platform::Qemu, 0.25)
            ]
        );
        assert_eq!(
            r.reasons[1],
            "rumprun serves 2.5× fewer requests per second than docker (8,000 req/s vs 20,000 req/s, emulated TCG)."
        );
    }

    #[test]
    fn balanced_weighs_every_metric() {
        let r = recommend(&three(), &[], Policy::Balanced);
        // docker: start 0.35/0.63=0.5556*.25 + 1*.25 + 1*.2 + 1*.15 + 1*.15 = 0.8889
        // rumprun: 1*.25 + .4*.25 + .5*.2 + .25*.15 + (0.8/2.9)*.15 = 0.5289
        // qemu: (0.35/1.95)*.25 + .25*.25 + .25*.2 + .1*.15 + (0.8/12)*.15 = 0.1824
        assert_eq!(r.platform, Some(Platform::Docker));
        assert_eq!(
            plat(&r.ranking),
            vec![
                (Platform::Docker, 0.8889),
                (Platform::Rumprun, 0.5289),
                (Platform::Qemu, 0.1824)
            ]
        );
        assert_eq!(
            r.reasons[0],
            "docker is recommended (balanced policy): it has the best weighted score, 0.89 of 1 (launch-to-ready 25%, throughput 25%, p99 latency 20%, memory 15%, image size 15%)."
        );
        assert!(r.reasons.contains(
            &"rumprun starts 1.80× faster than docker (0.35 s vs 0.63 s, emulated TCG)."
                .to_string()
        ));
        assert!(r.reasons.contains(
            &"qemu uses 10× more memory than docker (40.0 MiB vs 4.00 MiB, emulated TCG)."
                .to_string()
        ));
        assert!(r.reasons.contains(
            &"qemu's image is 15× larger than docker's (12.0 MiB vs 819 KiB).".to_string()
        ));
    }

    #[test]
    fn ties_go_to_the_platform_listed_first_whatever_the_report_order() {
        let same = fig(1.0, 1000.0, 1.0, 10.0, 1.0);
        let r = report(vec![
            platform(Platform::Firecracker, same, false),
            platform(Platform::Qemu, same, false),
        ]);
        for policy in Policy::ALL {
            let rec = recommend(&r, &[], policy);
            assert_eq!(rec.platform, Some(Platform::Qemu), "{policy}");
            assert_eq!(
                plat(&rec.ranking),
                vec![(Platform::Qemu, 1.0), (Platform::Firecracker, 1.0)]
            );
            assert!(
                rec.reasons[1].starts_with("It ties with firecracker on score"),
                "{:?}",
                rec.reasons
            );
        }
        let rec = recommend(&r, &[], Policy::FastestStart);
        assert_eq!(
            rec.reasons[2],
            "firecracker starts as fast as qemu (1.00 s vs 1.00 s)."
        );
    }

    #[test]
    fn missing_load_figures_cannot_win_throughput_or_latency_but_count_in_balanced() {
        let mut no_load = RUMPRUN;
        no_load.rps = None;
        no_load.p99 = None;
        let r = report(vec![
            platform(Platform::Qemu, QEMU, true),
            platform(Platform::Rumprun, no_load, true),
        ]);
        for policy in [Policy::Throughput, Policy::Latency] {
            let rec = recommend(&r, &[], policy);
            assert_eq!(rec.platform, Some(Platform::Qemu), "{policy}");
            assert_eq!(rec.ranking.len(), 1);
            assert!(
                rec.reasons
                    .iter()
                    .any(|s| s.starts_with("rumprun cannot win on ")),
                "{:?}",
                rec.reasons
            );
        }
        let rec = recommend(&r, &[], Policy::FastestStart);
        assert_eq!(rec.platform, Some(Platform::Rumprun));
        let rec = recommend(&r, &[], Policy::Balanced);
        assert!(rec
            .reasons
            .contains(&"rumprun scores 0 on throughput: it has no load figures.".to_string()));
        assert!(rec
            .reasons
            .contains(&"rumprun scores 0 on p99 latency: it has no latency figures.".to_string()));
        assert_eq!(rec.ranking.len(), 2);
    }

    #[test]
    fn latency_of_a_run_without_responses_is_missing_not_zero() {
        // All requests failed: req/s 0 and no latency; it must not win Latency with "0 ms".
        let mut broken = platform(Platform::Docker, fig(0.2, 0.0, 1.0, 4.0, 0.8), false);
        broken.load.as_mut().unwrap().latency_ms = None;
        let r = report(vec![broken, platform(Platform::Qemu, QEMU, true)]);
        assert_eq!(
            recommend(&r, &[], Policy::Latency).platform,
            Some(Platform::Qemu)
        );
        assert_eq!(
            recommend(&r, &[], Policy::Throughput).platform,
            Some(Platform::Qemu)
        );
    }

    #[test]
    fn balanced_without_any_load_rescales_the_weights() {
        let mut a = DOCKER;
        a.rps = None;
        a.p99 = None;
        let mut b = QEMU;
        b.rps = None;
        b.p99 = None;
        let r = report(vec![
            platform(Platform::Docker, a, false),
            platform(Platform::Qemu, b, true),
        ]);
        let rec = recommend(&r, &[], Policy::Balanced);
        assert_eq!(plat(&rec.ranking)[0], (Platform::Docker, 1.0));
        assert!(
            rec.reasons[0].ends_with("(launch-to-ready 45%, memory 27%, image size 27%)."),
            "{}",
            rec.reasons[0]
        );
    }

    #[test]
    fn the_check_and_the_status_exclude_platforms_with_their_reasons() {
        let r = report(vec![
            platform(Platform::Docker, DOCKER, false),
            platform(Platform::Rumprun, RUMPRUN, true),
            PlatformReport::unavailable(Platform::Xen, "xl is not installed"),
            PlatformReport::failed(Platform::Firecracker, "no answer within 30 s"),
        ]);
        let verdicts: Vec<Verdict> = vec![
            (Platform::Docker, true, vec![]),
            (
                Platform::Rumprun,
                false,
                vec!["the app calls fork()".into()],
            ),
        ];
        let rec = recommend(&r, &verdicts, Policy::FastestStart);
        assert_eq!(
            rec.platform,
            Some(Platform::Docker),
            "rumprun starts faster but cannot run it"
        );
        assert_eq!(plat(&rec.ranking), vec![(Platform::Docker, 1.0)]);
        assert_eq!(
            rec.reasons[1..],
            [
                "rumprun was not considered: the check says it cannot run this app (the app calls fork()).",
                "xen was not considered: it is unavailable (xl is not installed).",
                "firecracker was not considered: its measurement failed (no answer within 30 s).",
            ]
        );
    }

    #[test]
    fn no_candidate_means_no_platform_with_the_reasons() {
        let r = report(vec![
            PlatformReport::unavailable(Platform::Docker, "the Docker socket is absent"),
            PlatformReport::unavailable(Platform::Rumprun, "rumprun-bake is not on PATH"),
        ]);
        for policy in Policy::ALL {
            let rec = recommend(&r, &[], policy);
            assert_eq!(rec.platform, None);
            assert!(rec.ranking.is_empty());
            assert_eq!(
                rec.reasons,
                [
                    "No platform can be recommended: none was both measured and allowed by the check.",
                    "docker was not considered: it is unavailable (the Docker socket is absent).",
                    "rumprun was not considered: it is unavailable (rumprun-bake is not on PATH).",
                ]
            );
        }
        let rec = recommend(&report(vec![]), &[], Policy::Balanced);
        assert_eq!(rec.platform, None);

        let mut no_load = DOCKER;
        no_load.rps = None;
        let r = report(vec![platform(Platform::Docker, no_load, false)]);
        let rec = recommend(&r, &[], Policy::Throughput);
        assert_eq!(rec.platform, None);
        assert_eq!(
            rec.reasons[0],
            "No platform can be recommended for the throughput policy: no measured platform has throughput figures."
        );
    }

    #[test]
    fn policies_parse_and_default_to_balanced() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(Policy::default(), Policy::Balanced);
        assert_eq!(
            "cheapest".parse::<Policy>().unwrap_err().to_string(),
            "unknown policy `cheapest`; expected one of: fastest-start, throughput, latency, memory, size, balanced"
        );
    }
}
