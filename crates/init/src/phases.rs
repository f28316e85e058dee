//! The launch phases PID 1 reports on the console, one line each, so the host can tell where a
//! boot spent its time and when the app really listens (issue 14 item 5, issue 13 item 6):
//!
//! ```text
//! bakeoff-init: phase pid1 812 ms
//! bakeoff-init: phase network 850 ms
//! bakeoff-init: phase app 861 ms
//! bakeoff-init: phase listening 1020 ms tcp 8080
//! ```
//!
//! The time is the guest's CLOCK_MONOTONIC in milliseconds: time since the kernel started, the
//! clock of the kernel's own printk timestamps. Both sides use this module: PID 1 writes the
//! lines, the host parses them.

use crate::LOG_PREFIX;

/// One phase of a microVM launch, as seen inside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// PID 1 started (the kernel finished booting): its first line, before it mounts anything.
    Pid1,
    /// A warm start: PID 1 of a guest restored from a snapshot got its run's values. Its time
    /// is 0, and every later phase of that guest counts from it (the guest's clock went on
    /// from the snapshot's boot).
    Resumed,
    /// `eth0` configured (after PID 1 mounted the API file systems and loaded any modules).
    Network,
    /// The app's process started.
    App,
    /// The app listens on this TCP port (seen in /proc/net/tcp or tcp6).
    Listening(u16),
}

impl Phase {
    /// The phase's name in the console line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Pid1 => "pid1",
            Phase::Resumed => "resumed",
            Phase::Network => "network",
            Phase::App => "app",
            Phase::Listening(_) => "listening",
        }
    }
}

/// The console line (without the trailing newline) for `phase` at `ms` after the kernel started.
pub fn phase_line(phase: Phase, ms: u64) -> String {
    match phase {
        Phase::Listening(port) => format!("{LOG_PREFIX}phase listening {ms} ms tcp {port}"),
        p => format!("{LOG_PREFIX}phase {} {ms} ms", p.name()),
    }
}

/// The phase and its guest time (ms) in one console line, if it is a phase line.
pub fn parse_phase_line(line: &str) -> Option<(Phase, u64)> {
    let i = line.find(LOG_PREFIX)?;
    let rest = line[i + LOG_PREFIX.len()..]
        .trim_end_matches(['\r', '\n'])
        .strip_prefix("phase ")?;
    let mut words = rest.split_whitespace();
    let name = words.next()?;
    let ms: u64 = words.next()?.parse().ok()?;
    if words.next()? != "ms" {
        return None;
    }
    let phase = match name {
        "pid1" => Phase::Pid1,
        "resumed" => Phase::Resumed,
        "network" => Phase::Network,
        "app" => Phase::App,
        "listening" => {
            if words.next()? != "tcp" {
                return None;
            }
            Phase::Listening(words.next()?.parse().ok()?)
        }
        _ => return None,
    };
    Some((phase, ms))
}

/// Every phase line of a console log, in order.
pub fn phases_in(console: &str) -> Vec<(Phase, u64)> {
    console.lines().filter_map(parse_phase_line).collect()
}

/// The TCP ports in LISTEN state in the text of `/proc/net/tcp` or `/proc/net/tcp6`
/// (`sl local_address rem_address st …`, the address as hex `IP:PORT`, LISTEN being `0A`).
pub fn listening_ports(proc_net_tcp: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = proc_net_tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if state != "0A" {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for p in [
            Phase::Pid1,
            Phase::Resumed,
            Phase::Network,
            Phase::App,
            Phase::Listening(8080),
        ] {
            let line = phase_line(p, 1234);
            assert_eq!(parse_phase_line(&line), Some((p, 1234)), "{line}");
            // QEMU's serial log ends lines with \r\n.
            assert_eq!(parse_phase_line(&format!("{line}\r")), Some((p, 1234)));
        }
        assert_eq!(
            phase_line(Phase::Listening(80), 7),
            "bakeoff-init: phase listening 7 ms tcp 80"
        );
        assert_eq!(parse_phase_line("bakeoff-init: starting /app"), None);
        assert_eq!(parse_phase_line("bakeoff-init: phase warp 3 ms"), None);
        assert_eq!(parse_phase_line("app: phase pid1 3 ms"), None);
    }

    #[test]
    fn listening_sockets_come_from_proc_net_tcp() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0F02000A:1F90 0202000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1236 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_ports(tcp), vec![53, 8080]);
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_ports(tcp6), vec![80]);
        assert!(listening_ports("").is_empty());
    }
}
