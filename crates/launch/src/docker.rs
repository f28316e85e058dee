//! Docker: the Engine API's container-create body for one run of an OCI image. Containers are
//! named `bakeoff-<name>` and labelled `bakeoff.instance=<name>`.

use std::collections::HashMap;

use bakeoff_spec::RunOptions;
use bollard_stubs::models::{ContainerCreateBody, HostConfig, PortBinding};

/// The label that marks a container as one of bakeoff's instances.
pub const LABEL: &str = "bakeoff.instance";

/// The label naming the state directory whose instance the container is, so `bakeoff prune`
/// finds its own strays and never another state dir's containers.
pub const STATE_LABEL: &str = "bakeoff.state";

/// The container name of an instance.
pub fn container_name(instance: &str) -> String {
    format!("bakeoff-{instance}")
}

/// The body of `POST /containers/create`: the image `reference`, the run's env and args (none
/// keeps the image's CMD), the instance name as hostname, each `-p` as a port binding, and
/// `--memory`/`--cpus` as limits.
pub fn create_body(reference: &str, instance: &str, opts: &RunOptions) -> ContainerCreateBody {
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in &opts.publish {
        let key = format!("{}/{}", p.guest_port, crate::proto(p.protocol));
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.to_string()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    ContainerCreateBody {
        image: Some(reference.to_string()),
        env: Some(opts.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd: (!opts.args.is_empty()).then(|| opts.args.clone()),
        hostname: Some(instance.chars().take(63).collect()),
        exposed_ports: Some(exposed),
        labels: Some(
            [(LABEL.to_string(), instance.to_string())]
                .into_iter()
                .collect(),
        ),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            memory: opts.memory.map(|m| m as i64),
            nano_cpus: opts.cpus.map(|c| (c * 1e9) as i64),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_for_the_example() {
        let opts = RunOptions {
            publish: vec![
                bakeoff_spec::parse_publish("8080:80").unwrap(),
                bakeoff_spec::parse_publish("127.0.0.2:5353:53/udp").unwrap(),
            ],
            env: vec![("GREETING".into(), "hi".into())],
            memory: Some(64 << 20),
            cpus: Some(0.5),
            args: vec!["--verbose".into()],
            ..Default::default()
        };
        let body = serde_json::to_value(create_body("bakeoff/hello:abc", "web", &opts)).unwrap();
        insta::assert_json_snapshot!(body, {
            ".HostConfig.PortBindings" => insta::sorted_redaction()
        });
        let plain = create_body("bakeoff/hello:abc", "web", &RunOptions::default());
        assert_eq!(plain.cmd, None, "no args keeps the image's CMD");
    }
}
