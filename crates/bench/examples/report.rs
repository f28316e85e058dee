//! Writes the fixed example report (report.json, report.md, report.html) into a directory, to look
//! at the renderings without running a bench.
//!
//! cargo run -p bakeoff-bench --example report -- OUT_DIR

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "out/example-report".to_string());
    match bakeoff_bench::write_outputs(&bakeoff_bench::example::report(), dir.as_ref()) {
        Ok(p) => println!(
            "{}\n{}\n{}",
            p.json.display(),
            p.markdown.display(),
            p.html.display()
        ),
        Err(e) => {
            eprintln!("report: {e}");
            std::process::exit(1);
        }
    }
}
