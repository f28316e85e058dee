//! OCI images as app input: a `docker save` tarball, an OCI image layout tarball, or an OCI
//! image layout directory (`oci:DIR`).
//!
//! Reading an archive is an index of its members (name → offset, size) plus the JSON documents
//! that say what the image is: the index or Docker's `manifest.json`, the image manifest and the
//! image configuration (typed with `oci-spec`). Layers are only located here; `bakeoff-build`
//! applies them. Every name that leads to a blob is checked: a digest must be `sha256:` + 64 hex
//! digits, and a Docker `manifest.json` path must stay inside the archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::DetectError;

/// The architecture this host runs, in OCI's words.
pub const HOST_ARCH: &str = "amd64";

/// The largest JSON document (index, manifest, configuration, `manifest.json`) read: what the
/// OCI distribution spec asks registries to accept for a manifest.
pub const MAX_DOCUMENT: u64 = 4 << 20;
/// Members of an archive (files of a layout directory) indexed, at most.
pub const MAX_MEMBERS: usize = 100_000;
/// Descriptors looked at while walking an index and its nested indexes, at most (each nested
/// index blob is read once, however often it is named).
pub const MAX_DESCRIPTORS: usize = 1024;
/// Layers of one image, at most (Docker itself stops at 127).
pub const MAX_LAYERS: usize = 256;

/// One member of the archive: where its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub size: u64,
}

/// A layer to apply: the archive member holding it, and its digest when the archive names one
/// (OCI blobs are checked against it when read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub member: String,
    pub digest: Option<String>,
}

/// What an image archive holds, read and checked.
#[derive(Debug, Clone)]
pub struct ImageArchive {
    pub path: PathBuf,
    /// True for a layout directory (members are its files), false for a tarball.
    is_dir: bool,
    members: HashMap<String, Member>,
    pub config: ImageConfiguration,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    /// The repository name the archive records (`hello` for `hello:latest`), if any.
    pub repo: Option<String>,
}

/// Docker's `manifest.json` entry (docker save).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn bad(path: &Path, reason: impl Into<String>) -> DetectError {
    DetectError::BadImage {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A member name as tar writes it, normalised: no leading `./`, no trailing `/`.
fn normal(name: &str) -> String {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("./") {
        n = rest;
    }
    n.trim_end_matches('/').to_string()
}

/// `blobs/sha256/HEX` for a digest, refusing anything but sha256 and 64 lower-case hex digits
/// (the digest comes from the archive and must not steer the path).
pub fn blob_member(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| format!("blobs/sha256/{hex}"))
}

impl ImageArchive {
    /// Reads the archive (or layout directory) at `path` and picks the linux/amd64 image in it.
    pub fn open(path: &Path) -> Result<ImageArchive, DetectError> {
        if path.is_dir() {
            let mut members = HashMap::new();
            dir_members(path, path, 0, &mut members)?;
            let image = ImageArchive {
                path: path.to_path_buf(),
                is_dir: true,
                members,
                config: ImageConfiguration::default(),
                layers: Vec::new(),
                repo: None,
            };
            if !image.members.contains_key("index.json") {
                return Err(bad(
                    path,
                    "it is not an OCI image layout directory (it has no index.json; expected what `skopeo copy … oci:DIR` or `docker buildx … --output type=oci,tar=false` writes)",
                ));
            }
            return image.read();
        }
        let file = File::open(path).map_err(|e| DetectError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let not_image = || {
            bad(
                path,
                "it is not an image archive (expected the tarball of `docker save` or of an OCI image layout)",
            )
        };
        let mut members = HashMap::new();
        let mut archive = tar::Archive::new(file);
        let entries = archive.entries_with_seek().map_err(|_| not_image())?;
        for entry in entries {
            let entry = entry.map_err(|_| not_image())?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            if members.len() >= MAX_MEMBERS {
                return Err(bad(
                    path,
                    format!("it holds more than {MAX_MEMBERS} files; no image needs that many"),
                ));
            }
            let name = normal(&String::from_utf8_lossy(&entry.path_bytes()));
            members.insert(
                name,
                Member {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
            );
        }
        let image = ImageArchive {
            path: path.to_path_buf(),
            is_dir: false,
            members,
            config: ImageConfiguration::default(),
            layers: Vec::new(),
            repo: None,
        };
        if !image.members.contains_key("index.json") && !image.members.contains_key("manifest.json")
        {
            return Err(not_image());
        }
        image.read()
    }

    /// Reads the documents of an OCI layout (or docker save) and checks the platform.
    fn read(mut self) -> Result<ImageArchive, DetectError> {
        let path = self.path.clone();
        let image = &mut self;
        if image.members.contains_key("index.json") {
            image.read_oci()?;
        } else {
            image.read_docker()?;
        }
        let arch = image.config.architecture().to_string();
        let os = image.config.os().to_string();
        if arch != HOST_ARCH || os != "linux" {
            return Err(bad(
                &path,
                format!("the image is for {os}/{arch}; this host runs linux/{HOST_ARCH} images"),
            ));
        }
        Ok(self)
    }

    /// The member's bytes (JSON documents are small; layers are streamed with [`Self::open_member`]).
    pub fn read_member(&self, name: &str) -> Result<Vec<u8>, DetectError> {
        let mut buf = Vec::new();
        self.open_member(name)?
            .read_to_end(&mut buf)
            .map_err(|e| DetectError::Io {
                path: self.path.clone(),
                source: e,
            })?;
        Ok(buf)
    }

    /// The size of a member, if the archive holds it.
    pub fn member_size(&self, name: &str) -> Option<u64> {
        self.members.get(&normal(name)).map(|m| m.size)
    }

    /// A reader over one member's bytes.
    pub fn open_member(&self, name: &str) -> Result<impl Read, DetectError> {
        let m = *self.members.get(&normal(name)).ok_or_else(|| {
            bad(
                &self.path,
                format!("it names {name}, which it does not hold"),
            )
        })?;
        let io = |e| DetectError::Io {
            path: self.path.clone(),
            source: e,
        };
        if self.is_dir {
            // Only names found as regular files by `dir_members` (no symlink followed) get here.
            let f = File::open(self.path.join(normal(name))).map_err(io)?;
            return Ok(f.take(m.size));
        }
        let mut f = File::open(&self.path).map_err(io)?;
        f.seek(SeekFrom::Start(m.offset)).map_err(io)?;
        Ok(f.take(m.size))
    }

    /// A JSON document of the archive, at most [`MAX_DOCUMENT`] bytes.
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<T, DetectError> {
        let bytes = self.read_document(name, what)?;
        self.parse(&bytes, name, what)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        name: &str,
        what: &str,
    ) -> Result<T, DetectError> {
        serde_json::from_slice(bytes).map_err(|e| {
            bad(
                &self.path,
                format!("its {what} ({name}) cannot be read: {e}"),
            )
        })
    }

    fn read_document(&self, name: &str, what: &str) -> Result<Vec<u8>, DetectError> {
        let size = self.members.get(&normal(name)).map_or(0, |m| m.size);
        if size > MAX_DOCUMENT {
            return Err(bad(
                &self.path,
                format!(
                    "its {what} ({name}) is {size} bytes; a document of more than {} MiB is not read",
                    MAX_DOCUMENT >> 20
                ),
            ));
        }
        self.read_member(name)
    }

    /// The JSON document a descriptor names, checked against the descriptor's digest (and
    /// size, when it gives one) before it is parsed.
    fn json_blob<T: serde::de::DeserializeOwned>(
        &self,
        digest: &str,
        size: Option<u64>,
        what: &str,
    ) -> Result<T, DetectError> {
        let member = self.blob(digest)?;
        let bytes = self.read_document(&member, what)?;
        if let Some(size) = size.filter(|s| *s != bytes.len() as u64) {
            return Err(bad(
                &self.path,
                format!(
                    "its {what} {digest} is {} bytes, not {size} as its descriptor says",
                    bytes.len()
                ),
            ));
        }
        let actual = sha256_of(&bytes);
        if actual != digest {
            return Err(bad(
                &self.path,
                format!("its {what} {member} has digest {actual}, not {digest}"),
            ));
        }
        self.parse(&bytes, &member, what)
    }

    fn blob(&self, digest: &str) -> Result<String, DetectError> {
        blob_member(digest).ok_or_else(|| {
            bad(
                &self.path,
                format!("it names a blob by an unusable digest `{digest}`"),
            )
        })
    }

    fn read_oci(&mut self) -> Result<(), DetectError> {
        let index: ImageIndex = self.json("index.json", "index")?;
        let mut manifest = None;
        let mut seen = Vec::new();
        // An index may point at nested indexes (a multi-platform image): follow them, three
        // levels deep at most, each nested index read once, [`MAX_DESCRIPTORS`] in all.
        let mut descriptors: Vec<_> = index.manifests().clone();
        let mut read_indexes = std::collections::HashSet::new();
        let mut looked_at = 0;
        let mut depth = 0;
        while manifest.is_none() && depth < 3 && !descriptors.is_empty() {
            depth += 1;
            let mut next = Vec::new();
            for d in &descriptors {
                looked_at += 1;
                if looked_at > MAX_DESCRIPTORS {
                    return Err(bad(
                        &self.path,
                        format!("its indexes name more than {MAX_DESCRIPTORS} manifests; no image needs that many"),
                    ));
                }
                let fits = d.platform().as_ref().is_none_or(|p| {
                    let platform = format!("{}/{}", p.os(), p.architecture());
                    if !seen.contains(&platform) {
                        seen.push(platform);
                    }
                    p.architecture().to_string() == HOST_ARCH && p.os().to_string() == "linux"
                });
                if !fits {
                    continue;
                }
                let digest = d.digest().to_string();
                let size = Some(d.size());
                match d.media_type().to_string().as_str() {
                    "application/vnd.oci.image.index.v1+json"
                    | "application/vnd.docker.distribution.manifest.list.v2+json" => {
                        if !read_indexes.insert(digest.clone()) {
                            continue;
                        }
                        let nested: ImageIndex = self.json_blob(&digest, size, "index")?;
                        next.extend(nested.manifests().iter().cloned());
                    }
                    _ => {
                        let m: ImageManifest = self.json_blob(&digest, size, "manifest")?;
                        self.repo = d
                            .annotations()
                            .as_ref()
                            .and_then(|a| {
                                a.get("io.containerd.image.name")
                                    .or(a.get("org.opencontainers.image.ref.name"))
                            })
                            .map(|n| repo_of(n));
                        manifest = Some(m);
                        break;
                    }
                }
            }
            descriptors = next;
        }
        let Some(manifest) = manifest else {
            return Err(bad(
                &self.path,
                if seen.is_empty() {
                    "its index names no image manifest".to_string()
                } else {
                    format!(
                        "it holds no linux/{HOST_ARCH} image (only {})",
                        seen.join(", ")
                    )
                },
            ));
        };
        if manifest.layers().len() > MAX_LAYERS {
            return Err(bad(
                &self.path,
                format!(
                    "its manifest names {} layers; at most {MAX_LAYERS} are read",
                    manifest.layers().len()
                ),
            ));
        }
        let config = manifest.config();
        self.config = self.json_blob(
            config.digest().as_ref(),
            Some(config.size()),
            "image configuration",
        )?;
        self.layers = manifest
            .layers()
            .iter()
            .map(|l| {
                Ok(Layer {
                    member: self.blob(l.digest().as_ref())?,
                    digest: Some(l.digest().to_string()),
                })
            })
            .collect::<Result<_, DetectError>>()?;
        Ok(())
    }

    fn read_docker(&mut self) -> Result<(), DetectError> {
        let entries: Vec<DockerEntry> = self.json("manifest.json", "manifest")?;
        let entry = match entries.as_slice() {
            [one] => one,
            [] => return Err(bad(&self.path, "its manifest.json names no image")),
            _ => {
                return Err(bad(
                    &self.path,
                    "it holds several images; save one image per archive",
                ))
            }
        };
        let inside = |name: &str| {
            let n = normal(name);
            if n.starts_with('/') || n.split('/').any(|c| c == "..") {
                Err(bad(
                    &self.path,
                    format!("its manifest.json names {name}, outside the archive"),
                ))
            } else {
                Ok(n)
            }
        };
        if entry.layers.len() > MAX_LAYERS {
            return Err(bad(
                &self.path,
                format!(
                    "its manifest.json names {} layers; at most {MAX_LAYERS} are read",
                    entry.layers.len()
                ),
            ));
        }
        let config = inside(&entry.config)?;
        self.config = match config.strip_prefix("blobs/sha256/") {
            // Named by its digest: checked like an OCI blob.
            Some(hex) => self.json_blob(&format!("sha256:{hex}"), None, "image configuration")?,
            None => self.json(&config, "image configuration")?,
        };
        self.layers = entry
            .layers
            .iter()
            .map(|l| {
                let member = inside(l)?;
                let digest = member
                    .strip_prefix("blobs/sha256/")
                    .map(|h| format!("sha256:{h}"));
                Ok(Layer { member, digest })
            })
            .collect::<Result<_, DetectError>>()?;
        self.repo = entry
            .repo_tags
            .as_ref()
            .and_then(|t| t.first())
            .map(|t| repo_of(t));
        Ok(())
    }
}

/// The regular files under a layout directory, by their names relative to `root`. Symlinks
/// are not followed (a layout's blobs are plain files); depth is bounded.
fn dir_members(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut HashMap<String, Member>,
) -> Result<(), DetectError> {
    let io = |e| DetectError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    if depth > 4 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.path().symlink_metadata().map_err(io)?;
        if meta.is_dir() {
            dir_members(root, &entry.path(), depth + 1, out)?;
        } else if meta.is_file() {
            if out.len() >= MAX_MEMBERS {
                return Err(DetectError::BadImage {
                    path: root.to_path_buf(),
                    reason: format!(
                        "it holds more than {MAX_MEMBERS} files; no image needs that many"
                    ),
                });
            }
            if let Ok(rel) = entry.path().strip_prefix(root) {
                out.insert(
                    rel.to_string_lossy().to_string(),
                    Member {
                        offset: 0,
                        size: meta.len(),
                    },
                );
            }
        }
    }
    Ok(())
}

/// `sha256:HEX` of `bytes`.
fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `registry:5000/team/hello:1.0` → `hello`.
fn repo_of(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.split([':', '@']).next().unwrap_or(last).to_string()
}

/// What the image configuration says about running it, as the plan needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunConfig {
    /// Entrypoint + Cmd split the Docker way: the program and fixed arguments, then the
    /// replaceable arguments.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: Option<String>,
    pub ports: Vec<u16>,
}

impl ImageArchive {
    pub fn run_config(&self) -> RunConfig {
        let Some(c) = self.config.config() else {
            return RunConfig {
                workdir: "/".into(),
                ..RunConfig::default()
            };
        };
        let entrypoint = c.entrypoint().clone().unwrap_or_default();
        let cmd = c.cmd().clone().unwrap_or_default();
        let (command, args) = if entrypoint.is_empty() {
            (cmd, Vec::new())
        } else {
            (entrypoint, cmd)
        };
        let env = c
            .env()
            .iter()
            .flatten()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        let mut ports: Vec<u16> = c
            .exposed_ports()
            .iter()
            .flatten()
            .filter(|p| !p.ends_with("/udp"))
            .filter_map(|p| p.split('/').next()?.parse().ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        RunConfig {
            command,
            args,
            env,
            workdir: c
                .working_dir()
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: c.user().clone().filter(|u| !u.is_empty()),
            ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_come_only_from_sha256_digests() {
        let hex = "a".repeat(64);
        assert_eq!(
            blob_member(&format!("sha256:{hex}")),
            Some(format!("blobs/sha256/{hex}"))
        );
        assert_eq!(blob_member("sha256:../../etc/passwd"), None);
        assert_eq!(blob_member(&format!("sha512:{hex}")), None);
        assert_eq!(blob_member(&format!("sha256:{}", "A".repeat(64))), None);
    }

    #[test]
    fn repo_names() {
        assert_eq!(repo_of("hello:latest"), "hello");
        assert_eq!(repo_of("127.0.0.1:5000/team/hello:1"), "hello");
        assert_eq!(repo_of("hello@sha256:abc"), "hello");
    }

    #[test]
    fn a_tarball_that_is_not_an_image_is_one_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"hi"[..]).unwrap();
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        let e = ImageArchive::open(&path).unwrap_err().to_string();
        assert!(e.contains("is not an image archive"), "{e}");
        std::fs::write(&path, b"not a tar at all, just text").unwrap();
        let e = ImageArchive::open(&path).unwrap_err().to_string();
        assert!(e.contains("is not an image archive"), "{e}");
    }

    /// An OCI layout tarball from (name, bytes) pairs.
    fn archive(dir: &Path, files: &[(String, Vec<u8>)]) -> PathBuf {
        let path = dir.join("image.tar");
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        path
    }

    fn descriptor(digest: &str, size: usize, media: &str) -> serde_json::Value {
        serde_json::json!({"mediaType": media, "digest": digest, "size": size,
            "platform": {"architecture": "amd64", "os": "linux"}})
    }

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";

    /// Issue 35 item 5: an index naming a nested index 1,800 times, which names another 1,800
    /// times, drove `detect` past 3 GiB (each name read and parsed again). Now each nested
    /// index is read once and at most MAX_DESCRIPTORS are looked at: refused at once.
    #[test]
    fn a_fan_out_of_nested_indexes_is_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let n = 1800;
        let leaf = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "manifests": vec![descriptor(&format!("sha256:{}", "0".repeat(64)), 1, INDEX); n]}))
        .unwrap();
        let leaf_digest = sha256_of(&leaf);
        let mid = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "manifests": vec![descriptor(&leaf_digest, leaf.len(), INDEX); n]}))
        .unwrap();
        let mid_digest = sha256_of(&mid);
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "manifests": vec![descriptor(&mid_digest, mid.len(), INDEX); n]}))
        .unwrap();
        let path = archive(
            dir.path(),
            &[
                ("index.json".into(), index),
                (format!("blobs/sha256/{}", &mid_digest[7..]), mid),
                (format!("blobs/sha256/{}", &leaf_digest[7..]), leaf),
            ],
        );
        let started = std::time::Instant::now();
        let e = ImageArchive::open(&path).unwrap_err().to_string();
        assert!(e.contains("name more than 1024 manifests"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// Nested index blobs were parsed without a look at their digest.
    #[test]
    fn every_document_is_checked_against_its_digest_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let nested = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
        let digest = sha256_of(&nested);
        let mut tampered = nested.clone();
        tampered[0] = b' ';
        let index = |size: usize| {
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
                "manifests": [descriptor(&digest, size, INDEX)]}))
            .unwrap()
        };
        let blob = format!("blobs/sha256/{}", &digest[7..]);
        let path = archive(
            dir.path(),
            &[
                ("index.json".into(), index(nested.len())),
                (blob.clone(), tampered),
            ],
        );
        let e = ImageArchive::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("has digest sha256:") && e.contains(&format!("not {digest}")),
            "{e}"
        );
        let path = archive(
            dir.path(),
            &[("index.json".into(), index(7)), (blob, nested.clone())],
        );
        let e = ImageArchive::open(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("is {} bytes, not 7", nested.len())),
            "{e}"
        );
    }

    #[test]
    fn a_document_larger_than_the_bound_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = b"{\"schemaVersion\":2,\"manifests\":[]}".to_vec();
        big.resize(MAX_DOCUMENT as usize + 1, b' ');
        let path = archive(dir.path(), &[("index.json".into(), big)]);
        let e = ImageArchive::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("a document of more than 4 MiB is not read"),
            "{e}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever an archive's index says, opening it ends in an image or one sentence,
        /// never a panic, and quickly.
        #[test]
        fn any_index_ends_in_an_image_or_a_sentence(
            n in 0usize..3000,
            nested in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            media in proptest::sample::select(vec![INDEX, "application/vnd.oci.image.manifest.v1+json", "x"]),
            right_size in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let digest = sha256_of(&nested);
            let size = if right_size { nested.len() } else { nested.len() + 1 };
            let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
                "manifests": vec![descriptor(&digest, size, media); n]})).unwrap();
            let path = archive(dir.path(), &[
                ("index.json".into(), index),
                (format!("blobs/sha256/{}", &digest[7..]), nested),
                ("blobs/sha256/junk".into(), junk.clone()),
            ]);
            let started = std::time::Instant::now();
            let _ = ImageArchive::open(&path);
            proptest::prop_assert!(started.elapsed() < std::time::Duration::from_secs(5));
            // Raw junk as the index itself.
            let path = archive(dir.path(), &[("index.json".into(), junk)]);
            proptest::prop_assert!(ImageArchive::open(&path).is_err());
        }
    }
}
