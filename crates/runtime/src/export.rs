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

    /// A Deployment + Service (and the RuntimeClass a VM or unikernel platform needs) for the
    /// OCI image, as multi-document YAML (each document JSON). The check's reasons for the
    /// platform ride along as an annotation.
    pub fn export_k8s(
        &self,
        prepared: &Prepared,
        platform: Platform,
        flags: bakeoff_spec::RunOptions,
    ) -> Result<String, RuntimeError> {
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
        let image = self.pack(&prepared.artifact, Target::Oci, None)?;
        let mut notes = std::collections::BTreeMap::new();
        if let Some(v) = prepared.verdicts.iter().find(|v| v.platform == platform) {
            let verdict = if v.runnable { "can run" } else { "cannot run" };
            let mut text = format!("{platform} {verdict}");
            if !v.reasons.is_empty() {
                text.push_str(": ");
                text.push_str(&v.reasons.join("; "));
            }
            notes.insert("bakeoff.dev/check".to_string(), text);
        }
        let objects = bakeoff_launch::k8s_deploy::render_deployment(
            &image,
            &opts,
            &name,
            &plan.ports,
            platform,
            &notes,
        )
        .map_err(RuntimeError::Render)?;
        Ok(objects
            .iter()
            .map(|o| serde_json::to_string_pretty(o).expect("JSON values serialize"))
            .collect::<Vec<_>>()
            .join("\n---\n"))
    }
}
