//! `deb:NAME` inputs: a Debian package and its dependency closure, resolved by apt on an empty
//! package database (so what this host has installed does not matter), downloaded once into the
//! cache with `apt-get download`, unpacked with `dpkg-deb -x` into a staging root — never
//! installed on this host — and then pruned to what the daemon needs at run time:
//!
//! - every file of the packages built from the requested package's source package (nginx and
//!   nginx-common; redis-server and redis-tools) except documentation, man pages, locales,
//!   init-system and shell-completion files;
//! - the ld.so closure, resolved inside the staging root, of the command and of every ELF file
//!   kept above (so modules a package ships for dlopen() bring their libraries too); nothing
//!   else of the dependencies (perl, debconf, iproute2, ... are only needed by maintainer
//!   scripts, which do not run);
//! - what the maintainer scripts would have made (system users and groups, directories,
//!   symbolic links, copies — read from `postinst`, see [`postinst`]), `/etc/passwd` and
//!   `/etc/group` with Debian's static accounts, `/etc/nsswitch.conf`, the writable
//!   directories `/tmp`, `/var/tmp`, `/run`, and a few per-daemon touches ([`FIXUPS`]).
//!
//! Absolute symbolic links are rewritten as relative ones: the same inside the image, and host
//! tools that later follow them stay inside the root.

mod apt;
mod data;
mod postinst;
pub(crate) mod runtime;
pub mod source;
mod unit;
mod users;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use bakeoff_detect::BuildPlan;
use serde::Serialize;

pub use apt::{resolve, Resolution};

use crate::{BuildError, Cache};

/// Bump when the layout rules change, so cached deb artifacts are rebuilt.
pub(crate) const LAYOUT_VERSION: &str = "bakeoff-deb-layout/7";

/// Where programs are looked up when `command[0]` is not an absolute path.
const PATH_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Parts of a package's tree no daemon reads at run time (relative to the root).
const PRUNED: &[&str] = &[
    "usr/share/doc",
    "usr/share/doc-base",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "usr/share/bash-completion",
    "usr/share/zsh",
    "usr/share/fish",
    "usr/share/apport",
    "usr/share/vim",
    "usr/share/menu",
    "usr/share/applications",
    "usr/share/icons",
    "usr/share/pixmaps",
    "usr/share/metainfo",
    "usr/share/polkit-1",
    "usr/share/debconf",
    "lib/systemd",
    "usr/lib/systemd",
    "usr/lib/tmpfiles.d",
    "usr/lib/sysusers.d",
    "etc/init.d",
    "etc/init",
    "etc/logrotate.d",
    "etc/systemd",
    "etc/ufw",
    "etc/apparmor.d",
    "etc/cron.d",
    "etc/cron.daily",
    "etc/cron.weekly",
    "etc/cron.monthly",
    "etc/cron.hourly",
];

/// What a known daemon needs beyond its packages and their maintainer scripts, by source package.
struct Fixup {
    source: &'static str,
    /// Writable directories (mode).
    dirs: &'static [(&'static str, u32)],
    /// Symbolic links (link, target): nginx logs to the instance's output, like Docker's nginx image.
    links: &'static [(&'static str, &'static str)],
}

const FIXUPS: &[Fixup] = &[
    Fixup {
        source: "nginx",
        dirs: &[
            ("/var/log/nginx", 0o755),
            ("/var/lib/nginx", 0o755),
            ("/var/www/html", 0o755),
        ],
        links: &[
            ("/var/log/nginx/access.log", "/dev/stdout"),
            ("/var/log/nginx/error.log", "/dev/stderr"),
        ],
    },
    Fixup {
        source: "redis",
        // redis-tools' postinst makes these through a shell function the script reader skips.
        dirs: &[
            ("/var/lib/redis", 0o750),
            ("/var/log/redis", 0o750),
            ("/run/redis", 0o755),
        ],
        links: &[],
    },
];

/// Which Debian package a `deb:` artifact was laid out from (read back from its `deb.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DebOrigin {
    /// The package apt installed for the name the user gave.
    pub main: String,
    /// Its source package.
    pub source: String,
    /// The exact version of `main`.
    pub version: String,
}

/// The Debian package of an artifact built from `deb:NAME`; `None` for other artifacts.
pub fn built_from(artifact: &crate::Artifact) -> Option<DebOrigin> {
    #[derive(serde::Deserialize)]
    struct Pkg {
        name: String,
        version: String,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        main: String,
        source: String,
        packages: Vec<Pkg>,
    }
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(artifact.dir.join("deb.json"))
        .ok()?
        .take(16 << 20)
        .read_to_end(&mut text)
        .ok()?;
    let doc: Doc = serde_json::from_slice(&text).ok()?;
    let version = doc
        .packages
        .iter()
        .find(|p| p.name == doc.main)?
        .version
        .clone();
    Some(DebOrigin {
        main: doc.main,
        source: doc.source,
        version,
    })
}

/// The daemon laid out in the artifact's rootfs.
#[derive(Debug)]
pub(crate) struct Laid {
    /// Host path of the program's file (symlinks resolved inside the rootfs).
    pub exe: PathBuf,
    /// The program's path inside the image.
    pub binary: String,
    /// `plan.command` with the program made absolute.
    pub command: Vec<String>,
    /// PATH and, when needed, LD_LIBRARY_PATH; the unit's environment.
    pub env: Vec<(String, String)>,
    /// The unit's `WorkingDirectory=`.
    pub workdir: Option<String>,
    /// The unit's `User=` (and `Group=`), resolved against the image's `/etc/passwd` and
    /// `/etc/group`.
    pub user: Option<crate::RunUser>,
}

/// What was unpacked and kept; written beside the rootfs as `deb.json`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    requested: &'a str,
    main: &'a str,
    source: &'a str,
    packages: Vec<ReportPackage<'a>>,
    unpacked_bytes: u64,
    kept_bytes: u64,
    users: Vec<String>,
    /// The unit's `User=` (and `Group=`): the image runs its command as that user.
    unit_user: Option<String>,
    /// `ExecStartPre=` lines not run.
    unit_skipped: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ReportPackage<'a> {
    name: &'a str,
    version: &'a str,
    arch: &'a str,
    /// Built from the requested package's source: all of its files are kept.
    whole: bool,
}

/// Unpacks the resolution's packages and lays out what the plan's daemon needs into `rootfs`.
pub(crate) fn lay_out(
    plan: &BuildPlan,
    res: &Resolution,
    cache: &Cache,
    work: &Path,
    rootfs: &Path,
    log: &dyn Fn(&str),
) -> Result<Laid, BuildError> {
    let debs = apt::fetch(res, cache, log)?;

    log(&format!(
        "unpacking {} Debian packages with dpkg-deb",
        debs.len()
    ));
    let full = work.join("deb-root");
    let whole_root = work.join("deb-whole");
    let control = work.join("deb-control");
    fs_err::create_dir_all(&full)?;
    fs_err::create_dir_all(&whole_root)?;
    fs_err::create_dir_all(&control)?;
    let mut sources = Vec::new();
    for deb in &debs {
        dpkg_deb(&[Path::new("-x"), deb, &full])?;
        sources.push(source_of(deb)?);
    }
    let main_index = res
        .packages
        .iter()
        .position(|p| p.name == res.main)
        .ok_or_else(|| {
            BuildError::Deb(format!(
                "deb:{}: apt chose {} but did not list it among the packages",
                res.requested, res.main
            ))
        })?;
    let main_source = sources[main_index].clone();
    let mut whole: Vec<bool> = sources.iter().map(|s| *s == main_source).collect();
    for ((p, deb), _) in res
        .packages
        .iter()
        .zip(&debs)
        .zip(&whole)
        .filter(|(_, w)| **w)
    {
        dpkg_deb(&[Path::new("-x"), deb, &whole_root])?;
        dpkg_deb(&[Path::new("-e"), deb, &control.join(&p.name)])?;
    }
    // Plugins from other source packages (nginx-full's libnginx-mod-*): a dependency with files
    // inside one of the daemon's own directories (/usr/share/nginx, /etc/nginx, ...) is kept
    // whole too, with its maintainer script.
    let mut own_dirs = BTreeSet::new();
    own_directories(&whole_root, Path::new("/"), &main_source, &mut own_dirs)?;
    for (i, deb) in debs.iter().enumerate() {
        if whole[i] {
            continue;
        }
        let listing = dpkg_deb(&[Path::new("-c"), deb])?;
        let plugs_in = parse_listing(&listing).iter().any(|(path, is_dir)| {
            !is_dir && path.ancestors().skip(1).any(|a| own_dirs.contains(a))
        });
        if plugs_in {
            log(&format!(
                "keeping {} whole: it adds to {}",
                res.packages[i].name, main_source
            ));
            whole[i] = true;
            dpkg_deb(&[Path::new("-x"), deb, &whole_root])?;
            dpkg_deb(&[Path::new("-e"), deb, &control.join(&res.packages[i].name)])?;
        }
    }

    // Data packages the kept packages depend on (CA certificates, time zones, MIME types):
    // their files travel too, since the service reads them at run time.
    let kept_names: Vec<String> = res
        .packages
        .iter()
        .zip(&whole)
        .filter(|(_, w)| **w)
        .map(|(p, _)| p.name.clone())
        .collect();
    let available: Vec<String> = res.packages.iter().map(|p| p.name.clone()).collect();
    let depends_of = |name: &str| -> Vec<String> {
        res.packages
            .iter()
            .position(|p| p.name == name)
            .and_then(|i| dpkg_deb(&[Path::new("-f"), &debs[i]]).ok())
            .map(|control| data::control_depends(&control))
            .unwrap_or_default()
    };
    let data_packages = data::wanted(&kept_names, &available, &depends_of);
    for name in &data_packages {
        if let Some(i) = res.packages.iter().position(|p| &p.name == name) {
            log(&format!(
                "keeping {name}: a data package that {} depends on",
                res.main
            ));
            dpkg_deb(&[Path::new("-x"), &debs[i], &whole_root])?;
        }
    }

    // What to keep: the main source's files, then ld.so closures inside the staging root.
    let mut keep: BTreeSet<PathBuf> = BTreeSet::new();
    walk_kept(&whole_root, Path::new("/"), &mut keep)?;
    // Without a command from bakeoff.toml or the built-in table, the package's systemd unit says
    // how the daemon runs (see [`unit`]).
    let from_unit = if plan.command.is_empty() {
        let (name, text) = service_unit(&whole_root, &res.requested, &res.main, &main_source)
            .ok_or_else(|| BuildError::NoDaemonCommand(res.requested.clone()))?;
        let svc = unit::parse(&text)
            .map_err(|e| BuildError::Deb(format!("deb:{}: {name}: {e}", res.requested)))?;
        let read = |p: &str| std::fs::read_to_string(host(&full, Path::new(p))).ok();
        let fg = unit::foreground(&res.requested, &name, &svc, &read).map_err(BuildError::Deb)?;
        log(&format!(
            "foreground command from {name}: {}",
            fg.command.join(" ")
        ));
        for pre in &fg.skipped {
            log(&format!(
                "not run (one foreground command only): ExecStartPre={pre}"
            ));
        }
        Some(fg)
    } else {
        None
    };
    let mut command = match &from_unit {
        Some(fg) => fg.command.clone(),
        None => plan.command.clone(),
    };
    let program = find_program(&full, &command[0]).ok_or_else(|| {
        BuildError::Deb(format!(
            "deb:{}: the command {} is in none of the unpacked packages ({})",
            res.requested,
            command[0],
            res.packages
                .iter()
                .zip(&whole)
                .filter(|(_, w)| **w)
                .map(|(p, _)| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    command[0] = program.display().to_string();
    // Symbolic links (redis-server -> redis-check-rdb) are followed inside the unpacked root.
    let target = host(
        &full,
        &resolve_in(&full, &program).unwrap_or(program.clone()),
    );
    if !is_elf_file(&target) {
        return Err(BuildError::Deb(script_refusal(
            &res.requested,
            &program,
            &target,
        )));
    }
    log(&format!(
        "resolving the shared libraries of {} inside the unpacked packages",
        command[0]
    ));
    let mut library_dirs: BTreeSet<String> = BTreeSet::new();
    let closure =
        bakeoff_elf::closure(&program, &full).map_err(|e| BuildError::Closure(e.to_string()))?;
    add_closure(&closure, &mut keep, &mut library_dirs);
    let elves: Vec<PathBuf> = keep
        .iter()
        .filter(|p| is_elf_file(&host(&full, p)))
        .cloned()
        .collect();
    for elf in elves {
        match bakeoff_elf::closure(&elf, &full) {
            Ok(c) => add_closure(&c, &mut keep, &mut library_dirs),
            Err(e) => log(&format!(
                "warning: {} is kept without its libraries: {e}",
                elf.display()
            )),
        }
    }
    for p in &keep {
        copy_entry(&full, rootfs, p)?;
    }

    // What the maintainer scripts and the init system would have done.
    let mut accounts = users::Accounts::base();
    // `chown OWNER PATH` lines: (owner, path), given to the daemon's user below.
    let mut chowned: Vec<(String, String)> = Vec::new();
    for (p, _) in res.packages.iter().zip(&whole).filter(|(_, w)| **w) {
        let script = control.join(&p.name).join("postinst");
        let Ok(text) = std::fs::read_to_string(&script) else {
            continue;
        };
        for action in postinst::actions(&text) {
            if let postinst::Action::Chown { owner, path } = &action {
                chowned.push((owner.clone(), path.clone()));
            }
            apply(&action, rootfs, &full, &mut accounts)?;
        }
        // dh_nginx's loop: `for confpair in mod-x.conf:50-mod-x.conf ; do ... ln -sf ...`.
        for (available, enabled) in nginx_module_links(&text) {
            let target = format!("/usr/share/nginx/modules-available/{available}");
            make_link(
                rootfs,
                &format!("/etc/nginx/modules-enabled/{enabled}"),
                &target,
            )?;
        }
    }
    // DynamicUser=: systemd would allocate the user for the run; the image gets a system user
    // (and a group of the same name) instead, numbered like any other.
    if let Some(fg) = from_unit.as_ref().filter(|f| f.dynamic_user) {
        if let Some(name) = &fg.user {
            accounts.add_user(&postinst::UserSpec {
                name: name.clone(),
                home: None,
                shell: None,
                gecos: Some("DynamicUser= of the unit".into()),
                own_group: fg.group.is_none(),
                group: fg.group.clone(),
                uid: None,
            });
        }
    }
    write_file(rootfs, "/etc/passwd", &accounts.passwd(), 0o644)?;
    write_file(rootfs, "/etc/group", &accounts.group_file(), 0o644)?;
    for made in data::configure(rootfs, &data_packages)? {
        log(&format!("made {made}"));
    }
    let mut user = match from_unit
        .as_ref()
        .and_then(|f| f.user.as_ref().map(|u| (u, f)))
    {
        Some((u, fg)) => {
            let from = format!("deb:{}: User= of its unit", res.requested);
            let ru = crate::run_user::resolve(rootfs, u, fg.group.as_deref(), &from)
                .map_err(BuildError::Deb)?;
            log(&format!(
                "the daemon runs as {} (uid {}, gid {}) as its unit says",
                ru.spec, ru.uid, ru.gid
            ));
            Some(ru)
        }
        None => None,
    };
    if !host(rootfs, Path::new("/etc/nsswitch.conf")).exists() {
        write_file(
            rootfs,
            "/etc/nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
            0o644,
        )?;
    }
    for (dir, mode) in [
        ("/tmp", 0o1777),
        ("/var/tmp", 0o1777),
        ("/run", 0o755),
        ("/var/log", 0o755),
        ("/var/lib", 0o755),
        // Mount points: every platform mounts them, and the probe run of the ports needs /proc.
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/dev", 0o755),
    ] {
        make_dir(rootfs, dir, mode)?;
    }
    make_link(rootfs, "/var/run", "/run")?;
    for dir in from_unit.iter().flat_map(|f| &f.directories) {
        make_dirs(rootfs, dir, 0o755)?;
    }
    // What belongs to the daemon's user, as systemd and the maintainer scripts would have made
    // it: the unit's Runtime/State/Cache/LogsDirectory= and the paths its scripts chown to it.
    // Docker gets the owner in the layer; the microVM's PID 1 chowns them before the start.
    if let Some(u) = user.as_mut() {
        let name = u.spec.split(':').next().unwrap_or_default().to_string();
        let mut owns: Vec<String> = from_unit
            .iter()
            .flat_map(|f| f.directories.iter().cloned())
            .chain(
                chowned
                    .iter()
                    .filter(|(owner, _)| *owner == name || *owner == u.uid.to_string())
                    .map(|(_, path)| path.clone()),
            )
            .filter(|p| resolve_in(rootfs, Path::new(p)).is_some())
            .collect();
        owns.sort();
        owns.dedup();
        if !owns.is_empty() {
            log(&format!("{} owns {}", u.spec, owns.join(", ")));
        }
        u.owns = owns;
    }
    if let Some(f) = FIXUPS.iter().find(|f| f.source == main_source) {
        for (dir, mode) in f.dirs {
            make_dir(rootfs, dir, *mode)?;
        }
        for (link, target) in f.links {
            replace_with_link(rootfs, link, target)?;
        }
    }
    relativize_links(rootfs, Path::new("/"))?;

    let real = resolve_in(rootfs, &program).ok_or_else(|| {
        BuildError::Deb(format!(
            "deb:{}: {} did not survive the layout",
            res.requested,
            program.display()
        ))
    })?;
    let exe = host(rootfs, &real);
    // Tools that follow the program's path on this host must reach the same file.
    let binary =
        if std::fs::canonicalize(host(rootfs, &program)).ok() == std::fs::canonicalize(&exe).ok() {
            program
        } else {
            real
        };
    let mut env = vec![("PATH".to_string(), DEFAULT_PATH.to_string())];
    if let Some(fg) = &from_unit {
        for (k, v) in &fg.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
    }
    if !library_dirs.is_empty() {
        env.push((
            "LD_LIBRARY_PATH".into(),
            library_dirs.into_iter().collect::<Vec<_>>().join(":"),
        ));
    }

    let report = Report {
        requested: &res.requested,
        main: &res.main,
        source: &main_source,
        packages: res
            .packages
            .iter()
            .zip(&whole)
            .map(|(p, w)| ReportPackage {
                name: &p.name,
                version: &p.version,
                arch: &p.arch,
                whole: *w,
            })
            .collect(),
        unpacked_bytes: tree_bytes(&full)?,
        kept_bytes: tree_bytes(rootfs)?,
        unit_user: user.as_ref().map(|u| u.spec.clone()),
        unit_skipped: from_unit
            .as_ref()
            .map(|f| f.skipped.clone())
            .unwrap_or_default(),
        users: accounts
            .users
            .iter()
            .filter(|u| (100..1000).contains(&u.uid))
            .map(|u| u.name.clone())
            .collect(),
    };
    if let Some(dir) = rootfs.parent() {
        fs_err::write(
            dir.join("deb.json"),
            serde_json::to_vec_pretty(&report).expect("report serializes"),
        )?;
    }
    log(&format!(
        "kept {:.1} MB of {:.1} MB unpacked from {} packages",
        report.kept_bytes as f64 / 1e6,
        report.unpacked_bytes as f64 / 1e6,
        res.packages.len()
    ));
    Ok(Laid {
        exe,
        binary: binary.display().to_string(),
        command,
        env,
        workdir: from_unit.and_then(|f| f.workdir),
        user,
    })
}

fn dpkg_deb(args: &[&Path]) -> Result<String, BuildError> {
    let out = Command::new("dpkg-deb")
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BuildError::AptMissing,
            _ => BuildError::Io(e),
        })?;
    if !out.status.success() {
        return Err(BuildError::CommandFailed {
            what: format!(
                "dpkg-deb {}",
                args.iter()
                    .map(|a| a.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            status: out
                .status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "killed".into()),
            output: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The source package a .deb was built from (`Source:`, without a version; else its own name).
fn source_of(deb: &Path) -> Result<String, BuildError> {
    let text = dpkg_deb(&[
        Path::new("-f"),
        deb,
        Path::new("Source"),
        Path::new("Package"),
    ])?;
    Ok(source_from_fields(&text))
}

/// `Source: redis (5:7.0.15-1)\nPackage: redis-tools` → `redis`; no Source → the package name.
fn source_from_fields(text: &str) -> String {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    field("Source")
        .filter(|s| !s.is_empty())
        .or_else(|| field("Package"))
        .unwrap_or_default()
}

/// Directories of the kept tree named after the daemon's source package (`/etc/nginx`,
/// `/usr/share/nginx`, ...): other packages adding files there are its plugins.
fn own_directories(
    root: &Path,
    inside: &Path,
    source: &str,
    out: &mut BTreeSet<PathBuf>,
) -> Result<(), BuildError> {
    for e in fs_err::read_dir(host(root, inside))? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let path = inside.join(e.file_name());
        if pruned(&path) {
            continue;
        }
        if e.file_name().to_string_lossy().contains(source) {
            out.insert(path);
        } else {
            own_directories(root, &path, source, out)?;
        }
    }
    Ok(())
}

/// `dpkg-deb -c` output → (absolute path, is a directory).
fn parse_listing(text: &str) -> Vec<(PathBuf, bool)> {
    text.lines()
        .filter_map(|line| {
            let perms = line.split_whitespace().next()?;
            // Skip five fields (mode, owner, size, date, time); the rest is the name.
            let mut rest = line.trim_start();
            for _ in 0..5 {
                let end = rest.find(char::is_whitespace)?;
                rest = rest[end..].trim_start();
            }
            let name = match perms.chars().next()? {
                'l' => rest.split(" -> ").next()?,
                'h' => rest.split(" link to ").next()?,
                _ => rest,
            };
            let name = name
                .strip_prefix("./")
                .unwrap_or(name)
                .trim_end_matches('/');
            if name.is_empty() || name == "." {
                return None;
            }
            Some((Path::new("/").join(name), perms.starts_with('d')))
        })
        .collect()
}

/// `for confpair in mod-http-echo.conf:50-mod-http-echo.conf ; do` → (available, enabled) pairs.
fn nginx_module_links(postinst: &str) -> Vec<(String, String)> {
    postinst
        .lines()
        .filter_map(|l| l.trim().strip_prefix("for confpair in "))
        .flat_map(|rest| {
            rest.split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|pair| pair.split_once(':'))
                .filter(|(a, b)| {
                    postinst::safe_path(&format!("/{a}"))
                        && !a.contains('/')
                        && !b.contains('/')
                        && !b.is_empty()
                })
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn pruned(inside: &Path) -> bool {
    let rel = inside.strip_prefix("/").unwrap_or(inside);
    PRUNED.iter().any(|p| rel.starts_with(p))
}

/// Adds every path under `dir` (mirroring `inside`) that is not pruned.
fn walk_kept(root: &Path, inside: &Path, keep: &mut BTreeSet<PathBuf>) -> Result<(), BuildError> {
    let dir = host(root, inside);
    let mut names: Vec<_> = fs_err::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let path = inside.join(&name);
        if pruned(&path) {
            continue;
        }
        keep.insert(path.clone());
        if fs_err::symlink_metadata(host(root, &path))?.is_dir() {
            walk_kept(root, &path, keep)?;
        }
    }
    Ok(())
}

fn add_closure(
    c: &bakeoff_elf::Closure,
    keep: &mut BTreeSet<PathBuf>,
    library_dirs: &mut BTreeSet<String>,
) {
    keep.extend(c.entries.iter().map(|e| e.path.clone()));
    library_dirs.extend(c.extra_library_dirs.iter().map(|d| d.display().to_string()));
}

/// The host path of an absolute path inside `root` (no symlink resolution).
fn host(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

fn is_elf_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) && bakeoff_detect::is_elf(path)
}

/// `command[0]` as an absolute path inside `root`: as given when absolute, else the first match
/// in the usual PATH directories. `None` when there is no such file.
fn find_program(root: &Path, program: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if program.starts_with('/') {
        vec![PathBuf::from(program)]
    } else if program.contains('/') {
        return None;
    } else {
        PATH_DIRS
            .iter()
            .map(|d| Path::new(d).join(program))
            .collect()
    };
    candidates
        .into_iter()
        .find(|c| resolve_in(root, c).is_some_and(|real| host(root, &real).is_file()))
}

/// Resolves `inside` within `root` the way the kernel would after chroot: absolute symlink
/// targets and `..` stay inside. `None` when a component is missing or links loop.
fn resolve_in(root: &Path, inside: &Path) -> Option<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> =
        normal_components(inside).into_iter().rev().collect();
    let mut real = PathBuf::from("/");
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            real.pop();
            continue;
        }
        let candidate = real.join(&name);
        let meta = std::fs::symlink_metadata(host(root, &candidate)).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(host(root, &candidate)).ok()?;
            if target.is_absolute() {
                real = PathBuf::from("/");
            }
            pending.extend(normal_components(&target).into_iter().rev());
        } else {
            real = candidate;
        }
    }
    Some(real)
}

fn normal_components(p: &Path) -> Vec<std::ffi::OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// The host path where `inside` goes: its parent directory resolved inside `root` (missing
/// directories created), the last component not followed.
fn place(root: &Path, inside: &Path) -> Result<PathBuf, BuildError> {
    let name = inside
        .file_name()
        .ok_or_else(|| BuildError::Deb(format!("{} names no file", inside.display())))?;
    let parent = inside.parent().unwrap_or(Path::new("/"));
    let mut real = PathBuf::from("/");
    for c in normal_components(parent) {
        let candidate = real.join(&c);
        match resolve_in(root, &candidate) {
            Some(r) if host(root, &r).is_dir() => real = r,
            None if std::fs::symlink_metadata(host(root, &candidate)).is_err() => {
                fs_err::create_dir(host(root, &candidate))?;
                real = candidate;
            }
            _ => {
                return Err(BuildError::Deb(format!(
                    "cannot place {}: {} is not a directory",
                    inside.display(),
                    candidate.display()
                )))
            }
        }
    }
    Ok(host(root, &real).join(name))
}

/// Copies one entry of the staging root (a directory, symlink or file, not followed) into `dest`.
fn copy_entry(full: &Path, dest: &Path, inside: &Path) -> Result<(), BuildError> {
    let src = host(full, inside);
    let meta = fs_err::symlink_metadata(&src)?;
    let dst = host(dest, inside);
    if let Some(parent) = dst.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let existing = std::fs::symlink_metadata(&dst).ok();
    if meta.is_dir() {
        if !existing.as_ref().is_some_and(|m| m.is_dir()) {
            if existing.is_some() {
                fs_err::remove_file(&dst)?;
            }
            fs_err::create_dir(&dst)?;
        }
        fs_err::set_permissions(
            &dst,
            std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
        )?;
        return Ok(());
    }
    if existing.is_some() {
        fs_err::remove_file(&dst)?;
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs_err::read_link(&src)?, &dst)?;
    } else {
        fs_err::copy(&src, &dst)?;
    }
    Ok(())
}

/// Applies one maintainer-script action inside `rootfs` (copies may read from the staging root).
fn apply(
    action: &postinst::Action,
    rootfs: &Path,
    full: &Path,
    accounts: &mut users::Accounts,
) -> Result<(), BuildError> {
    use postinst::Action;
    match action {
        Action::User(spec) => accounts.add_user(spec),
        Action::Group { name } => {
            accounts.add_group(name);
        }
        Action::Mkdir { path } => make_dir(rootfs, path, 0o755)?,
        Action::Chown { .. } => {} // given to the daemon's user with its unit's directories
        Action::Symlink { target, link } => make_link(rootfs, link, target)?,
        Action::Copy { from, to } => {
            let from_path = Path::new(from);
            let source = [rootfs, full].iter().find_map(|root| {
                resolve_in(root, from_path)
                    .map(|r| host(root, &r))
                    .filter(|h| h.is_file())
            });
            let Some(source) = source else { return Ok(()) }; // `cp` would fail; the script's `if` usually guards it
            let mut to_path = PathBuf::from(to);
            if resolve_in(rootfs, &to_path).is_some_and(|r| host(rootfs, &r).is_dir()) {
                to_path = to_path.join(from_path.file_name().unwrap_or_default());
            }
            let dst = place(rootfs, &to_path)?;
            if std::fs::symlink_metadata(&dst).is_ok() {
                return Ok(()); // scripts copy defaults only when absent
            }
            fs_err::copy(&source, &dst)?;
        }
    }
    Ok(())
}

/// One sentence for a command that is a script (a unit's `ExecStart=` wrapper): bakeoff lays out
/// an ELF program and its libraries, not an interpreter and its modules.
fn script_refusal(package: &str, program: &Path, file: &Path) -> String {
    let head = std::fs::read(file)
        .map(|b| b.into_iter().take(128).collect::<Vec<u8>>())
        .unwrap_or_default();
    let shebang = String::from_utf8_lossy(&head);
    let interpreter = shebang
        .strip_prefix("#!")
        .and_then(|l| l.lines().next())
        .map(|l| format!(", a script run by {}", l.trim()))
        .unwrap_or_default();
    format!(
        "deb:{package}: the command {}{interpreter} is not an ELF program; give the daemon's own \
         program in a bakeoff.toml beside the app: `package = \"{package}\"` and \
         `command = [\"/usr/bin/...\", ...]`",
        program.display()
    )
}

/// `mkdir -p`: every missing parent too.
fn make_dirs(rootfs: &Path, inside: &str, mode: u32) -> Result<(), BuildError> {
    let mut path = String::new();
    for c in inside.split('/').filter(|c| !c.is_empty()) {
        path.push('/');
        path.push_str(c);
        make_dir(rootfs, &path, mode)?;
    }
    Ok(())
}

/// The package's service unit: `NAME.service` for the requested or main package or its source,
/// else the only non-template `.service` it ships. Returns the unit's file name and text.
fn service_unit(
    root: &Path,
    requested: &str,
    main: &str,
    source: &str,
) -> Option<(String, String)> {
    let dirs = ["lib/systemd/system", "usr/lib/systemd/system"];
    for name in [requested, main, source] {
        for d in dirs {
            let p = root.join(d).join(format!("{name}.service"));
            if let Ok(text) = std::fs::read_to_string(&p) {
                return Some((format!("{name}.service"), text));
            }
        }
    }
    let mut found: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d)).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.ends_with(".service") && !n.contains('@')
        })
        .collect();
    found.sort();
    found.dedup();
    match found.as_slice() {
        [one] => Some((
            one.file_name()?.to_string_lossy().into_owned(),
            std::fs::read_to_string(one).ok()?,
        )),
        _ => None,
    }
}

fn make_dir(rootfs: &Path, inside: &str, mode: u32) -> Result<(), BuildError> {
    let inside = Path::new(inside);
    if let Some(real) = resolve_in(rootfs, inside) {
        let h = host(rootfs, &real);
        if h.is_dir() {
            return Ok(());
        }
    }
    let dst = place(rootfs, inside)?;
    if std::fs::symlink_metadata(&dst).is_err() {
        fs_err::create_dir(&dst)?;
        fs_err::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Creates `link` → `target` unless something is already at `link`.
fn make_link(rootfs: &Path, link: &str, target: &str) -> Result<(), BuildError> {
    let dst = place(rootfs, Path::new(link))?;
    if std::fs::symlink_metadata(&dst).is_err() {
        std::os::unix::fs::symlink(target, &dst)?;
    }
    Ok(())
}

fn replace_with_link(rootfs: &Path, link: &str, target: &str) -> Result<(), BuildError> {
    let dst = place(rootfs, Path::new(link))?;
    if let Ok(m) = std::fs::symlink_metadata(&dst) {
        if m.is_dir() {
            return Err(BuildError::Deb(format!(
                "cannot link {link} to {target}: a directory is there"
            )));
        }
        fs_err::remove_file(&dst)?;
    }
    std::os::unix::fs::symlink(target, &dst)?;
    Ok(())
}

fn write_file(rootfs: &Path, inside: &str, text: &str, mode: u32) -> Result<(), BuildError> {
    let dst = place(rootfs, Path::new(inside))?;
    if std::fs::symlink_metadata(&dst).is_ok_and(|m| !m.is_dir()) {
        fs_err::remove_file(&dst)?;
    }
    fs_err::write(&dst, text)?;
    fs_err::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The relative form of an absolute symlink `target` for a link at `link` (both inside the root).
fn relative_target(link: &Path, target: &Path) -> PathBuf {
    let from: Vec<_> = normal_components(link.parent().unwrap_or(Path::new("/")));
    let to: Vec<_> = normal_components(target);
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn relativize_links(root: &Path, inside: &Path) -> Result<(), BuildError> {
    for e in fs_err::read_dir(host(root, inside))? {
        let e = e?;
        let path = inside.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_symlink() {
            let target = fs_err::read_link(e.path())?;
            if target.is_absolute() {
                fs_err::remove_file(e.path())?;
                std::os::unix::fs::symlink(relative_target(&path, &target), e.path())?;
            }
        } else if ft.is_dir() {
            relativize_links(root, &path)?;
        }
    }
    Ok(())
}

fn tree_bytes(dir: &Path) -> Result<u64, BuildError> {
    let mut total = 0;
    for e in fs_err::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            total += tree_bytes(&e.path())?;
        } else if ft.is_file() {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dpkg_listing_and_nginx_module_pairs() {
        let listing = "drwxr-xr-x root/root         0 2024-05-29 10:24 ./\n\
            drwxr-xr-x root/root         0 2024-05-29 10:24 ./usr/share/nginx/modules-available/\n\
            -rw-r--r-- root/root        72 2024-05-29 10:24 ./usr/share/nginx/modules-available/mod-http-echo.conf\n\
            lrwxrwxrwx root/root         0 2024-05-29 10:24 ./usr/bin/redis-server -> redis-check-rdb\n\
            hrwxr-xr-x root/root         0 2024-05-29 10:24 ./usr/bin/a b link to ./usr/bin/c\n";
        assert_eq!(
            parse_listing(listing),
            vec![
                (PathBuf::from("/usr/share/nginx/modules-available"), true),
                (
                    PathBuf::from("/usr/share/nginx/modules-available/mod-http-echo.conf"),
                    false
                ),
                (PathBuf::from("/usr/bin/redis-server"), false),
                (PathBuf::from("/usr/bin/a b"), false),
            ]
        );
        let script = "for confpair in mod-http-echo.conf:50-mod-http-echo.conf  ; do\n\tfrom=$(echo $confpair | cut -d: -f1)\n";
        assert_eq!(
            nginx_module_links(script),
            vec![(
                "mod-http-echo.conf".to_string(),
                "50-mod-http-echo.conf".to_string()
            )]
        );
        assert!(nginx_module_links("for confpair in ../x:../../etc/passwd; do").is_empty());
    }

    #[test]
    fn source_field() {
        assert_eq!(
            source_from_fields("Source: redis (5:7.0.15-1~deb12u10)\nPackage: redis-tools\n"),
            "redis"
        );
        assert_eq!(
            source_from_fields("Source: nginx\nPackage: nginx-common\n"),
            "nginx"
        );
        assert_eq!(source_from_fields("Package: nginx\n"), "nginx");
    }

    #[test]
    fn docs_and_init_files_are_pruned() {
        for p in [
            "/usr/share/doc/nginx/copyright",
            "/usr/share/man/man8/nginx.8.gz",
            "/lib/systemd/system/nginx.service",
            "/etc/init.d/nginx",
        ] {
            assert!(pruned(Path::new(p)), "{p}");
        }
        for p in [
            "/usr/share/nginx/html/index.html",
            "/etc/nginx/nginx.conf",
            "/usr/sbin/nginx",
            "/usr/share/docs-not",
        ] {
            assert!(!pruned(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn relative_targets() {
        let r = |l: &str, t: &str| {
            relative_target(Path::new(l), Path::new(t))
                .display()
                .to_string()
        };
        assert_eq!(
            r(
                "/etc/nginx/sites-enabled/default",
                "/etc/nginx/sites-available/default"
            ),
            "../sites-available/default"
        );
        assert_eq!(r("/var/run", "/run"), "../run");
        assert_eq!(
            r(
                "/lib64/ld-linux-x86-64.so.2",
                "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
            ),
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        );
        assert_eq!(r("/a/b", "/a"), ".");
    }

    #[test]
    fn resolution_and_placement_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/real"), "x").unwrap();
        symlink("/usr/lib", root.join("lib")).unwrap();
        symlink("/../../../usr/lib/real", root.join("escape")).unwrap();
        assert_eq!(
            resolve_in(root, Path::new("/lib/real")),
            Some(PathBuf::from("/usr/lib/real"))
        );
        assert_eq!(
            resolve_in(root, Path::new("/escape")),
            Some(PathBuf::from("/usr/lib/real"))
        );
        assert_eq!(resolve_in(root, Path::new("/nope/x")), None);
        // A directory made through an absolute link lands in the root, not on this host.
        make_dir(root, "/lib/bakeoff-test-dir", 0o750).unwrap();
        assert!(root.join("usr/lib/bakeoff-test-dir").is_dir());
        write_file(root, "/var/x/y.conf", "z", 0o644).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("var/x/y.conf")).unwrap(),
            "z"
        );
        relativize_links(root, Path::new("/")).unwrap();
        assert_eq!(
            std::fs::read_link(root.join("lib")).unwrap(),
            PathBuf::from("usr/lib")
        );
        assert!(root.join("lib/real").is_file());
    }

    #[test]
    fn postinst_copies_and_links_are_applied() {
        let t = tempfile::tempdir().unwrap();
        let (rootfs, full) = (t.path().join("rootfs"), t.path().join("full"));
        std::fs::create_dir_all(rootfs.join("usr/share/nginx/html")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc/nginx/sites-available")).unwrap();
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(
            rootfs.join("usr/share/nginx/html/index.html"),
            "Welcome to nginx!",
        )
        .unwrap();
        let mut accounts = users::Accounts::base();
        for a in [
            postinst::Action::Symlink {
                target: "/etc/nginx/sites-available/default".into(),
                link: "/etc/nginx/sites-enabled/default".into(),
            },
            postinst::Action::Mkdir {
                path: "/var/www/html".into(),
            },
            postinst::Action::Copy {
                from: "/usr/share/nginx/html/index.html".into(),
                to: "/var/www/html/index.nginx-debian.html".into(),
            },
            postinst::Action::Copy {
                from: "/missing".into(),
                to: "/var/www/html/".into(),
            },
        ] {
            apply(&a, &rootfs, &full, &mut accounts).unwrap();
        }
        assert_eq!(
            std::fs::read_link(rootfs.join("etc/nginx/sites-enabled/default")).unwrap(),
            PathBuf::from("/etc/nginx/sites-available/default")
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("var/www/html/index.nginx-debian.html")).unwrap(),
            "Welcome to nginx!"
        );
    }
}

/// Property tests of what is read from Debian's tools and packages (control fields, dpkg-deb
/// listings, apt's simulation and URI lists, maintainer scripts): 256 cases each, no panic,
/// and well-formed fields are read as written.
#[cfg(test)]
mod props {
    use super::apt::{interpret_simulation, parse_inst_line, parse_print_uris};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn control_and_listings_never_panic(s in "\\PC{0,300}") {
            let _ = source_from_fields(&s);
            let _ = parse_listing(&s);
            let _ = postinst::actions(&s);
        }

        #[test]
        fn apt_output_never_panics(s in "(Inst |Conf |'http://[a-z./]{0,20}' |[ ()\\[\\]:=a-z0-9.+-]{0,30}\n){0,8}") {
            for line in s.lines() {
                let _ = parse_inst_line(line);
            }
            let _ = parse_print_uris(&s);
            let _ = interpret_simulation("nginx", true, &s, "");
            let _ = interpret_simulation("nginx", false, "", &s);
        }

        #[test]
        fn the_source_field_is_read(
            src in "[a-z0-9][a-z0-9+.-]{1,20}",
            pkg in "[a-z0-9][a-z0-9+.-]{1,20}",
        ) {
            prop_assert_eq!(source_from_fields(&format!("Source: {src} (1:2.0-1)\nPackage: {pkg}\n")), src);
            prop_assert_eq!(source_from_fields(&format!("Package: {pkg}\n")), pkg);
        }
    }
}
