//! Just enough ELF64 reading for a kernel image (PVH note) and a kernel module (`.modinfo`).
//! Every offset is bounds-checked: a truncated or hostile file gives `None`, never a panic.

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry point QEMU's microvm machine jumps to.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

const PT_NOTE: u32 = 4;
const ET_EXEC: u16 = 2;
const ET_REL: u16 = 1;
const EM_X86_64: u16 = 62;

pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(d: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}
fn usize_at(d: &[u8], off: usize) -> Option<usize> {
    usize::try_from(u64_at(d, off)?).ok()
}

/// A little-endian x86_64 ELF64 of the given `e_type`.
fn header_ok(d: &[u8], e_type: u16) -> bool {
    is_elf(d)
        && d.get(4) == Some(&2)
        && d.get(5) == Some(&1)
        && u16_at(d, 16) == Some(e_type)
        && u16_at(d, 18) == Some(EM_X86_64)
}

/// Whether `d` is an x86_64 executable ELF (a vmlinux).
pub fn is_x86_64_exec(d: &[u8]) -> bool {
    header_ok(d, ET_EXEC)
}

/// Whether `d` is an x86_64 relocatable ELF (a kernel module).
pub fn is_x86_64_rel(d: &[u8]) -> bool {
    header_ok(d, ET_REL)
}

/// Iterates the notes of all PT_NOTE segments: `(name, type, desc)`.
pub fn notes(d: &[u8]) -> Vec<(&[u8], u32, &[u8])> {
    let mut out = Vec::new();
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (usize_at(d, 32), u16_at(d, 54), u16_at(d, 56))
    else {
        return out;
    };
    for i in 0..usize::from(phnum) {
        let Some(ph) = phoff.checked_add(i * usize::from(phentsize)) else {
            break;
        };
        if u32_at(d, ph) != Some(PT_NOTE) {
            continue;
        }
        let (Some(off), Some(size)) = (usize_at(d, ph + 8), usize_at(d, ph + 32)) else {
            continue;
        };
        let Some(seg) = off.checked_add(size).and_then(|end| d.get(off..end)) else {
            continue;
        };
        let mut p = 0usize;
        while p + 12 <= seg.len() {
            let (Some(namesz), Some(descsz), Some(ty)) =
                (u32_at(seg, p), u32_at(seg, p + 4), u32_at(seg, p + 8))
            else {
                break;
            };
            let (namesz, descsz) = (namesz as usize, descsz as usize);
            let name_start = p + 12;
            let desc_start = name_start + namesz.div_ceil(4) * 4;
            let next = desc_start + descsz.div_ceil(4) * 4;
            let (Some(name), Some(desc)) = (
                seg.get(name_start..name_start + namesz),
                seg.get(desc_start..desc_start + descsz),
            ) else {
                break;
            };
            out.push((name.strip_suffix(b"\0").unwrap_or(name), ty, desc));
            p = next;
        }
    }
    out
}

/// Whether an executable ELF has the PVH entry note (name "Xen", type 18).
pub fn has_pvh_note(d: &[u8]) -> bool {
    notes(d)
        .iter()
        .any(|(name, ty, _)| *name == b"Xen" && *ty == XEN_ELFNOTE_PHYS32_ENTRY)
}

/// The contents of the named section, from the section headers.
pub fn section<'a>(d: &'a [u8], wanted: &str) -> Option<&'a [u8]> {
    let shoff = usize_at(d, 40)?;
    let shentsize = usize::from(u16_at(d, 58)?);
    let shnum = usize::from(u16_at(d, 60)?);
    let shstrndx = usize::from(u16_at(d, 62)?);
    let sh = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let strtab = sh(shstrndx)?;
    let (str_off, str_size) = (
        usize_at(d, strtab.checked_add(24)?)?,
        usize_at(d, strtab.checked_add(32)?)?,
    );
    let names = d.get(str_off..str_off.checked_add(str_size)?)?;
    for i in 0..shnum {
        let h = sh(i)?;
        let name_off = u32_at(d, h)? as usize;
        let name = names.get(name_off..)?;
        let name = &name[..name.iter().position(|&b| b == 0)?];
        if name == wanted.as_bytes() {
            let (off, size) = (
                usize_at(d, h.checked_add(24)?)?,
                usize_at(d, h.checked_add(32)?)?,
            );
            return d.get(off..off.checked_add(size)?);
        }
    }
    None
}

/// The `key=value` strings of a module's `.modinfo` section, in order.
pub fn modinfo(d: &[u8]) -> Vec<(String, String)> {
    let Some(sec) = section(d, ".modinfo") else {
        return Vec::new();
    };
    sec.split(|&b| b == 0)
        .filter_map(|entry| {
            let s = std::str::from_utf8(entry).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The release (e.g. `6.1.0-56-amd64`) from the `Linux version ...` banner inside a vmlinux.
pub fn banner_release(d: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let mut from = 0;
    while let Some(pos) = d
        .get(from..)?
        .windows(BANNER.len())
        .position(|w| w == BANNER)
    {
        let start = from + pos + BANNER.len();
        let rest = d.get(start..(start + 128).min(d.len()))?;
        let end = rest
            .iter()
            .position(|&b| b == b' ' || b == 0)
            .unwrap_or(rest.len());
        let release = std::str::from_utf8(&rest[..end]).ok()?;
        // Skip format strings such as "Linux version %s" and keep the real banner.
        if !release.is_empty()
            && release.bytes().all(|b| b.is_ascii_graphic())
            && !release.contains('%')
        {
            return Some(release.to_string());
        }
        from = start;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal x86_64 ELF64 with one PT_NOTE segment holding the given notes, and section
    /// headers with a `.modinfo` section.
    pub(crate) fn build_elf(e_type: u16, notes: &[(&[u8], u32, &[u8])], modinfo: &[u8]) -> Vec<u8> {
        let mut note_seg = Vec::new();
        for (name, ty, desc) in notes {
            let mut n = name.to_vec();
            n.push(0);
            note_seg.extend((n.len() as u32).to_le_bytes());
            note_seg.extend((desc.len() as u32).to_le_bytes());
            note_seg.extend(ty.to_le_bytes());
            note_seg.extend(&n);
            note_seg.resize(note_seg.len().div_ceil(4) * 4, 0);
            note_seg.extend(*desc);
            note_seg.resize(note_seg.len().div_ceil(4) * 4, 0);
        }
        let shstr = b"\0.modinfo\0.shstrtab\0".to_vec();
        let phoff = 64usize;
        let notes_off = phoff + 56;
        let modinfo_off = notes_off + note_seg.len();
        let shstr_off = modinfo_off + modinfo.len();
        let shoff = (shstr_off + shstr.len()).div_ceil(8) * 8;
        let mut d = vec![0u8; shoff + 3 * 64];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[6] = 1;
        d[16..18].copy_from_slice(&e_type.to_le_bytes());
        d[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        d[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        d[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&1u16.to_le_bytes());
        d[58..60].copy_from_slice(&64u16.to_le_bytes());
        d[60..62].copy_from_slice(&3u16.to_le_bytes());
        d[62..64].copy_from_slice(&2u16.to_le_bytes());
        // PT_NOTE program header
        d[phoff..phoff + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        d[phoff + 8..phoff + 16].copy_from_slice(&(notes_off as u64).to_le_bytes());
        d[phoff + 32..phoff + 40].copy_from_slice(&(note_seg.len() as u64).to_le_bytes());
        d[notes_off..modinfo_off].copy_from_slice(&note_seg);
        d[modinfo_off..shstr_off].copy_from_slice(modinfo);
        d[shstr_off..shstr_off + shstr.len()].copy_from_slice(&shstr);
        // section 1: .modinfo, section 2: .shstrtab
        for (i, name_off, off, size) in [
            (1, 1u32, modinfo_off, modinfo.len()),
            (2, 10u32, shstr_off, shstr.len()),
        ] {
            let h = shoff + i * 64;
            d[h..h + 4].copy_from_slice(&name_off.to_le_bytes());
            d[h + 24..h + 32].copy_from_slice(&(off as u64).to_le_bytes());
            d[h + 32..h + 40].copy_from_slice(&(size as u64).to_le_bytes());
        }
        d
    }

    #[test]
    fn finds_the_pvh_note_among_others() {
        let with = build_elf(
            ET_EXEC,
            &[
                (b"Xen", 6, b"linux\0"),
                (b"GNU", 3, &[1; 20]),
                (b"Xen", 18, &[0, 8, 0, 1]),
            ],
            b"",
        );
        assert!(is_x86_64_exec(&with));
        assert!(has_pvh_note(&with));
        let without = build_elf(
            ET_EXEC,
            &[(b"Xen", 6, b"linux\0"), (b"GNU", 18, &[0; 4])],
            b"",
        );
        assert!(!has_pvh_note(&without));
        assert!(!is_x86_64_rel(&with));
    }

    #[test]
    fn reads_modinfo() {
        let m = build_elf(
            ET_REL,
            &[],
            b"license=GPL\0depends=virtio_ring,virtio\0vermagic=6.1.0-56-amd64 SMP mod_unload\0\0",
        );
        assert!(is_x86_64_rel(&m));
        assert_eq!(
            modinfo(&m),
            vec![
                ("license".into(), "GPL".into()),
                ("depends".into(), "virtio_ring,virtio".into()),
                ("vermagic".into(), "6.1.0-56-amd64 SMP mod_unload".into())
            ]
        );
    }

    #[test]
    fn survives_truncated_and_garbage_input() {
        let good = build_elf(ET_REL, &[(b"Xen", 18, &[0; 4])], b"depends=\0");
        for len in 0..good.len() {
            let cut = &good[..len];
            let _ = (has_pvh_note(cut), modinfo(cut), is_x86_64_rel(cut));
        }
        let mut bad = good.clone();
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        bad[40..48].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(!has_pvh_note(&bad));
        assert!(modinfo(&bad).is_empty());
    }

    #[test]
    fn finds_the_release_in_the_banner() {
        let d = b"xx Linux version %s (%s)\0 junk Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1";
        assert_eq!(banner_release(d).as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(banner_release(b"no banner here"), None);
    }
}
