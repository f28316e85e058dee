//! Images in and out of an OCI registry: `push` sends the container image as it is, and the
//! microVM (kernel, initramfs, run config) and the Rumprun unikernel (where a toolchain made
//! one) as OCI artifacts of their own; a registry reference given as APP is pulled (every byte
//! checked against its digest). The container image is the app's description (plan, check);
//! each platform then boots what was pushed for it: Docker loads the pulled image as it is,
//! QEMU boots the pulled kernel and initramfs, Rumprun the pulled unikernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bakeoff_launch::{Image, ImageDetails, MICROVM_INITRD_FILE};
use bakeoff_registry::artifact::{self as art, Layer};
use bakeoff_registry::{Client, Reference, RegistryError};
use bakeoff_spec::Target;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{Prepared, Runtime, RuntimeError};

pub use bakeoff_registry::artifact::{
    MICROVM_ARTIFACT, MICROVM_CONFIG, MICROVM_INITRD, MICROVM_KERNEL, RUMPRUN_ARTIFACT,
};
const OCI_MANIFEST: &str = art::OCI_MANIFEST;
/// The largest layer pulled (as stored, compressed): what a build would unpack at most.
const MAX_LAYER_BYTES: u64 = 16 << 30;

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

/// A container image pulled from a registry: where its files are and what names it.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub reference: Reference,
    /// Digest of the image manifest (what `push` printed for the `oci` target).
    pub manifest_digest: String,
    pub config_digest: String,
    /// The OCI layout tarball detection reads, and the same blobs as `docker load` takes.
    pub layout: PathBuf,
    pub docker_archive: PathBuf,
    /// Bytes of the layers as stored (compressed).
    pub layer_bytes: u64,
}

/// The tag of a target's artifact beside the container image's tag.
pub fn artifact_tag(r: &Reference, target: Target) -> Reference {
    r.with_tag(&format!("{}-{}", r.tag, target.as_str()))
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

/// Where a member of a tarball written by [`write_tar`] comes from.
enum Source {
    Bytes(Vec<u8>),
    /// Streamed from this file.
    File(PathBuf),
}

/// Writes `files` as a tar at `dest`, streaming file members (through a temp name, so a reader
/// never sees half).
fn write_tar(dest: &Path, files: &[(String, Source)]) -> Result<(), RuntimeError> {
    let part = dest.with_extension(format!("part-{}", std::process::id()));
    let out = std::io::BufWriter::new(fs_err::File::create(&part)?);
    let mut tar = tar::Builder::new(out);
    for (name, source) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match source {
            Source::Bytes(data) => {
                h.set_size(data.len() as u64);
                h.set_cksum();
                tar.append_data(&mut h, name, &data[..])?;
            }
            Source::File(path) => {
                let f = fs_err::File::open(path)?;
                h.set_size(f.metadata()?.len());
                h.set_cksum();
                tar.append_data(&mut h, name, f)?;
            }
        }
    }
    let mut out = tar.into_inner()?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    fs_err::rename(&part, dest)?;
    Ok(())
}

/// The hex digits of a `sha256:HEX` digest (already checked to be one).
fn hex_of(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

/// A number that differs between calls in one process.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

impl Runtime {
    fn push_one(
        &self,
        target: Target,
        r: &Reference,
        blobs: Vec<Bytes>,
        manifest: Bytes,
    ) -> Result<Pushed, RuntimeError> {
        self.say(&format!("pushing the {target} image to {r}"));
        let start = Instant::now();
        let client = Client::new(&r.registry);
        let (repo, tag) = (r.repo.clone(), r.tag.clone());
        let (digest, bytes, uploaded) = on_thread(async move {
            push_all(&client, &repo, &tag, blobs, manifest, OCI_MANIFEST).await
        })?;
        Ok(Pushed {
            target,
            reference: r.to_string(),
            digest,
            bytes,
            uploaded,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Pushes the app's container image to `reference`, its microVM to `reference-microvm` and,
    /// where a Rumprun toolchain makes one, its unikernel to `reference-rumprun`.
    pub fn push(&self, app: &str, reference: &str) -> Result<Vec<Pushed>, RuntimeError> {
        let r = Reference::parse(reference)?;
        let prepared = self.prepare(app)?;
        let m = &prepared.artifact.manifest;
        let mut out = Vec::new();

        // The container image, exactly as packed (its layout's blobs and manifest).
        let image = self.pack(&prepared.artifact, Target::Oci, None)?;
        let layout = image
            .dir
            .join(image.files.get("layout").expect("oci images have a layout"));
        let unreadable = |what: &str, e: serde_json::Error| {
            RuntimeError::Unavailable(format!("the packed OCI {what} is unreadable: {e}"))
        };
        let index: Value = serde_json::from_slice(&fs_err::read(layout.join("index.json"))?)
            .map_err(|e| unreadable("index", e))?;
        let blob = |d: &str| layout.join(blob_name(d));
        let mdigest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let manifest = read(&blob(&mdigest))?;
        let v: Value = serde_json::from_slice(&manifest).map_err(|e| unreadable("manifest", e))?;
        let mut blobs = vec![read(&blob(
            v["config"]["digest"].as_str().unwrap_or_default(),
        ))?];
        for l in v["layers"].as_array().into_iter().flatten() {
            blobs.push(read(&blob(l["digest"].as_str().unwrap_or_default()))?);
        }
        let oci = self.push_one(Target::Oci, &r, blobs, manifest)?;
        let oci_digest = oci.digest.clone();
        out.push(oci);

        // The microVM as an OCI artifact: kernel, initramfs, and the run config bakeoff's PID 1
        // is given; annotations named as urunc names them.
        let vm = self.pack(&prepared.artifact, Target::MicroVm, None)?;
        let role = |role: &str| {
            vm.file(role).ok_or_else(|| {
                RuntimeError::Unavailable(format!("the microVM image has no {role}"))
            })
        };
        // The kernel as compressed as the image has it (the minimal kernel's or Debian's
        // bzImage); a pull extracts the vmlinux that microvm and Xen load.
        let kernel = role("kernel")?;
        let kernel_title = if kernel == role("vmlinux")? {
            "vmlinux"
        } else {
            "bzImage"
        };
        let vm_artifact = art::artifact(
            MICROVM_ARTIFACT,
            vec![
                Layer {
                    media_type: MICROVM_KERNEL,
                    title: kernel_title,
                    data: read(&kernel)?,
                },
                Layer {
                    media_type: MICROVM_INITRD,
                    title: MICROVM_INITRD_FILE,
                    data: read(&role("initrd")?)?,
                },
                Layer {
                    media_type: MICROVM_CONFIG,
                    title: "artifact.json",
                    data: Bytes::from(serde_json::to_vec_pretty(m).expect("manifest serializes")),
                },
            ],
            art::microvm_annotations(
                &m.name,
                &m.id,
                kernel_title,
                &oci_digest,
                &art::MicrovmFacts {
                    kernel_version: vm.details.kernel_version.clone().unwrap_or_default(),
                    kernel_config: vm.details.kernel_config.clone(),
                    kernel_timer_hz: vm.details.kernel_timer_hz,
                    min_memory_mib: vm.details.min_memory_mib,
                },
            ),
        );
        out.push(self.push_one(
            Target::MicroVm,
            &artifact_tag(&r, Target::MicroVm),
            vm_artifact.blobs,
            vm_artifact.manifest,
        )?);

        // The unikernel, where this host can make one (the check and a toolchain allow it).
        let rumprun_ok = prepared.check(bakeoff_spec::Platform::Rumprun).is_ok()
            && bakeoff_pack::rumprun::find_toolchain(prepared.plan.rumprun_toolchain.as_deref(), {
                let d = Path::new(&prepared.plan.input);
                d.is_dir().then_some(d)
            })
            .is_ok();
        if !rumprun_ok {
            self.say("no Rumprun unikernel pushed: the check or a missing Rumprun toolchain rules it out here");
            self.record_push(&m.id, &out)?;
            return Ok(out);
        }
        let uk = self.pack(&prepared.artifact, Target::Rumprun, None)?;
        let kernel = uk
            .require("kernel", "hw_virtio kernel")
            .map_err(RuntimeError::Render)?;
        let uk_artifact = rumprun_artifact(&uk, read(&kernel)?, &oci_digest);
        out.push(self.push_one(
            Target::Rumprun,
            &artifact_tag(&r, Target::Rumprun),
            uk_artifact.blobs,
            uk_artifact.manifest,
        )?);
        self.record_push(&m.id, &out)?;
        Ok(out)
    }

    /// Where the last push of an artifact is recorded (`export --format k8s` takes its
    /// references from there). In the state directory, not the cache: a push is something
    /// this user did, not a content-addressed build product another user of the cache shares.
    fn push_record(&self, artifact_id: &str) -> PathBuf {
        self.state
            .root()
            .join("pushed")
            .join(format!("{artifact_id}.json"))
    }

    fn record_push(&self, artifact_id: &str, pushed: &[Pushed]) -> Result<(), RuntimeError> {
        let path = self.push_record(artifact_id);
        fs_err::create_dir_all(path.parent().expect("the record is in a directory"))?;
        let part = path.with_extension("part");
        fs_err::write(
            &part,
            serde_json::to_vec_pretty(pushed).expect("push records serialize"),
        )?;
        fs_err::rename(&part, &path)?;
        Ok(())
    }

    /// The references the last push of this artifact made, by target (`REF@DIGEST`).
    pub fn pushed_references(&self, artifact_id: &str) -> BTreeMap<Target, String> {
        let Ok(text) = fs_err::read(self.push_record(artifact_id)) else {
            return BTreeMap::new();
        };
        let rows: Vec<Value> = serde_json::from_slice(&text).unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                let target: Target = serde_json::from_value(r["target"].clone()).ok()?;
                Some((
                    target,
                    format!("{}@{}", r["reference"].as_str()?, r["digest"].as_str()?),
                ))
            })
            .collect()
    }

    /// Pulls the container image at `r` into the cache: an OCI layout tarball (what detection
    /// reads) and a `docker load` archive of the same blobs. Every manifest and blob is checked
    /// against its digest.
    pub(crate) fn pull_image(&self, r: &Reference) -> Result<PulledImage, RuntimeError> {
        self.say(&format!("pulling {r}"));
        let start = Instant::now();
        let client = Client::new(&r.registry);
        let (repo, tag) = (r.repo.clone(), r.tag.clone());
        let registry = r.registry.clone();
        let dir = self.cache.root().join("imports");
        fs_err::create_dir_all(&dir)?;
        // Blobs go to files as they arrive, each checked against its digest and bounded by its
        // descriptor's size; the two tarballs are then written from those files.
        let part = dir.join(format!("pull-{}-{}", std::process::id(), unique()));
        fs_err::create_dir_all(&part)?;
        let blobs_dir = part.clone();
        let pulled = on_thread(async move {
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
                        registry,
                        what: format!("linux/amd64 image in the index {repo}:{tag}"),
                    });
                };
                if !d.starts_with("sha256:") {
                    return Err(RegistryError::Unexpected {
                        what: format!("{registry}/{repo}:{tag}"),
                        detail: format!("names its image by an unusable digest `{d}`"),
                    });
                }
                m = client.pull_manifest(&repo, &d).await?;
                v = serde_json::from_slice(&m.bytes).unwrap_or_default();
            }
            if v.get("artifactType").is_some() || v["config"]["mediaType"] == art::EMPTY {
                return Err(RegistryError::Unexpected {
                    what: format!("{registry}/{repo}:{tag}"),
                    detail: format!(
                        "is an artifact ({}), not a container image; give the container image's tag",
                        v["artifactType"].as_str().unwrap_or("empty config")
                    ),
                });
            }
            let unusable = |detail: String| RegistryError::Unexpected {
                what: format!("{registry}/{repo}:{tag}"),
                detail,
            };
            let config = v["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if bakeoff_detect::oci::blob_member(&config).is_none() {
                return Err(unusable(format!(
                    "names its configuration by an unusable digest `{config}`"
                )));
            }
            let config_bytes = client.pull_blob(&repo, &config).await?;
            fs_err::write(blobs_dir.join(hex_of(&config)), &config_bytes).map_err(|e| {
                RegistryError::Write {
                    path: blobs_dir.clone(),
                    source: e,
                }
            })?;
            let layers = v["layers"].as_array().cloned().unwrap_or_default();
            if layers.len() > bakeoff_detect::oci::MAX_LAYERS {
                return Err(unusable(format!(
                    "has {} layers; at most {} are pulled",
                    layers.len(),
                    bakeoff_detect::oci::MAX_LAYERS
                )));
            }
            let mut got = Vec::new();
            for l in layers {
                let d = l["digest"].as_str().unwrap_or_default().to_string();
                if bakeoff_detect::oci::blob_member(&d).is_none() {
                    return Err(unusable(format!(
                        "names a layer by an unusable digest `{d}`"
                    )));
                }
                let Some(size) = l["size"].as_u64() else {
                    return Err(unusable(format!("gives no size for its layer {d}")));
                };
                if size > MAX_LAYER_BYTES {
                    return Err(unusable(format!(
                        "has a layer of {size} bytes; at most {} GiB is pulled",
                        MAX_LAYER_BYTES >> 30
                    )));
                }
                let n = client
                    .pull_blob_to(&repo, &d, size, &blobs_dir.join(hex_of(&d)))
                    .await?;
                got.push((d, n));
            }
            Ok((m, config, config_bytes.len() as u64, got))
        });
        let (manifest, config_digest, config_len, layers) = match pulled {
            Ok(p) => p,
            Err(e) => {
                let _ = fs_err::remove_dir_all(&part);
                return Err(e.into());
            }
        };
        let hex = manifest.digest.trim_start_matches("sha256:").to_string();
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest.digest, "size": manifest.bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": r.to_string()}}]});
        let index = serde_json::to_vec(&index).expect("index serializes");
        let docker_manifest = serde_json::to_vec(&json!([{
            "Config": blob_name(&config_digest),
            "RepoTags": [r.to_string()],
            "Layers": layers.iter().map(|(d, _)| blob_name(d)).collect::<Vec<_>>(),
        }]))
        .expect("manifest serializes");
        let mut files: Vec<(String, Source)> = vec![
            (
                "oci-layout".into(),
                Source::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ),
            ("index.json".into(), Source::Bytes(index)),
            (
                blob_name(&manifest.digest),
                Source::Bytes(manifest.bytes.to_vec()),
            ),
        ];
        for d in std::iter::once(&config_digest).chain(layers.iter().map(|(d, _)| d)) {
            files.push((blob_name(d), Source::File(part.join(hex_of(d)))));
        }
        let layout = dir.join(format!("{hex}.tar"));
        let written = write_tar(&layout, &files).and_then(|()| {
            // Docker 20.10 loads `docker save`'s format (manifest.json), not an OCI layout.
            files.insert(2, ("manifest.json".into(), Source::Bytes(docker_manifest)));
            write_tar(&dir.join(format!("{hex}.docker.tar")), &files)
        });
        let _ = fs_err::remove_dir_all(&part);
        written?;
        let docker_archive = dir.join(format!("{hex}.docker.tar"));
        let layer_bytes: u64 = layers.iter().map(|(_, n)| n).sum();
        let bytes = manifest.bytes.len() as u64 + config_len + layer_bytes;
        self.say(&format!(
            "pulled {r} (oci): {bytes} bytes in {:.2}s, digests verified",
            start.elapsed().as_secs_f64()
        ));
        Ok(PulledImage {
            reference: r.clone(),
            manifest_digest: manifest.digest,
            config_digest,
            layout,
            docker_archive,
            layer_bytes,
        })
    }

    /// For an app pulled from a registry: a Rumprun unikernel pushed beside the container image
    /// (`REF-rumprun`, of this same push) makes Rumprun runnable, although the check of the
    /// container image refuses it (prebuilt Linux binaries). Anything else leaves the verdicts.
    pub(crate) fn pushed_verdicts(
        &self,
        pulled: &PulledImage,
        verdicts: &mut [bakeoff_elf::Verdict],
    ) {
        let r = artifact_tag(&pulled.reference, Target::Rumprun);
        let client = Client::new(&r.registry);
        let (repo, tag) = (r.repo.clone(), r.tag.clone());
        let Ok(manifest) = on_thread(async move { client.pull_manifest(&repo, &tag).await }) else {
            return;
        };
        let Ok(m) = serde_json::from_slice::<art::Pulled>(&manifest.bytes) else {
            return;
        };
        if m.artifact_type.as_deref() != Some(RUMPRUN_ARTIFACT)
            || m.annotations.get(art::ANNOT_OCI_MANIFEST) != Some(&pulled.manifest_digest)
        {
            return;
        }
        for v in verdicts
            .iter_mut()
            .filter(|v| v.platform == bakeoff_spec::Platform::Rumprun)
        {
            v.runnable = true;
            v.reasons = vec![format!(
                "a Rumprun unikernel of this app was pushed beside the image ({r})"
            )];
        }
    }

    /// The image `target` boots for this app: for an app pulled from a registry, what was
    /// pushed for that target (the container image as pulled, the microVM or unikernel
    /// artifact pulled now); otherwise (or with `--kernel`) the image packed from the artifact.
    pub fn image_for(
        &self,
        prepared: &Prepared,
        target: Target,
        kernel: Option<PathBuf>,
    ) -> Result<Image, RuntimeError> {
        let Some(pulled) = &prepared.pulled else {
            return self.pack(&prepared.artifact, target, kernel);
        };
        match target {
            Target::Oci => Ok(Image {
                target: Target::Oci,
                name: prepared.plan.name.clone(),
                artifact_id: prepared.artifact.manifest.id.clone(),
                digest: pulled.manifest_digest.clone(),
                dir: pulled
                    .docker_archive
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                files: [
                    ("archive".to_string(), pulled.docker_archive.clone()),
                    ("layout".to_string(), pulled.layout.clone()),
                ]
                .into_iter()
                .collect(),
                size_bytes: prepared.artifact.closure_size()?,
                compressed_bytes: pulled.layer_bytes,
                reference: Some(pulled.reference.to_string()),
                details: ImageDetails {
                    config_digest: Some(pulled.config_digest.clone()),
                    ..ImageDetails::default()
                },
            }),
            Target::MicroVm if kernel.is_none() => self.pull_artifact(pulled, Target::MicroVm),
            Target::Rumprun => self.pull_artifact(pulled, Target::Rumprun),
            // A kernel of the user's: the microVM is packed here from the pulled image.
            _ => self.pack(&prepared.artifact, target, kernel),
        }
    }

    /// Pulls the artifact pushed for `target` beside the container image `pulled` into
    /// `cache/pulled/TARGET/DIGEST/` and describes it as an [`Image`].
    fn pull_artifact(&self, pulled: &PulledImage, target: Target) -> Result<Image, RuntimeError> {
        let r = artifact_tag(&pulled.reference, target);
        let (artifact_type, files): (&str, &[(&str, &str)]) = match target {
            Target::MicroVm => (
                MICROVM_ARTIFACT,
                &[
                    (MICROVM_KERNEL, "kernel"),
                    (MICROVM_INITRD, MICROVM_INITRD_FILE),
                    (MICROVM_CONFIG, "artifact.json"),
                ],
            ),
            _ => (
                RUMPRUN_ARTIFACT,
                &[
                    (art::RUMPRUN_KERNEL, "kernel"),
                    (art::RUMPRUN_CONFIG, "rumprun.json"),
                ],
            ),
        };
        self.say(&format!("pulling {r}"));
        let start = Instant::now();
        let client = Client::new(&r.registry);
        let (repo, tag) = (r.repo.clone(), r.tag.clone());
        let manifest = on_thread(async move { client.pull_manifest(&repo, &tag).await })?;
        let unexpected = |detail: String| {
            RuntimeError::Registry(RegistryError::Unexpected {
                what: r.to_string(),
                detail,
            })
        };
        let m: art::Pulled = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| unexpected(format!("is not an OCI manifest ({e})")))?;
        if m.artifact_type.as_deref() != Some(artifact_type) {
            return Err(unexpected(format!(
                "is not a bakeoff {target} artifact (its artifactType is {}, expected {artifact_type})",
                m.artifact_type.as_deref().unwrap_or("absent")
            )));
        }
        let beside = m.annotations.get(art::ANNOT_OCI_MANIFEST);
        if beside != Some(&pulled.manifest_digest) {
            return Err(unexpected(format!(
                "was pushed with another container image ({}) than {} ({}); push them again together with `bakeoff push`",
                beside.map(String::as_str).unwrap_or("none recorded"),
                pulled.reference,
                pulled.manifest_digest
            )));
        }
        let mut wanted = Vec::new();
        for (media, file) in files {
            let l = m
                .layer(media)
                .ok_or_else(|| unexpected(format!("has no single layer of type {media}")))?;
            if bakeoff_detect::oci::blob_member(&l.digest).is_none() {
                return Err(unexpected(format!(
                    "names a layer by an unusable digest `{}`",
                    l.digest
                )));
            }
            wanted.push((l.digest.clone(), l.size, file.to_string()));
        }
        let hex = manifest.digest.trim_start_matches("sha256:");
        let dir = self
            .cache
            .root()
            .join("pulled")
            .join(target.as_str())
            .join(&hex[..32]);
        let mut bytes = manifest.bytes.len() as u64;
        if !dir.join("image.json").exists() {
            let client = Client::new(&r.registry);
            let repo = r.repo.clone();
            let list = wanted.clone();
            let part = dir.with_extension(format!("part-{}", std::process::id()));
            let _ = fs_err::remove_dir_all(&part);
            fs_err::create_dir_all(&part)?;
            let into = part.clone();
            // Each file is streamed to disk, bounded by its descriptor's size.
            let got = on_thread(async move {
                let mut n = 0;
                for (digest, size, file) in list {
                    n += client
                        .pull_blob_to(&repo, &digest, size, &into.join(file))
                        .await?;
                }
                Ok(n)
            });
            match got {
                Ok(n) => bytes += n,
                Err(e) => {
                    let _ = fs_err::remove_dir_all(&part);
                    return Err(e.into());
                }
            }
            if target == Target::MicroVm {
                if let Err(e) = vmlinux_of_pulled_kernel(&part) {
                    let _ = fs_err::remove_dir_all(&part);
                    return Err(unexpected(e));
                }
            }
            let image = pulled_image(target, &r, &manifest.digest, &m, &part)?;
            fs_err::write(
                part.join("image.json"),
                serde_json::to_vec_pretty(&image).expect("images serialize"),
            )?;
            if let Some(p) = dir.parent() {
                fs_err::create_dir_all(p)?;
            }
            if fs_err::rename(&part, &dir).is_err() {
                // Another pull of the same digest won the race; its files are the same.
                let _ = fs_err::remove_dir_all(&part);
            }
            self.say(&format!(
                "pulled {r} ({target}): {bytes} bytes in {:.2}s, digests verified",
                start.elapsed().as_secs_f64()
            ));
        } else {
            self.say(&format!(
                "{r} ({target}): already pulled, digest {}",
                manifest.digest
            ));
        }
        Image::load(&dir).map_err(RuntimeError::Render)
    }
}

/// The vmlinux of a pulled microVM's `kernel` file, as `vmlinux` beside it: extracted when the
/// kernel is a bzImage (without its padding, as a packed image has it), the file itself when it
/// is one already (an artifact pushed before the kernel layer became the bzImage).
fn vmlinux_of_pulled_kernel(dir: &Path) -> Result<(), String> {
    let kernel = dir.join("kernel");
    let data = fs_err::read(&kernel).map_err(|e| e.to_string())?;
    if bakeoff_guest::parse_bzimage(&data).is_none() {
        return fs_err::rename(&kernel, dir.join("vmlinux")).map_err(|e| e.to_string());
    }
    let vmlinux = bakeoff_guest::extract_vmlinux(&data)
        .map_err(|e| format!("has a kernel bakeoff cannot boot: {e}"))?;
    let vmlinux = bakeoff_guest::without_zero_gaps(&vmlinux)
        .ok_or("has a kernel whose payload is not an x86_64 ELF")?;
    fs_err::write(dir.join("vmlinux"), vmlinux).map_err(|e| e.to_string())
}

/// The [`Image`] of a pulled artifact whose files are in `dir`.
fn pulled_image(
    target: Target,
    r: &Reference,
    digest: &str,
    m: &art::Pulled,
    dir: &Path,
) -> Result<Image, RuntimeError> {
    let size = |f: &str| fs_err::metadata(dir.join(f)).map(|m| m.len());
    let name = m
        .annotations
        .get(art::TITLE)
        .cloned()
        .unwrap_or_else(|| r.repo.rsplit('/').next().unwrap_or("app").to_string());
    let artifact_id = m
        .annotations
        .get(art::ANNOT_ARTIFACT)
        .cloned()
        .unwrap_or_default();
    let (files, details, size_bytes, compressed): (Vec<(&str, &str)>, ImageDetails, u64, u64) =
        match target {
            Target::MicroVm => {
                let initrd = size(MICROVM_INITRD_FILE)?;
                let facts = art::MicrovmFacts::from_annotations(&m.annotations);
                // The bzImage when one was pushed, else the vmlinux (which QEMU boots on q35 too).
                let kernel = if dir.join("kernel").is_file() {
                    "kernel"
                } else {
                    "vmlinux"
                };
                let details = ImageDetails {
                    kernel_version: m.annotations.get(art::ANNOT_KERNEL).cloned(),
                    kernel_config: facts.kernel_config,
                    kernel_timer_hz: facts.kernel_timer_hz,
                    kernel_bytes: Some(size(kernel)?),
                    vmlinux_bytes: Some(size("vmlinux")?),
                    initrd_bytes: Some(initrd),
                    min_memory_mib: facts.min_memory_mib,
                    ..ImageDetails::default()
                };
                (
                    vec![
                        ("kernel", kernel),
                        ("vmlinux", "vmlinux"),
                        ("initrd", MICROVM_INITRD_FILE),
                    ],
                    details,
                    initrd,
                    initrd,
                )
            }
            _ => {
                let details: ImageDetails = serde_json::from_slice(&fs_err::read(
                    dir.join("rumprun.json"),
                )?)
                .map_err(|e| {
                    RuntimeError::Registry(RegistryError::Unexpected {
                        what: r.to_string(),
                        detail: format!("has an unreadable run config ({e})"),
                    })
                })?;
                let k = size("kernel")?;
                (vec![("kernel", "kernel")], details, k, k)
            }
        };
    Ok(Image {
        target,
        name,
        artifact_id,
        digest: digest.to_string(),
        dir: dir.to_path_buf(),
        files: files
            .into_iter()
            .map(|(role, f)| (role.to_string(), PathBuf::from(f)))
            .collect::<BTreeMap<_, _>>(),
        size_bytes,
        compressed_bytes: compressed,
        reference: Some(r.to_string()),
        details,
    })
}

/// The Rumprun unikernel as an artifact: the baked `hw_virtio` kernel and its run config
/// (program name, default args and env, ports: what Rumprun's boot JSON is made from).
pub fn rumprun_artifact(image: &Image, kernel: Bytes, oci_manifest: &str) -> art::Artifact {
    let d = &image.details;
    let mut cmdline = vec![d.argv0.clone().unwrap_or_else(|| image.name.clone())];
    cmdline.extend(d.args.clone().unwrap_or_default());
    art::artifact(
        RUMPRUN_ARTIFACT,
        vec![
            Layer {
                media_type: art::RUMPRUN_KERNEL,
                title: "kernel",
                data: kernel,
            },
            Layer {
                media_type: art::RUMPRUN_CONFIG,
                title: "rumprun.json",
                data: Bytes::from(serde_json::to_vec_pretty(d).expect("details serialize")),
            },
        ],
        art::rumprun_annotations(
            &image.name,
            &image.artifact_id,
            "kernel",
            &cmdline.join(" "),
            oci_manifest,
        ),
    )
}
