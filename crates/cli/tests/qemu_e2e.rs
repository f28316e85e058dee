//! End to end on real QEMU (TCG here): the same example as a microVM with our own PID 1.

mod common;

use std::time::Duration;

use common::*;

const BOOT: Duration = Duration::from_secs(120);

#[test]
fn example_serves_http_from_a_microvm_and_leaves_no_qemu_behind() {
    if !qemu_or_skip("example_serves_http_from_a_microvm_and_leaves_no_qemu_behind") {
        return;
    }
    let env = Env::new();
    let built: serde_json::Value =
        serde_json::from_str(&env.ok(&["build", "examples/hello", "--target", "all", "--json"]))
            .unwrap();
    let images = built["images"].as_array().unwrap();
    // oci and microvm (and rumprun where a toolchain is installed), all from one artifact.
    let targets: Vec<&str> = images
        .iter()
        .map(|i| i["target"].as_str().unwrap())
        .collect();
    assert_eq!(&targets[..2], ["oci", "microvm"], "{targets:?}");
    assert!(images
        .iter()
        .all(|i| i["artifact_id"] == images[0]["artifact_id"]));
    let initrd: u64 = images[1]["details"]["initrd_bytes"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(initrd > 100_000, "initramfs of {initrd} bytes");

    let port = free_port();
    let name = format!("e2e-qemu-{port}");
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-e",
        "GREETING=from-the-vm",
        "--name",
        &name,
        "-d",
        "--memory",
        "96M",
        "--",
        "vm-arg-1",
        "vm-arg-2",
    ]);
    let body = wait_http(port, BOOT);
    assert!(body.contains("greeting=from-the-vm"), "{body}");
    assert!(body.contains("args=vm-arg-1 vm-arg-2"), "{body}");
    assert!(body.contains(&format!("host={name}")), "{body}");

    let row = env.ps_row(&name).expect("ps lists the VM");
    assert_eq!(
        (row["platform"].as_str(), row["status"].as_str()),
        (Some("qemu"), Some("running"))
    );
    let logs = env.ok(&["logs", &name]);
    assert!(
        logs.contains("bakeoff-init: starting /app/hello")
            && logs.contains("hello: listening on port 8080"),
        "{logs}"
    );

    let state = env.dir.path().join("state").display().to_string();
    assert_eq!(qemu_pids(&state).len(), 1, "one QEMU runs the instance");
    env.ok(&["stop", &name]);
    assert!(qemu_pids(&state).is_empty(), "QEMU still runs after stop");
    let row = env.ps_row(&name).unwrap();
    // The graceful stop reached the app: it exited by itself (status 0), not killed.
    assert_eq!(row["status"], "exited (0)", "{row}");
    env.ok(&["rm", &name]);

    // rm -f of a running VM ends its QEMU too.
    let port = free_port();
    let name2 = format!("e2e-qemu-rm-{port}");
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "-p",
        &format!("{port}:8080"),
        "--name",
        &name2,
        "-d",
    ]);
    wait_http(port, BOOT);
    assert_eq!(qemu_pids(&state).len(), 1);
    env.ok(&["rm", "-f", &name2]);
    assert!(qemu_pids(&state).is_empty(), "QEMU still runs after rm -f");
    assert!(!env.ok(&["ps"]).contains(&name2));
}

#[test]
fn exit_status_and_crash_at_start_are_reported() {
    if !qemu_or_skip("exit_status_and_crash_at_start_are_reported") {
        return;
    }
    let env = Env::new();
    let src = c_file(
        &env,
        "exit3.c",
        "#include <stdio.h>\nint main(void){ printf(\"about to exit\\n\"); return 3; }\n",
    );
    // Foreground: bakeoff exits with the app's status.
    let out = env.run(&["run", &src, "--on", "qemu", "--name", "e2e-exit3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("about to exit"), "{stdout}");
    assert!(
        stdout.contains("bakeoff-init: app exited with status 3"),
        "{stdout}"
    );
    let row = env.ps_row("e2e-exit3").unwrap();
    assert_eq!(row["status"], "exited (3)");
    // Detached: a crash at start is an error with the exit status and the console's last lines.
    let err = env.fails(&["run", &src, "--on", "qemu", "--name", "e2e-exit3-d", "-d"]);
    assert!(
        err.contains("`e2e-exit3-d` ended during start (exited (3))"),
        "{err}"
    );
    assert!(err.contains("about to exit"), "{err}");
    let state = env.dir.path().join("state").display().to_string();
    assert!(
        qemu_pids(&state).is_empty(),
        "QEMU lingers after the app exited"
    );
}

#[test]
fn vm_bad_inputs() {
    if !qemu_or_skip("vm_bad_inputs") {
        return;
    }
    let env = Env::new();
    let err = env.fails(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "--kernel",
        "/nonexistent/vmlinuz",
    ]);
    assert!(
        err.contains("/nonexistent/vmlinuz") && err.contains("not"),
        "{err}"
    );
    let err = env.fails(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "--kernel",
        "/etc/hostname",
    ]);
    assert!(err.contains("/etc/hostname is not a Linux kernel"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let err = env.fails(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "-p",
        &format!("{busy_port}:8080"),
    ]);
    assert!(
        err.contains(&format!(
            "host port 127.0.0.1:{busy_port} is already in use"
        )),
        "{err}"
    );
    // QEMU missing: a PATH without it.
    let out = env
        .cmd(&["run", "examples/hello", "--on", "qemu"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("QEMU is not installed") && err.contains("apt-get install -y qemu-system-x86"),
        "{err}"
    );
    // Too little memory to boot: said so, with the amount.
    let err = env.fails(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "--memory",
        "16M",
        "--name",
        "e2e-tiny",
        "-d",
        "-p",
        &format!("{}:8080", free_port()),
    ]);
    assert!(
        err.contains("--memory 16M is too small to boot this microVM: it needs at least"),
        "{err}"
    );
    assert!(
        !env.ok(&["ps"]).contains("e2e-tiny"),
        "a refused run leaves no instance"
    );
}

#[test]
fn a_crashed_cli_leaves_a_vm_that_ps_shows_and_rm_ends() {
    if !qemu_or_skip("a_crashed_cli_leaves_a_vm_that_ps_shows_and_rm_ends") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let name = format!("e2e-qemu-crash-{port}");
    // A foreground run, killed with SIGKILL: no chance to clean up.
    let mut child = env
        .cmd(&[
            "run",
            "examples/hello",
            "--on",
            "qemu",
            "-p",
            &format!("{port}:8080"),
            "--name",
            &name,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_http(port, BOOT);
    child.kill().unwrap();
    child.wait().unwrap();
    let state = env.dir.path().join("state").display().to_string();
    assert_eq!(
        qemu_pids(&state).len(),
        1,
        "the VM keeps running without the CLI"
    );
    let row = env.ps_row(&name).expect("ps shows the orphaned VM");
    assert_eq!(row["status"], "running");
    env.ok(&["rm", "-f", &name]);
    assert!(
        qemu_pids(&state).is_empty(),
        "rm did not end the orphaned QEMU"
    );
}
