//! A VM launch split into phases (issue 14 item 5), each in seconds from the start request:
//!
//! - `vmm`: the VMM process started (QEMU's pid file was written);
//! - `console`: the guest's console had its first byte (the driver's start returns then; a
//!   quiet boot of bakeoff's minimal kernel prints nothing before PID 1's first line);
//! - `kernel`: the guest's clock started, placed on the host's clock;
//! - `resumed`, instead of `kernel` and `pid1` for a warm start (a guest restored from a
//!   snapshot): PID 1 got its run's values; its later phases count from there;
//! - `pid1`, `network`, `app`, `listening`: PID 1's console lines;
//! - `first 200`: the first successful probe.
//!
//! The host sees PID 1's console lines (`bakeoff-init: phase NAME MS ms`, MS the guest's
//! CLOCK_MONOTONIC) as they are written; the guest clock's start on the host clock is the
//! earliest (host time seen − guest time) over those lines, and every guest phase is that plus
//! its guest time. Under TCG the guest's clock misses part of the early boot (it stands still
//! while the kernel calibrates its APIC timer with interrupts off, ~0.1 s here), so `kernel` is
//! late by that much and the time shows in `vmm → kernel`.

use serde::{Deserialize, Serialize};

use crate::{BenchError, Stat};

/// The phases, in launch order; the names used in reports.
pub const PHASES: [&str; 9] = [
    "vmm",
    "console",
    "kernel",
    "resumed",
    "pid1",
    "network",
    "app",
    "listening",
    "first 200",
];

/// One launch's phases: seconds from the start request, per phase name (absent when unseen).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchPhases {
    pub at: Vec<(String, f64)>,
}

impl LaunchPhases {
    /// From the host-side times (seconds from the start request) of the VMM's start (when
    /// known), of the console's first byte and of the first successful probe, and the guest's
    /// phase lines with the host time each was seen: `(name, guest_ms, seen_s)`.
    pub fn from_observed(
        vmm_s: Option<f64>,
        console_s: f64,
        ready_s: f64,
        guest: &[(String, u64, f64)],
    ) -> LaunchPhases {
        let mut at = Vec::new();
        if let Some(v) = vmm_s {
            at.push(("vmm".to_string(), v));
        }
        at.push(("console".to_string(), console_s));
        let kernel = guest
            .iter()
            .map(|(_, ms, seen)| seen - *ms as f64 / 1000.0)
            .fold(f64::INFINITY, f64::min);
        if kernel.is_finite() {
            // The guest clock starts with the kernel; it cannot start before the VMM (a line
            // seen early by a coarse clock could say so) nor after the first success.
            let kernel = kernel.max(vmm_s.unwrap_or(0.0)).min(ready_s);
            // A warm start's guest times count from its resumption, not from its boot.
            let origin = if guest.iter().any(|(n, _, _)| n == "resumed") {
                "resumed"
            } else {
                "kernel"
            };
            at.push((origin.into(), kernel));
            for name in ["pid1", "network", "app", "listening"] {
                if let Some((_, ms, _)) = guest.iter().find(|(n, _, _)| n == name) {
                    at.push((name.to_string(), kernel + *ms as f64 / 1000.0));
                }
            }
        }
        at.push(("first 200".into(), ready_s));
        LaunchPhases { at }
    }
}

/// The median (and spread) of each phase over a platform's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStat {
    pub phase: String,
    /// Seconds from the start request.
    pub at: Stat,
}

/// Per-phase statistics over runs, in launch order; phases seen in no run are left out.
pub fn phase_stats(runs: &[LaunchPhases]) -> Result<Vec<PhaseStat>, BenchError> {
    let mut out = Vec::new();
    for name in PHASES {
        let samples: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.at.iter().find(|(n, _)| n == name).map(|(_, s)| *s))
            .collect();
        if !samples.is_empty() {
            out.push(PhaseStat {
                phase: name.to_string(),
                at: Stat::from_samples(&samples)?,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_times_are_placed_on_the_host_clock() {
        let guest = vec![
            ("pid1".to_string(), 300, 0.42),
            ("network".to_string(), 320, 0.45),
            ("app".to_string(), 330, 0.44),
            ("listening".to_string(), 400, 0.51),
        ];
        // The console's first byte comes after the kernel started (a quiet boot prints late).
        let p = LaunchPhases::from_observed(Some(0.02), 0.3, 0.6, &guest);
        let get = |n: &str| p.at.iter().find(|(x, _)| x == n).unwrap().1;
        // The earliest (seen − guest): app at 0.44 − 0.33 = 0.11.
        assert!((get("kernel") - 0.11).abs() < 1e-9);
        assert!((get("pid1") - 0.41).abs() < 1e-9);
        assert!((get("listening") - 0.51).abs() < 1e-9);
        assert_eq!(get("first 200"), 0.6);
        assert_eq!(get("console"), 0.3);
        assert_eq!(get("vmm"), 0.02);
        let names: Vec<&str> = p.at.iter().map(|(n, _)| n.as_str()).collect();
        let cold: Vec<&str> = PHASES.into_iter().filter(|n| *n != "resumed").collect();
        assert_eq!(names, cold);
        // Never before the VMM started.
        let p = LaunchPhases::from_observed(Some(0.2), 0.3, 0.6, &guest);
        assert_eq!(p.at.iter().find(|(x, _)| x == "kernel").unwrap().1, 0.2);
    }

    /// A warm start: the guest's clock went on from the snapshot's boot, and its times count
    /// from the moment PID 1 got its run's values.
    #[test]
    fn a_warm_start_counts_from_its_resumption() {
        let guest = vec![
            ("resumed".to_string(), 0, 0.10),
            ("network".to_string(), 40, 0.15),
            ("app".to_string(), 70, 0.17),
            ("listening".to_string(), 120, 0.22),
        ];
        let p = LaunchPhases::from_observed(Some(0.02), 0.1, 0.25, &guest);
        let names: Vec<&str> = p.at.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "vmm",
                "console",
                "resumed",
                "network",
                "app",
                "listening",
                "first 200"
            ]
        );
        let get = |n: &str| p.at.iter().find(|(x, _)| x == n).unwrap().1;
        assert!((get("resumed") - 0.10).abs() < 1e-9);
        assert!((get("listening") - 0.22).abs() < 1e-9);
    }

    #[test]
    fn without_guest_lines_only_the_host_phases() {
        let p = LaunchPhases::from_observed(None, 0.1, 0.3, &[]);
        let names: Vec<&str> = p.at.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["console", "first 200"]);
        let s = phase_stats(&[p.clone(), p]).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].phase, "first 200");
        assert_eq!(s[1].at.median, 0.3);
    }
}
