//! An OCI image as the app: its layers applied in order into the artifact's rootfs, whiteouts
//! included, and its entrypoint found in the result.
//!
//! Layers are untrusted input. Every member name is resolved inside the rootfs the way the
//! guest will see it ([`crate::compile::path_in_image`]): `..`, and symlinks (from this layer or
//! a lower one) that lead out of the root, are refused, so nothing is ever written on the host
//! outside the rootfs. Device nodes and FIFOs are skipped (the platforms provide /dev).
//! A layer named by a digest is checked against it while it is read, and its uncompressed
//! stream against the configuration's `diff_ids`.
//!
//! Layers are bounded: a layer may expand to at most [`MAX_RATIO`] times its compressed size
//! (but always to [`MIN_LAYER_CAP`]), an image to [`MAX_IMAGE_BYTES`] in all, and a layer may
//! hold at most [`MAX_ENTRIES`] members; past a bound the build stops before writing more.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bakeoff_detect::oci::{ImageArchive, Layer};
use bakeoff_detect::BuildPlan;
use sha2::{Digest, Sha256};

use crate::compile::path_in_image;
use crate::deb::Laid;
use crate::BuildError;

/// Bumped whenever the way layers are applied changes (part of the artifact's input hash).
pub(crate) const LAYOUT_VERSION: &str = "oci-input 2";

/// How many times its compressed size a layer may expand to. Real layers compress 2–10×; a
/// layer of zeros compresses about 1,000×.
pub const MAX_RATIO: u64 = 50;
/// Every layer may expand to this much, whatever its compressed size.
pub const MIN_LAYER_CAP: u64 = 64 << 20;
/// The most an image's layers may expand to in all.
pub const MAX_IMAGE_BYTES: u64 = 16 << 30;
/// Members of one layer, at most.
pub const MAX_ENTRIES: u64 = 1_000_000;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn bad(archive: &Path, reason: String) -> BuildError {
    BuildError::Unsupported(format!(
        "{} cannot be used as an image: {reason}",
        archive.display()
    ))
}

/// Applies every layer of the image at `archive` into `rootfs`, then finds the program.
pub(crate) fn lay_out(
    plan: &BuildPlan,
    archive: &Path,
    rootfs: &Path,
    log: &dyn Fn(&str),
) -> Result<Laid, BuildError> {
    apply_layers(archive, rootfs, log)?;
    entrypoint(plan, archive, rootfs)
}

/// Applies every layer of the image at `archive` into `rootfs`, each checked against its
/// digest and diff_id and bounded in size.
fn apply_layers(archive: &Path, rootfs: &Path, log: &dyn Fn(&str)) -> Result<(), BuildError> {
    let image = ImageArchive::open(archive).map_err(|e| BuildError::Unsupported(e.to_string()))?;
    let diff_ids = image.config.rootfs().diff_ids();
    // Checked only when the configuration names one per layer, as it must.
    let diff_ids = (diff_ids.len() == image.layers.len()).then_some(diff_ids);
    let mut budget = MAX_IMAGE_BYTES;
    for (i, layer) in image.layers.iter().enumerate() {
        log(&format!(
            "applying layer {} of {}",
            i + 1,
            image.layers.len()
        ));
        // Whiteouts name what lower layers left; they go first, then this layer's own files.
        let read = apply(&image, layer, rootfs, Pass::Whiteouts, budget)?;
        if let Some(want) = &layer.digest {
            if *want != read.digest {
                return Err(bad(
                    archive,
                    format!(
                        "layer {} has digest {}, not {want} as its manifest says",
                        layer.member, read.digest
                    ),
                ));
            }
        }
        if let Some(want) = diff_ids.and_then(|d| d.get(i)) {
            if *want != read.diff_id {
                return Err(bad(
                    archive,
                    format!(
                        "layer {} unpacks to content {}, not {want} as its configuration's diff_ids say",
                        layer.member, read.diff_id
                    ),
                ));
            }
        }
        apply(&image, layer, rootfs, Pass::Files, budget)?;
        budget = budget.saturating_sub(read.unpacked);
    }
    Ok(())
}

/// What one pass over a layer read: the blob's digest, the digest and size of its
/// uncompressed stream.
struct LayerRead {
    digest: String,
    diff_id: String,
    unpacked: u64,
}

/// A reader that stops with an error past `cap` bytes (and says so in `exceeded`), and
/// hashes what passes through it.
struct Capped<R> {
    inner: R,
    read: u64,
    cap: u64,
    exceeded: bool,
    hash: Sha256,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.cap {
            self.exceeded = true;
            return Err(std::io::Error::other("the layer expands past its bound"));
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Whiteouts,
    Files,
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// One pass over a layer, expanding it to at most `budget` bytes (and its own bound); returns
/// what it read.
fn apply(
    image: &ImageArchive,
    layer: &Layer,
    rootfs: &Path,
    pass: Pass,
    budget: u64,
) -> Result<LayerRead, BuildError> {
    let raw = image
        .open_member(&layer.member)
        .map_err(|e| BuildError::Unsupported(e.to_string()))?;
    let compressed = image.member_size(&layer.member).unwrap_or(0);
    let cap = compressed
        .saturating_mul(MAX_RATIO)
        .max(MIN_LAYER_CAP)
        .min(budget);
    let mut hashing = Hashing {
        inner: raw,
        hash: Sha256::new(),
    };
    let (unpacked, diff_id) = {
        let mut buffered = BufReader::new(&mut hashing);
        let magic = buffered.fill_buf()?.get(..4).map(<[u8]>::to_vec);
        let reader: Box<dyn Read + '_> = match magic.as_deref() {
            Some([0x1f, 0x8b, ..]) => Box::new(flate2::read::GzDecoder::new(buffered)),
            Some([0x28, 0xb5, 0x2f, 0xfd]) => {
                return Err(bad(
                    &image.path,
                    format!("layer {} is zstd-compressed, which bakeoff does not read yet; save the image with gzip layers", layer.member),
                ))
            }
            _ => Box::new(buffered),
        };
        let mut capped = Capped {
            inner: reader,
            read: 0,
            cap,
            exceeded: false,
            hash: Sha256::new(),
        };
        let too_big = |capped: &Capped<_>| {
            bad(
                &image.path,
                format!(
                    "layer {} expands past {} MiB ({MAX_RATIO} times its {compressed} compressed bytes, at least {} MiB, at most {} GiB for the whole image); refused as a decompression bomb",
                    layer.member,
                    capped.cap >> 20,
                    MIN_LAYER_CAP >> 20,
                    MAX_IMAGE_BYTES >> 30
                ),
            )
        };
        let applied = apply_tar(&mut capped, rootfs, pass);
        if capped.exceeded {
            return Err(too_big(&capped));
        }
        applied.map_err(|e| match e {
            BuildError::FileEscapes(why) | BuildError::Unsupported(why) => {
                bad(&image.path, format!("layer {}: {why}", layer.member))
            }
            BuildError::Io(io) => bad(
                &image.path,
                format!("layer {} is not a readable tar: {io}", layer.member),
            ),
            other => other,
        })?;
        // The tar's end may leave padding: the diff_id covers the whole uncompressed stream.
        if std::io::copy(&mut capped, &mut std::io::sink()).is_err() && capped.exceeded {
            return Err(too_big(&capped));
        }
        let diff_id = format!("sha256:{}", hex::encode(capped.hash.finalize()));
        (capped.read, diff_id)
        // Whatever follows the compressed stream still belongs to the blob's digest.
    };
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(LayerRead {
        digest: format!("sha256:{}", hex::encode(hashing.hash.finalize())),
        diff_id,
        unpacked,
    })
}

fn escapes(name: &str, why: &str) -> BuildError {
    BuildError::FileEscapes(format!(
        "member `{name}` {why}; nothing outside the image root is written"
    ))
}

/// A member name as a relative image path, or why it is refused.
pub(crate) fn clean_name(name: &str) -> Result<String, BuildError> {
    if name.starts_with('/') {
        return Err(escapes(name, "is an absolute path"));
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(escapes(name, "climbs out through `..`")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Where `rel` lands under `rootfs`, its parents resolved inside the image.
fn target(rootfs: &Path, name: &str, rel: &str) -> Result<PathBuf, BuildError> {
    path_in_image(rootfs, rel, false)
        .map_err(|_| escapes(name, "leads out of the image through a symlink"))
}

fn remove_any(path: &Path) -> Result<(), BuildError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs_err::remove_dir_all(path)?,
        Ok(_) => fs_err::remove_file(path)?,
        Err(_) => {}
    }
    Ok(())
}

/// Applies one layer's tar stream (already decompressed) to `rootfs`.
pub(crate) fn apply_tar(reader: impl Read, rootfs: &Path, pass: Pass) -> Result<(), BuildError> {
    let mut archive = tar::Archive::new(reader);
    for (count, entry) in archive.entries()?.enumerate() {
        if count as u64 >= MAX_ENTRIES {
            return Err(BuildError::Unsupported(format!(
                "it holds more than {MAX_ENTRIES} members"
            )));
        }
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = clean_name(&name)?;
        if rel.is_empty() {
            continue;
        }
        let (dir, base) = match rel.rsplit_once('/') {
            Some((d, b)) => (d, b),
            None => ("", rel.as_str()),
        };
        if let Some(hidden) = base.strip_prefix(WHITEOUT) {
            if pass == Pass::Whiteouts {
                let dir_path = target(rootfs, &name, if dir.is_empty() { "." } else { dir })?;
                if base == OPAQUE {
                    if dir_path.is_dir() && !fs_err::symlink_metadata(&dir_path)?.is_symlink() {
                        for child in fs_err::read_dir(&dir_path)? {
                            remove_any(&child?.path())?;
                        }
                    }
                } else if !hidden.is_empty() && hidden != "." && hidden != ".." {
                    remove_any(&dir_path.join(hidden))?;
                }
            }
            continue;
        }
        if pass == Pass::Whiteouts {
            continue;
        }
        let path = target(rootfs, &name, &rel)?;
        if path == rootfs {
            continue;
        }
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if !path.is_dir() || fs_err::symlink_metadata(&path)?.is_symlink() {
                remove_any(&path)?;
                fs_err::create_dir(&path)?;
            }
            fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o700))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            remove_any(&path)?;
            let mut out = fs_err::File::create(&path)?;
            std::io::copy(&mut entry, &mut out)?;
            fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        } else if kind.is_symlink() {
            let link = entry.link_name()?.ok_or_else(|| {
                BuildError::Unsupported(format!("symlink `{name}` has no target"))
            })?;
            remove_any(&path)?;
            // Stored as written; it is only ever followed inside the image root.
            std::os::unix::fs::symlink(link.as_ref(), &path)?;
        } else if kind.is_hard_link() {
            let link = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let from = target(rootfs, &name, &clean_name(&link)?)?;
            if !fs_err::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
                return Err(BuildError::Unsupported(format!(
                    "hard link `{name}` points at `{link}`, which is not a file of the image"
                )));
            }
            remove_any(&path)?;
            fs_err::copy(&from, &path)?;
        }
        // Character and block devices, FIFOs: the platforms give the app its own /dev.
    }
    Ok(())
}

/// Finds the program of the plan's command in the laid-out image (through PATH when it is a
/// bare name); a script's interpreter is what gets inspected.
fn entrypoint(plan: &BuildPlan, archive: &Path, rootfs: &Path) -> Result<Laid, BuildError> {
    let program = plan.command.first().cloned().unwrap_or_default();
    let path_var = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let candidates: Vec<String> = if program.contains('/') {
        let base = if program.starts_with('/') {
            ""
        } else {
            plan.workdir.as_str()
        };
        vec![format!("{}/{}", base.trim_end_matches('/'), program)]
    } else {
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .collect()
    };
    let missing = || {
        bad(
            archive,
            format!("its entrypoint `{program}` does not exist in its layers"),
        )
    };
    let (image_path, host) = candidates
        .iter()
        .find_map(|c| {
            let host = path_in_image(rootfs, c, true).ok()?;
            fs_err::metadata(&host)
                .ok()?
                .is_file()
                .then(|| (c.clone(), host))
        })
        .ok_or_else(missing)?;
    let mut command = plan.command.clone();
    command[0] = image_path;
    // `#!/bin/sh` and the like: the interpreter decides where the app can run.
    let mut exe = host;
    let mut head = [0u8; 256];
    let n = fs_err::File::open(&exe)?.read(&mut head)?;
    if head[..n].starts_with(b"#!") {
        let line = String::from_utf8_lossy(&head[2..n]);
        let interp = line
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        exe = path_in_image(rootfs, &interp, true)
            .ok()
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                bad(
                    archive,
                    format!("its entrypoint `{program}` is a script for `{interp}`, which is not in its layers"),
                )
            })?;
    }
    let binary = format!(
        "/{}",
        exe.strip_prefix(rootfs)
            .expect("resolved inside the rootfs")
            .display()
    );
    Ok(Laid {
        exe,
        binary,
        command,
        env: Vec::new(),
        // The image configuration's WorkingDir is already the plan's.
        workdir: None,
        // The image configuration's User is in the plan (resolved in compile.rs).
        user: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_size(data.len() as u64);
            // Raw names: the tar crate's setters refuse `..`, an attacker's tool does not.
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if !link.is_empty() {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn apply_both(layer: &[u8], root: &Path) -> Result<(), BuildError> {
        apply_tar(layer, root, Pass::Whiteouts)?;
        apply_tar(layer, root, Pass::Files)
    }

    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};

    fn sha256_hex(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// An OCI layout tarball with one layer and a configuration naming `diff_id`.
    fn image_with(dir: &Path, layer: &[u8], diff_id: &str) -> PathBuf {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/app"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}}))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_hex(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256_hex(layer), "size": layer.len()}]}))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": sha256_hex(&manifest), "size": manifest.len()}]}))
        .unwrap();
        let path = dir.join("image.tar");
        let mut b = tar::Builder::new(fs_err::File::create(&path).unwrap());
        for (name, data) in [
            ("index.json".to_string(), &index[..]),
            (
                format!("blobs/sha256/{}", &sha256_hex(&manifest)[7..]),
                &manifest[..],
            ),
            (
                format!("blobs/sha256/{}", &sha256_hex(&config)[7..]),
                &config[..],
            ),
            (format!("blobs/sha256/{}", &sha256_hex(layer)[7..]), layer),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        b.finish().unwrap();
        path
    }

    /// A gzip layer holding one file of `size` zero bytes (streamed, never held whole), and
    /// the digest of its uncompressed tar.
    fn zeros_layer(size: u64) -> (Vec<u8>, String) {
        struct Tee<W: std::io::Write>(W, Sha256);
        impl<W: std::io::Write> std::io::Write for Tee<W> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let n = self.0.write(b)?;
                self.1.update(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.0.flush()
            }
        }
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut b = tar::Builder::new(Tee(gz, Sha256::new()));
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "data/zero", std::io::repeat(0).take(size))
            .unwrap();
        let Tee(gz, hash) = b.into_inner().unwrap();
        (
            gz.finish().unwrap(),
            format!("sha256:{}", hex::encode(hash.finalize())),
        )
    }

    fn disk_bytes(dir: &Path) -> u64 {
        let mut total = 0;
        for e in fs_err::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                disk_bytes(&e.path())
            } else {
                m.len()
            };
        }
        total
    }

    /// Issue 35 item 5: a 1.4 MB archive whose gzip layer holds 1 GiB of zeros became 1 GiB on
    /// disk and 1 GiB of RSS. Now a layer expands to MAX_RATIO times its size at most (at
    /// least MIN_LAYER_CAP): this 256 MiB layer of zeros (~250 KB) stops at 64 MiB.
    #[test]
    fn a_gzip_bomb_stops_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (layer, diff_id) = zeros_layer(256 << 20);
        assert!(layer.len() < 1 << 20, "{}", layer.len());
        let archive = image_with(dir.path(), &layer, &diff_id);
        let root = dir.path().join("rootfs");
        fs_err::create_dir_all(&root).unwrap();
        let started = std::time::Instant::now();
        let e = apply_layers(&archive, &root, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expands past 64 MiB") && e.contains("decompression bomb"),
            "{e}"
        );
        assert!(disk_bytes(&root) <= MIN_LAYER_CAP, "{}", disk_bytes(&root));
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn a_layer_within_its_bound_applies_and_its_diff_id_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (layer, diff_id) = zeros_layer(1 << 20);
        let root = dir.path().join("rootfs");
        fs_err::create_dir_all(&root).unwrap();
        let archive = image_with(dir.path(), &layer, &diff_id);
        apply_layers(&archive, &root, &|_| {}).unwrap();
        assert_eq!(
            fs_err::metadata(root.join("data/zero")).unwrap().len(),
            1 << 20
        );
        let other = format!("sha256:{}", "1".repeat(64));
        let archive = image_with(dir.path(), &layer, &other);
        let e = apply_layers(&archive, &root, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("not {other} as its configuration's diff_ids say")),
            "{e}"
        );
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts_and_opaque_dirs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        apply_both(
            &tar_of(&[
                ("etc/", D, b"", ""),
                ("etc/gone", F, b"1", ""),
                ("etc/kept", F, b"old", ""),
                ("var/", D, b"", ""),
                ("var/cache/", D, b"", ""),
                ("var/cache/a", F, b"a", ""),
            ]),
            r,
        )
        .unwrap();
        apply_both(
            &tar_of(&[
                ("etc/.wh.gone", F, b"", ""),
                ("etc/kept", F, b"new", ""),
                ("var/cache/", D, b"", ""),
                ("var/cache/.wh..wh..opq", F, b"", ""),
                ("var/cache/b", F, b"b", ""),
            ]),
            r,
        )
        .unwrap();
        assert!(!r.join("etc/gone").exists());
        assert!(!r.join("etc/.wh.gone").exists());
        assert_eq!(std::fs::read(r.join("etc/kept")).unwrap(), b"new");
        assert!(
            !r.join("var/cache/a").exists(),
            "opaque dir hides the lower layer"
        );
        assert_eq!(std::fs::read(r.join("var/cache/b")).unwrap(), b"b");
    }

    #[test]
    fn escapes_are_refused_and_nothing_lands_outside() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir(&root).unwrap();
        for (layer, what) in [
            (tar_of(&[("../evil", F, b"x", "")]), "climbs out"),
            (tar_of(&[("/evil", F, b"x", "")]), "absolute"),
            (
                tar_of(&[("up", L, b"", ".."), ("up/evil", F, b"x", "")]),
                "symlink",
            ),
            (
                tar_of(&[("abs", L, b"", "/.."), ("abs/evil", F, b"x", "")]),
                "symlink",
            ),
        ] {
            let e = apply_both(&layer, &root).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
            assert!(!outer.path().join("evil").exists());
        }
        // A symlink pointing at /etc of the host is followed inside the image, not on the host.
        apply_both(
            &tar_of(&[("etc", L, b"", "/hostetc"), ("etc/passwd", F, b"img", "")]),
            &root,
        )
        .unwrap();
        assert_eq!(std::fs::read(root.join("hostetc/passwd")).unwrap(), b"img");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any bytes as a layer: an error or a tree, never a panic, never a write outside.
        #[test]
        fn arbitrary_layers_never_escape(
            names in proptest::collection::vec("[a-z./]{1,12}", 1..6),
            links in proptest::collection::vec("[a-z./]{0,12}", 1..6),
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            let outer = tempfile::tempdir().unwrap();
            let root = outer.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let entries: Vec<(&str, tar::EntryType, &[u8], &str)> = names
                .iter()
                .zip(links.iter().cycle())
                .enumerate()
                .map(|(i, (n, l))| {
                    let kind = [F, D, L][i % 3];
                    (n.as_str(), kind, if kind == F { &b"x"[..] } else { &b""[..] }, if kind == L { l.as_str() } else { "" })
                })
                .collect();
            let _ = apply_both(&tar_of(&entries), &root);
            let _ = apply_both(&noise, &root);
            let outside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            proptest::prop_assert_eq!(outside, vec![std::ffi::OsString::from("root")]);
        }
    }
}
