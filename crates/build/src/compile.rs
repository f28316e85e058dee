use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bakeoff_detect::{app_binary_path, is_elf, BuildPlan, Source};
use sha2::{Digest, Sha256};

use crate::{hash, Artifact, ArtifactManifest, BuildError, Cache};

/// Bump when the layout of artifacts changes, so old cache entries are not reused.
const BUILDER_VERSION: &str = "bakeoff-build/2";

#[derive(Debug)]
pub struct BuildOutcome {
    pub artifact: Artifact,
    /// True when nothing was compiled: the artifact came from the cache.
    pub cached: bool,
    /// Wall time of this call.
    pub seconds: f64,
}

/// Builds the plan's app once; an unchanged rebuild returns the cached artifact without compiling.
pub fn build(
    plan: &BuildPlan,
    cache: &Cache,
    log: &dyn Fn(&str),
) -> Result<BuildOutcome, BuildError> {
    let start = Instant::now();
    // A Debian package is resolved to exact versions first: they are part of the input hash.
    let resolved = match &plan.source {
        Source::Deb { package } => Some(crate::deb::resolve(package, cache, log)?),
        other => match crate::lang::interpreter_package(other) {
            Some(package) => Some(crate::deb::resolve(package, cache, log)?),
            None => None,
        },
    };
    let id = input_hash(plan, resolved.as_ref())?;
    let final_dir = cache.artifacts().join(&id);
    if final_dir.join("artifact.json").is_file() {
        let artifact = Artifact::load(&final_dir)?;
        return Ok(BuildOutcome {
            artifact,
            cached: true,
            seconds: start.elapsed().as_secs_f64(),
        });
    }

    let work = cache.tmp()?;
    let staging = work.path().join("artifact");
    let rootfs = staging.join("rootfs");
    fs_err::create_dir_all(&rootfs)?;

    // A Debian package brings its own tree (see deb.rs); anything else is one program at /app/NAME.
    let deb = match &resolved {
        Some(r) if crate::lang::interpreter_package(&plan.source).is_some() => Some(
            crate::lang::lay_out(plan, r, cache, work.path(), &rootfs, log)?,
        ),
        Some(r) => Some(crate::deb::lay_out(
            plan,
            r,
            cache,
            work.path(),
            &rootfs,
            log,
        )?),
        // An OCI image brings its own tree too: its layers (see oci_input.rs).
        None => match &plan.source {
            Source::Image { archive, .. } => {
                Some(crate::oci_input::lay_out(plan, archive, &rootfs, log)?)
            }
            _ => None,
        },
    };
    let exe = match &deb {
        Some(d) => d.exe.clone(),
        None => produce_executable(plan, work.path(), log)?,
    };
    let binary = deb
        .as_ref()
        .map_or_else(|| app_binary_path(&plan.name), |d| d.binary.clone());
    let dest = rootfs.join(binary.trim_start_matches('/'));
    if deb.is_none() {
        fs_err::create_dir_all(dest.parent().unwrap())?;
        fs_err::copy(&exe, &dest)?;
        fs_err::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    }
    let binary_size = fs_err::metadata(&exe)?.len();
    // The executable, checked the way the platforms will see it: a truncated or foreign binary
    // stops here with one sentence, before any image exists.
    let info = bakeoff_elf::inspect(&exe).map_err(|e| BuildError::Closure(e.to_string()))?;
    if info.machine != std::env::consts::ARCH || info.class != bakeoff_elf::ElfClass::Elf64 {
        return Err(BuildError::Unsupported(format!(
            "{} is built for {}; bakeoff builds images for this host's {}",
            exe.display(),
            info.architecture(),
            std::env::consts::ARCH
        )));
    }
    let linkage = if info.interpreter.is_none() {
        "static"
    } else {
        "dynamic"
    };
    let mut env = plan.env.clone();
    if let Some(d) = &deb {
        env.extend(
            d.env
                .iter()
                .filter(|(k, _)| !plan.env.iter().any(|(pk, _)| pk == k))
                .cloned(),
        );
    }
    if linkage == "dynamic" && deb.is_none() {
        log("resolving shared libraries");
        let dirs = lay_out_libraries(&exe, &rootfs)?;
        if !dirs.is_empty() && !env.iter().any(|(k, _)| k == "LD_LIBRARY_PATH") {
            env.push(("LD_LIBRARY_PATH".into(), dirs.join(":")));
        }
    }
    for (src, dst) in &plan.files {
        copy_into_image(&rootfs, src, dst)?;
    }

    let command = match &deb {
        // An interpreted app's command names Debian's interpreter (detected or from bakeoff.toml).
        Some(_) if crate::lang::interpreter_package(&plan.source).is_some() => plan.command.clone(),
        Some(d) => d.command.clone(),
        None if plan.command.is_empty() => vec![binary.clone()],
        None => plan.command.clone(),
    };
    let user = run_user(plan, deb.as_ref(), &rootfs, log)?;
    if let Some(home) = user.as_ref().and_then(|u| u.home.clone()) {
        if !env.iter().any(|(k, _)| k == "HOME") {
            env.push(("HOME".into(), home));
        }
    }
    let manifest = ArtifactManifest {
        id: id.clone(),
        name: plan.name.clone(),
        input: plan.input.clone(),
        source: plan.source.clone(),
        command,
        args: plan.args.clone(),
        env,
        ports: plan.ports.clone(),
        // The unit's WorkingDirectory= unless bakeoff.toml chose one (the plan's default is /).
        workdir: match deb.as_ref().and_then(|d| d.workdir.clone()) {
            Some(w) if plan.workdir == "/" => w,
            _ => plan.workdir.clone(),
        },
        health: plan.health.clone(),
        memory: plan.memory,
        cpus: plan.cpus,
        binary,
        binary_size,
        linkage: linkage.into(),
        build_seconds: start.elapsed().as_secs_f64(),
        user,
    };
    fs_err::write(
        staging.join("artifact.json"),
        serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
    )?;
    fs_err::create_dir_all(cache.artifacts())?;
    // The rename is the commit point: before it nothing is visible under artifacts/.
    if let Err(e) = std::fs::rename(&staging, &final_dir) {
        if !final_dir.join("artifact.json").is_file() {
            return Err(e.into());
        }
    }
    let artifact = Artifact::load(&final_dir)?;
    Ok(BuildOutcome {
        artifact,
        cached: false,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Copies what ld.so would load for `exe` (interpreter, libraries, their symlinks) from this
/// host into `rootfs`; the program itself is already at /app/NAME. Returns library directories
/// that only ld.so.cache knew about (they go on LD_LIBRARY_PATH, as the image has no cache).
fn lay_out_libraries(exe: &Path, rootfs: &Path) -> Result<Vec<String>, BuildError> {
    let closure = bakeoff_elf::closure(exe, Path::new("/"))
        .map_err(|e| BuildError::Closure(e.to_string()))?;
    let exe_abs = fs_err::canonicalize(exe)?;
    let mut kept: Vec<bakeoff_elf::ClosureEntry> = closure
        .entries
        .iter()
        .filter(|e| !matches!(e.kind, bakeoff_elf::EntryKind::Dir) && e.path != exe_abs)
        .cloned()
        .collect();
    let needed_dirs: Vec<bakeoff_elf::ClosureEntry> = closure
        .entries
        .iter()
        .filter(|d| {
            matches!(d.kind, bakeoff_elf::EntryKind::Dir)
                && kept.iter().any(|e| e.path.starts_with(&d.path))
        })
        .cloned()
        .collect();
    kept.extend(needed_dirs);
    kept.sort();
    let trimmed = bakeoff_elf::Closure {
        entries: kept,
        loaded: closure.loaded.clone(),
        extra_library_dirs: closure.extra_library_dirs.clone(),
    };
    bakeoff_elf::copy_into(&trimmed, rootfs).map_err(|e| BuildError::Closure(e.to_string()))?;
    Ok(closure
        .extra_library_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect())
}

/// Who the command runs as: bakeoff.toml's `user`, else an image's `User`, else a unit's
/// `User=`; resolved against the image's own /etc/passwd and /etc/group.
fn run_user(
    plan: &BuildPlan,
    laid: Option<&crate::deb::Laid>,
    rootfs: &Path,
    log: &dyn Fn(&str),
) -> Result<Option<crate::RunUser>, BuildError> {
    let (spec, from) = match (&plan.user, &plan.source) {
        (Some(u), _) => (u, "bakeoff.toml's user"),
        (None, Source::Image { user: Some(u), .. }) => (u, "the image configuration's User"),
        _ => return Ok(laid.and_then(|l| l.user.clone())),
    };
    let user =
        crate::run_user::resolve(rootfs, spec, None, from).map_err(BuildError::Unsupported)?;
    log(&format!(
        "the app runs as {} (uid {}, gid {}) from {from}",
        user.spec, user.uid, user.gid
    ));
    Ok(Some(user))
}

/// A hash of everything that decides the artifact: the plan and the content of its inputs.
fn input_hash(
    plan: &BuildPlan,
    deb: Option<&crate::deb::Resolution>,
) -> Result<String, BuildError> {
    let mut h = Sha256::new();
    h.update(BUILDER_VERSION);
    h.update(serde_json::to_vec(plan).expect("plan serializes"));
    match &plan.source {
        Source::CFile { file } => hash::hash_path(&mut h, file)?,
        Source::Make { dir, .. } | Source::Cargo { dir } | Source::Custom { dir, .. } => {
            hash::hash_path(&mut h, dir)?
        }
        Source::Elf { path } => hash::hash_path(&mut h, path)?,
        Source::Image { archive, .. } => {
            hash::hash_path(&mut h, archive)?;
            h.update(crate::oci_input::LAYOUT_VERSION);
        }
        Source::Python { path, .. } | Source::Node { dir: path, .. } => {
            hash::hash_path(&mut h, path)?;
            h.update(crate::deb::LAYOUT_VERSION);
            h.update(crate::lang::LAYOUT_VERSION);
            h.update(deb.map(|r| r.fingerprint()).unwrap_or_default());
        }
        Source::Deb { package } => {
            h.update(package);
            h.update(crate::deb::LAYOUT_VERSION);
            h.update(deb.map(|r| r.fingerprint()).unwrap_or_default());
        }
    }
    for (src, _) in &plan.files {
        if !src.exists() {
            return Err(BuildError::MissingFile(src.clone()));
        }
        hash::hash_path(&mut h, src)?;
    }
    Ok(hash::hex(h))
}

fn run(cmd: &mut Command, what: &str, log: &dyn Fn(&str)) -> Result<String, BuildError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    log(&format!("running {program} for {what}"));
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BuildError::ToolMissing {
            tool: program.clone(),
            hint: match program.as_str() {
                "gcc" | "cc" => "install it with `apt-get install -y gcc libc6-dev`".into(),
                "make" => "install it with `apt-get install -y make`".into(),
                "cargo" => "install Rust with rustup (https://rustup.rs)".into(),
                _ => "install it or fix PATH".into(),
            },
        },
        _ => BuildError::Io(e),
    })?;
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if output.is_empty() {
            output = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        }
        let status = out
            .status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "killed".into());
        return Err(BuildError::CommandFailed {
            what: what.to_string(),
            status,
            output,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Compiles (or locates) the app's executable; returns its path.
fn produce_executable(
    plan: &BuildPlan,
    work: &Path,
    log: &dyn Fn(&str),
) -> Result<PathBuf, BuildError> {
    match &plan.source {
        Source::CFile { file } => {
            let out = work.join("app.out");
            let what = file.display().to_string();
            run(
                Command::new("gcc")
                    .args(["-O2", "-static", "-o"])
                    .arg(&out)
                    .arg(file),
                &what,
                log,
            )?;
            Ok(out)
        }
        Source::Make { dir, output } => {
            let src = work.join("src");
            copy_tree(dir, &src)?;
            let before = executables(&src)?;
            run(
                Command::new("make").arg("-C").arg(&src),
                &dir.display().to_string(),
                log,
            )?;
            pick_output(dir, &src, output.as_deref(), &before)
        }
        Source::Custom {
            dir,
            command,
            output,
        } => {
            let src = work.join("src");
            copy_tree(dir, &src)?;
            let before = executables(&src)?;
            run(
                Command::new("sh").arg("-c").arg(command).current_dir(&src),
                &format!("{} (`{command}`)", dir.display()),
                log,
            )?;
            pick_output(dir, &src, output.as_deref(), &before)
        }
        Source::Cargo { dir } => {
            let target = work.join("target");
            let stdout = run(
                Command::new("cargo")
                    .args([
                        "build",
                        "--release",
                        "--message-format=json-render-diagnostics",
                        "--target-dir",
                    ])
                    .arg(&target)
                    .env("RUSTFLAGS", "-C target-feature=+crt-static")
                    .current_dir(dir),
                &dir.display().to_string(),
                log,
            )?;
            let exes: Vec<PathBuf> = stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["reason"] == "compiler-artifact")
                .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
                .collect();
            match exes.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(BuildError::NoOutput { dir: dir.clone() }),
                many => many
                    .iter()
                    .find(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy() == plan.name)
                    })
                    .cloned()
                    .ok_or_else(|| BuildError::SeveralOutputs {
                        dir: dir.clone(),
                        found: names(many),
                    }),
            }
        }
        Source::Elf { path } => {
            if !is_elf(path) {
                return Err(BuildError::NotElf { path: path.clone() });
            }
            Ok(path.clone())
        }
        Source::Deb { package } => Err(BuildError::Unsupported(format!(
            "deb:{package}: Debian package inputs are not supported yet"
        ))),
        Source::Image { .. } => Err(BuildError::Unsupported(
            "an image's program comes from its layers".into(),
        )),
        Source::Python { .. } | Source::Node { .. } => Err(BuildError::Unsupported(
            "an interpreted app has no executable of its own".into(),
        )),
    }
}

fn names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn pick_output(
    dir: &Path,
    src: &Path,
    output: Option<&Path>,
    before: &[PathBuf],
) -> Result<PathBuf, BuildError> {
    if let Some(out) = output {
        let p = src.join(out);
        if !p.is_file() {
            return Err(BuildError::MissingOutput(dir.join(out)));
        }
        return Ok(p);
    }
    let new: Vec<PathBuf> = executables(src)?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    match new.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(BuildError::NoOutput {
            dir: dir.to_path_buf(),
        }),
        many => Err(BuildError::SeveralOutputs {
            dir: dir.to_path_buf(),
            found: names(many),
        }),
    }
}

/// Executable ELF files under `dir` (recursively), sorted.
pub fn executables(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs_err::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && e.metadata()?.permissions().mode() & 0o111 != 0
                && is_elf(&e.path())
            {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `dst`, a path in the image, as a host path under `root`, following the image's own symlinks
/// the way the guest will (an absolute target starts again at `root`). `..` in `dst`, or a
/// symlink whose `..` climbs above the image root, is refused: nothing is written outside
/// `root`. The last component is followed only when `follow_last`.
pub(crate) fn path_in_image(
    root: &Path,
    dst: &str,
    follow_last: bool,
) -> Result<PathBuf, BuildError> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::path::Component;
    let escapes = |why: &str| {
        BuildError::FileEscapes(format!(
            "the `[[files]]` destination `{dst}` leaves the image root {why}; it was not copied"
        ))
    };
    let mut todo: VecDeque<OsString> = VecDeque::new();
    for c in Path::new(dst).components() {
        match c {
            Component::Normal(n) => todo.push_back(n.to_os_string()),
            Component::ParentDir => return Err(escapes("through `..`")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut at: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            if at.pop().is_none() {
                return Err(escapes("through a symlink's `..`"));
            }
            continue;
        }
        if c == "." {
            continue;
        }
        let here: PathBuf = root.join(at.iter().collect::<PathBuf>()).join(&c);
        let is_link = std::fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink());
        if is_link && (follow_last || !todo.is_empty()) {
            links += 1;
            if links > 40 {
                return Err(escapes("through a loop of symlinks"));
            }
            let target = fs_err::read_link(&here)?;
            if target.is_absolute() {
                at.clear();
            }
            for t in target.components().rev() {
                match t {
                    Component::Normal(n) => todo.push_front(n.to_os_string()),
                    Component::ParentDir => todo.push_front("..".into()),
                    _ => {}
                }
            }
        } else {
            at.push(c);
        }
    }
    Ok(root.join(at.iter().collect::<PathBuf>()))
}

/// Copies a `[[files]]` entry into the image root, every path resolved inside it (see
/// [`path_in_image`]), so neither `dst` nor a symlink in the image or in `src` can make the
/// build write on the host.
pub(crate) fn copy_into_image(root: &Path, src: &Path, dst: &str) -> Result<(), BuildError> {
    let meta =
        std::fs::symlink_metadata(src).map_err(|_| BuildError::MissingFile(src.to_path_buf()))?;
    let target = path_in_image(root, dst, meta.is_dir())?;
    if let Some(parent) = target.parent() {
        fs_err::create_dir_all(parent)?;
    }
    if meta.is_dir() {
        fs_err::create_dir_all(&target)?;
        for e in fs_err::read_dir(src)? {
            let e = e?;
            if e.file_name() == ".git" || e.file_name() == "target" {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            copy_into_image(
                root,
                &e.path(),
                &format!("{}/{name}", dst.trim_end_matches('/')),
            )?;
        }
        return Ok(());
    }
    // Replace whatever is there (a symlink is not written through).
    if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
        fs_err::remove_file(&target)?;
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs_err::read_link(src)?, &target)?;
    } else if meta.is_file() {
        fs_err::copy(src, &target)?;
    } else {
        return Err(BuildError::Unsupported(format!(
            "{} is neither a file, a directory nor a symlink; `[[files]]` copies only those",
            src.display()
        )));
    }
    Ok(())
}

/// Copies a file or directory tree, keeping symlinks and modes. Named pipes, sockets and
/// devices are skipped (as hashing skips them): opening a pipe would block the build.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), BuildError> {
    let meta =
        std::fs::symlink_metadata(src).map_err(|_| BuildError::MissingFile(src.to_path_buf()))?;
    if !(meta.is_file() || meta.is_dir() || meta.file_type().is_symlink()) {
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        fs_err::create_dir_all(parent)?;
    }
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
        // Replace a symlink already there (a Debian rootfs has some) instead of writing through it.
        if std::fs::symlink_metadata(dst).is_ok_and(|m| m.file_type().is_symlink()) {
            fs_err::remove_file(dst)?;
        }
        fs_err::copy(src, dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[[files]]` used to be joined onto the image root as text: `..` or a symlink (shipped by
    /// the app itself) wrote on the host. Every path now resolves inside the image.
    #[test]
    fn files_never_land_outside_the_image() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("image/rootfs");
        let host = t.path().join("host");
        fs_err::create_dir_all(&root).unwrap();
        fs_err::create_dir_all(&host).unwrap();
        let app = t.path().join("app");
        fs_err::create_dir_all(&app).unwrap();
        fs_err::write(app.join("f"), "payload").unwrap();
        // An absolute link means the image's own root, as in the guest.
        std::os::unix::fs::symlink("/", app.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../..", app.join("up")).unwrap();
        copy_into_image(&root, &app, "/a").unwrap();
        assert!(root.join("a/f").is_file());
        copy_into_image(&root, &app.join("f"), "/a/abs/tmp/x").unwrap();
        assert!(
            root.join("tmp/x").is_file(),
            "through `/` stays in the image"
        );
        let e = copy_into_image(&root, &app.join("f"), &format!("/a/up{}/x", host.display()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the `[[files]]` destination `/a/up")
                && e.contains("leaves the image root through a symlink's `..`"),
            "{e}"
        );
        let e = copy_into_image(&root, &app.join("f"), "/../../host/x")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the `[[files]]` destination `/../../host/x` leaves the image root through `..`; it was not copied");
        assert_eq!(
            fs_err::read_dir(&host).unwrap().count(),
            0,
            "nothing written on the host"
        );
        assert!(!t.path().join("x").exists());
        // A link at the destination is replaced, not written through.
        std::os::unix::fs::symlink(host.join("victim"), root.join("etc-link")).unwrap();
        copy_into_image(&root, &app.join("f"), "/etc-link").unwrap();
        assert!(!host.join("victim").exists());
        assert!(root.join("etc-link").is_file());
    }

    fn cache() -> (tempfile::TempDir, Cache) {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::new(t.path().join("cache"));
        (t, c)
    }

    #[test]
    fn builds_example_once_then_reuses_it() {
        let (_t, cache) = cache();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
        let plan = bakeoff_detect::detect(example.to_str().unwrap()).unwrap();
        let first = build(&plan, &cache, &|_| {}).unwrap();
        assert!(!first.cached);
        let m = &first.artifact.manifest;
        assert_eq!(
            (m.command.clone(), m.linkage.as_str()),
            (vec!["/app/hello".to_string()], "static")
        );
        let entries = first.artifact.entries().unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["app", "app/hello"]);
        let logged = std::cell::Cell::new(false);
        let second = build(&plan, &cache, &|_| logged.set(true)).unwrap();
        assert!(
            second.cached && !logged.get(),
            "an unchanged rebuild must not compile"
        );
        assert_eq!(second.artifact.manifest.id, m.id);
        // Leftover scratch space is gone.
        assert_eq!(
            std::fs::read_dir(cache.root().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn changed_source_is_rebuilt() {
        let (t, cache) = cache();
        let src = t.path().join("a.c");
        std::fs::write(&src, "int main(void){return 0;}").unwrap();
        let plan = bakeoff_detect::detect(src.to_str().unwrap()).unwrap();
        let a = build(&plan, &cache, &|_| {}).unwrap().artifact.manifest.id;
        std::fs::write(&src, "int main(void){return 1;}").unwrap();
        let b = build(&plan, &cache, &|_| {}).unwrap();
        assert!(!b.cached);
        assert_ne!(a, b.artifact.manifest.id);
    }

    #[test]
    fn compile_error_shows_compiler_output_and_leaves_nothing() {
        let (t, cache) = cache();
        let src = t.path().join("broken.c");
        std::fs::write(&src, "int main(void) { return undefined_thing; }\n").unwrap();
        let plan = bakeoff_detect::detect(src.to_str().unwrap()).unwrap();
        let e = build(&plan, &cache, &|_| {}).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "building {} failed (exit status 1):",
                src.display()
            )),
            "{e}"
        );
        assert!(e.contains("undefined_thing"), "{e}");
        let artifacts = cache.artifacts();
        assert!(!artifacts.exists() || std::fs::read_dir(&artifacts).unwrap().count() == 0);
        assert_eq!(
            std::fs::read_dir(cache.root().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn makefile_project_and_extra_files() {
        let (t, cache) = cache();
        let dir = t.path().join("proj");
        std::fs::create_dir_all(dir.join("conf")).unwrap();
        std::fs::write(dir.join("main.c"), "int main(void){return 0;}").unwrap();
        std::fs::write(
            dir.join("Makefile"),
            "srv: main.c\n\tgcc -static -o srv main.c\n",
        )
        .unwrap();
        std::fs::write(dir.join("conf/app.conf"), "x=1\n").unwrap();
        std::fs::write(
            dir.join("bakeoff.toml"),
            "[[files]]\nsrc = \"conf\"\ndst = \"/etc/proj\"\n",
        )
        .unwrap();
        let plan = bakeoff_detect::detect(dir.to_str().unwrap()).unwrap();
        let out = build(&plan, &cache, &|_| {}).unwrap();
        let paths: Vec<String> = out
            .artifact
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            vec!["app", "app/proj", "etc", "etc/proj", "etc/proj/app.conf"]
        );
    }
}

#[cfg(test)]
mod dynamic_tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_brings_its_interpreter_and_libraries() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path().join("cache"));
        let plan = bakeoff_detect::detect("/usr/bin/curl").unwrap();
        let out = build(&plan, &cache, &|_| {}).unwrap();
        assert_eq!(out.artifact.manifest.linkage, "dynamic");
        let paths: Vec<String> = out
            .artifact
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert!(paths.contains(&"app/curl".to_string()), "{paths:?}");
        assert!(
            paths.iter().any(|p| p.contains("libcurl.so.4")),
            "{paths:?}"
        );
        // /lib64 may be a symlink into usr/ (merged /usr); the interpreter path must resolve.
        assert!(
            out.artifact
                .rootfs()
                .join("lib64/ld-linux-x86-64.so.2")
                .is_file(),
            "{paths:?}"
        );
        assert!(
            !paths.iter().any(|p| p.starts_with("usr/bin")),
            "the program is only at /app: {paths:?}"
        );
        // The laid-out root really runs: chroot-free check with the image's own loader.
        let root = out.artifact.rootfs();
        let loader = root.join("lib64/ld-linux-x86-64.so.2");
        let lib_dirs = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"]
            .map(|d| root.join(d).display().to_string())
            .join(":");
        let run = Command::new(&loader)
            .args(["--inhibit-cache", "--library-path", &lib_dirs])
            .arg(root.join("app/curl"))
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            run.status.success() && String::from_utf8_lossy(&run.stdout).starts_with("curl "),
            "{run:?}"
        );
    }
}
