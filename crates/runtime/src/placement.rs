//! Dynamic placement: which platform suits a service at the load it has now. Pure functions of
//! a bench profile (how each platform behaves at each rate) and what the front observed.
//!
//! [`choose`] picks a platform for one observed rate; [`decide`] adds hysteresis: a move needs
//! the same verdict over N consecutive windows, a minimum time on the current platform, and
//! fewer than a cap of moves in the last hour.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use bakeoff_bench::{sustainable_rate, Slo, Sweep};
use bakeoff_spec::Platform;
use serde::{Deserialize, Serialize};

/// What "suits" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementPolicy {
    /// The most isolated platform (unikernel > microVM > container) that meets the SLO.
    Isolation,
    /// The smallest memory footprint that meets the SLO.
    Memory,
    /// The highest sustainable rate.
    Throughput,
    /// The lowest latency at the observed rate.
    Latency,
}

impl FromStr for PlacementPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "isolation" => Ok(PlacementPolicy::Isolation),
            "memory" => Ok(PlacementPolicy::Memory),
            "throughput" => Ok(PlacementPolicy::Throughput),
            "latency" => Ok(PlacementPolicy::Latency),
            _ => Err(format!(
                "unknown placement policy `{s}`; use isolation, memory, throughput or latency"
            )),
        }
    }
}

impl std::fmt::Display for PlacementPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PlacementPolicy::Isolation => "isolation",
            PlacementPolicy::Memory => "memory",
            PlacementPolicy::Throughput => "throughput",
            PlacementPolicy::Latency => "latency",
        })
    }
}

/// How isolated a platform keeps the app from the host: its own kernel beats a shared one, and
/// a library OS with no shell or processes beats a general-purpose kernel.
pub fn isolation_rank(p: Platform) -> u8 {
    match p {
        Platform::Rumprun => 3,
        Platform::Qemu | Platform::Xen | Platform::Firecracker => 2,
        Platform::Docker => 1,
    }
}

/// One platform's behaviour at each rate, from a bench sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformProfile {
    pub platform: Platform,
    pub sweep: Sweep,
    /// The memory it held under load (bench's host figure), where measured.
    pub memory_bytes: Option<u64>,
    /// Measured under emulation (TCG): its figures say little about a machine with KVM.
    pub emulated: bool,
}

/// The profile of one artifact on every platform that was swept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub artifact_id: String,
    pub platforms: Vec<PlatformProfile>,
}

/// What the front saw over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Requests per second.
    pub rate: f64,
    /// The backend's latency quantiles over the window, when it answered anything.
    pub latency: Option<ObservedLatency>,
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObservedLatency {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The observed figure the SLO names, when it exceeds the SLO's limit.
fn over_slo(o: &Observation, slo: &Slo) -> Option<Duration> {
    use bakeoff_bench::Quantile;
    let l = o.latency?;
    let v = match slo.quantile {
        Quantile::P50 => l.p50,
        Quantile::P90 => l.p90,
        Quantile::P99 => l.p99,
        Quantile::Max => l.max,
    };
    (v > slo.limit).then_some(v)
}

/// How reluctant to move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// Consecutive windows that must agree.
    pub windows: usize,
    /// The least time on a platform before moving again.
    pub min_stay: Duration,
    pub max_moves_per_hour: usize,
}

impl Default for Hysteresis {
    fn default() -> Hysteresis {
        Hysteresis {
            windows: 3,
            min_stay: Duration::from_secs(60),
            max_moves_per_hour: 6,
        }
    }
}

/// A platform for one rate, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub platform: Platform,
    /// False when no platform meets the SLO at the rate (the best one is chosen anyway).
    pub meets: bool,
    pub reason: String,
}

/// What [`decide`] concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Stay {
        reason: String,
    },
    Move {
        to: Platform,
        reason: String,
    },
    /// Another platform would suit, but hysteresis holds the move back.
    Held {
        to: Platform,
        reason: String,
    },
}

fn rate_text(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The platforms' figures in words: "qemu sustains 3,900 req/s within p99=20ms (emulated TCG);
/// docker sustains 52,000".
fn figures(cands: &[(&PlatformProfile, Option<f64>)], slo: &Slo) -> String {
    let mut out = String::new();
    for (i, (p, sus)) in cands.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        match sus {
            Some(s) => {
                let _ = write!(out, "{} sustains {} req/s", p.platform, rate_text(*s));
            }
            None => {
                let _ = write!(out, "{} meets {slo} at no swept rate", p.platform);
            }
        }
        if i == 0 && sus.is_some() {
            let _ = write!(out, " within {slo}");
        }
        if p.emulated {
            out.push_str(" (emulated TCG)");
        }
    }
    out
}

/// The platform `policy` picks at `rate` among those `allowed` (the compatibility check and
/// the host's availability), from the profile measured against `slo`.
pub fn choose(
    profile: &Profile,
    allowed: &[Platform],
    rate: f64,
    policy: PlacementPolicy,
    slo: &Slo,
) -> Option<Choice> {
    let cands: Vec<(&PlatformProfile, Option<f64>)> = profile
        .platforms
        .iter()
        .filter(|p| allowed.contains(&p.platform))
        .map(|p| (p, sustainable_rate(&p.sweep.points, slo)))
        .collect();
    if cands.is_empty() {
        return None;
    }
    let said = figures(&cands, slo);
    let meeting: Vec<&(&PlatformProfile, Option<f64>)> = cands
        .iter()
        .filter(|(_, s)| s.is_some_and(|s| s >= rate))
        .collect();
    let sus = |c: &&(&PlatformProfile, Option<f64>)| c.1.unwrap_or(0.0);
    if meeting.is_empty() {
        let best = cands
            .iter()
            .max_by(|a, b| sus(a).total_cmp(&sus(b)))
            .expect("not empty");
        return Some(Choice {
            platform: best.0.platform,
            meets: false,
            reason: format!(
                "no platform meets {slo} at {} req/s ({said}); running the best one, {}",
                rate_text(rate),
                best.0.platform
            ),
        });
    }
    let at = |c: &&(&PlatformProfile, Option<f64>)| c.0.sweep.at(rate).cloned();
    let pick = match policy {
        PlacementPolicy::Isolation => meeting
            .iter()
            .max_by(|a, b| {
                isolation_rank(a.0.platform)
                    .cmp(&isolation_rank(b.0.platform))
                    .then(sus(a).total_cmp(&sus(b)))
            })
            .copied(),
        PlacementPolicy::Throughput => meeting
            .iter()
            .max_by(|a, b| sus(a).total_cmp(&sus(b)))
            .copied(),
        PlacementPolicy::Memory => {
            let mem = |c: &&(&PlatformProfile, Option<f64>)| {
                at(c)
                    .and_then(|p| p.memory_bytes)
                    .or(c.0.memory_bytes)
                    .unwrap_or(u64::MAX)
            };
            meeting.iter().min_by_key(|c| mem(c)).copied()
        }
        PlacementPolicy::Latency => {
            let p99 = |c: &&(&PlatformProfile, Option<f64>)| {
                at(c).map(|p| p.latency.p99_us).unwrap_or(u64::MAX)
            };
            meeting.iter().min_by_key(|c| p99(c)).copied()
        }
    }
    .expect("not empty");
    let why = match policy {
        PlacementPolicy::Isolation => "the most isolated platform that meets it",
        PlacementPolicy::Memory => "the smallest memory that meets it",
        PlacementPolicy::Throughput => "the highest sustainable rate",
        PlacementPolicy::Latency => "the lowest p99 at this rate",
    };
    Some(Choice {
        platform: pick.0.platform,
        meets: true,
        reason: format!("{said}; {} is {why}", pick.0.platform),
    })
}

/// Whether to move, given the last windows (oldest first), the current platform, how long the
/// service has been on it, and how many moves it made in the last hour.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    profile: &Profile,
    allowed: &[Platform],
    history: &[Observation],
    current: Platform,
    on_current_for: Duration,
    moves_last_hour: usize,
    policy: PlacementPolicy,
    slo: &Slo,
    h: &Hysteresis,
    window: Duration,
) -> Decision {
    let n = h.windows.max(1);
    if history.len() < n {
        return Decision::Stay {
            reason: format!("observed {} of {n} windows so far", history.len()),
        };
    }
    let recent = &history[history.len() - n..];
    // What the service sees now outranks the profile: a window whose latency breaks the SLO on
    // the current platform rules that platform out for that window.
    let mut breaches = Vec::new();
    let verdicts: Vec<Option<Choice>> = recent
        .iter()
        .map(|o| match over_slo(o, slo) {
            Some(seen) => {
                breaches.push(seen);
                let others: Vec<Platform> =
                    allowed.iter().copied().filter(|p| *p != current).collect();
                choose(profile, &others, o.rate, policy, slo)
                    .filter(|c| c.meets)
                    .or_else(|| choose(profile, allowed, o.rate, policy, slo))
            }
            None => choose(profile, allowed, o.rate, policy, slo),
        })
        .collect();
    let mean = recent.iter().map(|o| o.rate).sum::<f64>() / n as f64;
    let span = window.as_secs_f64() * n as f64;
    let Some(Some(last)) = verdicts.last().cloned() else {
        return Decision::Stay {
            reason: "no profiled platform is allowed".into(),
        };
    };
    let mut observed = format!("observed {} req/s over {:.0} s", rate_text(mean), span);
    if let Some(worst) = breaches.iter().max() {
        let _ = write!(
            observed,
            " ({} of {n} windows above {slo} on {current}, up to {:.1} ms)",
            breaches.len(),
            worst.as_secs_f64() * 1000.0
        );
    }
    if last.platform == current {
        return Decision::Stay {
            reason: format!("{observed}; {}", last.reason),
        };
    }
    let agree = verdicts
        .iter()
        .all(|v| v.as_ref().is_some_and(|c| c.platform == last.platform));
    if !agree {
        return Decision::Held {
            to: last.platform,
            reason: format!(
                "{observed}; the last window points to {} but the {n} windows do not agree yet",
                last.platform
            ),
        };
    }
    if on_current_for < h.min_stay {
        return Decision::Held {
            to: last.platform,
            reason: format!(
                "{observed}; {}; held: only {:.0} s on {current} (minimum {} s)",
                last.reason,
                on_current_for.as_secs_f64(),
                h.min_stay.as_secs()
            ),
        };
    }
    if moves_last_hour >= h.max_moves_per_hour {
        return Decision::Held {
            to: last.platform,
            reason: format!(
                "{observed}; {}; held: {moves_last_hour} moves in the last hour (cap {})",
                last.reason, h.max_moves_per_hour
            ),
        };
    }
    Decision::Move {
        to: last.platform,
        reason: format!("{observed}; {}; moving to {}", last.reason, last.platform),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakeoff_bench::{LatencySummary, SweepPoint};

    const RATES: [f64; 5] = [100.0, 1000.0, 5000.0, 20000.0, 50000.0];

    fn point(rate: f64, p99_ms: u64, mem_mib: u64) -> SweepPoint {
        SweepPoint {
            offered_rate: rate,
            achieved_rate: rate,
            latency: LatencySummary {
                min_us: 10,
                mean_us: 100.0,
                stdev_us: 1.0,
                p50_us: p99_ms * 300,
                p75_us: p99_ms * 500,
                p90_us: p99_ms * 800,
                p99_us: p99_ms * 1000,
                p999_us: p99_ms * 1000,
                max_us: p99_ms * 1000,
            },
            errors: 0,
            memory_bytes: Some(mem_mib << 20),
            saturated: None,
        }
    }

    /// p99 in ms at each of RATES.
    fn platform(p: Platform, p99s: [u64; 5], mem_mib: u64, emulated: bool) -> PlatformProfile {
        let points = RATES
            .iter()
            .zip(p99s)
            .map(|(r, ms)| point(*r, ms, mem_mib))
            .collect();
        PlatformProfile {
            platform: p,
            sweep: Sweep::new(slo(), 2.0, 8, points),
            memory_bytes: Some(mem_mib << 20),
            emulated,
        }
    }

    fn slo() -> Slo {
        "p99=20ms".parse().unwrap()
    }

    /// docker sustains 50,000 within p99 20 ms; qemu 1,000 (emulated), and uses more memory.
    fn profile() -> Profile {
        Profile {
            artifact_id: "a".into(),
            platforms: vec![
                platform(Platform::Docker, [1, 1, 2, 5, 15], 4, false),
                platform(Platform::Qemu, [3, 12, 80, 900, 3000], 200, true),
            ],
        }
    }

    fn obs(rates: &[f64]) -> Vec<Observation> {
        rates
            .iter()
            .map(|r| Observation {
                rate: *r,
                latency: None,
                errors: 0,
            })
            .collect()
    }

    const BOTH: [Platform; 2] = [Platform::Docker, Platform::Qemu];
    const W: Duration = Duration::from_secs(5);

    fn run(
        policy: PlacementPolicy,
        rates: &[f64],
        current: Platform,
        on_for: u64,
        moves: usize,
        allowed: &[Platform],
    ) -> Decision {
        decide(
            &profile(),
            allowed,
            &obs(rates),
            current,
            Duration::from_secs(on_for),
            moves,
            policy,
            &slo(),
            &Hysteresis::default(),
            W,
        )
    }

    fn kind(d: &Decision) -> (&'static str, Option<Platform>) {
        match d {
            Decision::Stay { .. } => ("stay", None),
            Decision::Move { to, .. } => ("move", Some(*to)),
            Decision::Held { to, .. } => ("held", Some(*to)),
        }
    }

    #[test]
    fn decisions_for_each_load_shape_and_policy() {
        use PlacementPolicy::*;
        use Platform::{Docker, Qemu};
        // what, policy, observed rates, current platform, seconds on it, moves this hour,
        // allowed platforms, expected decision
        type Case<'a> = (
            &'a str,
            PlacementPolicy,
            Vec<f64>,
            Platform,
            u64,
            usize,
            &'a [Platform],
            (&'a str, Option<Platform>),
        );
        let cases: Vec<Case> = vec![
            (
                "steady light load stays on the microVM",
                Isolation,
                vec![50.0, 60.0, 55.0],
                Qemu,
                300,
                0,
                &BOTH,
                ("stay", None),
            ),
            (
                "a step up moves to docker",
                Isolation,
                vec![4000.0, 4500.0, 4200.0],
                Qemu,
                300,
                0,
                &BOTH,
                ("move", Some(Docker)),
            ),
            (
                "a step down moves back to the microVM",
                Isolation,
                vec![90.0, 80.0, 95.0],
                Docker,
                300,
                0,
                &BOTH,
                ("move", Some(Qemu)),
            ),
            (
                "a spike shorter than the hysteresis does not move",
                Isolation,
                vec![50.0, 4500.0, 50.0],
                Qemu,
                300,
                0,
                &BOTH,
                ("stay", None),
            ),
            (
                "flapping load does not move",
                Isolation,
                vec![4500.0, 50.0, 4500.0],
                Qemu,
                300,
                0,
                &BOTH,
                ("held", Some(Docker)),
            ),
            (
                "too soon after the last move",
                Isolation,
                vec![4000.0, 4000.0, 4000.0],
                Qemu,
                10,
                0,
                &BOTH,
                ("held", Some(Docker)),
            ),
            (
                "too many moves this hour",
                Isolation,
                vec![4000.0, 4000.0, 4000.0],
                Qemu,
                300,
                6,
                &BOTH,
                ("held", Some(Docker)),
            ),
            (
                "a platform the check refuses is never chosen",
                Isolation,
                vec![50.0, 50.0, 50.0],
                Docker,
                300,
                0,
                &[Docker],
                ("stay", None),
            ),
            (
                "fewer windows than needed",
                Isolation,
                vec![4000.0],
                Qemu,
                300,
                0,
                &BOTH,
                ("stay", None),
            ),
            (
                "memory picks the smaller footprint at light load",
                Memory,
                vec![50.0, 50.0, 50.0],
                Qemu,
                300,
                0,
                &BOTH,
                ("move", Some(Docker)),
            ),
            (
                "throughput picks the higher sustainable rate",
                Throughput,
                vec![50.0, 50.0, 50.0],
                Qemu,
                300,
                0,
                &BOTH,
                ("move", Some(Docker)),
            ),
            (
                "latency picks the lower p99 at the rate",
                Latency,
                vec![50.0, 50.0, 50.0],
                Qemu,
                300,
                0,
                &BOTH,
                ("move", Some(Docker)),
            ),
            (
                "isolation keeps docker when nothing better meets the SLO",
                Isolation,
                vec![30000.0, 30000.0, 30000.0],
                Docker,
                300,
                0,
                &BOTH,
                ("stay", None),
            ),
        ];
        for (what, policy, rates, current, on_for, moves, allowed, want) in cases {
            let d = run(policy, &rates, current, on_for, moves, allowed);
            assert_eq!(kind(&d), want, "{what}: {d:?}");
        }
    }

    #[test]
    fn a_move_says_what_was_observed_and_what_each_platform_sustains() {
        let d = run(
            PlacementPolicy::Isolation,
            &[4800.0, 4800.0, 4800.0],
            Platform::Qemu,
            300,
            0,
            &BOTH,
        );
        let Decision::Move { to, reason } = d else {
            panic!("{d:?}")
        };
        assert_eq!(to, Platform::Docker);
        assert_eq!(
            reason,
            "observed 4,800 req/s over 15 s; docker sustains 50,000 req/s within p99=20ms; qemu sustains 1,000 req/s (emulated TCG); docker is the most isolated platform that meets it; moving to docker"
        );
    }

    #[test]
    fn an_observed_breach_on_the_current_platform_moves_even_below_its_profiled_rate() {
        let slow = ObservedLatency {
            p50: Duration::from_millis(10),
            p90: Duration::from_millis(30),
            p99: Duration::from_millis(45),
            max: Duration::from_millis(60),
        };
        let history: Vec<Observation> = (0..3)
            .map(|_| Observation {
                rate: 900.0,
                latency: Some(slow),
                errors: 0,
            })
            .collect();
        let d = decide(
            &profile(),
            &BOTH,
            &history,
            Platform::Qemu,
            Duration::from_secs(300),
            0,
            PlacementPolicy::Isolation,
            &slo(),
            &Hysteresis::default(),
            W,
        );
        let Decision::Move { to, reason } = d else {
            panic!("{d:?}")
        };
        assert_eq!(to, Platform::Docker);
        assert!(reason.contains("3 of 3 windows above"), "{reason}");
    }

    #[test]
    fn no_platform_meets_the_slo_so_the_best_one_runs() {
        let c = choose(
            &profile(),
            &BOTH,
            90000.0,
            PlacementPolicy::Isolation,
            &slo(),
        )
        .unwrap();
        assert_eq!(c.platform, Platform::Docker);
        assert!(!c.meets);
        assert!(c.reason.starts_with("no platform meets"), "{}", c.reason);
    }

    #[test]
    fn unknown_policy_is_one_sentence() {
        assert_eq!(
            "fastest".parse::<PlacementPolicy>().unwrap_err(),
            "unknown placement policy `fastest`; use isolation, memory, throughput or latency"
        );
    }
}
