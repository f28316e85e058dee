//! `bakeoff export --format k8s`: a Kubernetes Pod for the OCI image (as JSON, which kubectl
//! accepts like YAML). The image must be loaded into the cluster's runtime or pushed to its
//! registry; bakeoff never pulls.

use bakeoff_spec::{Protocol, RunOptions, Target};
use serde_json::{json, Value};

use crate::{Image, LaunchError};

pub fn render_pod(
    image: &Image,
    opts: &RunOptions,
    name: &str,
    ports: &[u16],
) -> Result<Value, LaunchError> {
    if image.target != Target::Oci {
        return Err(LaunchError::WrongImage(format!(
            "a Kubernetes pod runs an OCI image, not a {} image",
            image.target
        )));
    }
    let reference = image.reference.clone().ok_or(LaunchError::NoReference)?;
    let mut container_ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({ "containerPort": p, "protocol": "TCP" }))
        .collect();
    for p in &opts.publish {
        if !ports.contains(&p.guest_port) {
            let proto = if p.protocol == Protocol::Udp {
                "UDP"
            } else {
                "TCP"
            };
            container_ports.push(json!({ "containerPort": p.guest_port, "protocol": proto }));
        }
    }
    let mut limits = serde_json::Map::new();
    if let Some(m) = opts.memory {
        limits.insert("memory".into(), json!(format!("{}Mi", m.div_ceil(1 << 20))));
    }
    if let Some(c) = opts.cpus {
        limits.insert(
            "cpu".into(),
            json!(format!("{}m", (c * 1000.0).round() as u64)),
        );
    }
    let mut container = json!({
        "name": name,
        "image": reference,
        "imagePullPolicy": "Never",
        "ports": container_ports,
        "env": opts.env.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect::<Vec<_>>(),
    });
    if !opts.args.is_empty() {
        container["args"] = json!(opts.args);
    }
    if !limits.is_empty() {
        container["resources"] = json!({ "limits": limits, "requests": limits });
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": { "app.kubernetes.io/name": image.name, "app.kubernetes.io/managed-by": "bakeoff" },
            "annotations": { "bakeoff.dev/image-digest": image.digest },
        },
        "spec": { "containers": [container] },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_for_the_example() {
        let image = Image {
            target: Target::Oci,
            name: "hello".into(),
            artifact_id: "a".repeat(64),
            digest: "sha256:".to_string() + &"b".repeat(64),
            dir: "/cache/images/oci/a".into(),
            files: Default::default(),
            size_bytes: 783_360,
            compressed_bytes: 338_000,
            reference: Some("bakeoff/hello:aaaaaaaaaaaa".into()),
            details: Default::default(),
        };
        let opts = RunOptions {
            env: vec![("GREETING".into(), "hi".into())],
            memory: Some(64 << 20),
            cpus: Some(0.5),
            args: vec!["a".into()],
            ..Default::default()
        };
        insta::assert_snapshot!(serde_json::to_string_pretty(
            &render_pod(&image, &opts, "web", &[8080]).unwrap()
        )
        .unwrap());
        let mut vm = image.clone();
        vm.target = Target::MicroVm;
        assert_eq!(
            render_pod(&vm, &opts, "web", &[]).unwrap_err().to_string(),
            "a Kubernetes pod runs an OCI image, not a microvm image"
        );
    }
}
