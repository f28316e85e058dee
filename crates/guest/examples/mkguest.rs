//! Builds a bootable guest from a rootfs directory and prints a QEMU command line for it.
//!
//! `cargo run -p bakeoff-guest --example mkguest -- CACHE_DIR ROOTFS OUT_DIR COMMAND [ARGS...]`
//! with `-e K=V` pairs taken from the BAKEOFF_ENV variable (`K=V,K2=V2`).

use std::path::PathBuf;
use std::time::Instant;

use bakeoff_driver::vmm::host_tsc_khz;
use bakeoff_guest::{
    ensure_kernel, init_binary, write_initramfs, GuestConfig, RunOverrides, NET_MODULES,
    POWER_MODULES,
};
use bakeoff_launch::GuestNet;

/// The 5-argument form these boots use, over the one renderer in `bakeoff_launch`.
fn kernel_cmdline(
    net: Option<&GuestNet>,
    hostname: &str,
    overrides: &RunOverrides,
    microvm: bool,
    tsc_khz: Option<u32>,
) -> String {
    bakeoff_launch::kernel_cmdline(&bakeoff_launch::KernelCmdline {
        net: net.cloned(),
        hostname: hostname.to_string(),
        overrides: overrides.clone(),
        microvm,
        tsc_khz,
        ..Default::default()
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cache, rootfs, out, command, rest @ ..] = args.as_slice() else {
        return Err("usage: mkguest CACHE_DIR ROOTFS OUT_DIR COMMAND [ARGS...]".into());
    };
    let t = Instant::now();
    let kernel = ensure_kernel(&PathBuf::from(cache))?;
    eprintln!("kernel {} in {:?}", kernel.version, t.elapsed());
    let names: Vec<&str> = NET_MODULES.iter().chain(POWER_MODULES).copied().collect();
    let modules = kernel.modules_in_load_order(&names)?;
    let config = GuestConfig {
        command: vec![command.clone()],
        args: rest.to_vec(),
        hostname: "guest".into(),
        ..GuestConfig::default()
    };
    std::fs::create_dir_all(out)?;
    let initrd = PathBuf::from(out).join("initrd.gz");
    let t = Instant::now();
    let info = write_initramfs(
        &PathBuf::from(rootfs),
        &config,
        &modules,
        &init_binary()?,
        &initrd,
    )?;
    eprintln!(
        "initramfs {} bytes ({} entries) sha256 {} in {:?}",
        info.size,
        info.entries,
        info.sha256,
        t.elapsed()
    );
    eprintln!(
        "modules: {}",
        modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let env = std::env::var("BAKEOFF_ENV").unwrap_or_default();
    let overrides = RunOverrides {
        env: env
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        args: None,
    };
    let microvm = kernel_cmdline(
        Some(&GuestNet::qemu_user()),
        "guest",
        &overrides,
        true,
        host_tsc_khz(),
    );
    let q35 = kernel_cmdline(
        Some(&GuestNet::qemu_user()),
        "guest",
        &overrides,
        false,
        host_tsc_khz(),
    );
    println!("VMLINUX={}", kernel.vmlinux.display());
    println!("BZIMAGE={}", kernel.bzimage.display());
    println!("INITRD={}", initrd.display());
    println!("APPEND_MICROVM='{microvm}'");
    println!("APPEND_Q35='{q35}'");
    Ok(())
}
