//! Push and pull through a real OCI registry: Debian's `docker-registry` (registry 2.8) started
//! on 127.0.0.1 with its own config and storage, stopped by PID afterwards.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

/// How the test registry wants clients to log in.
enum Auth {
    /// An htpasswd file's content.
    Htpasswd(String),
    /// Tokens from `realm`, signed by the key of the certificate `cert`.
    Token { realm: String, cert: PathBuf },
}

struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the registry, or None (with the reason printed) when it is not installed.
    fn start(test: &str) -> Option<Registry> {
        Registry::start_with(test, None)
    }

    /// [`Registry::start`] with htpasswd authentication (`htpasswd` is the file's content).
    fn start_with(test: &str, htpasswd: Option<&str>) -> Option<Registry> {
        Registry::start_with_auth(test, htpasswd.map(|h| Auth::Htpasswd(h.to_string())))
    }

    /// [`Registry::start`] with htpasswd or token authentication.
    fn start_with_auth(test: &str, auth: Option<Auth>) -> Option<Registry> {
        if Command::new("docker-registry")
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
                panic!("{test}: docker-registry is not installed and BAKEOFF_REQUIRE_ENGINES=1");
            }
            eprintln!(
                "SKIPPED {test}: docker-registry is not installed (run scripts/install-deps.sh)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        match auth {
            Some(Auth::Htpasswd(h)) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, h).unwrap();
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: bakeoff-test\n    path: {}\n",
                    file.display()
                ));
            }
            Some(Auth::Token { realm, cert }) => yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: bakeoff-registry\n    issuer: bakeoff-test\n    rootcertbundle: {}\n",
                cert.display()
            )),
            None => {}
        }
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("registry.err")).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Registry {
            child,
            port,
            storage,
            _dir: dir,
        })
    }

    /// The file holding the blob `digest` in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The layer digest of the pushed OCI manifest (read back from the registry's storage).
fn layer_digest(reg: &Registry, manifest_digest: &str) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.blob_file(manifest_digest)).unwrap()).unwrap();
    m["layers"][0]["digest"].as_str().unwrap().to_string()
}

fn env_with_cache(cache: &Path) -> impl Fn(&Env, &[&str]) -> std::process::Output + '_ {
    move |env: &Env, args: &[&str]| {
        let out = env
            .cmd(args)
            .env("BAKEOFF_CACHE_DIR", cache)
            .output()
            .unwrap();
        eprintln!(
            "$ bakeoff {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

#[test]
fn push_then_run_from_the_registry_on_docker_and_qemu_and_refuse_a_tampered_blob() {
    let test = "push_then_run_from_the_registry_on_docker_and_qemu_and_refuse_a_tampered_blob";
    let Some(reg) = Registry::start(test) else {
        return;
    };
    if !docker_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let env = Env::new();
    let reference = format!("127.0.0.1:{}/e2e/hello:1", reg.port);
    let out = env
        .cmd(&["push", "examples/hello", &reference, "--json"])
        .output()
        .unwrap();
    let push_err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{push_err}");
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed[0]["target"], "oci");
    assert_eq!(pushed[1]["target"], "microvm");
    assert_eq!(pushed[1]["reference"], format!("{reference}-microvm"));
    let rumprun = rumprun_or_skip(&format!("the rumprun part of {test}"));
    if rumprun {
        assert_eq!(pushed[2]["target"], "rumprun");
        assert_eq!(pushed[2]["reference"], format!("{reference}-rumprun"));
        // The Xen PV bake travels beside the QEMU one, so a Xen host without a toolchain can
        // run the unikernel it pulls.
        let manifest = Command::new("curl")
            .args([
                "-fsS",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(format!(
                "http://127.0.0.1:{}/v2/e2e/hello/manifests/1-rumprun",
                reg.port
            ))
            .output()
            .unwrap();
        let manifest = String::from_utf8_lossy(&manifest.stdout);
        assert!(
            manifest.contains("application/vnd.bakeoff.rumprun.xen-kernel.v1")
                && manifest.contains("application/vnd.bakeoff.rumprun.kernel.v1"),
            "{manifest}"
        );
    } else {
        assert_eq!(pushed.as_array().unwrap().len(), 2, "{pushed}");
        assert!(
            push_err.contains("no Rumprun unikernel pushed"),
            "{push_err}"
        );
    }
    for p in pushed.as_array().unwrap() {
        eprintln!(
            "FIGURE push {}: {} bytes in {:.2} s",
            p["target"], p["bytes"], p["seconds"]
        );
    }
    // The k8s export of the same build names the pushed image, pinned by digest.
    let k8s = env.ok(&[
        "export",
        "examples/hello",
        "--format",
        "k8s",
        "--on",
        "qemu",
    ]);
    assert!(
        k8s.contains(&format!(
            "\"image\": \"{reference}@{}\"",
            pushed[0]["digest"].as_str().unwrap()
        )),
        "{k8s}"
    );
    // The microVM artifact: its own type, urunc's annotations, kernel + initramfs + run config,
    // and the digest of the container image pushed with it.
    let vm: serde_json::Value = serde_json::from_slice(
        &std::fs::read(reg.blob_file(pushed[1]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(vm["artifactType"], "application/vnd.bakeoff.microvm.v1");
    assert_eq!(
        vm["annotations"]["com.urunc.unikernel.unikernelType"],
        "linux"
    );
    assert_eq!(
        vm["annotations"]["dev.bakeoff.oci-manifest"],
        pushed[0]["digest"]
    );
    assert_eq!(vm["layers"].as_array().unwrap().len(), 3);
    let sizes: u64 = vm["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(pushed[1]["bytes"].as_u64().unwrap() > sizes);
    // It names the guest kernel's config, and its timer rate when the kernel is bakeoff's
    // minimal one (which takes `lapic_timer_period=`), so a pull boots like the push.
    let shown = env.ok(&["kernel", "show", "examples/hello"]);
    let config = shown
        .lines()
        .find_map(|l| l.strip_prefix("config: sha256:"))
        .unwrap_or_else(|| panic!("no config line in {shown}"));
    assert_eq!(
        vm["annotations"]["dev.bakeoff.kernel-config"].as_str(),
        (config != "unknown").then_some(config),
        "{shown}"
    );
    let minimal = shown.contains("kernel: minimal ");
    let timer_hz = vm["annotations"]["dev.bakeoff.kernel-timer-hz"].as_str();
    assert_eq!(timer_hz, minimal.then_some("100"), "{shown}");
    // Its kernel layer is the image's compressed kernel (the bzImage `kernel show` names, a
    // third of the vmlinux); a pull extracts the vmlinux that the microVM below boots.
    let bz_bytes: u64 = shown
        .lines()
        .find_map(|l| l.strip_prefix("bzImage: "))
        .and_then(|l| l.rsplit_once(" ("))
        .and_then(|(_, n)| n.trim_end_matches(" bytes)").parse().ok())
        .unwrap_or_else(|| panic!("no bzImage line in {shown}"));
    let kernel_layer = &vm["layers"][0];
    assert_eq!(
        kernel_layer["annotations"]["org.opencontainers.image.title"],
        "bzImage"
    );
    assert_eq!(
        kernel_layer["size"].as_u64(),
        Some(bz_bytes),
        "{kernel_layer}"
    );
    assert_eq!(vm["annotations"]["com.urunc.unikernel.binary"], "/bzImage");

    // A fresh cache: nothing local, everything comes from the registry; each platform boots
    // what was pushed for it.
    let cache = tempfile::tempdir().unwrap();
    let run = env_with_cache(cache.path());
    // Docker keeps the pulled image under REF's name; removed at the end.
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
        }
    }
    let _untag = Untag(reference.clone());
    let mut platforms = vec![("docker", 30, 0), ("qemu", 120, 1)];
    if rumprun {
        platforms.push(("rumprun", 60, 2));
    }
    for (platform, limit, index) in platforms {
        let port = free_port();
        let name = format!("e2e-reg-{platform}-{port}");
        let out = run(
            &env,
            &[
                "run",
                &reference,
                "--on",
                platform,
                "-d",
                "--name",
                &name,
                "-p",
                &format!("127.0.0.1:{port}:8080"),
                "-e",
                "GREETING=pulled",
            ],
        );
        let _cleanup = Cleanup(&env, name.clone());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("digests verified"), "{err}");
        for line in err.lines().filter(|l| l.contains("digests verified")) {
            eprintln!("FIGURE {platform}: {line}");
        }
        let body = wait_http(port, Duration::from_secs(limit));
        assert!(body.contains("greeting=pulled"), "{body}");
        assert!(body.contains(&format!("host={name}")), "{body}");
        if platform == "qemu" {
            // The pulled image kept the timer hint: QEMU passes the rate to the minimal kernel.
            let pids = qemu_pids(&name);
            assert_eq!(pids.len(), 1, "{pids:?}");
            let cmd = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
            let cmd = String::from_utf8_lossy(&cmd);
            assert_eq!(cmd.contains(" lapic_timer_period="), minimal, "{cmd}");
        }
        // The instance runs the pushed image: its digest is the one the push printed.
        let ps: serde_json::Value =
            serde_json::from_slice(&run(&env, &["ps", "--json"]).stdout).unwrap();
        let row = ps
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in ps: {ps}"))
            .clone();
        assert_eq!(row["image_digest"], pushed[index]["digest"], "{row}");
    }
    // Nothing was packed here: no guest kernel fetched, no microVM image written.
    assert!(
        !cache.path().join("kernels").exists(),
        "a kernel was fetched although the pushed one was pulled"
    );
    assert!(!cache.path().join("images/microvm").exists());
    assert!(cache.path().join("pulled/microvm").is_dir());

    // Tamper with the layer in the registry's storage: the pull refuses it.
    let layer = layer_digest(&reg, pushed[0]["digest"].as_str().unwrap());
    let file = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = env_with_cache(fresh.path())(&env, &["build", &reference]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("digest mismatch for blob {layer}")),
        "{err}"
    );
    assert!(err.contains("the download is refused"), "{err}");
}

struct Cleanup<'a>(&'a Env, String);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd(&["rm", "-f", &self.1]).output();
    }
}

#[test]
fn registry_down_and_unknown_reference_are_one_sentence() {
    let test = "registry_down_and_unknown_reference_are_one_sentence";
    let env = Env::new();
    let down = format!("127.0.0.1:{}/hello:1", free_port());
    let err = env.fails(&["build", &down]);
    assert!(
        err.contains("does not answer") && err.contains("is it running?"),
        "{err}"
    );
    let Some(reg) = Registry::start(test) else {
        return;
    };
    let unknown = format!("127.0.0.1:{}/never/pushed:1", reg.port);
    let err = env.fails(&["build", &unknown]);
    assert!(err.contains("has no manifest never/pushed:1"), "{err}");
}

/// Standard base64 (the Docker config file's `auth`).
fn base64(data: &[u8]) -> String {
    base64_with(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
    )
}

/// base64url without padding (JWT).
fn base64url(data: &[u8]) -> String {
    base64_with(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    )
}

fn base64_with(data: &[u8], alphabet: &[u8], pad: bool) -> String {
    let a = alphabet;
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(a[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn push_and_pull_log_in_with_the_docker_config_file() {
    let test = "push_and_pull_log_in_with_the_docker_config_file";
    // Registry 2.8 takes bcrypt htpasswd entries only, and serves them over plain HTTP.
    let entry = format!("alice:{}\n", bcrypt::hash("s3cret", 4).unwrap());
    let Some(reg) = Registry::start_with(test, Some(&entry)) else {
        return;
    };
    let env = Env::new();
    let registry = format!("127.0.0.1:{}", reg.port);
    let reference = format!("{registry}/e2e/private:1");
    let config = |user_pass: Option<&str>| {
        let dir = env.dir.path().join(format!("docker-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(up) = user_pass {
            std::fs::write(
                dir.join("config.json"),
                serde_json::json!({"auths": {(registry.clone()): {"auth": base64(up.as_bytes())}}})
                    .to_string(),
            )
            .unwrap();
        }
        dir
    };
    let bakeoff = |docker_config: &Path, cache: Option<&Path>, args: &[&str]| {
        let mut cmd = env.cmd(args);
        cmd.env("DOCKER_CONFIG", docker_config);
        if let Some(c) = cache {
            cmd.env("BAKEOFF_CACHE_DIR", c);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // No credentials: one sentence naming the file and `docker login`.
    let none = config(None);
    let (ok, _, err) = bakeoff(&none, None, &["push", "examples/hello", &reference]);
    assert!(!ok);
    let expected = format!(
        "the registry at {registry} needs a login and {} holds no credentials for it; log in with `docker login {registry}`",
        none.join("config.json").display()
    );
    assert!(err.trim_end().ends_with(&expected), "{err}");

    // A wrong password: one sentence.
    let wrong = config(Some("alice:not-it"));
    let (ok, _, err) = bakeoff(&wrong, None, &["push", "examples/hello", &reference]);
    assert!(!ok);
    let expected = format!(
        "the registry at {registry} refused the password of `alice` from {}; check it with `docker login {registry}`",
        wrong.join("config.json").display()
    );
    assert!(err.trim_end().ends_with(&expected), "{err}");

    // The right one: push, then pull into a fresh cache (digests verified).
    let right = config(Some("alice:s3cret"));
    let (ok, out, err) = bakeoff(&right, None, &["push", "examples/hello", &reference]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{reference}-microvm")), "{out}");
    let fresh = tempfile::tempdir().unwrap();
    let (ok, out, err) = bakeoff(
        &right,
        Some(fresh.path()),
        &["build", &reference, "--target", "oci"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("digests verified"), "{err}");
    assert!(out.contains("oci"), "{out}");
    // And the registry does refuse an anonymous pull (the login was needed).
    let (ok, _, err) = bakeoff(&none, Some(fresh.path()), &["build", &reference]);
    assert!(!ok && err.contains("needs a login"), "{err}");
}

#[test]
fn an_image_for_another_architecture_in_the_registry_is_one_sentence() {
    let test = "an_image_for_another_architecture_in_the_registry_is_one_sentence";
    let Some(reg) = Registry::start(test) else {
        return;
    };
    let registry = format!("127.0.0.1:{}", reg.port);
    // An arm64 image (config + one empty layer) as a plain manifest, and in an index.
    let digest = |b: &[u8]| bakeoff_registry::digest_of(b);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "arm64", "os": "linux", "config": {"Entrypoint": ["/app"]},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": []
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest),
                       "size": manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}}]
    }))
    .unwrap();
    let client = bakeoff_registry::Client::new(&registry);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            client
                .push_blob("e2e/arm", bytes::Bytes::from(config))
                .await
                .unwrap();
            let m = "application/vnd.oci.image.manifest.v1+json";
            client
                .push_manifest("e2e/arm", "plain", m, bytes::Bytes::from(manifest.clone()))
                .await
                .unwrap();
            client
                .push_manifest(
                    "e2e/arm",
                    &digest(&manifest),
                    m,
                    bytes::Bytes::from(manifest),
                )
                .await
                .unwrap();
            client
                .push_manifest(
                    "e2e/arm",
                    "multi",
                    "application/vnd.oci.image.index.v1+json",
                    bytes::Bytes::from(index),
                )
                .await
                .unwrap();
        });
    let env = Env::new();
    let err = env.fails(&["build", &format!("{registry}/e2e/arm:multi")]);
    assert!(
        err.trim_end().ends_with(&format!(
            "the registry at {registry} has no linux/amd64 image in the index e2e/arm:multi"
        )),
        "{err}"
    );
    let err = env.fails(&["build", &format!("{registry}/e2e/arm:plain")]);
    assert!(
        err.contains("the image is for linux/arm64; this host runs linux/amd64 images"),
        "{err}"
    );
    assert_eq!(err.matches("arm64").count(), 1, "{err}");
}

#[test]
fn a_unikernel_pushed_beside_the_image_makes_rumprun_runnable() {
    let test = "a_unikernel_pushed_beside_the_image_makes_rumprun_runnable";
    let Some(reg) = Registry::start(test) else {
        return;
    };
    let env = Env::new();
    let registry = format!("127.0.0.1:{}", reg.port);
    let reference = format!("{registry}/e2e/uk:1");
    let pushed: serde_json::Value =
        serde_json::from_str(&env.ok(&["push", "examples/hello", &reference, "--json"])).unwrap();
    let rumprun = |check: &serde_json::Value| {
        check["platforms"]
            .as_array()
            .or(check.as_array())
            .into_iter()
            .flatten()
            .find(|v| v["platform"] == "rumprun")
            .cloned()
            .unwrap_or_else(|| panic!("no rumprun verdict in {check}"))
    };
    // The container image alone: prebuilt binaries, so no unikernel.
    let check: serde_json::Value =
        serde_json::from_str(&env.ok(&["check", &reference, "--json"])).unwrap();
    if !rumprun_toolchain_present() {
        assert_eq!(rumprun(&check)["runnable"], false, "{check}");
    }
    // A Rumprun artifact of the same push (made by hand here: no toolchain in CI).
    use bakeoff_registry::artifact as art;
    let uk = art::artifact(
        art::RUMPRUN_ARTIFACT,
        vec![
            art::Layer {
                media_type: art::RUMPRUN_KERNEL,
                title: "kernel",
                data: bytes::Bytes::from_static(b"not really a unikernel"),
            },
            art::Layer {
                media_type: art::RUMPRUN_CONFIG,
                title: "rumprun.json",
                data: bytes::Bytes::from_static(br#"{"argv0":"hello"}"#),
            },
        ],
        art::rumprun_annotations(
            "hello",
            "x",
            "kernel",
            "hello",
            pushed[0]["digest"].as_str().unwrap(),
        ),
    );
    let client = bakeoff_registry::Client::new(&registry);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            for b in uk.blobs {
                client.push_blob("e2e/uk", b).await.unwrap();
            }
            client
                .push_manifest("e2e/uk", "1-rumprun", art::OCI_MANIFEST, uk.manifest)
                .await
                .unwrap();
        });
    let check: serde_json::Value =
        serde_json::from_str(&env.ok(&["check", &reference, "--json"])).unwrap();
    let v = rumprun(&check);
    assert_eq!(v["runnable"], true, "{check}");
    assert!(
        v["reasons"][0].as_str().unwrap().contains(&format!(
            "was pushed beside the image ({reference}-rumprun)"
        )),
        "{v}"
    );
}

/// A token service as registries use (Docker's token auth): Basic credentials in, a JWT out,
/// RS256-signed with `openssl dgst` by the key whose self-signed certificate the registry
/// trusts (sent in the `x5c` header). Serves until the returned flag is set.
fn token_service(
    dir: &Path,
    user: &str,
    password: &str,
) -> (
    String,
    PathBuf,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{Read, Write};
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bakeoff-test-token",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .unwrap()
        .stdout;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
    let x5c = base64(&der);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !stopped.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
            let Ok((mut sock, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            sock.set_nonblocking(false).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_lowercase();
            let authorized = head
                .lines()
                .any(|l| l.trim() == format!("authorization: {}", expected.to_lowercase()));
            let (status, body) = if authorized {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": "bakeoff-test", "sub": "alice", "aud": "bakeoff-registry",
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}"),
                    "access": [{"type": "repository", "name": "e2e/tok", "actions": ["pull", "push"]}]
                });
                let input = format!(
                    "{}.{}",
                    base64url(header.to_string().as_bytes()),
                    base64url(claims.to_string().as_bytes())
                );
                let mut sign = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                sign.stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                let sig = sign.wait_with_output().unwrap().stdout;
                let token = format!("{input}.{}", base64url(&sig));
                ("200 OK", serde_json::json!({"token": token}).to_string())
            } else {
                ("401 Unauthorized", "{}".to_string())
            };
            let _ = write!(
                sock,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (realm, cert, stop)
}

#[test]
fn push_and_pull_through_a_bearer_token_service() {
    let test = "push_and_pull_through_a_bearer_token_service";
    if Command::new("openssl").arg("version").output().is_err() {
        if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
            panic!("{test}: openssl is not installed and BAKEOFF_REQUIRE_ENGINES=1");
        }
        eprintln!("SKIPPED {test}: openssl is not installed (run scripts/install-deps.sh)");
        return;
    }
    let env = Env::new();
    let (realm, cert, stop) = token_service(env.dir.path(), "alice", "s3cret");
    struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let _stop = Stop(stop);
    let Some(reg) = Registry::start_with_auth(test, Some(Auth::Token { realm, cert })) else {
        return;
    };
    let registry = format!("127.0.0.1:{}", reg.port);
    let reference = format!("{registry}/e2e/tok:1");
    let config = |user_pass: &str| {
        let dir = env.dir.path().join(format!("docker-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::json!({"auths": {(registry.clone()): {"auth": base64(user_pass.as_bytes())}}})
                .to_string(),
        )
        .unwrap();
        dir
    };
    let run = |docker_config: &Path, args: &[&str]| {
        let out = env
            .cmd(args)
            .env("DOCKER_CONFIG", docker_config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let wrong = config("alice:nope");
    let (ok, err) = run(&wrong, &["push", "examples/hello", &reference]);
    assert!(!ok);
    assert!(
        err.trim_end().ends_with(&format!(
            "the registry at {registry} refused the password of `alice` from {}; check it with `docker login {registry}`",
            wrong.join("config.json").display()
        )),
        "{err}"
    );
    let right = config("alice:s3cret");
    let (ok, err) = run(&right, &["push", "examples/hello", &reference]);
    assert!(ok, "{err}");
    let (ok, err) = run(&right, &["build", &reference, "--target", "oci"]);
    assert!(ok, "{err}");
    assert!(err.contains("digests verified"), "{err}");
}
