//! Deterministic pseudo-random bytes (xorshift64), so that benchmark blobs need no fixtures and
//! never compress or dedupe by accident.
#![allow(dead_code)]

/// `len` bytes drawn from `seed` (distinct seeds give distinct blobs).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
