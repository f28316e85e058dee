//! Debian *source* packages, for targets that need a program rebuilt rather than Debian's
//! prebuilt Linux binary (Rumprun).
//!
//! bakeoff keeps its own `deb-src` list in the cache, derived from this host's configured `deb`
//! lines (one-line `sources.list` files and deb822 `.sources` files), and its own package lists:
//! apt runs with `Dir::Etc::SourceList` pointing at that list, `Dir::Etc::SourceParts=/dev/null`
//! and `Dir::State::Lists`/`Dir::Cache` inside the cache, so the host's apt state is neither read
//! for sources nor changed. `apt-get source --download-only` fetches the `.dsc` and its files;
//! each file is checked against the SHA-256 of the archive's `Sources` index and of the `.dsc`
//! itself before `dpkg-source -x` unpacks it (applying Debian's patches). The unpacked tree is
//! cached per source package and version.
//!
//! Every external command here runs with a deadline and a bound on what is read of its output
//! ([`run_bounded`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{BuildError, Cache};

/// Where the host's apt configuration is, when `apt-config` does not say.
const SYSTEM_SOURCE_LIST: &str = "/etc/apt/sources.list";
const SYSTEM_SOURCE_PARTS: &str = "/etc/apt/sources.list.d";
const SYSTEM_LISTS: &str = "/var/lib/apt/lists";
/// The most of one apt configuration file that is read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Deadlines: the index download is ~10 MB, a source package a few MB.
const UPDATE_DEADLINE: Duration = Duration::from_secs(180);
const QUERY_DEADLINE: Duration = Duration::from_secs(60);
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(300);
/// The most of a command's output kept (the end of it, where errors are).
pub const MAX_OUTPUT_BYTES: usize = 256 << 10;
/// The largest source file accepted (Debian's biggest orig tarballs are a few hundred MB).
const MAX_SOURCE_FILE_BYTES: u64 = 1 << 30;

/// A source package unpacked with Debian's patches applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePackage {
    /// The source package's name (`nginx`, `redis`).
    pub name: String,
    /// Its exact Debian version.
    pub version: String,
    /// The version of the binary package the rest of the app came from.
    pub binary_version: String,
    /// The unpacked tree (`debian/` included).
    pub tree: PathBuf,
    /// `Build-Depends` as the index gives it.
    pub build_depends: String,
    /// What was tried before this version, one sentence each (empty when the binary's own
    /// version was fetched).
    pub tried: Vec<String>,
}

impl SourcePackage {
    /// `nginx 1.22.1-9+deb12u9`.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
    /// The upstream part of the version: `1.22.1` of `1.22.1-9+deb12u9`, `7.0.15` of
    /// `5:7.0.15-1~deb12u10`.
    pub fn upstream_version(&self) -> String {
        upstream_version(&self.version)
    }
}

/// The upstream version inside a Debian version (no epoch, no revision).
pub fn upstream_version(version: &str) -> String {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.rsplit_once('-').map_or(v, |(u, _)| u).to_string()
}

// ---------------------------------------------------------------------------------------------
// The deb-src list, from the host's deb lines (pure)

/// `deb-src` lines (one-line format) for every `deb` source of the host's apt configuration, in
/// order, without duplicates. `files` are (file name, text): `*.list` files are one-line format,
/// `*.sources` files deb822. A `.sources` stanza with `Enabled: no` and lines whose file name
/// ends otherwise are skipped, as apt does. Options (`[arch=amd64 signed-by=…]`, `Signed-By:`)
/// are kept.
pub fn deb_src_lines(files: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (name, text) in files {
        let lines = if name.ends_with(".sources") {
            deb822_lines(text)
        } else if name.ends_with(".list") || name.ends_with("sources.list") {
            text.lines().filter_map(one_line).collect()
        } else {
            Vec::new()
        };
        for l in lines {
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

/// `deb [opts] URI SUITE COMPONENT...` → `deb-src [opts] URI SUITE COMPONENT...`.
fn one_line(line: &str) -> Option<String> {
    let line = line.split('#').next().unwrap_or("").trim();
    let rest = line
        .strip_prefix("deb ")
        .or_else(|| line.strip_prefix("deb\t"))?;
    let rest = rest.trim_start();
    let (opts, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (o, r) = r.split_once(']')?;
        (Some(o.trim().to_string()), r.trim_start())
    } else {
        (None, rest)
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.len() < 2 {
        return None;
    }
    Some(match opts {
        Some(o) if !o.is_empty() => format!("deb-src [{o}] {}", words.join(" ")),
        _ => format!("deb-src {}", words.join(" ")),
    })
}

/// The deb822 stanzas of a `.sources` file whose `Types:` include `deb`, as one-line `deb-src`
/// lines (one per URI and suite).
fn deb822_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in deb822_stanzas(text) {
        let get = |k: &str| {
            stanza
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        if !get("Types")
            .unwrap_or("")
            .split_whitespace()
            .any(|t| t == "deb")
        {
            continue;
        }
        if get("Enabled").is_some_and(|e| e.trim().eq_ignore_ascii_case("no")) {
            continue;
        }
        let mut opts = Vec::new();
        for (key, opt) in [
            ("Signed-By", "signed-by"),
            ("Architectures", "arch"),
            ("Trusted", "trusted"),
        ] {
            if let Some(v) = get(key) {
                let v = v.split_whitespace().collect::<Vec<_>>().join(",");
                // An inline key (a PGP block) cannot go on one line; apt then uses its keyrings.
                if !v.is_empty() && !v.contains("BEGIN") {
                    opts.push(format!("{opt}={v}"));
                }
            }
        }
        let comps = get("Components")
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>();
        for uri in get("URIs").unwrap_or("").split_whitespace() {
            for suite in get("Suites").unwrap_or("").split_whitespace() {
                let mut line = String::from("deb-src");
                if !opts.is_empty() {
                    line.push_str(&format!(" [{}]", opts.join(" ")));
                }
                line.push_str(&format!(" {uri} {suite}"));
                for c in &comps {
                    line.push_str(&format!(" {c}"));
                }
                out.push(line);
            }
        }
    }
    out
}

/// Paragraphs of `Key: value` fields (continuation lines joined with a newline; `#` comments
/// dropped).
fn deb822_stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stanzas = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !cur.is_empty() {
                stanzas.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        stanzas.push(cur);
    }
    stanzas
}

// ---------------------------------------------------------------------------------------------
// Index records and checksums (pure)

/// One source package record of the index (`apt-cache showsrc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub package: String,
    pub version: String,
    pub binaries: Vec<String>,
    pub build_depends: String,
    /// (file name, size, SHA-256 hex).
    pub files: Vec<(String, u64, String)>,
}

/// The records of `apt-cache showsrc` output.
pub fn parse_sources(text: &str) -> Vec<SourceRecord> {
    deb822_stanzas(text)
        .into_iter()
        .filter_map(|s| {
            let get = |k: &str| {
                s.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            Some(SourceRecord {
                package: get("Package")?,
                version: get("Version")?,
                binaries: get("Binary")
                    .unwrap_or_default()
                    .split([',', '\n'])
                    .map(|b| b.trim().to_string())
                    .filter(|b| !b.is_empty())
                    .collect(),
                build_depends: get("Build-Depends")
                    .unwrap_or_default()
                    .split('\n')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" "),
                files: checksums(&get("Checksums-Sha256").unwrap_or_default()),
            })
        })
        .collect()
}

/// The `Checksums-Sha256` field of a `.dsc` (or of a Sources record): one `HASH SIZE NAME` per line.
pub fn parse_dsc_checksums(dsc: &str) -> Vec<(String, u64, String)> {
    // A signed .dsc wraps the fields in a PGP block; the fields are the same.
    let body: String = dsc
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.starts_with("Hash:"))
        .collect::<Vec<_>>()
        .join("\n");
    deb822_stanzas(&body)
        .into_iter()
        .flat_map(|s| {
            s.into_iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("Checksums-Sha256"))
                .flat_map(|(_, v)| checksums(&v))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn checksums(field: &str) -> Vec<(String, u64, String)> {
    field
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [hash, size, name] => {
                    Some((name.to_string(), size.parse().ok()?, hash.to_lowercase()))
                }
                _ => None,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Effects

/// A finished command: its status and the last [`MAX_OUTPUT_BYTES`] of each stream.
#[derive(Debug)]
pub struct Bounded {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// True when the deadline ended it.
    pub timed_out: bool,
}

impl Bounded {
    pub fn success(&self) -> bool {
        self.status == Some(0) && !self.timed_out
    }
    pub fn status_text(&self) -> String {
        if self.timed_out {
            "none: it was stopped at its deadline".into()
        } else {
            self.status.map_or("killed".into(), |c| c.to_string())
        }
    }
}

/// Runs `cmd` to completion or until `deadline` (then kills its process group); `tick` is called
/// about every `every` with the time so far, for progress lines. Output goes to files in a
/// temporary directory and only its last [`MAX_OUTPUT_BYTES`] are read back.
pub fn run_bounded(
    cmd: &mut Command,
    deadline: Duration,
    every: Duration,
    tick: &dyn Fn(Duration),
) -> Result<Bounded, BuildError> {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir()?;
    let out = fs_err::File::create(dir.path().join("out"))?;
    let err = fs_err::File::create(dir.path().join("err"))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.into_parts().0))
        .stderr(Stdio::from(err.into_parts().0))
        .process_group(0);
    let mut child = cmd.spawn()?;
    let start = Instant::now();
    let mut next_tick = every;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s.code();
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            // The whole group: make and its compilers.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        if elapsed >= next_tick {
            tick(elapsed);
            next_tick += every;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let tail = |name: &str| -> Result<String, BuildError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = fs_err::File::open(dir.path().join(name))?;
        let len = f.metadata()?.len();
        let skip = len.saturating_sub(MAX_OUTPUT_BYTES as u64);
        f.seek(SeekFrom::Start(skip))?;
        let mut buf = Vec::new();
        f.take(MAX_OUTPUT_BYTES as u64).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    Ok(Bounded {
        status,
        stdout: tail("out")?,
        stderr: tail("err")?,
        timed_out,
    })
}

/// Where this host's apt reads its sources and keeps its lists, as `apt-config` says (so
/// `APT_CONFIG` is honoured): (source list, source parts, lists).
fn system_paths() -> (PathBuf, PathBuf, PathBuf) {
    let mut paths = (
        PathBuf::from(SYSTEM_SOURCE_LIST),
        PathBuf::from(SYSTEM_SOURCE_PARTS),
        PathBuf::from(SYSTEM_LISTS),
    );
    let out = run_bounded(
        Command::new("apt-config").args([
            "shell",
            "L",
            "Dir::Etc::SourceList/f",
            "P",
            "Dir::Etc::SourceParts/d",
            "S",
            "Dir::State::Lists/d",
        ]),
        QUERY_DEADLINE,
        QUERY_DEADLINE,
        &|_| {},
    );
    if let Ok(out) = out {
        for line in out.stdout.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = PathBuf::from(v.trim_matches('\''));
            match k {
                "L" => paths.0 = v,
                "P" => paths.1 = v,
                "S" => paths.2 = v,
                _ => {}
            }
        }
    }
    paths
}

/// The host's apt configuration files as (name, text), each read up to [`MAX_CONFIG_BYTES`].
fn system_configs(list: &Path, parts: &Path) -> Vec<(String, String)> {
    let mut paths = vec![list.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(parts) {
        let mut parts: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        parts.sort();
        paths.extend(parts);
    }
    paths
        .into_iter()
        .filter_map(|p| {
            use std::io::Read;
            let f = std::fs::File::open(&p).ok()?;
            let mut text = String::new();
            f.take(MAX_CONFIG_BYTES).read_to_string(&mut text).ok()?;
            Some((p.display().to_string(), text))
        })
        .collect()
}

/// The private apt state: `<cache>/downloads/apt-src/{sources.list,lists,cache}`.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn list(&self) -> PathBuf {
        self.dir.join("sources.list")
    }
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(args[0]);
        c.args([
            "-o",
            &format!("Dir::Etc::SourceList={}", self.list().display()),
            "-o",
            "Dir::Etc::SourceParts=/dev/null",
            "-o",
            &format!("Dir::State::Lists={}", self.dir.join("lists").display()),
            "-o",
            &format!("Dir::Cache={}", self.dir.join("cache").display()),
            // Downloads land in bakeoff's cache, which apt's sandbox user cannot write.
            "-o",
            "APT::Sandbox::User=root",
            "-q",
        ])
        .args(&args[1..])
        .env("LC_ALL", "C")
        .env("LANGUAGE", "C");
        c
    }
}

/// Writes the private deb-src list and runs `apt-get update` into the private lists when they
/// are missing, were made from other lines, or are older than the host's own lists.
/// The private apt state for this host's current deb lines (one directory per set of lines,
/// so hosts or tests with other sources do not overwrite each other's lists), updated when
/// needed, and held under an exclusive lock until the returned guard drops.
fn private_apt(
    cache: &Cache,
    log: &dyn Fn(&str),
) -> Result<(PrivateApt, fs_err::File), BuildError> {
    let (list, parts, host_lists) = system_paths();
    let lines = deb_src_lines(&system_configs(&list, &parts));
    if lines.is_empty() {
        return Err(BuildError::Deb(format!(
            "this host's apt configuration ({}, {}) has no `deb` line to derive a source list from",
            list.display(),
            parts.display()
        )));
    }
    let key = hex::encode(Sha256::digest(lines.join("\n").as_bytes()));
    let apt = PrivateApt {
        dir: cache.downloads().join("apt-src").join(&key[..16]),
    };
    fs_err::create_dir_all(&apt.dir)?;
    let lock = fs_err::File::create(apt.dir.join("lock"))?;
    {
        use std::os::fd::AsRawFd;
        // Concurrent builds wait for one update instead of fighting over apt's own lock.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(BuildError::Io(std::io::Error::last_os_error()));
        }
    }
    ensure_lists(&apt, &lines, &host_lists, log)?;
    Ok((apt, lock))
}

fn ensure_lists(
    apt: &PrivateApt,
    lines: &[String],
    host_lists: &Path,
    log: &dyn Fn(&str),
) -> Result<(), BuildError> {
    let text = format!(
        "# Written by bakeoff from this host's deb lines; used only with Dir::Etc::SourceList.\n{}\n",
        lines.join("\n")
    );
    fs_err::create_dir_all(apt.dir.join("lists/partial"))?;
    fs_err::create_dir_all(apt.dir.join("cache/archives/partial"))?;
    let stamp = apt.dir.join("updated");
    let same_lines = std::fs::read_to_string(apt.list()).is_ok_and(|t| t == text);
    let stamp_time = std::fs::metadata(&stamp).and_then(|m| m.modified()).ok();
    let host_time = std::fs::metadata(host_lists)
        .and_then(|m| m.modified())
        .ok();
    let fresh = same_lines
        && stamp_time.is_some()
        && match (stamp_time, host_time) {
            (Some(s), Some(h)) => s >= h,
            _ => true,
        };
    if fresh {
        return Ok(());
    }
    fs_err::write(apt.list(), &text)?;
    log(&format!(
        "fetching Debian's source index into bakeoff's own lists ({} deb-src line{})",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" }
    ));
    let out = run_bounded(
        &mut apt.command(&["apt-get", "update"]),
        UPDATE_DEADLINE,
        Duration::from_secs(20),
        &|t| {
            log(&format!(
                "still fetching the source index ({} s)",
                t.as_secs()
            ))
        },
    )?;
    if !out.success() {
        return Err(BuildError::CommandFailed {
            what: "apt-get update of bakeoff's deb-src list".into(),
            status: out.status_text(),
            output: last_lines(&out.stderr, 10),
        });
    }
    fs_err::write(&stamp, "")?;
    Ok(())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `a` is newer than `b`, as dpkg orders versions.
fn newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// The source package of binary package `binary` at `version` (the binary's own version first,
/// then the newest other version with the same upstream version), downloaded, verified and
/// unpacked into the cache.
/// `refuse` sees the source package's name and `Build-Depends` before anything is downloaded
/// and may refuse it with a sentence.
pub fn fetch(
    binary: &str,
    version: &str,
    cache: &Cache,
    log: &dyn Fn(&str),
    refuse: &dyn Fn(&str, &str) -> Option<String>,
) -> Result<SourcePackage, BuildError> {
    for tool in ["apt-get", "apt-cache", "dpkg-source"] {
        if super::apt::find_on_path(tool).is_none() {
            return Err(BuildError::Deb(format!(
                "rebuilding a Debian package from source needs `{tool}` (Debian's apt and dpkg-dev), which is not installed on this host"
            )));
        }
    }
    let (apt, _lock) = private_apt(cache, log)?;
    let out = run_bounded(
        &mut apt.command(&["apt-cache", "showsrc", "--", binary]),
        QUERY_DEADLINE,
        QUERY_DEADLINE,
        &|_| {},
    )?;
    let records: Vec<SourceRecord> = parse_sources(&out.stdout)
        .into_iter()
        .filter(|r| r.package == binary || r.binaries.iter().any(|b| b == binary))
        .collect();
    if records.is_empty() {
        return Err(BuildError::Deb(format!(
            "deb:{binary} has no source package in the deb-src lists bakeoff derived from this host's apt sources ({})",
            apt.list().display()
        )));
    }
    // The binary's own version, then the same upstream version, newest first.
    let upstream = upstream_version(version);
    let mut order: Vec<&SourceRecord> = records.iter().filter(|r| r.version == version).collect();
    let mut others: Vec<&SourceRecord> = records
        .iter()
        .filter(|r| r.version != version && upstream_version(&r.version) == upstream)
        .collect();
    others.sort_by(|a, b| {
        if newer(&a.version, &b.version) {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        }
    });
    order.extend(others);
    if order.is_empty() {
        let have: Vec<String> = records.iter().map(|r| r.version.clone()).collect();
        return Err(BuildError::Deb(format!(
            "deb:{binary} is version {version}, but the source index has only {} of source package {}",
            have.join(", "),
            records[0].package
        )));
    }
    if let Some(why) = refuse(&order[0].package, &order[0].build_depends) {
        return Err(BuildError::Deb(why));
    }
    let mut tried = Vec::new();
    for rec in order {
        match fetch_one(&apt, cache, rec, log) {
            Ok(tree) => {
                return Ok(SourcePackage {
                    name: rec.package.clone(),
                    version: rec.version.clone(),
                    binary_version: version.to_string(),
                    tree,
                    build_depends: rec.build_depends.clone(),
                    tried,
                })
            }
            Err(e) => {
                let why = format!(
                    "source package {} {} could not be fetched: {e}",
                    rec.package, rec.version
                );
                log(&why);
                tried.push(why);
            }
        }
    }
    Err(BuildError::Deb(format!(
        "no source package of deb:{binary} {version} could be fetched: {}",
        tried.join("; ")
    )))
}

/// Downloads (unless cached), verifies and unpacks one source package version; returns the tree.
fn fetch_one(
    apt: &PrivateApt,
    cache: &Cache,
    rec: &SourceRecord,
    log: &dyn Fn(&str),
) -> Result<PathBuf, BuildError> {
    let safe = |s: &str| s.replace(['/', ':'], "_");
    let base = cache.downloads().join("debsrc").join(format!(
        "{}_{}",
        safe(&rec.package),
        safe(&rec.version)
    ));
    let tree = base.join("tree");
    if base.join("complete").is_file() && tree.is_dir() {
        return Ok(tree);
    }
    if rec.files.is_empty() {
        return Err(BuildError::Deb(
            "the index gives no SHA-256 for its files".into(),
        ));
    }
    if let Some((name, size, _)) = rec
        .files
        .iter()
        .find(|(_, s, _)| *s > MAX_SOURCE_FILE_BYTES)
    {
        return Err(BuildError::Deb(format!(
            "{name} is {size} bytes, over bakeoff's bound"
        )));
    }
    fs_err::create_dir_all(cache.downloads().join("debsrc"))?;
    let work = tempfile::tempdir_in(cache.downloads().join("debsrc"))?;
    let total: u64 = rec.files.iter().map(|f| f.1).sum();
    log(&format!(
        "downloading Debian's source package {} {} ({:.1} MB)",
        rec.package,
        rec.version,
        total as f64 / 1e6
    ));
    let spec = format!("{}={}", rec.package, rec.version);
    let out = run_bounded(
        apt.command(&["apt-get", "source", "--download-only", "--", &spec])
            .current_dir(work.path()),
        DOWNLOAD_DEADLINE,
        Duration::from_secs(20),
        &|t| log(&format!("still downloading the source ({} s)", t.as_secs())),
    )?;
    if !out.success() {
        let first = out
            .stderr
            .lines()
            .find(|l| l.starts_with("E:"))
            .unwrap_or_else(|| out.stderr.lines().last().unwrap_or(""))
            .to_string();
        return Err(BuildError::Deb(format!(
            "apt-get source exited with status {} ({})",
            out.status_text(),
            first.trim()
        )));
    }
    // Every file against the index, then against the .dsc.
    let dsc_name = rec
        .files
        .iter()
        .map(|f| f.0.clone())
        .find(|n| n.ends_with(".dsc"))
        .ok_or_else(|| BuildError::Deb("the index names no .dsc".into()))?;
    for (name, size, hash) in &rec.files {
        verify(
            &work.path().join(name),
            *size,
            hash,
            "the archive's Sources index",
        )?;
    }
    let dsc = fs_err::read_to_string(work.path().join(&dsc_name))?;
    let listed = parse_dsc_checksums(&dsc);
    if listed.is_empty() {
        return Err(BuildError::Deb(format!(
            "{dsc_name} has no Checksums-Sha256"
        )));
    }
    for (name, size, hash) in &listed {
        verify(&work.path().join(name), *size, hash, &dsc_name)?;
    }
    log(&format!(
        "verified {} files against the Sources index and {dsc_name}; unpacking with dpkg-source",
        rec.files.len()
    ));
    let out = run_bounded(
        Command::new("dpkg-source")
            .args(["-x", &dsc_name, "tree"])
            .current_dir(work.path())
            .env("LC_ALL", "C"),
        QUERY_DEADLINE * 2,
        QUERY_DEADLINE * 2,
        &|_| {},
    )?;
    if !out.success() {
        return Err(BuildError::CommandFailed {
            what: format!("dpkg-source -x {dsc_name}"),
            status: out.status_text(),
            output: last_lines(&out.stderr, 10),
        });
    }
    fs_err::write(work.path().join("complete"), format!("{}\n", rec.version))?;
    // Renamed in whole: a half-unpacked tree is never taken for a complete one.
    let _ = fs_err::remove_dir_all(&base);
    let kept = work.keep();
    fs_err::rename(&kept, &base)?;
    Ok(tree)
}

fn verify(path: &Path, size: u64, hash: &str, against: &str) -> Result<(), BuildError> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let meta = fs_err::metadata(path)
        .map_err(|_| BuildError::Deb(format!("{name}, listed in {against}, was not downloaded")))?;
    if meta.len() != size {
        return Err(BuildError::Deb(format!(
            "{name} is {} bytes, {against} says {size}",
            meta.len()
        )));
    }
    let mut f = fs_err::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    let got = hex::encode(h.finalize());
    if got != hash {
        return Err(BuildError::Deb(format!(
            "{name} has SHA-256 {got}, {against} says {hash}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_src_lines_from_one_line_and_deb822_files() {
        let files = vec![
            (
                "/etc/apt/sources.list".to_string(),
                "# comment\ndeb http://deb.debian.org/debian bookworm main contrib\ndeb-src http://x y z\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror/debian bookworm-updates main # tail\n".to_string(),
            ),
            (
                "/etc/apt/sources.list.d/debian.sources".to_string(),
                "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://off\nSuites: x\nComponents: main\nEnabled: no\n".to_string(),
            ),
            (
                "/etc/apt/sources.list.d/nodesource.sources.disabled-by-farm".to_string(),
                "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n".to_string(),
            ),
        ];
        insta::assert_snapshot!("deb_src_lines", deb_src_lines(&files).join("\n"));
    }

    #[test]
    fn records_and_dsc_checksums() {
        let showsrc = "Package: nginx\nBinary: nginx, nginx-core,\n nginx-common\nVersion: 1.22.1-9+deb12u9\nBuild-Depends: debhelper-compat (= 13),\n libpcre2-dev,\n zlib1g-dev\nChecksums-Sha256:\n 619c59c1a2d4d63c773680ec31b8e45309ebc7f8df7dbf5660d588b9b6d6ec7f 3581 nginx_1.22.1-9+deb12u9.dsc\n 9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31 1073948 nginx_1.22.1.orig.tar.gz\n\n";
        let recs = parse_sources(showsrc);
        insta::assert_debug_snapshot!("sources_record", recs);
        let dsc = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (quilt)\nSource: redis\nChecksums-Sha256:\n aa 3025940 redis_7.0.15.orig.tar.gz\n BB 52200 redis_7.0.15-1~deb12u10.debian.tar.xz\n\n-----BEGIN PGP SIGNATURE-----\n";
        assert_eq!(
            parse_dsc_checksums(dsc),
            vec![
                ("redis_7.0.15.orig.tar.gz".into(), 3025940, "aa".into()),
                (
                    "redis_7.0.15-1~deb12u10.debian.tar.xz".into(),
                    52200,
                    "bb".into()
                ),
            ]
        );
    }

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("1.22.1-9+deb12u9"), "1.22.1");
        assert_eq!(upstream_version("5:7.0.15-1~deb12u10"), "7.0.15");
        assert_eq!(upstream_version("2.0"), "2.0");
    }

    #[test]
    fn a_file_that_does_not_match_is_named_with_both_hashes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.tar.gz");
        fs_err::write(&p, b"abc").unwrap();
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify(&p, 3, good, "x.dsc").unwrap();
        let e = verify(&p, 3, &"0".repeat(64), "x.dsc")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.tar.gz has SHA-256 ba7816bf"), "{e}");
        let e = verify(&p, 4, good, "x.dsc").unwrap_err().to_string();
        assert_eq!(e, "x.tar.gz is 3 bytes, x.dsc says 4");
    }

    #[test]
    fn commands_are_bounded_by_their_deadline() {
        let t = Instant::now();
        let out = run_bounded(
            Command::new("sh").args(["-c", "echo hi; sleep 30"]),
            Duration::from_millis(500),
            Duration::from_secs(10),
            &|_| {},
        )
        .unwrap();
        assert!(out.timed_out && t.elapsed() < Duration::from_secs(5));
        assert_eq!(out.stdout, "hi\n");
    }
}
