//! An interpreter from Debian's packages (python3, nodejs) laid out for an app that runs on it.
//!
//! Unlike a daemon, an interpreter's useful files are spread over several binary packages of
//! its source packages (python3.11-minimal, libpython3.11-stdlib, ...; nodejs, libnode108), so
//! every package whose source the caller names is kept whole (minus documentation, see
//! [`super::PRUNED`]), plus a few data packages programs read at run time (MIME types, time
//! zones, CA certificates, `/etc/services`) when the interpreter depends on them. The app's own
//! tree — already holding its installed dependencies — is placed at `/app` inside the staging
//! root before the ld.so closures are computed, so native modules (a wheel's `.so`, an npm
//! addon's `.node`) bring their libraries too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{
    add_closure, apt, copy_entry, dpkg_deb, find_program, host, is_elf_file, make_dir, make_link,
    relativize_links, resolve_in, source_of, tree_bytes, users, walk_kept, write_file, Laid,
    Resolution, DEFAULT_PATH,
};
use crate::{BuildError, Cache};

use super::data::DATA_PACKAGES;

/// Which interpreter: its program and which packages to keep whole (by name and source).
pub(crate) struct Interpreter<'a> {
    pub program: &'a str,
    pub whole: &'a dyn Fn(&str, &str) -> bool,
}

/// Lays out the interpreter `program`, keeping whole the packages for which `whole(name,
/// source)` holds, and the app tree `app` (copied to `/app`) into `rootfs`.
pub(crate) fn lay_out(
    res: &Resolution,
    interpreter: Interpreter,
    app: &Path,
    cache: &Cache,
    work: &Path,
    rootfs: &Path,
    log: &dyn Fn(&str),
) -> Result<Laid, BuildError> {
    let Interpreter { program, whole } = interpreter;
    let debs = apt::fetch(res, cache, log)?;
    log(&format!(
        "unpacking {} Debian packages with dpkg-deb",
        debs.len()
    ));
    let full = work.join("deb-root");
    let whole_root = work.join("deb-whole");
    fs_err::create_dir_all(&full)?;
    fs_err::create_dir_all(&whole_root)?;
    let mut kept_packages = Vec::new();
    let mut data_packages = Vec::new();
    for (p, deb) in res.packages.iter().zip(&debs) {
        dpkg_deb(&[Path::new("-x"), deb, &full])?;
        if DATA_PACKAGES.contains(&p.name.as_str()) {
            data_packages.push(p.name.clone());
        }
        if whole(&p.name, &source_of(deb)?) || DATA_PACKAGES.contains(&p.name.as_str()) {
            dpkg_deb(&[Path::new("-x"), deb, &whole_root])?;
            kept_packages.push(format!("{}={}", p.name, p.version));
        }
    }
    log(&format!("keeping whole: {}", kept_packages.join(", ")));
    let mut keep: BTreeSet<PathBuf> = BTreeSet::new();
    walk_kept(&whole_root, Path::new("/"), &mut keep)?;

    // The app, with its dependencies, at /app of the staging root.
    crate::compile::copy_tree(app, &host(&full, Path::new(bakeoff_detect::APP_DIR)))?;
    keep.insert(PathBuf::from(bakeoff_detect::APP_DIR));
    walk_kept(&full, Path::new(bakeoff_detect::APP_DIR), &mut keep)?;

    let exe_inside = find_program(&full, program).ok_or_else(|| {
        BuildError::Deb(format!(
            "deb:{}: {program} is in none of its packages",
            res.requested
        ))
    })?;
    log(&format!(
        "resolving the shared libraries of {} and of the app's native modules",
        exe_inside.display()
    ));
    let mut library_dirs: BTreeSet<String> = BTreeSet::new();
    let closure =
        bakeoff_elf::closure(&exe_inside, &full).map_err(|e| BuildError::Closure(e.to_string()))?;
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
    let accounts = users::Accounts::base();
    write_file(rootfs, "/etc/passwd", &accounts.passwd(), 0o644)?;
    write_file(rootfs, "/etc/group", &accounts.group_file(), 0o644)?;
    for made in super::data::configure(rootfs, &data_packages)? {
        log(&format!("made {made}"));
    }
    write_file(
        rootfs,
        "/etc/nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
        0o644,
    )?;
    for (dir, mode) in [("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/run", 0o755)] {
        make_dir(rootfs, dir, mode)?;
    }
    make_link(rootfs, "/var/run", "/run")?;
    relativize_links(rootfs, Path::new("/"))?;

    let real = resolve_in(rootfs, &exe_inside).ok_or_else(|| {
        BuildError::Deb(format!(
            "{} did not survive the layout",
            exe_inside.display()
        ))
    })?;
    let mut env = vec![("PATH".to_string(), DEFAULT_PATH.to_string())];
    if !library_dirs.is_empty() {
        env.push((
            "LD_LIBRARY_PATH".into(),
            library_dirs.into_iter().collect::<Vec<_>>().join(":"),
        ));
    }
    log(&format!(
        "kept {:.1} MB of {:.1} MB unpacked from {} packages",
        tree_bytes(rootfs)? as f64 / 1e6,
        tree_bytes(&full)? as f64 / 1e6,
        res.packages.len()
    ));
    Ok(Laid {
        exe: host(rootfs, &real),
        binary: exe_inside.display().to_string(),
        command: vec![exe_inside.display().to_string()],
        env,
        workdir: None,
        user: None,
    })
}
