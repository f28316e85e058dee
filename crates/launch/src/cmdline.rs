//! The guest kernel command line: boot flags plus the `bakeoff.*` values PID 1 reads.

/// The launch-phase lines PID 1 prints (shared with the guest side).
pub use bakeoff_init::phases;

use std::net::Ipv4Addr;

use bakeoff_init::RunOverrides;
use bakeoff_spec::RunOptions;

use crate::LaunchError;

/// The guest's static IPv4 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNet {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl GuestNet {
    /// QEMU user-mode networking (slirp): 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3.
    pub fn qemu_user() -> GuestNet {
        GuestNet {
            ip: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
        }
    }
}

impl From<&crate::GuestAddress> for GuestNet {
    /// A static address on a host interface (Xen's bridge, Firecracker's tap): no DNS.
    fn from(a: &crate::GuestAddress) -> GuestNet {
        GuestNet {
            ip: a.ip,
            prefix: a.prefix,
            gateway: Some(a.gateway),
            dns: Vec::new(),
        }
    }
}

/// Linux on x86 keeps at most this many bytes of command line (COMMAND_LINE_SIZE 2048 with NUL).
pub const CMDLINE_MAX: usize = 2047;

/// The guest's serial console device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Console {
    /// The 8250 UART (QEMU, Firecracker).
    #[default]
    Ttys0,
    /// Xen's PV console.
    Hvc0,
}

impl Console {
    pub fn as_str(self) -> &'static str {
        match self {
            Console::Ttys0 => "ttyS0",
            Console::Hvc0 => "hvc0",
        }
    }
}

/// Everything that decides a Linux guest's kernel command line, for every platform that boots
/// one (QEMU, Xen PVH, Firecracker). [`kernel_cmdline`] renders it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelCmdline {
    pub console: Console,
    pub net: Option<GuestNet>,
    /// The instance name; see [`kernel_cmdline`] for what is kept.
    pub hostname: String,
    pub overrides: RunOverrides,
    /// QEMU's `microvm` machine (and Firecracker, which is like it): adds `tsc=reliable`.
    pub microvm: bool,
    pub tsc_khz: Option<u32>,
    /// The APIC timer's ticks per jiffy, for a kernel that takes `lapic_timer_period=`.
    pub lapic_timer_period: Option<u32>,
    /// The smallest block of free memory the guest reports back to the VMM (as a page order),
    /// for a kernel that honours `page_reporting.page_reporting_order=` (bakeoff's minimal one).
    pub free_page_order: Option<u8>,
    /// Flags the VMM needs, appended last (Firecracker: `pci=off reboot=k`); a flag already
    /// on the line is not repeated.
    pub extra: Vec<String>,
}

impl KernelCmdline {
    /// The command line of one run: `net`, the instance name as hostname and the run's `-e`
    /// and `-- ARGS`.
    pub fn for_run(net: Option<GuestNet>, hostname: &str, opts: &RunOptions) -> KernelCmdline {
        KernelCmdline {
            net,
            hostname: hostname.to_string(),
            overrides: run_overrides(opts),
            ..KernelCmdline::default()
        }
    }
}

/// Renders the kernel command line — the only place bakeoff builds one.
///
/// - `console=ttyS0 quiet panic=-1 cryptomgr.notests`: serial console (or `hvc0` on Xen),
///   kernel messages only at warning level (printing to an emulated UART is slow), a panic
///   reboots at once (which ends QEMU when it runs with `-no-reboot`), and no crypto self-tests
///   at boot (the slowest initcall under TCG: ~0.35 s; init starts ~0.4 s sooner without them).
/// - `noreplace-smp`: the kernel keeps its lock prefixes on one vCPU instead of patching each
///   of thousands of sites out; under TCG every patched code page drops its translations, and
///   the patching took ~0.1 s of the boot (measured from the console's arrival times here).
/// - microvm only: `tsc=reliable` (no HPET/PM timer there: without it a TCG guest hangs about one
///   boot in five). The harmless "PCI: Fatal: No config space access function found" that
///   microvm without PCIe prints stays (`pci=off` does not silence it).
/// - `tsc_khz` adds `tsc_early_khz=N` (the host's TSC frequency, measured by the driver), which
///   skips TSC calibration. On microvm, pass it: on a busy host the PIT calibration fails ("tsc:
///   Marking TSC unstable due to could not calculate TSC khz") and the boot hangs even with
///   `tsc=reliable` (measured here under load: 10 of 20 boots hung without it, 0 of 20 with it).
/// - `lapic_timer_period` adds `lapic_timer_period=N` (bakeoff's minimal kernel only: its patch
///   adds the parameter), the APIC timer's ticks per jiffy as the VMM knows them, which spares
///   the boot the timer's calibration: ~0.1 s of waiting with interrupts off, under TCG.
/// - `free_page_order` adds `page_reporting.page_reporting_order=N` (bakeoff's minimal kernel:
///   its patch makes 6.1 honour it): free memory in blocks of 2^N pages and more goes back to
///   the VMM through the balloon's free page reporting, instead of only whole 2 MiB blocks.
/// - `bakeoff.ip/gw/dns` from `net`, `bakeoff.hostname` (characters outside `[A-Za-z0-9._-]`
///   are dropped, at most 64 kept), and `bakeoff.run` (base64url JSON) unless `overrides` is empty.
/// - then `extra`.
///
/// Check the result with [`check_cmdline`] when it carries user values.
pub fn kernel_cmdline(c: &KernelCmdline) -> String {
    let mut parts: Vec<String> = vec![format!("console={}", c.console.as_str())];
    parts.extend(
        ["quiet", "panic=-1", "cryptomgr.notests", "noreplace-smp"]
            .iter()
            .map(|s| s.to_string()),
    );
    if c.microvm {
        parts.push("tsc=reliable".into());
    }
    if let Some(khz) = c.tsc_khz {
        parts.push(format!("tsc_early_khz={khz}"));
    }
    if let Some(period) = c.lapic_timer_period {
        parts.push(format!("lapic_timer_period={period}"));
    }
    if let Some(order) = c.free_page_order {
        parts.push(format!("page_reporting.page_reporting_order={order}"));
    }
    if let Some(net) = &c.net {
        parts.push(format!("bakeoff.ip={}/{}", net.ip, net.prefix));
        if let Some(gw) = net.gateway {
            parts.push(format!("bakeoff.gw={gw}"));
        }
        if !net.dns.is_empty() {
            let list: Vec<String> = net.dns.iter().map(Ipv4Addr::to_string).collect();
            parts.push(format!("bakeoff.dns={}", list.join(",")));
        }
    }
    let hostname = guest_hostname(&c.hostname);
    if !hostname.is_empty() {
        parts.push(format!("bakeoff.hostname={hostname}"));
    }
    if !c.overrides.is_empty() {
        parts.push(format!("bakeoff.run={}", c.overrides.encode()));
    }
    for flag in &c.extra {
        if !parts.contains(flag) {
            parts.push(flag.clone());
        }
    }
    parts.join(" ")
}

/// The guest's hostname for an instance name: characters outside `[A-Za-z0-9._-]` dropped, at
/// most 64 kept (empty when nothing is left).
pub fn guest_hostname(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect()
}

/// Fails when the command line is longer than the kernel keeps (it would cut `bakeoff.run`).
pub fn check_cmdline(cmdline: &str) -> Result<(), LaunchError> {
    if cmdline.len() > CMDLINE_MAX {
        return Err(LaunchError::CmdlineTooLong { len: cmdline.len() });
    }
    Ok(())
}

/// The run-time overrides for `bakeoff.run` from `bakeoff run` options: `-e` values, and
/// `-- ARGS` when given (an empty list keeps the app's default args, as `docker run` does).
pub fn run_overrides(options: &RunOptions) -> RunOverrides {
    RunOverrides {
        env: options.env.clone(),
        args: (!options.args.is_empty()).then(|| options.args.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakeoff_init::parse_cmdline;

    fn overrides() -> RunOverrides {
        RunOverrides {
            env: vec![("GREETING".into(), "hello \"world\"".into())],
            args: Some(vec!["-v".into()]),
        }
    }

    #[test]
    fn snapshot_microvm_with_network() {
        insta::assert_snapshot!(kernel_cmdline(&KernelCmdline {
            net: Some(GuestNet::qemu_user()),
            hostname: "web-1".into(),
            overrides: overrides(),
            microvm: true,
            tsc_khz: Some(2_596_124),
            lapic_timer_period: Some(10_000_000),
            free_page_order: Some(3),
            ..Default::default()
        }));
    }

    #[test]
    fn snapshot_q35_without_network_or_overrides() {
        insta::assert_snapshot!(kernel_cmdline(&KernelCmdline::default()));
    }

    #[test]
    fn init_parses_back_what_we_render() {
        let line = kernel_cmdline(&KernelCmdline {
            net: Some(GuestNet::qemu_user()),
            hostname: "web 1\"x".into(),
            overrides: overrides(),
            microvm: true,
            ..Default::default()
        });
        let boot = parse_cmdline(&line).unwrap();
        let net = boot.net.unwrap();
        assert_eq!((net.address, net.prefix), (Ipv4Addr::new(10, 0, 2, 15), 24));
        assert_eq!(net.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(net.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(boot.hostname.as_deref(), Some("web1x"));
        assert_eq!(boot.run, overrides());
        // The only dotted flag of ours is a (built-in) module's parameter.
        assert_eq!(
            boot.module_params,
            [("cryptomgr".to_string(), "notests".to_string())]
        );
    }

    #[test]
    fn long_command_lines_are_refused() {
        let many = RunOverrides {
            env: (0..200)
                .map(|i| (format!("VAR{i}"), "x".repeat(10)))
                .collect(),
            args: None,
        };
        let line = kernel_cmdline(&KernelCmdline {
            hostname: "h".into(),
            overrides: many,
            microvm: true,
            ..Default::default()
        });
        let e = check_cmdline(&line).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("the kernel command line is {} bytes", line.len())),
            "{e}"
        );
        check_cmdline(&kernel_cmdline(&KernelCmdline {
            hostname: "h".into(),
            overrides: overrides(),
            microvm: true,
            ..Default::default()
        }))
        .unwrap();
    }

    #[test]
    fn run_options_become_overrides() {
        let opts = RunOptions {
            env: vec![("A".into(), "1".into())],
            ..RunOptions::default()
        };
        assert_eq!(
            run_overrides(&opts),
            RunOverrides {
                env: vec![("A".into(), "1".into())],
                args: None
            }
        );
        let opts = RunOptions {
            args: vec!["x".into()],
            ..RunOptions::default()
        };
        assert_eq!(run_overrides(&opts).args, Some(vec!["x".into()]));
        assert!(run_overrides(&RunOptions::default()).is_empty());
    }
}
