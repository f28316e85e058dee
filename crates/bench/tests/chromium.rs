//! Renders the HTML report in a real browser (headless Chromium): the page must lay out with its
//! SVG charts and take a screenshot, and the layout must hold up as a person sees it: charts that
//! fill their cards, bars that stay visible, a Conditions table that fits the page. The layout
//! facts are measured by Chromium itself, with a small script added to a copy of the page (the
//! report ships without scripts). Skips with a reason when Chromium is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs Chromium headless with `extra` arguments on `url`; returns its stdout. Kills it after
/// two minutes.
fn chromium(profile: &Path, out: &Path, extra: &[String], url: &str) -> String {
    let stdout = std::fs::File::create(out).unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn chromium_renders_the_report_with_its_charts() {
    if !Path::new(CHROMIUM).exists() {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!("{CHROMIUM} is not installed and BAKEOFF_REQUIRE_ENGINES=1");
        }
        eprintln!("skipping: {CHROMIUM} is not installed (apt-get install -y chromium)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths =
        bakeoff_bench::write_outputs(&bakeoff_bench::example::report(), dir.path()).unwrap();
    let url = format!("file://{}", paths.html.display());
    let profile = dir.path().join("profile");

    let dom = chromium(
        &profile,
        &dir.path().join("dom.html"),
        &["--dump-dom".to_string()],
        &url,
    );
    assert_eq!(
        dom.matches("<svg").count(),
        8,
        "six SVG charts and two load profiles in the DOM"
    );
    assert!(dom.contains("Run it on docker"));
    assert!(
        dom.matches("emulated (TCG)").count() >= 5,
        "TCG figures are labelled"
    );
    assert!(
        dom.contains("xl is not installed"),
        "unavailable platforms are listed"
    );
    // Three measured platforms × five bar charts, one dark bar each.
    assert_eq!(dom.matches(r#"class="bar""#).count(), 15);

    let shot: PathBuf = dir.path().join("report.png");
    chromium(
        &profile,
        &dir.path().join("shot.log"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1300,3400".to_string(),
        ],
        &url,
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    assert!(
        png.len() > 50_000,
        "the screenshot has content ({} bytes)",
        png.len()
    );
    if let Ok(keep) = std::env::var("BAKEOFF_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// Measures the laid-out page in the browser and prints one fact per line into `<pre id=layout>`.
const MEASURE: &str = r#"<script>
(function () {
  const out = [];
  const page = document.documentElement.clientWidth;
  out.push(`page ${page} ${document.documentElement.scrollWidth}`);
  const inner = (el) => {
    const cs = getComputedStyle(el);
    return el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  };
  for (const svg of document.querySelectorAll('svg.chart')) {
    const card = inner(svg.closest('figure'));
    let lo = Infinity, hi = -Infinity;
    for (const g of svg.querySelectorAll('line.grid')) {
      const b = g.getBoundingClientRect();
      lo = Math.min(lo, b.left);
      hi = Math.max(hi, b.right);
    }
    const plot = hi > lo ? hi - lo : 0;
    out.push(`chart ${svg.id} ${svg.getBoundingClientRect().width.toFixed(1)} ${plot.toFixed(1)} ${card.toFixed(1)}`);
  }
  for (const b of document.querySelectorAll('svg.chart rect.bar, svg.chart rect.bar2')) {
    out.push(`bar ${b.closest('svg').id} ${b.getBoundingClientRect().width.toFixed(1)}`);
  }
  const h2 = [...document.querySelectorAll('h2')].find((h) => h.textContent.startsWith('Conditions'));
  const table = h2.nextElementSibling.querySelector('table');
  const wrap = table.parentElement;
  let tallest = 0;
  for (const tr of table.querySelectorAll('tr')) {
    tallest = Math.max(tallest, tr.getBoundingClientRect().height);
  }
  out.push(`conditions ${table.getBoundingClientRect().width.toFixed(1)} ${wrap.clientWidth} ${tallest.toFixed(1)}`);
  const pre = document.createElement('pre');
  pre.id = 'layout';
  pre.textContent = out.join('\n');
  document.body.appendChild(pre);
})();
</script>"#;

/// Numbers after the first word of a line of the layout facts.
fn numbers(line: &str, skip: usize) -> Vec<f64> {
    line.split_whitespace()
        .skip(skip)
        .map(|n| n.parse::<f64>().unwrap())
        .collect()
}

#[test]
fn the_report_page_lays_out_as_a_person_should_see_it() {
    if !Path::new(CHROMIUM).exists() {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!("{CHROMIUM} is not installed and BAKEOFF_REQUIRE_ENGINES=1");
        }
        eprintln!("skipping: {CHROMIUM} is not installed (apt-get install -y chromium)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths =
        bakeoff_bench::write_outputs(&bakeoff_bench::example::report(), dir.path()).unwrap();
    let page = std::fs::read_to_string(&paths.html).unwrap();
    assert!(page.contains("</body>"));
    let measured = dir.path().join("measured.html");
    std::fs::write(
        &measured,
        page.replace("</body>", &format!("{MEASURE}</body>")),
    )
    .unwrap();
    let dom = chromium(
        &dir.path().join("profile"),
        &dir.path().join("dom.html"),
        &[
            "--dump-dom".to_string(),
            "--window-size=1280,2000".to_string(),
        ],
        &format!("file://{}", measured.display()),
    );
    let start = dom
        .find(r#"<pre id="layout">"#)
        .expect("the measuring script ran")
        + 17;
    let facts = &dom[start..start + dom[start..].find("</pre>").unwrap()];
    eprintln!("{facts}");

    let mut failures = Vec::new();
    let mut charts = 0;
    for line in facts.lines() {
        let word = line.split_whitespace().next().unwrap();
        match word {
            "page" => {
                let n = numbers(line, 1);
                if n[1] > n[0] {
                    failures.push(format!(
                        "the page scrolls sideways: {} px wide in a {} px window",
                        n[1], n[0]
                    ));
                }
            }
            "chart" => {
                charts += 1;
                let id = line.split_whitespace().nth(1).unwrap();
                let n = numbers(line, 2);
                let (svg, plot, card) = (n[0], n[1], n[2]);
                if svg < 0.8 * card {
                    failures.push(format!(
                        "{id} is {svg} px wide in a {card} px card (< 80 %)"
                    ));
                }
                if plot > 0.0 && plot < 0.8 * card {
                    failures.push(format!(
                        "{id} plots over {plot} px of a {card} px card (< 80 %)"
                    ));
                }
            }
            "bar" => {
                let id = line.split_whitespace().nth(1).unwrap();
                let w = numbers(line, 2)[0];
                if w < 4.0 {
                    failures.push(format!("a bar of {id} is {w} px wide: too thin to see"));
                }
            }
            "conditions" => {
                let n = numbers(line, 1);
                let (table, wrap, tallest) = (n[0], n[1], n[2]);
                if table > wrap + 1.0 {
                    failures.push(format!("the Conditions table is {table} px wide in {wrap} px: columns pushed off the page"));
                }
                if tallest > 240.0 {
                    failures.push(format!("a Conditions row is {tallest} px tall (> 240 px: the argv is not one wrapped line)"));
                }
            }
            other => panic!("unknown layout fact {other}"),
        }
    }
    assert!(
        failures.is_empty(),
        "layout problems:\n{}",
        failures.join("\n")
    );
    assert_eq!(charts, 8, "every chart was measured");
}
