//! Helpers for end-to-end tests: run the real `bakeoff` binary with its own state and cache
//! dirs, talk HTTP to 127.0.0.1, and clean up every instance a test started.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Env {
    pub dir: tempfile::TempDir,
    started: std::cell::RefCell<Vec<String>>,
}

impl Env {
    pub fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap(), started: Default::default() }
    }

    /// A `bakeoff` command with this test's state dir and a cache shared by all tests
    /// (builds are content-addressed, so sharing is safe and saves time).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bakeoff"));
        c.args(args)
            .current_dir(repo_root())
            .env("BAKEOFF_STATE_DIR", self.dir.path().join("state"))
            .env("BAKEOFF_CACHE_DIR", shared_cache());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        if let Some(i) = args.iter().position(|a| *a == "--name") {
            self.started.borrow_mut().push(args[i + 1].to_string());
        }
        let out = self.cmd(args).output().expect("bakeoff runs");
        eprintln!(
            "$ bakeoff {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "bakeoff {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "bakeoff {} should have failed", args.join(" "));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("panicked"), "bakeoff panicked: {err}");
        err
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for name in self.started.borrow().iter() {
            let _ = self.cmd(&["rm", "-f", name]).output();
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn shared_cache() -> PathBuf {
    repo_root().join("target/test-cache")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.0 GET; returns (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad response: {buf:?}")))?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Polls until an HTTP 200 arrives (or panics after `limit`).
pub fn wait_http(port: u16, limit: Duration) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match http_get(port, "/") {
            Ok((200, body)) => return body,
            Ok((s, b)) => last = format!("status {s}: {b}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no HTTP 200 on 127.0.0.1:{port} within {limit:?}; last: {last}");
}

/// True when the Docker engine answers; otherwise prints why the test is skipped. With
/// BAKEOFF_REQUIRE_ENGINES=1 (CI), a missing engine is a failure instead.
pub fn docker_or_skip(test: &str) -> bool {
    let ok = Command::new("curl")
        .args(["-fsS", "--unix-socket", "/var/run/docker.sock", "http://localhost/_ping"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!("{test}: the Docker engine is not running and BAKEOFF_REQUIRE_ENGINES=1");
        }
        eprintln!("SKIPPED {test}: the Docker engine is not running (run scripts/install-deps.sh)");
    }
    ok
}

/// The engine's own view of a container: HTTP status of GET /containers/NAME/json.
pub fn engine_container_status(name: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", "/var/run/docker.sock"])
        .arg(format!("http://localhost/containers/{name}/json"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}
