//! `closure` against the host's real loader (ldd, running the programs) and fake roots.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use bakeoff_elf::{closure, copy_into, ElfError, EntryKind};
use common::{can_chroot, fixture, gcc, have_gcc, write_c};

/// Real paths ld.so loads for `exe` on this host, as `ldd` reports them (plus the interpreter).
fn ldd_files(exe: &Path) -> Option<BTreeSet<PathBuf>> {
    let out = Command::new("ldd").arg(exe).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut files = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split(" (").next().unwrap_or("").trim(),
            None => line.split(" (").next().unwrap_or("").trim(),
        };
        if path.starts_with('/') {
            files.insert(std::fs::canonicalize(path).ok()?);
        }
    }
    Some(files)
}

#[test]
fn host_programs_have_the_same_files_as_ldd_says() {
    let mut checked = 0;
    for exe in [
        "/usr/bin/curl",
        "/usr/bin/ls",
        "/usr/bin/git",
        "/usr/bin/ssh",
        "/usr/bin/python3",
        "/usr/bin/gpg",
    ] {
        let exe = Path::new(exe);
        if !exe.exists() {
            continue;
        }
        let Some(expected) = ldd_files(exe) else {
            eprintln!("skipping {}: ldd cannot list it", exe.display());
            continue;
        };
        let closure = closure(exe, Path::new("/")).unwrap();
        let mut ours: BTreeSet<PathBuf> = closure.files().map(Path::to_path_buf).collect();
        ours.remove(&std::fs::canonicalize(exe).unwrap());
        assert_eq!(
            ours,
            expected,
            "closure of {} differs from ldd",
            exe.display()
        );
        checked += 1;
    }
    if checked == 0 {
        eprintln!("skipping: none of the probed programs (curl, ls, git, ...) is installed");
    }
}

#[test]
fn curl_closure_keeps_interpreter_and_soname_symlinks_and_runs_in_a_new_root() {
    let curl = Path::new("/usr/bin/curl");
    if !curl.exists() {
        eprintln!("skipping: /usr/bin/curl is not installed");
        return;
    }
    let closure = closure(curl, Path::new("/")).unwrap();

    // libcurl.so.4 is there, as the soname symlink ld.so opens plus the file it points to
    let libcurl = closure
        .entries
        .iter()
        .find(|e| e.path.file_name().is_some_and(|n| n == "libcurl.so.4"))
        .expect("libcurl.so.4 in the closure");
    assert!(
        matches!(
            libcurl.kind,
            EntryKind::Symlink { .. } | EntryKind::File { .. }
        ),
        "{libcurl:?}"
    );
    let libcurl_file = closure
        .lookup(&libcurl.path)
        .expect("libcurl.so.4 resolves inside the closure");
    assert!(matches!(libcurl_file.kind, EntryKind::File { .. }));

    // the interpreter path from PT_INTERP works in the closure, and ends at a real file
    let interp = Path::new("/lib64/ld-linux-x86-64.so.2");
    let real = std::fs::canonicalize(interp).unwrap();
    let found = closure
        .lookup(interp)
        .expect("the interpreter path resolves inside the closure");
    assert_eq!(found.path, real);
    assert_eq!(
        found.kind,
        EntryKind::File {
            source: real.clone()
        }
    );
    if std::fs::symlink_metadata("/usr/lib64/ld-linux-x86-64.so.2")
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        // merged /usr: /lib64 -> usr/lib64, and the interpreter itself is an absolute symlink
        let link = closure
            .entries
            .iter()
            .find(|e| e.path == Path::new("/usr/lib64/ld-linux-x86-64.so.2"))
            .unwrap();
        assert_eq!(
            link.kind,
            EntryKind::Symlink {
                target: std::fs::read_link("/usr/lib64/ld-linux-x86-64.so.2").unwrap()
            }
        );
    }
    assert_eq!(closure.loaded[0].path, curl);
    assert_eq!(closure.loaded[1].name, "/lib64/ld-linux-x86-64.so.2");

    // entries are sorted, unique, and every parent is a directory entry
    let paths: Vec<&Path> = closure.entries.iter().map(|e| e.path.as_path()).collect();
    assert!(
        paths.windows(2).all(|w| w[0] < w[1]),
        "entries are sorted without duplicates"
    );
    for e in &closure.entries {
        if let Some(parent) = e.path.parent().filter(|p| *p != Path::new("/")) {
            let p = closure.entries.iter().find(|x| x.path == parent).unwrap();
            assert_eq!(p.kind, EntryKind::Dir, "parent of {}", e.path.display());
        }
    }

    let dest = tempfile::tempdir().unwrap();
    copy_into(&closure, dest.path()).unwrap();
    copy_into(&closure, dest.path()).expect("laying out twice is fine");
    let copied = dest.path().join("usr/bin/curl");
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
    };
    assert_eq!(
        mode(&copied),
        mode(curl),
        "copied files keep their permission bits"
    );
    assert_eq!(
        std::fs::read_link(dest.path().join("lib64")).unwrap(),
        std::fs::read_link("/lib64").unwrap()
    );
    if can_chroot() {
        let out = Command::new("chroot")
            .arg(dest.path())
            .args(["/usr/bin/curl", "--version"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl in the new root failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("curl "));
    }
}

#[test]
fn static_program_closure_is_just_itself() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = gcc(
        &fixture("http_server.c"),
        &tmp.path().join("srv"),
        &["-static"],
    );
    let closure = closure(&exe, tmp.path()).unwrap();
    assert_eq!(closure.files().collect::<Vec<_>>(), vec![Path::new("/srv")]);
    assert_eq!(closure.entries.len(), 1);
    assert_eq!(
        closure.entries[0].kind,
        EntryKind::File {
            source: std::fs::canonicalize(&exe).unwrap()
        }
    );
    assert_eq!(closure.loaded.len(), 1);
}

/// A fake root: `/opt/app/bin/app` with RUNPATH `$ORIGIN/../lib32:$ORIGIN/../lib`, a 32-bit decoy
/// in lib32, `libgreet.so.1 -> libgreet.so.1.0` in lib, another libgreet in the default directory,
/// and copies of the host's libc and interpreter.
struct FakeRoot {
    dir: tempfile::TempDir,
}

impl FakeRoot {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn new(link_args: &[&str]) -> FakeRoot {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let build = r.join("build");
        std::fs::create_dir_all(&build).unwrap();
        let lib_c = write_c(&build, "greet.c", "int greet(void) { return 42; }\n");
        let app_c = write_c(
            &build,
            "app.c",
            "#include <stdio.h>\nint greet(void);\nint main(void) { printf(\"greet=%d\\n\", greet()); return 0; }\n",
        );
        let lib = gcc(
            &lib_c,
            &r.join("opt/app/lib/libgreet.so.1.0"),
            &["-shared", "-fPIC", "-Wl,-soname,libgreet.so.1"],
        );
        symlink("libgreet.so.1.0", r.join("opt/app/lib/libgreet.so.1")).unwrap();
        symlink("libgreet.so.1.0", r.join("opt/app/lib/libgreet.so")).unwrap();
        let lib_dir = format!("-L{}", r.join("opt/app/lib").display());
        let mut args = vec![lib_dir.as_str(), "-lgreet"];
        args.extend_from_slice(link_args);
        gcc(&app_c, &r.join("opt/app/bin/app"), &args);
        std::fs::create_dir_all(r.join("opt/app/lib32")).unwrap();
        std::fs::write(
            r.join("opt/app/lib32/libgreet.so.1"),
            common::elf32_library(),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::copy(&lib, r.join("usr/lib/x86_64-linux-gnu/libgreet.so.1")).unwrap();
        std::fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::copy(
            "/lib/x86_64-linux-gnu/libc.so.6",
            r.join("lib/x86_64-linux-gnu/libc.so.6"),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("lib64")).unwrap();
        std::fs::copy(
            "/lib64/ld-linux-x86-64.so.2",
            r.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::fs::remove_dir_all(&build).unwrap();
        FakeRoot { dir }
    }
}

fn host_is_x86_64_glibc() -> bool {
    let ok = cfg!(target_arch = "x86_64") && Path::new("/lib/x86_64-linux-gnu/libc.so.6").exists();
    if !ok {
        eprintln!("skipping: this test builds an x86_64 glibc fake root");
    }
    ok
}

#[test]
fn origin_runpath_in_a_fake_root_wins_over_default_dirs_and_skips_wrong_class() {
    if !have_gcc() || !host_is_x86_64_glibc() {
        return;
    }
    let fake = FakeRoot::new(&["-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib32:$ORIGIN/../lib"]);
    let root = fake.root();
    let exe = root.join("opt/app/bin/app");

    let closure = closure(&exe, root).unwrap();
    let files: Vec<&Path> = closure.files().collect();
    assert_eq!(
        files,
        vec![
            Path::new("/lib/x86_64-linux-gnu/libc.so.6"),
            Path::new("/lib64/ld-linux-x86-64.so.2"),
            Path::new("/opt/app/bin/app"),
            Path::new("/opt/app/lib/libgreet.so.1.0"),
        ]
    );
    let link = closure
        .entries
        .iter()
        .find(|e| e.path == Path::new("/opt/app/lib/libgreet.so.1"))
        .unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Symlink {
            target: PathBuf::from("libgreet.so.1.0")
        }
    );
    let names: Vec<&str> = closure.loaded.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "/opt/app/bin/app",
            "/lib64/ld-linux-x86-64.so.2",
            "libgreet.so.1",
            "libc.so.6"
        ]
    );
    assert_eq!(
        closure.loaded[2].path,
        Path::new("/opt/app/bin/../lib/libgreet.so.1")
    );
    assert!(closure.extra_library_dirs.is_empty());

    // The host's own ld.so agrees: the program runs in place and ldd picks the same library.
    let out = Command::new(&exe).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "greet=42\n");
    let ldd = ldd_files(&exe).unwrap();
    assert!(
        ldd.contains(&std::fs::canonicalize(root.join("opt/app/lib/libgreet.so.1.0")).unwrap()),
        "{ldd:?}"
    );

    // Laid out in an empty root, it runs there. ld.so takes the program's $ORIGIN from
    // /proc/self/exe, so /proc must be mounted in the new root (Docker and our init do that).
    let dest = tempfile::tempdir().unwrap();
    copy_into(&closure, dest.path()).unwrap();
    std::fs::create_dir(dest.path().join("proc")).unwrap();
    if can_chroot() {
        let out = Command::new("unshare")
            .args([
                "--mount",
                "--fork",
                "sh",
                "-c",
                r#"mount -t proc proc "$1/proc" && exec chroot "$1" /opt/app/bin/app"#,
                "sh",
            ])
            .arg(dest.path())
            .output();
        match out {
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("unshare failed") => {
                eprintln!("skipping the run in the new root: unshare is not permitted here")
            }
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(String::from_utf8_lossy(&out.stdout), "greet=42\n");
            }
            Err(e) => eprintln!("skipping the run in the new root: unshare cannot run ({e})"),
        }
    }
}

#[test]
fn rpath_of_the_program_applies_to_its_libraries_but_runpath_does_not() {
    if !have_gcc() || !host_is_x86_64_glibc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let lib = root.join("opt/app/lib");
    let b = write_c(root, "b.c", "int b(void) { return 2; }\n");
    let a = write_c(
        root,
        "a.c",
        "int b(void);\nint a(void) { return b() + 1; }\n",
    );
    let main = write_c(
        root,
        "main.c",
        "int a(void);\nint main(void) { return a() == 3 ? 0 : 1; }\n",
    );
    gcc(
        &b,
        &lib.join("libb.so.1"),
        &["-shared", "-fPIC", "-Wl,-soname,libb.so.1"],
    );
    symlink("libb.so.1", lib.join("libb.so")).unwrap();
    let l = format!("-L{}", lib.display());
    gcc(
        &a,
        &lib.join("liba.so.1"),
        &["-shared", "-fPIC", "-Wl,-soname,liba.so.1", &l, "-lb"],
    );
    symlink("liba.so.1", lib.join("liba.so")).unwrap();
    let with_rpath = gcc(
        &main,
        &root.join("opt/app/bin/rpath"),
        &[&l, "-la", "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../lib"],
    );
    let with_runpath = gcc(
        &main,
        &root.join("opt/app/bin/runpath"),
        &[&l, "-la", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib"],
    );

    // RPATH: the program runs, and the closure finds libb through the program's RPATH.
    assert!(Command::new(&with_rpath).status().unwrap().success());
    let c = closure(&with_rpath, Path::new("/")).unwrap();
    let real_b = std::fs::canonicalize(lib.join("libb.so.1")).unwrap();
    assert!(c.files().any(|f| f == real_b), "{:#?}", c.loaded);

    // RUNPATH only serves the program's own DT_NEEDED: ld.so fails on libb, and so do we.
    let run = Command::new(&with_runpath).output().unwrap();
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("libb.so.1"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let err = closure(&with_runpath, Path::new("/")).unwrap_err();
    assert!(
        matches!(&err, ElfError::LibraryNotFound { name, .. } if name == "libb.so.1"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("libb.so.1 (needed by "),
        "{err}"
    );
    assert!(err
        .to_string()
        .ends_with("liba.so.1) was not found in ld.so.cache or the default library directories"));
}

#[test]
fn a_missing_library_names_itself_and_the_object_that_needs_it() {
    if !have_gcc() || !host_is_x86_64_glibc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let root = tmp.path().join("root");
    let gone = write_c(tmp.path(), "gone.c", "int gone(void) { return 0; }\n");
    let main = write_c(
        tmp.path(),
        "main.c",
        "int gone(void);\nint main(void) { return gone(); }\n",
    );
    gcc(
        &gone,
        &build.join("libgone.so.1"),
        &["-shared", "-fPIC", "-Wl,-soname,libgone.so.1"],
    );
    std::os::unix::fs::symlink("libgone.so.1", build.join("libgone.so")).unwrap();
    gcc(
        &main,
        &root.join("usr/bin/bar"),
        &[&format!("-L{}", build.display()), "-lgone"],
    );
    std::fs::create_dir_all(root.join("lib64")).unwrap();
    std::fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        root.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();

    let err = closure(Path::new("/usr/bin/bar"), &root).unwrap_err();
    assert_eq!(
        err.to_string(),
        "libgone.so.1 (needed by /usr/bin/bar) was not found in ld.so.cache or the default library directories"
    );

    // A wrong-class file in a default directory is skipped, and said so.
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::write(root.join("usr/lib/libgone.so.1"), common::elf32_library()).unwrap();
    let err = closure(Path::new("/usr/bin/bar"), &root).unwrap_err();
    assert_eq!(
        err.to_string(),
        "libgone.so.1 (needed by /usr/bin/bar) was not found in ld.so.cache or the default library directories \
         (skipped: /usr/lib/libgone.so.1 is for i386 (32-bit, little-endian))"
    );

    // A file that is not ELF stops ld.so ("invalid ELF header"), and stops us.
    std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
    std::fs::write(
        root.join("lib/x86_64-linux-gnu/libgone.so.1"),
        vec![b'#'; 200],
    )
    .unwrap();
    let err = closure(Path::new("/usr/bin/bar"), &root).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/lib/x86_64-linux-gnu/libgone.so.1 (needed by /usr/bin/bar) cannot be loaded: it is not an ELF file"
    );

    let err = closure(Path::new("/usr/bin/baz"), &root).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "/usr/bin/baz does not exist in {}",
            std::fs::canonicalize(&root).unwrap().display()
        )
    );
    let err = closure(Path::new("/usr/bin/bar"), &tmp.path().join("no-such-root")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot use {} as a filesystem root",
            tmp.path().join("no-such-root").display()
        )
    );

    std::fs::remove_file(root.join("lib64/ld-linux-x86-64.so.2")).unwrap();
    let err = closure(Path::new("/usr/bin/bar"), &root).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the program interpreter /lib64/ld-linux-x86-64.so.2 (needed by /usr/bin/bar) was not found in {}",
            std::fs::canonicalize(&root).unwrap().display()
        )
    );
}

/// `ldconfig -r ROOT` writes ROOT/etc/ld.so.cache from ROOT/etc/ld.so.conf; the closure reads it.
#[test]
fn ld_so_cache_of_the_root_is_used_and_extra_dirs_are_reported() {
    if !have_gcc() || !host_is_x86_64_glibc() {
        return;
    }
    let fake = FakeRoot::new(&[]);
    let root = fake.root();
    // move libgreet out of the RUNPATH-less program's reach, into a directory only the cache knows
    std::fs::remove_file(root.join("usr/lib/x86_64-linux-gnu/libgreet.so.1")).unwrap();
    std::fs::create_dir_all(root.join("opt/cachelib")).unwrap();
    std::fs::rename(
        root.join("opt/app/lib/libgreet.so.1.0"),
        root.join("opt/cachelib/libgreet.so.1.0"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/ld.so.conf"), "/opt/cachelib\n").unwrap();
    let status = Command::new("ldconfig").arg("-r").arg(root).status();
    if !status.is_ok_and(|s| s.success()) || !root.join("etc/ld.so.cache").exists() {
        eprintln!(
            "skipping: `ldconfig -r` could not build a cache in the fake root (it needs root)"
        );
        return;
    }
    let closure = closure(Path::new("/opt/app/bin/app"), root).unwrap();
    let greet = closure
        .loaded
        .iter()
        .find(|o| o.name == "libgreet.so.1")
        .unwrap();
    assert_eq!(greet.path, Path::new("/opt/cachelib/libgreet.so.1"));
    assert_eq!(greet.real, Path::new("/opt/cachelib/libgreet.so.1.0"));
    assert_eq!(
        closure.extra_library_dirs,
        vec![PathBuf::from("/opt/cachelib")]
    );
}

/// A staging root made of unpacked Debian packages: nginx and the packages of its libraries.
/// The closure is resolved there (not on the host), laid out, and nginx runs in the result.
#[test]
fn debian_nginx_closure_in_a_staging_root() {
    let packages = [
        "nginx",
        "libc6",
        "libcrypt1",
        "libpcre2-8-0",
        "libssl3",
        "zlib1g",
    ];
    let root = match common::debian_root("nginx-with-libs", &packages) {
        Ok(root) => root,
        Err(reason) => {
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let root_real = std::fs::canonicalize(&root).unwrap();
    // a host path under the root is taken as the path inside it
    let closure = closure(&root.join("usr/sbin/nginx"), &root).unwrap();
    assert_eq!(closure.loaded[0].path, Path::new("/usr/sbin/nginx"));
    for entry in &closure.entries {
        if let EntryKind::File { source } = &entry.kind {
            assert!(
                source.starts_with(&root_real),
                "{} comes from outside the root",
                source.display()
            );
        }
    }
    let names: BTreeSet<&str> = closure.loaded.iter().map(|o| o.name.as_str()).collect();
    for lib in [
        "libcrypt.so.1",
        "libpcre2-8.so.0",
        "libssl.so.3",
        "libcrypto.so.3",
        "libz.so.1",
        "libc.so.6",
    ] {
        assert!(names.contains(lib), "{lib} missing from {names:?}");
    }
    let interp = closure
        .lookup(Path::new("/lib64/ld-linux-x86-64.so.2"))
        .expect("interpreter in the closure");
    assert!(matches!(interp.kind, EntryKind::File { .. }));

    let dest = tempfile::tempdir().unwrap();
    copy_into(&closure, dest.path()).unwrap();
    if can_chroot() {
        let out = Command::new("chroot")
            .arg(dest.path())
            .args(["/usr/sbin/nginx", "-v"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.starts_with("nginx version: nginx/"),
            "{stderr}"
        );
    }
}

#[test]
fn debian_nginx_alone_names_its_first_missing_library() {
    let root = match common::debian_root("nginx-only", &["nginx"]) {
        Ok(root) => root,
        Err(reason) => {
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let err = closure(Path::new("/usr/sbin/nginx"), &root)
        .unwrap_err()
        .to_string();
    // without libc6 unpacked there is no interpreter either; ld.so would not even start
    assert_eq!(
        err,
        format!(
            "the program interpreter /lib64/ld-linux-x86-64.so.2 (needed by /usr/sbin/nginx) was not found in {}",
            std::fs::canonicalize(&root).unwrap().display()
        )
    );
}
