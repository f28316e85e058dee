//! Warm starts: a microVM restored from a snapshot of its booted guest gets its run's values on
//! its console, as one line, instead of on the kernel command line.
//!
//! The snapshot is taken while PID 1, booted with `bakeoff.wait=console`, waits on its console
//! (after printing `bakeoff-init: waiting for the run`). The VMM restores it and writes one
//! line:
//!
//! ```text
//! bakeoff-run 1764662400123456789 <64 hex digits> web-1 <base64url JSON of the overrides, or ->
//! ```
//!
//! the host's wall clock (ns since the Unix epoch: the snapshot's clock is as old as the
//! snapshot), 32 fresh random bytes (every copy of a snapshot starts with the same kernel random
//! state, so PID 1 mixes these in and reseeds before the app runs), the run's hostname, and the
//! run's `-e`/`-- ARGS` ([`RunOverrides`]). The host side writes it with [`RunLine::to_line`],
//! PID 1 reads it with [`RunLine::parse`].

use crate::RunOverrides;

/// The first word of the line.
pub const RUN_LINE_WORD: &str = "bakeoff-run";

/// What PID 1 prints (after [`crate::LOG_PREFIX`]) once it waits for the line.
pub const WAITING: &str = "waiting for the run";

/// The longest line PID 1 reads (the overrides are the user's `-e` values).
pub const MAX_RUN_LINE: usize = 1 << 20;

/// One run's values for a guest restored from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLine {
    /// The host's wall clock, ns since the Unix epoch.
    pub unix_ns: u64,
    /// Fresh randomness for the guest's random pool.
    pub seed: [u8; 32],
    pub hostname: String,
    pub run: RunOverrides,
}

impl RunLine {
    /// The line, without its newline.
    pub fn to_line(&self) -> String {
        let seed: String = self.seed.iter().map(|b| format!("{b:02x}")).collect();
        let run = if self.run.is_empty() {
            "-".to_string()
        } else {
            self.run.encode()
        };
        format!(
            "{RUN_LINE_WORD} {} {seed} {} {run}",
            self.unix_ns, self.hostname
        )
    }

    /// Parses one line (a trailing `\r` or `\n` is ignored); a malformed line is one sentence.
    pub fn parse(line: &str) -> Result<RunLine, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.len() > MAX_RUN_LINE {
            return Err(format!("the run line is over {MAX_RUN_LINE} bytes"));
        }
        let words: Vec<&str> = line.split(' ').collect();
        let [word, ns, seed, hostname, run] = words[..] else {
            return Err(format!(
                "the run line has {} words, not 5 (`{RUN_LINE_WORD} NS SEED HOSTNAME RUN`)",
                words.len()
            ));
        };
        if word != RUN_LINE_WORD {
            return Err(format!(
                "the run line does not start with `{RUN_LINE_WORD}`"
            ));
        }
        let unix_ns = ns
            .parse()
            .map_err(|_| format!("the run line's clock `{ns}` is not a number"))?;
        if seed.len() != 64 || !seed.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the run line's seed is not 64 hex digits".to_string());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&seed[2 * i..2 * i + 2], 16).expect("hex checked above");
        }
        if hostname.is_empty() || hostname.len() > 64 || hostname.contains(['/', '\0']) {
            return Err("the run line's hostname is not 1 to 64 bytes without '/'".to_string());
        }
        let run = match run {
            "-" => RunOverrides::default(),
            r => RunOverrides::decode(r).map_err(|m| format!("the run line's overrides: {m}"))?,
        };
        Ok(RunLine {
            unix_ns,
            seed: bytes,
            hostname: hostname.to_string(),
            run,
        })
    }
}

/// How many bytes of the guest's free memory a template's PID 1 touches (and so has the kernel
/// zero) before the snapshot, from the text of `/proc/meminfo`: `MemFree` less a 32nd of it, at
/// least 4 MiB (above the kernel's reclaim watermarks at any size bakeoff allows), kept back so
/// that the kernel never has to reclaim or kill. Memory the boot
/// used and freed (the compressed initramfs, the kernel's init sections) is otherwise saved in
/// the snapshot and loaded into every copy; zeroed, QEMU saves it as a zero page and a copy
/// never touches it. 0 when `MemFree` cannot be read.
pub fn free_memory_to_zero(meminfo: &str) -> u64 {
    let free_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemFree:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let keep_kib = (free_kib / 32).max(4096);
    free_kib.saturating_sub(keep_kib).saturating_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> RunLine {
        RunLine {
            unix_ns: 1_764_662_400_123_456_789,
            seed: [7; 32],
            hostname: "web-1".into(),
            run: RunOverrides {
                env: vec![("GREETING".into(), "hi there".into())],
                args: Some(vec!["--port".into(), "8080".into()]),
            },
        }
    }

    #[test]
    fn a_line_reads_back_and_bad_lines_are_one_sentence() {
        let l = sample();
        assert_eq!(RunLine::parse(&format!("{}\n", l.to_line())), Ok(l.clone()));
        let bare = RunLine {
            run: RunOverrides::default(),
            ..l
        };
        assert!(bare.to_line().ends_with(" web-1 -"));
        assert_eq!(RunLine::parse(&bare.to_line()), Ok(bare));
        for (line, says) in [
            ("", "has 1 words"),
            ("bakeoff-run 1 2 3", "has 4 words"),
            ("other 1 00 h -", "does not start"),
            ("bakeoff-run x 00 h -", "not a number"),
            ("bakeoff-run 1 00 h -", "64 hex digits"),
        ] {
            let e = RunLine::parse(line).unwrap_err();
            assert!(e.contains(says), "{line}: {e}");
        }
        let seed = "ab".repeat(32);
        let e = RunLine::parse(&format!("bakeoff-run 1 {seed} a/b -")).unwrap_err();
        assert!(e.contains("hostname"), "{e}");
        let e = RunLine::parse(&format!("bakeoff-run 1 {seed} h !!")).unwrap_err();
        assert!(e.contains("overrides"), "{e}");
    }

    proptest! {
        #[test]
        fn any_run_reads_back(
            ns in any::<u64>(),
            seed in any::<[u8; 32]>(),
            hostname in "[A-Za-z0-9._-]{1,64}",
            env in proptest::collection::vec(("[A-Z_]{1,8}", "\\PC{0,20}"), 0..4),
            args in proptest::option::of(proptest::collection::vec("\\PC{0,12}", 0..4)),
        ) {
            let l = RunLine { unix_ns: ns, seed, hostname, run: RunOverrides { env, args } };
            prop_assert_eq!(RunLine::parse(&l.to_line()), Ok(l));
        }

        #[test]
        fn any_input_is_parsed_or_refused_without_panicking(line in "\\PC{0,200}") {
            let _ = RunLine::parse(&line);
        }
    }

    #[test]
    fn a_template_zeroes_its_free_memory_but_keeps_some_back() {
        let meminfo = "MemTotal:          25652 kB\nMemFree:           16384 kB\nMemAvailable:      15000 kB\n";
        assert_eq!(free_memory_to_zero(meminfo), (16384 - 4096) * 1024);
        let big = "MemFree:          102400 kB\n";
        assert_eq!(free_memory_to_zero(big), (102400 - 4096) * 1024);
        let huge = "MemFree:          262144 kB\n";
        assert_eq!(free_memory_to_zero(huge), (262144 - 8192) * 1024);
        assert_eq!(free_memory_to_zero("MemFree:    3000 kB\n"), 0);
        assert_eq!(free_memory_to_zero("MemFree: lots\n"), 0);
        assert_eq!(free_memory_to_zero(""), 0);
    }

    proptest::proptest! {
        /// Whatever /proc/meminfo says, never more than what is free.
        #[test]
        fn never_more_than_is_free(text in ".*", free in 0u64..(1 << 40)) {
            proptest::prop_assume!(!text.contains("MemFree:"));
            let with = format!("{text}\nMemFree: {free} kB\n");
            proptest::prop_assert!(free_memory_to_zero(&with) <= free.saturating_mul(1024));
            let _ = free_memory_to_zero(&text);
        }
    }
}
