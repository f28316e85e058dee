//! A fixed, fake report for tests, snapshots and demos (figures in the range measured on a
//! 2-CPU machine without usable KVM; nothing here was measured by this code).

use std::collections::BTreeMap;
use std::time::Duration;

use bakeoff_spec::Platform;

use crate::{
    recommend, Accelerator, AppInfo, Conditions, ErrorCounts, HostInfo, ImageSize, LatencyMs,
    LoadShape, LoadStats, MemoryStats, PlatformReport, Policy, Report, Stat, Verdict,
    SCHEMA_VERSION,
};

const MIB: f64 = 1024.0 * 1024.0;

fn stat(samples: &[f64]) -> Stat {
    Stat::from_samples(samples).unwrap_or_else(|_| Stat {
        median: 0.0,
        min: 0.0,
        max: 0.0,
        mean: 0.0,
        samples: Vec::new(),
    })
}

fn mib(samples: &[f64]) -> Stat {
    stat(
        &samples
            .iter()
            .map(|m| (m * MIB).round())
            .collect::<Vec<_>>(),
    )
}

fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(rps: &[f64], latency_ms: LatencyMs, errors: ErrorCounts, non_2xx: u64) -> LoadStats {
    let requests = (rps.iter().sum::<f64>() * 10.0) as u64;
    LoadStats {
        runs: rps.len() as u32,
        requests,
        ok: requests - non_2xx,
        non_2xx,
        errors: errors.total(),
        error_kinds: errors,
        req_per_sec: stat(rps),
        latency_ms: Some(latency_ms),
    }
}

/// The verdicts of `bakeoff check` that go with [`report`].
pub fn verdicts() -> Vec<Verdict> {
    vec![
        (Platform::Docker, true, vec![]),
        (Platform::Qemu, true, vec![]),
        (Platform::Rumprun, true, vec![]),
        (Platform::Xen, true, vec![]),
        (Platform::Firecracker, true, vec![]),
    ]
}

/// The example app `hello` on docker (native), qemu and rumprun (both emulated by TCG), with
/// xen and firecracker unavailable; the recommendation is filled in for the Balanced policy.
pub fn report() -> Report {
    let mut docker = PlatformReport::measured(
        Platform::Docker,
        Conditions {
            vmm_flags: vec![
                "--memory=128m".into(),
                "--cpus=1".into(),
                "-p 127.0.0.1:18080:8080".into(),
            ],
            cpus: Some(1.0),
            memory_bytes: Some(128 << 20),
            versions: versions(&[("docker", "20.10.24+dfsg1"), ("runc", "1.1.5")]),
            ..Conditions::native("bakeoff/hello:3f2a9c1e")
        },
    );
    docker.image_size = Some(ImageSize {
        bytes: 807_936,
        compressed_bytes: Some(331_776),
    });
    docker.launch_to_ready = Some(stat(&[0.27, 0.25, 0.31, 0.26, 0.28]));
    docker.memory = Some(MemoryStats {
        host_bytes: mib(&[1.9, 1.8, 2.0, 1.9, 1.9]),
        guest_bytes: None,
    });
    docker.load = Some(load(
        &[18_420.0, 18_950.0, 17_880.0, 18_610.0, 18_300.0],
        LatencyMs {
            p50: 0.82,
            p75: 0.91,
            p90: 1.05,
            p99: 1.62,
            p999: 3.9,
            max: 11.4,
            mean: 0.86,
        },
        ErrorCounts::default(),
        0,
    ));
    docker
        .notes
        .push("published through docker-proxy on 127.0.0.1".into());

    let mut qemu = PlatformReport::measured(
        Platform::Qemu,
        Conditions {
            vmm_flags: vec![
                "-M microvm".into(),
                "-accel tcg".into(),
                "-m 128".into(),
                "-smp 1".into(),
                "-append \"console=ttyS0 tsc=reliable quiet\"".into(),
                "-netdev user,hostfwd=tcp:127.0.0.1:18081-:8080".into(),
            ],
            cpus: Some(1.0),
            memory_bytes: Some(128 << 20),
            kernel: Some("6.1.0-28-amd64 (Debian)".into()),
            versions: versions(&[("qemu", "7.2.15")]),
            ..Conditions::vm(Accelerator::Tcg, "hello.microvm (vmlinux + initramfs)")
        },
    );
    qemu.image_size = Some(ImageSize {
        bytes: 10_276_044,
        compressed_bytes: Some(8_912_896),
    });
    qemu.launch_to_ready = Some(stat(&[2.21, 2.05, 2.61, 2.18, 2.33]));
    qemu.memory = Some(MemoryStats {
        host_bytes: mib(&[182.0, 179.5, 185.2, 181.1, 183.0]),
        guest_bytes: Some(mib(&[21.4, 21.3, 21.6, 21.4, 21.5])),
    });
    qemu.load = Some(load(
        &[2_950.0, 3_020.0, 2_870.0, 2_990.0, 2_910.0],
        LatencyMs {
            p50: 4.8,
            p75: 5.6,
            p90: 7.1,
            p99: 14.2,
            p999: 31.0,
            max: 58.3,
            mean: 5.3,
        },
        ErrorCounts {
            timeout: 2,
            ..ErrorCounts::default()
        },
        0,
    ));
    qemu.notes.push(
        "KVM was unusable (the probe guest hung after real-mode setup); fell back to TCG".into(),
    );

    let mut rumprun = PlatformReport::measured(
        Platform::Rumprun,
        Conditions {
            vmm_flags: vec![
                "-accel tcg".into(),
                "-m 16".into(),
                "-vga none".into(),
                "-device virtio-net-pci".into(),
            ],
            cpus: Some(1.0),
            memory_bytes: Some(16 << 20),
            kernel: Some("rumprun hw_virtio (NetBSD 7.99)".into()),
            versions: versions(&[("qemu", "7.2.15"), ("rumprun", "b04d42225")]),
            ..Conditions::vm(Accelerator::Tcg, "hello.bin (rumprun-bake hw_virtio)")
        },
    );
    rumprun.image_size = Some(ImageSize {
        bytes: 3_040_624,
        compressed_bytes: Some(1_245_184),
    });
    rumprun.launch_to_ready = Some(stat(&[0.35, 0.33, 0.41, 0.36, 0.34]));
    rumprun.memory = Some(MemoryStats {
        host_bytes: mib(&[41.2, 40.8, 41.9, 41.0, 41.3]),
        guest_bytes: None,
    });
    rumprun.load = Some(load(
        &[3_910.0, 3_870.0, 4_020.0, 3_760.0, 3_950.0],
        LatencyMs {
            p50: 3.9,
            p75: 4.4,
            p90: 5.2,
            p99: 9.8,
            p999: 19.5,
            max: 40.2,
            mean: 4.1,
        },
        ErrorCounts::default(),
        0,
    ));

    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        tool_version: "0.1.0".into(),
        created: "2026-11-26T07:00:00Z".into(),
        host: HostInfo {
            hostname: "bench-host".into(),
            cpus: 2,
            memory_bytes: 24 << 30,
            kernel: "6.1.0-28-amd64".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
        },
        app: AppInfo {
            name: "hello".into(),
            input: "examples/hello/hello.c".into(),
            build_seconds: Some(0.41),
            binary_size: Some(786_432),
            artifact_id: None,
        },
        load_shape: LoadShape {
            connections: 16,
            duration: Duration::from_secs(10),
            keepalive: true,
            warmup: Duration::from_secs(1),
            max_requests: None,
        },
        runs_per_platform: 5,
        policy: Policy::Balanced,
        platforms: vec![
            docker,
            qemu,
            rumprun,
            PlatformReport::unavailable(
                Platform::Xen,
                "xl is not installed and /proc/xen is absent: this host is not a Xen dom0",
            ),
            PlatformReport::unavailable(
                Platform::Firecracker,
                "firecracker is not on PATH and KVM is unusable here",
            ),
        ],
        recommendation: None,
    };
    report.recommendation = Some(recommend(&report, &verdicts(), report.policy));
    report
}
