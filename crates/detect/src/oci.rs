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

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<T, DetectError> {
        let bytes = self.read_member(name)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            bad(
                &self.path,
                format!("its {what} ({name}) cannot be read: {e}"),
            )
        })
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
        // An index may point at a nested index (a multi-platform image): follow one level.
        let mut descriptors: Vec<_> = index.manifests().clone();
        let mut depth = 0;
        while manifest.is_none() && depth < 3 {
            depth += 1;
            let mut next = Vec::new();
            for d in &descriptors {
                let fits = d.platform().as_ref().is_none_or(|p| {
                    seen.push(format!("{}/{}", p.os(), p.architecture()));
                    p.architecture().to_string() == HOST_ARCH && p.os().to_string() == "linux"
                });
                if !fits {
                    continue;
                }
                let member = self.blob(d.digest().as_ref())?;
                match d.media_type().to_string().as_str() {
                    "application/vnd.oci.image.index.v1+json"
                    | "application/vnd.docker.distribution.manifest.list.v2+json" => {
                        let nested: ImageIndex = self.json(&member, "index")?;
                        next.extend(nested.manifests().iter().cloned());
                    }
                    _ => {
                        let m: ImageManifest = self.json(&member, "manifest")?;
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
        let config = self.blob(manifest.config().digest().as_ref())?;
        self.config = self.json(&config, "image configuration")?;
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
        let config = inside(&entry.config)?;
        self.config = self.json(&config, "image configuration")?;
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
}
