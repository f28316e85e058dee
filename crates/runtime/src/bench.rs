//! The bench flow: N launch-to-ready runs of each platform after a warm-up, in rounds that
//! alternate the platforms; memory, and a load phase with the built-in generator; one
//! [`Report`] with a recommendation. Every instance it starts is removed, also when it is
//! interrupted.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bakeoff_bench::{
    Accelerator, AppInfo, Conditions, ImageSize, LoadResult, LoadShape, LoadStats, LoadTarget,
    MemoryPart, MemoryStats, PlatformReport, Policy, Report, Stat,
};
use bakeoff_driver::Driver;
use bakeoff_launch::Image;
use bakeoff_spec::{HealthKind, Platform, PortMapping, Protocol, Row, RunOptions, Target};
use bakeoff_state::Instance;

use crate::prepare::available_with;
use crate::ready::{last_output, wait_ready_with};
use crate::{Prepared, Readiness, Runtime, RuntimeError};

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// None: every platform (those unavailable here are reported with their reason). A row may
    /// name the image kind where a platform boots several (`xen:rumprun` beside `xen:microvm`).
    pub platforms: Option<Vec<Row>>,
    pub runs: u32,
    pub shape: LoadShape,
    pub policy: Policy,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub ready_timeout: Duration,
    /// `--sweep RATES`: open-loop load at each rate (requests per second), on the last run's
    /// instance, for `shape.duration` each.
    pub sweep: Option<Vec<f64>>,
    /// The objective the sustainable rate is measured against.
    pub slo: bakeoff_bench::Slo,
    /// `-e`, `-p` and `-- ARGS`, as `run` takes them: every bench instance gets the env and
    /// args; the first `-p` mapping is the one measured (its host port instead of a free one),
    /// the others are published too.
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub publish: Vec<PortMapping>,
    /// `--kernel` for the microVM (`minimal`, `debian` or a path); None: the default.
    pub kernel: Option<std::path::PathBuf>,
}

/// How a bench ended.
pub enum BenchOutcome {
    Done(Box<Report>),
    /// Interrupted; every instance it had started has been removed.
    Interrupted,
}

/// One run's figures: launch-to-ready, host memory, load, guest memory, where the VMM's
/// memory is.
struct RunFigures {
    /// Start request to the first successful probe.
    ready: Duration,
    /// The host's memory for the instance (after the load, if one ran).
    memory: Option<u64>,
    load: Option<LoadResult>,
    /// The guest's own count of its memory in use.
    guest: Option<u64>,
    /// Where the VMM's resident memory is.
    parts: Vec<(String, u64)>,
    /// The VMM's translation work when the app first answered (QEMU under TCG).
    translation: Option<bakeoff_driver::vmm::Translation>,
}

/// One platform through the rounds of a bench: what it runs and what its runs measured.
struct Lane {
    platform: Platform,
    /// The image kind the row asked for (`xen:rumprun`), if any.
    target: Option<Target>,
    driver: Box<dyn Driver>,
    image: Image,
    guest_port: u16,
    http: bool,
    /// Why its runs stopped; the other platforms go on.
    failed: Option<String>,
    ready_s: Vec<f64>,
    /// The host reference's seconds just before each measured run, aligned with `ready_s`.
    host_ref: Vec<f64>,
    mem: Vec<f64>,
    guest_mem: Vec<f64>,
    mem_parts: Vec<Vec<(String, u64)>>,
    loads: Vec<LoadResult>,
    conditions: Option<Conditions>,
    notes: Vec<String>,
    sweep: Option<bakeoff_bench::Sweep>,
    phases: Vec<bakeoff_bench::LaunchPhases>,
    translations: Vec<bakeoff_driver::vmm::Translation>,
}

impl Runtime {
    /// Benchmarks `prepared` on every platform of `config` and recommends one.
    pub async fn bench(
        &self,
        prepared: &Prepared,
        config: &BenchConfig,
        interrupt: impl Future<Output = ()>,
    ) -> Result<BenchOutcome, RuntimeError> {
        config.shape.validate()?;
        if config.runs == 0 || config.runs > 100 {
            return Err(RuntimeError::Invalid(format!(
                "--runs must be between 1 and 100, got {}",
                config.runs
            )));
        }
        let plan = &prepared.plan;
        let m = &prepared.artifact.manifest;
        let mut report = Report::new(
            env!("CARGO_PKG_VERSION"),
            AppInfo {
                name: m.name.clone(),
                input: plan.input.clone(),
                build_seconds: Some(m.build_seconds),
                binary_size: Some(m.binary_size),
                artifact_id: Some(m.id.clone()),
            },
            config.shape.clone(),
            config.runs,
            config.policy,
        );
        let explicit = config.platforms.is_some();
        let platforms = config
            .platforms
            .clone()
            .unwrap_or_else(|| Platform::ALL.map(Row::from).to_vec());
        // Every platform is set up first; then the runs go in rounds, one run of each platform
        // per round, the order reversed every other round (A B, B A, ...). A slow spell of the
        // host (itself a VM here, whose speed drifts over minutes) then lands on every platform
        // alike instead of on whichever ran in it, so the ratios hold from one bench to the next.
        // The name of the instance being started or measured, so an interruption can remove
        // it: one caught while its start is under way has a record ("intent before effect") or
        // a bare reservation by then, and `remove` takes either.
        let current: Mutex<Option<String>> = Mutex::new(None);
        let run_all = async {
            let mut lanes = Vec::new();
            for &row in &platforms {
                lanes.push(
                    self.open_lane(prepared, config, row, explicit)
                        .await
                        .map_err(|r| r.with_target(row.target)),
                );
            }
            for run in 0..=config.runs {
                for i in round_order(run, lanes.len()) {
                    let Ok(lane) = &mut lanes[i] else { continue };
                    if lane.failed.is_some() {
                        continue;
                    }
                    if let Err(e) = self.run_lane(prepared, config, lane, run, &current).await {
                        lane.failed = Some(error_chain(&e));
                    }
                }
            }
            lanes
        };
        let lanes = tokio::select! {
            lanes = run_all => Some(lanes),
            _ = interrupt => None,
        };
        let Some(lanes) = lanes else {
            let name = current.lock().expect("not poisoned").take();
            if let Some(name) = name {
                self.say(&format!("interrupted; removing {name}"));
                if let Err(e) = self.remove(&name, true).await {
                    self.say(&format!("could not remove {name}: {}", error_chain(&e)));
                }
            }
            return Ok(BenchOutcome::Interrupted);
        };
        let mut measured = Vec::new();
        for lane in lanes {
            measured.push(match lane {
                Ok(lane) => self.close_lane(lane).await,
                Err(report) => report,
            });
        }
        report.platforms = measured;
        if !report.platforms.iter().any(|p| p.is_measured()) {
            let reasons: Vec<String> = report
                .platforms
                .iter()
                .map(|p| format!("{}: {}", p.row(), p.status.reason().unwrap_or("?")))
                .collect();
            return Err(RuntimeError::Invalid(format!(
                "no platform could run {}: {}",
                plan.name,
                reasons.join("; ")
            )));
        }
        let verdicts: Vec<bakeoff_bench::Verdict> = prepared
            .verdicts
            .iter()
            .map(|v| (v.platform, v.runnable, v.reasons.clone()))
            .collect();
        report.recommendation = Some(bakeoff_bench::recommend(&report, &verdicts, config.policy));
        Ok(BenchOutcome::Done(Box::new(report)))
    }

    /// Readies one platform for the rounds, or says why it cannot be measured.
    async fn open_lane(
        &self,
        prepared: &Prepared,
        config: &BenchConfig,
        row: Row,
        explicit: bool,
    ) -> Result<Lane, PlatformReport> {
        let plan = &prepared.plan;
        let platform = row.platform;
        // A unikernel row on Xen is held to Rumprun's check too (one process, rebuilt from source).
        let checked = prepared.check(platform).and_then(|()| match row.target() {
            Target::Rumprun if platform != Platform::Rumprun => prepared.check(Platform::Rumprun),
            _ => Ok(()),
        });
        if let Err(e) = checked {
            let RuntimeError::CannotRun { reasons, .. } = e else {
                return Err(PlatformReport::failed(platform, e.to_string()));
            };
            return Err(PlatformReport::unavailable(
                platform,
                format!("{} cannot run here: {}", plan.name, reasons.join("; ")),
            ));
        }
        let driver = self.driver(platform);
        if let Err(e) = available_with(&*driver, platform, plan).await {
            if explicit {
                self.say(&format!(
                    "{row} is unavailable ({e}); continuing with the other platforms"
                ));
            }
            return Err(PlatformReport::unavailable(platform, e));
        }
        let image = self
            .image_for(prepared, row.target(), config.kernel.clone())
            .map_err(|e| PlatformReport::failed(platform, error_chain(&e)))?;
        let guest_port =
            plan.health
                .port
                .or(plan.ports.first().copied())
                .ok_or_else(|| {
                    PlatformReport::failed(
                        platform,
                        match &plan.ports_from {
                            bakeoff_detect::PortsFrom::Nothing { reason } => format!(
                                "{} listens on no port, so there is nothing to load: {reason}; \
                             if it should listen, set `ports` in bakeoff.toml",
                                plan.name
                            ),
                            _ => "the app declares no port to probe; set `ports` in bakeoff.toml"
                                .into(),
                        },
                    )
                })?;
        let http = plan.health.kind == HealthKind::Http;
        let mut lane = Lane {
            platform,
            target: row.target,
            driver,
            image,
            guest_port,
            http,
            failed: None,
            ready_s: Vec::new(),
            host_ref: Vec::new(),
            mem: Vec::new(),
            guest_mem: Vec::new(),
            mem_parts: Vec::new(),
            loads: Vec::new(),
            conditions: None,
            notes: Vec::new(),
            sweep: None,
            phases: Vec::new(),
            translations: Vec::new(),
        };
        if !http {
            lane.notes.push("the app is probed over TCP; load testing needs HTTP, so only start-up and memory were measured".to_string());
        }
        Ok(lane)
    }

    /// One run of one platform (run 0 is its warm-up): start, ready, memory, load, remove.
    async fn run_lane(
        &self,
        prepared: &Prepared,
        config: &BenchConfig,
        lane: &mut Lane,
        run: u32,
        current: &Mutex<Option<String>>,
    ) -> Result<(), RuntimeError> {
        let plan = &prepared.plan;
        let (platform, driver, http) = (lane.platform, &*lane.driver, lane.http);
        let warmup = run == 0;
        let label = if warmup {
            "warm-up".to_string()
        } else {
            format!("run {run}/{}", config.runs)
        };
        self.say(&format!("{platform}: {label}"));
        let measured = match config.publish.first() {
            Some(m) => *m,
            None => PortMapping {
                host_ip: Ipv4Addr::LOCALHOST,
                host_port: free_port()?,
                guest_port: lane.guest_port,
                protocol: Protocol::Tcp,
            },
        };
        let port = measured.host_port;
        let opts = RunOptions {
            publish: std::iter::once(measured)
                .chain(config.publish.iter().skip(1).cloned())
                .collect(),
            env: config.env.clone(),
            args: config.args.clone(),
            name: Some(format!(
                "bench-{}-{}-{}-{}",
                plan.name,
                platform,
                std::process::id(),
                run
            )),
            detach: true,
            memory: config.memory.or(plan.memory),
            cpus: config.cpus.or(plan.cpus),
        };
        // The host's own speed right now, so that a slow run can be told from a slow platform.
        let reference = tokio::task::spawn_blocking(bakeoff_bench::reference_seconds)
            .await
            .map_err(|e| std::io::Error::other(format!("timing the host reference: {e}")))?;
        *current.lock().expect("not poisoned") = opts.name.clone();
        let (t0, t0_wall) = (Instant::now(), std::time::SystemTime::now());
        let started = self.start(plan, &lane.image, platform, opts.clone()).await;
        let inst = match started {
            Ok(inst) => inst,
            Err(e) => {
                // A failed start removes what it began.
                *current.lock().expect("not poisoned") = None;
                return Err(e);
            }
        };
        let console_s = t0.elapsed().as_secs_f64();
        let watch = driver
            .phase_console(&inst)
            .map(|console| PhaseWatch::spawn(console, t0));
        let mut outcome = self
            .one_run(config, prepared, driver, &inst, port, http, t0, warmup)
            .await;
        if let (Some(w), Ok(RunFigures { ready, .. }), false) = (watch, &outcome, warmup) {
            lane.phases.push(bakeoff_bench::LaunchPhases::from_observed(
                vmm_started(driver.phase_console(&inst).as_deref(), t0_wall),
                console_s,
                ready.as_secs_f64(),
                &w.finish(),
            ));
        }
        if let (Ok(_), Some(rates), true) = (&outcome, &config.sweep, run == config.runs) {
            if http {
                match self.sweep(config, rates, driver, &inst, port, plan).await {
                    Ok(s) => lane.sweep = Some(s),
                    Err(e) => outcome = Err(e),
                }
            } else {
                lane.notes
                    .push("no sweep: load profiles need an HTTP app".to_string());
            }
        }
        let _ = driver.remove(&inst).await;
        let _ = self.state.remove(&inst.name);
        *current.lock().expect("not poisoned") = None;
        let figures = outcome?;
        if lane.conditions.is_none() {
            lane.conditions = Some(conditions_for(&lane.image, &inst, &opts));
        }
        if !warmup {
            lane.ready_s.push(figures.ready.as_secs_f64());
            lane.host_ref.push(reference);
            lane.mem.extend(figures.memory.map(|m| m as f64));
            lane.guest_mem.extend(figures.guest.map(|g| g as f64));
            if !figures.parts.is_empty() {
                lane.mem_parts.push(figures.parts);
            }
            lane.loads.extend(figures.load);
            lane.translations.extend(figures.translation);
        }
        Ok(())
    }

    /// One platform's report from its samples (or the reason its runs stopped).
    async fn close_lane(&self, lane: Lane) -> PlatformReport {
        let (platform, target) = (lane.platform, lane.target);
        if let Some(reason) = lane.failed {
            return PlatformReport::failed(platform, reason).with_target(target);
        }
        match self.summarize(lane).await {
            Ok(pr) => pr,
            Err(e) => PlatformReport::failed(platform, error_chain(&e)),
        }
        .with_target(target)
    }

    async fn summarize(&self, lane: Lane) -> Result<PlatformReport, RuntimeError> {
        let Lane {
            platform,
            driver,
            image,
            conditions,
            ready_s,
            host_ref,
            mem,
            guest_mem,
            mem_parts,
            loads,
            sweep,
            phases,
            translations,
            mut notes,
            ..
        } = lane;
        let mut pr = PlatformReport::measured(platform, conditions.expect("at least one run"));
        pr.launch_to_ready = Some(Stat::from_samples(&ready_s)?);
        pr.host_reference = Some(Stat::from_samples(&host_ref)?);
        pr.image_size = Some(image_size(&image));
        if !mem.is_empty() {
            let guest_bytes = if guest_mem.is_empty() {
                None
            } else {
                Some(Stat::from_samples(&guest_mem)?)
            };
            pr.memory = Some(MemoryStats {
                host_bytes: Stat::from_samples(&mem)?,
                guest_bytes,
                host_parts: MemoryPart::from_runs(&mem_parts)?,
            });
        }
        if !loads.is_empty() {
            pr.load = Some(LoadStats::from_runs(&loads)?);
        }
        pr.sweep = sweep;
        pr.launch_phases = bakeoff_bench::phase_stats(&phases)?;
        if !translations.is_empty() {
            let of = |f: fn(&bakeoff_driver::vmm::Translation) -> u64| {
                let v: Vec<f64> = translations.iter().map(|t| f(t) as f64).collect();
                Stat::from_samples(&v)
            };
            pr.translation = Some(bakeoff_bench::TranslationStats {
                blocks: of(|t| t.blocks)?,
                code_bytes: of(|t| t.code_bytes)?,
                capacity_bytes: of(|t| t.capacity_bytes)?,
                flushes: of(|t| t.flushes)?,
            });
        }
        if platform == Platform::Qemu {
            notes.push(
                "memory is the QEMU process's resident set (the VMM, its translation cache and \
                 the guest's touched RAM, in small pages: QEMU runs without transparent huge pages)"
                    .into(),
            );
            notes.push("the image size includes the guest kernel, shared by every microVM".into());
        }
        let platform_notes = driver.bench_notes(&image).await;
        // A hypervisor that itself runs under emulation (the nested Xen host): its figures are
        // labelled emulated, like QEMU's under TCG.
        if platform_notes
            .iter()
            .any(|n| n.starts_with("nested under emulation"))
        {
            if let Some(c) = pr.conditions.as_mut() {
                c.emulated = true;
            }
        }
        notes.extend(platform_notes);
        pr.notes = notes;
        Ok(pr)
    }

    #[allow(clippy::too_many_arguments)]
    async fn one_run(
        &self,
        config: &BenchConfig,
        prepared: &Prepared,
        driver: &dyn Driver,
        inst: &Instance,
        port: u16,
        http: bool,
        t0: Instant,
        warmup: bool,
    ) -> Result<RunFigures, RuntimeError> {
        let plan = &prepared.plan;
        let limit = config.ready_timeout.saturating_sub(t0.elapsed());
        match wait_ready_with(driver, inst, plan, limit).await {
            Ok(Readiness::Ready(_)) => {}
            Ok(Readiness::NotReady(why)) => {
                return Err(RuntimeError::NeverReady {
                    why,
                    diagnosis: driver
                        .diagnose(inst)
                        .await
                        .map(|d| format!("{d}; "))
                        .unwrap_or_default(),
                    tail: last_output(driver, inst, 8, " | ").await,
                })
            }
            Err(e) => return Err(e),
        }
        // Launch-to-ready counts from the start request.
        let ready = t0.elapsed();
        driver.app_ready(inst).await;
        // What the launch translated, before the load translates more.
        let translation = if warmup {
            None
        } else {
            driver.translation(inst).await
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let memory = driver.memory_bytes(inst).await.ok().flatten();
        let load = if http && !warmup {
            let mut target = LoadTarget::new(addr);
            target.path = plan.health.path.clone();
            Some(bakeoff_bench::load(target, config.shape.clone()).await?)
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
        // The guest's own count, after the load, where the platform reports one, and where
        // the VMM's memory is.
        let (guest, parts) = if warmup {
            (None, Vec::new())
        } else {
            (
                driver.guest_memory_bytes(inst).await,
                driver.memory_parts(inst).await,
            )
        };
        Ok(RunFigures {
            ready,
            memory,
            load,
            guest,
            parts,
            translation,
        })
    }
}

impl Runtime {
    /// Open-loop load at each rate in turn on one running instance.
    async fn sweep(
        &self,
        config: &BenchConfig,
        rates: &[f64],
        driver: &dyn Driver,
        inst: &Instance,
        port: u16,
        plan: &bakeoff_detect::BuildPlan,
    ) -> Result<bakeoff_bench::Sweep, RuntimeError> {
        let mut points = Vec::new();
        for &rate in rates {
            self.say(&format!("{}: sweep at {rate} req/s", inst.platform));
            let mut target = LoadTarget::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            target.path = plan.health.path.clone();
            let shape = LoadShape {
                rate: Some(rate),
                ..config.shape.clone()
            };
            let r = bakeoff_bench::load(target, shape).await?;
            points.push(bakeoff_bench::SweepPoint {
                offered_rate: rate,
                achieved_rate: r.req_per_sec,
                latency: r.latency,
                errors: r.errors.total() + r.non_2xx,
                memory_bytes: driver.memory_bytes(inst).await.ok().flatten(),
                saturated: r.saturated,
            });
        }
        Ok(bakeoff_bench::Sweep::new(
            config.slo,
            config.shape.duration.as_secs_f64(),
            config.shape.connections,
            points,
        ))
    }
}

/// An error and its causes on one line, each once.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !msg.contains(&c_text) {
            msg.push_str(": ");
            msg.push_str(&c_text);
        }
        cause = c.source();
    }
    msg
}

/// Watches a VM's console (every 5 ms) for PID 1's phase lines and notes when each was first
/// seen, in seconds from `t0`; ends itself once the app listens (or after 5 minutes).
struct PhaseWatch {
    seen: std::sync::Arc<Mutex<Vec<(String, u64, f64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PhaseWatch {
    fn spawn(console: std::path::PathBuf, t0: Instant) -> PhaseWatch {
        use bakeoff_launch::cmdline::phases::phases_in;
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let task = tokio::spawn(async move {
            let mut len = 0;
            while t0.elapsed() < Duration::from_secs(300) {
                let size = std::fs::metadata(&console).map(|m| m.len()).unwrap_or(0);
                if size != len {
                    len = size;
                    let at = t0.elapsed().as_secs_f64();
                    let text = std::fs::read_to_string(&console).unwrap_or_default();
                    let mut seen = out.lock().expect("not poisoned");
                    for (phase, ms) in phases_in(&text) {
                        let name = phase.name().to_string();
                        if !seen.iter().any(|(n, _, _)| *n == name) {
                            seen.push((name, ms, at));
                        }
                    }
                    if seen.iter().any(|(n, _, _)| n == "listening") {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        PhaseWatch { seen, task }
    }

    fn finish(self) -> Vec<(String, u64, f64)> {
        self.task.abort();
        let seen = self.seen.lock().expect("not poisoned");
        seen.clone()
    }
}

/// When the VMM started, in seconds after `t0`: the modification time of the pid file QEMU
/// writes at its start, next to the console (None for other VMMs).
fn vmm_started(console: Option<&std::path::Path>, t0: std::time::SystemTime) -> Option<f64> {
    let pidfile = bakeoff_driver::vmm::qemu_pidfile(console?);
    let written = std::fs::metadata(pidfile).ok()?.modified().ok()?;
    Some(written.duration_since(t0).ok()?.as_secs_f64())
}

/// The order of the platforms in round `run` (0 is the warm-up): as given in the odd rounds,
/// reversed in the even ones, so that no platform always runs right after another's.
fn round_order(run: u32, platforms: usize) -> Vec<usize> {
    let order = 0..platforms;
    if run % 2 == 1 {
        order.collect()
    } else {
        order.rev().collect()
    }
}

fn free_port() -> Result<u16, RuntimeError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn conditions_for(image: &Image, inst: &Instance, opts: &RunOptions) -> Conditions {
    let handle = &inst.handle;
    let mut c = match handle.accel() {
        None => Conditions::native(image.reference.as_deref().unwrap_or(&image.digest)),
        Some(accel) => {
            let accel = match accel {
                bakeoff_launch::qemu::Accel::Kvm => Accelerator::Kvm,
                bakeoff_launch::qemu::Accel::Tcg => Accelerator::Tcg,
            };
            let mut c = Conditions::vm(accel, &image.digest);
            // Its environment first, as a shell would write it.
            c.vmm_flags = bakeoff_driver::vmm::VMM_ENV
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(handle.vmm_argv().unwrap_or_default().iter().cloned())
                .collect();
            c
        }
    };
    // Which kernel booted, on any VMM (QEMU, Xen): version, config hash and size (issue 14).
    c.kernel = image.details.kernel_version.as_ref().map(|v| {
        let config = image.details.kernel_config.as_deref().unwrap_or("unknown");
        let mb = |b: Option<u64>| b.unwrap_or(0) as f64 / 1e6;
        let (kernel, vmlinux) = (image.details.kernel_bytes, image.details.vmlinux_bytes);
        if kernel.is_some() && kernel != vmlinux {
            format!(
                "{v} (config sha256:{config}, bzImage {:.1} MB, vmlinux {:.1} MB)",
                mb(kernel),
                mb(vmlinux)
            )
        } else {
            format!(
                "{v} (config sha256:{config}, vmlinux {:.1} MB)",
                mb(vmlinux)
            )
        }
    });
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

#[cfg(test)]
mod tests {
    use super::round_order;

    #[test]
    fn rounds_alternate_the_platforms_and_measured_runs_start_in_the_given_order() {
        let rounds: Vec<Vec<usize>> = (0..=4).map(|run| round_order(run, 3)).collect();
        assert_eq!(
            rounds,
            [
                vec![2, 1, 0],
                vec![0, 1, 2],
                vec![2, 1, 0],
                vec![0, 1, 2],
                vec![2, 1, 0]
            ]
        );
        // Over an even number of measured runs, each platform is as often early as late.
        let mean_slot = |p: usize| -> f64 {
            (1..=4)
                .map(|run| round_order(run, 3).iter().position(|&q| q == p).unwrap() as f64)
                .sum::<f64>()
                / 4.0
        };
        assert_eq!((mean_slot(0), mean_slot(1), mean_slot(2)), (1.0, 1.0, 1.0));
        assert_eq!(round_order(1, 0), Vec::<usize>::new());
    }
}
