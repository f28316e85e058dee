//! One small function per verb. Errors go up as anyhow and are printed once by main.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bakeoff_build::{Artifact, Cache};
use bakeoff_detect::BuildPlan;
use bakeoff_driver::{check_ports_free, driver_for, StartRequest};
use bakeoff_pack::{packager_for, Image, PackContext};
use bakeoff_spec::{RunOptions, Target};
use bakeoff_state::{now_secs, Instance, StateDir, Status};

use crate::args::{BuildArgs, Command, RunArgs, TargetArg};

pub async fn dispatch(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Detect { app, json } => detect(&app, json),
        Command::Build(a) => build(a),
        Command::Run(a) => run(a).await,
        Command::Ps { json } => ps(json).await,
        Command::Logs { name, follow } => logs(&name, follow).await,
        Command::Stop { name, time } => stop(&name, time).await,
        Command::Rm { name, force } => rm(&name, force).await,
    }
}

/// Progress on stderr: a spinner on a terminal, plain lines otherwise.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new() -> Progress {
        if std::io::stderr().is_terminal() {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.enable_steady_tick(Duration::from_millis(100));
            Progress(Some(pb))
        } else {
            Progress(None)
        }
    }
    fn say(&self, msg: &str) {
        match &self.0 {
            Some(pb) => pb.set_message(msg.to_string()),
            None => eprintln!("bakeoff: {msg}"),
        }
    }
    fn done(&self) {
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
    println!("source:   {} ({})", serde_json::to_value(&plan.source).unwrap()["kind"].as_str().unwrap_or("?"), plan.detected_by);
    let cmd = if plan.command.is_empty() { vec![bakeoff_detect::app_binary_path(&plan.name)] } else { plan.command.clone() };
    println!("command:  {}", cmd.iter().chain(&plan.args).cloned().collect::<Vec<_>>().join(" "));
    println!("ports:    {}", plan.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "));
    println!("health:   {:?} {} on port {}", plan.health.kind, plan.health.path, plan.health.port.map(|p| p.to_string()).unwrap_or("-".into()));
    for (k, v) in &plan.env {
        println!("env:      {k}={v}");
    }
}

/// Detect + build once + pack for `targets`.
fn prepare(app: &str, targets: &[Target], kernel: Option<std::path::PathBuf>, progress: &Progress) -> Result<(BuildPlan, Artifact, bool, Vec<Image>)> {
    let plan = bakeoff_detect::detect(app)?;
    let cache = Cache::from_env();
    progress.say(&format!("building {}", plan.name));
    let outcome = bakeoff_build::build(&plan, &cache, &|m| progress.say(m))?;
    let log = |m: &str| progress.say(m);
    let ctx = PackContext { cache: &cache, kernel, log: &log };
    let mut images = Vec::new();
    for t in targets {
        progress.say(&format!("packing the {t} image"));
        images.push(packager_for(*t)?.pack(&outcome.artifact, &ctx)?);
    }
    Ok((plan, outcome.artifact, outcome.cached, images))
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
    let targets: Vec<Target> = match a.target {
        TargetArg::Oci => vec![Target::Oci],
        TargetArg::Microvm => vec![Target::MicroVm],
        TargetArg::Rumprun => vec![Target::Rumprun],
        TargetArg::All => vec![Target::Oci, Target::MicroVm],
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
            img.reference.as_ref().map(|r| format!("  {r}")).unwrap_or_default()
        );
    }
    Ok(0)
}

async fn run(a: RunArgs) -> Result<i32> {
    if let Some(n) = &a.name {
        bakeoff_spec::validate_name(n)?;
    }
    let driver = driver_for(a.platform);
    driver.available().await?;
    check_ports_free(&a.publish)?;

    let progress = Progress::new();
    let prepared = prepare(&a.app, &[a.platform.target()], a.kernel.clone(), &progress);
    progress.done();
    let (plan, _artifact, _cached, images) = prepared?;
    let image = &images[0];

    let state = StateDir::from_env();
    let name = a.name.clone().unwrap_or_else(|| state.unique_name(&plan.name));
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
    let handle = match driver.start(StartRequest { name: &name, image, opts: &opts, instance_dir: &dir }).await {
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
        image: image.reference.clone().unwrap_or_else(|| image.dir.display().to_string()),
        image_digest: image.digest.clone(),
        created: now_secs(),
        ports: a.publish.clone(),
        status: Status::Running,
        handle,
    };
    state.save(&inst)?;
    if a.detach {
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
    Ok(match status {
        Status::Exited { code: Some(c) } => c,
        _ => 0,
    })
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
    for mut inst in state.list()? {
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
    println!("{:<20} {:<12} {:<32} {:<12} {:<28} AGE", "NAME", "PLATFORM", "IMAGE", "STATUS", "PORTS");
    for i in rows {
        let ports = i.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        println!("{:<20} {:<12} {:<32} {:<12} {:<28} {}", i.name, i.platform, i.image, i.status.to_string(), ports, human_age(i.age()));
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
    driver.stop(&inst, Duration::from_secs(time)).await.with_context(|| format!("stopping {name}"))?;
    inst.status = driver.status(&inst).await.unwrap_or(Status::Exited { code: None });
    state.save(&inst)?;
    println!("{name}");
    Ok(0)
}

async fn rm(name: &str, force: bool) -> Result<i32> {
    let state = StateDir::from_env();
    let inst = state.load(name)?;
    let driver = driver_for(inst.platform);
    let status = driver.status(&inst).await.unwrap_or(inst.status);
    if status.is_running() && !force {
        bail!("instance `{name}` is running; stop it first with `bakeoff stop {name}` or use `bakeoff rm -f {name}`");
    }
    driver.remove(&inst).await.with_context(|| format!("removing {name}"))?;
    state.remove(name)?;
    println!("{name}");
    Ok(0)
}
