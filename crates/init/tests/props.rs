//! Property tests of what PID 1 parses from the host: the kernel command line, the run
//! overrides (base64url JSON on a command line, plain JSON in the per-run file) and the image
//! config. 256 cases each: nothing panics, and what the host encodes the guest decodes.

use bakeoff_init::{json, parse_cmdline, split_cmdline, GuestConfig, RunAs, RunOverrides};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn overrides() -> impl Strategy<Value = RunOverrides> {
    (
        proptest::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,10}", "\\PC{0,30}"), 0..5),
        proptest::option::of(proptest::collection::vec("\\PC{0,20}", 0..4)),
    )
        .prop_map(|(env, args)| RunOverrides { env, args })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cmdline_never_panics(s in "\\PC{0,300}") {
        let _ = parse_cmdline(&s);
        let _ = split_cmdline(&s);
    }

    #[test]
    fn cmdline_with_bakeoff_keys_never_panics(
        keys in proptest::collection::vec(
            ("bakeoff\\.(ip|gw|dns|hostname|run)|[a-z_.]{1,12}", proptest::option::of("[!-~]{0,40}")),
            0..8,
        )
    ) {
        let line: Vec<String> = keys
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        let _ = parse_cmdline(&line.join(" "));
    }

    #[test]
    fn overrides_round_trip_through_json_and_base64(o in overrides()) {
        prop_assert_eq!(RunOverrides::from_json(&o.to_json()).unwrap(), o.clone());
        prop_assert_eq!(RunOverrides::decode(&o.encode()).unwrap(), o.clone());
        // And through the kernel command line, when it is there.
        if !o.is_empty() {
            let boot = parse_cmdline(&format!("console=ttyS0 bakeoff.run={}", o.encode())).unwrap();
            prop_assert_eq!(boot.run, o);
        }
    }

    #[test]
    fn json_and_overrides_never_panic(s in "\\PC{0,200}") {
        let _ = json::parse(&s);
        let _ = RunOverrides::from_json(&s);
        let _ = RunOverrides::decode(&s);
        let _ = GuestConfig::from_json(&s);
    }

    #[test]
    fn json_shaped_noise_never_panics(s in "[\\[\\]{}\",:0-9a-z\\\\ ]{0,120}") {
        let _ = json::parse(&s);
        let _ = RunOverrides::from_json(&s);
    }

    #[test]
    fn config_with_any_user_round_trips(
        uid in any::<u32>(),
        gid in any::<u32>(),
        groups in proptest::collection::vec(any::<u32>(), 0..6),
        owns in proptest::collection::vec("/[ -~]{0,20}", 0..4),
    ) {
        let c = GuestConfig {
            command: vec!["/app/x".into()],
            user: Some(RunAs { uid, gid, groups, owns }),
            ..GuestConfig::default()
        };
        prop_assert_eq!(GuestConfig::from_json(&c.to_json()).unwrap(), c);
    }
}
