//! Helpers for end-to-end tests: run the real `bakeoff` binary with its own state and cache
//! dirs, talk HTTP to 127.0.0.1, and clean up every instance a test started.
#![allow(dead_code, clippy::new_without_default)]

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
        Env {
            dir: tempfile::tempdir().unwrap(),
            started: Default::default(),
        }
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
        assert!(
            out.status.success(),
            "bakeoff {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The `bakeoff ps --json` row of instance `name`, if it is listed.
    pub fn ps_row(&self, name: &str) -> Option<serde_json::Value> {
        let ps: serde_json::Value = serde_json::from_str(&self.ok(&["ps", "--json"])).unwrap();
        ps.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
    }

    /// Runs and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "bakeoff {} should have failed",
            args.join(" ")
        );
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
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The cache the end-to-end tests share: `$BAKEOFF_TEST_CACHE_DIR` (scripts/test.sh sets one
/// outside the clone, so the minimal kernel and the Rumprun toolchain are built once per
/// machine), else `target/test-cache`.
pub fn shared_cache() -> PathBuf {
    match std::env::var_os("BAKEOFF_TEST_CACHE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => repo_root().join("target/test-cache"),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET; returns (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {buf:?}")))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
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
        .args([
            "-fsS",
            "--unix-socket",
            "/var/run/docker.sock",
            "http://localhost/_ping",
        ])
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
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
            "/var/run/docker.sock",
        ])
        .arg(format!("http://localhost/containers/{name}/json"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// True when qemu-system-x86_64 is installed; otherwise prints why the test is skipped (or
/// fails under BAKEOFF_REQUIRE_ENGINES=1).
pub fn qemu_or_skip(test: &str) -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!("{test}: qemu-system-x86_64 is missing and BAKEOFF_REQUIRE_ENGINES=1");
        }
        eprintln!(
            "SKIPPED {test}: qemu-system-x86_64 is not installed (run scripts/install-deps.sh)"
        );
    }
    ok
}

/// True when a Rumprun toolchain is at hand: on PATH, named by BAKEOFF_RUMPRUN_TOOLCHAIN, or
/// built by `bakeoff toolchain build` into the tests' shared cache (scripts/test.sh builds it
/// from ../shared/vendor). Otherwise prints why the test is skipped, or fails under
/// BAKEOFF_REQUIRE_ENGINES=1.
pub fn rumprun_toolchain_present() -> bool {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("x86_64-rumprun-netbsd-gcc").is_file()))
        .unwrap_or(false);
    on_path
        || std::env::var_os("BAKEOFF_RUMPRUN_TOOLCHAIN").is_some_and(|v| !v.is_empty())
        || bakeoff_pack::toolchain::newest_built(&bakeoff_build_cache()).is_some()
}

fn bakeoff_build_cache() -> bakeoff_pack::toolchain::CacheRef {
    bakeoff_pack::toolchain::CacheRef::new(shared_cache())
}

pub fn rumprun_or_skip(test: &str) -> bool {
    if rumprun_toolchain_present() {
        return true;
    }
    if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
        panic!("{test}: no Rumprun toolchain and BAKEOFF_REQUIRE_ENGINES=1 (scripts/test.sh builds one with `bakeoff toolchain build` when ../shared/vendor/rumprun-src.tar.gz is there)");
    }
    eprintln!("SKIPPED {test}: no Rumprun toolchain (`bakeoff toolchain build`; see docs/platforms/rumprun.md)");
    false
}

/// PIDs of QEMU processes whose command line mentions `needle` (e.g. an instance's state dir).
pub fn qemu_pids(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if (cmd.starts_with("qemu-system") || cmd.contains("/qemu-system"))
            && cmd.contains(needle)
            && !zombie
        {
            pids.push(pid);
        }
    }
    pids
}

/// Writes a C file into the test's dir and returns its path.
pub fn c_file(env: &Env, name: &str, text: &str) -> String {
    let p = env.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// examples/hello as a TCP app (`[health] kind = "tcp"`, port 8080) in a directory of `env`:
/// ready means it listens, not that it answers HTTP. Returns the directory.
pub fn tcp_hello(env: &Env) -> String {
    let dir = env.dir.path().join("tcp-app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo_root().join("examples/hello/hello.c"),
        dir.join("hello.c"),
    )
    .unwrap();
    std::fs::write(
        dir.join("bakeoff.toml"),
        "name = \"tcphello\"\nports = [8080]\n[health]\nkind = \"tcp\"\n",
    )
    .unwrap();
    dir.display().to_string()
}

/// Asserts that the running microVM instance `name` booted bakeoff's minimal kernel: its QEMU's
/// `-kernel` is the minimal kernel's vmlinux, as it is by default wherever that kernel is built.
pub fn assert_boots_the_minimal_kernel(test: &str, name: &str) {
    let Some(k) = minimal_or_skip(test) else {
        return;
    };
    let pids = qemu_pids(name);
    assert_eq!(pids.len(), 1, "{test}: QEMU processes of {name}: {pids:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let kernel = args
        .iter()
        .position(|a| a == "-kernel")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| std::fs::canonicalize(p).ok());
    let minimal = std::fs::canonicalize(k.dir.join("vmlinux")).ok();
    assert!(
        kernel.is_some() && kernel == minimal,
        "{test}: {name} booted {kernel:?}, not the minimal kernel {minimal:?}"
    );
}

/// The minimal kernel in the shared test cache; None (skip) when it is not built, which fails
/// under BAKEOFF_REQUIRE_ENGINES=1 (scripts/test.sh builds it first).
pub fn minimal_or_skip(test: &str) -> Option<bakeoff_guest::MinimalKernel> {
    match bakeoff_guest::find_minimal_kernel(&shared_cache()) {
        Some(k) => Some(k),
        None => {
            let why = format!(
                "the minimal kernel is not built in {}; run `BAKEOFF_CACHE_DIR={} bakeoff kernel build` (scripts/test.sh does)",
                shared_cache().display(),
                shared_cache().display()
            );
            if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
                panic!("{test}: {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}
