//! A reader for glibc's `/etc/ld.so.cache`: the new `glibc-ld.so.cache1.1` format, alone or
//! appended to the old `ld.so-1.7.0` table (the "compat" layout of glibc < 2.32), and the old
//! table alone. Pure: bytes in, entries out.

const MAGIC_NEW: &[u8] = b"glibc-ld.so.cache1.1";
const MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
/// magic(20) nlibs(4) len_strings(4) flags(1) pad(3) extension_offset(4) unused(12)
const NEW_HEADER: usize = 48;
/// flags(4) key(4) value(4) osversion(4) hwcap(8)
const NEW_ENTRY: usize = 24;
/// magic(11) pad(1) nlibs(4)
const OLD_HEADER: usize = 16;
/// flags(4) key(4) value(4)
const OLD_ENTRY: usize = 12;
/// `cache_file_new.flags` value for a big-endian cache.
const FLAGS_BIG_ENDIAN: u8 = 3;

/// One library the cache knows: `key` is the soname (`libc.so.6`), `value` the absolute path
/// ldconfig found it at. `hwcap` is non-zero for glibc-hwcaps / legacy hwcap subdirectory variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheEntry {
    pub flags: i32,
    pub key: String,
    pub value: String,
    pub hwcap: u64,
}

/// Parses an ld.so.cache. Errors say what is wrong; ld.so ignores such a cache, and so do we.
pub(crate) fn parse_ld_so_cache(bytes: &[u8]) -> Result<Vec<CacheEntry>, String> {
    if bytes.starts_with(MAGIC_NEW) {
        return parse_new(bytes, 0);
    }
    if bytes.starts_with(MAGIC_OLD) {
        let nlibs = read_u32(bytes, 12).ok_or("the header is truncated")? as usize;
        let table_end = nlibs
            .checked_mul(OLD_ENTRY)
            .and_then(|n| n.checked_add(OLD_HEADER))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                format!(
                    "it claims {nlibs} entries but is only {} bytes long",
                    bytes.len()
                )
            })?;
        let new_at = (table_end + 7) & !7;
        if bytes
            .get(new_at..)
            .is_some_and(|rest| rest.starts_with(MAGIC_NEW))
        {
            return parse_new(bytes, new_at);
        }
        let mut entries = Vec::with_capacity(nlibs);
        for i in 0..nlibs {
            let at = OLD_HEADER + i * OLD_ENTRY;
            let flags = read_u32(bytes, at).ok_or("an entry is truncated")? as i32;
            let key = read_u32(bytes, at + 4).ok_or("an entry is truncated")?;
            let value = read_u32(bytes, at + 8).ok_or("an entry is truncated")?;
            entries.push(CacheEntry {
                flags,
                key: read_str(bytes, table_end, key)?,
                value: read_str(bytes, table_end, value)?,
                hwcap: 0,
            });
        }
        return Ok(entries);
    }
    Err("it does not start with the ld.so.cache magic".to_string())
}

/// String offsets of the new format are relative to the start of its header.
fn parse_new(bytes: &[u8], base: usize) -> Result<Vec<CacheEntry>, String> {
    let header = bytes
        .get(base..base + NEW_HEADER)
        .ok_or("the header is truncated")?;
    if header[28] == FLAGS_BIG_ENDIAN {
        return Err("it is a big-endian cache".to_string());
    }
    let nlibs = read_u32(header, 20).ok_or("the header is truncated")? as usize;
    let end = nlibs
        .checked_mul(NEW_ENTRY)
        .and_then(|n| n.checked_add(base + NEW_HEADER))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            format!(
                "it claims {nlibs} entries but is only {} bytes long",
                bytes.len()
            )
        })?;
    debug_assert!(end <= bytes.len());
    let mut entries = Vec::with_capacity(nlibs);
    for i in 0..nlibs {
        let at = base + NEW_HEADER + i * NEW_ENTRY;
        let flags = read_u32(bytes, at).ok_or("an entry is truncated")? as i32;
        let key = read_u32(bytes, at + 4).ok_or("an entry is truncated")?;
        let value = read_u32(bytes, at + 8).ok_or("an entry is truncated")?;
        let hwcap = read_u64(bytes, at + 16).ok_or("an entry is truncated")?;
        entries.push(CacheEntry {
            flags,
            key: read_str(bytes, base, key)?,
            value: read_str(bytes, base, value)?,
            hwcap,
        });
    }
    Ok(entries)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn read_str(bytes: &[u8], base: usize, offset: u32) -> Result<String, String> {
    let start = base
        .checked_add(offset as usize)
        .filter(|&s| s < bytes.len());
    let rest = start
        .map(|s| &bytes[s..])
        .ok_or_else(|| format!("a string offset ({offset}) is past the end"))?;
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or("a string is not terminated")?;
    String::from_utf8(rest[..len].to_vec()).map_err(|_| "a string is not valid UTF-8".to_string())
}

/// Writes a cache in the new format; for tests of the reader and of closures in fake roots.
#[cfg(test)]
pub(crate) fn write_new(entries: &[(&str, &str)]) -> Vec<u8> {
    let strings_at = NEW_HEADER + entries.len() * NEW_ENTRY;
    let mut strings = Vec::new();
    let mut table = Vec::new();
    for (key, value) in entries {
        let key_off = strings_at + strings.len();
        strings.extend_from_slice(key.as_bytes());
        strings.push(0);
        let value_off = strings_at + strings.len();
        strings.extend_from_slice(value.as_bytes());
        strings.push(0);
        table.extend_from_slice(&0x0303i32.to_le_bytes());
        table.extend_from_slice(&(key_off as u32).to_le_bytes());
        table.extend_from_slice(&(value_off as u32).to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        table.extend_from_slice(&0u64.to_le_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC_NEW);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    out.extend_from_slice(&[2, 0, 0, 0]);
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&table);
    out.extend_from_slice(&strings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn new_format_round_trips() {
        let bytes = write_new(&[
            ("libfoo.so.1", "/opt/lib/libfoo.so.1"),
            ("libc.so.6", "/lib/libc.so.6"),
        ]);
        let entries = parse_ld_so_cache(&bytes).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, "libfoo.so.1");
        assert_eq!(entries[0].value, "/opt/lib/libfoo.so.1");
        assert_eq!(entries[1].flags, 0x0303);
    }

    #[test]
    fn compat_layout_reads_the_new_table_after_the_old_one() {
        // old header with 1 entry whose strings are relative to the end of the old table
        let new = write_new(&[("libnew.so.1", "/new/libnew.so.1")]);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC_OLD);
        bytes.push(0);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        while bytes.len() % 8 != 0 {
            bytes.push(0);
        }
        bytes.extend_from_slice(&new);
        let entries = parse_ld_so_cache(&bytes).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key, "libnew.so.1");
        assert_eq!(entries[0].value, "/new/libnew.so.1");
    }

    #[test]
    fn old_only_layout_is_read() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC_OLD);
        bytes.push(0);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&3i32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&8u32.to_le_bytes());
        bytes.extend_from_slice(b"libx.so\0/l/libx.so\0");
        let entries = parse_ld_so_cache(&bytes).unwrap();
        assert_eq!(
            entries,
            vec![CacheEntry {
                flags: 3,
                key: "libx.so".into(),
                value: "/l/libx.so".into(),
                hwcap: 0
            }]
        );
    }

    #[test]
    fn damaged_caches_are_rejected_with_a_reason() {
        assert_eq!(
            parse_ld_so_cache(b"hello").unwrap_err(),
            "it does not start with the ld.so.cache magic"
        );
        let mut bytes = write_new(&[("libfoo.so.1", "/opt/lib/libfoo.so.1")]);
        bytes.truncate(60);
        assert_eq!(
            parse_ld_so_cache(&bytes).unwrap_err(),
            "it claims 1 entries but is only 60 bytes long"
        );
        let mut bytes = write_new(&[("libfoo.so.1", "/opt/lib/libfoo.so.1")]);
        bytes[52..56].copy_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(
            parse_ld_so_cache(&bytes).unwrap_err(),
            "a string offset (100000) is past the end"
        );
        let mut bytes = write_new(&[("libfoo.so.1", "/opt/lib/libfoo.so.1")]);
        bytes.pop();
        assert_eq!(
            parse_ld_so_cache(&bytes).unwrap_err(),
            "a string is not terminated"
        );
    }

    /// The host's cache, read by us, has the same entries `ldconfig -p` prints.
    #[test]
    fn host_cache_matches_ldconfig() {
        let Ok(bytes) = std::fs::read("/etc/ld.so.cache") else {
            eprintln!("skipping: /etc/ld.so.cache is not readable on this machine");
            return;
        };
        let Ok(out) = Command::new("ldconfig").arg("-p").output() else {
            eprintln!("skipping: ldconfig is not installed");
            return;
        };
        let entries = parse_ld_so_cache(&bytes).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut theirs: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| {
                let (left, path) = l.split_once(" => ")?;
                let name = left.trim().split(' ').next()?;
                Some((name.to_string(), path.trim().to_string()))
            })
            .collect();
        let mut ours: Vec<(String, String)> = entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        theirs.sort();
        ours.sort();
        assert_eq!(ours, theirs);
        assert!(entries.iter().any(|e| e.key == "libc.so.6"));
    }
}

/// Property tests: 256 arbitrary and 256 well-formed caches; the reader never panics and
/// reads back what was written.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_ld_so_cache(&bytes);
        }

        #[test]
        fn written_caches_read_back(
            entries in proptest::collection::vec(("lib[a-z]{1,8}\\.so\\.[0-9]", "/[a-z]{1,8}/lib[a-z]{1,8}\\.so"), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let pairs: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let bytes = write_new(&pairs);
            let read = parse_ld_so_cache(&bytes).unwrap();
            prop_assert_eq!(read.len(), pairs.len());
            // Truncated anywhere: an error or fewer entries, never a panic.
            let _ = parse_ld_so_cache(&bytes[..cut.index(bytes.len() + 1)]);
        }
    }
}
