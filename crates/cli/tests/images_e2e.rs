//! OCI images as input, end to end: a FROM-scratch image of the example built by the local
//! engine, saved with `docker save` and run in a microVM; the same image by `docker:IMAGE` on
//! Docker; and hand-made OCI layout tarballs for the inputs bakeoff must refuse.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

/// Builds the example statically and makes a FROM-scratch image of it with the engine's
/// builder; returns the tag (removed by the returned guard).
struct EngineImage {
    tag: String,
    dir: tempfile::TempDir,
}

impl EngineImage {
    fn build() -> EngineImage {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("gcc")
            .args(["-O2", "-static", "-o"])
            .arg(dir.path().join("hello"))
            .arg(repo_root().join("examples/hello/hello.c"))
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY hello /srv/hello\nWORKDIR /srv\nENV GREETING=from-the-image\nEXPOSE 8080/tcp\nENTRYPOINT [\"/srv/hello\"]\nCMD [\"image-cmd\"]\n",
        )
        .unwrap();
        let tag = format!("bakeoff-e2e/imported:{}", free_port());
        let out = Command::new("docker")
            .args(["build", "-q", "-t", &tag])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        EngineImage { tag, dir }
    }

    fn save(&self) -> PathBuf {
        let path = self.dir.path().join("hello.tar");
        let ok = Command::new("docker")
            .args(["save", "-o"])
            .arg(&path)
            .arg(&self.tag)
            .status()
            .unwrap();
        assert!(ok.success());
        path
    }
}

impl Drop for EngineImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

#[test]
fn docker_save_tarball_runs_in_a_microvm_with_the_image_config() {
    let test = "docker_save_tarball_runs_in_a_microvm_with_the_image_config";
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let image = EngineImage::build();
    let archive = format!("oci-archive:{}", image.save().display());
    let env = Env::new();
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["detect", &archive, "--json"])).unwrap();
    assert_eq!(plan["command"], serde_json::json!(["/srv/hello"]));
    assert_eq!(plan["args"], serde_json::json!(["image-cmd"]));
    assert_eq!(plan["ports"], serde_json::json!([8080]));
    assert_eq!(plan["workdir"], "/srv");
    // The check reads the entrypoint's ELF: static, so a microVM can run it; Rumprun cannot.
    let check = env.ok(&["check", &archive]);
    assert!(check.contains("/srv/hello (x86_64, static)"), "{check}");

    let port = free_port();
    let name = format!("e2e-img-qemu-{port}");
    env.ok(&[
        "run",
        &archive,
        "--on",
        "qemu",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
    ]);
    let body = wait_http(port, Duration::from_secs(120));
    assert!(body.contains("greeting=from-the-image"), "{body}");
    assert!(body.contains("args=image-cmd"), "{body}");
    assert!(body.contains(&format!("host={name}")), "{body}");
}

#[test]
fn docker_image_from_the_local_engine_runs_on_docker() {
    let test = "docker_image_from_the_local_engine_runs_on_docker";
    if !docker_or_skip(test) {
        return;
    }
    let image = EngineImage::build();
    let env = Env::new();
    let port = free_port();
    let name = format!("e2e-img-docker-{port}");
    let app = format!("docker:{}", image.tag);
    env.ok(&[
        "run",
        &app,
        "--on",
        "docker",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "--",
        "given-arg",
    ]);
    let body = wait_http(port, Duration::from_secs(30));
    assert!(body.contains("greeting=from-the-image"), "{body}");
    assert!(body.contains("args=given-arg"), "{body}");
    let err = env.fails(&["build", "docker:bakeoff-e2e/never-built:none"]);
    assert!(
        err.contains("holds no image named `bakeoff-e2e/never-built:none`"),
        "{err}"
    );
}

/// An OCI image layout tarball with one gzip layer holding `files`.
fn oci_layout(dir: &Path, arch: &str, entrypoint: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        layer.append_data(&mut h, name, *data).unwrap();
    }
    let raw = layer.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let layer = gz.finish().unwrap();
    let digest = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Entrypoint": [entrypoint], "ExposedPorts": {"8080/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": [digest(&raw)]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}]
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
                       "platform": {"architecture": arch, "os": "linux"}}]
    }))
    .unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&config, &manifest, &layer] {
        add(&format!("blobs/sha256/{}", &digest(blob)[7..]), blob);
    }
    let path = dir.join(format!("{arch}.tar"));
    std::fs::write(&path, out.into_inner().unwrap()).unwrap();
    path
}

#[test]
fn bad_images_are_refused_with_one_sentence() {
    let env = Env::new();
    let dir = env.dir.path();
    let hello = std::fs::read("/bin/true").unwrap();

    let arm = oci_layout(dir, "arm64", "/app", &[("app", &hello)]);
    let err = env.fails(&["build", &format!("oci-archive:{}", arm.display())]);
    assert!(
        err.contains("holds no linux/amd64 image (only linux/arm64)"),
        "{err}"
    );

    let missing = oci_layout(dir, "amd64", "/srv/missing", &[("app", &hello)]);
    let err = env.fails(&["build", &format!("oci-archive:{}", missing.display())]);
    assert!(
        err.contains("its entrypoint `/srv/missing` does not exist in its layers"),
        "{err}"
    );

    let not_image = dir.join("plain.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_cksum();
    b.append_data(&mut h, "readme", &b"hi"[..]).unwrap();
    std::fs::write(&not_image, b.into_inner().unwrap()).unwrap();
    let err = env.fails(&["build", &format!("oci-archive:{}", not_image.display())]);
    assert!(err.contains("it is not an image archive"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // An OCI layout whose layer is fine runs the checks through to an artifact.
    let good = oci_layout(dir, "amd64", "/app", &[("app", &hello)]);
    let out = env.ok(&[
        "build",
        &format!("oci-archive:{}", good.display()),
        "--target",
        "oci",
    ]);
    assert!(out.contains("oci"), "{out}");
}

/// Unpacks an OCI layout tarball into `dir` (what `oci:DIR` reads).
fn unpack(tarball: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    tar::Archive::new(std::fs::File::open(tarball).unwrap())
        .unpack(dir)
        .unwrap();
}

#[test]
fn oci_layout_directory_runs_on_docker() {
    let test = "oci_layout_directory_runs_on_docker";
    if !docker_or_skip(test) {
        return;
    }
    let env = Env::new();
    let dir = env.dir.path();
    let bin = dir.join("hello");
    let ok = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(repo_root().join("examples/hello/hello.c"))
        .status()
        .unwrap();
    assert!(ok.success());
    let tarball = oci_layout(
        dir,
        "amd64",
        "/app",
        &[("app", &std::fs::read(&bin).unwrap())],
    );
    let layout = dir.join("layout");
    unpack(&tarball, &layout);
    let app = format!("oci:{}", layout.display());
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["detect", &app, "--json"])).unwrap();
    assert_eq!(plan["command"], serde_json::json!(["/app"]));
    assert_eq!(plan["ports"], serde_json::json!([8080]));
    let port = free_port();
    let name = format!("e2e-ocidir-{port}");
    env.ok(&[
        "run",
        &app,
        "--on",
        "docker",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-e",
        "GREETING=from-a-layout-dir",
    ]);
    let body = wait_http(port, Duration::from_secs(30));
    assert!(body.contains("greeting=from-a-layout-dir"), "{body}");
    assert!(body.contains(&format!("host={name}")), "{body}");
}

#[test]
fn bad_layout_directories_are_refused_with_one_sentence() {
    let env = Env::new();
    let dir = env.dir.path();
    let one_line = |err: &str| assert_eq!(err.trim().lines().count(), 1, "{err}");

    let err = env.fails(&["build", "oci:"]);
    assert!(
        err.contains("`oci:` needs an OCI image layout directory"),
        "{err}"
    );
    one_line(&err);

    let err = env.fails(&["build", "oci:/nonexistent/layout"]);
    assert!(err.contains("/nonexistent/layout does not exist"), "{err}");
    one_line(&err);

    // A tarball given as a directory: says which prefix reads it.
    let hello = std::fs::read("/bin/true").unwrap();
    let tarball = oci_layout(dir, "amd64", "/app", &[("app", &hello)]);
    let err = env.fails(&["build", &format!("oci:{}", tarball.display())]);
    assert!(
        err.contains("is not a directory") && err.contains("oci-archive:"),
        "{err}"
    );
    one_line(&err);

    // A directory that is not a layout (an app's sources).
    let src = repo_root().join("examples/hello");
    let err = env.fails(&["build", &format!("oci:{}", src.display())]);
    assert!(
        err.contains("cannot be used as an image: it is not an OCI image layout directory"),
        "{err}"
    );
    one_line(&err);

    // A layout whose blob is a symlink to a file elsewhere: not followed, so not held.
    let layout = dir.join("linked");
    unpack(&tarball, &layout);
    let blobs = layout.join("blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap().starts_with(b"{\"architecture\""))
        .expect("the config blob");
    let outside = dir.join("outside.json");
    std::fs::rename(&victim, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &victim).unwrap();
    let err = env.fails(&["build", &format!("oci:{}", layout.display())]);
    assert!(err.contains("which it does not hold"), "{err}");
    one_line(&err);

    // The same layout, intact, builds.
    let good = dir.join("good");
    unpack(&tarball, &good);
    let out = env.ok(&[
        "build",
        &format!("oci:{}", good.display()),
        "--target",
        "oci",
    ]);
    assert!(out.contains("oci"), "{out}");
}
