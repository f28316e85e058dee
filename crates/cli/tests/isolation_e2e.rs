//! What a microVM can reach and where its secrets travel (issue 16), on real QEMU: the
//! guest cannot reach the host's loopback unless `--host-loopback` opens it, and `-e` values
//! never appear on QEMU's command line.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

const PROBE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/time.h>
int main(void) {
    const char *p = getenv("PROBE_PORT");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(p ? p : "0"));
    inet_pton(AF_INET, "10.0.2.2", &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        char b[16] = {0};
        int n = read(s, b, 15);
        printf("probe: connected, read '%s' (%d)\n", n > 0 ? b : "", n);
    } else {
        printf("probe: cannot connect (%s)\n", strerror(errno));
    }
    fflush(stdout);
    return 0;
}
"#;

/// A listener on the host's 127.0.0.1 that says "hello" and records whether anyone came.
fn host_service() -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let came = Arc::new(AtomicBool::new(false));
    let flag = came.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            flag.store(true, Ordering::SeqCst);
            let _ = c.write_all(b"hello");
        }
    });
    (port, came)
}

#[test]
fn a_microvm_cannot_reach_the_host_loopback_unless_opened() {
    if !qemu_or_skip("a_microvm_cannot_reach_the_host_loopback_unless_opened") {
        return;
    }
    let env = Env::new();
    let app = c_file(&env, "probe.c", PROBE);
    let (port, came) = host_service();
    let port_env = format!("PROBE_PORT={port}");
    let out = env.ok(&["run", &app, "--on", "qemu", "-e", &port_env]);
    assert!(out.contains("probe: cannot connect"), "{out}");
    assert!(!came.load(Ordering::SeqCst), "the host service was reached");

    let out = env.ok(&[
        "run",
        &app,
        "--on",
        "qemu",
        "--host-loopback",
        "-e",
        &port_env,
    ]);
    assert!(out.contains("probe: connected, read 'hello'"), "{out}");
    assert!(came.load(Ordering::SeqCst));
}

#[test]
fn run_secrets_stay_off_the_qemu_command_line() {
    if !qemu_or_skip("run_secrets_stay_off_the_qemu_command_line") {
        return;
    }
    let env = Env::new();
    let port = free_port();
    let name = format!("secret-{port}");
    let secret = format!("s3cret-{port}");
    env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "qemu",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-e",
        &format!("GREETING={secret}"),
        "--name",
        &name,
        "-d",
        "--",
        "arg-one",
    ]);
    let body = wait_http(port, std::time::Duration::from_secs(120));
    let dir = env.dir.path().join("state/instances").join(&name);
    let pids = qemu_pids(&format!("{}/", dir.display()));
    let cmdlines: Vec<String> = pids
        .iter()
        .map(|p| {
            String::from_utf8_lossy(&std::fs::read(format!("/proc/{p}/cmdline")).unwrap())
                .replace('\0', " ")
        })
        .collect();
    let record = std::fs::read_to_string(dir.join("instance.json")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let modes = (
        mode(&env.dir.path().join("state")),
        mode(&dir),
        mode(&dir.join("instance.json")),
        mode(&dir.join("initrd-run.img")),
    );
    env.ok(&["rm", "-f", &name]);
    assert!(body.contains(&format!("greeting={secret}")), "{body}");
    assert!(body.contains("args=arg-one"), "{body}");
    assert_eq!(cmdlines.len(), 1, "{cmdlines:?}");
    assert!(!cmdlines[0].contains(&secret), "{}", cmdlines[0]);
    assert!(!cmdlines[0].contains("bakeoff.run="), "{}", cmdlines[0]);
    assert!(!record.contains(&secret), "the record holds the secret");
    assert_eq!(modes, (0o700, 0o700, 0o600, 0o600));
}
