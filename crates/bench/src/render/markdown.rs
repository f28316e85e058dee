use std::fmt::Write;

use super::{
    cells, describe_app, describe_conditions, describe_host, describe_load, describe_sustained,
    describe_sweep, sweep_cells, Ratio, SWEEP_HEAD,
};
use crate::Report;

/// Escapes a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A Markdown table with columns padded to equal width, readable as plain text in a terminal.
fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<String>| -> String {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    out.push_str(&line(head.iter().map(|h| h.to_string()).collect()));
    out.push_str(&line(widths.iter().map(|&w| "-".repeat(w)).collect()));
    for row in rows {
        out.push_str(&line(row));
    }
}

/// The report as a Markdown document whose tables also read well in a terminal: one row per
/// platform, ratios against the best platform, what was not measured and why, then the
/// recommendation and its reasons.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# bakeoff report: {}\n", report.app.name);
    let (input, extra) = describe_app(report);
    let _ = writeln!(
        out,
        "- app: `{}` from `{input}`{}",
        report.app.name,
        if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        }
    );
    let _ = writeln!(
        out,
        "- load: {}; {} run{} per platform",
        describe_load(report),
        report.runs_per_platform,
        if report.runs_per_platform == 1 {
            ""
        } else {
            "s"
        }
    );
    let _ = writeln!(out, "- host: {}", describe_host(report));
    let _ = writeln!(
        out,
        "- created {} by bakeoff {}\n",
        report.created, report.tool_version
    );

    let rows: Vec<Vec<String>> = report
        .platforms
        .iter()
        .map(|p| {
            let c = cells(p);
            vec![
                p.row().to_string(),
                c.status,
                c.accelerator,
                c.image,
                c.launch,
                c.memory,
                c.rps,
                c.latency,
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "platform",
            "status",
            "accelerator",
            "image",
            "launch→ready (min–max)",
            "memory",
            "req/s (min–max)",
            "p50 / p99",
        ],
        &rows,
    );

    let measured: Vec<_> = report
        .platforms
        .iter()
        .filter(|p| p.is_measured())
        .collect();
    if !measured.is_empty() {
        out.push_str("\nCompared with the best measured platform (1.00× = best):\n\n");
        let mut head = vec!["platform"];
        head.extend(Ratio::ALL.iter().map(|r| r.title()));
        let rows: Vec<Vec<String>> = measured
            .iter()
            .map(|p| {
                let mut row = vec![p.row().to_string()];
                row.extend(Ratio::ALL.iter().map(|r| r.cell(p, &report.platforms)));
                row
            })
            .collect();
        table(&mut out, &head, &rows);
    }

    if measured.iter().any(|p| p.is_emulated()) {
        out.push_str(
            "\nFigures of platforms marked \"emulated (TCG)\" come from QEMU's instruction emulation, \
             without hardware virtualization: they understate what those platforms do with KVM.\n",
        );
    }

    for t in super::breakdowns(report) {
        let _ = writeln!(out, "\n{}\n", t.caption);
        let head: Vec<&str> = t.head.iter().map(String::as_str).collect();
        table(&mut out, &head, &t.rows);
    }

    let unmeasured: Vec<_> = report
        .platforms
        .iter()
        .filter(|p| !p.is_measured())
        .collect();
    if !unmeasured.is_empty() {
        out.push_str("\nNot measured:\n");
        for p in unmeasured {
            let _ = writeln!(
                out,
                "- {}: {}: {}",
                p.row(),
                p.status.label(),
                p.status.reason().unwrap_or("")
            );
        }
    }

    let notes: Vec<_> = report
        .platforms
        .iter()
        .flat_map(|p| p.notes.iter().map(move |n| (p.row(), n)))
        .collect();
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        for (p, n) in notes {
            let _ = writeln!(out, "- {p}: {n}");
        }
    }

    let swept: Vec<_> = report
        .platforms
        .iter()
        .filter_map(|p| p.sweep.as_ref().map(|s| (p, s)))
        .collect();
    if !swept.is_empty() {
        out.push_str("\n## Load profiles\n");
        for (p, s) in swept {
            let _ = writeln!(
                out,
                "\n### {}: {}\n\n{}; {}.\n",
                p.row(),
                describe_sustained(s),
                describe_conditions(p),
                describe_sweep(s)
            );
            let rows: Vec<Vec<String>> = s.points.iter().map(sweep_cells).collect();
            table(&mut out, &SWEEP_HEAD, &rows);
        }
    }

    match &report.recommendation {
        None => out.push_str("\n## Recommendation\n\nNot computed.\n"),
        Some(r) => {
            let _ = match r.platform {
                Some(p) => writeln!(
                    out,
                    "\n## Recommendation: {} ({} policy)\n",
                    bakeoff_spec::Row::new(p, r.target),
                    r.policy
                ),
                None => writeln!(out, "\n## Recommendation: none ({} policy)\n", r.policy),
            };
            for reason in &r.reasons {
                let _ = writeln!(out, "- {reason}");
            }
            if !r.ranking.is_empty() {
                let ranking: Vec<String> = r
                    .ranking
                    .iter()
                    .map(|(p, s)| format!("{p} {s:.2}"))
                    .collect();
                let _ = writeln!(out, "\nRanking (score 0–1): {}", ranking.join(", "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_report_markdown() {
        insta::assert_snapshot!(markdown(&crate::example::report()));
    }

    #[test]
    fn nothing_measured_still_says_why() {
        let mut r = crate::example::report();
        r.platforms.retain(|p| !p.is_measured());
        r.recommendation = Some(crate::recommend(&r, &[], r.policy));
        let md = markdown(&r);
        assert!(
            md.contains("| xen         | unavailable | —           |"),
            "{md}"
        );
        assert!(!md.contains("Compared with the best"));
        assert!(md.contains("## Recommendation: none (balanced policy)"));
        assert!(md.contains(
            "- No platform can be recommended: none was both measured and allowed by the check."
        ));
    }

    #[test]
    fn pipes_in_cells_do_not_break_the_table() {
        let mut out = String::new();
        table(&mut out, &["a"], &[vec!["x|y".to_string()]]);
        assert_eq!(out, "| a    |\n| ---- |\n| x\\|y |\n");
    }
}
