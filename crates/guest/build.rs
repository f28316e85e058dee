//! Builds PID 1 (`crates/init`) as a static x86_64 binary and embeds it (see `init_binary()`).
//!
//! `bakeoff-init` has no crates.io dependency, so two plain `rustc` calls build it (its library,
//! then its binary against it): no nested cargo, hence no lock on the shared target dir, no
//! second copy of dependencies, ~5 s, and only when `crates/init/src` changes. Static linking
//! uses glibc's libc.a via `+crt-static` (the only Linux target installed here is
//! x86_64-unknown-linux-gnu). If that fails the crate still builds and `init_binary()` returns
//! the compiler's message, so the rest of the workspace keeps working.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = manifest.join("../init/src");
    println!("cargo:rerun-if-changed=../init/src");
    println!("cargo:rerun-if-changed=build.rs");

    let generated = match build_init(&src, &out) {
        Ok(bin) => format!(
            "fn embedded_init() -> Result<&'static [u8], &'static str> {{ Ok(include_bytes!({:?})) }}\n",
            bin.display().to_string()
        ),
        Err(e) => {
            println!("cargo:warning=bakeoff-init (PID 1 of microVMs) could not be built; init_binary() will fail: {}", e.lines().next().unwrap_or(""));
            format!("fn embedded_init() -> Result<&'static [u8], &'static str> {{ Err({e:?}) }}\n")
        }
    };
    std::fs::write(out.join("embedded_init.rs"), generated).expect("OUT_DIR is writable");
}

fn build_init(src: &Path, out: &Path) -> Result<PathBuf, String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let dir = out.join("bakeoff-init");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let common = [
        "--edition=2021",
        "--target",
        TARGET,
        "-Copt-level=s",
        "-Cpanic=abort",
        "-Ccodegen-units=1",
        "-Cdebuginfo=0",
        "-Ctarget-feature=+crt-static",
        "-Crelocation-model=static",
        "-Cstrip=symbols",
    ];
    let run = |args: &[&std::ffi::OsStr]| -> Result<(), String> {
        let output = Command::new(&rustc)
            .args(common)
            .args(args)
            // A RUSTC_WRAPPER-style environment or the outer cargo's flags must not leak in.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", Path::new(&rustc).display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "rustc failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    let lib = src.join("lib.rs");
    let main = src.join("main.rs");
    run(&[
        "--crate-name=bakeoff_init".as_ref(),
        "--crate-type=rlib".as_ref(),
        "--out-dir".as_ref(),
        dir.as_os_str(),
        lib.as_os_str(),
    ])?;
    let bin = dir.join("bakeoff-init");
    let rlib = dir.join("libbakeoff_init.rlib");
    let extern_arg = format!("bakeoff_init={}", rlib.display());
    run(&[
        "--crate-name=bakeoff_init_bin".as_ref(),
        "--crate-type=bin".as_ref(),
        "-Clto=fat".as_ref(),
        "--extern".as_ref(),
        extern_arg.as_ref(),
        "-o".as_ref(),
        bin.as_os_str(),
        main.as_os_str(),
    ])?;
    Ok(bin)
}
