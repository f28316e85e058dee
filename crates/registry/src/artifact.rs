//! bakeoff's own targets as OCI artifacts: an image manifest whose `artifactType` names the
//! target, an empty config, one layer per file, and annotations named as urunc names them
//! (`com.urunc.unikernel.*`), so a runtime that reads urunc's annotations finds the kernel,
//! the initrd and the command line. Pure: the bytes of the manifest are a function of the
//! layers and annotations (snapshot-tested).

use std::collections::BTreeMap;

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

use crate::digest_of;

/// The OCI image manifest media type (every artifact is pushed as one).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The empty config of an artifact (`{}`).
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The microVM: its kernel (a bzImage, or a PVH vmlinux), the initramfs with bakeoff's PID 1, the run config.
pub const MICROVM_ARTIFACT: &str = "application/vnd.bakeoff.microvm.v1";
pub const MICROVM_KERNEL: &str = "application/vnd.bakeoff.microvm.kernel.v1";
pub const MICROVM_INITRD: &str = "application/vnd.bakeoff.microvm.initrd.v1.cpio+lz4";
pub const MICROVM_CONFIG: &str = "application/vnd.bakeoff.microvm.config.v1+json";

/// The Rumprun unikernel: the baked `hw_virtio` kernel, the `xen_pv` bake where the toolchain
/// has Xen's platform, and the run config (the JSON Rumprun reads at boot is made per run from it).
pub const RUMPRUN_ARTIFACT: &str = "application/vnd.bakeoff.rumprun.v1";
pub const RUMPRUN_KERNEL: &str = "application/vnd.bakeoff.rumprun.kernel.v1";
pub const RUMPRUN_XEN_KERNEL: &str = "application/vnd.bakeoff.rumprun.xen-kernel.v1";
pub const RUMPRUN_CONFIG: &str = "application/vnd.bakeoff.rumprun.config.v1+json";

/// urunc's annotation names (its `UnikernelConfig`), the ones bakeoff fills.
pub mod urunc {
    pub const TYPE: &str = "com.urunc.unikernel.unikernelType";
    pub const VERSION: &str = "com.urunc.unikernel.unikernelVersion";
    pub const BINARY: &str = "com.urunc.unikernel.binary";
    pub const CMDLINE: &str = "com.urunc.unikernel.cmdline";
    pub const HYPERVISOR: &str = "com.urunc.unikernel.hypervisor";
    pub const INITRD: &str = "com.urunc.unikernel.initrd";
}

/// bakeoff's own annotations.
pub const ANNOT_ARTIFACT: &str = "dev.bakeoff.artifact";
pub const ANNOT_KERNEL: &str = "dev.bakeoff.kernel";
/// The digest of the OCI image pushed beside the artifact (same app, same push).
pub const ANNOT_OCI_MANIFEST: &str = "dev.bakeoff.oci-manifest";
/// The least memory (MiB) the image boots with.
pub const ANNOT_MIN_MEMORY: &str = "dev.bakeoff.min-memory-mib";
/// 16 hex digits of the SHA-256 of the guest kernel's `.config` (the bench report names it).
pub const ANNOT_KERNEL_CONFIG: &str = "dev.bakeoff.kernel-config";
/// The guest kernel's CONFIG_HZ, set only when it takes `lapic_timer_period=` (bakeoff's
/// minimal kernel): without it a pulled microVM boots with the APIC timer's calibration.
pub const ANNOT_KERNEL_TIMER_HZ: &str = "dev.bakeoff.kernel-timer-hz";
pub const TITLE: &str = "org.opencontainers.image.title";

/// One file of an artifact.
#[derive(Debug, Clone)]
pub struct Layer {
    pub media_type: &'static str,
    /// The file name it has once pulled (`org.opencontainers.image.title`).
    pub title: &'static str,
    pub data: Bytes,
}

/// An artifact ready to push: its blobs (config first) and its manifest.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub blobs: Vec<Bytes>,
    pub manifest: Bytes,
}

/// The manifest of an artifact of `artifact_type` holding `layers`, with `annotations`.
pub fn artifact(
    artifact_type: &str,
    layers: Vec<Layer>,
    annotations: BTreeMap<String, String>,
) -> Artifact {
    let empty = Bytes::from_static(b"{}");
    let desc = |media: MediaType, data: &Bytes| {
        Descriptor::new(
            media,
            data.len() as u64,
            digest_of(data)
                .parse::<oci_spec::image::Digest>()
                .expect("sha256 digests parse"),
        )
    };
    let layer_descs = layers
        .iter()
        .map(|l| {
            let mut d = desc(MediaType::Other(l.media_type.to_string()), &l.data);
            d.set_annotations(Some(
                [(TITLE.to_string(), l.title.to_string())]
                    .into_iter()
                    .collect(),
            ));
            d
        })
        .collect::<Vec<_>>();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(artifact_type.to_string()))
        .config(desc(MediaType::EmptyJSON, &empty))
        .layers(layer_descs)
        .annotations(
            annotations
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .expect("every manifest field is set");
    // serde_json::Value sorts object keys: the bytes do not depend on HashMap order.
    let value = serde_json::to_value(&manifest).expect("manifests serialize");
    let manifest = Bytes::from(serde_json::to_vec(&value).expect("values serialize"));
    let mut blobs = vec![empty];
    blobs.extend(layers.into_iter().map(|l| l.data));
    Artifact { blobs, manifest }
}

/// What a microVM artifact's annotations say of its guest, so that a pulled image boots and is
/// reported like the one pushed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MicrovmFacts {
    pub kernel_version: String,
    pub kernel_config: Option<String>,
    pub kernel_timer_hz: Option<u32>,
    pub min_memory_mib: Option<u64>,
}

impl MicrovmFacts {
    /// The facts the annotations of a pulled artifact give (unknown or unreadable ones are
    /// `None`: an artifact pushed by an older bakeoff has fewer).
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Self {
        Self {
            kernel_version: a.get(ANNOT_KERNEL).cloned().unwrap_or_default(),
            kernel_config: a.get(ANNOT_KERNEL_CONFIG).cloned(),
            kernel_timer_hz: a.get(ANNOT_KERNEL_TIMER_HZ).and_then(|v| v.parse().ok()),
            min_memory_mib: a.get(ANNOT_MIN_MEMORY).and_then(|v| v.parse().ok()),
        }
    }
}

/// The annotations of a microVM artifact: urunc's (a Linux guest under QEMU, its kernel and
/// initrd by file name: `kernel_file` is the kernel layer's title) and bakeoff's.
pub fn microvm_annotations(
    name: &str,
    artifact_id: &str,
    kernel_file: &str,
    oci_manifest: &str,
    facts: &MicrovmFacts,
) -> BTreeMap<String, String> {
    let binary = format!("/{kernel_file}");
    let mut a: BTreeMap<String, String> = [
        (urunc::TYPE, "linux"),
        (urunc::HYPERVISOR, "qemu"),
        (urunc::BINARY, binary.as_str()),
        (urunc::INITRD, "/initramfs.cpio.lz4"),
        (TITLE, name),
        (ANNOT_ARTIFACT, artifact_id),
        (ANNOT_KERNEL, facts.kernel_version.as_str()),
        (ANNOT_OCI_MANIFEST, oci_manifest),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let optional = [
        (ANNOT_KERNEL_CONFIG, facts.kernel_config.clone()),
        (
            ANNOT_KERNEL_TIMER_HZ,
            facts.kernel_timer_hz.map(|v| v.to_string()),
        ),
        (
            ANNOT_MIN_MEMORY,
            facts.min_memory_mib.map(|v| v.to_string()),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            a.insert(k.to_string(), v);
        }
    }
    a
}

/// The annotations of a Rumprun artifact: urunc's (`rumprun` on QEMU, the baked kernel, and
/// `cmdline` = the program's argv as Rumprun's JSON config gives it) and bakeoff's.
pub fn rumprun_annotations(
    name: &str,
    artifact_id: &str,
    kernel_file: &str,
    cmdline: &str,
    oci_manifest: &str,
) -> BTreeMap<String, String> {
    [
        (urunc::TYPE, "rumprun"),
        (urunc::HYPERVISOR, "qemu"),
        (urunc::BINARY, &format!("/{kernel_file}")),
        (urunc::CMDLINE, cmdline),
        (TITLE, name),
        (ANNOT_ARTIFACT, artifact_id),
        (ANNOT_OCI_MANIFEST, oci_manifest),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A pulled artifact manifest, as much of it as a puller needs.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pulled {
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub layers: Vec<PulledLayer>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PulledLayer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Pulled {
    /// The layer of `media_type`, if there is exactly one.
    pub fn layer(&self, media_type: &str) -> Option<&PulledLayer> {
        let mut found = self.layers.iter().filter(|l| l.media_type == media_type);
        match (found.next(), found.next()) {
            (Some(l), None) => Some(l),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Artifact) -> serde_json::Value {
        serde_json::from_slice(&m.manifest).unwrap()
    }

    #[test]
    fn microvm_manifest() {
        let facts = MicrovmFacts {
            kernel_version: "6.1.192".into(),
            kernel_config: Some("d5aff39ae0f45381".into()),
            kernel_timer_hz: Some(100),
            min_memory_mib: Some(32),
        };
        let a = artifact(
            MICROVM_ARTIFACT,
            vec![
                Layer {
                    media_type: MICROVM_KERNEL,
                    title: "vmlinux",
                    data: Bytes::from_static(b"a kernel"),
                },
                Layer {
                    media_type: MICROVM_INITRD,
                    title: "initramfs.cpio.lz4",
                    data: Bytes::from_static(b"an initramfs"),
                },
                Layer {
                    media_type: MICROVM_CONFIG,
                    title: "artifact.json",
                    data: Bytes::from_static(b"{\"name\":\"hello\"}"),
                },
            ],
            microvm_annotations("hello", "0123abcd", "vmlinux", "sha256:5e5e", &facts),
        );
        assert_eq!(a.blobs.len(), 4);
        assert_eq!(&a.blobs[0][..], b"{}");
        insta::assert_json_snapshot!(text(&a));
        // A pull reads back what the push wrote.
        let v: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        let annotations: BTreeMap<String, String> =
            serde_json::from_value(v["annotations"].clone()).unwrap();
        assert_eq!(MicrovmFacts::from_annotations(&annotations), facts);
        // An artifact from an older push, with only the kernel's version, has no other facts.
        let old = [(ANNOT_KERNEL.to_string(), "6.1.0-28-cloud-amd64".to_string())].into();
        assert_eq!(
            MicrovmFacts::from_annotations(&old),
            MicrovmFacts {
                kernel_version: "6.1.0-28-cloud-amd64".into(),
                ..MicrovmFacts::default()
            }
        );
        // The same input gives the same bytes (the digest a re-push compares).
        let b = artifact(MICROVM_ARTIFACT, Vec::new(), BTreeMap::new());
        let c = artifact(MICROVM_ARTIFACT, Vec::new(), BTreeMap::new());
        assert_eq!(b.manifest, c.manifest);
    }

    #[test]
    fn rumprun_manifest() {
        let a = artifact(
            RUMPRUN_ARTIFACT,
            vec![
                Layer {
                    media_type: RUMPRUN_KERNEL,
                    title: "hello.hw_virtio",
                    data: Bytes::from_static(b"a baked unikernel"),
                },
                Layer {
                    media_type: RUMPRUN_CONFIG,
                    title: "rumprun.json",
                    data: Bytes::from_static(b"{\"argv0\":\"hello\"}"),
                },
            ],
            rumprun_annotations(
                "hello",
                "0123abcd",
                "hello.hw_virtio",
                "hello --port 8080",
                "sha256:5e5e",
            ),
        );
        let v = text(&a);
        assert_eq!(v["annotations"][urunc::TYPE], "rumprun");
        assert_eq!(v["annotations"][urunc::BINARY], "/hello.hw_virtio");
        insta::assert_json_snapshot!(v);
        // A puller finds each layer by its media type.
        let pulled: Pulled = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(pulled.artifact_type.as_deref(), Some(RUMPRUN_ARTIFACT));
        assert_eq!(
            pulled.layer(RUMPRUN_KERNEL).unwrap().digest,
            digest_of(b"a baked unikernel")
        );
        assert!(pulled.layer(MICROVM_KERNEL).is_none());
    }
}
