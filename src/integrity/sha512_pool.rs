//! One process-wide queue of sha512 jobs, hashed eight at a time by whichever tasks are free
//! (and their sha1, when the job asks for it, eight at a time too).
//!
//! Why: eight messages hash at once only if eight are at hand ([`super::sha512_lanes`]), but the
//! blobs of a batch are ingested on tasks of their own. Each such task hands its blob's bytes to
//! this queue when it has read them. The task that hands one in while fewer tasks than cores are
//! hashing becomes a hasher ("flat combining"): it hashes what is queued, taking more as lanes free
//! up, and sends every digest to its task; the others wait for theirs without holding a thread,
//! which meanwhile reads, writes or hashes other blobs. No thread of its own, no lock held while
//! hashing, and a lone job costs what hashing it directly would. When a hasher is down to one or
//! two messages and more are coming, those wait in the queue for company rather than go through
//! the scalar compression at three times the cost, but never longer than [`GATHER_WAIT`] from
//! when they were queued. A hasher works in turns of about 1 MiB and yields its thread between
//! them, so a long batch does not hold up the other tasks of the runtime it shares (a server's
//! requests). The messages a turn finishes are answered at its end, once their sha1 (if asked
//! for) has been hashed together (`sha1_lanes`): the blobs whose sha512 finishes together are
//! the eight at hand for sha1's lanes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::sha1_lanes;
use super::sha512_lanes::{self, Message};
use crate::{Error, Result};

/// A job's answer: its sha512, and its sha1 if it asked for it.
type Sums = ([u8; 64], Option<[u8; 20]>);

struct Job {
    /// The message, maybe partly hashed by an earlier turn.
    message: Message,
    /// Whether its sha1 is wanted too (hashed once its sha512 is done).
    sha1: bool,
    tx: oneshot::Sender<Sums>,
    /// When it was first queued.
    since: Instant,
}

/// A job whose sha512 is done, with its bytes if its sha1 is wanted: answered at the end of the
/// turn.
type Finished = (oneshot::Sender<Sums>, [u8; 64], Option<Vec<Bytes>>);

/// Hashes the sha1 the finished jobs asked for, together, and answers each.
fn answer(finished: Vec<Finished>) {
    // Nobody to answer for a put that was dropped meanwhile: no sha1 to hash for it either.
    let (with_sha1, without): (Vec<_>, Vec<_>) = finished
        .into_iter()
        .filter(|(tx, _, _)| !tx.is_closed())
        .partition(|(_, _, sha1)| sha1.is_some());
    for (tx, sha512, _) in without {
        let _ = tx.send((sha512, None));
    }
    let (answers, messages): (Vec<_>, Vec<_>) = with_sha1
        .into_iter()
        .map(|(tx, sha512, sha1)| ((tx, sha512), sha1.unwrap_or_default()))
        .unzip();
    for ((tx, sha512), sha1) in answers.into_iter().zip(sha1_lanes::each(messages)) {
        let _ = tx.send((sha512, Some(sha1)));
    }
}

struct Pool {
    queue: Mutex<VecDeque<Job>>,
    /// Tasks hashing now; at most `max`.
    hashing: AtomicUsize,
    max: usize,
    /// Messages being gathered (their streams still being read) that will come to the queue.
    coming: AtomicUsize,
}

/// Leaves the hashers' count however hashing ends (a panic included), so the queue never waits
/// for a hasher that is gone.
struct Hashing<'a>(&'a AtomicUsize);

impl Drop for Hashing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    fn new() -> Pool {
        Pool {
            queue: Mutex::new(VecDeque::new()),
            hashing: AtomicUsize::new(0),
            max: std::thread::available_parallelism().map_or(2, |n| n.get()),
            coming: AtomicUsize::new(0),
        }
    }

    /// The process's queue.
    fn get() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            tracing::debug!(
                eight_lanes = sha512_lanes::wide(),
                "sha512 of batched blobs hashed together"
            );
            Pool::new()
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hashes queued jobs on this thread unless enough threads do already, for one turn of about
    /// [`TURN_BYTES`]. Returns [`Turn::Yield`] if it stopped for that with jobs still queued (the
    /// caller gives its thread to other tasks, then calls again); the messages it had not finished
    /// go back to the front of the queue with their state, for whichever hasher comes next.
    /// Otherwise it leaves only when the queue is empty or another hasher is still at work: a
    /// hasher re-checks the queue after it stops counting itself, so a job queued while it was
    /// stopping is never left behind.
    fn combine(&self) -> Turn {
        loop {
            if self.hashing.fetch_add(1, Ordering::SeqCst) >= self.max {
                self.hashing.fetch_sub(1, Ordering::SeqCst);
                return Turn::Done;
            }
            // The last one or two messages of a run wait for others (instead of being hashed
            // on the scalar compression, at three times the cost) while more are on their way
            // and they have not waited `GATHER_WAIT` yet: their waiters ask again once it has
            // passed, and a message queued meanwhile may fill the lanes first.
            let more_coming = self.coming.load(Ordering::SeqCst) > 0;
            let (spent, held) = {
                let _hashing = Hashing(&self.hashing);
                let mut finished: Vec<Finished> = Vec::new();
                let (unfinished, spent) = sha512_lanes::run(
                    || {
                        let job = self.queue().pop_front()?;
                        Some(((job.tx, job.since, job.sha1), job.message))
                    },
                    |(tx, _, sha1), digest, chunks| {
                        finished.push((tx, digest, sha1.then_some(chunks)));
                    },
                    |(_, since, _)| more_coming && since.elapsed() < GATHER_WAIT,
                    TURN_BYTES,
                );
                answer(finished);
                // Handed back before the budget was spent: held to wait for company, unless
                // some came while they were being handed back.
                let held = !unfinished.is_empty() && spent < TURN_BYTES;
                let mut queue = self.queue();
                let others = queue.len();
                for ((tx, since, sha1), message) in unfinished.into_iter().rev() {
                    // Nobody to hand it to if its put was dropped meanwhile.
                    if !tx.is_closed() {
                        queue.push_front(Job {
                            message,
                            sha1,
                            tx,
                            since,
                        });
                    }
                }
                (spent, held && others == 0)
            };
            if held || self.queue().is_empty() {
                return Turn::Done;
            }
            if spent >= TURN_BYTES {
                return Turn::Yield;
            }
        }
    }

    /// Hashes what is queued, turn by turn, letting the thread's other tasks run between turns.
    async fn combine_turns(&self) {
        while let Turn::Yield = self.combine() {
            tokio::task::yield_now().await;
        }
    }
}

/// Bytes one hashing turn hashes before it lets its thread run other tasks (about 0.6 ms at eight
/// lanes' speed, 1.5 ms on the scalar compression): the hasher is a task on the caller's runtime,
/// whose other tasks (a server's requests) must not wait for a whole batch's hashing.
const TURN_BYTES: u64 = 1 << 20;

/// How a hashing turn ended.
enum Turn {
    /// The queue is empty, or enough others are hashing it.
    Done,
    /// It hashed [`TURN_BYTES`] and jobs are left: yield, then hash again.
    Yield,
}

/// Whether batches hash sha512 through this queue (true unless turned off).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the shared sha512 of batched blobs on or off for the whole process (off: each blob's
/// sha512 is hashed on its own task, as a single put does). For benchmarks that compare the two.
#[doc(hidden)]
pub fn set_batch_sha512_lanes(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Removes the jobs nobody waits for any more (on a waiting put's way out).
struct Withdraw(&'static Pool);

impl Drop for Withdraw {
    fn drop(&mut self) {
        let mut queue = self.0.queue();
        if queue.iter().any(|j| j.tx.is_closed()) {
            queue.retain(|j| !j.tx.is_closed());
        }
    }
}

/// How long a queued message waits for others before it is hashed with whatever is queued: a
/// batch whose other inputs are slow (a network stream) is not held back longer than this.
const GATHER_WAIT: Duration = Duration::from_millis(1);

/// A message that will come to the queue: taken when its stream starts, given back when the
/// message is queued or dropped. While any are out, a queued message waits (up to
/// [`GATHER_WAIT`]) for more to fill the lanes; once none are, what is queued is hashed at once.
pub(crate) struct Ticket(&'static Pool);

impl Ticket {
    /// A ticket of the process's queue.
    pub(crate) fn new() -> Ticket {
        Pool::get().ticket()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.coming.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    fn ticket(&'static self) -> Ticket {
        self.coming.fetch_add(1, Ordering::SeqCst);
        Ticket(self)
    }

    async fn digests(
        &'static self,
        chunks: Vec<Bytes>,
        sha1: bool,
        ticket: Ticket,
    ) -> Result<Sums> {
        // Declared before the receiver, so dropped after it: a put dropped while it waits takes
        // its job (and the bytes it holds) out of the queue, whether or not anyone hashes again.
        let withdraw = Withdraw(self);
        let (tx, mut rx) = oneshot::channel();
        let queued = {
            let mut queue = self.queue();
            queue.push_back(Job {
                sha1,
                message: Message::new(chunks),
                tx,
                since: Instant::now(),
            });
            queue.len()
        };
        // Given back only once queued: whoever sees none coming finds every message queued.
        drop(ticket);
        if queued >= sha512_lanes::LANES || self.coming.load(Ordering::SeqCst) == 0 {
            self.combine_turns().await;
        }
        // Every waiter hashes what is queued once each GATHER_WAIT it is not answered, so none
        // depends on another task's turns (which end, or are dropped, at any await).
        let digest = loop {
            match tokio::time::timeout(GATHER_WAIT, &mut rx).await {
                Ok(digest) => break digest,
                Err(_) => self.combine_turns().await,
            }
        };
        // Answered: nothing of this put's is queued any more.
        std::mem::forget(withdraw);
        digest.map_err(|_| Error::InvalidInput("sha512 hashing stopped before this input".into()))
    }
}

/// The sha512 of a whole message (its bytes in order, in any number of pieces), and its sha1 if
/// `sha1`, hashed along with other tasks' messages: at once when eight are queued or no other is
/// coming, else once others have come or [`GATHER_WAIT`] has passed.
pub(crate) async fn digests(chunks: Vec<Bytes>, sha1: bool, ticket: Ticket) -> Result<Sums> {
    ticket.0.digests(chunks, sha1, ticket).await
}

#[cfg(test)]
mod tests {
    use super::digests;
    use bytes::Bytes;

    /// The sha512 of `data`, and its sha1 if `sha1`: what the queue should answer.
    fn want(data: &[u8], sha1: bool) -> (Vec<u8>, Option<Vec<u8>>) {
        use sha1::Digest as _;
        (
            sha2::Sha512::digest(data).to_vec(),
            sha1.then(|| sha1::Sha1::digest(data).to_vec()),
        )
    }

    fn got(sums: super::Sums) -> (Vec<u8>, Option<Vec<u8>>) {
        (sums.0.to_vec(), sums.1.map(|d| d.to_vec()))
    }

    /// Hundreds of tasks on a multi-threaded runtime, each hashing its own message through the
    /// queue (some asking for its sha1 too), each get their own message's digests.
    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn concurrent_tasks_each_get_their_own_digest() {
        let mut tasks = Vec::new();
        for i in 0..600u32 {
            tasks.push(tokio::spawn(async move {
                let data: Vec<u8> = (0..(i as usize * 97) % 50_000)
                    .map(|j| (j as u32 ^ i) as u8)
                    .collect();
                let (a, b) = data.split_at(data.len() / 3);
                let ticket = super::Ticket::new();
                tokio::task::yield_now().await;
                let with_sha1 = i % 3 != 0;
                let sums = digests(
                    vec![Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)],
                    with_sha1,
                    ticket,
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok::<bool, String>(got(sums) == want(&data, with_sha1))
            }));
        }
        for t in tasks {
            assert_eq!(t.await.map_err(|e| e.to_string()), Ok(Ok(true)));
        }
    }

    /// A put dropped while it waits for its digest leaves nothing in the queue, even if no one hashes
    /// again; one that waits alone is hashed once the gathering wait has passed.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_leaves_nothing_queued_and_a_lone_one_is_hashed() {
        let pool: &'static super::Pool = Box::leak(Box::new(super::Pool::new()));
        let more = pool.ticket();
        let waiting =
            tokio::spawn(pool.digests(vec![Bytes::from_static(b"abc")], true, pool.ticket()));
        tokio::task::yield_now().await;
        assert_eq!(pool.queue().len(), 1, "queued and waiting for more");
        waiting.abort();
        assert!(waiting.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(pool.queue().len(), 0, "withdrawn");
        // Another one still expects more to come (`more`), so it waits, then is hashed anyway:
        // held back for company no longer than `GATHER_WAIT` (the clock is paused, so the time
        // it took is the timers', exactly).
        let began = tokio::time::Instant::now();
        let alone = pool.digests(vec![Bytes::from_static(b"abc")], true, pool.ticket());
        let digest = tokio::time::timeout(super::GATHER_WAIT * 20, alone)
            .await
            .map_err(|_| "never hashed".to_string())
            .and_then(|d| d.map_err(|e| e.to_string()));
        assert_eq!(digest.map(got), Ok(want(b"abc", true)));
        let waited = began.elapsed();
        assert!(
            waited >= super::GATHER_WAIT && waited <= super::GATHER_WAIT * 2,
            "waited {waited:?} for company"
        );
        assert_eq!(pool.coming.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(more);
    }

    /// A hasher with much queued lets the other tasks of its thread run between turns, and
    /// every job still gets its own digest: many messages, and a single one larger than many
    /// turns (resumed turn after turn).
    #[tokio::test]
    async fn a_long_hashing_run_lets_other_tasks_run_between_turns() {
        for sizes in [vec![256 << 10; 64], vec![16 << 20]] {
            hashing_turns(&sizes).await;
        }
    }

    async fn hashing_turns(sizes: &[usize]) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let pool: &'static super::Pool = Box::leak(Box::new(super::Pool::new()));
        let mut waiting = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let data = Bytes::from(vec![i as u8; size]);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let with_sha1 = i % 2 == 0;
            pool.queue().push_back(super::Job {
                message: super::Message::new(vec![data.clone()]),
                sha1: with_sha1,
                tx,
                since: tokio::time::Instant::now(),
            });
            waiting.push((data, with_sha1, rx));
        }
        // On this one-thread runtime the ticker runs only when the hasher yields.
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            }
        });
        pool.combine_turns().await;
        let ran = ticks.load(Ordering::SeqCst);
        ticker.abort();
        assert!(pool.queue().is_empty());
        // 16 MiB queued, turns of 1 MiB: the ticker ran between them.
        assert!(
            ran >= 8,
            "other tasks ran {ran} times during 16 MiB of hashing"
        );
        for (data, with_sha1, rx) in waiting {
            let sums = rx.await.map(got).map_err(|e| e.to_string());
            assert_eq!(sums, Ok(want(&data, with_sha1)));
        }
    }
}
