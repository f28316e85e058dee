//! The orchestration without engines: a fake driver whose every step can be made to fail, and
//! whose "app" is a real HTTP listener on the published port (so readiness is probed for real).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bakeoff_driver::{Driver, DriverError, LogSink, StartRequest};
use bakeoff_runtime::{Launch, Readiness, Runtime, RuntimeError, Wait};
use bakeoff_spec::{Platform, RunOptions, Target};
use bakeoff_state::{DockerHandle, Handle, Instance, StateDir, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fake does.
#[derive(Default, Clone)]
struct Script {
    unavailable: Option<String>,
    fail_start: bool,
    /// The app ends (exit 3) right after start, printing a line.
    crash: bool,
    /// Starts but never listens.
    deaf: bool,
    /// Creates the instance, then never returns from `start` (an engine that hangs).
    hang_start: bool,
}

#[derive(Default)]
struct World {
    script: Script,
    /// name → (running, listener task)
    running: HashMap<String, (Status, Option<tokio::task::JoinHandle<()>>)>,
    removed: Vec<String>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<World>>);

#[async_trait]
impl Driver for Fake {
    fn platform(&self) -> Platform {
        Platform::Docker
    }
    async fn available(&self) -> Result<(), DriverError> {
        match &self.0.lock().unwrap().script.unavailable {
            Some(why) => Err(DriverError::Unavailable(why.clone())),
            None => Ok(()),
        }
    }
    fn intent(&self, req: &StartRequest<'_>) -> Option<Handle> {
        Some(fake_handle(req.name))
    }
    async fn start(&self, req: StartRequest<'_>) -> Result<Handle, DriverError> {
        let script = self.0.lock().unwrap().script.clone();
        if script.fail_start {
            return Err(DriverError::Unavailable("the fake engine refused".into()));
        }
        if script.hang_start {
            self.0
                .lock()
                .unwrap()
                .running
                .insert(req.name.to_string(), (Status::Running, None));
            return std::future::pending().await;
        }
        let status = if script.crash {
            Status::Exited { code: Some(3) }
        } else {
            Status::Running
        };
        let task = match (script.deaf || script.crash, req.opts.publish.first()) {
            (false, Some(p)) => {
                let l = tokio::net::TcpListener::bind((p.host_ip, p.host_port)).await?;
                let name = req.name.to_string();
                Some(tokio::spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        let name = name.clone();
                        tokio::spawn(async move {
                            let mut buf = [0u8; 1024];
                            let _ = s.read(&mut buf).await;
                            let body = format!("hello from {name}\n");
                            let _ = s
                                .write_all(
                                    format!(
                                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                        body.len()
                                    )
                                    .as_bytes(),
                                )
                                .await;
                        });
                    }
                }))
            }
            _ => None,
        };
        self.0
            .lock()
            .unwrap()
            .running
            .insert(req.name.to_string(), (status, task));
        Ok(fake_handle(req.name))
    }
    async fn status(&self, inst: &Instance) -> Result<Status, DriverError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .running
            .get(&inst.name)
            .map(|r| r.0)
            .unwrap_or(Status::Missing))
    }
    async fn logs(&self, inst: &Instance, _: bool, out: LogSink<'_>) -> Result<(), DriverError> {
        out.write_all(format!("fake log of {}\nsegfault, probably\n", inst.name).as_bytes())
            .await?;
        Ok(())
    }
    async fn stop(&self, inst: &Instance, _: Duration) -> Result<(), DriverError> {
        if let Some(r) = self.0.lock().unwrap().running.get_mut(&inst.name) {
            r.0 = Status::Exited { code: Some(0) };
            if let Some(t) = r.1.take() {
                t.abort();
            }
        }
        Ok(())
    }
    async fn remove(&self, inst: &Instance) -> Result<(), DriverError> {
        let mut w = self.0.lock().unwrap();
        if let Some((_, Some(t))) = w.running.remove(&inst.name) {
            t.abort();
        }
        w.removed.push(inst.name.clone());
        Ok(())
    }
    async fn memory_bytes(&self, _: &Instance) -> Result<Option<u64>, DriverError> {
        Ok(Some(1 << 20))
    }
}

fn fake_handle(name: &str) -> Handle {
    Handle::Docker(DockerHandle {
        container_id: format!("fake-{name}"),
        container_name: name.to_string(),
        image: "fake".into(),
    })
}

struct Setup {
    rt: Runtime,
    world: Arc<Mutex<World>>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn setup(script: Script) -> Setup {
    let state = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let world = Arc::new(Mutex::new(World {
        script,
        ..Default::default()
    }));
    let fake = Fake(world.clone());
    let rt = Runtime::from_env()
        .with_state(StateDir::new(state.path()))
        .with_cache(bakeoff_build::Cache::new(cache.path()))
        .with_drivers(Arc::new(move |_, _| Box::new(fake.clone())));
    Setup {
        rt,
        world,
        _dirs: (state, cache),
    }
}

fn hello() -> String {
    format!("{}/../../examples/hello", env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn launch(name: &str, port: Option<u16>, wait: Wait) -> Launch {
    Launch {
        platform: Platform::Docker,
        target: None,
        opts: RunOptions {
            name: Some(name.into()),
            publish: port
                .map(|p| vec![bakeoff_spec::parse_publish(&format!("{p}:8080")).unwrap()])
                .unwrap_or_default(),
            detach: true,
            ..Default::default()
        },
        kernel: None,
        wait,
    }
}

/// No record and the name free again.
fn assert_nothing_left(s: &Setup, name: &str) {
    assert!(
        s.rt.state().list().unwrap().is_empty(),
        "a record was left behind"
    );
    s.rt.state()
        .reserve(name)
        .expect("the name was not released");
    s.rt.state().release(name);
}

#[tokio::test]
async fn launch_starts_persists_and_waits_until_the_app_answers() {
    let s = setup(Script::default());
    let prepared = s.rt.prepare(&hello()).unwrap();
    let port = free_port();
    let l =
        s.rt.launch(
            &prepared,
            launch("web", Some(port), Wait::Ready(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert!(
        matches!(l.readiness, Some(Readiness::Ready(_))),
        "{:?}",
        l.readiness
    );
    assert_eq!(l.image.target, Target::Oci);
    let rec = s.rt.state().load("web").unwrap();
    assert_eq!(rec.status, Status::Running);
    assert_eq!(rec.ports[0].host_port, port);
    // A second launch with the same name is refused, and leaves the first alone.
    let err =
        s.rt.launch(&prepared, launch("web", Some(free_port()), Wait::Started))
            .await
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("an instance named `web` already exists"),
        "{err}"
    );
    assert_eq!(s.rt.state().list().unwrap().len(), 1);
}

#[tokio::test]
async fn unavailable_platform_leaves_nothing() {
    let s = setup(Script {
        unavailable: Some("the engine is asleep".into()),
        ..Default::default()
    });
    let prepared = s.rt.prepare(&hello()).unwrap();
    let err =
        s.rt.launch(&prepared, launch("a", Some(free_port()), Wait::Started))
            .await
            .unwrap_err();
    assert_eq!(err.to_string(), "the engine is asleep");
    assert_nothing_left(&s, "a");
}

#[tokio::test]
async fn busy_port_leaves_nothing() {
    let s = setup(Script::default());
    let prepared = s.rt.prepare(&hello()).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err =
        s.rt.launch(&prepared, launch("b", Some(port), Wait::Started))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("is already in use"), "{err}");
    assert_nothing_left(&s, "b");
    assert!(s.world.lock().unwrap().running.is_empty(), "started anyway");
}

#[tokio::test]
async fn failed_start_releases_the_name() {
    let s = setup(Script {
        fail_start: true,
        ..Default::default()
    });
    let prepared = s.rt.prepare(&hello()).unwrap();
    let err =
        s.rt.launch(&prepared, launch("c", Some(free_port()), Wait::Started))
            .await
            .unwrap_err();
    assert_eq!(err.to_string(), "the fake engine refused");
    assert_nothing_left(&s, "c");
}

#[tokio::test]
async fn a_bad_name_or_target_is_refused_before_anything_starts() {
    let s = setup(Script::default());
    let prepared = s.rt.prepare(&hello()).unwrap();
    let err =
        s.rt.launch(&prepared, launch("../x", None, Wait::Started))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("../x"), "{err}");
    let mut l = launch("d", None, Wait::Started);
    l.target = Some(Target::MicroVm);
    let err = s.rt.launch(&prepared, l).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "docker boots oci images, not microvm images"
    );
    assert!(s.world.lock().unwrap().running.is_empty());
    assert!(s.rt.state().list().unwrap().is_empty());
}

#[tokio::test]
async fn a_crash_during_start_is_reported_with_its_output_and_can_be_removed() {
    let s = setup(Script {
        crash: true,
        ..Default::default()
    });
    let prepared = s.rt.prepare(&hello()).unwrap();
    let err =
        s.rt.launch(
            &prepared,
            launch("e", Some(free_port()), Wait::Ready(Duration::from_secs(10))),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::EndedDuringStart { .. }));
    let text = err.to_string();
    assert!(
        text.starts_with("`e` ended during start (exited (3))"),
        "{text}"
    );
    assert!(text.contains("  | segfault, probably"), "{text}");
    // The record stays, for `logs`; `rm` (not running, so no -f) removes it.
    s.rt.remove("e", false).await.unwrap();
    assert_nothing_left(&s, "e");
}

#[tokio::test]
async fn a_deaf_app_is_running_but_not_ready() {
    let s = setup(Script {
        deaf: true,
        ..Default::default()
    });
    let prepared = s.rt.prepare(&hello()).unwrap();
    let l =
        s.rt.launch(
            &prepared,
            launch(
                "f",
                Some(free_port()),
                Wait::Ready(Duration::from_millis(700)),
            ),
        )
        .await
        .unwrap();
    match l.readiness {
        Some(Readiness::NotReady(why)) => assert!(why.contains("HTTP GET"), "{why}"),
        other => panic!("expected NotReady, got {other:?}"),
    }
}

#[tokio::test]
async fn rm_of_a_running_instance_needs_force() {
    let s = setup(Script::default());
    let prepared = s.rt.prepare(&hello()).unwrap();
    s.rt.launch(&prepared, launch("g", Some(free_port()), Wait::Started))
        .await
        .unwrap();
    let err = s.rt.remove("g", false).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "instance `g` is running; stop it first with `bakeoff stop g` or use `bakeoff rm -f g`"
    );
    assert_eq!(s.rt.state().list().unwrap().len(), 1);
    let stopped = s.rt.stop("g", Duration::from_secs(1)).await.unwrap();
    assert_eq!(stopped.status, Status::Exited { code: Some(0) });
    s.rt.remove("g", false).await.unwrap();
    assert_eq!(s.world.lock().unwrap().removed, vec!["g".to_string()]);
    assert_nothing_left(&s, "g");
}

#[test]
fn pick_target_takes_the_default_or_a_kind_the_platform_boots() {
    use bakeoff_runtime::pick_target;
    assert_eq!(pick_target(Platform::Xen, None).unwrap(), Target::MicroVm);
    assert_eq!(
        pick_target(Platform::Xen, Some(Target::Rumprun)).unwrap(),
        Target::Rumprun
    );
    assert_eq!(
        pick_target(Platform::Qemu, Some(Target::Oci))
            .unwrap_err()
            .to_string(),
        "qemu boots microvm images, not oci images"
    );
}

/// A `serve` SIGKILLed between reserving its name and writing its record left a directory that
/// `ps` did not list and that blocked the name (seen once in CI's kill test).
#[test]
fn a_reservation_whose_serve_died_is_pruned_and_its_name_free_again() {
    let s = setup(Script::default());
    let dir = s.rt.reserve_service("svc").unwrap();
    let reserver = std::fs::read_to_string(dir.join("reserved-by")).unwrap();
    assert!(
        reserver.starts_with(&format!("{} ", std::process::id())),
        "{reserver}"
    );
    // Held by a live process: listed nowhere yet, but kept and refused to a second `serve`.
    assert!(s.rt.services().unwrap().is_empty());
    assert!(s.rt.forget_abandoned_services().is_empty());
    assert!(dir.is_dir());
    let err = s.rt.reserve_service("svc").unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    // Its reserver dies (a pid that has exited) before writing the record.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(dir.join("reserved-by"), format!("{dead} 1")).unwrap();
    assert!(s.rt.abandoned_reservation("svc"));
    assert!(s.rt.services().unwrap().is_empty());
    assert!(dir.exists(), "listing services changes nothing");
    assert_eq!(s.rt.forget_abandoned_services(), ["svc"]);
    assert!(!dir.exists(), "ps forgets the abandoned reservation");
    // The name is free, even when no `ps` ran in between.
    s.rt.reserve_service("svc").unwrap();
    // Or a live pid with another start time: the pid was recycled.
    let other = reserver.split(' ').next().unwrap();
    std::fs::write(dir.join("reserved-by"), format!("{other} 1")).unwrap();
    s.rt.reserve_service("svc").unwrap();
    s.rt.release_service("svc");
}

#[tokio::test]
async fn a_bench_interrupted_while_an_instance_starts_removes_it() {
    let s = setup(Script {
        hang_start: true,
        ..Default::default()
    });
    let prepared = s.rt.prepare(&hello()).unwrap();
    let config = bakeoff_runtime::BenchConfig {
        platforms: Some(vec![Platform::Docker.into()]),
        runs: 1,
        shape: Default::default(),
        policy: Default::default(),
        memory: None,
        cpus: None,
        ready_timeout: Duration::from_secs(30),
        sweep: None,
        slo: Default::default(),
        env: Vec::new(),
        args: Vec::new(),
        publish: Vec::new(),
        kernel: None,
    };
    // The interruption (SIGTERM in the CLI) comes once the engine has made the instance and
    // while its start has not returned.
    let world = s.world.clone();
    let interrupt = async move {
        for _ in 0..3000 {
            if !world.lock().unwrap().running.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the bench never started an instance");
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        s.rt.bench(&prepared, &config, interrupt),
    )
    .await
    .expect("the interrupted bench returned")
    .unwrap();
    assert!(matches!(
        outcome,
        bakeoff_runtime::BenchOutcome::Interrupted
    ));
    let w = s.world.lock().unwrap();
    assert!(w.running.is_empty(), "left running: {:?}", w.running.keys());
    assert_eq!(w.removed.len(), 1, "removed: {:?}", w.removed);
    assert!(w.removed[0].starts_with("bench-"), "{:?}", w.removed);
    drop(w);
    assert!(s.rt.state().list().unwrap().is_empty(), "a record was left");
}
