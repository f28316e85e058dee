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
