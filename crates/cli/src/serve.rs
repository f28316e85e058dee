//! `serve` and `switch`: glue over the runtime's services. A detached front is this same
//! binary run again without `-d`, in its own session, its output in the service directory.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bakeoff_runtime::placement::{Hysteresis, PlacementPolicy};
use bakeoff_runtime::{AutoSpec, Runtime, ServeSpec, ServiceStatus};

use crate::args::{driver_options, ServeArgs};
use crate::verbs::Progress;

/// Set in a detached front's environment: the parent has reserved the name already.
const ADOPT: &str = "BAKEOFF_SERVICE_ADOPT";

pub async fn serve(a: ServeArgs) -> Result<i32> {
    let adopted = std::env::var_os(ADOPT).is_some();
    let progress = Progress::new();
    let p = progress.clone();
    let rt = Runtime::from_env()
        .with_options(driver_options(a.accel, None))
        .with_progress(move |m| p.say(m));
    let prepared = rt.prepare(&a.app);
    progress.done();
    let prepared = prepared?;
    let auto = match a.platform.platform() {
        Some(_) => None,
        None => {
            let policy: PlacementPolicy = a.policy.parse().map_err(anyhow::Error::msg)?;
            if !(a.window.is_finite() && a.window >= 0.5) {
                bail!("--window must be at least 0.5 seconds, got {}", a.window);
            }
            Some(AutoSpec {
                policy,
                slo: a.slo,
                profile: rt.load_profile(&prepared, a.profile.as_deref())?,
                window: Duration::from_secs_f64(a.window),
                hysteresis: Hysteresis {
                    windows: a.hold_windows.max(1),
                    min_stay: Duration::from_secs(a.min_stay),
                    max_moves_per_hour: a.max_moves,
                },
            })
        }
    };
    let platform = a
        .platform
        .platform()
        .unwrap_or(bakeoff_spec::Platform::Docker);
    let name = match &a.name {
        Some(n) => n.clone(),
        None => prepared.plan.name.clone(),
    };
    let spec = ServeSpec {
        name: name.clone(),
        listen: a.port,
        platform,
        flags: a.flags(),
        kernel: a.opts.kernel.clone(),
        drain: Duration::from_secs(a.drain),
        ready_timeout: Duration::from_secs(a.ready_timeout),
        echo: !adopted,
        auto,
        metrics: a.metrics,
    };
    if adopted {
        rt.adopt_reservation(&name)?;
    } else {
        // Refusals the user should see at once, in one sentence, before anything starts.
        if a.platform.platform().is_some() {
            prepared.check(platform)?;
            if let Err(why) = rt.available(platform, &prepared.plan).await {
                bail!("{platform} is unavailable here: {why}");
            }
        }
        if std::net::TcpListener::bind(a.port).is_err() {
            bail!("{} is already in use; choose another --port", a.port);
        }
        rt.reserve_service(&name)?;
        if a.detach {
            return detach(&rt, &name, a.ready_timeout).await;
        }
    }
    let rt = rt.with_progress(|m| eprintln!("bakeoff: {m}"));
    rt.serve(prepared, spec, crate::verbs::any_stop_signal())
        .await?;
    Ok(0)
}

/// Starts this command again in the background and returns once its service serves (or says
/// why it could not).
async fn detach(rt: &Runtime, name: &str, ready_timeout: u64) -> Result<i32> {
    let dir = rt.service_dir(name);
    let out = std::fs::File::create(dir.join("front.log"))?;
    let mut args: Vec<String> = Vec::new();
    let mut after_dashes = false;
    for arg in std::env::args().skip(1) {
        after_dashes |= arg == "--";
        if after_dashes || !(arg == "-d" || arg == "--detach") {
            args.push(arg);
        }
    }
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(&args)
        .env(ADOPT, "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe; the child gets its own session and process group,
    // so a Ctrl-C at this terminal does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(ready_timeout + 120);
    loop {
        if let Ok(rec) = rt.load_service(name) {
            if rec.status == ServiceStatus::Serving {
                println!("{name}");
                return Ok(0);
            }
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("front.log")).unwrap_or_default();
            rt.release_service(name);
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim_start_matches("bakeoff: ")
                .to_string();
            bail!("the service did not start ({status}): {last}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = rt.remove_service(name, true).await;
            bail!("the service did not start within {} s", ready_timeout + 120);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn switch(name: &str, to: Option<bakeoff_spec::Platform>) -> Result<i32> {
    let rt = Runtime::from_env();
    let Some(to) = to else {
        rt.resume(name).await?;
        println!("{name}: placement resumed");
        return Ok(0);
    };
    let r = rt.switch(name, to).await?;
    println!(
        "{name}: {} → {}: new backend {} ready after {:.2} s; switched; old backend {} drained after {:.2} s ({} in flight, {} cut) and removed; {:.2} s in all",
        r.from,
        r.to,
        r.new_backend,
        r.ready_after.as_secs_f64(),
        r.old_backend,
        r.drained_after.as_secs_f64(),
        r.in_flight,
        r.cut,
        r.total.as_secs_f64()
    );
    if let Some(note) = r.note {
        println!("note: {note}");
    }
    Ok(0)
}
