//! Docker, through the Engine API (bollard). Images are loaded from our own archive; nothing is
//! ever pulled. The container-create body is rendered by `bakeoff_launch::docker`.

use std::time::Duration;

use async_trait::async_trait;
use bakeoff_launch::docker::{container_name, create_body};
use bakeoff_launch::{Image, LaunchError};
use bakeoff_spec::Platform;
use bakeoff_state::{DockerHandle, Handle, Instance, Status};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, InspectContainerOptions,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::{Driver, DriverError, LogSink, StartRequest};

pub use bakeoff_launch::docker::{LABEL, STATE_LABEL};

pub struct DockerDriver;

impl DockerDriver {
    pub fn new() -> DockerDriver {
        DockerDriver
    }

    /// Every container (running or not) labelled as an instance of the state dir `state_root`:
    /// (container name, instance name).
    pub async fn labelled(&self, state_root: &str) -> Result<Vec<(String, String)>, DriverError> {
        use bollard::query_parameters::ListContainersOptionsBuilder;
        let docker = self.connect().await?;
        let filters: std::collections::HashMap<String, Vec<String>> = [(
            "label".to_string(),
            vec![format!("{STATE_LABEL}={state_root}")],
        )]
        .into_iter()
        .collect();
        let list = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(engine)?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let name = c.names?.first()?.trim_start_matches('/').to_string();
                let instance = c.labels?.get(LABEL)?.clone();
                Some((name, instance))
            })
            .collect())
    }

    /// Removes a container by name, stopping it if it runs.
    pub async fn remove_container(&self, name: &str) -> Result<(), DriverError> {
        let docker = self.connect().await?;
        docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
            .map_err(engine)
    }

    /// Connects to the engine (honouring DOCKER_HOST) and agrees on an API version.
    pub async fn connect(&self) -> Result<Docker, DriverError> {
        let not_running = |detail: String| {
            let installed = crate::vmm::which("dockerd").is_some();
            DriverError::Unavailable(if installed {
                format!("the Docker engine is not running ({detail}); start it with `dockerd &` as root or `systemctl start docker`")
            } else {
                "Docker is not installed; install Debian's engine with `apt-get install -y docker.io` and start it with `dockerd &`".to_string()
            })
        };
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| not_running(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version()).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(not_running(short(&e))),
            Err(_) => Err(not_running("no answer within 10 s".into())),
        }
    }
}

impl Default for DockerDriver {
    fn default() -> Self {
        Self::new()
    }
}

/// bollard's errors, cut down to what the engine said (for the availability sentence).
fn short(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::HyperLegacyError { .. }
        | bollard::errors::Error::IOError { .. } => {
            let host = std::env::var("DOCKER_HOST")
                .unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
            format!("cannot connect to {host}")
        }
        other => other.to_string(),
    }
}

fn engine(e: bollard::errors::Error) -> DriverError {
    DriverError::Docker(e)
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The container's id, or its name (which the engine accepts as well) while the record is
/// the intent written before the container was created.
fn container_id(inst: &Instance) -> Result<&str, DriverError> {
    inst.handle
        .docker()
        .map(|h| {
            if h.container_id.is_empty() {
                h.container_name.as_str()
            } else {
                h.container_id.as_str()
            }
        })
        .ok_or_else(|| DriverError::wrong_handle(inst, Platform::Docker))
}

/// Loads the image archive unless the engine already has this exact image.
async fn ensure_image(docker: &Docker, image: &Image) -> Result<String, DriverError> {
    let reference = image.reference.clone().ok_or(LaunchError::NoReference)?;
    let config_digest = image.details.config_digest.clone().unwrap_or_default();
    if let Ok(found) = docker.inspect_image(&reference).await {
        if found.id.as_deref() == Some(config_digest.as_str()) {
            return Ok(reference);
        }
    }
    let archive = image.require("archive", "archive")?;
    let bytes = fs_err::tokio::read(&archive).await?;
    let mut stream = docker.import_image(
        ImportImageOptionsBuilder::default().quiet(true).build(),
        bollard::body_full(bytes.into()),
        None,
    );
    while let Some(item) = stream.next().await {
        let info = item.map_err(engine)?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(DriverError::DockerLoad {
                archive,
                message: err,
            });
        }
    }
    Ok(reference)
}

#[async_trait]
impl Driver for DockerDriver {
    fn platform(&self) -> Platform {
        Platform::Docker
    }

    async fn available(&self) -> Result<(), DriverError> {
        self.connect().await.map(|_| ())
    }

    /// The container's deterministic name, before it exists.
    fn intent(&self, req: &StartRequest<'_>) -> Option<Handle> {
        Some(Handle::Docker(DockerHandle {
            container_id: String::new(),
            container_name: container_name(req.name),
            image: req.image.reference.clone().unwrap_or_default(),
        }))
    }

    async fn start(&self, req: StartRequest<'_>) -> Result<Handle, DriverError> {
        crate::check_image(Platform::Docker, req.image)?;
        crate::check_memory_fits(req.opts.memory, crate::host_memory_bytes())?;
        let docker = self.connect().await?;
        let reference = ensure_image(&docker, req.image).await?;
        let mut body = create_body(&reference, req.name, req.opts);
        // Which state dir this container belongs to (for `bakeoff prune`).
        if let Some(root) = req.instance_dir.parent().and_then(|p| p.parent()) {
            body.labels
                .get_or_insert_with(Default::default)
                .insert(STATE_LABEL.to_string(), root.display().to_string());
        }
        let cname = container_name(req.name);
        let created = docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&cname)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(engine)?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let _ = docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
            return Err(engine(e));
        }
        Ok(Handle::Docker(DockerHandle {
            container_id: created.id,
            container_name: cname,
            image: reference,
        }))
    }

    async fn status(&self, inst: &Instance) -> Result<Status, DriverError> {
        let docker = self.connect().await?;
        match docker
            .inspect_container(container_id(inst)?, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                Ok(if state.running == Some(true) {
                    Status::Running
                } else if state
                    .started_at
                    .as_deref()
                    .is_none_or(|s| s.starts_with("0001-"))
                {
                    Status::Created
                } else {
                    Status::Exited {
                        code: state.exit_code.map(|c| c as i32),
                    }
                })
            }
            Err(e) if is_not_found(&e) => Ok(Status::Missing),
            Err(e) => Err(engine(e)),
        }
    }

    async fn listening_ports(&self, inst: &Instance) -> Option<Vec<u16>> {
        // The container's network namespace, seen through its main process on this host.
        let docker = self.connect().await.ok()?;
        let c = docker
            .inspect_container(container_id(inst).ok()?, None::<InspectContainerOptions>)
            .await
            .ok()?;
        let pid = c.state?.pid.filter(|p| *p > 0)?;
        let mut ports = Vec::new();
        for table in ["tcp", "tcp6"] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
                ports.extend(bakeoff_launch::cmdline::phases::listening_ports(&text));
            }
        }
        ports.sort_unstable();
        ports.dedup();
        Some(ports)
    }

    async fn logs(
        &self,
        inst: &Instance,
        follow: bool,
        out: LogSink<'_>,
    ) -> Result<(), DriverError> {
        let docker = self.connect().await?;
        let opts = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = docker.logs(container_id(inst)?, Some(opts));
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    out.write_all(&chunk.into_bytes()).await?;
                    out.flush().await?;
                }
                Err(e) if is_not_found(&e) => {
                    return Err(DriverError::ContainerGone(inst.name.clone()))
                }
                Err(e) => return Err(engine(e)),
            }
        }
        Ok(())
    }

    async fn stop(&self, inst: &Instance, grace: Duration) -> Result<(), DriverError> {
        let docker = self.connect().await?;
        let opts = StopContainerOptionsBuilder::default()
            .t(grace.as_secs() as i32)
            .build();
        match docker.stop_container(container_id(inst)?, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn remove(&self, inst: &Instance) -> Result<(), DriverError> {
        let docker = self.connect().await?;
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker
            .remove_container(container_id(inst)?, Some(opts))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn memory_bytes(&self, inst: &Instance) -> Result<Option<u64>, DriverError> {
        let docker = self.connect().await?;
        let opts = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = docker.stats(container_id(inst)?, Some(opts));
        match stream.next().await {
            Some(Ok(s)) => Ok(s.memory_stats.and_then(|m| m.usage)),
            Some(Err(e)) => Err(engine(e)),
            None => Ok(None),
        }
    }
}
