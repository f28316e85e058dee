//! `bakeoff kernel build|show`: bakeoff's own minimal guest kernel (crates/guest/src/minimal.rs).

use anyhow::Result;
use bakeoff_guest::{build_minimal_kernel, find_minimal_kernel, Kernel};
use bakeoff_runtime::Runtime;
use bakeoff_spec::Target;

use crate::args::KernelCommand;

pub fn kernel(k: KernelCommand) -> Result<i32> {
    match k {
        KernelCommand::Build => build(),
        KernelCommand::Show { app, kernel } => show(app.as_deref(), kernel),
    }
}

fn build() -> Result<i32> {
    let rt = Runtime::from_env();
    let cache = rt.cache().root().to_path_buf();
    if let Some(k) = find_minimal_kernel(&cache) {
        eprintln!("bakeoff: the minimal kernel is already built");
        print_kernel("minimal", &k.kernel, Some(&k));
        return Ok(0);
    }
    let k = build_minimal_kernel(&cache, &mut |line| eprintln!("bakeoff: kernel: {line}"))?;
    print_kernel("minimal", &k.kernel, Some(&k));
    Ok(0)
}

fn show(app: Option<&str>, kernel: Option<std::path::PathBuf>) -> Result<i32> {
    let rt = Runtime::from_env().with_progress(|m| eprintln!("bakeoff: {m}"));
    let cache = rt.cache().root().to_path_buf();
    let minimal = find_minimal_kernel(&cache);
    let Some(app) = app else {
        match (&kernel, &minimal) {
            (None, Some(m)) => print_kernel("minimal", &m.kernel, Some(m)),
            (Some(p), Some(m)) if p.as_os_str() == "minimal" => {
                print_kernel("minimal", &m.kernel, Some(m))
            }
            (None, None) => {
                println!("kernel: Debian's {} (the minimal kernel is not built: run `bakeoff kernel build`)", bakeoff_guest::KERNEL_METAPACKAGE);
            }
            (Some(p), _) => {
                let ctx = bakeoff_pack::PackContext {
                    cache: rt.cache(),
                    kernel: Some(p.clone()),
                    log: &|m: &str| eprintln!("bakeoff: {m}"),
                };
                let k = bakeoff_pack::microvm::kernel(&ctx)?;
                print_kernel(&p.display().to_string(), &k, None);
            }
        }
        return Ok(0);
    };
    // For an app: the kernel its microVM image boots (the app is built and packed if needed).
    let prepared = rt.prepare(app)?;
    let image = rt.pack(&prepared.artifact, Target::MicroVm, kernel)?;
    let d = &image.details;
    let vmlinux = image.files.get("vmlinux").cloned().unwrap_or_default();
    let which = match &minimal {
        Some(m) if m.kernel.vmlinux == vmlinux => "minimal",
        _ => "other",
    };
    println!(
        "kernel: {which} {}",
        d.kernel_version.as_deref().unwrap_or("?")
    );
    println!(
        "config: sha256:{}",
        d.kernel_config.as_deref().unwrap_or("unknown")
    );
    if let Some(bz) = image.files.get("kernel").filter(|k| **k != vmlinux) {
        println!(
            "bzImage: {} ({} bytes)",
            bz.display(),
            d.kernel_bytes.unwrap_or(0)
        );
    }
    println!(
        "vmlinux: {} ({} bytes)",
        vmlinux.display(),
        d.vmlinux_bytes.unwrap_or(0)
    );
    println!("initramfs: {} bytes", d.initrd_bytes.unwrap_or(0));
    if let Some(m) = d.min_memory_mib {
        println!("smallest --memory: {m} MiB");
    }
    Ok(0)
}

fn print_kernel(which: &str, k: &Kernel, m: Option<&bakeoff_guest::MinimalKernel>) {
    let size = std::fs::metadata(&k.vmlinux).map(|m| m.len()).unwrap_or(0);
    println!("kernel: {which} {}", k.version);
    if let Some(m) = m {
        println!(
            "source: Debian {} {} (cache key {})",
            bakeoff_guest::SOURCE_PACKAGE,
            m.source_version,
            m.config_hash
        );
        if let Some(s) = m.build_seconds {
            println!("built in: {s:.0} s");
        }
    }
    println!(
        "config: sha256:{}",
        k.config_sha256().unwrap_or_else(|| "unknown".into())
    );
    if k.bzimage != k.vmlinux {
        let bz = std::fs::metadata(&k.bzimage).map(|m| m.len()).unwrap_or(0);
        println!("bzImage: {} ({bz} bytes)", k.bzimage.display());
    }
    println!("vmlinux: {} ({size} bytes)", k.vmlinux.display());
}
