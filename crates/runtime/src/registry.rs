//! Images in and out of an OCI registry: `push` sends the container image as it is and the
//! microVM (kernel, initramfs, run config) as an OCI artifact of its own; a registry reference
//! given as APP is pulled (every byte checked against its digest) into an OCI layout tarball and
//! read like any `oci-archive:`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bakeoff_registry::{Client, Reference, RegistryError};
use bakeoff_spec::Target;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{Runtime, RuntimeError};

/// The microVM artifact's media types (ours: no standard one exists).
pub const MICROVM_ARTIFACT: &str = "application/vnd.bakeoff.microvm.v1";
pub const MICROVM_KERNEL: &str = "application/vnd.bakeoff.microvm.kernel.v1";
pub const MICROVM_INITRD: &str = "application/vnd.bakeoff.microvm.initrd.v1.cpio+gzip";
pub const MICROVM_CONFIG: &str = "application/vnd.bakeoff.microvm.config.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One target pushed.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub target: Target,
    pub reference: String,
    pub digest: String,
    /// Bytes of every blob and the manifest; `uploaded` leaves out what the registry had.
    pub bytes: u64,
    pub uploaded: u64,
    pub seconds: f64,
}

fn on_thread<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, RegistryError>> + Send + 'static,
) -> Result<T, RegistryError> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f)
    })
    .join()
    .expect("the registry thread does not panic")
}

fn read(path: &Path) -> Result<Bytes, RuntimeError> {
    Ok(Bytes::from(fs_err::read(path)?))
}

async fn push_all(
    client: &Client,
    repo: &str,
    tag: &str,
    blobs: Vec<Bytes>,
    manifest: Bytes,
    media_type: &str,
) -> Result<(String, u64, u64), RegistryError> {
    let (mut total, mut uploaded) = (manifest.len() as u64, manifest.len() as u64);
    for blob in blobs {
        let n = blob.len() as u64;
        total += n;
        if client.push_blob(repo, blob).await?.1 {
            uploaded += n;
        }
    }
    let digest = client
        .push_manifest(repo, tag, media_type, manifest)
        .await?;
    Ok((digest, total, uploaded))
}

impl Runtime {
    /// Pushes the app's container image to `reference` and its microVM to `reference-microvm`.
    pub fn push(&self, app: &str, reference: &str) -> Result<Vec<Pushed>, RuntimeError> {
        let r = Reference::parse(reference)?;
        let prepared = self.prepare(app)?;
        let mut out = Vec::new();

        // The container image, exactly as packed (its layout's blobs and manifest).
        let image = self.pack(&prepared.artifact, Target::Oci, None)?;
        let layout = image
            .dir
            .join(image.files.get("layout").expect("oci images have a layout"));
        let index: Value = serde_json::from_slice(&fs_err::read(layout.join("index.json"))?)
            .map_err(|e| {
                RuntimeError::Unavailable(format!("the packed OCI index is unreadable: {e}"))
            })?;
        let blob = |d: &str| {
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let mdigest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let manifest = read(&blob(&mdigest))?;
        let m: Value = serde_json::from_slice(&manifest).map_err(|e| {
            RuntimeError::Unavailable(format!("the packed OCI manifest is unreadable: {e}"))
        })?;
        let mut blobs = vec![read(&blob(
            m["config"]["digest"].as_str().unwrap_or_default(),
        ))?];
        for l in m["layers"].as_array().into_iter().flatten() {
            blobs.push(read(&blob(l["digest"].as_str().unwrap_or_default()))?);
        }
        self.say(&format!("pushing the oci image to {r}"));
        let start = Instant::now();
        let client = Client::new(&r.registry);
        let (repo, tag) = (r.repo.clone(), r.tag.clone());
        let (digest, bytes, uploaded) = on_thread(async move {
            push_all(&client, &repo, &tag, blobs, manifest, OCI_MANIFEST).await
        })?;
        out.push(Pushed {
            target: Target::Oci,
            reference: r.to_string(),
            digest,
            bytes,
            uploaded,
            seconds: start.elapsed().as_secs_f64(),
        });

        // The microVM as an OCI artifact: kernel, initramfs, and the run config bakeoff's PID 1
        // is given; annotations named as urunc names them.
        let vm = self.pack(&prepared.artifact, Target::MicroVm, None)?;
        let file = |role: &str| {
            vm.files
                .get(role)
                .map(|p| {
                    if p.is_absolute() {
                        p.clone()
                    } else {
                        vm.dir.join(p)
                    }
                })
                .ok_or_else(|| {
                    RuntimeError::Unavailable(format!("the microVM image has no {role}"))
                })
        };
        let kernel = read(&file("vmlinux")?)?;
        let initrd = read(&file("initrd")?)?;
        let run_config = Bytes::from(
            serde_json::to_vec_pretty(&prepared.artifact.manifest).expect("manifest serializes"),
        );
        let empty = Bytes::from_static(b"{}");
        let desc = |media: &str, data: &Bytes, title: Option<&str>| {
            let mut d = json!({"mediaType": media, "digest": bakeoff_registry::digest_of(data), "size": data.len()});
            if let Some(t) = title {
                d["annotations"] = json!({"org.opencontainers.image.title": t});
            }
            d
        };
        let annotations: BTreeMap<&str, String> = [
            ("com.urunc.unikernel.unikernelType", "linux".to_string()),
            ("com.urunc.unikernel.hypervisor", "qemu".to_string()),
            ("com.urunc.unikernel.binary", "/vmlinux".to_string()),
            (
                "com.urunc.unikernel.initrd",
                "/initramfs.cpio.gz".to_string(),
            ),
            (
                "org.opencontainers.image.title",
                prepared.artifact.manifest.name.clone(),
            ),
            (
                "dev.bakeoff.artifact",
                prepared.artifact.manifest.id.clone(),
            ),
            (
                "dev.bakeoff.kernel",
                vm.details.kernel_version.clone().unwrap_or_default(),
            ),
        ]
        .into_iter()
        .collect();
        let manifest = Bytes::from(
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": MICROVM_ARTIFACT,
                "config": desc(EMPTY, &empty, None),
                "layers": [
                    desc(MICROVM_KERNEL, &kernel, Some("vmlinux")),
                    desc(MICROVM_INITRD, &initrd, Some("initramfs.cpio.gz")),
                    desc(MICROVM_CONFIG, &run_config, Some("artifact.json")),
                ],
                "annotations": annotations,
            }))
            .expect("manifest serializes"),
        );
        let vr = r.with_tag(&format!("{}-microvm", r.tag));
        self.say(&format!("pushing the microvm artifact to {vr}"));
        let start = Instant::now();
        let client = Client::new(&vr.registry);
        let (repo, tag) = (vr.repo.clone(), vr.tag.clone());
        let (digest, bytes, uploaded) = on_thread(async move {
            push_all(
                &client,
                &repo,
                &tag,
                vec![empty, kernel, initrd, run_config],
                manifest,
                OCI_MANIFEST,
            )
            .await
        })?;
        out.push(Pushed {
            target: Target::MicroVm,
            reference: vr.to_string(),
            digest,
            bytes,
            uploaded,
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(out)
    }

    /// Pulls the container image at `r` into an OCI layout tarball under the cache; returns its
    /// path. Every manifest and blob is checked against its digest.
    pub(crate) fn pull_image(&self, r: &Reference) -> Result<PathBuf, RuntimeError> {
        self.say(&format!("pulling {r}"));
        let start = Instant::now();
        let client = Client::new(&r.registry);
        let (repo, tag) = (r.repo.clone(), r.tag.clone());
        let (manifest, blobs) = on_thread(async move {
            let mut m = client.pull_manifest(&repo, &tag).await?;
            let mut v: Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
            if v["manifests"].is_array() {
                // An index: the linux/amd64 image in it.
                let pick = v["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|d| {
                        d["platform"]["architecture"] == "amd64" && d["platform"]["os"] == "linux"
                    })
                    .and_then(|d| d["digest"].as_str())
                    .map(str::to_string);
                let Some(d) = pick else {
                    return Err(RegistryError::NotFound {
                        registry: client_registry(&tag),
                        what: format!("linux/amd64 image in the index {repo}:{tag}"),
                    });
                };
                m = client.pull_manifest(&repo, &d).await?;
                v = serde_json::from_slice(&m.bytes).unwrap_or_default();
            }
            let mut blobs = Vec::new();
            let config = v["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            blobs.push((config.clone(), client.pull_blob(&repo, &config).await?));
            for l in v["layers"].as_array().into_iter().flatten() {
                let d = l["digest"].as_str().unwrap_or_default().to_string();
                let b = client.pull_blob(&repo, &d).await?;
                blobs.push((d, b));
            }
            Ok((m, blobs))
        })?;
        let dir = self.cache.root().join("imports");
        fs_err::create_dir_all(&dir)?;
        let dest = dir.join(format!(
            "{}.tar",
            manifest.digest.trim_start_matches("sha256:")
        ));
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data)
        };
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest.digest, "size": manifest.bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": r.to_string()}}]});
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add(
            "index.json",
            &serde_json::to_vec(&index).expect("index serializes"),
        )?;
        let mut bytes = manifest.bytes.len() as u64;
        add(
            &format!(
                "blobs/sha256/{}",
                manifest.digest.trim_start_matches("sha256:")
            ),
            &manifest.bytes,
        )?;
        for (d, b) in &blobs {
            bytes += b.len() as u64;
            add(
                &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
                b,
            )?;
        }
        let part = dest.with_extension("part");
        fs_err::write(&part, tar.into_inner()?)?;
        fs_err::rename(&part, &dest)?;
        self.say(&format!(
            "pulled {r}: {bytes} bytes in {:.2}s, digests verified",
            start.elapsed().as_secs_f64()
        ));
        Ok(dest)
    }
}

fn client_registry(tag: &str) -> String {
    format!("(tag {tag})")
}
