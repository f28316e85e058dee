//! `export`: the launch configuration another tool would run (xl, Firecracker, Kubernetes).

use std::path::PathBuf;

use bakeoff_spec::{Platform, Target};

use std::collections::BTreeMap;

use bakeoff_launch::k8s_deploy::Memory;
use serde::Deserialize;

use crate::{pick_target, run_options, Prepared, Runtime, RuntimeError};

/// What `export --format k8s` places, besides the app: a platform (`--on`), or the platform,
/// memory and reasons of a bench report (`--from-report`); an image reference (`--image`).
#[derive(Debug, Clone, Default)]
pub struct K8sExport {
    pub platform: Option<Platform>,
    pub report: Option<PathBuf>,
    pub image: Option<String>,
}

/// What a bench report says about placing the app.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportPlacement {
    pub platform: Platform,
    pub memory: Memory,
    pub annotations: BTreeMap<String, String>,
}

/// The parts of report.json a placement reads (the rest of the report may grow freely).
#[derive(Deserialize)]
struct ReportView {
    app: ReportApp,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    platforms: Vec<ReportPlatform>,
    #[serde(default)]
    recommendation: Option<ReportRecommendation>,
}

#[derive(Deserialize)]
struct ReportApp {
    name: String,
    #[serde(default)]
    artifact_id: Option<String>,
}

#[derive(Deserialize)]
struct ReportRecommendation {
    platform: Option<Platform>,
    #[serde(default)]
    reasons: Vec<String>,
}

#[derive(Deserialize)]
struct ReportPlatform {
    platform: Platform,
    #[serde(default)]
    memory: Option<ReportMemory>,
}

#[derive(Deserialize)]
struct ReportMemory {
    host_bytes: ReportStat,
    #[serde(default)]
    guest_bytes: Option<ReportStat>,
}

#[derive(Deserialize)]
struct ReportStat {
    median: f64,
    max: f64,
}

/// The smallest memory limit written from a measurement (a limit near the measured bytes of a
/// tiny static server would leave no room for a burst).
pub const MIN_LIMIT_MIB: u64 = 32;

/// The platform the report recommends, the memory measured there (request = the median,
/// limit = twice the maximum, at least [`MIN_LIMIT_MIB`]; for a VM the guest's own figure,
/// which is what the app uses inside Kata's VM, else the host's), and the report's reasons as
/// annotations. `Err` is one sentence.
pub fn placement_from_report(text: &str, artifact_id: &str) -> Result<ReportPlacement, String> {
    let r: ReportView =
        serde_json::from_str(text).map_err(|e| format!("not a bakeoff bench report ({e})"))?;
    let rec = r
        .recommendation
        .ok_or("the report has no recommendation; run `bakeoff bench` again to make one")?;
    let platform = rec.platform.ok_or_else(|| {
        format!(
            "the report recommends no platform for {} ({})",
            r.app.name,
            rec.reasons.join(" ")
        )
    })?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "bakeoff.dev/recommendation".to_string(),
        format!(
            "{platform} (policy {})",
            r.policy.as_deref().unwrap_or("balanced")
        ),
    );
    annotations.insert("bakeoff.dev/reasons".to_string(), rec.reasons.join(" "));
    if let Some(id) = &r.app.artifact_id {
        annotations.insert("bakeoff.dev/report-artifact".to_string(), id.clone());
        if id != artifact_id {
            annotations.insert(
                "bakeoff.dev/report-note".to_string(),
                format!(
                    "the report measured build {} and this is build {}",
                    &id[..id.len().min(12)],
                    &artifact_id[..artifact_id.len().min(12)]
                ),
            );
        }
    }
    let mut memory = Memory::default();
    let measured = r
        .platforms
        .iter()
        .find(|p| p.platform == platform)
        .and_then(|p| p.memory.as_ref());
    if let Some(m) = measured {
        let (stat, whose) = match (&m.guest_bytes, platform) {
            (Some(g), p) if p != Platform::Docker => (g, "guest-reported"),
            _ => (&m.host_bytes, "host"),
        };
        const MIB: f64 = (1u64 << 20) as f64;
        let request = (stat.median / MIB).ceil().max(1.0) as u64;
        let limit = ((2.0 * stat.max / MIB).ceil() as u64).max(MIN_LIMIT_MIB);
        memory = Memory {
            request: Some(request << 20),
            limit: Some(limit.max(request) << 20),
        };
        annotations.insert(
            "bakeoff.dev/measured-memory".to_string(),
            format!(
                "median {:.1} MiB, max {:.1} MiB ({whose}, on {platform})",
                stat.median / MIB,
                stat.max / MIB
            ),
        );
    }
    Ok(ReportPlacement {
        platform,
        memory,
        annotations,
    })
}

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
        self.export_k8s_with(
            prepared,
            K8sExport {
                platform: Some(platform),
                ..K8sExport::default()
            },
            flags,
        )
    }

    /// [`Runtime::export_k8s`] with the platform, memory and reasons of a bench report, and the
    /// image reference given or recorded by the last `push` of this build.
    pub fn export_k8s_with(
        &self,
        prepared: &Prepared,
        how: K8sExport,
        flags: bakeoff_spec::RunOptions,
    ) -> Result<String, RuntimeError> {
        let placement = match &how.report {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    RuntimeError::ProfileUnreadable {
                        path: path.clone(),
                        source,
                    }
                })?;
                Some(
                    placement_from_report(&text, &prepared.artifact.manifest.id).map_err(
                        |why| RuntimeError::Invalid(format!("{}: {why}", path.display())),
                    )?,
                )
            }
            None => None,
        };
        let platform = match (&placement, how.platform) {
            (Some(p), _) => p.platform,
            (None, Some(p)) => p,
            (None, None) => Platform::Docker,
        };
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
        let mut image = self.pack(&prepared.artifact, Target::Oci, None)?;
        // The reference a cluster pulls: given, else what the last push of this build made
        // (the unikernel's artifact for urunc, the container image otherwise), else local.
        let pushed = self.pushed_references(&prepared.artifact.manifest.id);
        let pushed = match platform {
            Platform::Rumprun => pushed.get(&Target::Rumprun).or(pushed.get(&Target::Oci)),
            _ => pushed.get(&Target::Oci),
        };
        if let Some(r) = how.image.clone().or(pushed.cloned()) {
            image.reference = Some(r);
        }
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
        let mut memory = bakeoff_launch::k8s_deploy::Memory {
            request: opts.memory,
            limit: opts.memory,
        };
        if let Some(p) = placement {
            notes.extend(p.annotations);
            // `--memory` wins over the measured figure.
            if opts.memory.is_none() {
                memory = p.memory;
            }
        }
        let objects = bakeoff_launch::k8s_deploy::render_deployment_with(
            &image,
            &opts,
            &name,
            &plan.ports,
            platform,
            &notes,
            memory,
        )
        .map_err(RuntimeError::Render)?;
        Ok(objects
            .iter()
            .map(|o| serde_json::to_string_pretty(o).expect("JSON values serialize"))
            .collect::<Vec<_>>()
            .join("\n---\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of a real report.json (a bench of examples/hello on docker and qemu, TCG)
    /// that placement reads, with the rest of a report around them.
    fn report(recommended: Option<&str>) -> String {
        serde_json::json!({
            "schema_version": 3, "tool_version": "0.1.0", "created": "2026-12-01T17:00:00Z",
            "app": {"name": "hello", "input": "examples/hello", "artifact_id": "a".repeat(64)},
            "policy": "isolation",
            "platforms": [
                {"platform": "docker", "status": {"kind": "measured"},
                 "memory": {"host_bytes": {"median": 1_572_864.0, "min": 1_400_000.0, "max": 1_700_000.0, "mean": 1_500_000.0, "samples": []},
                            "guest_bytes": null}},
                {"platform": "qemu", "status": {"kind": "measured"},
                 "memory": {"host_bytes": {"median": 228_589_568.0, "min": 2.0e8, "max": 2.3e8, "mean": 2.2e8, "samples": []},
                            "guest_bytes": {"median": 25_480_396.0, "min": 2.4e7, "max": 26_214_400.0, "mean": 2.5e7, "samples": []}}}
            ],
            "recommendation": {
                "platform": recommended, "policy": "isolation",
                "reasons": ["qemu isolates the app in its own kernel.", "It starts in 4.5 s (emulated TCG)."],
                "ranking": []
            }
        })
        .to_string()
    }

    #[test]
    fn placement_takes_platform_memory_and_reasons_from_the_report() {
        let p = placement_from_report(&report(Some("qemu")), &"a".repeat(64)).unwrap();
        assert_eq!(p.platform, Platform::Qemu);
        // The guest's own figure for a VM: 24.3 MiB median → 25Mi; 2 × 25 MiB max → 50Mi.
        assert_eq!(p.memory.request, Some(25 << 20));
        assert_eq!(p.memory.limit, Some(50 << 20));
        insta::assert_json_snapshot!(p.annotations);

        // The container: its cgroup figure; the limit never below 32 MiB.
        let d = placement_from_report(&report(Some("docker")), &"b".repeat(64)).unwrap();
        assert_eq!(d.platform, Platform::Docker);
        assert_eq!(d.memory.request, Some(2 << 20));
        assert_eq!(d.memory.limit, Some(MIN_LIMIT_MIB << 20));
        assert_eq!(
            d.annotations["bakeoff.dev/report-note"],
            "the report measured build aaaaaaaaaaaa and this is build bbbbbbbbbbbb"
        );
    }

    #[test]
    fn a_report_without_a_choice_is_one_sentence() {
        let e = placement_from_report(&report(None), "a").unwrap_err();
        assert_eq!(
            e,
            "the report recommends no platform for hello (qemu isolates the app in its own kernel. It starts in 4.5 s (emulated TCG).)"
        );
        let e = placement_from_report("{\"not\": \"a report\"}", "a").unwrap_err();
        assert!(e.starts_with("not a bakeoff bench report ("), "{e}");
        let e = placement_from_report("no json", "a").unwrap_err();
        assert!(e.starts_with("not a bakeoff bench report ("), "{e}");
    }
}
