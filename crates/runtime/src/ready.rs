//! Readiness: when is a started instance really serving? One probe for run, bench and serve.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bakeoff_bench::Probe;
use bakeoff_detect::BuildPlan;
use bakeoff_driver::Driver;
use bakeoff_spec::HealthKind;
use bakeoff_state::{Instance, Status};

use crate::{Runtime, RuntimeError};

/// How a wait for readiness ended, when the app did not end first.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// The health probe passed this long after the wait began.
    Ready(Duration),
    /// Still running, but the probe did not pass before the limit; the text says what it saw.
    NotReady(String),
}

/// The probe for an instance: its health check on the published port that maps the health
/// port (or the first published port). None without a published TCP port.
pub fn probe_for(inst: &Instance, plan: &BuildPlan) -> Option<Probe> {
    let published = inst
        .ports
        .iter()
        .find(|p| Some(p.guest_port) == plan.health.port)
        .or(inst.ports.first())?;
    let ip = if published.host_ip.is_unspecified() {
        Ipv4Addr::LOCALHOST
    } else {
        published.host_ip
    };
    let addr = SocketAddr::from((ip, published.host_port));
    Some(match plan.health.kind {
        HealthKind::Http => Probe::Http {
            addr,
            path: plan.health.path.clone(),
        },
        HealthKind::Tcp => Probe::Tcp { addr },
    })
}

/// The guest port behind the probe of [`probe_for`].
fn probe_guest_port(inst: &Instance, plan: &BuildPlan) -> Option<u16> {
    inst.ports
        .iter()
        .find(|p| Some(p.guest_port) == plan.health.port)
        .or(inst.ports.first())
        .map(|p| p.guest_port)
}

/// Waits (polling every 20 ms) until `ports` (what the app listens on, seen where it runs)
/// holds `port`. At the deadline the error names the ports it does listen on, if any; `place`
/// says where they were seen ("inside the VM", "in its container").
async fn wait_listening<F, Fut>(
    mut ports: F,
    port: u16,
    place: &str,
    deadline: Instant,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<u16>>,
{
    loop {
        let seen = ports().await;
        if seen.contains(&port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(if seen.is_empty() {
                format!("the app does not listen on TCP port {port} {place} (it listens on no TCP port)")
            } else {
                let list: Vec<String> = seen.iter().map(u16::to_string).collect();
                format!(
                    "the app does not listen on TCP port {port} {place}; it listens on {} (give the right one with --port)",
                    list.join(", ")
                )
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ports PID 1 reported listening on (`phase listening` lines) in a VM's console.
fn console_listening(console: &std::path::Path) -> Vec<u16> {
    use bakeoff_launch::cmdline::phases::{phases_in, Phase};
    let text = std::fs::read_to_string(console).unwrap_or_default();
    phases_in(&text)
        .into_iter()
        .filter_map(|(p, _)| match p {
            Phase::Listening(port) => Some(port),
            _ => None,
        })
        .collect()
}

impl Runtime {
    /// Waits until `inst` answers its health probe (or, without a published port, has been
    /// started and kept running for a moment), at most `limit`. Fails with the exit status, a
    /// diagnosis and the last lines of output when the app ends first.
    pub async fn wait_ready(
        &self,
        inst: &Instance,
        plan: &BuildPlan,
        limit: Duration,
    ) -> Result<Readiness, RuntimeError> {
        let driver = self.driver(inst.platform);
        wait_ready_with(&*driver, inst, plan, limit).await
    }
}

pub(crate) async fn wait_ready_with(
    driver: &dyn Driver,
    inst: &Instance,
    plan: &BuildPlan,
    limit: Duration,
) -> Result<Readiness, RuntimeError> {
    let begun = Instant::now();
    let deadline = begun + limit;
    let probe = probe_for(inst, plan);
    let ready = async {
        match probe {
            Some(p) => {
                let console = driver.phase_console(inst);
                if let (Probe::Tcp { .. }, Some(console), Some(port)) =
                    (&p, &console, probe_guest_port(inst, plan))
                {
                    // Where the app runs: a VM's PID 1 reports the app's listening sockets
                    // (issue 13 item 6); the forwarder's accept says nothing.
                    let console = console.clone();
                    wait_listening(
                        || std::future::ready(console_listening(&console)),
                        port,
                        "inside the VM",
                        deadline,
                    )
                    .await?;
                } else if let (Probe::Tcp { .. }, Some(port), Some(_)) = (
                    &p,
                    probe_guest_port(inst, plan),
                    driver.listening_ports(inst).await,
                ) {
                    // A container's own network namespace says when the app listens (the
                    // engine's port proxy accepts before that).
                    wait_listening(
                        || async { driver.listening_ports(inst).await.unwrap_or_default() },
                        port,
                        "in its container",
                        deadline,
                    )
                    .await?;
                } else if matches!(p, Probe::Tcp { .. }) {
                    // A VMM's port forwarder accepts connections before the guest app exists,
                    // and holds them while the guest is still booting: a TCP probe counts only
                    // once the app has been started (then a closed port is refused at once).
                    while !driver.app_started(inst).await {
                        if Instant::now() > deadline {
                            return Err("the app was not started before the deadline".to_string());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                bakeoff_bench::wait_ready(p, deadline)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            None => {
                // Without a port to probe: the app has started and kept running for a moment.
                while !driver.app_started(inst).await {
                    if Instant::now() > deadline {
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
        Ok(Ok(())) => Ok(Readiness::Ready(begun.elapsed())),
        Ok(Err(why)) => Ok(Readiness::NotReady(why)),
        Err(status) => Err(RuntimeError::EndedDuringStart {
            name: inst.name.clone(),
            status,
            diagnosis: driver
                .diagnose(inst)
                .await
                .map(|d| format!(": {d}"))
                .unwrap_or_default(),
            tail: last_output(driver, inst, 12, "\n").await,
        }),
    }
}

/// The last `lines` non-empty lines of an instance's output, each indented, joined by `sep`.
pub(crate) async fn last_output(
    driver: &dyn Driver,
    inst: &Instance,
    lines: usize,
    sep: &str,
) -> String {
    let mut buf: Vec<u8> = Vec::new();
    let _ = driver.logs(inst, false, &mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if sep == "\n" {
        tail.iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        tail.join(sep)
    }
}

/// The status once the instance is no longer running (bounded wait).
pub(crate) async fn wait_settled(
    driver: &dyn Driver,
    inst: &Instance,
) -> Result<Status, RuntimeError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = driver.status(inst).await?;
        if !s.is_running() || Instant::now() > deadline {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
