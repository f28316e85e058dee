//! An OCI image as the app: its layers applied in order into the artifact's rootfs, whiteouts
//! included, and its entrypoint found in the result.
//!
//! Layers are untrusted input. Every member name is resolved inside the rootfs the way the
//! guest will see it ([`crate::compile::path_in_image`]): `..`, and symlinks (from this layer or
//! a lower one) that lead out of the root, are refused, so nothing is ever written on the host
//! outside the rootfs. Device nodes and FIFOs are skipped (the platforms provide /dev).
//! A layer named by a digest is checked against it while it is read.

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
pub(crate) const LAYOUT_VERSION: &str = "oci-input 1";

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
    let image = ImageArchive::open(archive).map_err(|e| BuildError::Unsupported(e.to_string()))?;
    for (i, layer) in image.layers.iter().enumerate() {
        log(&format!(
            "applying layer {} of {}",
            i + 1,
            image.layers.len()
        ));
        // Whiteouts name what lower layers left; they go first, then this layer's own files.
        let verified = apply(&image, layer, rootfs, Pass::Whiteouts)?;
        if let (Some(want), Some(got)) = (&layer.digest, verified) {
            if *want != got {
                return Err(bad(
                    archive,
                    format!(
                        "layer {} has digest {got}, not {want} as its manifest says",
                        layer.member
                    ),
                ));
            }
        }
        apply(&image, layer, rootfs, Pass::Files)?;
    }
    entrypoint(plan, archive, rootfs)
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

/// One pass over a layer; returns the digest of the layer blob as read.
fn apply(
    image: &ImageArchive,
    layer: &Layer,
    rootfs: &Path,
    pass: Pass,
) -> Result<Option<String>, BuildError> {
    let raw = image
        .open_member(&layer.member)
        .map_err(|e| BuildError::Unsupported(e.to_string()))?;
    let mut hashing = Hashing {
        inner: raw,
        hash: Sha256::new(),
    };
    {
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
        apply_tar(reader, rootfs, pass).map_err(|e| match e {
            BuildError::FileEscapes(why) | BuildError::Unsupported(why) => {
                bad(&image.path, format!("layer {}: {why}", layer.member))
            }
            BuildError::Io(io) => bad(
                &image.path,
                format!("layer {} is not a readable tar: {io}", layer.member),
            ),
            other => other,
        })?;
        // Whatever follows the tar's end still belongs to the blob's digest.
    }
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(Some(format!(
        "sha256:{}",
        hex::encode(hashing.hash.finalize())
    )))
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
    for entry in archive.entries()? {
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
