//! The app runs as the user its sources name (issue 13 item 3): bakeoff.toml's `user` and an
//! OCI image's `User`, on Docker and in a QEMU microVM. The app itself prints what the kernel
//! says it runs as (`getuid`, `getgid`, `getgroups`). A unit's `User=` is in deb_e2e.rs.

mod common;

use std::process::Command;

use common::*;

const WHOAMI: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) {
    gid_t g[32];
    int n = getgroups(32, g);
    printf("whoami: uid=%u euid=%u gid=%u egid=%u groups=", getuid(), geteuid(), getgid(), getegid());
    for (int i = 0; i < n; i++) printf(i ? ",%u" : "%u", g[i]);
    printf("\n");
    fflush(stdout);
    return 0;
}
"#;

fn whoami_dir(env: &Env, toml: &str) -> String {
    let dir = env.dir.path().join("whoami");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("whoami.c"), WHOAMI).unwrap();
    std::fs::write(dir.join("bakeoff.toml"), toml).unwrap();
    dir.display().to_string()
}

fn whoami_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("whoami: "))
        .unwrap_or_else(|| panic!("the app printed no whoami line: {out}"))
}

#[test]
fn bakeoff_toml_user_runs_the_app_as_that_user_on_docker_and_qemu() {
    let test = "bakeoff_toml_user_runs_the_app_as_that_user_on_docker_and_qemu";
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let app = whoami_dir(&env, "name = \"whoami\"\nuser = \"4242:4243\"\n");
    let built = env.ok(&["build", &app]);
    assert!(
        built.contains("user:     4242:4243 (uid 4242, gid 4243, from bakeoff.toml's user)"),
        "{built}"
    );
    for platform in ["docker", "qemu"] {
        let name = format!("whoami-toml-{platform}-{}", std::process::id());
        let out = env.ok(&["run", &app, "--on", platform, "--name", &name]);
        env.ok(&["rm", "-f", &name]);
        assert_eq!(
            whoami_line(&out),
            "whoami: uid=4242 euid=4242 gid=4243 egid=4243 groups=4243",
            "{platform}: {out}"
        );
    }
    // Without `user` the app runs as root, as before.
    let root = whoami_dir(&env, "name = \"whoami\"\n");
    let name = format!("whoami-root-{}", std::process::id());
    let out = env.ok(&["run", &root, "--on", "docker", "--name", &name]);
    env.ok(&["rm", "-f", &name]);
    assert!(whoami_line(&out).starts_with("whoami: uid=0 "), "{out}");
}

#[test]
fn a_user_name_the_image_does_not_know_is_one_sentence() {
    let env = Env::new();
    // A static C program's image has no /etc/passwd: a name cannot be looked up.
    let app = whoami_dir(&env, "name = \"whoami\"\nuser = \"nobody\"\n");
    let err = env.fails(&["build", &app]);
    assert!(
        err.contains(
            "bakeoff.toml's user: the user `nobody` is not in the image's /etc/passwd; add it (a \
             [[files]] entry for /etc/passwd) or give a number"
        ),
        "{err}"
    );
    let bad = whoami_dir(&env, "name = \"whoami\"\nuser = \"a b\"\n");
    let err = env.fails(&["build", &bad]);
    assert!(
        err.contains("`a b` is not a user: expected NAME, UID, NAME:GROUP or UID:GID"),
        "{err}"
    );
}

/// A FROM-scratch image whose config says `USER 4300:4301`, given as `docker:IMAGE`, runs as
/// that user on Docker and in the microVM packed from it.
#[test]
fn an_oci_image_runs_as_its_configured_user_on_docker_and_qemu() {
    let test = "an_oci_image_runs_as_its_configured_user_on_docker_and_qemu";
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let dir = env.dir.path().join("img");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("whoami.c"), WHOAMI).unwrap();
    let cc = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(dir.join("whoami"))
        .arg(dir.join("whoami.c"))
        .output()
        .unwrap();
    assert!(cc.status.success(), "{cc:?}");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY whoami /whoami\nUSER 4300:4301\nENTRYPOINT [\"/whoami\"]\n",
    )
    .unwrap();
    let tag = format!("bakeoff-e2e/whoami:{}", std::process::id());
    let out = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "docker build: {out:?}");
    let _image = RemoveImage(tag.clone());
    let app = format!("docker:{tag}");
    for platform in ["docker", "qemu"] {
        let name = format!("whoami-image-{platform}-{}", std::process::id());
        let out = env.ok(&["run", &app, "--on", platform, "--name", &name]);
        env.ok(&["rm", "-f", &name]);
        assert_eq!(
            whoami_line(&out),
            "whoami: uid=4300 euid=4300 gid=4301 egid=4301 groups=4301",
            "{platform}: {out}"
        );
    }
}

/// Removes the test's image from the engine when the test ends, passed or not.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}
