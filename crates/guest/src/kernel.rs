//! The guest kernel: Debian's `linux-image-*-amd64` fetched with `apt-get download` and unpacked
//! into a cache (never installed on the host), or a kernel file the user names; plus the PVH
//! vmlinux that QEMU's microvm machine needs, extracted from the bzImage.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use fs_err as fs;
use sha2::{Digest, Sha256};

use crate::{elf, GuestError};

/// The Debian metapackage that always depends on the current kernel image package. The `cloud`
/// flavour is Debian's kernel for virtual machines: measured here under TCG it reaches the
/// root-mount panic in 1.5–2.6 s against 4.4–5.1 s for the generic `linux-image-amd64`, and it
/// reserves 45 MB of a 128 MB guest against 58 MB (its bss is 5 MB, the generic one's 17 MB).
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// Written last into `kernels/<version>/`; a directory without it is never used.
const COMPLETE_MARKER: &str = ".bakeoff-complete";

/// A guest kernel ready for QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel release, as `uname -r` will say in the guest (e.g. `6.1.0-56-amd64`).
    pub version: String,
    /// For `-M q35` (SeaBIOS boot). For a user-supplied PVH vmlinux this is the vmlinux itself:
    /// QEMU's pc/q35 machines boot a PVH ELF directly too.
    pub bzimage: PathBuf,
    /// The uncompressed ELF with a PVH entry note, for `-M microvm` (and faster on q35 as well).
    pub vmlinux: PathBuf,
    /// `lib/modules/<version>`. It may not exist (a user kernel without modules): then every
    /// module is assumed to be built in.
    pub modules_root: PathBuf,
}

impl Kernel {
    /// The kernel's build configuration, when it is known: `config` beside a minimal kernel's
    /// vmlinux, or Debian's `boot/config-<version>`.
    pub fn config_file(&self) -> Option<PathBuf> {
        let dir = self.vmlinux.parent()?;
        [
            dir.join("config"),
            dir.join(format!("config-{}", self.version)),
        ]
        .into_iter()
        .find(|p| p.is_file())
    }

    /// 16 hex digits of the SHA-256 of [`Kernel::config_file`] (`sha256sum` of that file).
    pub fn config_sha256(&self) -> Option<String> {
        let data = std::fs::read(self.config_file()?).ok()?;
        Some(hex::encode(Sha256::digest(&data))[..16].to_string())
    }
}

/// The bzImage setup header fields we use (Documentation/arch/x86/boot.rst).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BzImageHeader {
    /// Boot protocol version, e.g. 0x020f.
    pub protocol: u16,
    /// Offset of the compressed payload from the start of the file.
    pub payload_start: usize,
    pub payload_length: usize,
    /// The release from the `kernel_version` string, if present.
    pub release: Option<String>,
}

/// Parses the setup header of a bzImage; `None` if `data` is not one.
pub fn parse_bzimage(data: &[u8]) -> Option<BzImageHeader> {
    if data.get(0x202..0x206)? != b"HdrS" || data.get(0x1fe..0x200)? != [0x55, 0xaa] {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let protocol = u16_at(0x206)?;
    if protocol < 0x208 {
        return None; // payload_offset/length exist since boot protocol 2.08 (Linux 2.6.26)
    }
    let setup_sects = match data[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let payload_start = (setup_sects + 1) * 512 + u32_at(0x248)? as usize;
    let payload_length = u32_at(0x24c)? as usize;
    let release = u16_at(0x20e).filter(|&p| p != 0).and_then(|p| {
        let s = data.get(0x200 + usize::from(p)..)?;
        let s = &s[..s.iter().take(256).position(|&b| b == 0 || b == b' ')?];
        std::str::from_utf8(s).ok().map(str::to_string)
    });
    Some(BzImageHeader {
        protocol,
        payload_start,
        payload_length,
        release,
    })
}

/// How a bzImage payload is compressed, by magic number.
fn payload_format(p: &[u8]) -> &'static str {
    match p {
        [0x1f, 0x8b, ..] => "gzip",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [0x5d, 0, 0, ..] => "lzma",
        [b'B', b'Z', b'h', ..] => "bzip2",
        [0x89, b'L', b'Z', b'O', ..] => "lzo",
        [0x02, 0x21, 0x4c, 0x18, ..] => "lz4",
        _ => "unknown",
    }
}

/// Decompresses a bzImage's payload into the vmlinux ELF and checks that it has a PVH entry.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, String> {
    let h = parse_bzimage(bzimage).ok_or("no bzImage setup header")?;
    let payload = h
        .payload_start
        .checked_add(h.payload_length)
        .and_then(|end| bzimage.get(h.payload_start..end))
        .ok_or("the payload offset/length point outside the file")?;
    let format = payload_format(payload);
    let mut out = Vec::with_capacity(payload.len() * 5);
    let result = match format {
        "gzip" => flate2::read::GzDecoder::new(payload).read_to_end(&mut out),
        "xz" => xz2::stream::Stream::new_stream_decoder(u64::MAX, 0)
            .map_err(std::io::Error::other)
            .and_then(|s| lzma_decode(s, payload, &mut out)),
        "lzma" => xz2::stream::Stream::new_lzma_decoder(u64::MAX)
            .map_err(std::io::Error::other)
            .and_then(|s| lzma_decode(s, payload, &mut out)),
        "zstd" => ruzstd::decoding::StreamingDecoder::new(payload)
            .map_err(std::io::Error::other)
            .and_then(|mut d| d.read_to_end(&mut out)),
        "lz4" => crate::lz4::decode(payload, &mut out),
        other => {
            return Err(format!("its payload is compressed with {other}, which bakeoff cannot decompress (gzip, xz, lzma, lz4 and zstd work); pass an uncompressed vmlinux instead"));
        }
    };
    result.map_err(|e| format!("cannot decompress its {format} payload: {e}"))?;
    if !elf::is_x86_64_exec(&out) {
        return Err(format!(
            "its {format} payload is not an x86_64 ELF executable"
        ));
    }
    if !elf::has_pvh_note(&out) {
        return Err(no_pvh());
    }
    Ok(out)
}

/// Runs a liblzma decoder until its stream ends, ignoring what follows: Linux appends the
/// decompressed size after the stream, which xz2's reader would call "corrupt".
fn lzma_decode(
    mut stream: xz2::stream::Stream,
    input: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use xz2::stream::{Action, Status};
    loop {
        if out.capacity() - out.len() < 1 << 16 {
            out.reserve(1 << 22);
        }
        let (in_before, out_before) = (stream.total_in(), out.len());
        let pos = usize::try_from(in_before)
            .unwrap_or(usize::MAX)
            .min(input.len());
        let action = if pos == input.len() {
            Action::Finish
        } else {
            Action::Run
        };
        let status = stream
            .process_vec(&input[pos..], out, action)
            .map_err(std::io::Error::other)?;
        if status == Status::StreamEnd {
            return Ok(out.len());
        }
        if stream.total_in() == in_before && out.len() == out_before {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the compressed data ends early",
            ));
        }
    }
}

fn no_pvh() -> String {
    "it has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY; build the kernel with CONFIG_PVH=y), so QEMU cannot boot it as a vmlinux".to_string()
}

/// Makes sure the default Debian kernel is in `cache_dir/kernels/<version>/` and returns it.
///
/// `apt-cache depends linux-image-amd64` names the current image package (offline, from the
/// package lists); a complete cached unpack of it is reused without any download. Otherwise the
/// package is fetched with `apt-get download` into a temporary directory, unpacked with
/// `dpkg-deb -x`, its vmlinux extracted, and the directory renamed into place with a marker.
///
/// When apt cannot name the package (no package lists) but a kernel was cached before, the most
/// recently cached one is used; with nothing cached the error says to run `apt-get update`.
pub fn ensure_kernel(cache_dir: &Path) -> Result<Kernel, GuestError> {
    ensure_kernel_with(cache_dir, &[])
}

/// [`ensure_kernel`] with extra `-o` options for apt (tests point it at empty package lists).
fn ensure_kernel_with(cache_dir: &Path, apt_options: &[&str]) -> Result<Kernel, GuestError> {
    let kernels = cache_dir.join("kernels");
    let package = match current_image_package(apt_options) {
        Ok(p) => p,
        Err(e @ GuestError::AptLists { .. }) => return newest_cached(&kernels).ok_or(e)?,
        Err(e) => return Err(e),
    };
    let version = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    let dir = kernels.join(&version);
    if dir.join(COMPLETE_MARKER).is_file() {
        return debian_kernel(&dir, &version);
    }
    fs::create_dir_all(&kernels)?;
    remove_stale_unpacks(&kernels);
    let tmp = scratch_dir(&kernels, ".unpack-")?;
    let deb = apt_download(&package, tmp.path(), apt_options)?;
    let root = tmp.path().join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    )?;
    fs::remove_file(&deb)?;
    // Debian's package may say a slightly different release than its name: trust the files.
    let version = match fs::read_dir(root.join("lib/modules")) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.pop().unwrap_or(version)
        }
        Err(_) => version,
    };
    let boot = root.join("boot");
    let bzimage = boot.join(format!("vmlinuz-{version}"));
    let data = fs::read(&bzimage)?;
    let vmlinux = extract_vmlinux(&data).map_err(|reason| GuestError::Kernel {
        path: bzimage.clone(),
        reason,
    })?;
    // Cut like the minimal kernel's (elf::without_zero_gaps): QEMU maps the file and reads all of
    // it, so the 2 MiB alignment fill in Debian's 53 MB vmlinux was ~45 MiB of every VMM's RSS.
    let vmlinux = crate::elf::without_zero_gaps(&vmlinux).unwrap_or(vmlinux);
    fs::write(boot.join(format!("vmlinux-{version}")), vmlinux)?;
    fs::write(root.join(COMPLETE_MARKER), format!("{package}\n"))?;

    let dir = kernels.join(&version);
    if dir.exists() && !dir.join(COMPLETE_MARKER).is_file() {
        fs::remove_dir_all(&dir)?; // a leftover from an interrupted older layout
    }
    match std::fs::rename(&root, &dir) {
        Ok(()) => {}
        // Another process finished first: use its copy, ours is dropped with the temp dir.
        Err(_) if dir.join(COMPLETE_MARKER).is_file() => {}
        Err(e) => {
            return Err(GuestError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot move {} to {}: {e}", root.display(), dir.display()),
            )))
        }
    }
    debian_kernel(&dir, &version)
}

/// The complete cached kernel whose marker is newest.
fn newest_cached(kernels: &Path) -> Option<Result<Kernel, GuestError>> {
    let entries = std::fs::read_dir(kernels).ok()?;
    let newest = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && !name.starts_with("user-")
        })
        .filter_map(|e| {
            let marker = std::fs::metadata(e.path().join(COMPLETE_MARKER)).ok()?;
            Some((
                marker.modified().ok()?,
                e.path(),
                e.file_name().to_string_lossy().into_owned(),
            ))
        })
        .max()?;
    Some(debian_kernel(&newest.1, &newest.2))
}

/// Removes `.unpack-*` directories left by interrupted runs more than an hour ago.
fn remove_stale_unpacks(kernels: &Path) {
    let Ok(entries) = std::fs::read_dir(kernels) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
        if old && e.file_name().to_string_lossy().starts_with(".unpack-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn debian_kernel(dir: &Path, version: &str) -> Result<Kernel, GuestError> {
    let k = Kernel {
        version: version.to_string(),
        bzimage: dir.join(format!("boot/vmlinuz-{version}")),
        vmlinux: dir.join(format!("boot/vmlinux-{version}")),
        modules_root: dir.join(format!("lib/modules/{version}")),
    };
    for p in [&k.bzimage, &k.vmlinux] {
        if !p.is_file() {
            return Err(GuestError::Kernel {
                path: p.clone(),
                reason: format!(
                    "it is missing from the kernel cache; delete {} and retry",
                    dir.display()
                ),
            });
        }
    }
    Ok(k)
}

/// Asks apt (offline) which package `linux-image-amd64` depends on.
fn current_image_package(apt_options: &[&str]) -> Result<String, GuestError> {
    let out = Command::new("apt-cache")
        .args(apt_options.iter().flat_map(|o| ["-o", o]))
        .args([
            "depends",
            "--no-recommends",
            "--no-suggests",
            KERNEL_METAPACKAGE,
        ])
        .output()
        .map_err(|e| GuestError::Tool {
            command: "apt-cache depends".into(),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_depends(&text).ok_or_else(|| GuestError::AptLists {
        package: KERNEL_METAPACKAGE.to_string(),
    })
}

/// The first `Depends: linux-image-*` in `apt-cache depends` output.
fn parse_depends(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        let dep = dep.trim_start_matches('<').trim_end_matches('>');
        dep.starts_with("linux-image-").then(|| dep.to_string())
    })
}

/// `apt-get download PACKAGE` in `dir`; returns the .deb path.
fn apt_download(package: &str, dir: &Path, apt_options: &[&str]) -> Result<PathBuf, GuestError> {
    let out = Command::new("apt-get")
        .args(apt_options.iter().flat_map(|o| ["-o", o]))
        .args(["download", "-q", package])
        .current_dir(dir)
        .output()
        .map_err(|e| GuestError::Tool {
            command: "apt-get download".into(),
            reason: e.to_string(),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("Unable to locate package")
            || stderr.contains("has no installation candidate")
        {
            return Err(GuestError::AptLists {
                package: package.to_string(),
            });
        }
        let reason = stderr
            .lines()
            .filter(|l| l.starts_with("E:"))
            .collect::<Vec<_>>()
            .join(" ");
        let reason = if reason.is_empty() {
            format!("it exited with {}", out.status)
        } else {
            reason
        };
        return Err(GuestError::Tool {
            command: format!("apt-get download {package}"),
            reason,
        });
    }
    let found = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"));
    found.ok_or_else(|| GuestError::Tool {
        command: format!("apt-get download {package}"),
        reason: format!("it succeeded but left no .deb in {}", dir.display()),
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<(), GuestError> {
    let out = cmd.output().map_err(|e| GuestError::Tool {
        command: what.into(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(GuestError::Tool {
            command: what.into(),
            reason: format!("{} ({})", stderr.trim(), out.status),
        })
    }
}

/// Uses a kernel the user names (`--kernel PATH`): a bzImage (its vmlinux is extracted into
/// `cache_dir/kernels/user-<sha256 prefix>/`) or a PVH vmlinux. Modules are looked for next to
/// an unpacked package (`<root>/boot/vmlinuz-V` → `<root>/lib/modules/V`), then in the host's
/// `/lib/modules/V`; when neither exists the kernel is assumed to have what it needs built in.
pub fn kernel_from_path(path: &Path, cache_dir: &Path) -> Result<Kernel, GuestError> {
    let data = fs::read(path)?;
    let not_kernel = || GuestError::NotAKernel {
        path: path.to_path_buf(),
    };
    let (version, bzimage, vmlinux) = if let Some(h) = parse_bzimage(&data) {
        let digest = hex::encode(Sha256::digest(&data));
        let dir = cache_dir
            .join("kernels")
            .join(format!("user-{}", &digest[..16]));
        let vmlinux = dir.join("vmlinux");
        if !vmlinux.is_file() {
            let elf = extract_vmlinux(&data).map_err(|reason| GuestError::Kernel {
                path: path.to_path_buf(),
                reason,
            })?;
            fs::create_dir_all(&dir)?;
            crate::write_atomically(&vmlinux, |f| std::io::Write::write_all(f, &elf))?;
        }
        let version = match h.release {
            Some(v) => v,
            None => elf::banner_release(&fs::read(&vmlinux)?).unwrap_or_else(|| "unknown".into()),
        };
        (version, path.to_path_buf(), vmlinux)
    } else if elf::is_elf(&data) {
        if !elf::is_x86_64_exec(&data) {
            return Err(GuestError::Kernel {
                path: path.to_path_buf(),
                reason: "it is an ELF file but not an x86_64 executable".into(),
            });
        }
        if !elf::has_pvh_note(&data) {
            return Err(GuestError::Kernel {
                path: path.to_path_buf(),
                reason: no_pvh(),
            });
        }
        let version = elf::banner_release(&data).unwrap_or_else(|| "unknown".into());
        (version, path.to_path_buf(), path.to_path_buf())
    } else {
        return Err(not_kernel());
    };
    let beside = path
        .parent()
        .and_then(Path::parent)
        .map(|root| root.join("lib/modules").join(&version));
    let host = Path::new("/lib/modules").join(&version);
    let modules_root = beside.filter(|p| p.is_dir()).unwrap_or(host);
    Ok(Kernel {
        version,
        bzimage,
        vmlinux,
        modules_root,
    })
}

/// A temporary directory in `kernels` (renamed into place when complete, removed otherwise).
pub(crate) fn scratch_dir(kernels: &Path, prefix: &str) -> Result<tempfile::TempDir, GuestError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(kernels)
        .map_err(|e| {
            GuestError::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create a temporary directory in {}: {e}",
                    kernels.display()
                ),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake bzImage: a setup header pointing at `payload`.
    pub(crate) fn fake_bzimage(payload: &[u8], release: &str) -> Vec<u8> {
        let setup_sects = 3u8;
        let start = (usize::from(setup_sects) + 1) * 512;
        let mut d = vec![0u8; start];
        d[0x1f1] = setup_sects;
        d[0x1fe] = 0x55;
        d[0x1ff] = 0xaa;
        d[0x202..0x206].copy_from_slice(b"HdrS");
        d[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let ver_off = 0x300usize;
        d[0x20e..0x210].copy_from_slice(&((ver_off - 0x200) as u16).to_le_bytes());
        d[ver_off..ver_off + release.len()].copy_from_slice(release.as_bytes());
        d[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        // Linux appends the decompressed size to the payload and counts it in payload_length.
        d[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        d.extend_from_slice(payload);
        d.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        d
    }

    fn pvh_elf() -> Vec<u8> {
        elf::tests::build_elf(
            2,
            &[(b"Xen", elf::XEN_ELFNOTE_PHYS32_ENTRY, &[0, 0, 0, 1])],
            b"",
        )
    }

    #[test]
    fn parses_the_setup_header() {
        let d = fake_bzimage(b"payload", "6.1.0-test (x@y) #1");
        let h = parse_bzimage(&d).unwrap();
        assert_eq!(h.protocol, 0x020f);
        assert_eq!(h.payload_start, 2048);
        assert_eq!(h.payload_length, 11);
        assert_eq!(h.release.as_deref(), Some("6.1.0-test"));
        assert_eq!(parse_bzimage(b"short"), None);
        assert_eq!(parse_bzimage(&[0u8; 4096]), None);
    }

    #[test]
    fn extracts_gzip_xz_and_zstd_payloads() {
        let vmlinux = pvh_elf();
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
            e.write_all(&vmlinux).unwrap();
            e.finish().unwrap();
        }
        assert_eq!(extract_vmlinux(&fake_bzimage(&gz, "v")).unwrap(), vmlinux);

        let mut xz = Vec::new();
        xz2::read::XzEncoder::new(vmlinux.as_slice(), 6)
            .read_to_end(&mut xz)
            .unwrap();
        assert_eq!(extract_vmlinux(&fake_bzimage(&xz, "v")).unwrap(), vmlinux);

        let zst = ruzstd::encoding::compress_to_vec(
            vmlinux.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(extract_vmlinux(&fake_bzimage(&zst, "v")).unwrap(), vmlinux);
    }

    #[test]
    fn extracts_lz4_legacy_payloads_with_several_blocks_and_streams() {
        let vmlinux = pvh_elf();
        let third = vmlinux.len() / 3;
        let parts = [
            &vmlinux[..third],
            &vmlinux[third..2 * third],
            &vmlinux[2 * third..],
        ];
        // magic, block, block, magic (a second stream), block
        let mut lz4 = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if i != 1 {
                lz4.extend(0x184C_2102u32.to_le_bytes());
            }
            let block = lz4_flex::block::compress(part);
            lz4.extend((block.len() as u32).to_le_bytes());
            lz4.extend(block);
        }
        assert_eq!(extract_vmlinux(&fake_bzimage(&lz4, "v")).unwrap(), vmlinux);
        let e = extract_vmlinux(&fake_bzimage(&0x184C_2102u32.to_le_bytes(), "v")).unwrap_err();
        assert!(e.contains("holds no block"), "{e}");
        let mut corrupt = 0x184C_2102u32.to_le_bytes().to_vec();
        corrupt.extend(8u32.to_le_bytes());
        corrupt.extend([0xff; 8]);
        let e = extract_vmlinux(&fake_bzimage(&corrupt, "v")).unwrap_err();
        assert!(e.contains("corrupt LZ4 block"), "{e}");
    }

    #[test]
    fn explains_what_it_cannot_extract() {
        let e = extract_vmlinux(&fake_bzimage(b"BZh91AY&SY....", "v")).unwrap_err();
        assert!(e.contains("compressed with bzip2"), "{e}");
        let e = extract_vmlinux(&fake_bzimage(&[0x1f, 0x8b, 8, 0, 1, 2, 3], "v")).unwrap_err();
        assert!(e.starts_with("cannot decompress its gzip payload"), "{e}");
        let no_note = elf::tests::build_elf(2, &[(b"Xen", 6, b"linux\0")], b"");
        let mut gz = Vec::new();
        flate2::read::GzEncoder::new(no_note.as_slice(), flate2::Compression::fast())
            .read_to_end(&mut gz)
            .unwrap();
        assert!(extract_vmlinux(&fake_bzimage(&gz, "v"))
            .unwrap_err()
            .contains("no PVH entry note"));
        let mut truncated = fake_bzimage(&gz, "v");
        truncated.truncate(2100);
        assert!(extract_vmlinux(&truncated)
            .unwrap_err()
            .contains("outside the file"));
        let mut xz = Vec::new();
        xz2::read::XzEncoder::new(pvh_elf().as_slice(), 6)
            .read_to_end(&mut xz)
            .unwrap();
        let e = extract_vmlinux(&fake_bzimage(&xz[..xz.len() - 20], "v")).unwrap_err();
        assert!(e.starts_with("cannot decompress its xz payload"), "{e}");
    }

    #[test]
    fn reads_the_image_package_from_apt_cache_output() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            parse_depends("linux-image-amd64\n  Depends: <linux-image-6.1.0-9-amd64>\n").as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
        assert_eq!(
            parse_depends("linux-image-amd64\n  Depends: initramfs-tools\n"),
            None
        );
        assert_eq!(parse_depends(""), None);
    }

    #[test]
    fn missing_package_lists_say_run_apt_get_update_unless_a_kernel_is_cached() {
        if Command::new("apt-cache").arg("--version").output().is_err() {
            assert!(
                std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() != Ok("1"),
                "apt-cache is not installed"
            );
            eprintln!("skipping: apt-cache is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("empty-lists");
        std::fs::create_dir_all(lists.join("partial")).unwrap();
        let opt = format!("Dir::State::Lists={}", lists.display());
        let cache = dir.path().join("cache");
        let e = ensure_kernel_with(&cache, &[&opt]).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("apt cannot find the package {KERNEL_METAPACKAGE}: the package lists are missing or stale; run apt-get update")
        );

        // A complete cached kernel is used offline; a half-unpacked one (no marker) never is.
        let half = cache.join("kernels/9.9.9-half");
        std::fs::create_dir_all(half.join("boot")).unwrap();
        let done = cache.join("kernels/6.1.0-t");
        std::fs::create_dir_all(done.join("boot")).unwrap();
        for f in [
            "boot/vmlinuz-6.1.0-t",
            "boot/vmlinux-6.1.0-t",
            COMPLETE_MARKER,
        ] {
            std::fs::write(done.join(f), b"x").unwrap();
        }
        let k = ensure_kernel_with(&cache, &[&opt]).unwrap();
        assert_eq!(k.version, "6.1.0-t");
        assert_eq!(k.vmlinux, done.join("boot/vmlinux-6.1.0-t"));
        assert_eq!(k.modules_root, done.join("lib/modules/6.1.0-t"));
    }

    #[test]
    fn user_kernels_are_recognised_or_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let not = dir.path().join("notes.txt");
        std::fs::write(&not, "hello").unwrap();
        assert_eq!(
            kernel_from_path(&not, &cache).unwrap_err().to_string(),
            format!(
                "{} is not a Linux kernel (no bzImage header and not an ELF vmlinux)",
                not.display()
            )
        );

        // An unpacked-package layout: <root>/boot/vmlinuz-V with <root>/lib/modules/V.
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::create_dir_all(root.join("lib/modules/6.1.0-test")).unwrap();
        let mut gz = Vec::new();
        flate2::read::GzEncoder::new(pvh_elf().as_slice(), flate2::Compression::fast())
            .read_to_end(&mut gz)
            .unwrap();
        let bz = root.join("boot/vmlinuz-6.1.0-test");
        std::fs::write(&bz, fake_bzimage(&gz, "6.1.0-test (b@h) #1")).unwrap();
        let k = kernel_from_path(&bz, &cache).unwrap();
        assert_eq!(k.version, "6.1.0-test");
        assert_eq!(k.bzimage, bz);
        assert!(k.vmlinux.starts_with(cache.join("kernels")));
        assert_eq!(std::fs::read(&k.vmlinux).unwrap(), pvh_elf());
        assert_eq!(k.modules_root, root.join("lib/modules/6.1.0-test"));
        // Second call reuses the cached vmlinux.
        assert_eq!(kernel_from_path(&bz, &cache).unwrap(), k);

        let vm = dir.path().join("vmlinux");
        std::fs::write(&vm, pvh_elf()).unwrap();
        let k = kernel_from_path(&vm, &cache).unwrap();
        assert_eq!(
            (k.bzimage.as_path(), k.vmlinux.as_path()),
            (vm.as_path(), vm.as_path())
        );
        let plain = dir.path().join("plain-elf");
        std::fs::write(&plain, elf::tests::build_elf(2, &[], b"")).unwrap();
        assert!(kernel_from_path(&plain, &cache)
            .unwrap_err()
            .to_string()
            .contains("no PVH entry note"));
    }
}
