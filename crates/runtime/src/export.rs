//! `export`: the launch configuration another tool would run (xl, Firecracker, Kubernetes).

use std::path::PathBuf;

use bakeoff_spec::{Platform, Target};

use crate::{pick_target, run_options, Prepared, Runtime, RuntimeError};

/// A format `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// An xl.cfg for Xen (PVH microVM or PV Rumprun).
    Xl,
    /// Firecracker's VM configuration JSON.
    Firecracker,
    /// A Kubernetes Pod running the OCI image.
    K8s,
}

impl ExportFormat {
    /// The platform whose launch the format describes.
    pub fn platform(self) -> Platform {
        match self {
            ExportFormat::Xl => Platform::Xen,
            ExportFormat::Firecracker => Platform::Firecracker,
            ExportFormat::K8s => Platform::Docker,
        }
    }
}

impl Runtime {
    /// Packs the image the format's platform boots and renders its launch configuration.
    pub fn export(
        &self,
        prepared: &Prepared,
        format: ExportFormat,
        target: Option<Target>,
        flags: bakeoff_spec::RunOptions,
        kernel: Option<PathBuf>,
    ) -> Result<String, RuntimeError> {
        let target = pick_target(format.platform(), target)?;
        let plan = &prepared.plan;
        let name = flags.name.clone().unwrap_or_else(|| plan.name.clone());
        bakeoff_spec::validate_name(&name)?;
        let opts = run_options(
            plan,
            bakeoff_spec::RunOptions {
                name: Some(name.clone()),
                detach: true,
                ..flags
            },
        );
        let image = self.pack(&prepared.artifact, target, kernel)?;
        let json =
            |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("JSON values serialize");
        let text = match format {
            ExportFormat::Xl => bakeoff_launch::xl::render_xl(&image, &opts, &name),
            ExportFormat::Firecracker => {
                bakeoff_launch::firecracker::export_firecracker(&image, &opts, &name).map(json)
            }
            ExportFormat::K8s => {
                bakeoff_launch::k8s::render_pod(&image, &opts, &name, &plan.ports).map(json)
            }
        }
        .map_err(RuntimeError::Render)?;
        Ok(text.trim_end().to_string())
    }
}
