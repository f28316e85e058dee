//! One small function per verb. Errors go up as anyhow and are printed once by main.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bakeoff_build::{Artifact, Cache};
use bakeoff_detect::BuildPlan;
use bakeoff_driver::qemu::{Accel, Machine, QemuOptions};
use bakeoff_driver::{
    check_ports_free, driver_for, driver_with, Driver, DriverOptions, StartRequest,
};
use bakeoff_launch::Image;
use bakeoff_pack::{packager_for, PackContext};
use bakeoff_spec::{RunOptions, Target};
use bakeoff_state::{now_secs, Instance, StateDir, Status};

use crate::args::{
    AccelArg, BenchCli, BuildArgs, Command, ExportArgs, ExportFormat, MachineArg, OnOff, RunArgs,
    TargetArg,
};

pub async fn dispatch(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Detect { app, json } => detect(&app, json),
        Command::Check { app, json } => check(&app, json).await,
        Command::Build(a) => build(a),
        Command::Run(a) => run(a).await,
        Command::Bench(b) => bench_verb(b).await,
        Command::Export(e) => export(e),
        Command::Ps { json } => ps(json).await,
        Command::Logs { name, follow } => logs(&name, follow).await,
        Command::Stop { name, time } => stop(&name, time).await,
        Command::Rm { name, force } => rm(&name, force).await,
    }
}

async fn bench_verb(b: BenchCli) -> Result<i32> {
    if !(b.duration.is_finite() && b.duration > 0.0) {
        bail!(
            "--duration must be a positive number of seconds, got {}",
            b.duration
        );
    }
    let policy: bakeoff_bench::Policy = b.policy.parse()?;
    let shape = bakeoff_bench::LoadShape {
        connections: b.connections,
        duration: Duration::from_secs_f64(b.duration),
        keepalive: b.keepalive == OnOff::On,
        ..Default::default()
    };
    let options = DriverOptions {
        qemu: QemuOptions {
            accel: b.accel.map(|x| match x {
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            }),
            machine: None,
            cache_dir: Some(crate::bench::cache_root()),
        },
    };
    crate::bench::bench(crate::bench::BenchArgs {
        app: b.app,
        platforms: b.platforms,
        runs: b.runs,
        shape,
        policy,
        out: b.out,
        memory: b.memory,
        cpus: b.cpus,
        options,
        ready_timeout: Duration::from_secs(b.ready_timeout),
    })
    .await
}

/// Progress on stderr: a spinner on a terminal, plain lines otherwise.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new() -> Progress {
        if std::io::stderr().is_terminal() {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.enable_steady_tick(Duration::from_millis(100));
            Progress(Some(pb))
        } else {
            Progress(None)
        }
    }
    pub fn say(&self, msg: &str) {
        match &self.0 {
            Some(pb) => pb.set_message(msg.to_string()),
            None => eprintln!("bakeoff: {msg}"),
        }
    }
    pub fn done(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

fn detect(app: &str, json: bool) -> Result<i32> {
    let plan = bakeoff_detect::detect(app)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_plan(&plan);
    }
    Ok(0)
}

fn print_plan(plan: &BuildPlan) {
    println!("name:     {}", plan.name);
    println!("input:    {}", plan.input);
    println!(
        "source:   {} ({})",
        serde_json::to_value(&plan.source).unwrap()["kind"]
            .as_str()
            .unwrap_or("?"),
        plan.detected_by
    );
    let cmd = if plan.command.is_empty() {
        vec![bakeoff_detect::app_binary_path(&plan.name)]
    } else {
        plan.command.clone()
    };
    println!(
        "command:  {}",
        cmd.iter()
            .chain(&plan.args)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "ports:    {}",
        plan.ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "health:   {:?} {} on port {}",
        plan.health.kind,
        plan.health.path,
        plan.health
            .port
            .map(|p| p.to_string())
            .unwrap_or("-".into())
    );
    for (k, v) in &plan.env {
        println!("env:      {k}={v}");
    }
}

pub fn pack_for(
    artifact: &Artifact,
    target: Target,
    kernel: Option<std::path::PathBuf>,
    progress: &Progress,
) -> Result<Image> {
    let cache = Cache::from_env();
    let log = |m: &str| progress.say(m);
    let ctx = PackContext {
        cache: &cache,
        kernel,
        log: &log,
    };
    progress.say(&format!("packing the {target} image"));
    Ok(packager_for(target)?.pack(artifact, &ctx)?)
}

/// The single target a `--target` value names (`all` names none).
fn target_of(t: TargetArg) -> Option<Target> {
    match t {
        TargetArg::Oci => Some(Target::Oci),
        TargetArg::Microvm => Some(Target::MicroVm),
        TargetArg::Rumprun => Some(Target::Rumprun),
        TargetArg::All => None,
    }
}

/// The image kind to boot on `platform`: its default, or the one `--target` names if the
/// platform boots it.
fn pick_target(platform: bakeoff_spec::Platform, asked: Option<TargetArg>) -> Result<Target> {
    match asked.map(target_of) {
        None | Some(None) => Ok(platform.target()),
        Some(Some(t)) if platform.targets().contains(&t) => Ok(t),
        Some(Some(t)) => {
            let names: Vec<&str> = platform.targets().iter().map(|t| t.as_str()).collect();
            bail!(
                "{platform} boots {} images, not {t} images",
                names.join(" or ")
            )
        }
    }
}

/// Detect + build once + pack for `targets`.
pub fn prepare(
    app: &str,
    targets: &[Target],
    kernel: Option<std::path::PathBuf>,
    progress: &Progress,
) -> Result<(BuildPlan, Artifact, bool, Vec<Image>)> {
    let plan = bakeoff_detect::detect(app)?;
    let cache = Cache::from_env();
    progress.say(&format!("building {}", plan.name));
    let outcome = bakeoff_build::build(&plan, &cache, &|m| progress.say(m))?;
    let images = targets
        .iter()
        .map(|t| pack_for(&outcome.artifact, *t, kernel.clone(), progress))
        .collect::<Result<Vec<_>>>()?;
    Ok((plan, outcome.artifact, outcome.cached, images))
}

/// The compatibility verdicts for an artifact's main binary.
pub fn verdicts_for(
    artifact: &Artifact,
) -> Result<(bakeoff_elf::ElfInfo, Vec<bakeoff_elf::Verdict>)> {
    let m = &artifact.manifest;
    let binary = artifact.rootfs().join(m.binary.trim_start_matches('/'));
    let info = bakeoff_elf::inspect(&binary)?;
    let verdicts = bakeoff_elf::check(&info, m.source.origin());
    Ok((info, verdicts))
}

/// Whether `platform` can be used here for this app: the driver's probe, plus, for Rumprun, a
/// toolchain (from the environment, PATH, or the app's bakeoff.toml).
pub async fn platform_available(
    platform: bakeoff_spec::Platform,
    plan: &BuildPlan,
    driver: &dyn Driver,
) -> Result<(), String> {
    driver.available().await.map_err(|e| e.to_string())?;
    if platform == bakeoff_spec::Platform::Rumprun {
        let app_dir = std::path::Path::new(&plan.input);
        let app_dir = app_dir.is_dir().then_some(app_dir);
        bakeoff_pack::rumprun::find_toolchain(plan.rumprun_toolchain.as_deref(), app_dir)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn check(app: &str, json: bool) -> Result<i32> {
    let progress = Progress::new();
    let prepared = prepare(app, &[], None, &progress);
    progress.done();
    let (plan, artifact, _, _) = prepared?;
    let (info, verdicts) = verdicts_for(&artifact)?;
    let mut rows = Vec::new();
    for v in &verdicts {
        let available = platform_available(v.platform, &plan, &*driver_for(v.platform))
            .await
            .err();
        rows.push((v, available));
    }
    if json {
        let out = serde_json::json!({
            "app": app,
            "binary": { "path": artifact.manifest.binary, "machine": info.machine, "linkage": format!("{:?}", info.linkage).to_lowercase(),
                        "features": info.features },
            "platforms": rows.iter().map(|(v, unavailable)| serde_json::json!({
                "platform": v.platform, "runnable": v.runnable, "reasons": v.reasons,
                "available_here": unavailable.is_none(), "unavailable_reason": unavailable,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!(
        "{} ({}, {})",
        artifact.manifest.binary,
        info.architecture(),
        format!("{:?}", info.linkage).to_lowercase()
    );
    for (v, unavailable) in rows {
        let verdict = if v.runnable { "can run" } else { "cannot run" };
        let here = match &unavailable {
            None => "available here".to_string(),
            Some(why) => format!("not available here: {why}"),
        };
        println!("{:<12} {:<11} {}", v.platform, verdict, here);
        for r in &v.reasons {
            println!("{:<12} {:<11} - {r}", "", "");
        }
    }
    Ok(0)
}

fn export(e: ExportArgs) -> Result<i32> {
    let platform = match e.format {
        ExportFormat::Xl => bakeoff_spec::Platform::Xen,
        ExportFormat::Firecracker => bakeoff_spec::Platform::Firecracker,
        ExportFormat::K8s => bakeoff_spec::Platform::Docker,
    };
    let target = pick_target(platform, e.target)?;
    let progress = Progress::new();
    let prepared = prepare(&e.app, &[target], e.kernel.clone(), &progress);
    progress.done();
    let (plan, _artifact, _, images) = prepared?;
    let name = e.name.clone().unwrap_or_else(|| plan.name.clone());
    bakeoff_spec::validate_name(&name)?;
    let opts = RunOptions {
        publish: e.publish.clone(),
        env: e.env.clone(),
        name: Some(name.clone()),
        detach: true,
        memory: e.memory.or(plan.memory),
        cpus: e.cpus.or(plan.cpus),
        args: e.args.clone(),
    };
    let image = &images[0];
    let text = match e.format {
        ExportFormat::Xl => bakeoff_launch::xl::render_xl(image, &opts, &name)?,
        ExportFormat::Firecracker => serde_json::to_string_pretty(
            &bakeoff_launch::firecracker::export_firecracker(image, &opts, &name)?,
        )?,
        ExportFormat::K8s => serde_json::to_string_pretty(&bakeoff_launch::k8s::render_pod(
            image,
            &opts,
            &name,
            &plan.ports,
        )?)?,
    };
    println!("{}", text.trim_end());
    Ok(0)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn build(a: BuildArgs) -> Result<i32> {
    let targets: Vec<Target> = match target_of(a.target) {
        Some(t) => vec![t],
        None => {
            // Rumprun too, where a toolchain is installed.
            let mut all = vec![Target::Oci, Target::MicroVm];
            if bakeoff_pack::rumprun::find_toolchain(None, None).is_ok() {
                all.push(Target::Rumprun);
            }
            all
        }
    };
    let progress = Progress::new();
    let started = std::time::Instant::now();
    let result = prepare(&a.app, &targets, a.kernel, &progress);
    progress.done();
    let (_plan, artifact, cached, images) = result?;
    let seconds = started.elapsed().as_secs_f64();
    if a.json {
        let out = serde_json::json!({
            "artifact": { "id": artifact.manifest.id, "binary": artifact.manifest.binary, "binary_size": artifact.manifest.binary_size,
                          "linkage": artifact.manifest.linkage, "cached": cached, "seconds": seconds },
            "images": images,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    let m = &artifact.manifest;
    println!(
        "artifact {} ({}, {} binary {}){} in {:.2}s",
        &m.id[..12],
        m.name,
        m.linkage,
        human_bytes(m.binary_size),
        if cached { ", cached" } else { "" },
        seconds
    );
    for img in &images {
        println!(
            "{:<8} {}  {} ({} compressed){}",
            img.target.to_string(),
            img.digest,
            human_bytes(img.size_bytes),
            human_bytes(img.compressed_bytes),
            img.reference
                .as_ref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

async fn run(a: RunArgs) -> Result<i32> {
    if let Some(n) = &a.name {
        bakeoff_spec::validate_name(n)?;
    }
    let options = DriverOptions {
        qemu: QemuOptions {
            accel: a.accel.map(|x| match x {
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            }),
            machine: a.machine.map(|x| match x {
                MachineArg::Microvm => Machine::Microvm,
                MachineArg::Q35 => Machine::Q35,
            }),
            cache_dir: Some(Cache::from_env().root().to_path_buf()),
        },
    };
    let target = pick_target(a.platform, a.target)?;
    let driver = driver_with(a.platform, options);
    let progress = Progress::new();
    let checked = (|| -> Result<(BuildPlan, Artifact)> {
        let (plan, artifact, _, _) = prepare(&a.app, &[], None, &progress)?;
        // The check runs on the built binary, before the platform's image is made; its reason
        // matters more than a missing engine.
        let (_, verdicts) = verdicts_for(&artifact)?;
        if let Some(v) = verdicts
            .iter()
            .find(|v| v.platform == a.platform && !v.runnable)
        {
            bail!(
                "{} cannot run on {}: {}",
                plan.name,
                a.platform,
                v.reasons.join("; ")
            );
        }
        Ok((plan, artifact))
    })();
    progress.done();
    let (plan, artifact) = checked?;
    driver.available().await?;
    check_ports_free(&a.publish)?;

    let progress = Progress::new();
    let packed = pack_for(&artifact, target, a.kernel.clone(), &progress);
    progress.done();
    let image = &packed?;

    let state = StateDir::from_env();
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| state.unique_name(&plan.name));
    let dir = state.reserve(&name)?;
    let opts = RunOptions {
        publish: a.publish.clone(),
        env: a.env.clone(),
        name: Some(name.clone()),
        detach: a.detach,
        memory: a.memory.or(plan.memory),
        cpus: a.cpus.or(plan.cpus),
        args: a.args.clone(),
    };
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
            state.release(&name);
            return Err(e.into());
        }
    };
    let inst = Instance {
        name: name.clone(),
        platform: a.platform,
        app: a.app.clone(),
        image: image
            .reference
            .clone()
            .unwrap_or_else(|| image.dir.display().to_string()),
        image_digest: image.digest.clone(),
        created: now_secs(),
        ports: a.publish.clone(),
        status: Status::Running,
        handle,
    };
    state.save(&inst)?;
    if a.detach {
        let limit = Duration::from_secs(a.wait.or(plan.health.timeout).unwrap_or(120));
        wait_started(&*driver, &inst, &plan, limit).await?;
        println!("{name}");
        return Ok(0);
    }
    // Foreground: stream the output until the app ends or Ctrl-C, which stops it.
    let mut out = tokio::io::stdout();
    tokio::select! {
        r = driver.logs(&inst, true, &mut out) => { r?; }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("bakeoff: stopping {name}");
            driver.stop(&inst, Duration::from_secs(10)).await?;
        }
    }
    let status = wait_settled(&*driver, &inst).await?;
    let mut inst = inst;
    inst.status = status;
    state.save(&inst)?;
    if let Some(why) = driver.diagnose(&inst).await {
        eprintln!("bakeoff: {why}");
    }
    Ok(match status {
        Status::Exited { code: Some(c) } => {
            if c != 0 {
                eprintln!("bakeoff: {name} exited with status {c}");
            }
            c
        }
        _ => 0,
    })
}

/// The last lines of an instance's output, for error messages.
async fn last_output(driver: &dyn Driver, inst: &Instance, lines: usize) -> String {
    let mut buf: Vec<u8> = Vec::new();
    let _ = driver.logs(inst, false, &mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// After a detached start: returns once the app answers its health probe on a published port
/// (or, without one, once it has kept running for a moment); fails with the exit status and the
/// last lines of output when the app ends first.
async fn wait_started(
    driver: &dyn Driver,
    inst: &Instance,
    plan: &BuildPlan,
    limit: Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    let published = inst
        .ports
        .iter()
        .find(|p| Some(p.guest_port) == plan.health.port)
        .or(inst.ports.first());
    let probe = published.map(|p| {
        let ip = if p.host_ip.is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST
        } else {
            p.host_ip
        };
        let addr = std::net::SocketAddr::from((ip, p.host_port));
        match plan.health.kind {
            bakeoff_spec::HealthKind::Http => bakeoff_bench::Probe::Http {
                addr,
                path: plan.health.path.clone(),
            },
            bakeoff_spec::HealthKind::Tcp => bakeoff_bench::Probe::Tcp { addr },
        }
    });
    let ready = async {
        match probe {
            Some(p) => bakeoff_bench::wait_ready(p, deadline)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => {
                // Without a port to probe: the app has started and kept running for a moment.
                while !driver.app_started(inst).await {
                    if std::time::Instant::now() > deadline {
                        return Err("the app was not started before the deadline".to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(())
            }
        }
    };
    let ended = async {
        loop {
            if let Ok(s @ Status::Exited { .. } | s @ Status::Missing) = driver.status(inst).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let outcome = tokio::select! {
        r = ready => Ok(r),
        s = ended => Err(s),
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => {
            eprintln!("bakeoff: warning: {} is running but not ready after {} s ({why}); see `bakeoff logs {}`", inst.name, limit.as_secs(), inst.name);
            Ok(())
        }
        Err(status) => {
            let specific = driver
                .diagnose(inst)
                .await
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            let tail = last_output(driver, inst, 12).await;
            bail!(
                "`{}` ended during start ({status}){specific}; last output:\n{tail}\n(remove it with `bakeoff rm {}`)",
                inst.name,
                inst.name
            )
        }
    }
}

/// The status once the instance is no longer running (bounded wait).
async fn wait_settled(driver: &dyn bakeoff_driver::Driver, inst: &Instance) -> Result<Status> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = driver.status(inst).await?;
        if !s.is_running() || std::time::Instant::now() > deadline {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn human_age(d: Duration) -> String {
    match d.as_secs() {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

async fn ps(json: bool) -> Result<i32> {
    let state = StateDir::from_env();
    let mut rows = Vec::new();
    for entry in state.entries()? {
        let mut inst = match entry {
            bakeoff_state::Entry::Instance(i) => i,
            bakeoff_state::Entry::Damaged { name, reason, .. } => {
                eprintln!("bakeoff: the record of `{name}` cannot be read ({reason}); remove it with `bakeoff rm -f {name}`");
                continue;
            }
        };
        match driver_for(inst.platform).status(&inst).await {
            Ok(s) => {
                if s != inst.status {
                    inst.status = s;
                    state.save(&inst)?;
                }
            }
            Err(e) => tracing::warn!("cannot ask {} about {}: {e}", inst.platform, inst.name),
        }
        rows.push(inst);
    }
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name, "platform": i.platform, "image": i.image, "image_digest": i.image_digest,
                    "status": i.status.to_string(), "ports": i.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "created": i.created, "age_seconds": i.age().as_secs(), "app": i.app,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:<12} {:<32} {:<12} {:<28} AGE",
        "NAME", "PLATFORM", "IMAGE", "STATUS", "PORTS"
    );
    for i in rows {
        let ports = i
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        // VM images live in the cache: show their kind and digest, like a tag.
        let image = if i.image.starts_with('/') {
            format!(
                "{}@{}",
                i.platform.target(),
                i.image_digest
                    .trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or("?")
            )
        } else {
            i.image.clone()
        };
        println!(
            "{:<20} {:<12} {:<32} {:<12} {:<28} {}",
            i.name,
            i.platform,
            image,
            i.status.to_string(),
            ports,
            human_age(i.age())
        );
    }
    Ok(0)
}

async fn logs(name: &str, follow: bool) -> Result<i32> {
    let inst = StateDir::from_env().load(name)?;
    let mut out = tokio::io::stdout();
    let driver = driver_for(inst.platform);
    tokio::select! {
        r = driver.logs(&inst, follow, &mut out) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}

async fn stop(name: &str, time: u64) -> Result<i32> {
    let state = StateDir::from_env();
    let mut inst = state.load(name)?;
    let driver = driver_for(inst.platform);
    driver
        .stop(&inst, Duration::from_secs(time))
        .await
        .with_context(|| format!("stopping {name}"))?;
    inst.status = driver
        .status(&inst)
        .await
        .unwrap_or(Status::Exited { code: None });
    state.save(&inst)?;
    println!("{name}");
    Ok(0)
}

async fn rm(name: &str, force: bool) -> Result<i32> {
    let state = StateDir::from_env();
    let inst = match state.load(name) {
        Err(bakeoff_state::StateError::Damaged { .. }) if force => {
            // A record this version cannot read: nothing to ask an engine about.
            state.remove(name)?;
            println!("{name}");
            return Ok(0);
        }
        r => r?,
    };
    let driver = driver_for(inst.platform);
    let status = driver.status(&inst).await.unwrap_or(inst.status);
    if status.is_running() && !force {
        bail!("instance `{name}` is running; stop it first with `bakeoff stop {name}` or use `bakeoff rm -f {name}`");
    }
    driver
        .remove(&inst)
        .await
        .with_context(|| format!("removing {name}"))?;
    state.remove(name)?;
    println!("{name}");
    Ok(0)
}
