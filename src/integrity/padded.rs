//! A message's padded blocks, read one at a time from the pieces a stream delivered it in: what
//! the lane kernels (`sha512_lanes`, `sha1_lanes`) feed their lanes from.
//!
//! sha1 and sha512 pad alike (FIPS 180-4, 5.1): the bytes, `0x80`, zeros, and the message's
//! length in bits big-endian in the last `B / 8` bytes of the last block (8 of sha1's 64-byte
//! blocks, 16 of sha512's 128-byte ones). Reading the padding block by block, rather than
//! copying the message into a padded buffer, keeps the stream's pieces shared and lets a message
//! be hashed part of the way, handed on, and resumed where it stopped.

use bytes::Bytes;

/// A message and how far its blocks (of `B` bytes, the padding included) have been read.
pub(crate) struct Cursor<const B: usize> {
    chunks: Vec<Bytes>,
    /// Total message length in bytes.
    len: u64,
    /// Index of the next block of the padded message.
    block: u64,
    /// Blocks in the padded message.
    blocks: u64,
    /// Where the next unread message byte is: chunk index and offset in it.
    chunk: usize,
    offset: usize,
}

impl<const B: usize> Cursor<B> {
    /// Bytes of the length field at the end of the last block.
    const LEN_FIELD: usize = B / 8;

    pub(crate) fn new(chunks: Vec<Bytes>) -> Self {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        Cursor {
            chunks,
            len,
            block: 0,
            blocks: (len + 1 + Self::LEN_FIELD as u64).div_ceil(B as u64),
            chunk: 0,
            offset: 0,
        }
    }

    /// The message's pieces, given back.
    pub(crate) fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// Whether every block has been read.
    pub(crate) fn done(&self) -> bool {
        self.block >= self.blocks
    }

    /// Writes the next block of the padded message into `out`.
    pub(crate) fn fill(&mut self, out: &mut [u8; B]) {
        let start = self.block * B as u64;
        let mut at = 0usize;
        // Message bytes first, from as many chunks as the block spans.
        while at < B && self.chunk < self.chunks.len() {
            let chunk = &self.chunks[self.chunk];
            let rest = chunk.get(self.offset..).unwrap_or_default();
            let n = rest.len().min(B - at);
            out[at..at + n].copy_from_slice(&rest[..n]);
            at += n;
            self.offset += n;
            if self.offset >= chunk.len() {
                self.chunk += 1;
                self.offset = 0;
            }
        }
        // Then the padding: 0x80 right after the last byte, zeros, and the length in bits last.
        if at < B {
            let pos = start + at as u64;
            out[at..].fill(0);
            if pos == self.len {
                out[at] = 0x80;
            }
            if self.block + 1 == self.blocks {
                let bits = (u128::from(self.len) * 8).to_be_bytes();
                out[B - Self::LEN_FIELD..].copy_from_slice(&bits[16 - Self::LEN_FIELD..]);
            }
        }
        self.block += 1;
    }
}

/// Splits `data` into random pieces of at most `max` bytes, as a stream would deliver it (for
/// the lane kernels' tests).
#[cfg(test)]
pub(crate) fn pieces(data: &[u8], max: usize, rng: &mut impl rand::Rng) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let k = rng.gen_range(1..=rest.len().min(max));
        out.push(Bytes::copy_from_slice(&rest[..k]));
        rest = &rest[k..];
    }
    out
}
