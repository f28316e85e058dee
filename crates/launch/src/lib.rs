//! Launch values, all pure: the [`Image`] a packager wrote, and every rendering of "this image,
//! these run options" into what a platform takes — QEMU's argv ([`qemu`]), Docker's container
//! create body ([`docker`]), Xen's xl.cfg ([`xl`]), Firecracker's VM configuration
//! ([`firecracker`]), Rumprun's JSON configuration ([`rumprun`]), a Kubernetes Pod ([`k8s`]),
//! the host network plan of tap/bridge guests ([`net`]) and the guest kernel command line
//! ([`cmdline`]). Drivers execute these values; `bakeoff export` prints them; tests snapshot them.

pub mod cmdline;
pub mod docker;
pub mod firecracker;
mod image;
pub mod k8s;
pub mod k8s_deploy;
pub mod net;
pub mod qemu;
pub mod rumprun;
pub mod runfile;
pub mod xl;

use std::path::PathBuf;

use bakeoff_spec::{RunOptions, Target};

pub use cmdline::{check_cmdline, kernel_cmdline, run_overrides, Console, GuestNet, KernelCmdline};
pub use image::{Image, ImageDetails, RumprunBake, MICROVM_INITRD_FILE};
pub use net::{publish_plan, GuestAddress, NetPlan};

/// Errors of rendering a launch: the image does not fit the platform, or a run value cannot be
/// passed on. Each message is one sentence a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The platform (or format) cannot take this kind of image; the text says what to do.
    #[error("{0}")]
    WrongImage(String),
    #[error("the {target} image in {} has no {role}", dir.display())]
    MissingRole {
        target: Target,
        dir: PathBuf,
        role: String,
    },
    #[error("the OCI image has no reference")]
    NoReference,
    #[error("cannot pass {what} to Rumprun: {reason}")]
    BadValue { what: String, reason: String },
    #[error("the Rumprun configuration is {len} bytes; Rumprun reads at most {} (fewer or shorter -e and arguments)", rumprun::CONFIG_MAX)]
    ConfigTooLong { len: usize },
    #[error("the kernel command line is {len} bytes; Linux keeps at most {} (too many or too long -e values or arguments?)", cmdline::CMDLINE_MAX)]
    CmdlineTooLong { len: usize },
    /// `image.json` (or a value in it) cannot be read.
    #[error("{} is damaged ({source}); remove it and build again", path.display())]
    DamagedImage {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// File errors come from `fs-err`, so they name their path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Memory a VM gets without `--memory` (QEMU, Rumprun, Xen and Firecracker alike).
pub const DEFAULT_MEMORY_MIB: u64 = 128;

/// The VM's memory in MiB: `--memory` rounded up, else [`DEFAULT_MEMORY_MIB`].
pub fn memory_mib(opts: &RunOptions) -> u64 {
    opts.memory
        .map(|b| b.div_ceil(1 << 20))
        .unwrap_or(DEFAULT_MEMORY_MIB)
}

/// The VM's vCPUs: `--cpus` rounded up, at least 1.
pub fn vcpus(opts: &RunOptions) -> u32 {
    opts.cpus.map(|c| c.ceil() as u32).unwrap_or(1).max(1)
}

/// `-p` protocols as engines and QEMU spell them.
pub(crate) fn proto(p: bakeoff_spec::Protocol) -> &'static str {
    if p == bakeoff_spec::Protocol::Udp {
        "udp"
    } else {
        "tcp"
    }
}
