//! One self-contained HTML page: inline CSS and inline SVG charts, no scripts, no external
//! resources.

use std::fmt::Write;

use bakeoff_spec::Platform;

use super::{cells, describe_app, describe_host, describe_load, Ratio};
use crate::format;
use crate::{PlatformReport, Report};

/// Escapes text for HTML and SVG content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One color per platform, the same in every chart.
fn color(p: Platform) -> &'static str {
    match p {
        Platform::Docker => "#1c7ed6",
        Platform::Qemu => "#e8590c",
        Platform::Rumprun => "#2b8a3e",
        Platform::Xen => "#7048e8",
        Platform::Firecracker => "#d9480f",
    }
}

/// A "nice" axis step (1, 2 or 5 times a power of ten) giving about `n` intervals up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    if max.is_nan() || max <= 0.0 {
        return 1.0;
    }
    let raw = max / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// An axis tick label: no trailing zeros ("0.5", "2", "1,500").
fn tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if step >= 1.0 {
        format::rate(v).replace(".0", "")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

/// One row of a horizontal bar chart, values in the chart's display unit.
struct Row {
    platform: Platform,
    /// `xen` or `xen:rumprun`.
    name: String,
    emulated: bool,
    /// The dark bar (the figure the chart is about).
    value: Option<f64>,
    /// A lighter, thinner bar above it (p50 under p99, compressed under on-disk size).
    secondary: Option<f64>,
    /// Min–max whisker over runs.
    spread: Option<(f64, f64)>,
    label: String,
    /// Shown instead of a bar when there is no value.
    missing: String,
}

const CHART_W: f64 = 600.0;
/// The bars span most of the chart; each value is written at the end of its bar.
const PLOT_X0: f64 = 110.0;
const PLOT_X1: f64 = 594.0;
/// The narrowest bar drawn for a positive value, so that a small figure beside a large one
/// stays visible (its value is written next to it).
const MIN_BAR: f64 = 6.0;
const TOP: f64 = 26.0;
const ROW_H: f64 = 40.0;

/// A horizontal bar chart, one row per platform, bars from zero, with an axis in `unit`.
fn bar_chart(id: &str, title: &str, unit: &str, rows: &[Row]) -> String {
    let max = rows
        .iter()
        .flat_map(|r| [r.value, r.secondary, r.spread.map(|s| s.1)])
        .flatten()
        .fold(0.0f64, f64::max);
    let step = nice_step(max, 4.0);
    let axis_max = if max > 0.0 {
        (max / step).ceil() * step
    } else {
        1.0
    };
    let x = |v: f64| PLOT_X0 + (PLOT_X1 - PLOT_X0) * (v / axis_max).clamp(0.0, 1.0);
    let height = TOP + ROW_H * rows.len() as f64 + 8.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="chart" id="{id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {height}" width="{CHART_W}" height="{height}" role="img" aria-label="{title}">"##,
        title = esc(title)
    );
    let _ = write!(
        s,
        r##"<defs><pattern id="{id}-tcg" width="7" height="7" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="7" fill="#fff" fill-opacity="0.45"/></pattern></defs>"##
    );
    // Grid and axis labels (none when there is nothing to scale).
    if max > 0.0 {
        let mut v = 0.0;
        while v <= axis_max + step / 2.0 {
            let gx = x(v);
            let _ = write!(
                s,
                r##"<line x1="{gx:.1}" y1="{y0}" x2="{gx:.1}" y2="{y1}" class="grid"/><text x="{gx:.1}" y="{ty}" class="tick" text-anchor="middle">{label}</text>"##,
                y0 = TOP - 6.0,
                y1 = height - 6.0,
                ty = TOP - 11.0,
                label = esc(&tick(v, step)),
            );
            v += step;
        }
        let _ = write!(
            s,
            r##"<text x="{ux}" y="{uy}" class="tick unit" text-anchor="end">{unit}</text>"##,
            ux = PLOT_X0 - 16.0,
            uy = TOP - 11.0,
            unit = esc(unit)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let cy = TOP + ROW_H * i as f64 + ROW_H / 2.0;
        let fill = color(r.platform);
        let _ = write!(
            s,
            r##"<text x="{lx}" y="{ly:.1}" class="name" text-anchor="end">{name}</text>"##,
            lx = PLOT_X0 - 10.0,
            ly = if r.emulated { cy - 2.0 } else { cy + 4.5 },
            name = r.name
        );
        if r.emulated {
            let _ = write!(
                s,
                r##"<text x="{lx}" y="{ly:.1}" class="emu" text-anchor="end">emulated (TCG)</text>"##,
                lx = PLOT_X0 - 10.0,
                ly = cy + 12.0
            );
        }
        let Some(value) = r.value else {
            let _ = write!(
                s,
                r##"<text x="{tx}" y="{ty:.1}" class="missing">{m}</text>"##,
                tx = PLOT_X0 + 6.0,
                ty = cy + 4.5,
                m = esc(&r.missing)
            );
            continue;
        };
        let (bar_y, bar_h) = if r.secondary.is_some() {
            (cy + 1.0, 12.0)
        } else {
            (cy - 9.0, 18.0)
        };
        if let Some(sec) = r.secondary {
            let _ = write!(
                s,
                r##"<rect x="{PLOT_X0}" y="{y:.1}" width="{w:.1}" height="10" fill="{fill}" fill-opacity="0.45" class="bar2"/>"##,
                y = cy - 11.0,
                w = (x(sec) - PLOT_X0).max(MIN_BAR)
            );
        }
        let w = (x(value) - PLOT_X0).max(MIN_BAR);
        let _ = write!(
            s,
            r##"<rect x="{PLOT_X0}" y="{bar_y:.1}" width="{w:.1}" height="{bar_h}" fill="{fill}" class="bar"/>"##
        );
        if r.emulated {
            let _ = write!(
                s,
                r##"<rect x="{PLOT_X0}" y="{bar_y:.1}" width="{w:.1}" height="{bar_h}" fill="url(#{id}-tcg)"/>"##
            );
        }
        if let Some((lo, hi)) = r.spread {
            let (x0, x1) = (x(lo), x(hi));
            let wy = bar_y + bar_h / 2.0;
            let _ = write!(
                s,
                r##"<g class="whisker"><line x1="{x0:.1}" y1="{wy:.1}" x2="{x1:.1}" y2="{wy:.1}"/><line x1="{x0:.1}" y1="{a:.1}" x2="{x0:.1}" y2="{b:.1}"/><line x1="{x1:.1}" y1="{a:.1}" x2="{x1:.1}" y2="{b:.1}"/></g>"##,
                a = wy - 6.0,
                b = wy + 6.0
            );
        }
        // After the bar (and its whisker), or inside the bar when there is no room after it.
        let end = (PLOT_X0 + w).max(r.spread.map_or(0.0, |(_, hi)| x(hi)));
        let text_w = 6.6 * r.label.chars().count() as f64;
        let (tx, anchor) = if end + 8.0 + text_w <= CHART_W - 2.0 {
            (end + 8.0, "start")
        } else {
            // On a light plate, so that it reads over a hatched bar.
            let tx = PLOT_X0 + w - 8.0;
            let _ = write!(
                s,
                r##"<rect x="{px:.1}" y="{py:.1}" width="{pw:.1}" height="16" rx="3" class="plate"/>"##,
                px = tx - text_w - 4.0,
                py = bar_y + bar_h / 2.0 - 8.0,
                pw = text_w + 8.0
            );
            (tx, "end")
        };
        let class = "value";
        let _ = write!(
            s,
            r##"<text x="{tx:.1}" y="{ty:.1}" class="{class}" text-anchor="{anchor}">{label}</text>"##,
            ty = bar_y + bar_h / 2.0 + 4.0,
            label = esc(&r.label)
        );
    }
    s.push_str("</svg>");
    s
}

/// The unit that makes the largest byte count readable: (divisor, name).
fn byte_unit(max: f64) -> (f64, &'static str) {
    if max >= 1024.0 * 1024.0 * 1024.0 {
        (1024.0 * 1024.0 * 1024.0, "GiB")
    } else if max >= 1024.0 * 1024.0 {
        (1024.0 * 1024.0, "MiB")
    } else {
        (1024.0, "KiB")
    }
}

fn missing_label(p: &PlatformReport, what: &str) -> String {
    match p.status.reason() {
        Some(_) => format!("not measured ({})", p.status.label()),
        None => format!("no {what}"),
    }
}

fn row(p: &PlatformReport) -> Row {
    Row {
        platform: p.platform,
        name: p.row().to_string(),
        emulated: p.is_emulated(),
        value: None,
        secondary: None,
        spread: None,
        label: String::new(),
        missing: String::new(),
    }
}

fn launch_chart(report: &Report) -> String {
    let rows: Vec<Row> = report
        .platforms
        .iter()
        .map(|p| {
            let s = p.launch_to_ready.as_ref();
            Row {
                value: s.map(|s| s.median),
                spread: s.map(|s| (s.min, s.max)),
                label: s.map_or(String::new(), |s| {
                    format!(
                        "{} ({}–{})",
                        format::seconds(s.median),
                        super::short_seconds(s.min),
                        super::short_seconds(s.max)
                    )
                }),
                missing: missing_label(p, "launch figures"),
                ..row(p)
            }
        })
        .collect();
    bar_chart("chart-launch", "launch to ready", "s", &rows)
}

fn size_chart(report: &Report) -> String {
    let max = report
        .platforms
        .iter()
        .filter_map(|p| p.image_size.map(|s| s.bytes as f64))
        .fold(0.0, f64::max);
    let (div, unit) = byte_unit(max);
    let rows: Vec<Row> = report
        .platforms
        .iter()
        .map(|p| Row {
            value: p.image_size.map(|s| s.bytes as f64 / div),
            secondary: p
                .image_size
                .and_then(|s| s.compressed_bytes)
                .map(|b| b as f64 / div),
            label: p
                .image_size
                .map_or(String::new(), |s| match s.compressed_bytes {
                    Some(c) => format!(
                        "{} uncompressed, {} compressed",
                        format::bytes(s.bytes as f64),
                        format::bytes(c as f64)
                    ),
                    None => format::bytes(s.bytes as f64),
                }),
            missing: missing_label(p, "image size"),
            ..row(p)
        })
        .collect();
    bar_chart("chart-size", "image size", unit, &rows)
}

fn memory_chart(report: &Report) -> String {
    let max = report
        .platforms
        .iter()
        .filter_map(|p| p.memory.as_ref().map(|m| m.host_bytes.max))
        .fold(0.0, f64::max);
    let (div, unit) = byte_unit(max);
    let rows: Vec<Row> = report
        .platforms
        .iter()
        .map(|p| {
            let m = p.memory.as_ref();
            Row {
                value: m.map(|m| m.host_bytes.median / div),
                spread: m.map(|m| (m.host_bytes.min / div, m.host_bytes.max / div)),
                label: m.map_or(String::new(), |m| match &m.guest_bytes {
                    Some(g) => format!(
                        "{} (guest {})",
                        format::bytes(m.host_bytes.median),
                        format::bytes(g.median)
                    ),
                    None => format::bytes(m.host_bytes.median),
                }),
                missing: missing_label(p, "memory figures"),
                ..row(p)
            }
        })
        .collect();
    bar_chart("chart-memory", "memory on the host", unit, &rows)
}

fn throughput_chart(report: &Report) -> String {
    let rows: Vec<Row> = report
        .platforms
        .iter()
        .map(|p| {
            let l = p.load.as_ref();
            Row {
                value: l.map(|l| l.req_per_sec.median),
                spread: l.map(|l| (l.req_per_sec.min, l.req_per_sec.max)),
                label: l.map_or(String::new(), |l| {
                    format!(
                        "{} ({}–{})",
                        format::rate(l.req_per_sec.median),
                        format::rate(l.req_per_sec.min),
                        format::rate(l.req_per_sec.max)
                    )
                }),
                missing: missing_label(p, "load figures"),
                ..row(p)
            }
        })
        .collect();
    bar_chart("chart-throughput", "requests per second", "req/s", &rows)
}

fn latency_chart(report: &Report) -> String {
    let rows: Vec<Row> = report
        .platforms
        .iter()
        .map(|p| {
            let l = p.load.as_ref().and_then(|l| l.latency_ms);
            Row {
                value: l.map(|l| l.p99),
                secondary: l.map(|l| l.p50),
                label: l.map_or(String::new(), |l| {
                    format!("{} / {}", format::millis(l.p50), format::millis(l.p99))
                }),
                missing: missing_label(p, "latency figures"),
                ..row(p)
            }
        })
        .collect();
    bar_chart("chart-latency", "latency p50 and p99", "ms", &rows)
}

/// Percentile curves, one line per platform, on a logarithmic millisecond axis.
fn distribution_chart(report: &Report) -> String {
    let series: Vec<(&PlatformReport, [(&str, f64); 6])> = report
        .platforms
        .iter()
        .filter_map(|p| {
            p.load
                .as_ref()
                .and_then(|l| l.latency_ms)
                .map(|l| (p, l.curve()))
        })
        .collect();
    let (w, h) = (CHART_W, 300.0);
    let (x0, x1, y0, y1) = (70.0, w - 24.0, 16.0, h - 36.0);
    let mut s = format!(
        r##"<svg class="chart" id="chart-distribution" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="latency percentiles">"##
    );
    let values = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if series.is_empty() || hi <= 0.0 {
        let _ = write!(
            s,
            r##"<text x="{tx}" y="{ty}" class="missing">no platform has latency figures</text></svg>"##,
            tx = x0,
            ty = h / 2.0
        );
        return s;
    }
    let dec_lo = lo.log10().floor();
    let mut dec_hi = hi.log10().ceil();
    if dec_hi <= dec_lo {
        dec_hi = dec_lo + 1.0;
    }
    let y = |v: f64| {
        y1 - (y1 - y0) * ((v.max(1e-9).log10() - dec_lo) / (dec_hi - dec_lo)).clamp(0.0, 1.0)
    };
    let few_decades = dec_hi - dec_lo <= 2.0;
    let mut d = dec_lo;
    while d <= dec_hi {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(d);
            if (m != 1.0 && !few_decades) || v.log10() > dec_hi + 1e-9 {
                continue;
            }
            let gy = y(v);
            let _ = write!(
                s,
                r##"<line x1="{x0}" y1="{gy:.1}" x2="{x1}" y2="{gy:.1}" class="grid{minor}"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{label}</text>"##,
                minor = if m == 1.0 { "" } else { " minor" },
                tx = x0 - 8.0,
                ty = gy + 4.0,
                label = esc(&ms_tick(v))
            );
        }
        d += 1.0;
    }
    let labels = ["p50", "p75", "p90", "p99", "p99.9", "max"];
    let xs = |i: usize| x0 + (x1 - x0) * (i as f64 + 0.5) / labels.len() as f64;
    for (i, l) in labels.iter().enumerate() {
        let _ = write!(
            s,
            r##"<line x1="{gx:.1}" y1="{y0}" x2="{gx:.1}" y2="{y1}" class="grid minor"/><text x="{gx:.1}" y="{ty}" class="tick" text-anchor="middle">{l}</text>"##,
            gx = xs(i),
            ty = y1 + 20.0
        );
    }
    for (p, curve) in &series {
        let c = color(p.platform);
        let points: Vec<String> = curve
            .iter()
            .enumerate()
            .map(|(i, (_, v))| format!("{:.1},{:.1}", xs(i), y(*v)))
            .collect();
        let dash = if p.is_emulated() {
            r#" stroke-dasharray="7 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r##"<g class="series"><title>{name}</title><polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2.5"{dash}/>"##,
            name = esc(&series_name(p)),
            pts = points.join(" ")
        );
        for (i, (label, v)) in curve.iter().enumerate() {
            let _ = write!(
                s,
                r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="3.5" fill="{c}"><title>{name} {label}: {val}</title></circle>"##,
                cx = xs(i),
                cy = y(*v),
                name = p.row(),
                val = esc(&format::millis(*v))
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

/// Decades [lo, hi] (powers of ten) covering the positive values, at least one decade wide.
fn decades(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return None;
    }
    let lo = lo.log10().floor();
    let hi = hi.log10().ceil().max(lo + 1.0);
    Some((lo, hi))
}

/// Log-scale ticks 1, 2, 5 × 10^d (only 1 × 10^d over more than two decades).
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, bool)> {
    let few = hi - lo <= 2.0;
    let mut out = Vec::new();
    let mut d = lo;
    while d <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(d);
            if (m == 1.0 || few) && v.log10() <= hi + 1e-9 {
                out.push((v, m == 1.0));
            }
        }
        d += 1.0;
    }
    out
}

/// Latency against offered rate for one platform, both axes logarithmic: p50 (light) and p99
/// (dark) lines, the objective as a horizontal dashed line, the sustainable rate as a vertical
/// marker. Points not sustained (errors, or under 95 % of the offered rate) are hollow.
fn sweep_chart(p: &PlatformReport, sw: &crate::Sweep) -> String {
    let (w, h) = (CHART_W, 300.0);
    let (x0, x1, y0, y1) = (64.0, w - 20.0, 22.0, h - 40.0);
    let id = format!("chart-sweep-{}", p.row().to_string().replace(':', "-"));
    let mut s = format!(
        r##"<svg class="chart sweep" id="{id}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="latency against offered rate on {name}">"##,
        name = p.row()
    );
    let ms = |us: u64| us as f64 / 1000.0;
    let pts: Vec<&crate::SweepPoint> = sw
        .points
        .iter()
        .filter(|pt| pt.offered_rate > 0.0 && pt.latency.max_us > 0)
        .collect();
    let slo_ms = sw.slo.limit.as_secs_f64() * 1000.0;
    let xd = decades(pts.iter().map(|pt| pt.offered_rate));
    let yd = decades(
        pts.iter()
            .flat_map(|pt| [ms(pt.latency.p50_us), ms(pt.latency.p99_us)])
            .chain([slo_ms]),
    );
    let (Some((xlo, xhi)), Some((ylo, yhi))) = (xd, yd) else {
        let _ = write!(
            s,
            r##"<text x="{x0}" y="{ty}" class="missing">no sweep point has latency figures</text></svg>"##,
            ty = h / 2.0
        );
        return s;
    };
    let x = |v: f64| x0 + (x1 - x0) * ((v.log10() - xlo) / (xhi - xlo)).clamp(0.0, 1.0);
    let y = |v: f64| y1 - (y1 - y0) * ((v.max(1e-9).log10() - ylo) / (yhi - ylo)).clamp(0.0, 1.0);
    for (v, major) in log_ticks(ylo, yhi) {
        let gy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{x0}" y1="{gy:.1}" x2="{x1}" y2="{gy:.1}" class="grid{minor}"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{label}</text>"##,
            minor = if major { "" } else { " minor" },
            tx = x0 - 8.0,
            ty = gy + 4.0,
            label = esc(&ms_tick(v))
        );
    }
    for (v, major) in log_ticks(xlo, xhi) {
        let gx = x(v);
        let _ = write!(
            s,
            r##"<line x1="{gx:.1}" y1="{y0}" x2="{gx:.1}" y2="{y1}" class="grid{minor}"/><text x="{gx:.1}" y="{ty}" class="tick" text-anchor="middle">{label}</text>"##,
            minor = if major { "" } else { " minor" },
            ty = y1 + 16.0,
            label = esc(&format::rate(v).replace(".0", ""))
        );
    }
    let _ = write!(
        s,
        r##"<text x="{tx}" y="{ty}" class="tick unit" text-anchor="middle">offered requests per second (log)</text><text x="{x0}" y="{uy}" class="tick unit" text-anchor="start">latency (log)</text>"##,
        tx = (x0 + x1) / 2.0,
        ty = h - 6.0,
        uy = y0 - 10.0,
    );
    // The objective.
    let sy = y(slo_ms);
    let _ = write!(
        s,
        r##"<line x1="{x0}" y1="{sy:.1}" x2="{x1}" y2="{sy:.1}" class="slo"/><text x="{tx}" y="{ty:.1}" class="slo-label" text-anchor="end">SLO {slo}</text>"##,
        tx = x1 - 4.0,
        ty = sy - 5.0,
        slo = esc(&sw.slo.to_string())
    );
    // The sustainable rate.
    if let Some(r) = sw.sustainable_rate {
        let sx = x(r);
        let anchor = if sx > (x0 + x1) / 2.0 { "end" } else { "start" };
        let dx = if anchor == "end" { -6.0 } else { 6.0 };
        let _ = write!(
            s,
            r##"<line x1="{sx:.1}" y1="{y0}" x2="{sx:.1}" y2="{y1}" class="sustained"/><text x="{tx:.1}" y="{ty}" class="sustained-label" text-anchor="{anchor}">sustains {rate} req/s</text>"##,
            tx = sx + dx,
            ty = y0 + 12.0,
            rate = esc(&format::rate(r))
        );
    }
    let c = color(p.platform);
    let dash = if p.is_emulated() {
        r#" stroke-dasharray="7 4""#
    } else {
        ""
    };
    for (q, class, opacity) in [("p50", "p50", "0.5"), ("p99", "p99", "1")] {
        let val = |pt: &crate::SweepPoint| {
            ms(if q == "p50" {
                pt.latency.p50_us
            } else {
                pt.latency.p99_us
            })
        };
        let line: Vec<String> = pts
            .iter()
            .map(|pt| format!("{:.1},{:.1}", x(pt.offered_rate), y(val(pt))))
            .collect();
        let _ = write!(
            s,
            r##"<g class="series {class}"><polyline points="{line}" fill="none" stroke="{c}" stroke-opacity="{opacity}" stroke-width="2.5"{dash}/>"##,
            line = line.join(" ")
        );
        for pt in &pts {
            let ok = pt.sustains(&sw.slo);
            let fill = if ok { c } else { "#fff" };
            let _ = write!(
                s,
                r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="{fill}" fill-opacity="{opacity}" stroke="{c}" stroke-width="1.5"><title>{q} {v} at {offered} req/s offered ({achieved} achieved, {errors} errors)</title></circle>"##,
                cx = x(pt.offered_rate),
                cy = y(val(pt)),
                v = esc(&format::millis(val(pt))),
                offered = esc(&format::rate(pt.offered_rate)),
                achieved = esc(&format::rate(pt.achieved_rate)),
                errors = format::count(pt.errors),
            );
        }
        if let Some(last) = pts.last() {
            let _ = write!(
                s,
                r##"<text x="{tx:.1}" y="{ty:.1}" class="tick" text-anchor="end">{q}</text>"##,
                tx = x(last.offered_rate) - 8.0,
                ty = y(val(last)) - 8.0,
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

/// A log-axis label for 1, 2 or 5 times a power of ten milliseconds: "100 µs", "1 ms", "20 ms".
fn ms_tick(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else {
        format!("{} ms", format::rate(ms).replace(".0", ""))
    }
}

fn series_name(p: &PlatformReport) -> String {
    if p.is_emulated() {
        format!("{} (emulated TCG)", p.row())
    } else {
        p.row().to_string()
    }
}

/// Color swatches naming the platforms of a chart.
fn legend(report: &Report, with_load_only: bool) -> String {
    let mut s = String::from(r#"<div class="legend">"#);
    for p in report.platforms.iter().filter(|p| p.is_measured()) {
        if with_load_only && p.load.as_ref().and_then(|l| l.latency_ms).is_none() {
            continue;
        }
        let _ = write!(
            s,
            r#"<span><i class="sw{hatch}" style="background-color:{c}"></i>{name}</span>"#,
            hatch = if p.is_emulated() { " tcg" } else { "" },
            c = color(p.platform),
            name = esc(&series_name(p))
        );
    }
    s.push_str("</div>");
    s
}

fn figure(out: &mut String, title: &str, note: &str, svg: &str) {
    let _ = write!(
        out,
        r#"<figure><figcaption><b>{}</b> <span class="note">{}</span></figcaption>{svg}</figure>"#,
        esc(title),
        esc(note)
    );
}

const STYLE: &str = r#"
:root { --fg: #1d2129; --muted: #5c6370; --line: #d9dde3; --bg: #ffffff; --soft: #f4f6f8; --emu: #c92a2a; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--soft); color: var(--fg); font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; }
p.meta { color: var(--muted); margin: 0; }
section.card, figure { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; }
section.card { padding: 14px 18px; }
.reco { border-left: 6px solid #2b8a3e !important; }
.reco.none { border-left-color: var(--emu) !important; }
.reco .pick { font-size: 20px; font-weight: 700; margin: 0 0 6px; }
.reco ol { margin: 6px 0 10px; padding-left: 22px; }
.reco li { margin: 2px 0; }
.reco li.lead { font-weight: 600; }
table.ranking { max-width: 640px; }
.banner { background: #fff5f5; border: 1px solid #ffc9c9; color: #862e2e; border-radius: 8px; padding: 10px 14px; margin: 14px 0 0; }
table { border-collapse: collapse; width: 100%; background: var(--bg); }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); background: var(--soft); }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td .ratio { font-size: 12px; color: var(--emu); }
td .ratio.best { color: #2b8a3e; font-weight: 600; }
.wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; }
.wrap table { border: 0; }
.badge { display: inline-block; white-space: nowrap; padding: 0 6px; border-radius: 4px; font-size: 12px; font-weight: 600; }
.badge.emu { background: #ffe3e3; color: var(--emu); }
.badge.ok { background: #d3f9d8; color: #2b8a3e; }
.badge.bad { background: #f1f3f5; color: var(--muted); }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
.grid2 > * { min-width: 0; }
figure { margin: 0; padding: 12px 12px 8px; }
figcaption { margin: 0 4px 6px; }
figcaption .note { color: var(--muted); font-size: 12px; }
svg.chart { display: block; width: 100%; height: auto; font-family: inherit; }
svg .grid { stroke: #e9ecef; stroke-width: 1; }
svg .grid.minor { stroke: #f1f3f5; }
svg .tick { font-size: 11px; fill: var(--muted); }
svg .tick.unit { font-weight: 600; }
svg .name { font-size: 13px; font-weight: 600; fill: var(--fg); }
svg .emu { font-size: 10px; font-weight: 600; fill: var(--emu); }
svg .value { font-size: 12px; fill: var(--fg); font-variant-numeric: tabular-nums; }
svg .plate { fill: #fff; fill-opacity: .92; }
svg .missing { font-size: 12px; font-style: italic; fill: var(--muted); }
svg .whisker line { stroke: #212529; stroke-width: 1.5; }
svg .slo { stroke: var(--emu); stroke-width: 1.5; stroke-dasharray: 6 4; }
svg .slo-label { font-size: 11px; font-weight: 600; fill: var(--emu); }
svg .sustained { stroke: #2b8a3e; stroke-width: 2; }
svg .sustained-label { font-size: 12px; font-weight: 600; fill: #2b8a3e; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin: 6px 6px 2px; font-size: 12px; color: var(--muted); }
.legend i.sw { display: inline-block; width: 14px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
.legend i.sw.tcg { background-image: repeating-linear-gradient(45deg, rgba(255,255,255,.5) 0 3px, transparent 3px 7px); }
.bar-cell { width: 160px; }
tr.over td { color: var(--muted); }
figcaption .sustain { color: #2b8a3e; }
table.sweep { font-size: 12px; }
table.sweep th, table.sweep td { padding: 3px 5px; }
table.sweep th { font-size: 10px; letter-spacing: 0; }
.scorebar { height: 10px; background: #2b8a3e; border-radius: 3px; }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft); padding: 1px 4px; border-radius: 3px; }
code.argv { display: block; white-space: normal; overflow-wrap: anywhere; line-height: 1.5; }
table.conditions { table-layout: auto; }
table.conditions td { overflow-wrap: break-word; }
table.conditions td.flags { min-width: 380px; }
ul.notes { margin: 8px 0 0; padding-left: 20px; color: var(--muted); }
table.conditions td.versions { white-space: nowrap; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; }
footer { color: var(--muted); font-size: 12px; margin-top: 28px; }
"#;

/// The report as one self-contained HTML page: the recommendation, a summary table, inline SVG
/// bar charts (median with min–max whiskers) for launch-to-ready, image size, memory, req/s and
/// latency, a percentile chart, the conditions of every platform and what was not measured.
pub fn html(report: &Report) -> String {
    let mut o = String::new();
    let name = esc(&report.app.name);
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bakeoff report: {name}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<header><h1>bakeoff report: {name}</h1><p class="meta">{load}; {runs} run{s} per platform · created {created} by bakeoff {version}</p></header>
"#,
        load = esc(&describe_load(report)),
        runs = report.runs_per_platform,
        s = if report.runs_per_platform == 1 {
            ""
        } else {
            "s"
        },
        created = esc(&report.created),
        version = esc(&report.tool_version),
    );

    recommendation(&mut o, report);

    let emulated: Vec<String> = report
        .platforms
        .iter()
        .filter(|p| p.is_measured() && p.is_emulated())
        .map(|p| p.row().to_string())
        .collect();
    if !emulated.is_empty() {
        let _ = write!(
            o,
            r#"<p class="banner"><b>Emulated figures.</b> {} ran under QEMU's TCG instruction emulation, without hardware virtualization; their figures (hatched bars, dashed lines) understate what they do with KVM.</p>"#,
            esc(&emulated.join(" and "))
        );
    }

    summary(&mut o, report);

    o.push_str(r#"<h2>Charts</h2><div class="grid2">"#);
    figure(
        &mut o,
        "Launch to ready",
        "median of runs, whisker min–max; shorter is better",
        &launch_chart(report),
    );
    figure(
        &mut o,
        "Requests per second",
        "median of runs, whisker min–max; longer is better",
        &throughput_chart(report),
    );
    figure(
        &mut o,
        "Latency p50 / p99",
        "light bar p50, dark bar p99; shorter is better",
        &latency_chart(report),
    );
    figure(
        &mut o,
        "Memory on the host",
        "cgroup usage or VMM RSS, median, whisker min–max",
        &memory_chart(report),
    );
    figure(
        &mut o,
        "Image size",
        "dark bar uncompressed content, light bar compressed (as stored and shipped)",
        &size_chart(report),
    );
    let mut dist = distribution_chart(report);
    dist.push_str(&legend(report, true));
    figure(
        &mut o,
        "Latency distribution",
        "percentiles over all runs, log scale",
        &dist,
    );
    o.push_str("</div>");

    sweeps(&mut o, report);
    breakdowns(&mut o, report);
    conditions(&mut o, report);
    unmeasured(&mut o, report);
    host(&mut o, report);

    let _ = write!(
        o,
        "<footer>bakeoff {} · report schema {} · this page needs no network and no scripts.</footer>\n</main>\n</body>\n</html>\n",
        esc(&report.tool_version),
        report.schema_version
    );
    one_element_per_line(&o)
}

/// Puts a line break after closing tags, so that the page (and its snapshot) reads and diffs line
/// by line. Text never contains a raw `>` (it is escaped), so only markup is split.
fn one_element_per_line(page: &str) -> String {
    const ENDS: [&str; 14] = [
        "/>",
        "</text>",
        "</g>",
        "</tr>",
        "</li>",
        "</table>",
        "</div>",
        "</figure>",
        "</section>",
        "</header>",
        "</h2>",
        "</p>",
        "</defs>",
        "</svg>",
    ];
    let mut out = String::with_capacity(page.len() + page.len() / 20);
    let mut rest = page;
    while let Some(i) = rest.find('>') {
        let (head, tail) = rest.split_at(i + 1);
        out.push_str(head);
        if ENDS.iter().any(|e| head.ends_with(e)) && !tail.starts_with('\n') {
            out.push('\n');
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn recommendation(o: &mut String, report: &Report) {
    let Some(r) = &report.recommendation else {
        o.push_str(r#"<h2>Recommendation</h2><section class="card reco none"><p class="pick">Not computed</p></section>"#);
        return;
    };
    let pick = match r.platform {
        Some(p) => format!("Run it on {}", bakeoff_spec::Row::new(p, r.target)),
        None => "No platform can be recommended".to_string(),
    };
    let _ = write!(
        o,
        r#"<h2>Recommendation <span class="badge bad">{policy} policy</span></h2><section class="card reco{none}"><p class="pick">{pick}</p><ol>"#,
        policy = r.policy,
        none = if r.platform.is_none() { " none" } else { "" },
    );
    for (i, reason) in r.reasons.iter().enumerate() {
        let class = if i == 0 { r#" class="lead""# } else { "" };
        let _ = write!(o, "<li{class}>{}</li>", esc(reason));
    }
    o.push_str("</ol>");
    if !r.ranking.is_empty() {
        o.push_str(r#"<table class="ranking"><tr><th>rank</th><th>platform</th><th>score (0–1)</th><th></th></tr>"#);
        for (i, (p, score)) in r.ranking.iter().enumerate() {
            let _ = write!(
                o,
                r#"<tr><td>{rank}</td><td>{p}</td><td class="num">{score:.2}</td><td class="bar-cell"><div class="scorebar" style="width:{w:.0}%;background:{c}"></div></td></tr>"#,
                rank = i + 1,
                w = (score * 100.0).clamp(1.0, 100.0),
                c = color(p.platform)
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section>");
}

fn accel_badge(p: &PlatformReport, text: &str) -> String {
    if p.is_emulated() {
        format!(r#"<span class="badge emu">{}</span>"#, esc(text))
    } else {
        esc(text)
    }
}

fn summary(o: &mut String, report: &Report) {
    o.push_str(r#"<h2>Summary</h2><p class="meta">Each figure's second line compares it with the best measured platform (1.00× = best).</p><div class="wrap"><table><tr><th>platform</th><th>status</th><th>accelerator</th><th>image</th><th>launch→ready (min–max)</th><th>memory</th><th>req/s (min–max)</th><th>p50 / p99</th></tr>"#);
    for p in &report.platforms {
        let c = cells(p);
        let status = match p.status.reason() {
            None => format!(r#"<span class="badge ok">{}</span>"#, c.status),
            Some(_) => format!(r#"<span class="badge bad">{}</span>"#, c.status),
        };
        // A figure, and under it how it compares with the best.
        let figure = |text: &str, ratio: Ratio| {
            if !p.is_measured() || ratio.value(p).is_none() {
                return esc(text);
            }
            let vs = ratio.cell(p, &report.platforms);
            let class = if vs == "1.00×" {
                "ratio best"
            } else {
                "ratio"
            };
            format!(
                r#"{}<br><span class="{class}">{}</span>"#,
                esc(text),
                esc(&vs)
            )
        };
        let _ = write!(
            o,
            r#"<tr><td><b>{name}</b></td><td>{status}</td><td>{accel}</td><td class="num">{image}</td><td class="num">{launch}</td><td class="num">{memory}</td><td class="num">{rps}</td><td class="num">{lat}</td></tr>"#,
            name = p.row(),
            accel = accel_badge(p, &c.accelerator),
            image = figure(&c.image, Ratio::Size),
            launch = figure(&c.launch, Ratio::Start),
            memory = figure(&c.memory, Ratio::Memory),
            rps = figure(&c.rps, Ratio::Throughput),
            lat = figure(&c.latency, Ratio::P99),
        );
    }
    o.push_str("</table></div>");
}

fn conditions(o: &mut String, report: &Report) {
    o.push_str(r#"<h2>Conditions</h2><div class="wrap"><table class="conditions"><tr><th>platform</th><th>accelerator</th><th>CPUs</th><th>memory limit</th><th>kernel</th><th>image</th><th>VMM / runtime flags</th><th>versions</th></tr>"#);
    let mut all_notes = Vec::new();
    for p in report.platforms.iter().filter(|p| p.is_measured()) {
        let Some(c) = &p.conditions else { continue };
        let accel = if p.is_emulated() {
            "emulated (TCG)"
        } else {
            c.accelerator.label()
        };
        // The command line as one wrapped line, arguments with spaces quoted.
        let flags: Vec<String> = c
            .vmm_flags
            .iter()
            .map(|f| {
                if f.contains(' ') && !f.starts_with('-') {
                    format!("'{f}'")
                } else {
                    f.clone()
                }
            })
            .collect();
        let flags = if flags.is_empty() {
            super::NONE.to_string()
        } else {
            format!(r#"<code class="argv">{}</code>"#, esc(&flags.join(" ")))
        };
        let versions: Vec<String> = c
            .versions
            .iter()
            .map(|(k, v)| format!("{} {}", esc(k), esc(v)))
            .collect();
        let notes: Vec<String> = p.notes.iter().map(|n| esc(n)).collect();
        let _ = write!(
            o,
            r#"<tr><td><b>{name}</b></td><td>{accel}</td><td class="num">{cpus}</td><td class="num">{mem}</td><td>{kernel}</td><td class="image">{image}</td><td class="flags">{flags}</td><td class="versions">{versions}</td></tr>"#,
            name = p.row(),
            accel = accel_badge(p, accel),
            cpus = c.cpus.map_or(super::NONE.to_string(), |n| format!("{n}")),
            mem = c
                .memory_bytes
                .map_or(super::NONE.to_string(), |b| format::bytes(b as f64)),
            kernel = esc(c.kernel.as_deref().unwrap_or(super::NONE)),
            image = short_image(&c.image),
            versions = versions.join("<br>"),
        );
        all_notes.extend(
            notes
                .into_iter()
                .map(|n| format!("<li><b>{}</b>: {n}</li>", p.row())),
        );
    }
    o.push_str("</table></div>");
    if !all_notes.is_empty() {
        let _ = write!(o, r#"<ul class="notes">{}</ul>"#, all_notes.concat());
    }
}

/// Where each launch and each VMM's memory went: the same tables as the Markdown report.
fn breakdowns(o: &mut String, report: &Report) {
    let tables = super::breakdowns(report);
    if tables.is_empty() {
        return;
    }
    o.push_str(r#"<h2>Where the time and memory go</h2>"#);
    for t in tables {
        let _ = write!(
            o,
            r#"<p class="meta">{}</p><div class="wrap"><table class="breakdown"><tr>"#,
            esc(&t.caption)
        );
        for h in &t.head {
            let _ = write!(o, "<th>{}</th>", esc(h));
        }
        o.push_str("</tr>");
        for row in &t.rows {
            o.push_str("<tr>");
            for (i, c) in row.iter().enumerate() {
                if i == 0 {
                    let _ = write!(o, "<td><b>{}</b></td>", esc(c));
                } else {
                    let _ = write!(o, r#"<td class="num">{}</td>"#, esc(c));
                }
            }
            o.push_str("</tr>");
        }
        o.push_str("</table></div>");
    }
}

/// Per swept platform: the sustainable rate with its objective and conditions, the latency-vs-rate
/// chart and the table of points.
fn sweeps(o: &mut String, report: &Report) {
    let swept: Vec<_> = report
        .platforms
        .iter()
        .filter_map(|p| p.sweep.as_ref().map(|s| (p, s)))
        .collect();
    if swept.is_empty() {
        return;
    }
    o.push_str(r#"<h2>Load profiles</h2><div class="grid2">"#);
    for (p, sw) in swept {
        let mut body = sweep_chart(p, sw);
        body.push_str(r#"<div class="wrap"><table class="sweep"><tr>"#);
        for h in super::SWEEP_HEAD {
            let _ = write!(body, "<th>{}</th>", esc(h));
        }
        body.push_str("</tr>");
        for pt in &sw.points {
            let class = if pt.sustains(&sw.slo) {
                ""
            } else {
                r#" class="over""#
            };
            body.push_str(&format!("<tr{class}>"));
            for c in super::sweep_cells(pt) {
                let _ = write!(body, r#"<td class="num">{}</td>"#, esc(&c));
            }
            body.push_str("</tr>");
        }
        body.push_str("</table></div>");
        let _ = write!(
            o,
            r#"<figure><figcaption><b>{name}</b> {badge} <b class="sustain">{sustained}</b><br><span class="note">{conditions}; {how}. Filled points are sustained, hollow ones are not.</span></figcaption>{body}</figure>"#,
            name = p.row(),
            badge = if p.is_emulated() {
                r#"<span class="badge emu">emulated (TCG)</span>"#
            } else {
                ""
            },
            sustained = esc(&super::describe_sustained(sw)),
            conditions = esc(&super::describe_conditions(p)),
            how = esc(&super::describe_sweep(sw)),
        );
    }
    o.push_str("</div>");
}

/// An image reference for the Conditions table: a digest (`sha256:` and 64 hex digits) shortened
/// to its first 12 digits, the full value in the tooltip; other references as they are.
fn short_image(image: &str) -> String {
    let (algo, hex) = image.split_once(':').unwrap_or(("", image));
    let is_digest = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if is_digest {
        let algo = if algo.is_empty() {
            String::new()
        } else {
            format!("{algo}:")
        };
        format!(
            r#"<code title="{full}">{algo}{short}…</code>"#,
            full = esc(image),
            algo = esc(&algo),
            short = &hex[..12]
        )
    } else {
        format!("<code>{}</code>", esc(image))
    }
}

fn unmeasured(o: &mut String, report: &Report) {
    let list: Vec<&PlatformReport> = report
        .platforms
        .iter()
        .filter(|p| !p.is_measured())
        .collect();
    if list.is_empty() {
        return;
    }
    o.push_str(r#"<h2>Not measured</h2><section class="card"><ul>"#);
    for p in list {
        let _ = write!(
            o,
            r#"<li><b>{}</b> <span class="badge bad">{}</span> {}</li>"#,
            p.row(),
            p.status.label(),
            esc(p.status.reason().unwrap_or(""))
        );
    }
    o.push_str("</ul></section>");
}

fn host(o: &mut String, report: &Report) {
    let (input, extra) = describe_app(report);
    let _ = write!(
        o,
        r#"<h2>App, load and host</h2><section class="card"><dl class="kv"><dt>app</dt><dd><b>{name}</b> from <code>{input}</code>{extra}</dd><dt>load</dt><dd>{load}</dd><dt>runs</dt><dd>{runs} per platform</dd><dt>host</dt><dd>{host}</dd><dt>created</dt><dd>{created}</dd><dt>tool</dt><dd>bakeoff {version}</dd></dl></section>"#,
        name = esc(&report.app.name),
        input = esc(&input),
        extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {}", esc(&extra))
        },
        load = esc(&describe_load(report)),
        runs = report.runs_per_platform,
        host = esc(&describe_host(report)),
        created = esc(&report.created),
        version = esc(&report.tool_version),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_report_html() {
        insta::assert_snapshot!(html(&crate::example::report()));
    }

    #[test]
    fn page_is_self_contained_with_its_charts() {
        let page = html(&crate::example::report());
        // Six comparison charts and the load profiles of docker and qemu.
        assert_eq!(page.matches("<svg").count(), 8);
        assert_eq!(page.matches(r#"class="chart sweep""#).count(), 2);
        for external in ["<script", "src=", "href=", "@import", "url(http"] {
            assert!(
                !page.contains(external),
                "the page must not contain {external}"
            );
        }
        assert!(page.contains("emulated (TCG)"));
        assert!(
            page.contains("xl is not installed"),
            "unavailable platforms are listed with their reason"
        );
    }

    #[test]
    fn text_from_the_report_is_escaped() {
        let mut r = crate::example::report();
        r.app.name = "<script>alert(1)</script>".into();
        r.platforms[3] = PlatformReport::unavailable(Platform::Xen, "a & b <c>");
        let page = html(&r);
        assert!(!page.contains("<script>"));
        assert!(page.contains("a &amp; b &lt;c&gt;"));
    }

    #[test]
    fn unmeasured_figures_are_labelled_not_drawn_as_zero() {
        let page = html(&crate::example::report());
        // xen and firecracker: one "not measured" label per bar chart, no bar.
        assert_eq!(page.matches("not measured (unavailable)").count(), 2 * 5);
    }

    #[test]
    fn sparse_reports_render_without_nonsense_numbers() {
        let mut r = crate::example::report();
        for p in &mut r.platforms {
            p.load = None;
            p.memory = None;
            p.image_size = None;
        }
        r.platforms[1].launch_to_ready = None;
        r.recommendation = Some(crate::recommend(&r, &[], crate::Policy::Throughput));
        let page = html(&r);
        for bad in ["NaN", "inf", "-0"] {
            assert!(!page.contains(bad), "{bad} in the page");
        }
        assert_eq!(page.matches("<svg").count(), 8);
        assert!(page.contains("no platform has latency figures"));
        assert!(page.contains("No platform can be recommended for the throughput policy"));
        assert!(
            page.contains("no launch figures"),
            "qemu's missing launch figure is named"
        );
        let md = crate::markdown(&r);
        assert!(!md.contains("NaN") && !md.contains("inf"));
    }

    #[test]
    fn digests_are_shortened_with_the_full_value_in_the_tooltip() {
        let d = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(
            short_image(d),
            format!(r#"<code title="{d}">sha256:9f86d081884c…</code>"#)
        );
        assert_eq!(
            short_image("bakeoff/hello:3f2a9c1e"),
            "<code>bakeoff/hello:3f2a9c1e</code>"
        );
    }

    #[test]
    fn sweep_charts_mark_the_objective_and_the_sustainable_rate() {
        let r = crate::example::report();
        let docker = &r.platforms[0];
        let svg = sweep_chart(docker, docker.sweep.as_ref().unwrap());
        assert!(svg.contains("SLO p99=20ms"), "{svg}");
        assert!(svg.contains("sustains 5,000 req/s"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2, "p50 and p99 lines");
        let qemu = &r.platforms[1];
        let svg = sweep_chart(qemu, qemu.sweep.as_ref().unwrap());
        assert!(svg.contains("sustains 1,000 req/s"), "{svg}");
        assert!(
            svg.contains(r##"fill="#fff""##),
            "unsustained points are hollow"
        );
        let empty = crate::Sweep::new(crate::Slo::default(), 5.0, 16, vec![]);
        assert!(sweep_chart(qemu, &empty).contains("no sweep point has latency figures"));
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_step(18_950.0, 4.0), 5000.0);
        assert_eq!(nice_step(2.61, 4.0), 1.0);
        assert_eq!(nice_step(0.0, 4.0), 1.0);
        assert_eq!(tick(0.5, 0.5), "0.5");
        assert_eq!(tick(15_000.0, 5000.0), "15,000");
        assert_eq!(ms_tick(0.1), "100 µs");
        assert_eq!(ms_tick(10.0), "10 ms");
        assert_eq!(ms_tick(2000.0), "2,000 ms");
    }
}
