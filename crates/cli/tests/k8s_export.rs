//! `export --format k8s --on PLATFORM` validated offline against the Kubernetes 1.32 schemas
//! with `kubernetes-validate` (PyPI) in strict mode; skipped with a reason when it is absent.

mod common;

use std::process::Command;

use common::*;

#[test]
fn k8s_export_for_each_platform_validates_against_kubernetes_1_32() {
    let env = Env::new();
    for (platform, class) in [
        ("docker", None),
        ("qemu", Some("kata-qemu")),
        ("firecracker", Some("kata-fc")),
        ("rumprun", Some("urunc")),
    ] {
        let text = env.ok(&[
            "export",
            "examples/hello",
            "--format",
            "k8s",
            "--on",
            platform,
            "-m",
            "64M",
        ]);
        let docs: Vec<serde_json::Value> = text
            .split("\n---\n")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        match class {
            Some(c) => {
                assert_eq!(kinds, ["RuntimeClass", "Deployment", "Service"]);
                assert_eq!(docs[0]["handler"], c);
                assert_eq!(docs[1]["spec"]["template"]["spec"]["runtimeClassName"], c);
            }
            None => assert_eq!(kinds, ["Deployment", "Service"]),
        }
        let deployment = &docs[kinds.iter().position(|k| *k == "Deployment").unwrap()];
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
        assert!(deployment["metadata"]["annotations"]["bakeoff.dev/check"]
            .as_str()
            .unwrap()
            .starts_with(platform));

        let file = env.dir.path().join(format!("{platform}.yaml"));
        std::fs::write(&file, &text).unwrap();
        match Command::new("python3")
            .args(["-m", "kubernetes_validate", "-k", "1.32.0", "--strict"])
            .arg(&file)
            .output()
        {
            Ok(out) if !String::from_utf8_lossy(&out.stderr).contains("No module named") => {
                assert!(
                    out.status.success(),
                    "{platform}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            }
            _ => {
                let why = "kubernetes-validate is not installed (python3 -m pip install kubernetes-validate)";
                if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
                    panic!("{platform}: schema validation needs it and BAKEOFF_REQUIRE_ENGINES=1: {why}");
                }
                eprintln!("SKIPPED schema validation: {why}");
            }
        }
    }
}

/// Validates `text` with kubernetes-validate (Kubernetes 1.32, strict), or says why it cannot.
fn validate(env: &Env, what: &str, text: &str) {
    let file = env.dir.path().join(format!("{what}.yaml"));
    std::fs::write(&file, text).unwrap();
    match Command::new("python3")
        .args(["-m", "kubernetes_validate", "-k", "1.32.0", "--strict"])
        .arg(&file)
        .output()
    {
        Ok(out) if !String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            assert!(
                out.status.success(),
                "{what}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }
        _ => {
            let why =
                "kubernetes-validate is not installed (python3 -m pip install kubernetes-validate)";
            if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
                panic!("{what}: schema validation needs it and BAKEOFF_REQUIRE_ENGINES=1: {why}");
            }
            eprintln!("SKIPPED schema validation: {why}");
        }
    }
}

/// A bench report as `bakeoff bench` writes it (the fields placement reads, and more).
fn report(recommended: Option<&str>) -> String {
    serde_json::json!({
        "schema_version": 3, "tool_version": "0.1.0", "created": "2026-12-01T17:00:00Z",
        "app": {"name": "hello", "input": "examples/hello", "artifact_id": null},
        "policy": "isolation",
        "platforms": [
            {"platform": "docker", "status": {"kind": "measured"},
             "memory": {"host_bytes": {"median": 1_572_864.0, "min": 1.4e6, "max": 1.7e6, "mean": 1.5e6, "samples": []}}},
            {"platform": "qemu", "status": {"kind": "measured"},
             "memory": {"host_bytes": {"median": 2.28e8, "min": 2.0e8, "max": 2.3e8, "mean": 2.2e8, "samples": []},
                        "guest_bytes": {"median": 25_480_396.0, "min": 2.4e7, "max": 26_214_400.0, "mean": 2.5e7, "samples": []}}}
        ],
        "recommendation": {"platform": recommended, "policy": "isolation",
            "reasons": ["qemu isolates the app in its own kernel.", "It starts in 4.5 s (emulated TCG)."],
            "ranking": []}
    })
    .to_string()
}

#[test]
fn k8s_export_from_a_bench_report_places_sizes_and_explains() {
    let env = Env::new();
    let file = env.dir.path().join("report.json");
    std::fs::write(&file, report(Some("qemu"))).unwrap();
    let report_arg = file.display().to_string();
    let text = env.ok(&[
        "export",
        "examples/hello",
        "--format",
        "k8s",
        "--from-report",
        &report_arg,
        "--image",
        "127.0.0.1:5000/team/hello:1",
    ]);
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["RuntimeClass", "Deployment", "Service"]);
    assert_eq!(docs[0]["handler"], "kata-qemu");
    let pod = &docs[1]["spec"]["template"]["spec"];
    assert_eq!(pod["runtimeClassName"], "kata-qemu");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "127.0.0.1:5000/team/hello:1");
    assert_eq!(c["resources"]["requests"]["memory"], "25Mi");
    assert_eq!(c["resources"]["limits"]["memory"], "50Mi");
    let notes = &docs[1]["metadata"]["annotations"];
    assert_eq!(
        notes["bakeoff.dev/recommendation"],
        "qemu (policy isolation)"
    );
    assert_eq!(
        notes["bakeoff.dev/reasons"],
        "qemu isolates the app in its own kernel. It starts in 4.5 s (emulated TCG)."
    );
    assert!(notes["bakeoff.dev/measured-memory"]
        .as_str()
        .unwrap()
        .contains("guest-reported, on qemu"));
    validate(&env, "from-report", &text);

    // --memory wins over the measured figure.
    let text = env.ok(&[
        "export",
        "examples/hello",
        "--format",
        "k8s",
        "--from-report",
        &report_arg,
        "-m",
        "96M",
    ]);
    assert!(text.contains("\"memory\": \"96Mi\""), "{text}");

    // Bad input: one sentence each.
    let err = env.fails(&[
        "export",
        "examples/hello",
        "--format",
        "k8s",
        "--from-report",
        &report_arg,
        "--on",
        "docker",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    std::fs::write(&file, report(None)).unwrap();
    let err = env.fails(&[
        "export",
        "examples/hello",
        "--format",
        "k8s",
        "--from-report",
        &report_arg,
    ]);
    assert!(
        err.contains("report.json: the report recommends no platform for hello"),
        "{err}"
    );
    // One sentence, after the build's progress lines.
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.ends_with("It starts in 4.5 s (emulated TCG).)"),
        "{err}"
    );
    assert_eq!(err.matches("recommends").count(), 1, "{err}");
    std::fs::write(&file, "{}").unwrap();
    let err = env.fails(&[
        "export",
        "examples/hello",
        "--format",
        "k8s",
        "--from-report",
        &report_arg,
    ]);
    assert!(err.contains("not a bakeoff bench report"), "{err}");
    let err = env.fails(&[
        "export",
        "examples/hello",
        "--format",
        "k8s",
        "--from-report",
        "/nonexistent/report.json",
    ]);
    assert!(err.contains("/nonexistent/report.json"), "{err}");
}
