//! One small function per verb: parse, call the library, print. Errors go up as anyhow and
//! are printed once by main.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bakeoff_runtime::{BenchConfig, BenchOutcome, Launch, Readiness, Runtime, Wait};

use crate::args::{driver_options, BenchCli, BuildArgs, Command, ExportArgs, OnOff, RunArgs};
use crate::print;

pub async fn dispatch(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Detect { app, json, port } => detect(&app, json, &port),
        Command::Check {
            app,
            json,
            port,
            publish,
            opts: _,
        } => check(&app, json, &port, &publish).await,
        Command::Build(a) => build(a),
        Command::Run(a) => run(a).await,
        Command::Bench(b) => bench(b).await,
        Command::Export(e) => export(e),
        Command::Push {
            app,
            reference,
            json,
        } => push(&app, &reference, json),
        Command::Serve(a) => crate::serve::serve(a).await,
        Command::Switch { name, to } => crate::serve::switch(&name, to.platform()).await,
        Command::Ps { json } => ps(json).await,
        Command::Logs { name, follow } => logs(&name, follow).await,
        Command::Stop { name, time } => stop(&name, time).await,
        Command::Rm { name, force } => rm(&name, force).await,
        Command::Prune { dry_run } => prune(dry_run).await,
        Command::Kernel(k) => crate::kernel::kernel(k),
        Command::Toolchain(t) => crate::toolchain::toolchain(t),
    }
}

/// One line per stray (`removed`, `would remove`, or why removing failed); non-zero when a
/// removal failed.
async fn prune(dry_run: bool) -> Result<i32> {
    let strays = Runtime::from_env().prune(dry_run).await?;
    let mut failed = 0;
    for s in &strays {
        match (&s.error, dry_run) {
            (Some(e), _) => {
                failed += 1;
                println!("{}: {} — not removed: {e}", s.what, s.why);
            }
            (None, true) => println!("{}: {} — would remove", s.what, s.why),
            (None, false) => println!("{}: {} — removed", s.what, s.why),
        }
    }
    if strays.is_empty() {
        println!("nothing to prune");
    }
    Ok(i32::from(failed > 0))
}

/// Progress on stderr: a spinner on a terminal, plain lines otherwise.
#[derive(Clone)]
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

/// A runtime whose progress shows on a spinner (cleared by `Progress::done`).
fn runtime_with_spinner() -> (Runtime, Progress) {
    let progress = Progress::new();
    let p = progress.clone();
    (
        Runtime::from_env().with_progress(move |m| p.say(m)),
        progress,
    )
}

/// A runtime whose progress is plain lines on stderr (for long, interleaved work).
fn runtime_with_lines() -> Runtime {
    Runtime::from_env().with_progress(|m| eprintln!("bakeoff: {m}"))
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Resolves on SIGINT, SIGTERM or SIGHUP: work that holds instances (a bench, a service's
/// front) removes them for any of the three, not only for Ctrl-C (`kill`, `timeout`, a closed
/// terminal).
pub(crate) async fn any_stop_signal() {
    stop_signal(&std::sync::atomic::AtomicI32::new(0)).await
}

/// Resolves on SIGINT, SIGTERM or SIGHUP and records which one in `got` (a foreground `run`
/// stops its instance for any of them, then exits 128 + the signal number, as shells expect).
async fn stop_signal(got: &std::sync::atomic::AtomicI32) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    let n = tokio::select! {
        _ = int.recv() => libc::SIGINT,
        _ = term.recv() => libc::SIGTERM,
        _ = hup.recv() => libc::SIGHUP,
    };
    got.store(n, std::sync::atomic::Ordering::SeqCst);
}

fn detect(app: &str, json: bool, ports: &[u16]) -> Result<i32> {
    // `docker:IMAGE` and registry references become files first.
    let mut plan = bakeoff_detect::detect(&Runtime::from_env().import_input(app)?)?;
    plan.input = app.to_string();
    bakeoff_runtime::declare_ports(&mut plan, ports);
    // Ports nobody declared are observed on a probe run of the build (cached with it).
    if plan.ports_from == bakeoff_detect::PortsFrom::Observe {
        let (rt, progress) = runtime_with_spinner();
        let prepared = rt.prepare_with_ports(app, ports);
        progress.done();
        let prepared = prepared?;
        plan = prepared.plan;
        if plan.command.is_empty() {
            plan.command = prepared.artifact.manifest.command;
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print::plan(&plan);
    }
    Ok(0)
}

async fn check(
    app: &str,
    json: bool,
    ports: &[u16],
    publish: &[bakeoff_spec::PortMapping],
) -> Result<i32> {
    // `run`'s -p: a taken host port would stop every platform, so the check says so first.
    bakeoff_driver::check_ports_free(publish)?;
    let (rt, progress) = runtime_with_spinner();
    let prepared = rt.prepare_with_ports(app, ports);
    progress.done();
    let prepared = prepared?;
    let mut rows = Vec::new();
    for v in &prepared.verdicts {
        rows.push((v, rt.available(v.platform, &prepared.plan).await.err()));
    }
    print::check(app, &prepared, &rows, json)?;
    // Non-zero when no platform can run the app here (scripts test `bakeoff check`).
    if rows
        .iter()
        .any(|(v, unavailable)| v.runnable && unavailable.is_none())
    {
        Ok(0)
    } else {
        if !json {
            eprintln!("bakeoff: no platform can run {app} on this host");
        }
        Ok(1)
    }
}

/// The build's warnings, one line each on stderr.
fn warn(prepared: &bakeoff_runtime::Prepared) {
    for w in &prepared.warnings {
        eprintln!("bakeoff: warning: {w}");
    }
}

fn build(a: BuildArgs) -> Result<i32> {
    let (rt, progress) = runtime_with_spinner();
    let targets = match a.target.target() {
        Some(t) => vec![t],
        None => rt.default_targets(),
    };
    let started = Instant::now();
    let result = rt.prepare(&a.app).and_then(|p| {
        let images = targets
            .iter()
            .map(|t| rt.pack(&p.artifact, *t, a.kernel.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((p, images))
    });
    progress.done();
    let (prepared, images) = result?;
    warn(&prepared);
    print::build(&prepared, &images, started.elapsed().as_secs_f64(), a.json)?;
    Ok(0)
}

async fn run(a: RunArgs) -> Result<i32> {
    if let Some(n) = &a.name {
        bakeoff_spec::validate_name(n)?;
    }
    let target = a.target.and_then(|t| t.target());
    let (rt, progress) = runtime_with_spinner();
    let mut options = driver_options(a.accel, a.machine);
    options.qemu.host_loopback = a.host_loopback;
    options.qemu.warm = a.warm;
    let rt = rt.with_options(options);
    let prepared = rt.prepare_with_ports(&a.app, &a.port);
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            progress.done();
            return Err(e.into());
        }
    };
    warn(&prepared);
    let limit = Duration::from_secs(a.wait.or(prepared.plan.health.timeout).unwrap_or(120));
    let launch = Launch {
        platform: a.platform,
        target,
        opts: bakeoff_runtime::run_options(&prepared.plan, a.flags()),
        kernel: a.opts.kernel.clone(),
        wait: if a.detach {
            Wait::Ready(limit)
        } else {
            Wait::Started
        },
    };
    let launched = rt.launch(&prepared, launch).await;
    progress.done();
    let launched = launched?;
    let inst = launched.instance;
    if a.detach {
        if let Some(Readiness::NotReady(why)) = launched.readiness {
            eprintln!(
                "bakeoff: warning: {} is running but not ready after {} s ({why}); see `bakeoff logs {}`",
                inst.name,
                limit.as_secs(),
                inst.name
            );
        }
        println!("{}", inst.name);
        return Ok(0);
    }
    // Foreground: stream the output until the app ends or Ctrl-C, which stops it.
    let rt = rt.with_progress(|m| eprintln!("bakeoff: {m}"));
    let got = std::sync::atomic::AtomicI32::new(0);
    let ended = rt
        .follow(&inst, &mut tokio::io::stdout(), stop_signal(&got))
        .await?;
    if let Some(why) = ended.diagnosis {
        eprintln!("bakeoff: {why}");
    }
    if ended.interrupted {
        return Ok(128 + got.load(std::sync::atomic::Ordering::SeqCst));
    }
    Ok(match ended.status {
        bakeoff_state::Status::Exited { code: Some(c) } => {
            if c != 0 {
                eprintln!("bakeoff: {} exited with status {c}", inst.name);
            }
            c
        }
        _ => 0,
    })
}

async fn bench(b: BenchCli) -> Result<i32> {
    if !(b.duration.is_finite() && b.duration > 0.0) {
        bail!(
            "--duration must be a positive number of seconds, got {}",
            b.duration
        );
    }
    let config = BenchConfig {
        platforms: b.platforms.clone(),
        runs: b.runs,
        shape: bakeoff_bench::LoadShape {
            connections: b.connections,
            duration: Duration::from_secs_f64(b.duration),
            keepalive: b.keepalive == OnOff::On,
            ..Default::default()
        },
        policy: b.policy.parse()?,
        memory: b.opts.memory,
        cpus: b.opts.cpus,
        env: b.opts.env.clone(),
        args: b.opts.args.clone(),
        publish: b.publish.clone(),
        kernel: b.opts.kernel.clone(),
        ready_timeout: Duration::from_secs(b.ready_timeout),
        sweep: b.sweep.clone(),
        slo: b.slo,
    };
    let (rt, progress) = runtime_with_spinner();
    let prepared = rt.prepare_with_ports(&b.app, &b.port);
    progress.done();
    let prepared = prepared?;
    let mut options = driver_options(b.accel, None);
    options.qemu.warm = b.warm;
    let rt = runtime_with_lines().with_options(options);
    let report = match rt.bench(&prepared, &config, any_stop_signal()).await? {
        BenchOutcome::Done(r) => r,
        BenchOutcome::Interrupted => {
            bail!("the bench was interrupted; every instance it started has been removed")
        }
    };
    let paths = bakeoff_bench::write_outputs(&report, &b.out)?;
    if let Some(p) = rt.save_profile(&report)? {
        eprintln!(
            "bakeoff: kept as the load profile of this build ({}); `serve --on auto` uses it",
            p.display()
        );
    }
    println!("{}", bakeoff_bench::markdown(&report));
    println!(
        "report: {}  {}  {}",
        paths.json.display(),
        paths.markdown.display(),
        paths.html.display()
    );
    Ok(0)
}

fn export(e: ExportArgs) -> Result<i32> {
    let target = e.target.and_then(|t| t.target());
    let (rt, progress) = runtime_with_spinner();
    let text = rt.prepare(&e.app).and_then(|p| match e.format {
        crate::args::ExportFormat::K8s => rt.export_k8s_with(
            &p,
            bakeoff_runtime::K8sExport {
                platform: e.platform,
                report: e.from_report.clone(),
                image: e.image.clone(),
            },
            e.flags(),
        ),
        _ => rt.export(
            &p,
            e.format.format(),
            target,
            e.flags(),
            e.opts.kernel.clone(),
        ),
    });
    progress.done();
    println!("{}", text?);
    Ok(0)
}

fn push(app: &str, reference: &str, json: bool) -> Result<i32> {
    let (rt, progress) = runtime_with_spinner();
    let pushed = rt.push(app, reference);
    progress.done();
    let pushed = pushed?;
    if json {
        println!("{}", serde_json::to_string_pretty(&pushed)?);
    } else {
        for p in &pushed {
            println!(
                "{:<8} {}  {}  {} bytes ({} uploaded) in {:.2}s",
                p.target.to_string(),
                p.reference,
                p.digest,
                p.bytes,
                p.uploaded,
                p.seconds
            );
        }
    }
    Ok(0)
}

async fn ps(json: bool) -> Result<i32> {
    let rt = Runtime::from_env();
    rt.forget_abandoned_services();
    let services = rt.services()?;
    let mut windows = Vec::new();
    for s in &services {
        windows.push(match s.status {
            bakeoff_runtime::ServiceStatus::Serving => rt.window(&s.record.name).await,
            _ => None,
        });
    }
    let rows = rt.list().await?;
    print::ps(&services, &windows, &rows, json)?;
    Ok(0)
}

async fn logs(name: &str, follow: bool) -> Result<i32> {
    // A path-like name (`../x`, `/abs`) is refused before it reaches any file.
    bakeoff_spec::validate_name(name)?;
    let rt = Runtime::from_env();
    let mut out = tokio::io::stdout();
    if rt.is_service(name) {
        let path = rt.service_log(name);
        let alive = || {
            rt.services()
                .map(|s| {
                    s.iter().any(|v| {
                        v.record.name == name && v.status == bakeoff_runtime::ServiceStatus::Serving
                    })
                })
                .unwrap_or(false)
        };
        tokio::select! {
            r = bakeoff_driver::follow_console(&path, follow, &mut out, alive) => r?,
            _ = ctrl_c() => {}
        }
        return Ok(0);
    }
    tokio::select! {
        r = rt.logs(name, follow, &mut out) => r?,
        _ = ctrl_c() => {}
    }
    Ok(0)
}

async fn stop(name: &str, time: u64) -> Result<i32> {
    // A path-like name (`../x`, `/abs`) is refused before it reaches any file.
    bakeoff_spec::validate_name(name)?;
    let rt = Runtime::from_env();
    if rt.is_service(name) {
        rt.stop_service(name).await?;
    } else {
        rt.stop(name, Duration::from_secs(time)).await?;
    }
    println!("{name}");
    Ok(0)
}

async fn rm(name: &str, force: bool) -> Result<i32> {
    // A path-like name (`../x`, `/abs`) is refused before it reaches any file.
    bakeoff_spec::validate_name(name)?;
    let rt = Runtime::from_env();
    if rt.is_service(name) {
        rt.remove_service(name, force).await?;
    } else {
        rt.remove(name, force).await?;
    }
    println!("{name}");
    Ok(0)
}
