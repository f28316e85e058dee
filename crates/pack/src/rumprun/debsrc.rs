//! A Debian package rebuilt from Debian's own source package for Rumprun.
//!
//! The `deb:` artifact (Debian's binary packages, laid out) still decides *what* runs: the
//! command, its arguments, and the files (configuration, mime types, pages) — those files are
//! cooked into the unikernel with Rumprun's `cookfs`, which links them into the program and
//! puts them in the in-memory root file system at boot. The *program* is rebuilt from the
//! package's source ([`bakeoff_build::deb_source::fetch`]) with the package's own build system,
//! driven for the Rumprun target by one small driver per kind of build system:
//!
//! - nginx's own `auto/configure` (no cross mode): `--crossbuild=NetBSD::x86_64`, the package's
//!   paths from `debian/rules`, and a compiler wrapper that, while configure runs, also builds
//!   each test program for this machine so configure can run it (the sizes and answers of
//!   x86-64 are the same); options configure says to drop for a missing library
//!   (`--without-http_rewrite_module` for PCRE) are dropped, and said;
//! - autotools: `./configure --host=x86_64-rumprun-netbsd` with Debian's paths (`--prefix=/usr
//!   --sysconfdir=/etc --localstatedir=/var`), then `make`;
//! - a plain Makefile: `make CC=… AR=… RANLIB=…` with a `uname` that says NetBSD (Makefiles
//!   choose their platform flags from `uname -s`).
//!
//! Per-package knowledge is the table [`ONE_PROCESS`] (how a daemon runs as one process) and
//! [`NGINX_MODULE_DIRECTIVES`]; everything else is the package's own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bakeoff_build::deb_source::{self, SourcePackage};
use bakeoff_build::Artifact;

use super::{RumprunError, Toolchain, TUPLE};
use crate::PackError;

/// How long one step of a source build may take.
const STEP_DEADLINE: Duration = Duration::from_secs(40 * 60);
/// How often a running step says it is still running.
const PROGRESS_EVERY: Duration = Duration::from_secs(20);
/// nginx's configure is retried at most this often with an option it asked to drop.
const MAX_DROPPED_OPTIONS: usize = 6;
/// The most bytes of files cooked into a unikernel (they live in its memory).
const MAX_COOKED_BYTES: u64 = 32 << 20;

/// The kinds of build system bakeoff drives for Rumprun.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BuildSystem {
    /// nginx's `auto/configure`.
    NginxAuto,
    /// An autotools `configure` script (or `configure.ac` with autoreconf).
    Autotools { autoreconf: bool },
    /// A top-level Makefile and no configure.
    Makefile,
}

impl BuildSystem {
    pub fn describe(self) -> &'static str {
        match self {
            BuildSystem::NginxAuto => "nginx's auto/configure",
            BuildSystem::Autotools { .. } => "autotools configure --host",
            BuildSystem::Makefile => "its Makefile with the toolchain's CC",
        }
    }
}

/// Decides the build system from the top-level file names of the source tree and its
/// `Build-Depends`. `Err` is the sentence saying why bakeoff cannot drive it.
pub fn detect_build_system(
    source: &str,
    top: &[String],
    build_depends: &str,
) -> Result<BuildSystem, String> {
    let has = |n: &str| top.iter().any(|t| t == n);
    if let Some(why) = refused_by_build_depends(source, build_depends) {
        return Err(why);
    }
    let unsupported = |what: &str| Err(unsupported_sentence(source, what));
    if has("auto") && has("configure") && top.iter().any(|t| t == "src") && dep_nginx_like(top) {
        return Ok(BuildSystem::NginxAuto);
    }
    if has("configure") {
        return Ok(BuildSystem::Autotools { autoreconf: false });
    }
    if has("configure.ac") || has("configure.in") {
        return Ok(BuildSystem::Autotools { autoreconf: true });
    }
    if has("meson.build") {
        return unsupported("Meson");
    }
    if has("CMakeLists.txt") {
        return unsupported("CMake");
    }
    if has("Makefile") || has("makefile") || has("GNUmakefile") {
        return Ok(BuildSystem::Makefile);
    }
    Err(format!(
        "Debian's source package {source} has no build system bakeoff drives for Rumprun at its top (no configure script, configure.ac or Makefile)"
    ))
}

fn unsupported_sentence(source: &str, what: &str) -> String {
    format!(
        "Debian's source package {source} builds with {what}, which bakeoff does not drive for Rumprun (it drives autotools configure, nginx's auto/configure and plain Makefiles, C only)"
    )
}

/// A language bakeoff cannot build for Rumprun, told by `Build-Depends` alone (so nothing is
/// downloaded for it).
pub fn refused_by_build_depends(source: &str, build_depends: &str) -> Option<String> {
    let deps: Vec<&str> = build_depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .collect();
    let dep = |n: &str| deps.contains(&n);
    if dep("dh-golang") || dep("golang-go") || dep("golang-any") {
        return Some(unsupported_sentence(source, "Go"));
    }
    if dep("dh-cargo") || dep("cargo") || dep("rustc") {
        return Some(unsupported_sentence(source, "Rust (cargo)"));
    }
    None
}

/// nginx's tree: `auto/` beside `configure` and `conf/`.
fn dep_nginx_like(top: &[String]) -> bool {
    top.iter().any(|t| t == "conf")
}

/// The path options of the package's own configure call in `debian/rules` (`--prefix=…`,
/// `--conf-path=…`, `--sysconfdir=…`, `--*-path=…`, …): the rebuilt program then looks for its
/// files where Debian's package put them. Feature options are not taken (they name libraries
/// the Rumprun toolchain does not have).
pub fn path_options(rules: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in rules.split(|c: char| c.is_whitespace() || c == '\\' || c == '"') {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let pathish = key == "--prefix"
            || key.ends_with("-path")
            || matches!(key, "--sysconfdir" | "--localstatedir" | "--runstatedir");
        if key.starts_with("--")
            && pathish
            && !value.is_empty()
            && !value.contains('$')
            && !out.iter().any(|o| o.starts_with(&format!("{key}=")))
        {
            out.push(word.to_string());
        }
    }
    out
}

/// One command of a source build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub program: String,
    pub args: Vec<String>,
    /// Set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// For progress lines: `configure`, `make`.
    pub what: String,
}

/// The build of a source tree, as a plan. `wrapper` is bakeoff's compiler wrapper (see
/// [`cc_wrapper`]), `tools` the directory with the toolchain's binutils and bakeoff's `uname`.
pub fn plan(
    system: BuildSystem,
    wrapper: &str,
    tools: &str,
    paths: &[String],
    dropped: &[String],
    jobs: usize,
) -> Vec<Step> {
    let tool = |t: &str| format!("{tools}/{TUPLE}-{t}");
    let make_vars = vec![
        format!("CC={wrapper}"),
        format!("AR={}", tool("ar")),
        format!("RANLIB={}", tool("ranlib")),
    ];
    let jobs = format!("-j{jobs}");
    match system {
        BuildSystem::NginxAuto => {
            let mut args = vec![
                "--crossbuild=NetBSD::x86_64".to_string(),
                format!("--with-cc={wrapper}"),
                // Warnings of a newer gcc on NetBSD's headers are not errors for this build.
                "--with-cc-opt=-Wno-error".to_string(),
            ];
            args.extend(paths.iter().cloned());
            args.extend(dropped.iter().cloned());
            vec![
                Step {
                    program: "./configure".into(),
                    args,
                    env: vec![("BAKEOFF_RUN_TESTS_HERE".into(), "1".into())],
                    what: "configure".into(),
                },
                Step {
                    program: "make".into(),
                    args: vec![jobs],
                    env: vec![],
                    what: "make".into(),
                },
            ]
        }
        BuildSystem::Autotools { autoreconf } => {
            let mut steps = Vec::new();
            if autoreconf {
                steps.push(Step {
                    program: "autoreconf".into(),
                    args: vec!["-fi".into()],
                    env: vec![],
                    what: "autoreconf".into(),
                });
            }
            let mut args = vec![format!("--host={TUPLE}")];
            let defaults = ["--prefix=/usr", "--sysconfdir=/etc", "--localstatedir=/var"];
            for d in defaults {
                let key = d.split('=').next().unwrap_or(d);
                if !paths.iter().any(|p| p.starts_with(&format!("{key}="))) {
                    args.push(d.to_string());
                }
            }
            args.extend(paths.iter().cloned());
            steps.push(Step {
                program: "./configure".into(),
                args,
                env: vec![("CC".into(), wrapper.to_string())],
                what: "configure".into(),
            });
            let mut margs = vec![jobs];
            margs.extend(make_vars);
            steps.push(Step {
                program: "make".into(),
                args: margs,
                env: vec![],
                what: "make".into(),
            });
            steps
        }
        BuildSystem::Makefile => {
            let mut margs = vec![jobs];
            margs.extend(make_vars);
            vec![Step {
                program: "make".into(),
                args: margs,
                env: vec![],
                what: "make".into(),
            }]
        }
    }
}

/// The compiler wrapper every source build uses: the toolchain's compiler, plus
/// - a link of a program also links [`COMPAT_C`] (weak definitions of GNU functions that
///   Debian's patches use and NetBSD's libc lacks);
/// - while `BAKEOFF_RUN_TESTS_HERE` is set (nginx's configure), each linked test program is
///   also built with this machine's `cc`, so that configure can run it; if that fails, the
///   Rumprun program stays and configure takes the feature as missing.
pub fn cc_wrapper(cc: &Path, compat: &Path, host_cc: &Path) -> String {
    format!(
        r#"#!/bin/sh
# Written by bakeoff for a Rumprun build of a Debian source package.
real='{cc}'
host='{host}'
link=1; out=
prev=
for a in "$@"; do
  case "$a" in -c|-E|-S|-M|-MM) link= ;; esac
  [ "$prev" = "-o" ] && out=$a
  prev=$a
done
if [ -n "$link" ]; then "$real" "$@" '{compat}' || exit $?; else exec "$real" "$@"; fi
if [ -n "$BAKEOFF_RUN_TESTS_HERE" ] && [ -n "$out" ] && [ -f "$out" ]; then
  mv "$out" "$out.rumprun"
  if "$host" "$@" >/dev/null 2>&1; then rm -f "$out.rumprun"; else mv "$out.rumprun" "$out"; fi
fi
exit 0
"#,
        cc = cc.display(),
        host = host_cc.display(),
        compat = compat.display()
    )
}

/// This machine's C compiler (for the test programs nginx's configure runs).
fn host_cc() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("cc"))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/cc"))
}

/// `uname` for Makefiles that pick their platform from it: the target is NetBSD on x86-64.
pub const UNAME: &str = r#"#!/bin/sh
# Written by bakeoff: the build is for Rumprun, NetBSD's libc and rump kernel on x86-64.
case "$1" in
  -m|-p) echo x86_64 ;;
  -r) echo 7.99.34 ;;
  -n) echo rumprun ;;
  *) echo NetBSD ;;
esac
"#;

/// Linked into every program built from a source package:
/// - GNU functions Debian's sources use that NetBSD 7.99's libc (Rumprun's) lacks, weak so that
///   a program's own definition wins: `get_current_dir_name` (Debian's redis patch 0003 replaces
///   getcwd(PATH_MAX) with it) and `llroundl` (redis's HyperLogLog; NetBSD 7's libm has no long
///   double rounding, so this rounds through `long double` arithmetic itself);
/// - a constructor that spends Rumprun's one-time "call to sigprocmask ignored" warning at
///   start-up. NetBSD's amd64 `setjmp` reaches that stub (through pthread_sigmask) with the
///   stack 8 bytes off 16-byte alignment, and the warning's vfprintf stores SSE registers with
///   aligned moves: the first `setjmp` of a program (Lua's error handling, in redis) died of a
///   general protection fault in `__vfprintf_unlocked_l` (seen under gdb on QEMU's stub).
pub const COMPAT_C: &str = r#"/* Written by bakeoff: GNU functions NetBSD 7.99's libc lacks, and a Rumprun workaround. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>
#include <signal.h>
__attribute__((constructor)) static void bakeoff_spend_sigprocmask_warning(void)
{
	sigset_t old;
	sigprocmask(SIG_BLOCK, NULL, &old);
}
__attribute__((weak)) char *get_current_dir_name(void)
{
	char buf[PATH_MAX];
	if (getcwd(buf, sizeof buf) == NULL)
		return NULL;
	return strdup(buf);
}
__attribute__((weak)) long long llroundl(long double x)
{
	long double t = x < 0 ? x - 0.5L : x + 0.5L;
	return (long long)t;
}
"#;

/// nginx directives that need a module the Rumprun build may lack (a library the toolchain does
/// not have): when the module is not in `objs/ngx_modules.c`, lines starting with these are
/// commented out of the configuration. Debian's nginx.conf sets `ssl_protocols` and
/// `ssl_prefer_server_ciphers` (no OpenSSL for Rumprun) and `gzip on` (zlib is there).
pub const NGINX_MODULE_DIRECTIVES: &[(&str, &[&str])] = &[
    ("ngx_http_ssl_module", &["ssl_"]),
    ("ngx_http_gzip_filter_module", &["gzip"]),
    ("ngx_http_rewrite_module", &["rewrite ", "rewrite_log"]),
];

/// How a daemon is made to run as one process, by source package. Only packages that need it.
pub struct OneProcess {
    pub source: &'static str,
    /// Added to the arguments.
    pub args: &'static [&'static str],
    /// What `check` says about it.
    pub says: &'static str,
    /// The configuration file rewritten by [`nginx_one_process`], if any.
    pub nginx_conf: Option<&'static str>,
}

pub const ONE_PROCESS: &[OneProcess] = &[
    OneProcess {
        // nginx forks a master and workers and daemonizes unless told not to.
        source: "nginx",
        args: &["-g", "daemon off; master_process off;"],
        says: "as one process (master_process off; daemon off;)",
        nginx_conf: Some("etc/nginx/nginx.conf"),
    },
    OneProcess {
        // redis forks only to save snapshots in the background (BGSAVE); without `save`
        // points it never does. Its foreground flags are already in the command.
        source: "redis",
        args: &["--save", ""],
        says: "as one process (no background snapshots: --save '')",
        nginx_conf: None,
    },
];

pub fn one_process(source: &str) -> Option<&'static OneProcess> {
    ONE_PROCESS.iter().find(|o| o.source == source)
}

/// nginx.conf for one process: main-context `daemon`, `master_process` and `worker_processes`
/// are commented out (the arguments say `daemon off; master_process off;`), `user` becomes
/// `daemon` (the unikernel's /etc/passwd has root and daemon; one process never switches user,
/// but nginx looks the user up), and directives of modules that were not built are commented
/// out. Returns the text and one note per change.
pub fn nginx_one_process(conf: &str, built_modules: &[String]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut notes = Vec::new();
    let mut depth = 0i32;
    for line in conf.lines() {
        let t = line.trim_start();
        let word = t
            .split(|c: char| c.is_whitespace() || c == ';')
            .next()
            .unwrap_or("");
        let mut replaced = None;
        if depth == 0 && !t.starts_with('#') {
            match word {
                "daemon" | "master_process" | "worker_processes" => {
                    notes.push(format!(
                        "nginx.conf's `{}` is overridden: it runs as one process",
                        t.trim_end()
                    ));
                    replaced = Some(format!("# bakeoff (one process): {t}"));
                }
                "user" => {
                    notes.push(format!(
                        "nginx.conf's `{}` becomes `user daemon;`: the unikernel has only root and daemon",
                        t.trim_end()
                    ));
                    replaced = Some(format!("user daemon; # bakeoff: was {t}"));
                }
                _ => {}
            }
        }
        if replaced.is_none() && !t.starts_with('#') {
            for (module, prefixes) in NGINX_MODULE_DIRECTIVES {
                if !built_modules.iter().any(|m| m == module)
                    && prefixes.iter().any(|p| t.starts_with(p))
                {
                    notes.push(format!(
                        "nginx.conf's `{}` is commented out: {module} was not built for Rumprun",
                        t.split('#').next().unwrap_or(t).trim_end()
                    ));
                    replaced = Some(format!("# bakeoff (no {module}): {t}"));
                }
            }
        }
        let code = t.split('#').next().unwrap_or("");
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        match replaced {
            Some(r) => {
                let indent = &line[..line.len() - t.len()];
                out.push_str(indent);
                out.push_str(&r);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    (out, notes)
}

/// The module names listed in nginx's generated `objs/ngx_modules.c`.
fn nginx_modules(tree: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(tree.join("objs/ngx_modules.c")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

/// The `--without-…` option a failed nginx configure asks to add, if it names one.
pub fn suggested_without(output: &str) -> Option<String> {
    let i = output.find("--without-")?;
    let opt: String = output[i..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    Some(opt)
}

/// The first line of a failed build's output that says what went wrong.
pub fn first_error_line(output: &str) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    let is_error = |l: &str| {
        l.contains("error:")
            || l.contains("undefined reference")
            || l.starts_with("E:")
            || l.contains("*** ")
    };
    lines
        .iter()
        .find(|l| is_error(l) && !l.contains("Werror") && !l.starts_with("make"))
        .or_else(|| lines.iter().find(|l| is_error(l)))
        .or_else(|| lines.iter().rev().find(|l| !l.is_empty()))
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// What the source build made: the program to bake, and notes for the image details.
pub struct Built {
    pub program: PathBuf,
    pub source: SourcePackage,
    pub system: BuildSystem,
    pub notes: Vec<String>,
    pub args: Vec<String>,
}

/// Fetches, builds and cooks: returns the Rumprun program (files linked in) to bake.
pub fn build(
    artifact: &Artifact,
    origin: &bakeoff_build::DebOrigin,
    tc: &Toolchain,
    cache: &bakeoff_build::Cache,
    work: &Path,
    log: &dyn Fn(&str),
) -> Result<Built, PackError> {
    let m = &artifact.manifest;
    let refuse = |reasons: String| RumprunError::Refused {
        name: m.name.clone(),
        reasons,
    };
    let src = deb_source::fetch(&origin.main, &origin.version, cache, log, &|name, deps| {
        refused_by_build_depends(name, deps)
    })
    .map_err(|e| refuse(e.to_string()))?;
    let mut top: Vec<String> = fs_err::read_dir(&src.tree)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    let system = detect_build_system(&src.name, &top, &src.build_depends).map_err(refuse)?;
    let rules = std::fs::read_to_string(src.tree.join("debian/rules")).unwrap_or_default();
    let paths = match system {
        BuildSystem::Makefile => Vec::new(),
        _ => path_options(&rules),
    };
    log(&format!(
        "building Debian's source package {} with the Rumprun toolchain ({})",
        src.label(),
        system.describe()
    ));
    // A fresh copy of the tree per build.
    let tree = work.join("src");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&src.tree)
        .arg(&tree)
        .output()?;
    if !out.status.success() {
        return Err(PackError::Io(std::io::Error::other(format!(
            "copying {} failed",
            src.tree.display()
        ))));
    }
    // bakeoff's tools: the compiler wrapper, its compat object, uname.
    let tools = work.join("bakeoff-tools");
    fs_err::create_dir_all(&tools)?;
    let compat_c = tools.join("bakeoff-compat.c");
    fs_err::write(&compat_c, COMPAT_C)?;
    let compat_o = tools.join("bakeoff-compat.o");
    let out = Command::new(tc.cc())
        .args(["-O2", "-c", "-o"])
        .arg(&compat_o)
        .arg(&compat_c)
        .env("PATH", tc.path_var())
        .output()?;
    if !out.status.success() {
        return Err(RumprunError::CompileFailed {
            what: "bakeoff's compat functions".into(),
            status: super::status_text(&out.status),
            output: super::last_lines(&out, 10),
        }
        .into());
    }
    let wrapper = tools.join("rumprun-cc");
    write_exec(&wrapper, &cc_wrapper(&tc.cc(), &compat_o, &host_cc()))?;
    write_exec(&tools.join("uname"), UNAME)?;
    let path = {
        let mut dirs = vec![tools.clone()];
        dirs.extend(std::env::split_paths(&tc.path_var()));
        std::env::join_paths(dirs).unwrap_or_default()
    };

    let mut dropped: Vec<String> = Vec::new();
    let mut tried: Vec<String> = Vec::new();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    'attempt: loop {
        let steps = plan(
            system,
            &wrapper.display().to_string(),
            &tc.bin.display().to_string(),
            &paths,
            &dropped,
            jobs,
        );
        for step in &steps {
            let line = format!("{} {}", step.program, step.args.join(" "));
            tried.push(line.clone());
            log(&format!("{} of {}: {line}", step.what, src.name));
            let mut cmd = Command::new(&step.program);
            cmd.args(&step.args)
                .current_dir(&tree)
                .env("PATH", &path)
                .env("LC_ALL", "C");
            for (k, v) in &step.env {
                cmd.env(k, v);
            }
            let name = src.name.clone();
            let what = step.what.clone();
            let res = deb_source::run_bounded(&mut cmd, STEP_DEADLINE, PROGRESS_EVERY, &|t| {
                log(&format!(
                    "still running {what} of {name} ({} s)",
                    t.as_secs()
                ))
            })
            .map_err(|e| PackError::Io(std::io::Error::other(e.to_string())))?;
            if res.success() {
                continue;
            }
            let output = format!("{}\n{}", res.stdout, res.stderr);
            if system == BuildSystem::NginxAuto && step.what == "configure" {
                if let Some(opt) = suggested_without(&output) {
                    if !dropped.contains(&opt) && dropped.len() < MAX_DROPPED_OPTIONS {
                        log(&format!(
                            "configure asks for {opt} ({}); trying again with it",
                            first_error_line(&output)
                        ));
                        dropped.push(opt);
                        continue 'attempt;
                    }
                }
            }
            return Err(refuse(format!(
                "Debian's source package {} does not build for Rumprun: {} (exit status {}); tried: {}",
                src.label(),
                first_error_line(&output),
                res.status_text(),
                tried.join("; then ")
            ))
            .into());
        }
        break;
    }
    let mut notes: Vec<String> = dropped
        .iter()
        .map(|d| {
            format!("built {d}: its configure asked for it (a library the Rumprun toolchain lacks)")
        })
        .collect();
    // The program: the one named like the command.
    let program_name = m
        .command
        .first()
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
        .unwrap_or_else(|| m.name.clone());
    let program = find_named(&tree, &program_name)?.ok_or_else(|| RumprunError::NoOutput {
        what: format!(
            "Debian's source package {} (no program named {program_name})",
            src.label()
        ),
    })?;

    // The files: Debian's, from the artifact, with the one-process override.
    let one = one_process(&src.name);
    let fs = work.join("cookfs/root");
    let base = tc
        .bin
        .parent()
        .map(|p| p.join("share/rumprun/rumprunfs_base"))
        .unwrap_or_default();
    let bytes = cook_tree(&artifact.rootfs(), &fs, &base)?;
    if let Some(conf) = one.and_then(|o| o.nginx_conf) {
        let p = fs.join(conf);
        if let Ok(text) = fs_err::read_to_string(&p) {
            let (new, n) = nginx_one_process(&text, &nginx_modules(&tree));
            fs_err::write(&p, new)?;
            notes.extend(n);
        }
    }
    log(&format!(
        "cooking {:.1} KiB of Debian's files into the unikernel (rumprun cookfs)",
        bytes as f64 / 1024.0
    ));
    let fs_o = work.join("cookfs/files.o");
    let out = Command::new(tc.tool("cookfs"))
        .arg("-s")
        .arg("1")
        .arg(&fs_o)
        .arg("root")
        .current_dir(work.join("cookfs"))
        .env("PATH", tc.path_var())
        .output()?;
    if !out.status.success() {
        return Err(RumprunError::CompileFailed {
            what: "the cookfs of Debian's files".into(),
            status: super::status_text(&out.status),
            output: super::last_lines(&out, 10),
        }
        .into());
    }
    // `ld -r`, not the compiler: the compiler would add a second Rumprun note to the program,
    // which rumprun-bake then misreads.
    let linked = work.join(format!("{program_name}.rumprun"));
    let out = Command::new(tc.tool("ld"))
        .arg("-r")
        .arg("-o")
        .arg(&linked)
        .arg(&program)
        .arg(&fs_o)
        .output()?;
    if !out.status.success() {
        return Err(RumprunError::CompileFailed {
            what: "linking Debian's files into the program".into(),
            status: super::status_text(&out.status),
            output: super::last_lines(&out, 10),
        }
        .into());
    }
    let mut args: Vec<String> = m.command.iter().skip(1).cloned().collect();
    args.extend(m.args.iter().cloned());
    if let Some(o) = one {
        // nginx's `-g 'daemon off;'` of the known-daemon table is replaced by the one-process
        // directives (a second `daemon` would be a duplicate directive).
        if o.source == "nginx" {
            args.retain(|a| a != "-g" && a != "daemon off;");
        }
        args.extend(o.args.iter().map(|s| s.to_string()));
    }
    Ok(Built {
        program: linked,
        source: src,
        system,
        notes,
        args,
    })
}

fn write_exec(path: &Path, text: &str) -> Result<(), PackError> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::write(path, text)?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The executable regular file named `name` in the tree (shallowest first).
fn find_named(tree: &Path, name: &str) -> Result<Option<PathBuf>, PackError> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs_err::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                if e.file_name() != "debian" {
                    stack.push(e.path());
                }
            } else if ft.is_file() && e.file_name() == name {
                use std::os::unix::fs::PermissionsExt;
                if e.metadata()?.permissions().mode() & 0o111 != 0 {
                    found.push(e.path());
                }
            }
        }
    }
    found.sort_by_key(|p| p.components().count());
    Ok(found.into_iter().next())
}

/// Copies what the unikernel needs of the artifact's root: every directory and every regular
/// file that is not an ELF file (Linux programs and libraries mean nothing there), except the
/// files Rumprun's own root already has (cookfs cannot replace them); symbolic links to files
/// inside the root are copied as those files, others left out. Returns the bytes copied.
pub fn cook_tree(root: &Path, out: &Path, rumprun_base: &Path) -> Result<u64, PackError> {
    const SKIPPED_DIRS: &[&str] = &["proc", "sys", "dev"];
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        fs_err::create_dir_all(out.join(&rel))?;
        for e in fs_err::read_dir(root.join(&rel))? {
            let e = e?;
            let rel_child = rel.join(e.file_name());
            if rel.as_os_str().is_empty() && SKIPPED_DIRS.iter().any(|d| e.file_name() == *d) {
                continue;
            }
            let meta = fs_err::symlink_metadata(e.path())?;
            let source = if meta.file_type().is_symlink() {
                match resolve_inside(root, &rel_child) {
                    Some(p) if p.is_file() => p,
                    _ => continue,
                }
            } else if meta.is_dir() {
                stack.push(rel_child);
                continue;
            } else if meta.is_file() {
                e.path()
            } else {
                continue;
            };
            if rumprun_base.join(&rel_child).exists() || is_elf(&source) {
                continue;
            }
            total += fs_err::metadata(&source)?.len();
            if total > MAX_COOKED_BYTES {
                return Err(PackError::Io(std::io::Error::other(format!(
                    "the files to put into the unikernel exceed {} MiB (Rumprun keeps them in memory)",
                    MAX_COOKED_BYTES >> 20
                ))));
            }
            fs_err::copy(&source, out.join(&rel_child))?;
        }
    }
    Ok(total)
}

fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Follows a symbolic link (and links on its way) inside `root`; `None` when it leaves it.
fn resolve_inside(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut cur: Vec<std::ffi::OsString> = Vec::new();
    let mut todo: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.to_str() {
            Some(".") | Some("") => continue,
            Some("..") => {
                cur.pop()?;
                continue;
            }
            Some("/") => {
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(part);
        let host: PathBuf = std::iter::once(root.as_os_str().to_owned())
            .chain(cur.iter().cloned())
            .collect();
        if let Ok(target) = std::fs::read_link(&host) {
            hops += 1;
            if hops > 16 {
                return None;
            }
            cur.pop();
            if target.is_absolute() {
                cur.clear();
            }
            for c in target.components().rev() {
                todo.push(c.as_os_str().to_owned());
            }
        }
    }
    Some(
        std::iter::once(root.as_os_str().to_owned())
            .chain(cur)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn build_systems_from_the_tree_and_build_depends() {
        let nginx = names(&["CHANGES", "auto", "conf", "configure", "debian", "src"]);
        let redis = names(&["Makefile", "debian", "deps", "redis.conf", "src"]);
        let auto = names(&["Makefile.am", "configure", "configure.ac", "debian"]);
        let ac = names(&["Makefile.am", "configure.ac", "debian"]);
        let go = names(&["Makefile", "debian", "go.mod"]);
        let cmake = names(&["CMakeLists.txt", "debian"]);
        let got = vec![
            detect_build_system("nginx", &nginx, "debhelper-compat (= 13), libpcre2-dev"),
            detect_build_system("redis", &redis, "debhelper-compat (= 13), liblua5.1-dev"),
            detect_build_system("x", &auto, ""),
            detect_build_system("y", &ac, ""),
            detect_build_system(
                "node-exporter",
                &go,
                "debhelper-compat (= 13), dh-golang, golang-any",
            ),
            detect_build_system("z", &cmake, "cmake"),
            detect_build_system("e", &names(&["debian"]), ""),
        ];
        insta::assert_debug_snapshot!("build_systems", got);
    }

    #[test]
    fn paths_come_from_debian_rules() {
        let rules = "basic_configure_flags := \\\n\t\t\t--prefix=/usr/share/nginx \\\n\t\t\t--conf-path=/etc/nginx/nginx.conf \\\n\t\t\t--error-log-path=stderr \\\n\t\t\t--with-cc-opt=\"$(debian_cflags)\" \\\n\t\t\t--http-client-body-temp-path=/var/lib/nginx/body \\\n\t\t\t--with-http_ssl_module \\\n\t\t\t--prefix=/again\n";
        assert_eq!(
            path_options(rules),
            names(&[
                "--prefix=/usr/share/nginx",
                "--conf-path=/etc/nginx/nginx.conf",
                "--error-log-path=stderr",
                "--http-client-body-temp-path=/var/lib/nginx/body"
            ])
        );
    }

    #[test]
    fn build_plans_per_build_system() {
        let paths = names(&[
            "--prefix=/usr/share/nginx",
            "--conf-path=/etc/nginx/nginx.conf",
        ]);
        let w = "/work/bakeoff-tools/rumprun-cc";
        let t = "/opt/rumprun/bin";
        insta::assert_debug_snapshot!(
            "deb_source_plans",
            (
                plan(
                    BuildSystem::NginxAuto,
                    w,
                    t,
                    &paths,
                    &names(&["--without-http_rewrite_module"]),
                    2
                ),
                plan(
                    BuildSystem::Autotools { autoreconf: true },
                    w,
                    t,
                    &names(&["--sysconfdir=/etc/x"]),
                    &[],
                    2
                ),
                plan(BuildSystem::Makefile, w, t, &[], &[], 2),
            )
        );
    }

    #[test]
    fn nginx_conf_is_made_one_process() {
        let conf = "user www-data;\nworker_processes auto;\npid /run/nginx.pid;\ndaemon on;\nerror_log /var/log/nginx/error.log;\n\nevents {\n\tworker_connections 768;\n}\n\nhttp {\n\tsendfile on;\n\tssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3; # Dropping SSLv3, ref: POODLE\n\tssl_prefer_server_ciphers on;\n\tgzip on;\n\t# gzip_vary on;\n\tserver {\n\t\tlisten 80;\n\t\t# daemon is only a main directive\n\t}\n}\n";
        let modules = names(&["ngx_core_module", "ngx_http_gzip_filter_module"]);
        let (text, notes) = nginx_one_process(conf, &modules);
        insta::assert_snapshot!("nginx_one_process_conf", text);
        insta::assert_debug_snapshot!("nginx_one_process_notes", notes);
    }

    #[test]
    fn configure_advice_and_first_error_lines() {
        let out = "checking for PCRE library ... not found\n\n./configure: error: the HTTP rewrite module requires the PCRE library.\nYou can either disable the module by using --without-http_rewrite_module\noption, or install the PCRE library into the system";
        assert_eq!(
            suggested_without(out).as_deref(),
            Some("--without-http_rewrite_module")
        );
        assert_eq!(
            first_error_line(out),
            "./configure: error: the HTTP rewrite module requires the PCRE library."
        );
        let link = "    LINK redis-server\n/usr/bin/ld: redis-server: in function `rdbSave':\n/tmp/x/src/rdb.c:1437: undefined reference to `get_current_dir_name'\ncollect2: error: ld returned 1 exit status\nmake[1]: *** [Makefile:379: redis-server] Error 1";
        assert_eq!(
            first_error_line(link),
            "/tmp/x/src/rdb.c:1437: undefined reference to `get_current_dir_name'"
        );
    }

    #[test]
    fn the_cooked_tree_has_files_not_programs_nor_rumpruns_own() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let base = t.path().join("base");
        for d in [
            "etc/nginx/sites-available",
            "etc/nginx/sites-enabled",
            "usr/sbin",
            "var/log/nginx",
            "run",
            "dev",
        ] {
            fs_err::create_dir_all(root.join(d)).unwrap();
        }
        fs_err::create_dir_all(base.join("etc")).unwrap();
        fs_err::write(base.join("etc/passwd"), "root").unwrap();
        fs_err::write(root.join("etc/passwd"), "www-data").unwrap();
        fs_err::write(root.join("etc/nginx/sites-available/default"), "server {}").unwrap();
        std::os::unix::fs::symlink(
            "/etc/nginx/sites-available/default",
            root.join("etc/nginx/sites-enabled/default"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/stdout", root.join("var/log/nginx/access.log")).unwrap();
        fs_err::write(root.join("usr/sbin/nginx"), b"\x7fELF....").unwrap();
        let out = t.path().join("out");
        let bytes = cook_tree(&root, &out, &base).unwrap();
        assert_eq!(bytes, 18);
        assert_eq!(
            fs_err::read_to_string(out.join("etc/nginx/sites-enabled/default")).unwrap(),
            "server {}"
        );
        assert!(!out.join("etc/passwd").exists());
        assert!(!out.join("usr/sbin/nginx").exists());
        assert!(!out.join("var/log/nginx/access.log").exists());
        assert!(out.join("run").is_dir() && out.join("var/log/nginx").is_dir());
        assert!(!out.join("dev").exists());
    }
}
