//! PID 1's phase lines and the watch for the app's listening sockets (see `bakeoff_init::phases`).
//! Kept apart from main.rs so that other changes to PID 1 merge easily.

use std::time::{Duration, Instant};

use bakeoff_init::phases::{listening_ports, phase_line, Phase};

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

const CLOCK_MONOTONIC: i32 = 1;

/// Milliseconds since the kernel started (CLOCK_MONOTONIC, the clock of printk's timestamps).
pub fn uptime_ms() -> u64 {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The guest time later phases count from: 0, or the moment a warm start resumed.
static ORIGIN_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Prints the phase line for `phase`, now.
pub fn report(phase: Phase) {
    let origin = ORIGIN_MS.load(std::sync::atomic::Ordering::Relaxed);
    super::say_raw(&phase_line(phase, uptime_ms().saturating_sub(origin)));
}

/// A warm start resumed now: prints `phase resumed 0 ms`, and later phases count from here.
pub fn resumed() {
    ORIGIN_MS.store(uptime_ms(), std::sync::atomic::Ordering::Relaxed);
    super::say_raw(&phase_line(Phase::Resumed, 0));
}

/// Watches /proc/net/tcp{,6} for the app's listening sockets and prints one `phase listening`
/// line per new port. Polls every 10 ms for the first 2 s after the app started, every 50 ms
/// until 10 s, then every 250 ms; stops after 120 s (bounded).
pub struct ListenWatch {
    started: Instant,
    next: Instant,
    seen: Vec<u16>,
}

const WATCH_FOR: Duration = Duration::from_secs(120);

impl ListenWatch {
    pub fn new() -> ListenWatch {
        let now = Instant::now();
        ListenWatch {
            started: now,
            next: now,
            seen: Vec::new(),
        }
    }

    fn interval(&self) -> Duration {
        let age = self.started.elapsed();
        if !self.seen.is_empty() || age > Duration::from_secs(10) {
            Duration::from_millis(250)
        } else if age > Duration::from_secs(2) {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(10)
        }
    }

    /// The poll timeout until the next check, or -1 once the watch has ended.
    pub fn timeout_ms(&self) -> i32 {
        if self.started.elapsed() > WATCH_FOR {
            return -1;
        }
        self.next
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(1000) as i32
    }

    /// Checks the sockets when it is time to.
    pub fn tick(&mut self) {
        if self.started.elapsed() > WATCH_FOR || Instant::now() < self.next {
            return;
        }
        let mut ports = Vec::new();
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(file) {
                ports.extend(listening_ports(&text));
            }
        }
        ports.sort_unstable();
        ports.dedup();
        for p in ports {
            if !self.seen.contains(&p) {
                self.seen.push(p);
                report(Phase::Listening(p));
            }
        }
        self.next = Instant::now() + self.interval();
    }
}
