//! The eight-lane kernel: one sha1 compression per 32-bit lane of a 256-bit register (AVX-512VL
//! for the rotates and three-input boolean functions), and the loop that keeps the lanes fed.

use std::arch::x86_64::*;

use bytes::Bytes;

use super::{digest_of, finish_scalar, Cursor, H0, LANES, SCALAR_AT_OR_BELOW};

/// The round constants of the four groups of 20 rounds (FIPS 180-4, 4.2.1).
const K: [u32; 4] = [0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6];

pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// State words lane by lane: `state[word][lane]`, as the registers hold them.
type LaneState = [[u32; LANES]; 5];

/// The sixteen big-endian words of each lane's block, word `t` of every lane in register `t`:
/// an 8 × 8 transpose of 32-bit words for each half of the blocks, then a byte swap.
#[target_feature(enable = "avx512f,avx512vl")]
fn words(blocks: &[[u8; 64]; LANES]) -> [__m256i; 16] {
    let bswap = _mm256_setr_epi8(
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8,
        15, 14, 13, 12,
    );
    let mut w = [_mm256_setzero_si256(); 16];
    for half in 0..2 {
        // SAFETY: each block is 64 bytes; an unaligned 256-bit load reads 32 of them, at 0 or 32.
        let r: [__m256i; LANES] = std::array::from_fn(|l| unsafe {
            _mm256_loadu_si256(blocks[l].as_ptr().add(half * 32).cast())
        });
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        let rows = [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ];
        for (i, row) in rows.into_iter().enumerate() {
            w[half * 8 + i] = _mm256_shuffle_epi8(row, bswap);
        }
    }
    w
}

/// One sha1 compression in each of the eight lanes.
// The last rounds compute schedule words no later round reads.
#[allow(unused_assignments)]
#[target_feature(enable = "avx512f,avx512vl")]
fn compress8(state: &mut LaneState, blocks: &[[u8; 64]; LANES]) {
    let mut ws = words(blocks);
    let mut s = [_mm256_setzero_si256(); 5];
    for (v, words) in s.iter_mut().zip(state.iter()) {
        // SAFETY: `[u32; 8]` is 32 bytes, what one unaligned 256-bit load reads.
        *v = unsafe { _mm256_loadu_si256(words.as_ptr().cast()) };
    }
    let [mut a, mut b, mut c, mut d, mut e] = s;
    // Every round is written out (macros below), so that the schedule's indices are constants
    // and its sixteen words stay in registers: 1.6× the rate of the same rounds as a loop.
    macro_rules! round {
        ($t:expr, $f:literal, $k:expr) => {{
            const T: usize = $t;
            let wt = if T < 16 {
                ws[T & 15]
            } else {
                // Message schedule: W[t] = rotl1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16]).
                let x = _mm256_ternarylogic_epi32::<0x96>(
                    ws[(T - 3) & 15],
                    ws[(T - 8) & 15],
                    ws[(T - 14) & 15],
                );
                let nw = _mm256_rol_epi32::<1>(_mm256_xor_si256(x, ws[T & 15]));
                ws[T & 15] = nw;
                nw
            };
            let f = _mm256_ternarylogic_epi32::<$f>(b, c, d);
            let sum = _mm256_add_epi32(
                _mm256_add_epi32(_mm256_rol_epi32::<5>(a), f),
                _mm256_add_epi32(_mm256_add_epi32(e, _mm256_set1_epi32($k as i32)), wt),
            );
            e = d;
            d = c;
            c = _mm256_rol_epi32::<30>(b);
            b = a;
            a = sum;
        }};
    }
    macro_rules! five {
        ($t:expr, $f:literal, $k:expr) => {
            round!($t, $f, $k);
            round!($t + 1, $f, $k);
            round!($t + 2, $f, $k);
            round!($t + 3, $f, $k);
            round!($t + 4, $f, $k);
        };
    }
    macro_rules! twenty {
        ($t:expr, $f:literal, $k:expr) => {
            five!($t, $f, $k);
            five!($t + 5, $f, $k);
            five!($t + 10, $f, $k);
            five!($t + 15, $f, $k);
        };
    }
    // 0xCA: b ? c : d (Ch, rounds 0-19); 0x96: b ^ c ^ d (Parity); 0xE8: majority (Maj).
    twenty!(0, 0xCA, K[0]);
    twenty!(20, 0x96, K[1]);
    twenty!(40, 0xE8, K[2]);
    twenty!(60, 0x96, K[3]);
    for (i, v) in [a, b, c, d, e].into_iter().enumerate() {
        let sum = _mm256_add_epi32(s[i], v);
        // SAFETY: `[u32; 8]` is 32 bytes, what one unaligned 256-bit store writes.
        unsafe { _mm256_storeu_si256(state[i].as_mut_ptr().cast(), sum) };
    }
}

/// One lane's state words, out of the registers' layout.
fn lane_state(state: &LaneState, lane: usize) -> [u32; 5] {
    std::array::from_fn(|i| state[i][lane])
}

/// [`super::each`] with eight lanes (call only where AVX-512F and AVX-512VL are present).
#[target_feature(enable = "avx512f,avx512vl")]
pub(super) fn each(messages: Vec<Vec<Bytes>>) -> Vec<[u8; 20]> {
    let mut out = vec![[0u8; 20]; messages.len()];
    let mut queue = messages.into_iter().enumerate();
    let mut lanes: [Option<(usize, Cursor<64>)>; LANES] = std::array::from_fn(|_| None);
    let mut state: LaneState = [[0; LANES]; 5];
    let mut blocks = [[0u8; 64]; LANES];
    loop {
        // Fill free lanes; stop asking once the queue is empty.
        let mut more = true;
        for (l, lane) in lanes.iter_mut().enumerate() {
            if lane.is_none() && more {
                match queue.next() {
                    Some((i, chunks)) => {
                        for (row, h) in state.iter_mut().zip(H0) {
                            row[l] = h;
                        }
                        *lane = Some((i, Cursor::new(chunks)));
                    }
                    None => more = false,
                }
            }
        }
        let active = lanes.iter().filter(|l| l.is_some()).count();
        if active == 0 {
            return out;
        }
        if active <= SCALAR_AT_OR_BELOW && !more {
            for (l, lane) in lanes.iter_mut().enumerate() {
                if let Some((i, mut cursor)) = lane.take() {
                    out[i] = finish_scalar(lane_state(&state, l), &mut cursor);
                }
            }
            return out;
        }
        for (lane, block) in lanes.iter_mut().zip(blocks.iter_mut()) {
            match lane {
                Some((_, cursor)) => cursor.fill(block),
                // An idle lane computes on zeros; its state is reset before it is used.
                None => block.fill(0),
            }
        }
        compress8(&mut state, &blocks);
        for (l, lane) in lanes.iter_mut().enumerate() {
            if lane.as_ref().is_some_and(|(_, c)| c.done()) {
                if let Some((i, _)) = lane.take() {
                    out[i] = digest_of(&lane_state(&state, l));
                }
            }
        }
    }
}
