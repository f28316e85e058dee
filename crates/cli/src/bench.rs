//! `bakeoff bench`: build once, then for each platform N launch-to-ready runs after a warm-up,
//! memory, and a load phase with the built-in generator; one report (JSON, Markdown, HTML) and a
//! recommendation. Every instance the bench starts is removed, also on Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bakeoff_bench::{
    Accelerator, AppInfo, Conditions, ImageSize, LoadShape, LoadStats, LoadTarget, MemoryStats,
    PlatformReport, Policy, Probe, Report, Stat,
};
use bakeoff_build::Cache;
use bakeoff_detect::BuildPlan;
use bakeoff_driver::{driver_with, Driver, DriverOptions, StartRequest};
use bakeoff_launch::Image;
use bakeoff_spec::{HealthKind, Platform, PortMapping, Protocol, RunOptions};
use bakeoff_state::{now_secs, Instance, StateDir, Status};

use crate::verbs::{pack_for, prepare, verdicts_for, Progress};

pub struct BenchArgs {
    pub app: String,
    pub platforms: Option<Vec<Platform>>,
    pub runs: u32,
    pub shape: LoadShape,
    pub policy: Policy,
    pub out: PathBuf,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub options: DriverOptions,
    pub ready_timeout: Duration,
}

/// The instance being measured, so Ctrl-C can remove it.
struct Current {
    state: StateDir,
    inst: Option<(Instance, Platform)>,
}

pub async fn bench(a: BenchArgs) -> Result<i32> {
    a.shape.validate()?;
    if a.runs == 0 || a.runs > 100 {
        bail!("--runs must be between 1 and 100, got {}", a.runs);
    }
    let progress = Progress::new();
    let prepared = prepare(&a.app, &[], None, &progress);
    progress.done();
    let (plan, artifact, _, _) = prepared?;
    let (_, verdicts) = verdicts_for(&artifact)?;
    let m = &artifact.manifest;
    let mut report = Report::new(
        env!("CARGO_PKG_VERSION"),
        AppInfo {
            name: m.name.clone(),
            input: a.app.clone(),
            build_seconds: Some(m.build_seconds),
            binary_size: Some(m.binary_size),
        },
        a.shape.clone(),
        a.runs,
        a.policy,
    );
    let explicit = a.platforms.is_some();
    let platforms = a
        .platforms
        .clone()
        .unwrap_or_else(|| Platform::ALL.to_vec());
    let mut current = Current {
        state: StateDir::from_env(),
        inst: None,
    };

    let run_all = async {
        for &platform in &platforms {
            let pr = bench_platform(
                &a,
                &plan,
                &artifact,
                &verdicts,
                platform,
                explicit,
                &mut current,
            )
            .await;
            report.platforms.push(pr);
        }
    };
    let interrupted = tokio::select! {
        _ = run_all => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        if let Some((inst, platform)) = current.inst.take() {
            eprintln!("bakeoff: interrupted; removing {}", inst.name);
            let d = driver_with(platform, a.options.clone());
            let _ = d.remove(&inst).await;
            let _ = current.state.remove(&inst.name);
        }
        bail!("the bench was interrupted; every instance it started has been removed");
    }
    if !report.platforms.iter().any(|p| p.is_measured()) {
        let reasons: Vec<String> = report
            .platforms
            .iter()
            .map(|p| format!("{}: {}", p.platform, p.status.reason().unwrap_or("?")))
            .collect();
        bail!(
            "no platform could run {}: {}",
            plan.name,
            reasons.join("; ")
        );
    }
    let v: Vec<bakeoff_bench::Verdict> = verdicts
        .iter()
        .map(|v| (v.platform, v.runnable, v.reasons.clone()))
        .collect();
    report.recommendation = Some(bakeoff_bench::recommend(&report, &v, a.policy));
    let paths = bakeoff_bench::write_outputs(&report, &a.out)?;
    println!("{}", bakeoff_bench::markdown(&report));
    println!(
        "report: {}  {}  {}",
        paths.json.display(),
        paths.markdown.display(),
        paths.html.display()
    );
    Ok(0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn bench_platform(
    a: &BenchArgs,
    plan: &BuildPlan,
    artifact: &bakeoff_build::Artifact,
    verdicts: &[bakeoff_elf::Verdict],
    platform: Platform,
    explicit: bool,
    current: &mut Current,
) -> PlatformReport {
    if let Some(v) = verdicts
        .iter()
        .find(|v| v.platform == platform && !v.runnable)
    {
        return PlatformReport::unavailable(
            platform,
            format!("{} cannot run here: {}", plan.name, v.reasons.join("; ")),
        );
    }
    let driver = driver_with(platform, a.options.clone());
    if let Err(e) = crate::verbs::platform_available(platform, plan, &*driver).await {
        if explicit {
            eprintln!(
                "bakeoff: {platform} is unavailable ({e}); continuing with the other platforms"
            );
        }
        return PlatformReport::unavailable(platform, e.to_string());
    }
    let progress = Progress::new();
    let image = match pack_for(artifact, platform.target(), None, &progress) {
        Ok(i) => i,
        Err(e) => {
            progress.done();
            return PlatformReport::failed(platform, format!("packing failed: {e:#}"));
        }
    };
    progress.done();
    match measure(a, plan, &image, &*driver, platform, current).await {
        Ok(pr) => pr,
        Err(e) => PlatformReport::failed(platform, format!("{e:#}")),
    }
}

/// Samples of one platform: N launch-to-ready (after one warm-up), memory, and load.
async fn measure(
    a: &BenchArgs,
    plan: &BuildPlan,
    image: &Image,
    driver: &dyn Driver,
    platform: Platform,
    current: &mut Current,
) -> Result<PlatformReport> {
    let guest_port = plan
        .health
        .port
        .or(plan.ports.first().copied())
        .context("the app declares no port to probe; set `ports` in bakeoff.toml")?;
    let http = plan.health.kind == HealthKind::Http;
    let mut ready_s = Vec::new();
    let mut mem = Vec::new();
    let mut guest_mem = Vec::new();
    let mut loads = Vec::new();
    let mut conditions = None;
    let mut notes = Vec::new();
    if !http {
        notes.push("the app is probed over TCP; load testing needs HTTP, so only start-up and memory were measured".to_string());
    }
    for run in 0..=a.runs {
        let warmup = run == 0;
        let label = if warmup {
            "warm-up".to_string()
        } else {
            format!("run {run}/{}", a.runs)
        };
        eprintln!("bakeoff: {platform}: {label}");
        let port = free_port()?;
        let name = format!(
            "bench-{}-{}-{}-{}",
            plan.name,
            platform,
            std::process::id(),
            run
        );
        let dir = current.state.reserve(&name)?;
        let opts = RunOptions {
            publish: vec![PortMapping {
                host_ip: Ipv4Addr::LOCALHOST,
                host_port: port,
                guest_port,
                protocol: Protocol::Tcp,
            }],
            name: Some(name.clone()),
            detach: true,
            memory: a.memory.or(plan.memory),
            cpus: a.cpus.or(plan.cpus),
            ..Default::default()
        };
        let t0 = Instant::now();
        let handle = match driver
            .start(StartRequest {
                name: &name,
                image,
                opts: &opts,
                instance_dir: &dir,
            })
            .await
        {
            Ok(h) => h,
            Err(e) => {
                current.state.release(&name);
                return Err(e.into());
            }
        };
        let inst = Instance {
            name: name.clone(),
            platform,
            app: plan.input.clone(),
            image: image
                .reference
                .clone()
                .unwrap_or_else(|| image.dir.display().to_string()),
            image_digest: image.digest.clone(),
            created: now_secs(),
            ports: opts.publish.clone(),
            status: Status::Running,
            handle: handle.clone(),
        };
        current.state.save(&inst)?;
        current.inst = Some((inst.clone(), platform));
        let outcome = one_run(a, plan, driver, &inst, port, http, t0, warmup).await;
        let _ = driver.remove(&inst).await;
        let _ = current.state.remove(&name);
        current.inst = None;
        let (ready, memory, load, guest) = outcome?;
        if conditions.is_none() {
            conditions = Some(conditions_for(platform, image, &handle, &opts));
        }
        if !warmup {
            ready_s.push(ready.as_secs_f64());
            if let Some(m) = memory {
                mem.push(m as f64);
            }
            if let Some(g) = guest {
                guest_mem.push(g as f64);
            }
            if let Some(l) = load {
                loads.push(l);
            }
        }
    }
    let mut pr = PlatformReport::measured(platform, conditions.expect("at least one run"));
    pr.launch_to_ready = Some(Stat::from_samples(&ready_s)?);
    pr.image_size = Some(image_size(image));
    if !mem.is_empty() {
        let guest_bytes = if guest_mem.is_empty() {
            None
        } else {
            Some(Stat::from_samples(&guest_mem)?)
        };
        pr.memory = Some(MemoryStats {
            host_bytes: Stat::from_samples(&mem)?,
            guest_bytes,
        });
    }
    if !loads.is_empty() {
        pr.load = Some(LoadStats::from_runs(&loads)?);
    }
    if platform == Platform::Qemu {
        notes.push(
            "memory is the QEMU process's resident set (the VMM and the guest's touched RAM)"
                .into(),
        );
        notes.push("the image size includes the guest kernel, shared by every microVM".into());
    }
    pr.notes = notes;
    Ok(pr)
}

#[allow(clippy::too_many_arguments)]
async fn one_run(
    a: &BenchArgs,
    plan: &BuildPlan,
    driver: &dyn Driver,
    inst: &Instance,
    port: u16,
    http: bool,
    t0: Instant,
    warmup: bool,
) -> Result<(
    Duration,
    Option<u64>,
    Option<bakeoff_bench::LoadResult>,
    Option<u64>,
)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let probe = if http {
        Probe::Http {
            addr,
            path: plan.health.path.clone(),
        }
    } else {
        Probe::Tcp { addr }
    };
    let ready = bakeoff_bench::wait_ready(probe, t0 + a.ready_timeout).await;
    let ready = match ready {
        Ok(_) => t0.elapsed(),
        Err(e) => {
            let mut buf: Vec<u8> = Vec::new();
            let _ = driver.logs(inst, false, &mut buf).await;
            let text = String::from_utf8_lossy(&buf);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
            let why = driver
                .diagnose(inst)
                .await
                .map(|d| format!("{d}; "))
                .unwrap_or_default();
            bail!("the app never became ready: {e}; {why}last output: {tail}");
        }
    };
    let memory = driver.memory_bytes(inst).await.ok().flatten();
    let load = if http && !warmup {
        let mut target = LoadTarget::new(addr);
        target.path = plan.health.path.clone();
        Some(bakeoff_bench::load(target, a.shape.clone()).await?)
    } else {
        None
    };
    // Memory after load is what the app really holds when busy.
    let memory = match (
        load.is_some(),
        driver.memory_bytes(inst).await.ok().flatten(),
    ) {
        (true, Some(after)) => Some(after.max(memory.unwrap_or(0))),
        _ => memory,
    };
    // The guest's own count, after the load, where the platform reports one.
    let guest = if warmup {
        None
    } else {
        driver.guest_memory_bytes(inst).await
    };
    Ok((ready, memory, load, guest))
}

fn conditions_for(
    platform: Platform,
    image: &Image,
    handle: &bakeoff_state::Handle,
    opts: &RunOptions,
) -> Conditions {
    let mut c = match platform {
        Platform::Docker => Conditions::native(image.reference.as_deref().unwrap_or(&image.digest)),
        _ => {
            let accel = match handle.accel() {
                Some(bakeoff_driver::qemu::Accel::Kvm) => Accelerator::Kvm,
                _ => Accelerator::Tcg,
            };
            let mut c = Conditions::vm(accel, &image.digest);
            c.vmm_flags = handle
                .vmm_argv()
                .map(<[String]>::to_vec)
                .unwrap_or_default();
            c.kernel = image.details.kernel_version.clone();
            c
        }
    };
    c.cpus = opts.cpus;
    c.memory_bytes = opts.memory.or(handle.memory_mib().map(|m| m << 20));
    c
}

fn image_size(image: &Image) -> ImageSize {
    let kernel = image.details.kernel_bytes.unwrap_or(0);
    ImageSize {
        bytes: image.size_bytes + kernel,
        compressed_bytes: Some(image.compressed_bytes + kernel),
    }
}

/// Cache dir for drivers' probes.
pub fn cache_root() -> PathBuf {
    Cache::from_env().root().to_path_buf()
}
