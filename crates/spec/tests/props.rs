//! Property tests of the parsers of user input: `-p`, `-e`, `--memory`, `--cpus`, names and
//! `bakeoff.toml`. Each runs 256 cases: no input panics, every accepted value means what it
//! says, and what the parsers print they read back.

use std::path::Path;

use bakeoff_spec::{parse_cpus, parse_env, parse_memory, parse_publish, validate_name, AppSpec};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn publish_never_panics_and_accepts_only_real_ports(s in "\\PC{0,40}") {
        if let Ok(p) = parse_publish(&s) {
            prop_assert!(p.host_port > 0 && p.guest_port > 0);
        }
    }

    #[test]
    fn publish_reads_back_what_it_means(
        ip in proptest::array::uniform4(any::<u8>()),
        host in 1u16..,
        guest in 1u16..,
        udp in any::<bool>(),
    ) {
        let ip = std::net::Ipv4Addr::from(ip);
        let text = format!("{ip}:{host}:{guest}{}", if udp { "/udp" } else { "" });
        let p = parse_publish(&text).unwrap();
        prop_assert_eq!((p.host_ip, p.host_port, p.guest_port), (ip, host, guest));
        prop_assert_eq!(p.protocol == bakeoff_spec::Protocol::Udp, udp);
    }

    #[test]
    fn env_splits_at_the_first_equals(k in "[A-Za-z_][A-Za-z0-9_]{0,20}", v in "\\PC{0,40}") {
        let (key, value) = parse_env(&format!("{k}={v}")).unwrap();
        prop_assert_eq!((key, value), (k, v));
    }

    #[test]
    fn env_never_panics(s in "\\PC{0,40}") {
        if let Ok((k, _)) = parse_env(&s) {
            prop_assert!(!k.is_empty() && !k.contains('='));
        }
    }

    #[test]
    fn memory_never_panics_and_never_overflows(s in "[0-9]{0,25}[kKmMgGbB]{0,2}|\\PC{0,20}") {
        if let Ok(bytes) = parse_memory(&s) {
            prop_assert!(bytes >= 4 << 20);
        }
    }

    #[test]
    fn memory_units_are_binary(n in 4u64..1_000_000) {
        prop_assert_eq!(parse_memory(&format!("{n}M")).unwrap(), n << 20);
        prop_assert_eq!(parse_memory(&format!("{n}g")).unwrap(), n << 30);
    }

    #[test]
    fn cpus_are_finite_and_positive(s in "\\PC{0,20}") {
        if let Ok(c) = parse_cpus(&s) {
            prop_assert!(c.is_finite() && c > 0.0);
        }
    }

    /// An accepted name is never path-like.
    #[test]
    fn names_never_look_like_paths(s in "\\PC{0,70}") {
        if validate_name(&s).is_ok() {
            prop_assert!(!s.contains('/') && !s.starts_with('.') && !s.is_empty() && s.len() <= 63);
        }
    }

    #[test]
    fn bakeoff_toml_never_panics(s in "\\PC{0,200}") {
        let _ = AppSpec::parse(&s, Path::new("bakeoff.toml"));
    }

    /// Structured TOML with hostile values: accepted `files` destinations never climb out.
    #[test]
    fn accepted_files_destinations_stay_inside(dst in "(/|\\.\\.|[a-z]{1,3}|\\.){1,8}") {
        let text = format!("[[files]]\nsrc = \"a\"\ndst = {dst:?}\n");
        if let Ok(spec) = AppSpec::parse(&text, Path::new("bakeoff.toml")) {
            let d = &spec.files[0].dst;
            prop_assert!(d.starts_with('/') && !d.split('/').any(|c| c == ".."), "{d}");
        }
    }
}
