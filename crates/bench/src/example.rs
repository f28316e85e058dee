//! A fixed, fake report for tests, snapshots and demos (figures in the range measured on a
//! 2-CPU machine without usable KVM; nothing here was measured by this code).

use std::collections::BTreeMap;
use std::time::Duration;

use bakeoff_spec::Platform;

use crate::{
    recommend, Accelerator, AppInfo, Conditions, ErrorCounts, HostInfo, ImageSize, LatencyMs,
    LatencySummary, LoadShape, LoadStats, MemoryPart, MemoryStats, PlatformReport, Policy, Report,
    Slo, Stat, Sweep, SweepPoint, Verdict, SCHEMA_VERSION,
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
        longest_in_flight_ms: None,
    }
}

/// One sweep point: (offered, achieved, p50 ms, p90 ms, p99 ms, max ms, errors, memory MiB).
type Point = (f64, f64, f64, f64, f64, f64, u64, f64);

fn sweep(points: &[Point]) -> Sweep {
    let us = |ms: f64| (ms * 1000.0).round() as u64;
    let points = points
        .iter()
        .map(
            |&(offered, achieved, p50, p90, p99, max, errors, mem)| SweepPoint {
                offered_rate: offered,
                achieved_rate: achieved,
                latency: LatencySummary {
                    min_us: us(p50 / 4.0),
                    mean_us: p50 * 1100.0,
                    stdev_us: p90 * 400.0,
                    p50_us: us(p50),
                    p75_us: us((p50 + p90) / 2.0),
                    p90_us: us(p90),
                    p99_us: us(p99),
                    p999_us: us((p99 + max) / 2.0),
                    max_us: us(max),
                },
                errors,
                memory_bytes: Some((mem * MIB) as u64),
                saturated: None,
            },
        )
        .collect();
    let slo: Slo = "p99=20ms".parse().unwrap_or_default();
    Sweep::new(slo, 5.0, 16, points)
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
    docker.host_reference = Some(stat(&[0.025, 0.026, 0.034, 0.025, 0.026]));
    docker.memory = Some(MemoryStats {
        host_bytes: mib(&[1.9, 1.8, 2.0, 1.9, 1.9]),
        guest_bytes: None,
        host_parts: Vec::new(),
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
    docker.sweep = Some(sweep(&[
        (100.0, 100.0, 0.41, 0.62, 0.95, 2.1, 0, 1.9),
        (1_000.0, 999.8, 0.45, 0.70, 1.10, 3.4, 0, 2.0),
        (5_000.0, 4_998.0, 0.58, 0.91, 1.70, 6.2, 0, 2.2),
        (20_000.0, 18_650.0, 9.8, 41.0, 88.0, 160.0, 0, 2.6),
    ]));

    let mut qemu = PlatformReport::measured(
        Platform::Qemu,
        Conditions {
            // As the runtime records it: the VMM's argv, one token per entry.
            vmm_flags: [
                "qemu-system-x86_64",
                "-M",
                "microvm,x-option-roms=off,isa-serial=on,rtc=off",
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-m",
                "128",
                "-smp",
                "1",
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-kernel",
                "/var/lib/bakeoff/kernels/vmlinuz-6.1.0-28-amd64",
                "-initrd",
                "/var/lib/bakeoff/images/hello/initramfs.cpio.lz4",
                "-append",
                "console=ttyS0 reboot=t panic=-1 tsc=reliable quiet",
                "-netdev",
                "user,id=n0,hostfwd=tcp:127.0.0.1:18081-:8080",
                "-device",
                "virtio-net-device,netdev=n0",
                "-serial",
                "stdio",
            ]
            .map(String::from)
            .to_vec(),
            cpus: Some(1.0),
            memory_bytes: Some(128 << 20),
            kernel: Some("6.1.0-28-amd64 (Debian)".into()),
            versions: versions(&[("qemu", "7.2.15")]),
            ..Conditions::vm(
                Accelerator::Tcg,
                "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            )
        },
    );
    qemu.image_size = Some(ImageSize {
        bytes: 10_276_044,
        compressed_bytes: Some(8_912_896),
    });
    qemu.launch_to_ready = Some(stat(&[2.21, 2.05, 2.61, 2.18, 2.33]));
    qemu.host_reference = Some(stat(&[0.026, 0.025, 0.036, 0.025, 0.027]));
    qemu.launch_phases = [
        ("vmm", [0.031, 0.030, 0.034, 0.029, 0.032]),
        ("kernel", [0.21, 0.20, 0.26, 0.21, 0.22]),
        ("pid1", [1.52, 1.41, 1.83, 1.49, 1.60]),
        ("network", [1.55, 1.44, 1.86, 1.52, 1.63]),
        ("app", [1.56, 1.45, 1.87, 1.53, 1.64]),
        ("listening", [2.05, 1.90, 2.41, 2.02, 2.16]),
        ("first 200", [2.21, 2.05, 2.61, 2.18, 2.33]),
    ]
    .into_iter()
    .map(|(phase, samples)| crate::PhaseStat {
        phase: phase.into(),
        at: stat(&samples),
    })
    .collect();
    qemu.translation = Some(crate::TranslationStats {
        blocks: stat(&[19_206.0, 19_410.0, 18_977.0, 19_380.0, 19_122.0]),
        code_bytes: stat(&[
            11_117_523.0,
            11_240_118.0,
            10_986_040.0,
            11_201_775.0,
            11_073_902.0,
        ]),
        capacity_bytes: stat(&[16_772_096.0; 5]),
        flushes: stat(&[1.0; 5]),
    });
    qemu.memory = Some(MemoryStats {
        host_bytes: mib(&[182.0, 179.5, 185.2, 181.1, 183.0]),
        guest_bytes: Some(mib(&[21.4, 21.3, 21.6, 21.4, 21.5])),
        host_parts: [
            ("guest_ram", [60.1, 59.8, 61.0, 60.2, 60.4]),
            ("translation_cache", [32.0, 32.0, 32.0, 32.0, 32.0]),
            ("vmm_code", [32.4, 32.3, 32.5, 32.4, 32.4]),
            ("boot_files", [18.0, 18.0, 18.0, 18.0, 18.0]),
            ("other", [39.5, 37.4, 41.7, 38.5, 40.2]),
        ]
        .into_iter()
        .map(|(part, samples)| MemoryPart {
            part: part.into(),
            bytes: mib(&samples),
        })
        .collect(),
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
    qemu.sweep = Some(sweep(&[
        (100.0, 100.0, 1.9, 3.1, 5.2, 12.0, 0, 181.0),
        (1_000.0, 999.1, 2.6, 4.4, 8.9, 21.0, 0, 182.5),
        (
            5_000.0, 2_960.0, 610.0, 1_450.0, 2_100.0, 2_480.0, 14, 186.0,
        ),
        (
            20_000.0, 2_890.0, 2_950.0, 4_100.0, 4_800.0, 5_000.0, 2_310, 190.2,
        ),
    ]));

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
        host_parts: Vec::new(),
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
            rate: None,
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
