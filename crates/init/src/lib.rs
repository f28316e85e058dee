//! bakeoff's PID 1 for Linux microVMs: the pure half.
//!
//! This library holds what both sides of the guest boundary must agree on, with no dependency:
//! the build-time [`GuestConfig`] (`/bakeoff/config.json`), the run-time [`RunOverrides`]
//! (`bakeoff.run=` on the kernel command line) and the command-line parser. `bakeoff-guest`
//! writes these values; the `bakeoff-init` binary (src/main.rs) reads them inside the VM.
//!
//! The binary is built by `crates/guest/build.rs` straight with `rustc` (static, glibc,
//! `+crt-static`), which is why this crate uses only `std`; the optional `serde` feature only
//! adds derives for host-side users.

pub mod base64url;
mod cmdline;
mod config;
pub mod json;
pub mod phases;
pub mod resume;
mod user;

pub use cmdline::{
    app_launch, normalize_module_name, parse_cmdline, split_cmdline, AppLaunch, BootParams,
    NetConfig, DEFAULT_PATH,
};
pub use config::{GuestConfig, RunOverrides};
pub use user::RunAs;

/// Where the build-time configuration lives inside the initramfs.
pub const CONFIG_PATH: &str = "/bakeoff/config.json";

/// Where a run's `-e` values and `-- ARGS` arrive when the VMM gives the guest a per-run
/// initramfs (QEMU): a file in a second cpio archive appended to the image's, written 0600 on
/// the host and never on a command line. PID 1 reads it, then deletes it.
pub const RUN_PATH: &str = "/bakeoff-run.json";

/// Every line PID 1 prints starts with this.
pub const LOG_PREFIX: &str = "bakeoff-init: ";

/// Errors in what PID 1 is given. Each is one sentence naming its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// `/bakeoff/config.json` is malformed.
    Config(String),
    /// `/proc/cmdline` has a malformed `bakeoff.*` value.
    Cmdline(String),
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitError::Config(m) => write!(f, "invalid {CONFIG_PATH}: {m}"),
            InitError::Cmdline(m) => write!(f, "invalid kernel command line: {m}"),
        }
    }
}

impl std::error::Error for InitError {}
