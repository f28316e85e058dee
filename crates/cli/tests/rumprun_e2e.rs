//! End to end on a real Rumprun toolchain and QEMU: build the example as a unikernel, run it
//! with ports, env and args, talk to it, read its logs, stop and remove it; an exiting program's
//! status; a bake failure's linker error; refusals. Tests that need the toolchain skip with a
//! printed reason when it is absent (`x86_64-rumprun-netbsd-gcc` on PATH, or
//! BAKEOFF_RUMPRUN_TOOLCHAIN naming it).

mod common;

use std::time::Duration;

use common::*;

fn toolchain_or_skip(test: &str) -> bool {
    rumprun_or_skip(test)
}

#[test]
fn unikernel_serves_http_with_env_and_args_then_stops() {
    if !toolchain_or_skip("unikernel_serves_http_with_env_and_args_then_stops")
        || !qemu_or_skip("unikernel_serves_http_with_env_and_args_then_stops")
    {
        return;
    }
    let env = Env::new();
    let built: serde_json::Value = serde_json::from_str(&env.ok(&[
        "build",
        "examples/hello",
        "--target",
        "rumprun",
        "--json",
    ]))
    .unwrap();
    let image = &built["images"][0];
    assert_eq!(image["target"], "rumprun");
    assert_eq!(image["files"]["kernel"], "hello-hw_virtio.bin");
    let size = image["size_bytes"].as_u64().unwrap();
    assert!(
        (1 << 20..8 << 20).contains(&size),
        "a stripped hw_virtio unikernel of a small C server is a few MiB, got {size}"
    );

    let port = free_port();
    let name = format!("e2e-rumprun-{port}");
    let publish = format!("127.0.0.1:{port}:8080");
    let printed = env.ok(&[
        "run",
        "examples/hello",
        "--on",
        "rumprun",
        "-p",
        &publish,
        "-e",
        "GREETING=from-the-test",
        "--name",
        &name,
        "-d",
        "--memory",
        "64M",
        "--",
        "first",
        "two words",
    ]);
    assert_eq!(printed.trim(), name);
    let body = wait_http(port, Duration::from_secs(30));
    assert!(body.contains("greeting=from-the-test"), "{body}");
    assert!(body.contains("args=first two words"), "{body}");
    assert!(body.contains(&format!("host={name}")), "{body}");

    let r = env.ps_row(&name).expect("ps lists the instance");
    assert_eq!(
        (r["platform"].as_str(), r["status"].as_str()),
        (Some("rumprun"), Some("running"))
    );
    let logs = env.ok(&["logs", &name]);
    assert!(
        logs.contains("=== calling \"hello\" main() ===")
            && logs.contains("hello: listening on port 8080"),
        "{logs}"
    );
    assert!(
        !logs.contains('\r') && !logs.contains("SeaBIOS"),
        "the console carries only Rumprun's output: {logs}"
    );

    env.ok(&["stop", &name]);
    assert!(
        http_get(port, "/").is_err(),
        "the unikernel still answers after stop"
    );
    assert!(env.ps_row(&name).unwrap()["status"]
        .as_str()
        .unwrap()
        .starts_with("exited"));
    let state = env.dir.path().join("state").display().to_string();
    assert!(qemu_pids(&state).is_empty(), "QEMU still runs after stop");
    env.ok(&["rm", &name]);
    assert!(env.ps_row(&name).is_none());
}

#[test]
fn a_program_that_ends_stops_its_vm_and_reports_the_status() {
    if !toolchain_or_skip("a_program_that_ends_stops_its_vm_and_reports_the_status")
        || !qemu_or_skip("a_program_that_ends_stops_its_vm_and_reports_the_status")
    {
        return;
    }
    let env = Env::new();
    let file = c_file(
        &env,
        "seven.c",
        "#include <stdio.h>\n#include <stdlib.h>\nint main(int argc, char **argv) { printf(\"seven: %d args, X=%s\\n\", argc - 1, getenv(\"X\")); return 7; }\n",
    );
    let name = format!("e2e-rumprun-exit-{}", free_port());
    let out = env.run(&[
        "run", &file, "--on", "rumprun", "--name", &name, "-e", "X=y", "--", "a", "b",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}");
    assert!(stdout.contains("seven: 2 args, X=y"), "{stdout}");
    assert!(
        stdout.contains("=== ERROR: _exit(7) called ==="),
        "{stdout}"
    );
    assert_eq!(env.ps_row(&name).unwrap()["status"], "exited (7)");
    assert!(
        qemu_pids(&env.dir.path().join("state").display().to_string()).is_empty(),
        "QEMU outlived the program"
    );
    env.ok(&["rm", &name]);
}

#[test]
fn a_make_project_with_a_configure_script_is_cross_built() {
    if !toolchain_or_skip("a_make_project_with_a_configure_script_is_cross_built")
        || !qemu_or_skip("a_make_project_with_a_configure_script_is_cross_built")
    {
        return;
    }
    let env = Env::new();
    let dir = env.dir.path().join("mk");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("Makefile", "srv: srv.c config.h\n\t$(CC) -O2 -o srv srv.c\nconfig.h:\n\techo '#define HOST \"native\"' > config.h\n");
    write(
        "configure",
        "#!/bin/sh\nhost=native\nfor a in \"$@\"; do case \"$a\" in --host=*) host=${a#--host=};; esac; done\necho \"#define HOST \\\"$host\\\"\" > config.h\n",
    );
    std::fs::set_permissions(
        dir.join("configure"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    write("srv.c", "#include <stdio.h>\n#include \"config.h\"\nint main(void) { printf(\"built for %s\\n\", HOST); return 0; }\n");
    let app = dir.display().to_string();
    let name = format!("e2e-rumprun-make-{}", free_port());
    let out = env.run(&["run", &app, "--on", "rumprun", "--name", &name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // configure ran with --host, make with the toolchain's CC.
    assert!(
        stdout.contains("built for x86_64-rumprun-netbsd"),
        "{stdout}"
    );
    env.ok(&["rm", &name]);
}

#[test]
fn a_bake_failure_shows_the_linkers_error() {
    if !toolchain_or_skip("a_bake_failure_shows_the_linkers_error") {
        return;
    }
    let env = Env::new();
    // Fine on Linux; against the unikernel its function clashes with Rumprun's own at the bake.
    let file = c_file(
        &env,
        "clash.c",
        "#include <stdio.h>\nvoid bmk_platform_halt(const char *why) { (void)why; }\nint main(void) { puts(\"hi\"); return 0; }\n",
    );
    let err = env.fails(&["build", &file, "--target", "rumprun"]);
    assert!(
        err.contains("`rumprun-bake hw_virtio` failed for clash (exit status 1); the linker said:"),
        "{err}"
    );
    assert!(
        err.contains("multiple definition of `bmk_platform_halt'"),
        "{err}"
    );
    // A function NetBSD's libc lacks (glibc has it) fails earlier, at the toolchain's own link.
    let file = c_file(
        &env,
        "epoll.c",
        "int epoll_create1(int flags);\nint main(void) { return epoll_create1(0) < 0; }\n",
    );
    let err = env.fails(&["build", &file, "--target", "rumprun"]);
    assert!(
        err.contains("with the Rumprun toolchain failed (exit status 1):"),
        "{err}"
    );
    assert!(
        err.contains("undefined reference to `epoll_create1'"),
        "{err}"
    );
}

#[test]
fn a_forking_app_is_refused_with_the_reason() {
    // The check runs on the Linux build before any toolchain is looked for.
    let env = Env::new();
    let file = c_file(
        &env,
        "forker.c",
        "#include <unistd.h>\nint main(void) { return fork() < 0; }\n",
    );
    let err = env.fails(&["build", &file, "--target", "rumprun"]);
    assert!(err.contains("forker cannot be built for Rumprun: calls fork(): a Rumprun unikernel runs a single process"), "{err}");
}

#[test]
fn without_a_toolchain_the_error_says_how_to_get_one() {
    let env = Env::new();
    // A cache of its own: the shared one may hold the toolchain `bakeoff toolchain build` made.
    let empty_cache = env.dir.path().join("cache");
    let out = env
        .cmd(&["build", "examples/hello", "--target", "rumprun"])
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("BAKEOFF_CACHE_DIR", &empty_cache)
        .env_remove("BAKEOFF_RUMPRUN_TOOLCHAIN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no Rumprun toolchain found (bakeoff has not built one, and x86_64-rumprun-netbsd-gcc and rumprun-bake are not on PATH); build one with `bakeoff toolchain build`"), "{err}");
}
