//! Hand-made ELF headers for unit tests.

/// A header-only ELF file (no program or section headers) of the given class (1 = 32-bit,
/// 2 = 64-bit), byte order (1 = little, 2 = big), type and machine.
pub(crate) fn elf_header(class: u8, data: u8, e_type: u16, machine: u16) -> Vec<u8> {
    let is64 = class == 2;
    let size = if is64 { 64 } else { 52 };
    let mut h = vec![0u8; size];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1; // EV_CURRENT
    let put16 = |h: &mut Vec<u8>, at: usize, v: u16| {
        let b = if data == 1 {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        h[at..at + 2].copy_from_slice(&b);
    };
    put16(&mut h, 16, e_type);
    put16(&mut h, 18, machine);
    let version = if data == 1 {
        1u32.to_le_bytes()
    } else {
        1u32.to_be_bytes()
    };
    h[20..24].copy_from_slice(&version);
    let (ehsize_at, phentsize_at, shentsize_at) = if is64 { (52, 54, 58) } else { (40, 42, 46) };
    put16(&mut h, ehsize_at, size as u16);
    put16(&mut h, phentsize_at, if is64 { 56 } else { 32 });
    put16(&mut h, shentsize_at, if is64 { 64 } else { 40 });
    h
}
