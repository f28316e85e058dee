//! bakeoff's own Rumprun toolchain (`bakeoff toolchain build|show`): Rumprun's `xen` and `hw`
//! platforms built from Rumprun's source by the recipe in `crates/pack/rumprun/build-toolchain.sh`,
//! into `<cache>/rumprun-toolchains/<key>/`, where the key is a digest of the source and the recipe.
//!
//! A build works in `.build-<key>-<pid>/` beside the result and renames only the finished prefix
//! (the recipe installs into the scratch directory and rewrites the paths the toolchain's scripts
//! name): an interrupted build leaves no toolchain behind, and the next build removes what it
//! left (and ends its processes) before it starts.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bakeoff_build::Cache;
use fs_err as fs;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The cache type, for callers that do not depend on bakeoff-build themselves.
pub type CacheRef = Cache;

/// The recipe; its bytes are part of every toolchain's cache key.
pub const RECIPE: &str = include_str!("../rumprun/build-toolchain.sh");
/// Where the source comes from when `--source` is not given.
pub const SOURCE_ENV: &str = "BAKEOFF_RUMPRUN_SOURCE";
/// Cloned (with its pinned submodules) when neither `--source` nor the variable names a source.
pub const UPSTREAM: &str = "https://github.com/rumpkernel/rumprun";
/// Bump when the cache layout changes.
const LAYOUT: &str = "bakeoff-rumprun-toolchain/1";
/// Written last into a finished prefix.
const MANIFEST: &str = "bakeoff-toolchain.json";
/// A source tarball unpacks to at most this much (Rumprun's is 224 MB) and this many entries.
const MAX_UNPACKED: u64 = 4 << 30;
const MAX_ENTRIES: u64 = 200_000;
/// A clone of upstream gets this long.
const CLONE_DEADLINE: Duration = Duration::from_secs(1800);

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error("the Rumprun source {0} does not exist")]
    Missing(PathBuf),
    #[error("{what} is not Rumprun's source: {why}")]
    NotRumprun { what: String, why: String },
    #[error("cannot unpack {path} (sha256 {digest}): {reason}")]
    Unpack {
        path: PathBuf,
        digest: String,
        reason: String,
    },
    #[error("cloning {UPSTREAM} failed ({reason}); without internet, give the source with `--source DIR|TARBALL` or {SOURCE_ENV}")]
    Clone { reason: String },
    #[error("the Rumprun toolchain build failed after {minutes:.1} min (exit status {status}) at: {first_error}\nlast lines of the build:\n{last}\nfull log: {}", log.display())]
    Build {
        minutes: f64,
        status: String,
        first_error: String,
        last: String,
        log: PathBuf,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where the source of a build comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A source tree (rumprun with buildrump.sh and src-netbsd checked out in place).
    Dir(PathBuf),
    /// A tarball of such a tree (gzip or plain tar), e.g. the one CI keeps.
    Tarball(PathBuf),
    /// `git clone --recursive` of upstream (needs internet).
    Upstream,
}

impl Source {
    /// `--source`, else `$BAKEOFF_RUMPRUN_SOURCE`, else upstream.
    pub fn choose(arg: Option<&Path>) -> Source {
        Self::choose_from(arg, std::env::var_os(SOURCE_ENV))
    }

    fn choose_from(arg: Option<&Path>, env: Option<OsString>) -> Source {
        let named = arg
            .map(Path::to_path_buf)
            .or_else(|| env.filter(|e| !e.is_empty()).map(PathBuf::from));
        match named {
            Some(p) if p.is_dir() => Source::Dir(p),
            Some(p) => Source::Tarball(p),
            None => Source::Upstream,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Dir(p) => format!("directory {}", p.display()),
            Source::Tarball(p) => format!("tarball {}", p.display()),
            Source::Upstream => format!("{UPSTREAM} (git clone --recursive)"),
        }
    }
}

/// What a finished toolchain records about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub layout: String,
    /// How the source was given (`tarball /path`, `directory /path`, upstream).
    pub source: String,
    /// sha256 of the tarball, of the tree's files, or of the cloned commits.
    pub source_digest: String,
    pub recipe_digest: String,
    /// `rumprun-bake` configurations it offers.
    pub bakes: Vec<String>,
    pub build_seconds: f64,
    /// Seconds since the epoch when it was finished.
    pub built_at: u64,
}

/// A finished toolchain in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The prefix: `bin/x86_64-rumprun-netbsd-gcc`, `bin/rumprun-bake`, `rumprun-x86_64/`.
    pub prefix: PathBuf,
    pub manifest: Manifest,
}

impl Built {
    pub fn bin(&self) -> PathBuf {
        self.prefix.join("bin")
    }
}

pub fn toolchains_dir(cache: &Cache) -> PathBuf {
    cache.root().join("rumprun-toolchains")
}

/// The finished toolchains in the cache, newest first.
pub fn list_built(cache: &Cache) -> Vec<Built> {
    let mut all: Vec<Built> = std::fs::read_dir(toolchains_dir(cache))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| load(&e.path()))
        .collect();
    all.sort_by_key(|b| std::cmp::Reverse(b.manifest.built_at));
    all
}

/// The toolchain bakeoff uses when nothing else is named: the newest one it built.
pub fn newest_built(cache: &Cache) -> Option<Built> {
    list_built(cache).into_iter().next()
}

fn load(prefix: &Path) -> Option<Built> {
    let text = std::fs::read_to_string(prefix.join(MANIFEST)).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    (manifest.layout == LAYOUT && prefix.join("bin").join(crate::rumprun::CC).is_file()).then(
        || Built {
            prefix: prefix.to_path_buf(),
            manifest,
        },
    )
}

pub fn recipe_digest() -> String {
    hex::encode(sha2::Sha256::digest(RECIPE.as_bytes()))
}

/// The cache key of a toolchain built from a source with this digest by this recipe.
pub fn key(source_digest: &str) -> String {
    let k = sha2::Sha256::digest(format!("{LAYOUT}\n{source_digest}\n{}\n", recipe_digest()));
    hex::encode(k)[..16].to_string()
}

/// Builds the toolchain unless the cache already has one from the same source and recipe.
/// `progress` gets a line at each phase and every 30 s while compiling.
pub fn build(
    cache: &Cache,
    source: &Source,
    jobs: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, ToolchainError> {
    let started = Instant::now();
    match source {
        Source::Dir(p) | Source::Tarball(p) if !p.exists() => {
            return Err(ToolchainError::Missing(p.clone()))
        }
        _ => {}
    }
    cache.create_root()?;
    let dir = toolchains_dir(cache);
    fs::create_dir_all(&dir)?;
    let _lock = lock(&dir.join(".lock"), progress)?;
    sweep_interrupted(&dir, progress);

    let digest = match source {
        Source::Tarball(p) => {
            progress(&format!("hashing {}", p.display()));
            file_digest(p)?
        }
        Source::Dir(p) => {
            progress(&format!("hashing the tree {}", p.display()));
            check_tree(p, &source.describe(), None)?;
            tree_digest(p)?
        }
        Source::Upstream => String::new(), // known once cloned
    };
    if !digest.is_empty() {
        if let Some(b) = load(&dir.join(key(&digest))) {
            progress("already built from this source and recipe");
            return Ok(b);
        }
    }
    let work = dir.join(format!(".build-{}", std::process::id()));
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let result = build_in(cache, source, digest, &work, jobs, started, progress);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn build_in(
    cache: &Cache,
    source: &Source,
    mut digest: String,
    work: &Path,
    jobs: usize,
    started: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, ToolchainError> {
    let src = work.join("src");
    match source {
        Source::Tarball(p) => {
            progress(&format!("unpacking {}", p.display()));
            let root = unpack(p, &work.join("unpacked"), &digest)?;
            check_tree(&root, &source.describe(), Some(&digest))?;
            fs::rename(&root, &src)?;
        }
        Source::Dir(p) => {
            progress(&format!("copying {}", p.display()));
            copy_tree(p, &src)?;
        }
        Source::Upstream => {
            progress(&format!("cloning {UPSTREAM} with its pinned submodules"));
            clone_upstream(&src)?;
            check_tree(&src, &source.describe(), None)?;
            digest = upstream_digest(&src)?;
            if let Some(b) = load(&toolchains_dir(cache).join(key(&digest))) {
                progress("already built from these commits and this recipe");
                return Ok(b);
            }
        }
    }
    let final_dir = toolchains_dir(cache).join(key(&digest));
    let script = work.join("build-toolchain.sh");
    fs::write(&script, RECIPE)?;
    let log_path = work.join("build.log");
    let log = File::create(&log_path)?;
    progress(&format!(
        "building Rumprun's xen and hw platforms with make -j{jobs} (about 25 minutes on 2 cores; progress every 30 s; log {})",
        log_path.display()
    ));
    let mut child = Command::new("sh")
        .arg(&script)
        .arg(&src)
        .arg(work)
        .arg(&final_dir)
        .arg(jobs.to_string())
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    fs::write(work.join("pgid"), child.id().to_string())?;
    let mut reader = LogWatch::new(&log_path);
    let mut last_report = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(500));
        reader.read_new();
        for line in reader.take_phases() {
            progress(&line);
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            progress(&format!(
                "{:.1} min: {} files compiled",
                started.elapsed().as_secs_f64() / 60.0,
                reader.compiled
            ));
        }
    };
    reader.read_new();
    for line in reader.take_phases() {
        progress(&line);
    }
    if !status.success() {
        // Keep the log where the user can read it after the scratch directory is gone.
        let kept = toolchains_dir(cache).join("last-failed-build.log");
        let _ = std::fs::copy(&log_path, &kept);
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(ToolchainError::Build {
            minutes: started.elapsed().as_secs_f64() / 60.0,
            status: status
                .code()
                .map_or_else(|| "killed".to_string(), |c| c.to_string()),
            first_error: first_error(&text),
            last: last_lines(&text, 8),
            log: kept,
        });
    }
    let dest = work.join("dest");
    let manifest = Manifest {
        layout: LAYOUT.to_string(),
        source: source.describe(),
        source_digest: digest,
        recipe_digest: recipe_digest(),
        bakes: ["hw_virtio", "xen_pv"]
            .into_iter()
            .zip(["hw", "xen"])
            .filter(|(_, p)| {
                dest.join("rumprun-x86_64/lib")
                    .join(format!("rumprun-{p}"))
                    .is_dir()
            })
            .map(|(b, _)| b.to_string())
            .collect(),
        build_seconds: started.elapsed().as_secs_f64(),
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    fs::write(
        dest.join(MANIFEST),
        serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?,
    )?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?; // a leftover without a manifest
    }
    fs::rename(&dest, &final_dir)?;
    progress(&format!(
        "toolchain built in {:.1} min: {}",
        manifest.build_seconds / 60.0,
        final_dir.display()
    ));
    load(&final_dir).ok_or_else(|| {
        ToolchainError::Io(std::io::Error::other(format!(
            "the finished toolchain in {} cannot be read back",
            final_dir.display()
        )))
    })
}

/// An exclusive lock on `path` for the life of the returned file (one build at a time).
fn lock(path: &Path, progress: &mut dyn FnMut(&str)) -> Result<File, ToolchainError> {
    use std::os::fd::AsRawFd;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        progress("waiting for another toolchain build to finish");
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(f)
}

/// Removes what interrupted builds left (the lock is held, so no build is running) and ends
/// their processes: a killed `bakeoff` leaves the recipe's make running in its process group.
fn sweep_interrupted(dir: &Path, progress: &mut dyn FnMut(&str)) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(".build-") {
            continue;
        }
        let path = e.path();
        if let Some(pgid) = std::fs::read_to_string(path.join("pgid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let leader = std::fs::read(format!("/proc/{pgid}/cmdline")).unwrap_or_default();
            let script = path.join("build-toolchain.sh");
            if pgid > 1 && String::from_utf8_lossy(&leader).contains(&*script.to_string_lossy()) {
                progress(&format!(
                    "ending the processes of an interrupted build (process group {pgid})"
                ));
                // SAFETY: a signal to the process group this module started, identified above.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        progress(&format!(
            "removing an interrupted build: {}",
            path.display()
        ));
        let _ = std::fs::remove_dir_all(&path);
    }
}

fn check_tree(root: &Path, what: &str, digest: Option<&str>) -> Result<(), ToolchainError> {
    let expected = ["build-rr.sh", "buildrump.sh/buildrump.sh", "src-netbsd/sys"];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|p| !root.join(p).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let what = match digest {
        Some(d) => format!("{what} (sha256 {d})"),
        None => what.to_string(),
    };
    Err(ToolchainError::NotRumprun {
        what,
        why: format!(
            "it has no {} (a tree as `git clone --recursive {UPSTREAM}` gives was expected)",
            missing.join(", ")
        ),
    })
}

fn file_digest(path: &Path) -> Result<String, ToolchainError> {
    let mut f = fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// sha256 over every file's relative path, mode and contents, and every symlink's target, in
/// sorted order (Rumprun's tree: 25,000 files, 224 MB).
fn tree_digest(root: &Path) -> Result<String, ToolchainError> {
    let mut h = sha2::Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(root.join(&rel))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for name in entries.into_iter().rev() {
            let rel = rel.join(&name);
            if rel.as_os_str() == ".git" || name == ".git" {
                continue;
            }
            let path = root.join(&rel);
            let meta = std::fs::symlink_metadata(&path)?;
            use std::os::unix::fs::PermissionsExt;
            h.update(rel.as_os_str().as_encoded_bytes());
            h.update([0]);
            if meta.is_dir() {
                stack.push(rel);
            } else if meta.file_type().is_symlink() {
                h.update(std::fs::read_link(&path)?.as_os_str().as_encoded_bytes());
            } else if meta.is_file() {
                h.update((meta.permissions().mode() & 0o111 != 0).to_string());
                std::io::copy(&mut fs::File::open(&path)?, &mut h)?;
            }
            h.update([0]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Unpacks a (gzipped) tarball into `into` with bounds on size and entries, and returns the
/// tree's root: `into` itself or its one top-level directory.
fn unpack(tarball: &Path, into: &Path, digest: &str) -> Result<PathBuf, ToolchainError> {
    let err = |reason: String| ToolchainError::Unpack {
        path: tarball.to_path_buf(),
        digest: digest.to_string(),
        reason,
    };
    let mut f = fs::File::open(tarball)?;
    let mut magic = [0u8; 2];
    let gz = f.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    f.seek(SeekFrom::Start(0))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    fs::create_dir_all(into)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    let (mut total, mut count) = (0u64, 0u64);
    for entry in archive
        .entries()
        .map_err(|e| err(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| err(e.to_string()))?;
        count += 1;
        total += entry.header().size().unwrap_or(0);
        if count > MAX_ENTRIES || total > MAX_UNPACKED {
            return Err(err(format!(
                "it holds more than {MAX_ENTRIES} entries or {} GiB, far more than Rumprun's source",
                MAX_UNPACKED >> 30
            )));
        }
        // unpack_in refuses entries that would land outside `into` (`..`, absolute paths).
        let inside = entry.unpack_in(into).map_err(|e| {
            err(format!(
                "{}: {e}",
                entry.path().unwrap_or_default().display()
            ))
        })?;
        if !inside {
            return Err(err(format!(
                "the entry {} points outside the archive",
                entry.path().unwrap_or_default().display()
            )));
        }
    }
    let tops: Vec<PathBuf> = std::fs::read_dir(into)?
        .flatten()
        .map(|e| e.path())
        .collect();
    Ok(match tops.as_slice() {
        [one] if one.is_dir() && !into.join("build-rr.sh").exists() => one.clone(),
        _ => into.to_path_buf(),
    })
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), ToolchainError> {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "copying {} failed: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .into());
    }
    Ok(())
}

fn clone_upstream(into: &Path) -> Result<(), ToolchainError> {
    let mut child = Command::new("git")
        .args(["clone", "--quiet", "--recursive", UPSTREAM])
        .arg(into)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ToolchainError::Clone {
            reason: format!("cannot run git: {e}"),
        })?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > CLONE_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ToolchainError::Clone {
                reason: format!("no result within {} min", CLONE_DEADLINE.as_secs() / 60),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.by_ref().take(64 << 10).read_to_string(&mut stderr);
        }
        let reason = stderr
            .lines()
            .find(|l| l.starts_with("fatal:"))
            .unwrap_or_else(|| stderr.lines().next().unwrap_or("git exited with an error"))
            .trim()
            .to_string();
        return Err(ToolchainError::Clone { reason });
    }
    Ok(())
}

/// The commits of a clone: rumprun's and its submodules'.
fn upstream_digest(src: &Path) -> Result<String, ToolchainError> {
    let out = Command::new("git")
        .args(["submodule", "status", "--recursive"])
        .current_dir(src)
        .output()?;
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(src)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&head.stdout),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(hex::encode(sha2::Sha256::digest(text.as_bytes())))
}

/// Follows the build log: counts compiled files and passes on the recipe's own phase lines.
struct LogWatch {
    path: PathBuf,
    offset: u64,
    partial: String,
    compiled: u64,
    phases: Vec<String>,
}

impl LogWatch {
    fn new(path: &Path) -> LogWatch {
        LogWatch {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
            compiled: 0,
            phases: Vec::new(),
        }
    }

    fn read_new(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.take(8 << 20).read_to_end(&mut buf) {
            self.offset += n as u64;
        }
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let complete = match self.partial.rfind('\n') {
            Some(i) => {
                let rest = self.partial.split_off(i + 1);
                std::mem::replace(&mut self.partial, rest)
            }
            None => return,
        };
        for line in complete.lines() {
            let l = line.trim_start();
            if l.starts_with("#   compile") || l.starts_with("#  compile") {
                self.compiled += 1;
            } else if let Some(p) = line.strip_prefix("recipe: ") {
                self.phases.push(p.to_string());
            }
        }
    }

    fn take_phases(&mut self) -> Vec<String> {
        std::mem::take(&mut self.phases)
    }
}

/// The first line of a failed build that says what went wrong.
fn first_error(log: &str) -> String {
    let is_error = |l: &str| {
        l.contains("error:")
            || l.starts_with(">> ERROR")
            || l.starts_with("recipe: ")
                && !l.starts_with("recipe: building")
                && !l.starts_with("recipe: relocating")
            || l.contains("*** [")
            || l.contains("Error ")
    };
    let lines: Vec<&str> = log.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if is_error(l) {
            // build-rr.sh's die() prints ">> ERROR:" and the reason on the next line.
            if l.trim() == ">> ERROR:" {
                if let Some(next) = lines.get(i + 1) {
                    return next.trim_start_matches(">>").trim().to_string();
                }
            }
            return l.trim().to_string();
        }
    }
    lines.last().map_or_else(
        || "(the build printed nothing)".to_string(),
        |l| l.trim().to_string(),
    )
}

fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_the_flag_then_the_variable_then_upstream() {
        let d = tempfile::tempdir().unwrap();
        let tar = d.path().join("r.tar.gz");
        assert_eq!(
            Source::choose_from(Some(d.path()), Some("/x".into())),
            Source::Dir(d.path().to_path_buf())
        );
        assert_eq!(
            Source::choose_from(None, Some(tar.clone().into_os_string())),
            Source::Tarball(tar)
        );
        assert_eq!(Source::choose_from(None, Some("".into())), Source::Upstream);
        assert_eq!(Source::choose_from(None, None), Source::Upstream);
    }

    #[test]
    fn key_follows_source_and_recipe() {
        assert_eq!(key("a"), key("a"));
        assert_ne!(key("a"), key("b"));
        assert_eq!(key("a").len(), 16);
    }

    #[test]
    fn a_tree_that_is_not_rumprun_is_named_with_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let e = check_tree(d.path(), "directory /x", Some("abc")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "directory /x (sha256 abc) is not Rumprun's source: it has no build-rr.sh, \
             buildrump.sh/buildrump.sh, src-netbsd/sys (a tree as `git clone --recursive \
             https://github.com/rumpkernel/rumprun` gives was expected)"
        );
    }

    #[test]
    fn the_first_error_is_the_compilers_or_the_scripts() {
        let log = "cc -c a.c\nfoo.c:3:1: error: unknown type name 'x'\nmake: *** [a] Error 1\n";
        assert_eq!(first_error(log), "foo.c:3:1: error: unknown type name 'x'");
        let log = "probe\n>> ERROR:\n>> Xen headers not found\n";
        assert_eq!(first_error(log), "Xen headers not found");
        let log = "recipe: building the xen platform\nrecipe: the build finished without bin/rumprun-bake\n";
        assert_eq!(
            first_error(log),
            "recipe: the build finished without bin/rumprun-bake"
        );
    }

    #[test]
    fn unpack_refuses_what_is_not_a_tarball_and_finds_the_top_directory() {
        let d = tempfile::tempdir().unwrap();
        let junk = d.path().join("junk.tar.gz");
        std::fs::write(&junk, [0x1f, 0x8b, 1, 2, 3]).unwrap();
        let e = unpack(&junk, &d.path().join("u"), "dd").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot unpack {} (sha256 dd):", junk.display())),
            "{e}"
        );

        let tree = d.path().join("t/rumprun");
        std::fs::create_dir_all(tree.join("buildrump.sh")).unwrap();
        std::fs::create_dir_all(tree.join("src-netbsd/sys")).unwrap();
        std::fs::write(tree.join("build-rr.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(tree.join("buildrump.sh/buildrump.sh"), "").unwrap();
        let tarball = d.path().join("r.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        b.append_dir_all("rumprun", &tree).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let root = unpack(&tarball, &d.path().join("u2"), "dd").unwrap();
        assert_eq!(root, d.path().join("u2/rumprun"));
        check_tree(&root, "t", None).unwrap();
        // The same tree given as a directory hashes the same however often it is read.
        assert_eq!(tree_digest(&tree).unwrap(), tree_digest(&root).unwrap());
    }
}
