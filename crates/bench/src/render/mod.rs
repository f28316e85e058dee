//! Pure renderings of a [`Report`] (Markdown for terminals, one self-contained HTML page), and
//! the one effectful step that writes them with the JSON next to each other.

mod html;
mod markdown;

use std::path::{Path, PathBuf};

pub use html::html;
pub use markdown::markdown;

use crate::format;
use crate::{BenchError, PlatformReport, Report};

/// Where [`write_outputs`] put the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPaths {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
}

/// Writes `report.json`, `report.md` and `report.html` into `out_dir` (created if needed).
pub fn write_outputs(report: &Report, out_dir: &Path) -> Result<OutputPaths, BenchError> {
    fs_err::create_dir_all(out_dir)?;
    let paths = OutputPaths {
        json: out_dir.join("report.json"),
        markdown: out_dir.join("report.md"),
        html: out_dir.join("report.html"),
    };
    let mut json = serde_json::to_string_pretty(report).map_err(BenchError::Json)?;
    json.push('\n');
    fs_err::write(&paths.json, json)?;
    fs_err::write(&paths.markdown, markdown(report))?;
    fs_err::write(&paths.html, html(report))?;
    Ok(paths)
}

/// A table both renderings draw the same: a caption, the column heads and the rows' cells.
struct Breakdown {
    caption: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The tables that say where each launch and each VMM's memory went, in the order shown: the
/// launch phases, the host's own speed before each run (with its sentence), and the VMM's
/// resident memory by part. A table with nothing to show is left out.
fn breakdowns(report: &Report) -> Vec<Breakdown> {
    let mut out = Vec::new();
    let row_head = |p: &PlatformReport| vec![p.row().to_string()];

    let phased: Vec<_> = report
        .platforms
        .iter()
        .filter(|p| !p.launch_phases.is_empty())
        .collect();
    if !phased.is_empty() {
        // The phases some platform has (a warm start has `resumed`, a boot `kernel` and `pid1`).
        let names: Vec<&str> = crate::PHASES
            .into_iter()
            .filter(|n| {
                phased
                    .iter()
                    .any(|p| p.launch_phases.iter().any(|s| s.phase == *n))
            })
            .collect();
        let mut head = vec!["platform".to_string()];
        head.extend(names.iter().map(|s| s.to_string()));
        let rows = phased
            .iter()
            .map(|p| {
                let mut row = row_head(p);
                row.extend(names.iter().map(|name| {
                    p.launch_phases
                        .iter()
                        .find(|s| s.phase == *name)
                        .map_or("-".to_string(), |s| format!("{:.3}", s.at.median))
                }));
                row
            })
            .collect();
        out.push(Breakdown {
            caption: "Launch phases (median seconds from the start request; guest times from PID 1's console lines):".into(),
            head,
            rows,
        });
    }

    let referenced: Vec<_> = report
        .platforms
        .iter()
        .filter_map(|p| Some((p, p.host_reference.as_ref()?)))
        .collect();
    let stats: Vec<&crate::Stat> = referenced.iter().map(|(_, s)| *s).collect();
    if let Some(sentence) = crate::host_speed_sentence(&stats) {
        let runs = stats.iter().map(|s| s.samples.len()).max().unwrap_or(0);
        let mut head = vec!["platform".to_string()];
        head.extend((1..=runs).map(|i| format!("run {i}")));
        let rows = referenced
            .iter()
            .map(|(p, s)| {
                let launch = p.launch_to_ready.as_ref().map(|l| &l.samples);
                let mut row = row_head(p);
                row.extend((0..runs).map(|i| {
                    match (s.samples.get(i), launch.and_then(|l| l.get(i))) {
                        (Some(r), Some(l)) => format!("{:.0} ms → {l:.2} s", r * 1000.0),
                        (Some(r), None) => format!("{:.0} ms", r * 1000.0),
                        _ => "-".to_string(),
                    }
                }));
                row
            })
            .collect();
        out.push(Breakdown {
            caption: format!(
                "{sentence} Each run, the reference just before it → its launch→ready:"
            ),
            head,
            rows,
        });
    }

    let translated: Vec<_> = report
        .platforms
        .iter()
        .filter_map(|p| Some((p, p.translation.as_ref()?)))
        .collect();
    if !translated.is_empty() {
        let head = ["platform", "blocks", "host code", "cache", "flushes"]
            .map(String::from)
            .to_vec();
        let rows = translated
            .iter()
            .map(|(p, t)| {
                let mut row = row_head(p);
                row.push(format::count(t.blocks.median.round() as u64));
                row.push(format::bytes(t.code_bytes.median));
                row.push(format::bytes(t.capacity_bytes.median));
                row.push(if t.flushes.min == t.flushes.max {
                    format!("{}", t.flushes.median)
                } else {
                    format!("{} ({}–{})", t.flushes.median, t.flushes.min, t.flushes.max)
                });
                row
            })
            .collect();
        out.push(Breakdown {
            caption: "What the emulator had translated when the app first answered (medians over the runs; under emulation a boot's time goes mostly to translating the guest's code, and a flush empties the cache so that code is translated again):".into(),
            head,
            rows,
        });
    }

    let parted: Vec<_> = report
        .platforms
        .iter()
        .filter_map(|p| Some((p, p.memory.as_ref().filter(|m| !m.host_parts.is_empty())?)))
        .collect();
    if !parted.is_empty() {
        let mut labels: Vec<&str> = Vec::new();
        for (_, m) in &parted {
            for part in &m.host_parts {
                if !labels.contains(&part.label()) {
                    labels.push(part.label());
                }
            }
        }
        let mut head = vec!["platform".to_string()];
        head.extend(labels.iter().map(|l| l.to_string()));
        head.push("resident in all".into());
        let rows = parted
            .iter()
            .map(|(p, m)| {
                let mut row = row_head(p);
                row.extend(labels.iter().map(|label| {
                    m.host_parts
                        .iter()
                        .find(|part| part.label() == *label)
                        .map_or("-".to_string(), |part| format::bytes(part.bytes.median))
                }));
                row.push(format::bytes(m.host_bytes.median));
                row
            })
            .collect();
        out.push(Breakdown {
            caption:
                "Where the VMM's resident memory is (medians over the runs, from /proc/PID/smaps):"
                    .into(),
            head,
            rows,
        });
    }
    out
}

/// "—": a figure that was not measured (never shown as zero).
const NONE: &str = "—";

/// The summary cells of one platform, shared by both renderings.
struct Cells {
    status: String,
    accelerator: String,
    image: String,
    launch: String,
    memory: String,
    rps: String,
    latency: String,
}

fn spread(median: String, min: String, max: String) -> String {
    format!("{median} ({min}–{max})")
}

fn cells(p: &PlatformReport) -> Cells {
    let c = p.conditions.as_ref();
    let accelerator = match c {
        Some(_) if p.is_emulated() => crate::Accelerator::Tcg.label().to_string(),
        Some(c) => c.accelerator.label().to_string(),
        None => NONE.to_string(),
    };
    let image = p
        .image_size
        .map_or(NONE.to_string(), |s| format::bytes(s.bytes as f64));
    let launch = p.launch_to_ready.as_ref().map_or(NONE.to_string(), |s| {
        spread(
            format::seconds(s.median),
            short_seconds(s.min),
            short_seconds(s.max),
        )
    });
    let memory = p
        .memory
        .as_ref()
        .map_or(NONE.to_string(), |m| match &m.guest_bytes {
            Some(g) => format!(
                "{} (guest {})",
                format::bytes(m.host_bytes.median),
                format::bytes(g.median)
            ),
            None => format::bytes(m.host_bytes.median),
        });
    let (rps, latency) = match &p.load {
        None => (NONE.to_string(), NONE.to_string()),
        Some(l) if !l.completed_any() => (
            match l.longest_in_flight_ms {
                Some(ms) => format!(
                    "no request completed (the longest in flight: {})",
                    format::millis(ms)
                ),
                None => "no request completed".to_string(),
            },
            NONE.to_string(),
        ),
        Some(l) => (
            spread(
                format::rate(l.req_per_sec.median),
                format::rate(l.req_per_sec.min),
                format::rate(l.req_per_sec.max),
            ),
            l.latency_ms.map_or(NONE.to_string(), |lat| {
                format!("{} / {}", format::millis(lat.p50), format::millis(lat.p99))
            }),
        ),
    };
    Cells {
        status: p.status.label().to_string(),
        accelerator,
        image,
        launch,
        memory,
        rps,
        latency,
    }
}

/// "native, 1 CPU, 128 MiB": the conditions a platform's figures hold under.
fn describe_conditions(p: &PlatformReport) -> String {
    let Some(c) = &p.conditions else {
        return "conditions not recorded".to_string();
    };
    let mut parts = vec![if p.is_emulated() {
        crate::Accelerator::Tcg.label().to_string()
    } else {
        c.accelerator.label().to_string()
    }];
    if let Some(n) = c.cpus {
        parts.push(format!("{n} CPU{}", if n == 1.0 { "" } else { "s" }));
    }
    if let Some(b) = c.memory_bytes {
        parts.push(format::bytes(b as f64));
    }
    parts.join(", ")
}

/// "sustains 5,000 req/s within p99=20ms" or why it sustains none.
fn describe_sustained(s: &crate::Sweep) -> String {
    match s.sustainable_rate {
        Some(r) => format!("sustains {} req/s within {}", format::rate(r), s.slo),
        None => format!(
            "sustains none of the measured rates within {} (no errors, ≥ 95 % of the offered rate achieved)",
            s.slo
        ),
    }
}

/// "open loop, 16 connections, 5 s per rate, latency from each request's intended send time".
fn describe_sweep(s: &crate::Sweep) -> String {
    format!(
        "open loop, {} connection{}, {} s per rate, latency from each request's intended send time",
        s.connections,
        if s.connections == 1 { "" } else { "s" },
        format::rate(s.duration_seconds).replace(".0", ""),
    )
}

/// The cells of one sweep point: offered, achieved, p50, p90, p99, max, errors, memory.
fn sweep_cells(pt: &crate::SweepPoint) -> Vec<String> {
    let ms = |us: u64| format::millis(us as f64 / 1000.0);
    let l = &pt.latency;
    let has_latency = l.max_us > 0;
    let lat = |us: u64| {
        if has_latency {
            ms(us)
        } else {
            NONE.to_string()
        }
    };
    vec![
        format::rate(pt.offered_rate),
        match pt.saturated {
            Some(side) => format!("{} ({side} saturated)", format::rate(pt.achieved_rate)),
            None => format::rate(pt.achieved_rate),
        },
        lat(l.p50_us),
        lat(l.p90_us),
        lat(l.p99_us),
        lat(l.max_us),
        format::count(pt.errors),
        pt.memory_bytes
            .map_or(NONE.to_string(), |b| format::bytes(b as f64)),
    ]
}

const SWEEP_HEAD: [&str; 8] = [
    "offered req/s",
    "achieved req/s",
    "p50",
    "p90",
    "p99",
    "max",
    "errors",
    "memory",
];

/// "0.25" inside a seconds spread (the unit is on the median).
fn short_seconds(s: f64) -> String {
    format::seconds(s).trim_end_matches(" s").to_string()
}

/// A metric for the "compared with the best" ratios.
#[derive(Clone, Copy)]
enum Ratio {
    Start,
    Size,
    Memory,
    Throughput,
    P99,
}

impl Ratio {
    const ALL: [Ratio; 5] = [
        Ratio::Start,
        Ratio::Size,
        Ratio::Memory,
        Ratio::Throughput,
        Ratio::P99,
    ];

    fn title(self) -> &'static str {
        match self {
            Ratio::Start => "launch→ready",
            Ratio::Size => "image",
            Ratio::Memory => "memory",
            Ratio::Throughput => "req/s",
            Ratio::P99 => "p99 latency",
        }
    }

    fn value(self, p: &PlatformReport) -> Option<f64> {
        match self {
            Ratio::Start => p.launch_to_ready.as_ref().map(|s| s.median),
            Ratio::Size => p.image_size.map(|s| s.bytes as f64),
            Ratio::Memory => p.memory.as_ref().map(|m| m.host_bytes.median),
            Ratio::Throughput => p
                .load
                .as_ref()
                .filter(|l| l.completed_any())
                .map(|l| l.req_per_sec.median),
            Ratio::P99 => p.load.as_ref().and_then(|l| l.latency_ms).map(|l| l.p99),
        }
        .filter(|v| v.is_finite() && *v > 0.0)
    }

    fn worse_word(self) -> &'static str {
        match self {
            Ratio::Start => "slower",
            Ratio::Size => "larger",
            Ratio::Memory => "more",
            Ratio::Throughput => "fewer",
            Ratio::P99 => "higher",
        }
    }

    /// "1.00×" for the best measured platform, "3.2× slower" for the others.
    fn cell(self, p: &PlatformReport, all: &[PlatformReport]) -> String {
        let Some(v) = self.value(p) else {
            return NONE.to_string();
        };
        let values = all
            .iter()
            .filter(|q| q.is_measured())
            .filter_map(|q| self.value(q));
        let (best, r) = if matches!(self, Ratio::Throughput) {
            let best = values.fold(f64::MIN, f64::max);
            (best, best / v)
        } else {
            let best = values.fold(f64::MAX, f64::min);
            (best, v / best)
        };
        if !best.is_finite() || r < 1.005 {
            "1.00×".to_string()
        } else {
            format!("{} {}", format::ratio(r), self.worse_word())
        }
    }
}

/// "16 connections, keep-alive, 10 s measured after a 1 s warm-up".
fn describe_load(report: &Report) -> String {
    let s = &report.load_shape;
    let mut out = format!(
        "{} connection{}, {}, {} measured",
        s.connections,
        if s.connections == 1 { "" } else { "s" },
        if s.keepalive {
            "keep-alive"
        } else {
            "a new connection per request"
        },
        format::duration(s.duration),
    );
    if !s.warmup.is_zero() {
        out.push_str(&format!(" after a {} warm-up", format::duration(s.warmup)));
    }
    if let Some(n) = s.max_requests {
        out.push_str(&format!(", at most {} requests", format::count(n)));
    }
    out
}

/// "`hello` from examples/hello/hello.c, built in 0.41 s, binary 768 KiB".
fn describe_app(report: &Report) -> (String, String) {
    let a = &report.app;
    let mut extra = Vec::new();
    if let Some(s) = a.build_seconds {
        extra.push(format!("built in {}", format::seconds(s)));
    }
    if let Some(b) = a.binary_size {
        extra.push(format!("binary {}", format::bytes(b as f64)));
    }
    (a.input.clone(), extra.join(", "))
}

fn describe_host(report: &Report) -> String {
    let h = &report.host;
    format!(
        "{}, {} CPU{}, {}, Linux {}, {}",
        h.hostname,
        h.cpus,
        if h.cpus == 1 { "" } else { "s" },
        format::bytes(h.memory_bytes as f64),
        h.kernel,
        h.os
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_outputs_writes_three_files_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/out");
        let report = crate::example::report();
        let paths = write_outputs(&report, &out).unwrap();
        let json = fs_err::read_to_string(&paths.json).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!(fs_err::read_to_string(&paths.markdown)
            .unwrap()
            .starts_with("# bakeoff report: hello"));
        assert!(fs_err::read_to_string(&paths.html)
            .unwrap()
            .starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn write_outputs_names_the_path_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs_err::write(&file, "x").unwrap();
        let err = write_outputs(&crate::example::report(), &file.join("sub")).unwrap_err();
        assert!(err.to_string().contains("a-file"), "{err}");
    }

    #[test]
    fn ratios_compare_with_the_best_measured_platform() {
        let r = crate::example::report();
        let docker = &r.platforms[0];
        let qemu = &r.platforms[1];
        assert_eq!(Ratio::Start.cell(docker, &r.platforms), "1.00×");
        assert_eq!(Ratio::Start.cell(qemu, &r.platforms), "8.2× slower");
        assert_eq!(Ratio::Throughput.cell(qemu, &r.platforms), "6.2× fewer");
        assert_eq!(Ratio::Start.cell(&r.platforms[3], &r.platforms), NONE);
    }
}
