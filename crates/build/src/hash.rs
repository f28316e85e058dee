use std::path::Path;

use sha2::{Digest, Sha256};

/// Directories never part of an app's inputs.
const SKIP_DIRS: &[&str] = &[".git", "target", "node_modules", ".bakeoff"];

/// Adds a file or directory tree (paths relative to `path`, modes, contents) to the hasher,
/// in sorted order so the hash only depends on content.
pub fn hash_path(h: &mut Sha256, path: &Path) -> std::io::Result<()> {
    let meta = fs_err::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut names: Vec<_> = fs_err::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let s = name.to_string_lossy();
            if SKIP_DIRS.contains(&s.as_ref()) {
                continue;
            }
            h.update(b"\0entry\0");
            h.update(s.as_bytes());
            hash_path(h, &path.join(&name))?;
        }
    } else if meta.file_type().is_symlink() {
        h.update(b"\0link\0");
        h.update(fs_err::read_link(path)?.to_string_lossy().as_bytes());
    } else {
        use std::os::unix::fs::PermissionsExt;
        h.update(b"\0file\0");
        h.update((meta.permissions().mode() & 0o111).to_le_bytes());
        h.update(meta.len().to_le_bytes());
        h.update(fs_err::read(path)?);
    }
    Ok(())
}

pub fn hex(h: Sha256) -> String {
    hex::encode(h.finalize())
}
