//! sha1 of many whole messages at once, one message per 32-bit lane of a 256-bit register.
//!
//! Why: once sha512 went through the lanes (`sha512_lanes`), the legacy sha1 that npm's
//! `shasum` needs became the costliest digest of a small-blob batch: ~10 µs of a 20 KiB blob's
//! ~80 µs of CPU even with the SHA-NI instructions, whose rounds are a chain of dependent steps.
//! Eight separate messages' rounds run side by side in eight lanes (AVX-512VL gives the rotates
//! and the three-input boolean functions as single instructions on 256-bit registers) at 1.8×
//! the SHA-NI rate per core over 20 KiB messages here (docs/ingest.md). The blobs whose sha512
//! the shared queue hashes (`sha512_pool`) are at hand whole, so their sha1 is hashed there too,
//! eight at a time. Unlike the sha512 lanes these runs are not resumable: the messages are
//! small (the queue takes blobs up to 256 KiB), and a run is over within the queue's turn.
//!
//! [`each`] keeps the lanes full whatever the lengths (a lane that finishes takes the next
//! message) and hands the last few messages to the scalar (SHA-NI) compression, which is faster
//! than lanes running mostly empty. Without AVX-512VL every message takes the scalar path.
//! Results are byte-identical to the `sha1` crate's (tests below).

use bytes::Bytes;

use super::padded::Cursor;

/// The sha1 initial hash value (FIPS 180-4, 5.3.1).
const H0: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];

/// Lanes of one 256-bit register.
pub(crate) const LANES: usize = 8;

/// With this many messages or fewer left in the lanes (and none waiting), the scalar
/// compression is faster than eight lanes: SHA-NI runs one message at about half the lanes'
/// rate for eight, so at four lanes busy the two break even.
const SCALAR_AT_OR_BELOW: usize = 3;

/// Blocks handed to the scalar compression in one call.
const SCALAR_GROUP: usize = 16;

/// A digest from the five state words.
fn digest_of(state: &[u32; 5]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Hashes the rest of a message with the scalar compression (SHA-NI where the CPU has it),
/// from `state`.
fn finish_scalar(mut state: [u32; 5], cursor: &mut Cursor<64>) -> [u8; 20] {
    let mut group: [sha1::digest::generic_array::GenericArray<u8, _>; SCALAR_GROUP] =
        Default::default();
    while !cursor.done() {
        let mut n = 0;
        while n < SCALAR_GROUP && !cursor.done() {
            let mut block = [0u8; 64];
            cursor.fill(&mut block);
            group[n] = block.into();
            n += 1;
        }
        sha1::compress(&mut state, &group[..n]);
    }
    digest_of(&state)
}

/// The sha1 of each message (its bytes in order, in any number of pieces), in order, hashed
/// eight at a time where the CPU allows.
pub(crate) fn each(messages: Vec<Vec<Bytes>>) -> Vec<[u8; 20]> {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F and AVX-512VL are present (checked just above).
        return unsafe { avx512::each(messages) };
    }
    messages
        .into_iter()
        .map(|m| finish_scalar(H0, &mut Cursor::new(m)))
        .collect()
}

/// The sha1 of each message, eight at a time where the CPU allows (for benchmarks).
#[doc(hidden)]
pub fn sha1_each(messages: &[Bytes]) -> Vec<[u8; 20]> {
    each(messages.iter().map(|m| vec![m.clone()]).collect())
}

/// Whether [`each`] hashes eight messages at once on this CPU.
pub(crate) fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::padded::pieces;
    use rand::{Rng, SeedableRng};
    use sha1::Digest as _;

    /// Every length around the block and padding boundaries, whole and in random pieces, in one
    /// call (so lanes are refilled mid-way and the last ones go scalar), equal lengths (the
    /// lanes finish together), and the scalar path alone.
    #[test]
    fn same_digests_as_the_sha1_crate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(160);
        let mut data = vec![0u8; 200_000];
        rng.fill(&mut data[..]);
        let mut lengths: Vec<usize> = (0..=300).collect();
        lengths.extend((0..60).map(|_| rng.gen_range(0..data.len())));
        lengths.extend([20 << 10; 17]);
        let messages: Vec<Vec<Bytes>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let from = i % 7;
                let bytes = &data[from..from + len];
                if i % 2 == 0 {
                    vec![Bytes::copy_from_slice(bytes)]
                } else {
                    pieces(bytes, 300, &mut rng)
                }
            })
            .collect();
        let got = each(messages.clone());
        assert_eq!(got.len(), lengths.len());
        for (i, &len) in lengths.iter().enumerate() {
            let from = i % 7;
            let want: [u8; 20] = sha1::Sha1::digest(&data[from..from + len]).into();
            assert_eq!(got[i], want, "message {i} of {len} bytes");
            let scalar = finish_scalar(H0, &mut Cursor::new(messages[i].clone()));
            assert_eq!(scalar, want, "scalar, {len} bytes");
        }
        assert!(each(Vec::new()).is_empty());
    }
}
