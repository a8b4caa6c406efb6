//! sha512 of many messages at once, one message per 64-bit lane of an AVX-512 register.
//!
//! Why: sha512 is the costliest digest of a small-blob batch, and one message's sha512 is a
//! chain of dependent rounds that one core runs at ~0.7 GB/s (ring's assembly; this machine has
//! no SHA-512 instructions). Eight *separate* messages have no dependency between them, so their
//! rounds run side by side in the eight lanes of a 512-bit register (rotates and the three-input
//! boolean functions are single AVX-512 instructions): measured here 2–4× ring's rate per core
//! over 20 KiB messages (docs/ingest.md). A batch of blobs is exactly such a set of messages.
//!
//! [`run`] pulls messages from its caller as lanes free up (so lanes stay full whatever the
//! lengths), and finishes the last one or two messages on the scalar `sha2` compression when the
//! lanes would otherwise run mostly empty. Without AVX-512 every message goes through the scalar
//! path. Results are byte-identical to every other sha512 (tests below, against the `sha2` crate).

use bytes::Bytes;

/// The sha512 initial hash value (FIPS 180-4, 5.3.5).
const H0: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// Lanes of one 512-bit register.
pub(crate) const LANES: usize = 8;

/// With this many messages or fewer left in the lanes (and none waiting), the scalar compression
/// is faster than eight lanes running mostly empty: it finishes them.
const SCALAR_AT_OR_BELOW: usize = 2;

/// One message in a lane: its bytes (in pieces, as a stream delivered them) and how far its blocks
/// have been fed, the final padding included.
struct Cursor {
    chunks: Vec<Bytes>,
    /// Total message length in bytes.
    len: u64,
    /// Index of the next block (of 128 bytes) of the padded message.
    block: u64,
    /// Blocks in the padded message: the bytes, 0x80, zeros, and the 128-bit bit length.
    blocks: u64,
    /// Where the next unread message byte is: chunk index and offset in it.
    chunk: usize,
    offset: usize,
}

impl Cursor {
    fn new(chunks: Vec<Bytes>) -> Cursor {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        Cursor {
            chunks,
            len,
            block: 0,
            blocks: (len + 17).div_ceil(128),
            chunk: 0,
            offset: 0,
        }
    }

    fn done(&self) -> bool {
        self.block >= self.blocks
    }

    /// Writes the next block of the padded message into `out`.
    fn fill(&mut self, out: &mut [u8; 128]) {
        let start = self.block * 128;
        let mut at = 0usize;
        // Message bytes first, from as many chunks as the block spans.
        while at < 128 && self.chunk < self.chunks.len() {
            let chunk = &self.chunks[self.chunk];
            let rest = chunk.get(self.offset..).unwrap_or_default();
            let n = rest.len().min(128 - at);
            out[at..at + n].copy_from_slice(&rest[..n]);
            at += n;
            self.offset += n;
            if self.offset >= chunk.len() {
                self.chunk += 1;
                self.offset = 0;
            }
        }
        // Then the padding: 0x80 right after the last byte, zeros, and the length in bits last.
        if at < 128 {
            let pos = start + at as u64;
            out[at..].fill(0);
            if pos == self.len {
                out[at] = 0x80;
            }
            if self.block + 1 == self.blocks {
                let bits = u128::from(self.len) * 8;
                out[112..].copy_from_slice(&bits.to_be_bytes());
            }
        }
        self.block += 1;
    }
}

/// A digest from the eight state words.
fn digest_of(state: &[u64; 8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (o, w) in out.chunks_exact_mut(8).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Finishes one message on the scalar compression, from `state`.
fn finish_scalar(mut cursor: Cursor, mut state: [u64; 8]) -> [u8; 64] {
    let mut block = [0u8; 128];
    while !cursor.done() {
        cursor.fill(&mut block);
        sha2::compress512(&mut state, &[block.into()]);
    }
    digest_of(&state)
}

/// The sha512 of each message, every one fed whole by `next` and returned through `done` with the
/// job it came with, in whatever order they finish. `next` is asked whenever a lane is free and
/// says `None` when it has nothing more now; `run` returns once every message it took is done.
pub(crate) fn run<J>(
    mut next: impl FnMut() -> Option<(J, Vec<Bytes>)>,
    mut done: impl FnMut(J, [u8; 64]),
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F is present (checked just above).
        unsafe { avx512::run(&mut next, &mut done) };
        return;
    }
    while let Some((job, chunks)) = next() {
        done(job, finish_scalar(Cursor::new(chunks), H0));
    }
}

/// The sha512 of each message, in order, hashed eight at a time where the CPU allows (for
/// benchmarks; the store goes through the shared queue of `sha512_pool`).
#[doc(hidden)]
pub fn sha512_each(messages: &[Bytes]) -> Vec<[u8; 64]> {
    let mut out = vec![[0u8; 64]; messages.len()];
    let mut queue = messages.iter().cloned().enumerate();
    run(
        || queue.next().map(|(i, m)| (i, vec![m])),
        |i, digest| {
            if let Some(o) = out.get_mut(i) {
                *o = digest;
            }
        },
    );
    out
}

/// Whether [`run`] hashes eight messages at once on this CPU.
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
mod avx512 {
    use std::arch::x86_64::*;

    use super::{digest_of, finish_scalar, Cursor, H0, LANES, SCALAR_AT_OR_BELOW};
    use bytes::Bytes;

    /// The 80 round constants (FIPS 180-4, 4.2.3).
    const K: [u64; 80] = [
        0x428a2f98d728ae22,
        0x7137449123ef65cd,
        0xb5c0fbcfec4d3b2f,
        0xe9b5dba58189dbbc,
        0x3956c25bf348b538,
        0x59f111f1b605d019,
        0x923f82a4af194f9b,
        0xab1c5ed5da6d8118,
        0xd807aa98a3030242,
        0x12835b0145706fbe,
        0x243185be4ee4b28c,
        0x550c7dc3d5ffb4e2,
        0x72be5d74f27b896f,
        0x80deb1fe3b1696b1,
        0x9bdc06a725c71235,
        0xc19bf174cf692694,
        0xe49b69c19ef14ad2,
        0xefbe4786384f25e3,
        0x0fc19dc68b8cd5b5,
        0x240ca1cc77ac9c65,
        0x2de92c6f592b0275,
        0x4a7484aa6ea6e483,
        0x5cb0a9dcbd41fbd4,
        0x76f988da831153b5,
        0x983e5152ee66dfab,
        0xa831c66d2db43210,
        0xb00327c898fb213f,
        0xbf597fc7beef0ee4,
        0xc6e00bf33da88fc2,
        0xd5a79147930aa725,
        0x06ca6351e003826f,
        0x142929670a0e6e70,
        0x27b70a8546d22ffc,
        0x2e1b21385c26c926,
        0x4d2c6dfc5ac42aed,
        0x53380d139d95b3df,
        0x650a73548baf63de,
        0x766a0abb3c77b2a8,
        0x81c2c92e47edaee6,
        0x92722c851482353b,
        0xa2bfe8a14cf10364,
        0xa81a664bbc423001,
        0xc24b8b70d0f89791,
        0xc76c51a30654be30,
        0xd192e819d6ef5218,
        0xd69906245565a910,
        0xf40e35855771202a,
        0x106aa07032bbd1b8,
        0x19a4c116b8d2d0c8,
        0x1e376c085141ab53,
        0x2748774cdf8eeb99,
        0x34b0bcb5e19b48a8,
        0x391c0cb3c5c95a63,
        0x4ed8aa4ae3418acb,
        0x5b9cca4f7763e373,
        0x682e6ff3d6b2b8a3,
        0x748f82ee5defb2fc,
        0x78a5636f43172f60,
        0x84c87814a1f0ab72,
        0x8cc702081a6439ec,
        0x90befffa23631e28,
        0xa4506cebde82bde9,
        0xbef9a3f7b2c67915,
        0xc67178f2e372532b,
        0xca273eceea26619c,
        0xd186b8c721c0c207,
        0xeada7dd6cde0eb1e,
        0xf57d4f7fee6ed178,
        0x06f067aa72176fba,
        0x0a637dc5a2c898a6,
        0x113f9804bef90dae,
        0x1b710b35131c471b,
        0x28db77f523047d84,
        0x32caab7b40c72493,
        0x3c9ebe0a15c9bebc,
        0x431d67c49c100d4c,
        0x4cc5d4becb3e42b6,
        0x597f299cfc657e2a,
        0x5fcb6fab3ad6faec,
        0x6c44198c4a475817,
    ];

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// State words lane by lane: `state[word][lane]`, as the registers hold them.
    type LaneState = [[u64; LANES]; 8];

    /// One 128-byte block per lane, as big-endian words: `w[word][lane]`.
    type LaneBlock = [[u64; LANES]; 16];

    /// One sha512 compression in each of the eight lanes.
    #[target_feature(enable = "avx512f")]
    fn compress8(state: &mut LaneState, w: &LaneBlock) {
        let mut ws = [_mm512_setzero_si512(); 16];
        for (v, words) in ws.iter_mut().zip(w) {
            // SAFETY: `[u64; 8]` is 64 bytes, what one unaligned 512-bit load reads.
            *v = unsafe { _mm512_loadu_si512(words.as_ptr().cast()) };
        }
        let mut s = [_mm512_setzero_si512(); 8];
        for (v, words) in s.iter_mut().zip(state.iter()) {
            // SAFETY: as above.
            *v = unsafe { _mm512_loadu_si512(words.as_ptr().cast()) };
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = s;
        for t in 0..80 {
            let wt = if t < 16 {
                ws[t]
            } else {
                // Message schedule: W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16].
                let w15 = ws[(t - 15) & 15];
                let w2 = ws[(t - 2) & 15];
                let s0 = _mm512_ternarylogic_epi64::<0x96>(
                    _mm512_ror_epi64::<1>(w15),
                    _mm512_ror_epi64::<8>(w15),
                    _mm512_srli_epi64::<7>(w15),
                );
                let s1 = _mm512_ternarylogic_epi64::<0x96>(
                    _mm512_ror_epi64::<19>(w2),
                    _mm512_ror_epi64::<61>(w2),
                    _mm512_srli_epi64::<6>(w2),
                );
                let nw = _mm512_add_epi64(
                    _mm512_add_epi64(ws[t & 15], s0),
                    _mm512_add_epi64(ws[(t - 7) & 15], s1),
                );
                ws[t & 15] = nw;
                nw
            };
            // 0x96: a ^ b ^ c; 0xCA: a ? b : c (Ch); 0xE8: majority (Maj).
            let big_s1 = _mm512_ternarylogic_epi64::<0x96>(
                _mm512_ror_epi64::<14>(e),
                _mm512_ror_epi64::<18>(e),
                _mm512_ror_epi64::<41>(e),
            );
            let ch = _mm512_ternarylogic_epi64::<0xCA>(e, f, g);
            let t1 = _mm512_add_epi64(
                _mm512_add_epi64(_mm512_add_epi64(h, big_s1), ch),
                _mm512_add_epi64(_mm512_set1_epi64(K[t] as i64), wt),
            );
            let big_s0 = _mm512_ternarylogic_epi64::<0x96>(
                _mm512_ror_epi64::<28>(a),
                _mm512_ror_epi64::<34>(a),
                _mm512_ror_epi64::<39>(a),
            );
            let maj = _mm512_ternarylogic_epi64::<0xE8>(a, b, c);
            let t2 = _mm512_add_epi64(big_s0, maj);
            h = g;
            g = f;
            f = e;
            e = _mm512_add_epi64(d, t1);
            d = c;
            c = b;
            b = a;
            a = _mm512_add_epi64(t1, t2);
        }
        for (i, v) in [a, b, c, d, e, f, g, h].into_iter().enumerate() {
            let sum = _mm512_add_epi64(s[i], v);
            // SAFETY: `[u64; 8]` is 64 bytes, what one unaligned 512-bit store writes.
            unsafe { _mm512_storeu_si512(state[i].as_mut_ptr().cast(), sum) };
        }
    }

    fn lane_state(state: &LaneState, lane: usize) -> [u64; 8] {
        std::array::from_fn(|i| state[i][lane])
    }

    /// [`super::run`] with eight lanes (call only where AVX-512F is present).
    #[target_feature(enable = "avx512f")]
    pub(super) fn run<J>(
        next: &mut dyn FnMut() -> Option<(J, Vec<Bytes>)>,
        done: &mut dyn FnMut(J, [u8; 64]),
    ) {
        let mut lanes: [Option<(J, Cursor)>; LANES] = std::array::from_fn(|_| None);
        let mut state: LaneState = [[0; LANES]; 8];
        let mut block = [0u8; 128];
        let mut w: LaneBlock = [[0; LANES]; 16];
        loop {
            // Fill free lanes; stop asking once the caller has nothing more now.
            let mut more = true;
            for (l, lane) in lanes.iter_mut().enumerate() {
                if lane.is_none() && more {
                    match next() {
                        Some((job, chunks)) => {
                            *lane = Some((job, Cursor::new(chunks)));
                            for (i, h) in H0.iter().enumerate() {
                                state[i][l] = *h;
                            }
                        }
                        None => more = false,
                    }
                }
            }
            let active = lanes.iter().filter(|l| l.is_some()).count();
            if active == 0 {
                return;
            }
            if active <= SCALAR_AT_OR_BELOW && !more {
                for (l, lane) in lanes.iter_mut().enumerate() {
                    if let Some((job, cursor)) = lane.take() {
                        done(job, finish_scalar(cursor, lane_state(&state, l)));
                    }
                }
                continue;
            }
            for (l, lane) in lanes.iter_mut().enumerate() {
                match lane {
                    Some((_, cursor)) => cursor.fill(&mut block),
                    // An idle lane computes on zeros; its state is reset before it is used.
                    None => block.fill(0),
                }
                for (t, word) in block.chunks_exact(8).enumerate() {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(word);
                    w[t][l] = u64::from_be_bytes(b);
                }
            }
            compress8(&mut state, &w);
            for (l, lane) in lanes.iter_mut().enumerate() {
                if lane.as_ref().is_some_and(|(_, c)| c.done()) {
                    if let Some((job, _)) = lane.take() {
                        done(job, digest_of(&lane_state(&state, l)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use sha2::Digest as _;

    /// Splits `data` into random pieces, as a stream would deliver it.
    fn pieces(data: &[u8], rng: &mut impl Rng) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let k = rng.gen_range(1..=rest.len().min(700));
            out.push(Bytes::copy_from_slice(&rest[..k]));
            rest = &rest[k..];
        }
        out
    }

    /// Every length around the block and padding boundaries, whole and in random pieces, in one
    /// run so that lanes are refilled mid-way, and the same again on the scalar path alone.
    #[test]
    fn same_digests_as_sha2() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(512);
        let mut data = vec![0u8; 300_000];
        rng.fill(&mut data[..]);
        let mut lengths: Vec<usize> = (0..=400).collect();
        lengths.extend((0..100).map(|_| rng.gen_range(0..data.len())));
        let messages: Vec<Vec<Bytes>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                if i % 2 == 0 {
                    vec![Bytes::copy_from_slice(&data[..len])]
                } else {
                    pieces(&data[..len], &mut rng)
                }
            })
            .collect();
        let mut results: Vec<Option<[u8; 64]>> = vec![None; lengths.len()];
        let mut queue = messages.clone().into_iter().enumerate();
        run(|| queue.next(), |i, d| results[i] = Some(d));
        for (i, &len) in lengths.iter().enumerate() {
            let want = sha2::Sha512::digest(&data[..len]);
            assert_eq!(results[i].map(|d| d.to_vec()), Some(want.to_vec()), "{len}");
            let scalar = finish_scalar(Cursor::new(messages[i].clone()), H0);
            assert_eq!(scalar.to_vec(), want.to_vec(), "scalar {len}");
        }
    }

    /// Messages offered a few at a time (`next` saying "nothing now" in between) are all hashed,
    /// each once, whatever the lanes held when the offers ran dry.
    #[test]
    fn messages_offered_in_trickles_are_each_hashed_once() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let inputs: Vec<Vec<u8>> = (0..200)
            .map(|_| {
                let len = rng.gen_range(0..40_000);
                (0..len).map(|_| rng.gen()).collect()
            })
            .collect();
        let mut results: Vec<Vec<[u8; 64]>> = vec![Vec::new(); inputs.len()];
        let mut offered = 0;
        while offered < inputs.len() {
            let burst = rng.gen_range(1..12);
            let mut taken = 0;
            run(
                || {
                    (taken < burst && offered < inputs.len()).then(|| {
                        taken += 1;
                        offered += 1;
                        (offered - 1, vec![Bytes::from(inputs[offered - 1].clone())])
                    })
                },
                |i, d| results[i].push(d),
            );
        }
        for (input, got) in inputs.iter().zip(&results) {
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].to_vec(), sha2::Sha512::digest(input).to_vec());
        }
    }
}
