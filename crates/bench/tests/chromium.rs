//! Renders the HTML report in a real browser (headless Chromium): the page must lay out with its
//! SVG charts and take a screenshot. Skips with a reason when Chromium is not installed.

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
    assert_eq!(dom.matches("<svg").count(), 6, "six SVG charts in the DOM");
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
