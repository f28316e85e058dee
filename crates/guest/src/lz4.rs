//! LZ4's legacy frame (`lz4 -l`), the LZ4 format the kernel's initramfs and bzImage decompressors
//! read: the magic 0x184C2102, then blocks of at most 8 MiB of input each as
//! `[u32 LE compressed size][block]`. A new magic may start another stream. A zero size ends the
//! stream for the kernel's initramfs unpacker (`lib/decompress_unlz4.c`), so an uncompressed
//! archive can follow it, as the per-run file does; the kernel build instead appends the
//! uncompressed size as 4 trailing bytes.

use std::io::{self, Write};

pub const MAGIC: u32 = 0x184C_2102;
/// The kernel decompresses each block into a buffer of this size.
const BLOCK: usize = 8 << 20;

/// Compresses what is written to it into one legacy stream; [`Lz4Writer::finish`] writes the
/// last block and the zero end marker.
pub struct Lz4Writer<W: Write> {
    w: W,
    pending: Vec<u8>,
}

impl<W: Write> Lz4Writer<W> {
    pub fn new(mut w: W) -> io::Result<Lz4Writer<W>> {
        w.write_all(&MAGIC.to_le_bytes())?;
        Ok(Lz4Writer {
            w,
            pending: Vec::with_capacity(BLOCK),
        })
    }

    fn block(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let block = lz4_flex::block::compress(&self.pending);
        self.w.write_all(&(block.len() as u32).to_le_bytes())?;
        self.w.write_all(&block)?;
        self.pending.clear();
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.block()?;
        self.w.write_all(&0u32.to_le_bytes())?;
        self.w.flush()?;
        Ok(self.w)
    }
}

impl<W: Write> Write for Lz4Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == BLOCK {
            self.block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Decompresses a legacy stream (or several, one after another) from the start of `data` into
/// `out`; stops at a zero size, at a size field with no block after it (the kernel build's
/// trailing length, or padding), or at the end. Returns how many bytes it added.
pub fn decode(data: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let u32_at = |p: usize| {
        data.get(p..p + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u32_at(0) != Some(MAGIC) {
        return Err(bad("no LZ4 legacy magic"));
    }
    let start = out.len();
    let mut pos = 4;
    while let Some(size) = u32_at(pos) {
        if size == MAGIC {
            pos += 4;
            continue;
        }
        if size == 0 {
            break;
        }
        let size = size as usize;
        let Some(block) = data.get(pos + 4..pos + 4 + size) else {
            break;
        };
        let mut buf = vec![0u8; BLOCK];
        let n = lz4_flex::block::decompress_into(block, &mut buf)
            .map_err(|e| bad(&format!("corrupt LZ4 block: {e}")))?;
        out.extend_from_slice(&buf[..n]);
        pos += 4 + size;
    }
    if out.len() == start {
        return Err(bad("the LZ4 stream holds no block"));
    }
    Ok(out.len() - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(data: &[u8]) -> Vec<u8> {
        let mut w = Lz4Writer::new(Vec::new()).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn more_than_one_block_round_trips_and_ends_with_the_zero_marker() {
        let data: Vec<u8> = (0..(BLOCK + BLOCK / 2)).map(|i| (i % 251) as u8).collect();
        let z = encode(&data);
        assert_eq!(&z[z.len() - 4..], &[0, 0, 0, 0]);
        let mut out = Vec::new();
        decode(&z, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn what_follows_the_end_marker_is_not_read() {
        let mut z = encode(b"first archive");
        z.extend_from_slice(b"070701 an uncompressed archive after it");
        let mut out = Vec::new();
        decode(&z, &mut out).unwrap();
        assert_eq!(out, b"first archive");
    }

    proptest! {
        #[test]
        fn any_input_round_trips(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let z = encode(&data);
            let mut out = Vec::new();
            match decode(&z, &mut out) {
                Ok(_) => prop_assert_eq!(out, data),
                Err(e) => prop_assert!(data.is_empty() && e.to_string().contains("no block")),
            }
        }

        #[test]
        fn garbage_is_an_error_or_a_result_never_a_panic(
            data in proptest::collection::vec(any::<u8>(), 0..2_000)
        ) {
            let mut z = MAGIC.to_le_bytes().to_vec();
            z.extend(data);
            let _ = decode(&z, &mut Vec::new());
        }
    }
}
