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
//! lengths), and when the lanes would otherwise run mostly empty either hands the last one or two
//! messages back to wait for company (if the caller says they may) or moves them on with the
//! scalar `sha2` compression, a step at a time, so that a message that comes meanwhile brings
//! them back into the lanes. It hashes for a budget of bytes and hands back the messages it has
//! not finished with their state ([`Message`]), to be resumed by the next run, maybe on another
//! thread: a large message's bytes go through the lanes too, not only through the one hasher
//! that took it. Without AVX-512 every message goes through the scalar path.
//! Results are byte-identical to every other sha512 (tests below, against the `sha2` crate).

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
/// is faster than eight lanes running mostly empty: it moves them on.
const SCALAR_AT_OR_BELOW: usize = 2;

/// Blocks the scalar compression moves a message on before `run` looks for others again (64 KiB,
/// about 0.1 ms): long enough that asking costs nothing, short enough that a message arriving
/// meanwhile soon refills the lanes.
const SCALAR_STEP: u64 = 512;

/// Blocks handed to the scalar compression in one call: `sha2` hashes pairs of blocks faster than
/// single ones.
const SCALAR_GROUP: usize = 16;

/// One message in a lane: its bytes and how far its 128-byte blocks have been fed.
type Cursor = crate::integrity::padded::Cursor<128>;

/// A digest from the eight state words.
fn digest_of(state: &[u64; 8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (o, w) in out.chunks_exact_mut(8).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// A message to hash, and how far it is hashed: what [`run`] takes, and hands back unfinished when
/// its budget runs out.
pub(crate) struct Message {
    cursor: Cursor,
    state: [u64; 8],
}

impl Message {
    /// A whole message, in the pieces a stream delivered it in, not hashed yet.
    pub(crate) fn new(chunks: Vec<Bytes>) -> Message {
        Message {
            cursor: Cursor::new(chunks),
            state: H0,
        }
    }

    /// Moves the message on by up to `max` blocks with the scalar compression; returns the
    /// blocks hashed.
    fn advance_scalar(&mut self, max: u64) -> u64 {
        let mut group: [sha2::digest::generic_array::GenericArray<u8, _>; SCALAR_GROUP] =
            Default::default();
        let mut hashed = 0;
        while hashed < max && !self.cursor.done() {
            let mut n = 0;
            while n < SCALAR_GROUP && hashed + (n as u64) < max && !self.cursor.done() {
                let mut block = [0u8; 128];
                self.cursor.fill(&mut block);
                group[n] = block.into();
                n += 1;
            }
            sha2::compress512(&mut self.state, &group[..n]);
            hashed += n as u64;
        }
        hashed
    }

    /// The digest, once every block is hashed.
    fn digest(&self) -> [u8; 64] {
        digest_of(&self.state)
    }

    /// The message's bytes, in the pieces it was given in (for its other digests).
    fn into_chunks(self) -> Vec<Bytes> {
        self.cursor.into_chunks()
    }
}

/// Hashes one message whole on the scalar compression.
#[cfg(test)]
fn finish_scalar(mut message: Message) -> [u8; 64] {
    message.advance_scalar(u64::MAX);
    message.digest()
}

/// Hashes messages, each taken from `next` with its job and returned through `done` with its
/// digest and its bytes (for a caller that hashes them again), in whatever order they finish.
/// `next` is asked whenever a lane is free and says `None` when it has nothing more now. `run`
/// returns once every message it took is done, or once it has hashed about `budget` bytes: then
/// with the messages it took and has not finished, each with its state, to be given to a later
/// `run` (and the bytes it hashed).
///
/// When the lanes are down to the few messages the scalar compression would take over and `next`
/// has nothing, `wait` is asked of each: if it says every one of them can wait for others to come
/// (its put has time, and more messages are on their way), `run` stops there and hands them back
/// unfinished, having hashed less than `budget`: in the lanes, later, they cost a third of what
/// the scalar compression costs now. Without AVX-512 there are no lanes to wait for.
pub(crate) fn run<J>(
    mut next: impl FnMut() -> Option<(J, Message)>,
    mut done: impl FnMut(J, [u8; 64], Vec<Bytes>),
    mut wait: impl FnMut(&J) -> bool,
    budget: u64,
) -> (Vec<(J, Message)>, u64) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F is present (checked just above).
        return unsafe { avx512::run(&mut next, &mut done, &mut wait, budget) };
    }
    // Without the lanes there is nothing to wait for.
    let _ = &mut wait;
    let mut spent = 0u64;
    while spent < budget {
        let Some((job, mut message)) = next() else {
            break;
        };
        spent += message.advance_scalar((budget - spent).div_ceil(128)) * 128;
        if message.cursor.done() {
            let digest = message.digest();
            done(job, digest, message.into_chunks());
        } else {
            return (vec![(job, message)], spent);
        }
    }
    (Vec::new(), spent)
}

/// The sha512 of each message, in order, hashed eight at a time where the CPU allows (for
/// benchmarks; the store goes through the shared queue of `sha512_pool`).
#[doc(hidden)]
pub fn sha512_each(messages: &[Bytes]) -> Vec<[u8; 64]> {
    let mut out = vec![[0u8; 64]; messages.len()];
    let mut queue = messages.iter().cloned().enumerate();
    run(
        || queue.next().map(|(i, m)| (i, Message::new(vec![m]))),
        |i, digest, _| {
            if let Some(o) = out.get_mut(i) {
                *o = digest;
            }
        },
        |_| false,
        u64::MAX,
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
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::padded::pieces;
    use rand::{Rng, SeedableRng};
    use sha2::Digest as _;

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
                    pieces(&data[..len], 700, &mut rng)
                }
            })
            .collect();
        let mut results: Vec<Option<[u8; 64]>> = vec![None; lengths.len()];
        let mut handed_back: Vec<Vec<Bytes>> = vec![Vec::new(); lengths.len()];
        let mut queue = messages.clone().into_iter().enumerate();
        let (unfinished, _) = run(
            || queue.next().map(|(i, m)| (i, Message::new(m))),
            |i, d, chunks| {
                results[i] = Some(d);
                handed_back[i] = chunks;
            },
            |_| false,
            u64::MAX,
        );
        assert!(unfinished.is_empty());
        for (i, &len) in lengths.iter().enumerate() {
            let want = sha2::Sha512::digest(&data[..len]);
            assert_eq!(results[i].map(|d| d.to_vec()), Some(want.to_vec()), "{len}");
            // The pieces come back as given, for the caller's sha1.
            assert_eq!(handed_back[i], messages[i], "pieces of {len}");
            let scalar = finish_scalar(Message::new(messages[i].clone()));
            assert_eq!(scalar.to_vec(), want.to_vec(), "scalar {len}");
        }
    }

    /// Runs on small budgets, each handing back what it has not finished to be resumed by a later
    /// run in another order among new messages, give every message its own digest, once: a
    /// message's state survives the move between lanes and the scalar steps.
    #[test]
    fn messages_resumed_across_runs_hash_right() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        let inputs: Vec<Vec<u8>> = (0..60)
            .map(|i| {
                // A few long messages (they outlast many runs) among short ones.
                let len = if i % 7 == 0 {
                    rng.gen_range(100_000..400_000)
                } else {
                    rng.gen_range(0..20_000)
                };
                (0..len).map(|_| rng.gen()).collect()
            })
            .collect();
        let mut results: Vec<Vec<[u8; 64]>> = vec![Vec::new(); inputs.len()];
        let split: Vec<Vec<Bytes>> = inputs.iter().map(|d| pieces(d, 700, &mut rng)).collect();
        let mut fresh = split
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i, Message::new(p)));
        let mut resumed: Vec<(usize, Message)> = Vec::new();
        let mut runs = 0;
        loop {
            // Some runs offer the resumed messages first, some new ones first.
            let resumed_first = rng.gen_bool(0.5);
            let mut offer = std::mem::take(&mut resumed);
            let mut new_left = rng.gen_range(0..5);
            let budget = rng.gen_range(1..200_000);
            // Some runs let their last few messages wait for company.
            let hold = rng.gen_bool(0.3);
            let (unfinished, spent) = run(
                || {
                    if resumed_first || new_left == 0 {
                        if let Some(m) = offer.pop() {
                            return Some(m);
                        }
                    }
                    if new_left > 0 {
                        new_left -= 1;
                        if let Some(m) = fresh.next() {
                            return Some(m);
                        }
                    }
                    offer.pop()
                },
                |i, d, _| results[i].push(d),
                |_| hold,
                budget,
            );
            if spent < budget && !unfinished.is_empty() {
                assert!(hold, "stopped early");
                assert!(
                    unfinished.len() <= SCALAR_AT_OR_BELOW,
                    "held a full lane set"
                );
            }
            resumed = unfinished;
            resumed.append(&mut offer);
            runs += 1;
            if resumed.is_empty() && results.iter().all(|r| !r.is_empty()) {
                break;
            }
            assert!(runs < 100_000, "no progress");
        }
        assert!(
            runs > 10,
            "the budgets should have stopped runs mid-message"
        );
        for (input, got) in inputs.iter().zip(&results) {
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].to_vec(), sha2::Sha512::digest(input).to_vec());
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
            let (unfinished, _) = run(
                || {
                    (taken < burst && offered < inputs.len()).then(|| {
                        taken += 1;
                        offered += 1;
                        let m = vec![Bytes::from(inputs[offered - 1].clone())];
                        (offered - 1, Message::new(m))
                    })
                },
                |i, d, _| results[i].push(d),
                |_| false,
                u64::MAX,
            );
            assert!(unfinished.is_empty());
        }
        for (input, got) in inputs.iter().zip(&results) {
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].to_vec(), sha2::Sha512::digest(input).to_vec());
        }
    }

    /// The last few messages of a run wait for company when `wait` says they may, handed back
    /// with their state (nothing hashed on the scalar path); a later run finishes them right.
    #[test]
    fn the_last_few_messages_wait_when_they_may() {
        let inputs: Vec<Vec<u8>> = vec![vec![1u8; 10_000], vec![2u8; 30_000]];
        let mut results: Vec<Option<[u8; 64]>> = vec![None; 2];
        let mut fresh = inputs
            .iter()
            .enumerate()
            .map(|(i, d)| (i, Message::new(vec![Bytes::from(d.clone())])));
        let (held, spent) = run(
            || fresh.next(),
            |i, d, _| results[i] = Some(d),
            |_| true,
            u64::MAX,
        );
        if wide() {
            assert_eq!(held.len(), 2, "two messages alone in the lanes wait");
            assert_eq!(spent, 0, "nothing hashed while they were too few");
        } else {
            assert!(
                held.is_empty(),
                "without lanes there is nothing to wait for"
            );
        }
        // Those the caller will not let wait longer are hashed now, from their handed-back state.
        let mut again = held.into_iter();
        let (left, _) = run(
            || again.next(),
            |i, d, _| results[i] = Some(d),
            |_| false,
            u64::MAX,
        );
        assert!(left.is_empty());
        for (input, got) in inputs.iter().zip(&results) {
            assert_eq!(
                got.map(|d| d.to_vec()),
                Some(sha2::Sha512::digest(input).to_vec())
            );
        }
    }
}
