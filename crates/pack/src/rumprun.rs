//! The `rumprun` target: the app rebuilt from its C sources with a Rumprun toolchain
//! (`x86_64-rumprun-netbsd-gcc`) and baked into a unikernel with `rumprun-bake`: `hw_virtio`
//! for QEMU/KVM (role "kernel") and, when the toolchain was built for Xen too, `xen_pv` (role
//! "xen_kernel").
//!
//! How a run is configured is not in the image: Rumprun reads JSON at boot (network, env,
//! hostname, argv; see Rumprun's doc/config.md), from the kernel command line on QEMU and from
//! xenstore on Xen. `bakeoff_launch::rumprun::RumprunConfig` renders it.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bakeoff_build::Artifact;
use bakeoff_detect::Source;
use bakeoff_spec::{AppSpec, Platform, Target};

use bakeoff_launch::RumprunBake;

use crate::{cached_image, sha256_hex, Image, ImageDetails, PackContext, PackError, Packager};

pub mod debsrc;
pub use debsrc::{one_process, OneProcess};

/// The GNU tuple of the x86-64 Rumprun toolchain.
pub const TUPLE: &str = "x86_64-rumprun-netbsd";
pub const CC: &str = "x86_64-rumprun-netbsd-gcc";
pub const BAKE: &str = "rumprun-bake";
/// The environment variable naming a toolchain directory (its `bin/`, or the directory holding it).
pub const TOOLCHAIN_ENV: &str = "BAKEOFF_RUMPRUN_TOOLCHAIN";
/// Bump when the layout of Rumprun images changes.
const PACKER_VERSION: &str = "bakeoff-rumprun/3";

/// How to get a toolchain, said whenever none is found.
pub const HOW_TO_GET: &str =
    "build one with `bakeoff toolchain build` (from Rumprun's upstream source, \
or `--source DIR|TARBALL` without internet; about 25 minutes, once per machine), or name one with \
BAKEOFF_RUMPRUN_TOOLCHAIN, bakeoff.toml's [rumprun] toolchain or PATH";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RumprunError {
    #[error("no Rumprun toolchain found (bakeoff has not built one, and {CC} and {BAKE} are not on PATH); {HOW_TO_GET}")]
    NoToolchain,
    #[error("the Rumprun toolchain named by {origin} ({path}) has no {missing}; {HOW_TO_GET}")]
    BadToolchain {
        origin: String,
        path: PathBuf,
        missing: String,
    },
    #[error("{name} cannot be built for Rumprun: {reasons}")]
    Refused { name: String, reasons: String },
    #[error(
        "compiling {what} with the Rumprun toolchain failed (exit status {status}):\n{output}"
    )]
    CompileFailed {
        what: String,
        status: String,
        output: String,
    },
    #[error("{what} produced no Rumprun executable; name it in bakeoff.toml under [build] output")]
    NoOutput { what: String },
    #[error("{what} produced several executables ({found}); name the app's in bakeoff.toml under [build] output")]
    SeveralOutputs { what: String, found: String },
    #[error("the Rumprun toolchain in {} has no hw platform libraries, so it cannot bake hw_virtio; build it with `./build-rr.sh hw`", bin.display())]
    NoHwPlatform { bin: PathBuf },
    #[error("`rumprun-bake {config}` failed for {name} (exit status {status}); the linker said:\n{output}")]
    BakeFailed {
        name: String,
        config: String,
        status: String,
        output: String,
    },
}

/// One `rumprun-bake` board configuration bakeoff uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BakeConfig {
    /// QEMU/KVM with virtio devices; the image's "kernel".
    HwVirtio,
    /// Paravirtualized Xen; the image's "xen_kernel".
    XenPv,
}

impl BakeConfig {
    pub fn name(self) -> &'static str {
        match self {
            BakeConfig::HwVirtio => "hw_virtio",
            BakeConfig::XenPv => "xen_pv",
        }
    }
    pub fn role(self) -> &'static str {
        match self {
            BakeConfig::HwVirtio => "kernel",
            BakeConfig::XenPv => "xen_kernel",
        }
    }
    /// The Rumprun platform whose libraries the bake links (`rumprun-<arch>/lib/rumprun-<platform>`).
    pub fn platform(self) -> &'static str {
        match self {
            BakeConfig::HwVirtio => "hw",
            BakeConfig::XenPv => "xen",
        }
    }
}

/// A Rumprun toolchain found on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct Toolchain {
    /// The directory holding `x86_64-rumprun-netbsd-gcc` and `rumprun-bake`.
    pub bin: PathBuf,
    /// Where it was found ("PATH", "BAKEOFF_RUMPRUN_TOOLCHAIN", "bakeoff.toml").
    pub origin: String,
    /// The bake configurations it has libraries for, `hw_virtio` first.
    pub configs: Vec<BakeConfig>,
    /// A hash of the tools and libraries, so images are rebuilt when the toolchain changes.
    pub identity: String,
}

impl Toolchain {
    pub fn cc(&self) -> PathBuf {
        self.bin.join(CC)
    }
    pub fn bake(&self) -> PathBuf {
        self.bin.join(BAKE)
    }
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(format!("{TUPLE}-{name}"))
    }
    /// `PATH` with the toolchain's bin first (rumprun-bake and the compiler wrapper call siblings).
    pub fn path_var(&self) -> OsString {
        let mut dirs = vec![self.bin.clone()];
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(dirs).unwrap_or_default()
    }
}

/// The bin directory a user named: the directory itself or its `bin/`.
fn bin_of(dir: &Path) -> PathBuf {
    if dir.join(CC).is_file() || !dir.join("bin").join(CC).is_file() {
        dir.to_path_buf()
    } else {
        dir.join("bin")
    }
}

/// Locates the toolchain: `BAKEOFF_RUMPRUN_TOOLCHAIN`, else bakeoff.toml's `[rumprun] toolchain`
/// (`configured`, relative to `app_dir`), else PATH, else the newest one `bakeoff toolchain
/// build` made in the cache.
pub fn find_toolchain(
    configured: Option<&Path>,
    app_dir: Option<&Path>,
) -> Result<Toolchain, RumprunError> {
    locate(
        std::env::var_os(TOOLCHAIN_ENV),
        configured,
        app_dir,
        std::env::var_os("PATH"),
        crate::toolchain::newest_built(&bakeoff_build::Cache::from_env()).map(|b| b.bin()),
    )
}

fn locate(
    env: Option<OsString>,
    configured: Option<&Path>,
    app_dir: Option<&Path>,
    path: Option<OsString>,
    built: Option<PathBuf>,
) -> Result<Toolchain, RumprunError> {
    let named = match (env.filter(|e| !e.is_empty()), configured) {
        (Some(e), _) => Some((TOOLCHAIN_ENV.to_string(), PathBuf::from(e))),
        (None, Some(c)) => {
            let c = match app_dir {
                Some(d) if c.is_relative() => d.join(c),
                _ => c.to_path_buf(),
            };
            Some(("bakeoff.toml [rumprun] toolchain".to_string(), c))
        }
        (None, None) => None,
    };
    let (origin, bin) = match named {
        Some((origin, dir)) => {
            let bin = bin_of(&dir);
            for tool in [CC, BAKE] {
                if !bin.join(tool).is_file() {
                    return Err(RumprunError::BadToolchain {
                        origin,
                        path: dir,
                        missing: tool.to_string(),
                    });
                }
            }
            (origin, bin)
        }
        None => {
            let bin = path
                .as_ref()
                .and_then(|p| {
                    std::env::split_paths(p)
                        .find(|d| d.join(CC).is_file() && d.join(BAKE).is_file())
                })
                .map(|bin| ("PATH".to_string(), bin))
                .or_else(|| {
                    built.map(|bin| {
                        (
                            "bakeoff's cache (`bakeoff toolchain build`)".to_string(),
                            bin,
                        )
                    })
                })
                .ok_or(RumprunError::NoToolchain)?;
            bin
        }
    };
    let bin = std::fs::canonicalize(&bin).unwrap_or(bin);
    let configs = [BakeConfig::HwVirtio, BakeConfig::XenPv]
        .into_iter()
        .filter(|c| !platform_libs(&bin, c.platform()).is_empty())
        .collect();
    let identity = identity(&bin);
    Ok(Toolchain {
        bin,
        origin,
        configs,
        identity,
    })
}

/// The library directories of one Rumprun platform: `<prefix>/rumprun-<arch>/lib/rumprun-<platform>`.
fn platform_libs(bin: &Path, platform: &str) -> Vec<PathBuf> {
    let Some(prefix) = bin.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(prefix) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rumprun-"))
        .map(|e| e.path().join("lib").join(format!("rumprun-{platform}")))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Hash of the compiler wrapper, rumprun-bake and the names, sizes and times of the platform
/// libraries: cheap, and changes whenever the toolchain is rebuilt.
fn identity(bin: &Path) -> String {
    let mut text = format!("{}\n", bin.display());
    for tool in [CC, BAKE] {
        let data = std::fs::read(bin.join(tool)).unwrap_or_default();
        text.push_str(&format!("{tool} {}\n", sha256_hex(&data)));
    }
    for platform in ["hw", "xen"] {
        for dir in platform_libs(bin, platform) {
            let mut files: Vec<(String, u64, i64)> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    use std::os::unix::fs::MetadataExt;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        m.len(),
                        m.mtime(),
                    ))
                })
                .collect();
            files.sort();
            for (name, len, mtime) in files {
                text.push_str(&format!("{} {name} {len} {mtime}\n", dir.display()));
            }
        }
    }
    sha256_hex(text.as_bytes())
}

/// One command of the cross build, decided before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub program: String,
    pub args: Vec<String>,
    /// Relative to the work directory.
    pub cwd: PathBuf,
    /// Set on top of the inherited environment (PATH is always the toolchain's bin first).
    pub env: Vec<(String, String)>,
    /// What the step builds, for messages.
    pub what: String,
}

/// Where the built program is found after the steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A known path, relative to the work directory.
    Path(PathBuf),
    /// The one new executable under this directory (relative to the work directory), or
    /// `bakeoff.toml [build] output` when given.
    NewExecutable {
        dir: PathBuf,
        named: Option<PathBuf>,
    },
}

/// The cross build of an app's sources as a pure plan. `cc` is the compiler wrapper's path;
/// `has_configure` tells whether the source directory has an autotools `configure` script.
/// Sources are copied into `src/` of the work directory first (see [`Plan::copy_from`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub copy_from: Option<PathBuf>,
    pub steps: Vec<Step>,
    pub output: Output,
}

pub fn build_plan(
    name: &str,
    source: &Source,
    cc: &str,
    has_configure: bool,
) -> Result<Plan, RumprunError> {
    let refuse = |why: &str| RumprunError::Refused {
        name: name.to_string(),
        reasons: why.to_string(),
    };
    let cc_env = || vec![("CC".to_string(), cc.to_string())];
    match source {
        Source::CFile { file } => Ok(Plan {
            copy_from: None,
            steps: vec![Step {
                program: cc.to_string(),
                args: vec!["-O2".into(), "-o".into(), "app.rumprun".into(), file.display().to_string()],
                cwd: PathBuf::from("."),
                env: Vec::new(),
                what: file.display().to_string(),
            }],
            output: Output::Path(PathBuf::from("app.rumprun")),
        }),
        Source::Make { dir, output } => {
            let what = dir.display().to_string();
            let mut steps = Vec::new();
            if has_configure {
                steps.push(Step {
                    program: "./configure".into(),
                    args: vec![format!("--host={TUPLE}")],
                    cwd: PathBuf::from("src"),
                    env: cc_env(),
                    what: what.clone(),
                });
            }
            steps.push(Step {
                program: "make".into(),
                args: vec![format!("CC={cc}")],
                cwd: PathBuf::from("src"),
                env: cc_env(),
                what,
            });
            Ok(Plan {
                copy_from: Some(dir.clone()),
                steps,
                output: Output::NewExecutable { dir: PathBuf::from("src"), named: output.clone() },
            })
        }
        Source::Custom { dir, command, output } => Ok(Plan {
            copy_from: Some(dir.clone()),
            steps: vec![Step {
                program: "sh".into(),
                args: vec!["-c".into(), command.clone()],
                cwd: PathBuf::from("src"),
                env: vec![("CC".into(), cc.to_string()), ("RUMPRUN_HOST".into(), TUPLE.into())],
                what: format!("{} (`{command}`)", dir.display()),
            }],
            output: Output::NewExecutable { dir: PathBuf::from("src"), named: output.clone() },
        }),
        Source::Cargo { .. } => Err(refuse(
            "bakeoff builds Rust apps for Linux only; Rumprun needs a Rust toolchain for x86_64-rumprun-netbsd, which bakeoff does not drive",
        )),
        Source::Elf { .. } => Err(refuse(
            "a prebuilt binary cannot run on Rumprun: it must be rebuilt from source with the Rumprun toolchain",
        )),
        Source::Image { .. } => Err(refuse(
            "an OCI image holds prebuilt Linux binaries; Rumprun needs the program rebuilt from source with the Rumprun toolchain",
        )),
        // Rebuilt from Debian's source package by `debsrc`, not from a plan of this kind.
        Source::Deb { .. } => Err(refuse(
            "a Debian package is rebuilt from its source package, not from a source directory",
        )),
        Source::Python { .. } | Source::Node { .. } => Err(refuse(
            "an interpreted app cannot run on Rumprun: its interpreter would have to be rebuilt for the unikernel, and the app's native modules with it",
        )),
    }
}

/// The `rumprun-bake` argv (program first) for one configuration.
pub fn bake_argv(bake: &Path, config: BakeConfig, out: &Path, input: &Path) -> Vec<String> {
    vec![
        bake.display().to_string(),
        config.name().into(),
        out.display().to_string(),
        input.display().to_string(),
    ]
}

pub struct RumprunPackager;

impl Packager for RumprunPackager {
    fn target(&self) -> Target {
        Target::Rumprun
    }

    fn pack(&self, artifact: &Artifact, ctx: &PackContext) -> Result<Image, PackError> {
        let m = &artifact.manifest;
        refuse_by_check(artifact)?;
        let app_dir = app_dir(&m.input, &m.source);
        let configured = app_dir
            .as_deref()
            .and_then(|d| AppSpec::load_from_dir(d).ok().flatten())
            .and_then(|s| s.rumprun)
            .and_then(|r| r.toolchain);
        let tc = find_toolchain(configured.as_deref(), app_dir.as_deref())?;
        let key = sha256_hex(format!("{PACKER_VERSION}|{}|{}", m.id, tc.identity).as_bytes());
        let final_dir = ctx.cache.images().join("rumprun").join(&key[..32]);
        cached_image(ctx.cache, &final_dir, |dir| {
            (ctx.log)(&format!(
                "building {} with the Rumprun toolchain in {}",
                m.name,
                tc.bin.display()
            ));
            write_image(artifact, &tc, ctx, dir)
        })
    }
}

/// The directory that may hold the app's bakeoff.toml.
fn app_dir(input: &str, source: &Source) -> Option<PathBuf> {
    let p = Path::new(input);
    if p.is_dir() {
        return Some(p.to_path_buf());
    }
    match source {
        Source::Make { dir, .. } | Source::Custom { dir, .. } | Source::Cargo { dir } => {
            Some(dir.clone())
        }
        _ => None,
    }
}

/// The Rumprun verdict of a `deb:` artifact: rebuilt from Debian's source package (named with
/// the binary's upstream version, which the source package shares), as one process where
/// [`ONE_PROCESS`](debsrc::ONE_PROCESS) knows how. `None` for other artifacts.
pub fn deb_verdict(
    artifact: &Artifact,
    info: &bakeoff_elf::ElfInfo,
) -> Option<bakeoff_elf::Verdict> {
    if !matches!(artifact.manifest.source, Source::Deb { .. }) {
        return None;
    }
    let origin = bakeoff_build::built_from(artifact)?;
    let rebuilt = format!(
        "Debian's source package {} {}",
        origin.source,
        bakeoff_build::deb_source::upstream_version(&origin.version)
    );
    let one = one_process(&origin.source);
    let mut verdict = bakeoff_elf::rumprun_rebuilt(info, &rebuilt, one.map(|o| o.says));
    // What the one-process override changes in the package's own configuration (the modules
    // are only known after the build, so their lines are said then).
    if let Some(conf) = one.and_then(|o| o.nginx_conf) {
        if verdict.runnable {
            let all: Vec<String> = debsrc::NGINX_MODULE_DIRECTIVES
                .iter()
                .map(|(m, _)| m.to_string())
                .collect();
            if let Ok(text) = std::fs::read_to_string(artifact.rootfs().join(conf)) {
                verdict
                    .reasons
                    .extend(debsrc::nginx_one_process(&text, &all).1);
            }
        }
    }
    Some(verdict)
}

/// Refuses what the platform check refuses (fork, exec, a prebuilt binary), with its reasons.
fn refuse_by_check(artifact: &Artifact) -> Result<(), RumprunError> {
    let m = &artifact.manifest;
    if let Source::Deb { .. } = m.source {
        let binary = artifact.rootfs().join(m.binary.trim_start_matches('/'));
        let info = bakeoff_elf::inspect(&binary).ok();
        return match info.and_then(|i| deb_verdict(artifact, &i)) {
            Some(v) if !v.runnable => Err(RumprunError::Refused {
                name: m.name.clone(),
                reasons: v.reasons.join("; "),
            }),
            _ => Ok(()),
        };
    }
    if !m.source.from_source() {
        // The plan says why in the words of the check.
        build_plan(&m.name, &m.source, CC, false)?;
    }
    let binary = artifact.rootfs().join(m.binary.trim_start_matches('/'));
    let Ok(info) = bakeoff_elf::inspect(&binary) else {
        return Ok(());
    };
    let verdicts = bakeoff_elf::check(&info, m.source.origin());
    match verdicts
        .into_iter()
        .find(|v| v.platform == Platform::Rumprun)
    {
        Some(v) if !v.runnable => Err(RumprunError::Refused {
            name: m.name.clone(),
            reasons: v.reasons.join("; "),
        }),
        _ => Ok(()),
    }
}

fn run_step(
    step: &Step,
    work: &Path,
    tc: &Toolchain,
    log: &dyn Fn(&str),
) -> Result<(), RumprunError> {
    log(&format!("running {} for {}", step.program, step.what));
    let cwd = work.join(&step.cwd);
    let mut cmd = Command::new(&step.program);
    cmd.args(&step.args)
        .current_dir(&cwd)
        .env("PATH", tc.path_var())
        .envs(step.env.iter().map(|(k, v)| (k, v)));
    let failed = |status: String, output: String| RumprunError::CompileFailed {
        what: step.what.clone(),
        status,
        output,
    };
    let out = cmd
        .output()
        .map_err(|e| failed("none".into(), format!("cannot start {}: {e}", step.program)))?;
    if !out.status.success() {
        return Err(failed(status_text(&out.status), last_lines(&out, 40)));
    }
    Ok(())
}

fn status_text(s: &std::process::ExitStatus) -> String {
    s.code()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "killed".into())
}

/// The command's error output (or its standard output when that is empty), last `n` lines.
fn last_lines(out: &std::process::Output, n: usize) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn executables(dir: &Path) -> Result<Vec<PathBuf>, PackError> {
    Ok(bakeoff_build::executables(dir)?)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), PackError> {
    let meta = fs_err::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs_err::read_link(src)?, dst)?;
    } else if meta.is_dir() {
        fs_err::create_dir_all(dst)?;
        for e in fs_err::read_dir(src)? {
            let e = e?;
            if e.file_name() == ".git" || e.file_name() == "target" {
                continue;
            }
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else {
        fs_err::copy(src, dst)?;
    }
    Ok(())
}

/// Compiles the app with the Rumprun toolchain into `work`; returns the program to bake.
fn compile(
    artifact: &Artifact,
    tc: &Toolchain,
    work: &Path,
    log: &dyn Fn(&str),
) -> Result<PathBuf, PackError> {
    let m = &artifact.manifest;
    let has_configure = match &m.source {
        Source::Make { dir, .. } => dir.join("configure").is_file(),
        _ => false,
    };
    // The steps run in the work directory: name the sources absolutely.
    let abs = |p: &Path| fs_err::canonicalize(p);
    let source = match &m.source {
        Source::CFile { file } => Source::CFile { file: abs(file)? },
        Source::Make { dir, output } => Source::Make {
            dir: abs(dir)?,
            output: output.clone(),
        },
        Source::Custom {
            dir,
            command,
            output,
        } => Source::Custom {
            dir: abs(dir)?,
            command: command.clone(),
            output: output.clone(),
        },
        other => other.clone(),
    };
    let plan = build_plan(
        &m.name,
        &source,
        &tc.cc().display().to_string(),
        has_configure,
    )?;
    let mut before = Vec::new();
    if let Some(src) = &plan.copy_from {
        copy_tree(src, &work.join("src"))?;
        before = executables(&work.join("src"))?;
    }
    for step in &plan.steps {
        run_step(step, work, tc, log)?;
    }
    let what = plan
        .steps
        .last()
        .map(|s| s.what.clone())
        .unwrap_or_default();
    match plan.output {
        Output::Path(p) => {
            let p = work.join(p);
            if !p.is_file() {
                return Err(RumprunError::NoOutput { what }.into());
            }
            Ok(p)
        }
        Output::NewExecutable {
            dir,
            named: Some(named),
        } => {
            let p = work.join(dir).join(&named);
            if !p.is_file() {
                return Err(RumprunError::NoOutput { what }.into());
            }
            Ok(p)
        }
        Output::NewExecutable { dir, named: None } => {
            let new: Vec<PathBuf> = executables(&work.join(dir))?
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            match new.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(RumprunError::NoOutput { what }.into()),
                many => {
                    // Prefer the one named like the app.
                    if let Some(p) = many
                        .iter()
                        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == m.name))
                    {
                        return Ok(p.clone());
                    }
                    let found = many
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    Err(RumprunError::SeveralOutputs { what, found }.into())
                }
            }
        }
    }
}

/// Bakes one configuration; the error carries what the linker said.
fn bake(
    tc: &Toolchain,
    config: BakeConfig,
    name: &str,
    program: &Path,
    out: &Path,
) -> Result<(), RumprunError> {
    let argv = bake_argv(&tc.bake(), config, out, program);
    let failed = |status: String, output: String| RumprunError::BakeFailed {
        name: name.to_string(),
        config: config.name().into(),
        status,
        output,
    };
    let res = Command::new(&argv[0])
        .args(&argv[1..])
        .env("PATH", tc.path_var())
        .output()
        .map_err(|e| failed("none".into(), format!("cannot start {}: {e}", argv[0])))?;
    if !res.status.success() {
        return Err(failed(status_text(&res.status), last_lines(&res, 40)));
    }
    if !out.is_file() {
        return Err(failed(
            "0".into(),
            format!("{} was not written", out.display()),
        ));
    }
    Ok(())
}

/// Strips symbols and debug sections with the toolchain's strip (when it has one); returns
/// the bytes before stripping.
fn strip(tc: &Toolchain, file: &Path) -> Result<u64, PackError> {
    let before = fs_err::metadata(file)?.len();
    let strip = tc.tool("strip");
    if strip.is_file() {
        let out = Command::new(&strip).arg(file).output()?;
        if !out.status.success() {
            return Err(PackError::Tool {
                tool: strip,
                file: file.to_path_buf(),
                output: last_lines(&out, 5),
            });
        }
    }
    Ok(before)
}

fn gzip_len(path: &Path) -> Result<u64, PackError> {
    let data = fs_err::read(path)?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&data)?;
    Ok(gz.finish()?.len() as u64)
}

fn write_image(
    artifact: &Artifact,
    tc: &Toolchain,
    ctx: &PackContext,
    dir: &Path,
) -> Result<Image, PackError> {
    let m = &artifact.manifest;
    let work = ctx.cache.tmp()?;
    let started = std::time::Instant::now();
    // A Debian package: rebuilt from its source package, Debian's files cooked in.
    let deb = match &m.source {
        Source::Deb { .. } => {
            let origin = bakeoff_build::built_from(artifact).ok_or_else(|| RumprunError::Refused {
                name: m.name.clone(),
                reasons: "the artifact does not say which Debian package it was laid out from (deb.json is missing); build it again".into(),
            })?;
            Some(debsrc::build(
                artifact,
                &origin,
                tc,
                ctx.cache,
                work.path(),
                ctx.log,
            )?)
        }
        _ => None,
    };
    let program = match &deb {
        Some(b) => b.program.clone(),
        None => compile(artifact, tc, work.path(), ctx.log)?,
    };
    if let Some(b) = &deb {
        for n in &b.notes {
            (ctx.log)(n);
        }
        let record = serde_json::json!({
            "source_package": b.source.name,
            "source_version": b.source.version,
            "binary_version": b.source.binary_version,
            "build_system": b.system,
            "notes": b.notes,
            "tried_before": b.source.tried,
            "args": b.args,
            "build_seconds": started.elapsed().as_secs_f64(),
        });
        fs_err::write(
            dir.join("debsrc.json"),
            serde_json::to_vec_pretty(&record).expect("record serializes"),
        )?;
    }
    let mut files = std::collections::BTreeMap::new();
    let mut details = ImageDetails::default();
    let mut digest_input = String::new();
    for config in &tc.configs {
        (ctx.log)(&format!(
            "baking {} with rumprun-bake {}",
            m.name,
            config.name()
        ));
        let file = format!("{}-{}.bin", m.name, config.name());
        let out = dir.join(&file);
        bake(tc, *config, &m.name, &program, &out)?;
        let unstripped = strip(tc, &out)?;
        details.set_bake(
            config.name(),
            RumprunBake {
                bytes: fs_err::metadata(&out)?.len(),
                unstripped_bytes: unstripped,
            },
        );
        digest_input.push_str(&format!(
            "{} {}\n",
            config.name(),
            sha256_hex(&fs_err::read(&out)?)
        ));
        files.insert(config.role().to_string(), PathBuf::from(file));
    }
    if !tc.configs.contains(&BakeConfig::XenPv) {
        details.xen_pv = Some(
            "not baked: the toolchain has no Xen platform (build it with `./build-rr.sh xen`)"
                .into(),
        );
    }
    let kernel = dir.join(
        files
            .get("kernel")
            .ok_or_else(|| RumprunError::NoHwPlatform {
                bin: tc.bin.clone(),
            })?,
    );
    let argv0 = m
        .command
        .first()
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
        .unwrap_or_else(|| m.name.clone());
    details.toolchain = Some(tc.bin.display().to_string());
    details.toolchain_origin = Some(tc.origin.clone());
    details.argv0 = Some(argv0);
    details.args = Some(match &deb {
        Some(b) => b.args.clone(),
        None => m.args.clone(),
    });
    // LD_LIBRARY_PATH points into the Linux closure, which a unikernel does not have.
    details.env = Some(
        m.env
            .iter()
            .filter(|(k, _)| k != "LD_LIBRARY_PATH")
            .cloned()
            .collect(),
    );
    details.ports = Some(
        m.ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    Ok(Image {
        target: Target::Rumprun,
        name: m.name.clone(),
        artifact_id: m.id.clone(),
        digest: format!("sha256:{}", sha256_hex(digest_input.as_bytes())),
        dir: dir.to_path_buf(),
        files,
        size_bytes: fs_err::metadata(&kernel)?.len(),
        compressed_bytes: gzip_len(&kernel)?,
        reference: None,
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_plans_for_each_source_kind() {
        let cc = "/opt/rumprun/bin/x86_64-rumprun-netbsd-gcc";
        let single = build_plan(
            "hello",
            &Source::CFile {
                file: "/apps/hello/hello.c".into(),
            },
            cc,
            false,
        )
        .unwrap();
        let make = build_plan(
            "srv",
            &Source::Make {
                dir: "/apps/srv".into(),
                output: None,
            },
            cc,
            false,
        )
        .unwrap();
        let autotools = build_plan(
            "srv",
            &Source::Make {
                dir: "/apps/srv".into(),
                output: Some("bin/srv".into()),
            },
            cc,
            true,
        )
        .unwrap();
        let custom = build_plan(
            "srv",
            &Source::Custom {
                dir: "/apps/srv".into(),
                command: "make all".into(),
                output: None,
            },
            cc,
            false,
        )
        .unwrap();
        insta::assert_debug_snapshot!("plans", (single, make, autotools, custom));
    }

    #[test]
    fn prebuilt_inputs_are_refused_with_the_checks_words() {
        let e = build_plan(
            "tool",
            &Source::Elf {
                path: "/bin/true".into(),
            },
            CC,
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tool cannot be built for Rumprun: a prebuilt binary cannot run on Rumprun: it must be rebuilt from source with the Rumprun toolchain"
        );
    }

    fn fake_toolchain(root: &Path, platforms: &[&str]) -> PathBuf {
        let bin = root.join("rumprun/bin");
        fs_err::create_dir_all(&bin).unwrap();
        for tool in [CC, BAKE] {
            fs_err::write(bin.join(tool), "#!/bin/sh\n").unwrap();
        }
        for p in platforms {
            let lib = root.join(format!("rumprun/rumprun-x86_64/lib/rumprun-{p}"));
            fs_err::create_dir_all(&lib).unwrap();
            fs_err::write(lib.join("librumprun_base.a"), p).unwrap();
        }
        bin
    }

    #[test]
    fn toolchain_from_env_config_or_path() {
        let t = tempfile::tempdir().unwrap();
        let bin = fake_toolchain(t.path(), &["hw"]);
        let canon = std::fs::canonicalize(&bin).unwrap();
        // On PATH.
        let tc = locate(
            None,
            None,
            None,
            Some(std::env::join_paths(["/nonexistent".as_ref(), bin.as_path()]).unwrap()),
            None,
        )
        .unwrap();
        assert_eq!(
            (tc.bin.clone(), tc.origin.as_str(), tc.configs.clone()),
            (canon.clone(), "PATH", vec![BakeConfig::HwVirtio])
        );
        // The env var may name the prefix (holding bin/) and wins over bakeoff.toml.
        let tc = locate(
            Some(t.path().join("rumprun").into()),
            Some(Path::new("/elsewhere")),
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            (tc.bin.clone(), tc.origin.as_str()),
            (canon.clone(), "BAKEOFF_RUMPRUN_TOOLCHAIN")
        );
        // bakeoff.toml's path is relative to the app directory.
        let tc = locate(None, Some(Path::new("rumprun")), Some(t.path()), None, None).unwrap();
        assert_eq!(tc.origin, "bakeoff.toml [rumprun] toolchain");
        // A Xen-capable toolchain bakes both, and its identity differs.
        let t2 = tempfile::tempdir().unwrap();
        let both = locate(
            None,
            None,
            None,
            Some(fake_toolchain(t2.path(), &["hw", "xen"]).into_os_string()),
            None,
        )
        .unwrap();
        assert_eq!(both.configs, vec![BakeConfig::HwVirtio, BakeConfig::XenPv]);
        assert_ne!(both.identity, tc.identity);
    }

    #[test]
    fn the_toolchain_bakeoff_built_is_used_when_nothing_else_is_named() {
        let t = tempfile::tempdir().unwrap();
        let bin = fake_toolchain(t.path(), &["hw", "xen"]);
        let tc = locate(
            None,
            None,
            None,
            Some("/nonexistent".into()),
            Some(bin.clone()),
        )
        .unwrap();
        assert_eq!(tc.origin, "bakeoff's cache (`bakeoff toolchain build`)");
        assert_eq!(tc.configs, vec![BakeConfig::HwVirtio, BakeConfig::XenPv]);
        // PATH and the variable still win.
        let t2 = tempfile::tempdir().unwrap();
        let other = fake_toolchain(t2.path(), &["hw"]);
        let tc = locate(
            None,
            None,
            None,
            Some(other.clone().into_os_string()),
            Some(bin.clone()),
        )
        .unwrap();
        assert_eq!(tc.origin, "PATH");
        let tc = locate(Some(other.into_os_string()), None, None, None, Some(bin)).unwrap();
        assert_eq!(tc.origin, "BAKEOFF_RUMPRUN_TOOLCHAIN");
    }

    #[test]
    fn missing_toolchain_says_how_to_get_one() {
        let e = locate(None, None, None, Some("/nonexistent".into()), None).unwrap_err();
        assert!(e.to_string().starts_with("no Rumprun toolchain found (bakeoff has not built one, and x86_64-rumprun-netbsd-gcc and rumprun-bake are not on PATH); build one with `bakeoff toolchain build`"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let e = locate(Some(t.path().into()), None, None, None, None).unwrap_err();
        assert!(e.to_string().starts_with(&format!("the Rumprun toolchain named by BAKEOFF_RUMPRUN_TOOLCHAIN ({}) has no x86_64-rumprun-netbsd-gcc;", t.path().display())), "{e}");
    }
}
