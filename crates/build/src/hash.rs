use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Directories never part of an app's inputs.
const SKIP_DIRS: &[&str] = &[".git", "target", "node_modules", ".bakeoff"];

/// What a path that is not a regular file, directory or symlink is, in words.
fn special_kind(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_fifo() {
        Some("a named pipe")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        None
    }
}

/// Adds a file or directory tree (paths relative to `path`, modes, contents) to the hasher,
/// in sorted order so the hash only depends on content.
///
/// Only regular files, directories and symlinks are inputs, as only they are copied: `path`
/// itself being anything else (a named pipe, a socket, a device such as `/dev/zero`) is an
/// error, and such entries inside a directory are skipped. Reading them would block for ever
/// (a pipe) or never end (a device). Contents are streamed, never held whole in memory.
pub fn hash_path(h: &mut Sha256, path: &Path) -> std::io::Result<()> {
    let meta = fs_err::symlink_metadata(path)?;
    if let Some(kind) = special_kind(meta.file_type()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is {kind}, not a regular file, directory or symlink; it cannot be an input of the app",
                path.display()
            ),
        ));
    }
    hash_entry(h, path, &meta)
}

fn hash_entry(h: &mut Sha256, path: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
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
            let child = path.join(&name);
            let child_meta = fs_err::symlink_metadata(&child)?;
            if special_kind(child_meta.file_type()).is_some() {
                // Not copied into the image either.
                continue;
            }
            h.update(b"\0entry\0");
            h.update(s.as_bytes());
            hash_entry(h, &child, &child_meta)?;
        }
    } else if meta.file_type().is_symlink() {
        h.update(b"\0link\0");
        h.update(fs_err::read_link(path)?.to_string_lossy().as_bytes());
    } else {
        h.update(b"\0file\0");
        h.update((meta.permissions().mode() & 0o111).to_le_bytes());
        h.update(meta.len().to_le_bytes());
        hash_contents(h, path)?;
    }
    Ok(())
}

/// Streams a regular file into the hasher. Opened without blocking and checked again once
/// open, so that a file swapped for a pipe meanwhile cannot block the build.
fn hash_contents(h: &mut Sha256, path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} changed into something that is not a regular file while it was read",
                path.display()
            ),
        ));
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

pub fn hex(h: Sha256) -> String {
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path we pass.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// Hashes on another thread and fails the test if that takes more than 5 s (a hang).
    fn hash_within(path: &Path) -> std::io::Result<String> {
        let path = path.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut h = Sha256::new();
            let r = hash_path(&mut h, &path).map(|()| hex(h));
            let _ = tx.send(r);
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("hashing must not hang")
    }

    #[test]
    fn a_named_pipe_inside_a_directory_is_skipped_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.c"), "int main(void){return 0;}\n").unwrap();
        let before = hash_within(dir.path()).unwrap();
        mkfifo(&dir.path().join("pipe"));
        let after = hash_within(dir.path()).unwrap();
        assert_eq!(before, after, "a pipe is not an input");
    }

    #[test]
    fn a_named_pipe_or_a_device_as_the_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        let e = hash_within(&fifo).unwrap_err().to_string();
        assert!(e.contains("is a named pipe, not a regular file"), "{e}");
        let started = Instant::now();
        let e = hash_within(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero is a character device"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn contents_modes_and_links_still_make_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        let one = hash_within(dir.path()).unwrap();
        std::fs::write(dir.path().join("a"), "2").unwrap();
        let two = hash_within(dir.path()).unwrap();
        std::fs::set_permissions(dir.path().join("a"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let three = hash_within(dir.path()).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("l")).unwrap();
        let four = hash_within(dir.path()).unwrap();
        let all = [one, two, three, four];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j]);
            }
        }
    }
}
