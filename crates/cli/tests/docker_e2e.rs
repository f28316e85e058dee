//! End to end on the real Docker engine: build the example, run it, talk to it, remove it.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn example_serves_http_from_a_container() {
    if !docker_or_skip("example_serves_http_from_a_container") {
        return;
    }
    let env = Env::new();
    let out = env.ok(&["build", "examples/hello", "--target", "oci", "--json"]);
    let built: serde_json::Value = serde_json::from_str(&out).unwrap();
    let digest = built["images"][0]["digest"].as_str().unwrap().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // Building again is reproducible and cached.
    let again: serde_json::Value =
        serde_json::from_str(&env.ok(&["build", "examples/hello", "--json"])).unwrap();
    assert_eq!(again["images"][0]["digest"], digest.as_str());
    assert_eq!(again["artifact"]["cached"], true);

    let port = free_port();
    let name = format!("e2e-docker-{port}");
    let publish = format!("127.0.0.1:{port}:8080");
    let printed = env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "docker",
        "-p",
        &publish,
        "-e",
        "GREETING=from-the-test",
        "--name",
        &name,
        "-d",
        "--memory",
        "64M",
        "--cpus",
        "1",
        "--",
        "first",
        "second",
    ]);
    assert_eq!(printed.trim(), name);

    let body = wait_http(port, Duration::from_secs(20));
    assert!(body.contains("greeting=from-the-test"), "{body}");
    assert!(body.contains("args=first second"), "{body}");
    assert!(body.contains(&format!("host={name}")), "{body}");

    let row = env.ps_row(&name).expect("ps lists the instance");
    assert_eq!(row["platform"], "docker");
    assert_eq!(row["status"], "running");
    assert_eq!(row["image_digest"], digest.as_str());
    assert_eq!(row["ports"][0], format!("127.0.0.1:{port}->8080"));
    let table = env.ok(&["ps"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&name) && l.contains("running")),
        "{table}"
    );

    let logs = env.ok(&["logs", &name]);
    assert!(logs.contains("hello: listening on port 8080"), "{logs}");

    // A running instance is not removed without -f.
    let err = env.fails(&["rm", &name]);
    assert!(
        err.contains(&format!("instance `{name}` is running")),
        "{err}"
    );

    env.ok(&["stop", &name, "--time", "5"]);
    assert!(
        http_get(port, "/").is_err(),
        "the app still answers after stop"
    );
    let row = env.ps_row(&name).unwrap();
    assert!(
        row["status"].as_str().unwrap().starts_with("exited"),
        "{row}"
    );
    let container = format!("bakeoff-{name}");
    assert_eq!(engine_container_status(&container), "200");
    env.ok(&["rm", &name]);
    assert_eq!(
        engine_container_status(&container),
        "404",
        "the engine still has the container"
    );
    assert!(env.ps_row(&name).is_none());
}

#[test]
fn bad_inputs_get_one_clear_sentence() {
    let env = Env::new();
    let tmp = env.dir.path();
    // Inputs checked before any engine is involved.
    let err = env.fails(&["build", "/nonexistent/app"]);
    assert_eq!(err.trim(), "bakeoff: /nonexistent/app does not exist");
    std::fs::create_dir_all(tmp.join("empty")).unwrap();
    let err = env.fails(&["build", tmp.join("empty").to_str().unwrap()]);
    assert!(err.contains("has nothing bakeoff can build"), "{err}");
    std::fs::write(tmp.join("broken.c"), "int main(void) { return nope; }\n").unwrap();
    let err = env.fails(&["build", tmp.join("broken.c").to_str().unwrap()]);
    assert!(
        err.contains("failed (exit status 1)")
            && err.contains("nope")
            && err.contains("undeclared"),
        "{err}"
    );

    for (flag, value, expect) in [
        ("-p", "80", "invalid port mapping `80`"),
        (
            "-p",
            "127.0.0.1:99999:80",
            "the host port must be a number from 1 to 65535",
        ),
        ("-e", "=x", "invalid environment variable `=x`"),
        ("--memory", "lots", "invalid memory size `lots`"),
        ("--cpus", "0", "invalid CPU count"),
        ("--on", "vmware", "unknown platform `vmware`"),
    ] {
        let mut args = vec!["run", "examples/hello", flag, value];
        if flag != "--on" {
            args.extend(["--on", "docker"]);
        }
        let err = env.fails(&args);
        assert!(err.contains(expect), "{flag} {value}: {err}");
    }

    let err = env.fails(&["logs", "no-such-instance"]);
    assert_eq!(
        err.trim(),
        "bakeoff: no instance named `no-such-instance` (see `bakeoff ps`)"
    );
    let err = env.fails(&["stop", "no-such-instance"]);
    assert!(
        err.contains("no instance named `no-such-instance`"),
        "{err}"
    );
    let err = env.fails(&["rm", "no-such-instance"]);
    assert!(
        err.contains("no instance named `no-such-instance`"),
        "{err}"
    );

    // The engine not running (pointed at a socket that does not exist).
    let out = env
        .cmd(&["run", "examples/hello", "--on", "docker", "-d"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the Docker engine is not running (")
            && err.contains("/nonexistent/docker.sock"),
        "{err}"
    );
    assert!(err.contains("start it with `dockerd &`"), "{err}");
}

#[test]
fn port_in_use_and_duplicate_names_are_refused() {
    if !docker_or_skip("port_in_use_and_duplicate_names_are_refused") {
        return;
    }
    let env = Env::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let err = env.fails(&[
        "run",
        "examples/hello",
        "--on",
        "docker",
        "-d",
        "-p",
        &format!("{busy_port}:8080"),
        "--name",
        "e2e-busy",
    ]);
    assert!(
        err.contains(&format!(
            "host port 127.0.0.1:{busy_port} is already in use"
        )),
        "{err}"
    );
    assert!(
        !env.ok(&["ps"]).contains("e2e-busy"),
        "a failed run must not leave an instance"
    );

    let port = free_port();
    let name = format!("e2e-dup-{port}");
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "docker",
        "-d",
        "-p",
        &format!("{port}:8080"),
        "--name",
        &name,
    ]);
    let err = env.fails(&[
        "run",
        "examples/hello",
        "--on",
        "docker",
        "-d",
        "--name",
        &name,
    ]);
    assert!(
        err.contains(&format!("an instance named `{name}` already exists")),
        "{err}"
    );
    wait_http(port, Duration::from_secs(20));
    env.ok(&["rm", "-f", &name]);
    assert_eq!(engine_container_status(&format!("bakeoff-{name}")), "404");
}

/// A TCP app (health kind tcp) in a container is ready when its own network namespace shows it
/// listening (the engine's port proxy accepts before that); with the wrong guest port it is
/// never "ready", and the warning names the port it does listen on.
#[test]
fn a_tcp_app_is_ready_when_it_listens_in_its_container() {
    let test = "a_tcp_app_is_ready_when_it_listens_in_its_container";
    if !docker_or_skip(test) {
        return;
    }
    let env = Env::new();
    let app = tcp_hello(&env);
    let port = free_port();
    let name = format!("e2e-docker-tcp-{port}");
    let publish = format!("127.0.0.1:{port}:8080");
    let out = env.run(&[
        "run", &app, "--on", "docker", "-p", &publish, "--name", &name, "-d",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("not ready"), "{err}");
    let (status, _) = http_get(port, "/").expect("the app answers right after `run -d`");
    assert_eq!(status, 200);
    env.ok(&["rm", "-f", &name]);

    let port = free_port();
    let name = format!("e2e-docker-tcp-wrong-{port}");
    let publish = format!("127.0.0.1:{port}:9999");
    let out = env.run(&[
        "run", &app, "--on", "docker", "--port", "9999", "-p", &publish, "--name", &name, "-d",
        "--wait", "5",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not ready"), "{err}");
    assert!(
        err.contains("does not listen on TCP port 9999 in its container; it listens on 8080"),
        "{err}"
    );
    env.ok(&["rm", "-f", &name]);
}
