//! `bakeoff export --format k8s --on PLATFORM`: a Deployment + Service for the OCI image, and,
//! for a VM or unikernel platform, the RuntimeClass that makes the cluster run it there —
//! Kata Containers' `kata-qemu` / `kata-fc` for the microVM platforms, urunc for unikernels.
//! Built from k8s-openapi's typed structs (Kubernetes 1.32), never from hand-written JSON.

use std::collections::BTreeMap;

use bakeoff_spec::{Platform, RunOptions, Target};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::{Image, LaunchError};

/// The RuntimeClass (name = handler) a platform needs in a cluster; none for the container.
pub fn runtime_class(platform: Platform) -> Option<&'static str> {
    match platform {
        Platform::Docker => None,
        Platform::Qemu | Platform::Xen => Some("kata-qemu"),
        Platform::Firecracker => Some("kata-fc"),
        Platform::Rumprun => Some("urunc"),
    }
}

/// Memory the container asks for and may not exceed, in bytes (each rounded up to MiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub request: Option<u64>,
    pub limit: Option<u64>,
}

/// The objects, in the order `kubectl apply` wants them (RuntimeClass first); `--memory` is
/// both the request and the limit.
pub fn render_deployment(
    image: &Image,
    opts: &RunOptions,
    name: &str,
    ports: &[u16],
    platform: Platform,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<Value>, LaunchError> {
    let memory = Memory {
        request: opts.memory,
        limit: opts.memory,
    };
    render_deployment_with(image, opts, name, ports, platform, annotations, memory)
}

/// [`render_deployment`] with a memory request and limit of their own (e.g. from a bench
/// report's measured memory).
pub fn render_deployment_with(
    image: &Image,
    opts: &RunOptions,
    name: &str,
    ports: &[u16],
    platform: Platform,
    annotations: &BTreeMap<String, String>,
    memory: Memory,
) -> Result<Vec<Value>, LaunchError> {
    if image.target != Target::Oci {
        return Err(LaunchError::WrongImage(format!(
            "a Kubernetes Deployment runs an OCI image, not a {} image",
            image.target
        )));
    }
    let reference = image.reference.clone().ok_or(LaunchError::NoReference)?;
    let labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name".to_string(), name.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "bakeoff".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let mut notes = annotations.clone();
    notes.insert("bakeoff.dev/image-digest".into(), image.digest.clone());
    notes.insert("bakeoff.dev/platform".into(), platform.to_string());
    let mib = |m: u64| Quantity(format!("{}Mi", m.div_ceil(1 << 20)));
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(m) = memory.request {
        requests.insert("memory".to_string(), mib(m));
    }
    if let Some(m) = memory.limit {
        limits.insert("memory".to_string(), mib(m));
    }
    if let Some(c) = opts.cpus {
        let cpu = Quantity(format!("{}m", (c * 1000.0).round() as u64));
        requests.insert("cpu".to_string(), cpu.clone());
        limits.insert("cpu".to_string(), cpu);
    }
    let mut all_ports: Vec<u16> = ports.to_vec();
    for p in &opts.publish {
        if !all_ports.contains(&p.guest_port) {
            all_ports.push(p.guest_port);
        }
    }
    let container = Container {
        name: name.to_string(),
        image: Some(reference),
        image_pull_policy: Some("IfNotPresent".into()),
        args: (!opts.args.is_empty()).then(|| opts.args.clone()),
        env: (!opts.env.is_empty()).then(|| {
            opts.env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..EnvVar::default()
                })
                .collect()
        }),
        ports: Some(
            all_ports
                .iter()
                .map(|p| ContainerPort {
                    container_port: i32::from(*p),
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        resources: (!requests.is_empty() || !limits.is_empty()).then(|| ResourceRequirements {
            limits: (!limits.is_empty()).then(|| limits.clone()),
            requests: (!requests.is_empty()).then(|| requests.clone()),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    let meta = |annotated: bool| ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(labels.clone()),
        annotations: annotated.then(|| notes.clone()),
        ..ObjectMeta::default()
    };
    let deployment = Deployment {
        metadata: meta(true),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(notes.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    runtime_class_name: runtime_class(platform).map(str::to_string),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let service = Service {
        metadata: meta(false),
        spec: Some(ServiceSpec {
            selector: Some(labels.clone()),
            ports: Some(
                all_ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(format!("tcp-{p}")),
                        port: i32::from(*p),
                        target_port: Some(IntOrString::Int(i32::from(*p))),
                        protocol: Some("TCP".into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let value = |v: Result<Value, serde_json::Error>| v.expect("k8s objects serialize");
    let mut out = Vec::new();
    if let Some(class) = runtime_class(platform) {
        out.push(value(serde_json::to_value(RuntimeClass {
            metadata: ObjectMeta {
                name: Some(class.to_string()),
                ..ObjectMeta::default()
            },
            handler: class.to_string(),
            ..RuntimeClass::default()
        })));
    }
    out.push(value(serde_json::to_value(deployment)));
    if !all_ports.is_empty() {
        out.push(value(serde_json::to_value(service)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image {
        Image {
            target: Target::Oci,
            name: "hello".into(),
            artifact_id: "a".repeat(64),
            digest: "sha256:".to_string() + &"b".repeat(64),
            dir: "/cache/images/oci/a".into(),
            files: Default::default(),
            size_bytes: 783_360,
            compressed_bytes: 338_000,
            reference: Some("127.0.0.1:5000/hello:1".into()),
            details: Default::default(),
        }
    }

    #[test]
    fn deployment_service_and_runtime_class_per_platform() {
        let opts = RunOptions {
            env: vec![("GREETING".into(), "hi".into())],
            memory: Some(64 << 20),
            cpus: Some(0.5),
            ..Default::default()
        };
        let reasons: BTreeMap<String, String> = [(
            "bakeoff.dev/reason".to_string(),
            "static binary, no fork".to_string(),
        )]
        .into();
        for platform in [
            Platform::Docker,
            Platform::Qemu,
            Platform::Firecracker,
            Platform::Rumprun,
        ] {
            let objects =
                render_deployment(&image(), &opts, "web", &[8080], platform, &reasons).unwrap();
            insta::assert_snapshot!(
                format!("k8s_{platform}"),
                serde_json::to_string_pretty(&objects).unwrap()
            );
            let kinds: Vec<&str> = objects
                .iter()
                .map(|o| o["kind"].as_str().unwrap())
                .collect();
            match runtime_class(platform) {
                Some(_) => assert_eq!(kinds, ["RuntimeClass", "Deployment", "Service"]),
                None => assert_eq!(kinds, ["Deployment", "Service"]),
            }
        }
    }

    #[test]
    fn measured_memory_gives_a_request_below_the_limit() {
        let notes: BTreeMap<String, String> = [
            (
                "bakeoff.dev/recommendation".to_string(),
                "qemu (policy isolation)".to_string(),
            ),
            (
                "bakeoff.dev/reasons".to_string(),
                "qemu isolates the app in its own kernel.".to_string(),
            ),
        ]
        .into();
        let memory = Memory {
            request: Some(25 << 20),
            limit: Some(50 << 20),
        };
        let objects = render_deployment_with(
            &image(),
            &RunOptions::default(),
            "web",
            &[8080],
            Platform::Qemu,
            &notes,
            memory,
        )
        .unwrap();
        let c = &objects[1]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["requests"]["memory"], "25Mi");
        assert_eq!(c["resources"]["limits"]["memory"], "50Mi");
        insta::assert_snapshot!(serde_json::to_string_pretty(&objects).unwrap());
    }
}
