//! The host's own speed during a bench (issue 14 item 5): a fixed reference workload, timed
//! just before every launch, so that a slow run can be told apart from a slow platform.
//!
//! Why: on a host that is itself a virtual machine (as bakeoff's own CI machines are), the same
//! work takes a different time from one second to the next, because the physical cores and
//! caches are shared with other tenants. Measured here: the same fixed loop took 72 ms in one
//! minute and 171 ms a few minutes later, with nothing else running; a microVM's boot under TCG,
//! which is the same kind of work (CPU and scattered memory accesses), was then uniformly ~1.5×
//! slower in every initcall, with the same number of timer interrupts and translation flushes.
//! bakeoff cannot remove that; it measures it and says so, so that two benches that differ only
//! by the host's state are not read as a difference between platforms.

use std::hint::black_box;
use std::time::Instant;

use crate::Stat;

/// The workload's memory: larger than a core's L2, like an emulator's working set.
const BUFFER: usize = 4 << 20;
/// Iterations of one pass: ~9 ms on this project's CI machines at their fastest.
const ITERATIONS: u64 = 3_500_000;
/// Passes per reference; the fastest counts, so that one preemption (the previous run's VMM
/// still exiting on the other core, say) is not read as a slow host. A slow spell of the host
/// lasts seconds and slows all three.
const PASSES: usize = 3;
/// Beyond this spread (slowest / fastest − 1) the host was not steady during the bench.
pub const STEADY_SPREAD: f64 = 0.10;

/// Runs the reference workload and returns the wall-clock seconds of its fastest pass. Fixed
/// work: a pseudo-random walk of read-modify-writes over a 4 MiB buffer (touched before the
/// clock starts, so page faults are not counted). Blocks for a few tens of milliseconds.
pub fn reference_seconds() -> f64 {
    let mut buf = vec![1u8; BUFFER];
    let mut best = f64::INFINITY;
    for _ in 0..PASSES {
        let begun = Instant::now();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..ITERATIONS {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let i = (x >> 40) as usize & (BUFFER - 1);
            buf[i] = buf[i].wrapping_add(x as u8);
        }
        black_box(&buf);
        best = best.min(begun.elapsed().as_secs_f64());
    }
    best
}

/// How much slower than its fastest the host was at its slowest, over a bench's references:
/// 0.25 means the same work took 25 % longer at one point than at another.
pub fn spread(reference: &Stat) -> f64 {
    if reference.min > 0.0 {
        reference.max / reference.min - 1.0
    } else {
        0.0
    }
}

/// One sentence on the host's speed over a bench, from every platform's references.
pub fn host_speed_sentence(references: &[&Stat]) -> Option<String> {
    let all: Vec<f64> = references
        .iter()
        .flat_map(|s| s.samples.iter().copied())
        .collect();
    let stat = Stat::from_samples(&all).ok()?;
    let ms = |s: f64| format!("{:.0} ms", s * 1000.0);
    let s = spread(&stat);
    Some(if s <= STEADY_SPREAD {
        format!(
            "The host was steady: a fixed reference workload, timed before every launch, took {}–{} (within {:.0} %).",
            ms(stat.min),
            ms(stat.max),
            s * 100.0
        )
    } else {
        format!(
            "The host's own speed varied: a fixed reference workload, timed before every launch, took {}–{} ({:.0} % slower at its slowest). Figures that depend on the CPU (launch under emulation above all) move with it, so runs or benches that differ by less than that may differ only by the host's state.",
            ms(stat.min),
            ms(stat.max),
            s * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_takes_time_and_is_the_same_work_each_time() {
        let a = reference_seconds();
        let b = reference_seconds();
        assert!(a > 0.0 && b > 0.0);
        // Not a timing assertion beyond sanity: fixed work does not take minutes.
        assert!(a < 30.0 && b < 30.0, "{a} {b}");
    }

    #[test]
    fn the_sentence_says_steady_or_varied() {
        let steady = Stat::from_samples(&[0.025, 0.026, 0.027]).unwrap();
        let s = host_speed_sentence(&[&steady]).unwrap();
        assert!(s.starts_with("The host was steady"), "{s}");
        assert!(s.contains("25 ms–27 ms"), "{s}");
        let varied = Stat::from_samples(&[0.072, 0.080]).unwrap();
        let slow = Stat::from_samples(&[0.171]).unwrap();
        let s = host_speed_sentence(&[&varied, &slow]).unwrap();
        assert!(s.contains("72 ms–171 ms (138 % slower"), "{s}");
        assert!((spread(&varied) - 0.111).abs() < 0.001);
        assert_eq!(host_speed_sentence(&[]), None);
    }
}
