//! Bad prebuilt binaries given as APP: one sentence each, non-zero exit, no image left behind.

mod common;

use std::process::Command;

use common::*;

#[test]
fn truncated_foreign_and_unresolvable_binaries_are_refused() {
    let env = Env::new();
    let dir = env.dir.path();
    // A real ELF cut to 100 bytes.
    let truncated = dir.join("truncated");
    std::fs::write(&truncated, &std::fs::read("/usr/bin/curl").unwrap()[..100]).unwrap();
    let err = env.fails(&["build", truncated.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{} is truncated or corrupt", truncated.display())),
        "{err}"
    );

    // The example server, relabelled as an AArch64 executable (e_machine = 183).
    let exe = dir.join("hello");
    let out = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(&exe)
        .arg(repo_root().join("examples/hello/hello.c"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut bytes = std::fs::read(&exe).unwrap();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    let arm = dir.join("arm-hello");
    std::fs::write(&arm, bytes).unwrap();
    let err = env.fails(&["build", arm.to_str().unwrap()]);
    assert!(
        err.contains("is built for aarch64; bakeoff builds images for this host's x86_64"),
        "{err}"
    );

    // A dynamic binary whose library is gone.
    std::fs::write(dir.join("f.c"), "int f(void){return 0;}\n").unwrap();
    std::fs::write(
        dir.join("m.c"),
        "int f(void);\nint main(void){return f();}\n",
    )
    .unwrap();
    let lib = dir.join("libgone.so");
    assert!(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(dir.join("f.c"))
        .status()
        .unwrap()
        .success());
    let needs = dir.join("needs-gone");
    assert!(Command::new("gcc")
        .arg("-o")
        .arg(&needs)
        .arg(dir.join("m.c"))
        .arg(format!("-L{}", dir.display()))
        .arg("-lgone")
        .status()
        .unwrap()
        .success());
    std::fs::remove_file(&lib).unwrap();
    let err = env.fails(&["build", needs.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "libgone.so (needed by {}) was not found",
            needs.display()
        )),
        "{err}"
    );

    // None of them left an artifact a later run could take as complete.
    let cache = shared_cache().join("artifacts");
    for entry in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        let manifest =
            std::fs::read_to_string(entry.path().join("artifact.json")).unwrap_or_default();
        assert!(
            !manifest.contains("needs-gone")
                && !manifest.contains("arm-hello")
                && !manifest.contains(truncated.to_str().unwrap())
        );
    }
}
