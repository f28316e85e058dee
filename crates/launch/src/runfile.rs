//! A run's `-e` values and `-- ARGS` for a Linux guest, off the kernel command line: a second
//! newc cpio archive, holding only [`bakeoff_init::RUN_PATH`], appended to the image's
//! initramfs. Linux unpacks concatenated archives in order (compressed or not), so PID 1 finds
//! the file in its root. The host keeps the result in the instance dir, 0600.

use bakeoff_init::{RunOverrides, RUN_PATH};

/// `base` (the image's initramfs), padded to 4 bytes, then an uncompressed newc archive with
/// the run file (mode 0400, owned by root).
pub fn run_initrd(base: &[u8], overrides: &RunOverrides) -> Vec<u8> {
    run_initrd_with(base, overrides, &[])
}

/// One more entry of the appended archive: a path without the leading `/`, its mode (with the
/// file type bits, e.g. `0o40755` for a directory) and its contents.
pub type RunEntry<'a> = (&'a str, u32, &'a [u8]);

/// [`run_initrd`] with `extra` entries after the run file (directories before their files).
pub fn run_initrd_with(base: &[u8], overrides: &RunOverrides, extra: &[RunEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + 1024);
    out.extend_from_slice(base);
    pad4(&mut out);
    let name = RUN_PATH.trim_start_matches('/');
    newc_entry(&mut out, 1, name, 0o100400, overrides.to_json().as_bytes());
    for (i, (name, mode, data)) in extra.iter().enumerate() {
        newc_entry(&mut out, 2 + i as u32, name, *mode, data);
    }
    newc_entry(&mut out, 0, "TRAILER!!!", 0, b"");
    pad4(&mut out);
    out
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn newc_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let nlink = u32::from(mode != 0);
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a newc archive the way the kernel does: (name, mode, data) per entry.
    fn unpack(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        let up4 = |n: usize| n.div_ceil(4) * 4;
        loop {
            assert_eq!(&b[..6], b"070701");
            let (mode, size, namesize) = (field(b, 1), field(b, 6) as usize, field(b, 11) as usize);
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            let data_at = up4(110 + namesize);
            let data = b[data_at..data_at + size].to_vec();
            b = &b[up4(data_at + size)..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, data));
        }
    }

    /// The appended archive holds one file, 0400, with the JSON PID 1 parses.
    #[test]
    fn the_run_archive_unpacks_to_the_run_file() {
        let o = RunOverrides {
            env: vec![("SECRET".into(), "s3cr3t \"quoted\"".into())],
            args: Some(vec!["-v".into()]),
        };
        let bytes = run_initrd(b"BASE!", &o);
        assert_eq!(&bytes[..8], b"BASE!\0\0\0");
        let entries = unpack(&bytes[8..]);
        assert_eq!(entries.len(), 1);
        let (name, mode, data) = &entries[0];
        assert_eq!((name.as_str(), *mode), ("bakeoff-run.json", 0o100400));
        let text = std::str::from_utf8(data).unwrap();
        assert_eq!(RunOverrides::from_json(text).unwrap(), o);
    }
}
