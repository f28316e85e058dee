//! The packed image record (`image.json`) and its typed details.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bakeoff_spec::Target;
use serde::{Deserialize, Serialize};

use crate::LaunchError;

/// A packed image, described by `image.json` in its directory.
/// The microVM image's initramfs, in the image's directory and as the registry artifact's
/// layer title: an LZ4 (legacy frame) newc cpio.
pub const MICROVM_INITRD_FILE: &str = "initramfs.cpio.lz4";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub target: Target,
    pub name: String,
    pub artifact_id: String,
    /// `sha256:…` of the OCI manifest, or of the microVM's boot files.
    pub digest: String,
    /// Directory holding the image's files.
    pub dir: PathBuf,
    /// Files by role ("archive", "layout", "kernel", "initrd", ...), relative to `dir`.
    pub files: BTreeMap<String, PathBuf>,
    /// Bytes of content (uncompressed) and bytes on disk/over the wire (compressed).
    pub size_bytes: u64,
    pub compressed_bytes: u64,
    /// Name under which engines know the image (Docker tag), if any.
    pub reference: Option<String>,
    /// Facts about the image that launching or reporting needs (kernel, Rumprun program, ...).
    #[serde(default)]
    pub details: ImageDetails,
}

impl Image {
    pub fn file(&self, role: &str) -> Option<PathBuf> {
        self.files.get(role).map(|p| self.dir.join(p))
    }

    /// Reads `dir/image.json`; the image's `dir` becomes `dir`.
    pub fn load(dir: &Path) -> Result<Image, LaunchError> {
        let path = dir.join("image.json");
        let text = fs_err::read_to_string(&path)?;
        let mut image: Image = serde_json::from_str(&text)
            .map_err(|source| LaunchError::DamagedImage { path, source })?;
        image.dir = dir.to_path_buf();
        Ok(image)
    }

    /// The file of `role`, or the error naming what is missing.
    pub fn require(&self, role: &str, what: &str) -> Result<PathBuf, LaunchError> {
        self.file(role).ok_or_else(|| LaunchError::MissingRole {
            target: self.target,
            dir: self.dir.clone(),
            role: what.to_string(),
        })
    }
}

/// What a packager records about an image besides its files. Every field is optional: each
/// target fills its own. On disk (and in `build --json`) this is the flat string map earlier
/// versions wrote — numbers as decimal strings, Rumprun's env/args as JSON text — so their
/// `image.json` files still load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDetails {
    /// OCI: the image config's digest, which Docker reports as the image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,

    /// microVM: the guest kernel's version (`6.1.0-…-amd64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// microVM: 16 hex digits of the SHA-256 of the guest kernel's `.config`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_config: Option<String>,
    /// microVM: bytes of the bzImage, of the PVH vmlinux and of the compressed initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub kernel_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub vmlinux_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub initrd_bytes: Option<u64>,
    /// microVM: the kernel modules in the initramfs, comma-separated, in load order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub initramfs_unpacked_bytes: Option<u64>,
    /// microVM: the least memory it boots with.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub min_memory_mib: Option<u64>,
    /// microVM: set when the guest kernel takes `lapic_timer_period=` (bakeoff's minimal kernel,
    /// patched for it): its CONFIG_HZ, by which a VMM divides its APIC bus frequency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_timer_hz: Option<u32>,

    /// Rumprun: sizes of each baked kernel (after and before stripping).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub hw_virtio_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub hw_virtio_unstripped_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub xen_pv_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "num_str")]
    pub xen_pv_unstripped_bytes: Option<u64>,
    /// Rumprun: why there is no `xen_pv` bake, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xen_pv: Option<String>,
    /// Rumprun: the toolchain's `bin/` and how it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain_origin: Option<String>,
    /// Rumprun: the program's argv[0], default args and env (the configuration is not in the
    /// image: Rumprun reads it at boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv0: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "json_str")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "json_str")]
    pub env: Option<Vec<(String, String)>>,
    /// Rumprun: the app's ports, comma-separated (`8080/tcp,...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
}

/// The sizes of one `rumprun-bake` configuration, for [`ImageDetails::set_bake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RumprunBake {
    pub bytes: u64,
    pub unstripped_bytes: u64,
}

impl ImageDetails {
    /// Records the sizes of the bake named `config` (`hw_virtio` or `xen_pv`); other names are
    /// not kept.
    pub fn set_bake(&mut self, config: &str, bake: RumprunBake) {
        let (bytes, unstripped) = match config {
            "hw_virtio" => (
                &mut self.hw_virtio_bytes,
                &mut self.hw_virtio_unstripped_bytes,
            ),
            "xen_pv" => (&mut self.xen_pv_bytes, &mut self.xen_pv_unstripped_bytes),
            _ => return,
        };
        *bytes = Some(bake.bytes);
        *unstripped = Some(bake.unstripped_bytes);
    }
}

/// `Option<u64>` stored as a decimal string, as the string map of earlier versions had it.
/// Reads a JSON number too.
mod num_str {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(u64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Either>::deserialize(d)? {
            None => Ok(None),
            Some(Either::Number(n)) => Ok(Some(n)),
            Some(Either::Text(t)) if t.is_empty() => Ok(None),
            Some(Either::Text(t)) => t
                .parse()
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("`{t}` is not a number ({e})"))),
        }
    }
}

/// A value stored as JSON text inside a string, as earlier versions stored Rumprun's args/env.
mod json_str {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => {
                s.serialize_str(&serde_json::to_string(v).map_err(serde::ser::Error::custom)?)
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(t) if t.is_empty() => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `image.json` as the string-map version wrote it, for each target.
    #[test]
    fn details_written_by_the_previous_version_load() {
        let microvm = r#"{"config_digest":null,"kernel_version":"6.1.0-31-cloud-amd64","kernel_bytes":"7000000","vmlinux_bytes":"44100000","initrd_bytes":"1036000","modules":"virtio_ring,virtio,virtio_mmio,virtio_net","initramfs_unpacked_bytes":"2450000","min_memory_mib":"72"}"#;
        let d: ImageDetails = serde_json::from_str(microvm).unwrap();
        assert_eq!(d.kernel_version.as_deref(), Some("6.1.0-31-cloud-amd64"));
        assert_eq!(
            (d.kernel_bytes, d.initrd_bytes, d.min_memory_mib),
            (Some(7_000_000), Some(1_036_000), Some(72))
        );
        let rumprun = r#"{"hw_virtio_unstripped_bytes":"4000000","hw_virtio_bytes":"2900000","xen_pv":"not baked: the toolchain has no Xen platform","toolchain":"/opt/rumprun/bin","toolchain_origin":"PATH","argv0":"hello","args":"[\"--default\"]","env":"[[\"PORT\",\"8080\"]]","ports":"8080/tcp","something_new":"ignored"}"#;
        let d: ImageDetails = serde_json::from_str(rumprun).unwrap();
        assert_eq!(d.hw_virtio_bytes, Some(2_900_000));
        assert_eq!(d.args, Some(vec!["--default".to_string()]));
        assert_eq!(d.env, Some(vec![("PORT".to_string(), "8080".to_string())]));
        // And it is written back in the same shape.
        let again = serde_json::to_value(&d).unwrap();
        assert_eq!(again["args"], "[\"--default\"]");
        assert_eq!(again["hw_virtio_bytes"], "2900000");
        assert!(again.get("kernel_bytes").is_none());
        let oci: ImageDetails = serde_json::from_str(r#"{"config_digest":"sha256:ab"}"#).unwrap();
        assert_eq!(oci.config_digest.as_deref(), Some("sha256:ab"));
    }

    #[test]
    fn a_damaged_image_json_says_rebuild() {
        let t = std::env::temp_dir().join(format!("bakeoff-launch-image-{}", std::process::id()));
        fs_err::create_dir_all(&t).unwrap();
        fs_err::write(t.join("image.json"), r#"{"details":{"initrd_bytes":"x"}}"#).unwrap();
        let e = Image::load(&t).unwrap_err().to_string();
        assert!(
            e.contains("image.json is damaged (") && e.ends_with("; remove it and build again"),
            "{e}"
        );
        let _ = fs_err::remove_dir_all(&t);
    }
}
