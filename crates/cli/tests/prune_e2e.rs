//! `bakeoff prune` (issue 16) against the real engines: strays are made the way interruptions
//! make them — a container whose record is gone, a QEMU whose start lost its record, a service
//! whose front was SIGKILLed, scratch of a killed build — and prune lists them with
//! `--dry-run`, removes them without, and touches nothing else: a recorded instance keeps
//! serving, and another state dir's container is left alone.

mod common;

use std::time::Duration;

use common::*;

fn run_d(env: &Env, platform: &str, name: &str, port: u16) {
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        platform,
        "-d",
        "--name",
        name,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
    ]);
}

fn service_pid(env: &Env, name: &str) -> i32 {
    let path = env
        .dir
        .path()
        .join("state/services")
        .join(name)
        .join("service.json");
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    rec["pid"].as_i64().unwrap() as i32
}

#[test]
fn prune_removes_strays_and_nothing_else() {
    let test = "prune_removes_strays_and_nothing_else";
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let other = Env::new();
    let id = std::process::id();
    let instances = env.dir.path().join("state/instances");

    // Kept: a recorded instance, and another state dir's container without a record there.
    let (keep, keep_port) = (format!("prune-keep-{id}"), free_port());
    run_d(&env, "docker", &keep, keep_port);
    let (theirs, theirs_port) = (format!("prune-theirs-{id}"), free_port());
    run_d(&other, "docker", &theirs, theirs_port);

    // Stray 1: a container whose instance record is gone.
    let lost = format!("prune-lost-{id}");
    run_d(&env, "docker", &lost, free_port());
    std::fs::remove_dir_all(instances.join(&lost)).unwrap();
    // Stray 2: a QEMU whose record is gone; its reservation names a process that has ended.
    let vm = format!("prune-vm-{id}");
    run_d(&env, "qemu", &vm, free_port());
    let vm_dir = instances.join(&vm);
    std::fs::remove_file(vm_dir.join("instance.json")).unwrap();
    assert_eq!(qemu_pids(&format!("{}/", vm_dir.display())).len(), 1);
    // Stray 3: a service whose front was SIGKILLed (its backend container still runs).
    let svc = format!("prune-svc-{id}");
    let svc_port = free_port();
    env.ok(&[
        "serve",
        "examples/hello",
        "--port",
        &svc_port.to_string(),
        "--name",
        &svc,
        "-d",
    ]);
    // SAFETY: the pid is the front this test started, read from its record.
    unsafe { libc::kill(service_pid(&env, &svc), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    // Stray 4: scratch of a killed build (a pid that does not run).
    let dead_pid = (4_000_000..4_194_000)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let scratch = shared_cache().join(format!("tmp/work-{dead_pid}-prunetest{id}"));
    std::fs::create_dir_all(&scratch).unwrap();

    let listed = env.ok(&["prune", "--dry-run"]);
    for want in [
        format!("container bakeoff-{lost}: instance `{lost}` has no record — would remove"),
        format!("instance `{vm}` has no record — would remove"),
        format!("reservation {vm}: a start was interrupted"),
        format!("service {svc}: its front"),
        format!(
            "{}: build pid {dead_pid} no longer runs — would remove",
            scratch.display()
        ),
    ] {
        assert!(listed.contains(&want), "missing `{want}` in:\n{listed}");
    }
    assert!(
        !listed.contains(&keep) && !listed.contains(&theirs),
        "{listed}"
    );
    // --dry-run removed nothing.
    assert_eq!(engine_container_status(&format!("bakeoff-{lost}")), "200");
    assert!(scratch.exists());

    let pruned = env.ok(&["prune"]);
    assert!(
        pruned.contains(&format!(
            "container bakeoff-{lost}: instance `{lost}` has no record — removed"
        )),
        "{pruned}"
    );
    assert!(!pruned.contains("not removed"), "{pruned}");
    assert_eq!(engine_container_status(&format!("bakeoff-{lost}")), "404");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !qemu_pids(&format!("{}/", vm_dir.display())).is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        qemu_pids(&format!("{}/", vm_dir.display())).is_empty(),
        "the stray VM runs"
    );
    assert!(!vm_dir.exists());
    assert!(!env.dir.path().join("state/services").join(&svc).exists());
    assert_eq!(
        engine_container_status(&format!("bakeoff-{svc}.docker.1")),
        "404",
        "the dead service's backend"
    );
    assert!(!scratch.exists());

    // Nothing else was touched.
    let (status, body) = http_get(keep_port, "/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.ps_row(&keep).unwrap()["status"], "running");
    assert_eq!(engine_container_status(&format!("bakeoff-{theirs}")), "200");
    let again = env.ok(&["prune", "--dry-run"]);
    assert!(!again.contains(&id.to_string()), "{again}");

    env.ok(&["rm", "-f", &keep]);
    other.ok(&["rm", "-f", &theirs]);
}
