//! `serve` and `switch`: glue over the runtime's services. A detached front is this same
//! binary run again without `-d`, in its own session, its output in the service directory.
//! The run's secrets (`-e KEY=VALUE` and the app's `-- ARGS`) do not go on its command line,
//! which every local user can read: they travel through an inherited pipe.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
/// Set in a detached front's environment: the descriptor its secrets arrive on.
const SECRETS_FD: &str = "BAKEOFF_SERVICE_SECRETS_FD";
/// The descriptor number the detached front reads its secrets from.
const SECRETS_FD_NUMBER: i32 = 3;

/// What a detached front gets through its pipe instead of its command line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Secrets {
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// Reads the secrets a `serve -d` sent this detached front (once, at start).
fn read_secrets() -> Result<Option<Secrets>> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var(SECRETS_FD).ok() else {
        return Ok(None);
    };
    if fd.parse::<i32>().ok() != Some(SECRETS_FD_NUMBER) {
        bail!("{SECRETS_FD} must be {SECRETS_FD_NUMBER}, got `{fd}`");
    }
    // SAFETY: the parent `serve -d` put the read end of a pipe on this descriptor before exec
    // and nothing else in this process uses it; the File owns and closes it.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(SECRETS_FD_NUMBER) };
    let mut text = Vec::new();
    pipe.read_to_end(&mut text)?;
    let secrets: Secrets = serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("the secrets of the detached front cannot be read: {e}"))?;
    Ok(Some(secrets))
}

pub async fn serve(mut a: ServeArgs) -> Result<i32> {
    let adopted = std::env::var_os(ADOPT).is_some();
    if adopted {
        if let Some(secrets) = read_secrets()? {
            a.opts.env = secrets.env;
            a.opts.args = secrets.args;
        }
    }
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
    for (flag, v) in [
        ("--response-timeout", a.response_timeout),
        ("--body-timeout", a.body_timeout),
    ] {
        if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
            bail!("{flag} must be between 0 and 86400 seconds, got {v}");
        }
    }
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
        response_timeout: Duration::from_secs_f64(a.response_timeout),
        body_timeout: Duration::from_secs_f64(a.body_timeout),
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
            let secrets = Secrets {
                env: a.opts.env.clone(),
                args: a.opts.args.clone(),
            };
            return detach(&rt, &name, a.ready_timeout, &secrets).await;
        }
    }
    let rt = rt.with_progress(|m| eprintln!("bakeoff: {m}"));
    rt.serve(prepared, spec, crate::verbs::any_stop_signal())
        .await?;
    Ok(0)
}

/// The command line of the detached front: this one without `-d`, without any `-e` and without
/// the app's `-- ARGS` (those go through the pipe). Checked by parsing it again: if a secret
/// would still be on it (an unusual spelling of `-e`), nothing starts.
fn front_args(argv: &[String], secrets: &Secrets) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut words = argv.iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "--" => break,
            "-d" | "--detach" => {}
            "-e" | "--env" => {
                words.next();
            }
            w if w.starts_with("--env=") || (w.starts_with("-e") && !w.starts_with("--")) => {}
            w => out.push(w.to_string()),
        }
    }
    let mut full = vec!["bakeoff".to_string()];
    full.extend(out.iter().cloned());
    use clap::Parser;
    let reparsed = crate::args::Cli::try_parse_from(&full);
    let clean = match reparsed.map(|c| c.command) {
        Ok(crate::args::Command::Serve(s)) => {
            s.opts.env.is_empty() && s.opts.args.is_empty() && !s.detach
        }
        _ => false,
    };
    let leaks = secrets
        .env
        .iter()
        .any(|(k, v)| out.iter().any(|w| w.contains(&format!("{k}={v}"))));
    if !clean || leaks {
        bail!("cannot start the detached front without its secrets on its command line; write each -e KEY=VALUE as two words");
    }
    Ok(out)
}

/// Starts this command again in the background and returns once its service serves (or says
/// why it could not). The secrets go through a pipe on the child's descriptor 3.
async fn detach(rt: &Runtime, name: &str, ready_timeout: u64, secrets: &Secrets) -> Result<i32> {
    let dir = rt.service_dir(name);
    let out = std::fs::File::create(dir.join("front.log"))?;
    // Opened before the front starts: a front that fails removes its directory, log included,
    // and this handle still reads what it said.
    let mut log = std::fs::File::open(dir.join("front.log"))?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = front_args(&argv, secrets)?;
    let (read_end, write_end) = pipe()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(&args)
        .env(ADOPT, "1")
        .env(SECRETS_FD, SECRETS_FD_NUMBER.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let read_fd = read_end.as_raw_fd();
    // SAFETY: setsid, dup2 and fcntl are async-signal-safe; the child gets its own session and
    // process group, so a Ctrl-C at this terminal does not reach it, and the pipe's read end
    // on descriptor 3 (both ends are close-on-exec otherwise).
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if read_fd == SECRETS_FD_NUMBER {
                let flags = libc::fcntl(read_fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(read_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(read_fd, SECRETS_FD_NUMBER) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(read_end);
    {
        use std::io::Write;
        let mut w = std::fs::File::from(write_end);
        // A front that died before reading closes the pipe: its status says why, below.
        let _ = w.write_all(&serde_json::to_vec(secrets).expect("secrets serialize"));
    }
    let deadline = Instant::now() + Duration::from_secs(ready_timeout + 120);
    loop {
        if let Ok(rec) = rt.load_service(name) {
            if rec.status == ServiceStatus::Serving {
                println!("{name}");
                return Ok(0);
            }
        }
        if let Some(status) = child.try_wait()? {
            let mut said = Vec::new();
            let _ = std::io::Read::read_to_end(&mut log, &mut said);
            let log = String::from_utf8_lossy(&said);
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
    bakeoff_spec::validate_name(name)?;
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

/// A pipe whose ends are both close-on-exec.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass; we own them from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by pipe2 and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_front_gets_no_secret_on_its_command_line() {
        let secrets = Secrets {
            env: vec![
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "x".into()),
            ],
            args: vec!["--token".into(), "t0p".into()],
        };
        let args = front_args(
            &words(
                "serve app --port 8080 -d -e A=1 --env B=two --env=C=x --name web -- --token t0p",
            ),
            &secrets,
        )
        .unwrap();
        assert_eq!(args, words("serve app --port 8080 --name web"));
    }

    #[test]
    fn an_unusual_spelling_of_e_is_refused_rather_than_leaked() {
        let secrets = Secrets {
            env: vec![("A".into(), "1".into())],
            args: vec![],
        };
        let e = front_args(&words("serve app --port 8080 -de A=1"), &secrets).unwrap_err();
        assert!(
            e.to_string()
                .contains("without its secrets on its command line"),
            "{e}"
        );
    }
}
