//! `inspect` on real programs compiled here, on /usr/bin/curl, and on broken files.

mod common;

use std::error::Error;
use std::path::Path;

use bakeoff_elf::{inspect, ElfClass, ElfKind, Linkage, ProcessFeatures};
use common::{fixture, gcc, have_gcc};

#[test]
fn static_socket_server_links_no_fork_and_forking_one_does() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let plain = gcc(
        &fixture("http_server.c"),
        &tmp.path().join("plain"),
        &["-static"],
    );
    let forking = gcc(
        &fixture("fork_server.c"),
        &tmp.path().join("forking"),
        &["-static"],
    );

    let info = inspect(&plain).unwrap();
    assert_eq!(info.linkage, Linkage::Static);
    assert_eq!(info.kind, ElfKind::Executable);
    assert_eq!(info.interpreter, None);
    assert!(info.needed.is_empty());
    assert!(!info.stripped);
    assert!(!info.defined.contains("fork"), "{:?}", info.defined);
    assert_eq!(
        info.features,
        ProcessFeatures::default(),
        "defined: {:?}",
        info.defined
    );

    let info = inspect(&forking).unwrap();
    assert!(info.defined.contains("fork"), "{:?}", info.defined);
    assert_eq!(
        info.features,
        ProcessFeatures {
            forks: true,
            ..Default::default()
        }
    );
}

#[test]
fn static_threads_are_not_mistaken_for_forks() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = gcc(
        &fixture("thread_server.c"),
        &tmp.path().join("threads"),
        &["-static", "-pthread"],
    );
    let info = inspect(&exe).unwrap();
    assert!(
        info.defined.contains("pthread_create"),
        "{:?}",
        info.defined
    );
    assert_eq!(
        info.features,
        ProcessFeatures {
            threads: true,
            ..Default::default()
        },
        "{:?}",
        info.defined
    );
}

#[test]
fn dynamic_programs_show_imports_without_versions() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = gcc(&fixture("fork_server.c"), &tmp.path().join("forking"), &[]);
    let info = inspect(&exe).unwrap();
    assert_eq!(info.class, ElfClass::Elf64);
    assert_eq!(info.machine, "x86_64");
    assert_eq!(info.linkage, Linkage::Dynamic);
    assert_eq!(info.kind, ElfKind::PieExecutable);
    assert_eq!(
        info.interpreter.as_deref(),
        Some("/lib64/ld-linux-x86-64.so.2")
    );
    assert_eq!(info.needed, vec!["libc.so.6"]);
    assert!(info.imports.contains("fork"), "{:?}", info.imports);
    assert!(info.imports.contains("accept"));
    assert!(info.imports.iter().all(|s| !s.contains('@')));
    assert!(info.defined.is_empty());
    assert_eq!(
        info.features,
        ProcessFeatures {
            forks: true,
            ..Default::default()
        }
    );

    let cgi = gcc(&fixture("cgi_server.c"), &tmp.path().join("cgi"), &[]);
    let info = inspect(&cgi).unwrap();
    assert_eq!(
        info.features,
        ProcessFeatures {
            execs: true,
            spawns_shell: true,
            ..Default::default()
        }
    );
    let cgi_static = gcc(
        &fixture("cgi_server.c"),
        &tmp.path().join("cgi-static"),
        &["-static"],
    );
    let info = inspect(&cgi_static).unwrap();
    assert!(
        info.features.execs && info.features.spawns_shell,
        "{:?}",
        info.defined
    );
}

#[test]
fn kinds_linkage_and_stripping_follow_the_link_options() {
    if !have_gcc() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("http_server.c");
    let no_pie = inspect(&gcc(&src, &tmp.path().join("nopie"), &["-no-pie"])).unwrap();
    assert_eq!(
        (no_pie.kind, no_pie.linkage),
        (ElfKind::Executable, Linkage::Dynamic)
    );
    let static_pie = inspect(&gcc(&src, &tmp.path().join("spie"), &["-static-pie"])).unwrap();
    assert_eq!(
        (static_pie.kind, static_pie.linkage),
        (ElfKind::PieExecutable, Linkage::StaticPie)
    );
    assert_eq!(static_pie.interpreter, None);
    let stripped = inspect(&gcc(&src, &tmp.path().join("stripped"), &["-s"])).unwrap();
    assert!(stripped.stripped);

    let lib_src = common::write_c(tmp.path(), "greet.c", "int greet(void) { return 42; }\n");
    let lib = gcc(
        &lib_src,
        &tmp.path().join("libgreet.so.1"),
        &["-shared", "-fPIC", "-Wl,-soname,libgreet.so.1"],
    );
    let info = inspect(&lib).unwrap();
    assert_eq!(info.kind, ElfKind::SharedObject);
    assert_eq!(info.soname.as_deref(), Some("libgreet.so.1"));

    let runpath = inspect(&gcc(
        &src,
        &tmp.path().join("runpath"),
        &["-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib:/opt/x"],
    ))
    .unwrap();
    assert_eq!(runpath.runpath, vec!["$ORIGIN/../lib", "/opt/x"]);
    assert!(runpath.rpath.is_empty());
    let rpath = inspect(&gcc(
        &src,
        &tmp.path().join("rpath"),
        &["-Wl,--disable-new-dtags,-rpath,$ORIGIN/../lib"],
    ))
    .unwrap();
    assert_eq!(rpath.rpath, vec!["$ORIGIN/../lib"]);
    assert!(rpath.runpath.is_empty());
}

#[test]
fn curl_is_a_stripped_dynamic_pie_needing_libcurl() {
    let curl = Path::new("/usr/bin/curl");
    if !curl.exists() {
        eprintln!("skipping: /usr/bin/curl is not installed");
        return;
    }
    let info = inspect(curl).unwrap();
    assert_eq!(info.kind, ElfKind::PieExecutable);
    assert_eq!(info.linkage, Linkage::Dynamic);
    assert!(
        info.needed.contains(&"libcurl.so.4".to_string()),
        "{:?}",
        info.needed
    );
    assert!(info.stripped);
    assert!(!info.imports.is_empty());
}

#[test]
fn broken_files_get_one_sentence_naming_them() {
    let tmp = tempfile::tempdir().unwrap();

    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "just text\n").unwrap();
    assert_eq!(
        inspect(&text).unwrap_err().to_string(),
        format!("{} is not an ELF file", text.display())
    );

    let missing = tmp.path().join("missing");
    let err = inspect(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot read {}", missing.display())
    );
    let cause = err
        .source()
        .expect("the I/O error is kept as the source")
        .to_string();
    assert!(cause.contains("No such file or directory"), "{cause}");

    let Some(real) = ["/usr/bin/curl", "/bin/ls", "/usr/bin/env"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        eprintln!("skipping the truncated/corrupt cases: no system ELF found");
        return;
    };
    let bytes = std::fs::read(real).unwrap();

    let truncated = tmp.path().join("truncated");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let err = inspect(&truncated).unwrap_err().to_string();
    let prefix = format!("{} is truncated or corrupt: ", truncated.display());
    assert!(
        err.starts_with(&prefix) && err.len() > prefix.len(),
        "{err}"
    );

    // e_shoff pointing far past the end of the file
    let mut corrupt_bytes = bytes.clone();
    corrupt_bytes[40..48].copy_from_slice(&(bytes.len() as u64 * 4).to_le_bytes());
    let corrupt = tmp.path().join("corrupt");
    std::fs::write(&corrupt, &corrupt_bytes).unwrap();
    let err = inspect(&corrupt).unwrap_err().to_string();
    let prefix = format!("{} is truncated or corrupt: ", corrupt.display());
    assert!(
        err.starts_with(&prefix) && err.len() > prefix.len(),
        "{err}"
    );
}
