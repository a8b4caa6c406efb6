//! The eight-lane kernel: one sha512 compression per 64-bit lane of a 512-bit register, and the
//! loop that keeps the lanes fed (see the parent module for why).

use std::arch::x86_64::*;

use bytes::Bytes;

use super::{digest_of, Message, LANES, SCALAR_AT_OR_BELOW, SCALAR_STEP};

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

/// One sha512 compression in each of the eight lanes.
// The last rounds compute schedule words no later round reads.
#[allow(unused_assignments)]
#[target_feature(enable = "avx512f")]
fn compress8(state: &mut LaneState, blocks: &[[u8; 128]; LANES]) {
    // Each lane's block as big-endian words, word `t` of every lane side by side (measured as
    // fast here as a transpose in registers).
    let mut w = [[0u64; LANES]; 16];
    for (l, block) in blocks.iter().enumerate() {
        for (t, word) in block.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            w[t][l] = u64::from_be_bytes(b);
        }
    }
    let mut ws = [_mm512_setzero_si512(); 16];
    for (v, words) in ws.iter_mut().zip(&w) {
        // SAFETY: `[u64; 8]` is 64 bytes, what one unaligned 512-bit load reads.
        *v = unsafe { _mm512_loadu_si512(words.as_ptr().cast()) };
    }
    let mut s = [_mm512_setzero_si512(); 8];
    for (v, words) in s.iter_mut().zip(state.iter()) {
        // SAFETY: as above.
        *v = unsafe { _mm512_loadu_si512(words.as_ptr().cast()) };
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = s;
    // Every round is written out (macros below), so that the schedule's indices and the round
    // constants are constants and the sixteen schedule words stay in registers: 1.15× the
    // rate of the same rounds as a loop.
    macro_rules! round {
        ($t:expr) => {{
            const T: usize = $t;
            let wt = if T < 16 {
                ws[T & 15]
            } else {
                // Message schedule: W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16].
                let w15 = ws[(T - 15) & 15];
                let w2 = ws[(T - 2) & 15];
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
                    _mm512_add_epi64(ws[T & 15], s0),
                    _mm512_add_epi64(ws[(T - 7) & 15], s1),
                );
                ws[T & 15] = nw;
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
                _mm512_add_epi64(_mm512_set1_epi64(K[T] as i64), wt),
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
        }};
    }
    macro_rules! ten {
        ($t:expr) => {
            round!($t);
            round!($t + 1);
            round!($t + 2);
            round!($t + 3);
            round!($t + 4);
            round!($t + 5);
            round!($t + 6);
            round!($t + 7);
            round!($t + 8);
            round!($t + 9);
        };
    }
    ten!(0);
    ten!(10);
    ten!(20);
    ten!(30);
    ten!(40);
    ten!(50);
    ten!(60);
    ten!(70);
    for (i, v) in [a, b, c, d, e, f, g, h].into_iter().enumerate() {
        let sum = _mm512_add_epi64(s[i], v);
        // SAFETY: `[u64; 8]` is 64 bytes, what one unaligned 512-bit store writes.
        unsafe { _mm512_storeu_si512(state[i].as_mut_ptr().cast(), sum) };
    }
}

/// One lane's state words, out of the registers' layout.
fn lane_state(state: &LaneState, lane: usize) -> [u64; 8] {
    std::array::from_fn(|i| state[i][lane])
}

/// Takes every message out of the lanes, each with its state, to be resumed by a later run.
fn hand_back<J>(lanes: &mut [Option<(J, Message)>; LANES], state: &LaneState) -> Vec<(J, Message)> {
    lanes
        .iter_mut()
        .enumerate()
        .filter_map(|(l, lane)| {
            let (job, mut message) = lane.take()?;
            message.state = lane_state(state, l);
            Some((job, message))
        })
        .collect()
}

/// Puts a message's state words into one lane.
fn set_lane_state(state: &mut LaneState, lane: usize, words: &[u64; 8]) {
    for (row, w) in state.iter_mut().zip(words) {
        row[lane] = *w;
    }
}

/// [`super::run`] with eight lanes (call only where AVX-512F is present).
#[target_feature(enable = "avx512f")]
pub(super) fn run<J>(
    next: &mut dyn FnMut() -> Option<(J, Message)>,
    done: &mut dyn FnMut(J, [u8; 64], Vec<Bytes>),
    wait: &mut dyn FnMut(&J) -> bool,
    budget: u64,
) -> (Vec<(J, Message)>, u64) {
    // A lane's message keeps its cursor here and its state in the registers' layout below.
    let mut lanes: [Option<(J, Message)>; LANES] = std::array::from_fn(|_| None);
    let mut state: LaneState = [[0; LANES]; 8];
    let mut blocks = [[0u8; 128]; LANES];
    let mut spent = 0u64;
    loop {
        if spent >= budget {
            return (hand_back(&mut lanes, &state), spent);
        }
        // Fill free lanes; stop asking once the caller has nothing more now.
        let mut more = true;
        for (l, lane) in lanes.iter_mut().enumerate() {
            if lane.is_none() && more {
                match next() {
                    Some((job, message)) => {
                        set_lane_state(&mut state, l, &message.state);
                        *lane = Some((job, message));
                    }
                    None => more = false,
                }
            }
        }
        let active = lanes.iter().filter(|l| l.is_some()).count();
        if active == 0 {
            return (Vec::new(), spent);
        }
        if active <= SCALAR_AT_OR_BELOW && !more {
            if lanes.iter().flatten().all(|(j, _)| wait(j)) {
                // They can wait for company: a later run hashes them in full lanes.
                return (hand_back(&mut lanes, &state), spent);
            }
            // A step on the scalar compression each, then back to look for others.
            for (l, lane) in lanes.iter_mut().enumerate() {
                let Some((job, mut message)) = lane.take() else {
                    continue;
                };
                message.state = lane_state(&state, l);
                spent += message.advance_scalar(SCALAR_STEP) * 128;
                if message.cursor.done() {
                    let digest = message.digest();
                    done(job, digest, message.into_chunks());
                } else {
                    set_lane_state(&mut state, l, &message.state);
                    *lane = Some((job, message));
                }
            }
            continue;
        }
        for (lane, block) in lanes.iter_mut().zip(blocks.iter_mut()) {
            match lane {
                Some((_, message)) => message.cursor.fill(block),
                // An idle lane computes on zeros; its state is reset before it is used.
                None => block.fill(0),
            }
        }
        compress8(&mut state, &blocks);
        spent += active as u64 * 128;
        for (l, lane) in lanes.iter_mut().enumerate() {
            if lane.as_ref().is_some_and(|(_, m)| m.cursor.done()) {
                if let Some((job, message)) = lane.take() {
                    done(
                        job,
                        digest_of(&lane_state(&state, l)),
                        message.into_chunks(),
                    );
                }
            }
        }
    }
}
