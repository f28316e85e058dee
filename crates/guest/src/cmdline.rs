//! The guest kernel command line: boot flags plus the `bakeoff.*` values PID 1 reads.

use std::net::Ipv4Addr;

use bakeoff_init::RunOverrides;
use bakeoff_spec::RunOptions;

use crate::GuestError;

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

/// Linux on x86 keeps at most this many bytes of command line (COMMAND_LINE_SIZE 2048 with NUL).
pub const CMDLINE_MAX: usize = 2047;

/// Renders the kernel command line.
///
/// - `console=ttyS0 quiet panic=-1 cryptomgr.notests`: serial console, kernel messages only at
///   warning level (printing to an emulated UART is slow), a panic reboots at once (which ends
///   QEMU when it runs with `-no-reboot`), and no crypto self-tests at boot (the slowest
///   initcall under TCG: ~0.35 s; init starts ~0.4 s sooner without them).
/// - microvm only: `tsc=reliable` (no HPET/PM timer there: without it a TCG guest hangs about one
///   boot in five). The harmless "PCI: Fatal: No config space access function found" that
///   microvm without PCIe prints stays (`pci=off` does not silence it).
/// - `tsc_khz` adds `tsc_early_khz=N` (see [`host_tsc_khz`]), which skips TSC calibration. On
///   microvm, pass it: on a busy host the PIT calibration fails ("tsc: Marking TSC unstable due
///   to could not calculate TSC khz") and the boot hangs even with `tsc=reliable` (measured here
///   under load: 10 of 20 boots hung without it, 0 of 20 with it).
/// - `bakeoff.ip/gw/dns` from `net`, `bakeoff.hostname` (characters outside `[A-Za-z0-9._-]`
///   are dropped, at most 64 kept), and `bakeoff.run` (base64url JSON) unless `overrides` is empty.
///
/// Check the result with [`check_cmdline`] when it carries user values.
pub fn kernel_cmdline(
    net: Option<&GuestNet>,
    hostname: &str,
    overrides: &RunOverrides,
    machine_microvm: bool,
    tsc_khz: Option<u32>,
) -> String {
    let mut parts: Vec<String> = ["console=ttyS0", "quiet", "panic=-1", "cryptomgr.notests"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if machine_microvm {
        parts.push("tsc=reliable".into());
    }
    if let Some(khz) = tsc_khz {
        parts.push(format!("tsc_early_khz={khz}"));
    }
    if let Some(net) = net {
        parts.push(format!("bakeoff.ip={}/{}", net.ip, net.prefix));
        if let Some(gw) = net.gateway {
            parts.push(format!("bakeoff.gw={gw}"));
        }
        if !net.dns.is_empty() {
            let list: Vec<String> = net.dns.iter().map(Ipv4Addr::to_string).collect();
            parts.push(format!("bakeoff.dns={}", list.join(",")));
        }
    }
    let hostname: String = hostname
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if !hostname.is_empty() {
        parts.push(format!("bakeoff.hostname={hostname}"));
    }
    if !overrides.is_empty() {
        parts.push(format!("bakeoff.run={}", overrides.encode()));
    }
    parts.join(" ")
}

/// Fails when the command line is longer than the kernel keeps (it would cut `bakeoff.run`).
pub fn check_cmdline(cmdline: &str) -> Result<(), GuestError> {
    if cmdline.len() > CMDLINE_MAX {
        return Err(GuestError::CmdlineTooLong { len: cmdline.len() });
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

/// The host's TSC frequency in kHz, which is also the guest's under TCG (QEMU's emulated TSC
/// reads the host's), for `tsc_early_khz=`. Measured over ~30 ms against the monotonic clock;
/// `None` off x86_64 or when /proc/cpuinfo does not report `constant_tsc`.
pub fn host_tsc_khz() -> Option<u32> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    if !has_constant_tsc(&cpuinfo) {
        return None;
    }
    measure_tsc_khz()
}

fn has_constant_tsc(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "constant_tsc"))
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u32> {
    use std::time::{Duration, Instant};
    // Median of three short windows: one preempted window may read off, the median will not.
    let mut samples: Vec<f64> = (0..3)
        .map(|_| {
            // SAFETY: RDTSC has no preconditions on x86_64.
            let (t0, c0) = (Instant::now(), unsafe { core::arch::x86_64::_rdtsc() });
            std::thread::sleep(Duration::from_millis(10));
            let (c1, t1) = (unsafe { core::arch::x86_64::_rdtsc() }, Instant::now());
            (c1.wrapping_sub(c0)) as f64 / (t1 - t0).as_secs_f64() / 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let khz = samples[1].round();
    (100_000.0..20_000_000.0)
        .contains(&khz)
        .then_some(khz as u32)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u32> {
    None
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
        insta::assert_snapshot!(kernel_cmdline(
            Some(&GuestNet::qemu_user()),
            "web-1",
            &overrides(),
            true,
            Some(2_596_124)
        ));
    }

    #[test]
    fn snapshot_q35_without_network_or_overrides() {
        insta::assert_snapshot!(kernel_cmdline(
            None,
            "",
            &RunOverrides::default(),
            false,
            None
        ));
    }

    #[test]
    fn init_parses_back_what_we_render() {
        let line = kernel_cmdline(
            Some(&GuestNet::qemu_user()),
            "web 1\"x",
            &overrides(),
            true,
            None,
        );
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
        let line = kernel_cmdline(None, "h", &many, true, None);
        let e = check_cmdline(&line).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("the kernel command line is {} bytes", line.len())),
            "{e}"
        );
        check_cmdline(&kernel_cmdline(None, "h", &overrides(), true, None)).unwrap();
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

    #[test]
    fn constant_tsc_flag_is_required() {
        assert!(has_constant_tsc(
            "processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n"
        ));
        assert!(!has_constant_tsc("flags\t\t: fpu tsc\n"));
        assert!(!has_constant_tsc(""));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn measured_tsc_is_plausible_and_stable() {
        let Some(a) = host_tsc_khz() else {
            eprintln!("skipping: this host has no constant_tsc");
            return;
        };
        let b = host_tsc_khz().unwrap();
        let diff = (f64::from(a) - f64::from(b)).abs() / f64::from(a);
        assert!(diff < 0.01, "{a} vs {b}");
    }
}
