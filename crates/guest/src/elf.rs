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

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PAGE: usize = 4096;
/// A zero run this long (or longer) inside a loadable segment is left out of the file.
const MIN_GAP: usize = 16 * PAGE;

/// One program header, as read from or written to the file.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn phdrs(d: &[u8]) -> Option<Vec<Phdr>> {
    let (phoff, phentsize, phnum) = (
        usize_at(d, 32)?,
        usize::from(u16_at(d, 54)?),
        u16_at(d, 56)?,
    );
    if phentsize < 56 {
        return None;
    }
    (0..usize::from(phnum))
        .map(|i| {
            let h = phoff.checked_add(i.checked_mul(phentsize)?)?;
            Some(Phdr {
                p_type: u32_at(d, h)?,
                flags: u32_at(d, h + 4)?,
                offset: u64_at(d, h + 8)?,
                vaddr: u64_at(d, h + 16)?,
                paddr: u64_at(d, h + 24)?,
                filesz: u64_at(d, h + 32)?,
                memsz: u64_at(d, h + 40)?,
                align: u64_at(d, h + 48)?,
            })
        })
        .collect()
}

/// A vmlinux without the long padding runs inside its loadable segments, and without symbols
/// or section headers (nothing that boots it reads them). x86_64's linker script aligns the
/// entry text and the data to 2 MiB, so about 5 MB of the minimal kernel's file are padding that
/// QEMU would map and copy into the guest: memory the VMM holds twice for nothing. Each run of at
/// least 64 KiB of padding pages splits its segment in two. Padding is a page of zeros, or, in
/// an executable segment, of INT3 (0xCC, the linker's fill between text sections); the guest's
/// RAM reads zero there instead, which changes nothing that runs: no code is there. Segments
/// keep their addresses; the PT_NOTE (the PVH entry) moves with its bytes.
/// `None` when the file is not an x86_64 executable ELF or its headers point outside it.
pub fn without_zero_gaps(d: &[u8]) -> Option<Vec<u8>> {
    if !is_x86_64_exec(d) {
        return None;
    }
    let old = phdrs(d)?;
    // (source offset in the old file, new phdr) for every piece of every PT_LOAD.
    let mut pieces: Vec<(usize, Phdr)> = Vec::new();
    for ph in old.iter().filter(|p| p.p_type == PT_LOAD) {
        let (off, filesz) = (
            usize::try_from(ph.offset).ok()?,
            usize::try_from(ph.filesz).ok()?,
        );
        let bytes = d.get(off..off.checked_add(filesz)?)?;
        // Page boundaries in the guest's address space: pages of the segment that are all zero.
        let lead = (PAGE - (ph.vaddr as usize % PAGE)) % PAGE;
        let mut keep: Vec<(usize, usize)> = Vec::new(); // [start, end) within the segment
        let mut start = 0usize;
        let fill = |page: &[u8]| {
            page.iter().all(|&b| b == 0)
                || (ph.flags & PF_X != 0 && page.iter().all(|&b| b == 0xcc))
        };
        let mut p = lead;
        while p < filesz {
            if fill(&bytes[p..(p + PAGE).min(filesz)]) {
                let mut q = p;
                while q < filesz && fill(&bytes[q..(q + PAGE).min(filesz)]) {
                    q = (q + PAGE).min(filesz);
                }
                // An interior run only: a zero tail stays (memsz may extend it with bss).
                if q - p >= MIN_GAP && q < filesz {
                    keep.push((start, p));
                    start = q;
                }
                p = q;
            } else {
                p += PAGE;
            }
        }
        keep.push((start, filesz));
        let last = keep.len() - 1;
        for (i, &(a, b)) in keep.iter().enumerate() {
            let memsz = if i == last {
                ph.memsz.checked_sub(a as u64)?
            } else {
                (b - a) as u64
            };
            pieces.push((
                off + a,
                Phdr {
                    offset: 0, // set below
                    vaddr: ph.vaddr + a as u64,
                    paddr: ph.paddr + a as u64,
                    filesz: (b - a) as u64,
                    memsz,
                    align: PAGE as u64,
                    ..*ph
                },
            ));
        }
    }
    let others: Vec<Phdr> = old
        .iter()
        .filter(|p| p.p_type != PT_LOAD)
        .copied()
        .collect();
    let phnum = pieces.len() + others.len();
    let mut out = d.get(..64)?.to_vec();
    out.resize(64 + phnum * 56, 0);
    for (src, ph) in pieces.iter_mut() {
        // A file offset congruent to the address modulo the page size, as loaders expect.
        let want = (ph.vaddr as usize) % PAGE;
        while out.len() % PAGE != want {
            out.push(0);
        }
        ph.offset = out.len() as u64;
        out.extend_from_slice(d.get(*src..*src + ph.filesz as usize)?);
    }
    // Non-load headers (the PT_NOTE) point into some piece's bytes: follow them there.
    let mut moved = Vec::new();
    for ph in &others {
        let mut ph = *ph;
        if ph.filesz > 0 {
            let src = usize::try_from(ph.offset).ok()?;
            let (from, piece) = pieces.iter().find(|(from, p)| {
                src >= *from && src + ph.filesz as usize <= *from + p.filesz as usize
            })?;
            ph.offset = piece.offset + (src - from) as u64;
        }
        moved.push(ph);
    }
    let all: Vec<Phdr> = pieces.into_iter().map(|(_, p)| p).chain(moved).collect();
    for (i, ph) in all.iter().enumerate() {
        let h = 64 + i * 56;
        out[h..h + 4].copy_from_slice(&ph.p_type.to_le_bytes());
        out[h + 4..h + 8].copy_from_slice(&ph.flags.to_le_bytes());
        for (j, v) in [ph.offset, ph.vaddr, ph.paddr, ph.filesz, ph.memsz, ph.align]
            .iter()
            .enumerate()
        {
            out[h + 8 + j * 8..h + 16 + j * 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    out[40..48].copy_from_slice(&0u64.to_le_bytes()); // e_shoff: no section headers
    out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    out[56..58].copy_from_slice(&u16::try_from(phnum).ok()?.to_le_bytes());
    out[58..64].copy_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    Some(out)
}

/// What a loader puts in memory for `d`'s PT_LOAD segments: `(physical address, bytes)` with the
/// zero fill up to `memsz` (for the tests).
#[cfg(test)]
fn loaded(d: &[u8]) -> Vec<(u64, Vec<u8>)> {
    phdrs(d)
        .unwrap()
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .map(|p| {
            let mut b = d[p.offset as usize..(p.offset + p.filesz) as usize].to_vec();
            b.resize(p.memsz as usize, 0);
            (p.paddr, b)
        })
        .collect()
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

    /// An executable with these PT_LOAD segments `(paddr, bytes, memsz)` at 2 MiB-aligned file
    /// offsets (as the kernel's linker script lays them out) and a PT_NOTE over `note` bytes of
    /// the first segment from offset `at`.
    fn exec_with(segs: &[(u64, Vec<u8>, u64)], at: usize, note: usize) -> Vec<u8> {
        const ALIGN: usize = 0x20_0000;
        let phnum = segs.len() + 1;
        let mut d = vec![0u8; ALIGN];
        let mut offsets = Vec::new();
        for (_, bytes, _) in segs {
            d.resize(d.len().div_ceil(ALIGN) * ALIGN, 0);
            offsets.push(d.len());
            d.extend_from_slice(bytes);
        }
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[6] = 1;
        d[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        d[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        let fake_shoff = d.len() as u64 - 64;
        d[40..48].copy_from_slice(&fake_shoff.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut put = |i: usize, ty: u32, off: usize, paddr: u64, filesz: usize, memsz: u64| {
            let h = 64 + i * 56;
            d[h..h + 4].copy_from_slice(&ty.to_le_bytes());
            let flags: u32 = if i == 0 { 5 } else { 6 }; // R+X for the text, R+W after it
            d[h + 4..h + 8].copy_from_slice(&flags.to_le_bytes());
            for (j, v) in [
                off as u64,
                paddr | 0xffff_ffff_8000_0000,
                paddr,
                filesz as u64,
                memsz,
                ALIGN as u64,
            ]
            .iter()
            .enumerate()
            {
                d[h + 8 + j * 8..h + 16 + j * 8].copy_from_slice(&v.to_le_bytes());
            }
        };
        for (i, (paddr, bytes, memsz)) in segs.iter().enumerate() {
            put(i, PT_LOAD, offsets[i], *paddr, bytes.len(), *memsz);
        }
        put(
            segs.len(),
            PT_NOTE,
            offsets[0] + at,
            segs[0].0 + at as u64,
            note,
            note as u64,
        );
        d
    }

    /// The memory a loader fills for `d`, from its lowest physical address to its highest end
    /// (what it never writes stays 0, as a fresh guest's RAM).
    fn memory(d: &[u8]) -> Vec<u8> {
        let segs = loaded(d);
        let low = segs.iter().map(|(a, _)| *a).min().unwrap_or(0);
        let high = segs
            .iter()
            .map(|(a, b)| a + b.len() as u64)
            .max()
            .unwrap_or(0);
        let mut m = vec![0u8; (high - low) as usize];
        for (paddr, bytes) in segs {
            let at = (paddr - low) as usize;
            m[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        m
    }

    fn pvh_note() -> Vec<u8> {
        let mut n = Vec::new();
        n.extend(4u32.to_le_bytes());
        n.extend(4u32.to_le_bytes());
        n.extend(XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
        n.extend(b"Xen\0");
        n.extend(0x100_0000u32.to_le_bytes());
        n
    }

    #[test]
    fn zero_gaps_leave_the_file_and_the_loaded_memory_is_the_same() {
        // text (executable) with a 2 MiB zero gap, the PVH note, 1 MiB of INT3 padding and a
        // short INT3 run that stays; data with a zero gap; then bss past the file size.
        let mut text = vec![0x90u8; 0x3_0000];
        text.extend(pvh_note());
        text.resize(0x3_0000 + 0x20_0000, 0);
        text.extend(vec![0x90u8; 0x1000]);
        let int3 = text.len();
        text.extend(vec![0xccu8; 0x10_0000]);
        text.extend(vec![0x90u8; 0x1000]);
        text.extend(vec![0xccu8; 0x1_2345]);
        let mut data = vec![0x11u8; 0x8000];
        data.resize(0x10_0000, 0);
        data.extend(vec![0x22u8; 0x1000]);
        let d = exec_with(
            &[
                (0x100_0000, text.clone(), text.len() as u64),
                (0x160_0000, data, 0x14_0000),
            ],
            0x3_0000,
            20,
        );
        let slim = without_zero_gaps(&d).unwrap();
        assert!(slim.len() < d.len() / 3, "{} of {}", slim.len(), d.len());
        // The same memory, but for the INT3 padding, which reads zero.
        let mut want = memory(&d);
        want[int3..int3 + 0x10_0000].fill(0);
        assert_eq!(memory(&slim), want);
        assert!(has_pvh_note(&slim));
        assert_eq!(notes(&slim), notes(&d));
        // The bss keeps its size: the last piece of the data segment still ends at memsz.
        let end = |e: &[u8]| {
            phdrs(e)
                .unwrap()
                .iter()
                .filter(|p| p.p_type == PT_LOAD)
                .map(|p| p.paddr + p.memsz)
                .max()
        };
        assert_eq!(end(&slim), end(&d));
        // Five pieces of text+data, no section headers; offsets congruent to addresses.
        let ph = phdrs(&slim).unwrap();
        assert_eq!(ph.iter().filter(|p| p.p_type == PT_LOAD).count(), 5);
        assert!(ph
            .iter()
            .all(|p| p.offset % 4096 == p.vaddr % 4096 || p.filesz == 0));
        assert_eq!(u64_at(&slim, 40), Some(0));
        // Idempotent, and deterministic.
        assert_eq!(without_zero_gaps(&slim).unwrap(), slim);
        assert_eq!(without_zero_gaps(&d).unwrap(), slim);
    }

    #[test]
    fn not_an_executable_or_headers_outside_the_file_give_none() {
        assert!(without_zero_gaps(b"\x7fELF").is_none());
        assert!(without_zero_gaps(&build_elf(ET_REL, &[], b"")).is_none());
        let mut d = exec_with(&[(0x100_0000, vec![1; 4096], 4096)], 0, 0);
        d[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes()); // segment offset
        assert!(without_zero_gaps(&d).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn any_layout_loads_the_same_bytes(
            runs in proptest::collection::vec((0usize..40, proptest::bool::ANY), 1..10),
            bss in 0u64..0x2_0000,
            cut in 0usize..3,
        ) {
            // A segment made of runs of pages, each all zero or all 0xab.
            let mut text = Vec::new();
            for (pages, zero) in &runs {
                text.extend(std::iter::repeat_n(if *zero { 0u8 } else { 0xab }, pages * 4096));
            }
            // A ragged end, so the last page is partial.
            let ragged = text.len().saturating_sub(cut * 100);
            text.truncate(ragged);
            text.extend(pvh_note());
            let memsz = text.len() as u64 + bss;
            let at = text.len() - 20;
            let d = exec_with(&[(0x100_0000, text, memsz)], at, 20);
            let slim = without_zero_gaps(&d).unwrap();
            proptest::prop_assert_eq!(memory(&slim), memory(&d));
            proptest::prop_assert!(has_pvh_note(&slim));
            proptest::prop_assert!(slim.len() <= d.len());
        }
    }
}
