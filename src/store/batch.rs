//! Putting many inputs: ingest on every core, commit in groups while the next inputs are ingested.
//!
//! A batch has two kinds of work. Ingest (read, hash, write the temp file) runs one task per
//! blob, a few per core. The commit (publish the group's blobs, record them in the index, and with
//! fsync on, two `syncfs`) is serial by nature. Committing the whole batch after the last ingest
//! leaves one core idle for the whole commit; here a group is committed as soon as the previous
//! commit is done and enough blobs are ready, so one core commits while the other ingests, and
//! results come out (in input order) as their group becomes durable.

use std::collections::HashMap;
use std::io;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::in_order::InOrder;
use super::put::{Hashing, Ingest, PutOptions, PutOutcome};
use super::Store;
use crate::backend::{BlobWriter, Committed, PendingBlob, PutHint};
use crate::{Error, Result};

/// Blobs of a batch in flight per core.
const BATCH_PER_CORE: usize = 8;

/// Inputs taken past the oldest one not yet ingested: blobs behind a large one go on being
/// ingested while it is (see `in_order.rs`), up to this many.
const REORDER_WINDOW: usize = 256;

/// A group is committed once this many blobs are ready (and the previous commit is done)...
const GROUP_MIN: usize = 64;

/// ...or once its first blob has waited this long, so a slow input does not hold back the others'
/// results; and never more than this many at once, so results keep coming out.
const GROUP_WAIT: Duration = Duration::from_millis(5);
const GROUP_MAX: usize = 1024;

/// A group's commit in flight, and how many inputs it answers for.
type Committing = (usize, JoinHandle<Vec<Result<PutOutcome>>>);

/// Waits for the commit in flight (forever if there is none; the caller guards on that).
async fn finished(
    committing: &mut Option<Committing>,
) -> (
    usize,
    std::result::Result<Vec<Result<PutOutcome>>, tokio::task::JoinError>,
) {
    match committing {
        Some((n, handle)) => (*n, handle.await),
        None => std::future::pending().await,
    }
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One input of a group: its result already (an error, or nothing to write), or an upload waiting
/// for the group's commit.
enum Slot {
    Done(Result<PutOutcome>),
    Pending(Box<dyn BlobWriter>, Ingest),
}

impl Store {
    /// Stores many inputs and makes them durable in groups (group commit): one flush per group
    /// instead of several per blob. Inputs are read and hashed a few at a time, on all cores, while
    /// the previous group is committed. Each input gets its own result, in input order; a bad one
    /// does not fail the others. Every blob is visible when this returns.
    pub async fn put_batch<S>(&self, inputs: Vec<(S, PutOptions)>) -> Vec<Result<PutOutcome>>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        self.put_stream(futures::stream::iter(inputs))
            .collect()
            .await
    }

    /// [`put_batch`](Self::put_batch) over a stream of inputs, pulled as ingest slots free up (so
    /// a million inputs never sit in memory at once), yielding each input's result in input order
    /// as soon as its group is committed. Dropping the returned stream stops taking inputs: blobs
    /// already committed (and those of a group whose commit is under way) stay, uploads not yet
    /// committed are removed. Call it within a Tokio runtime: it spawns the task that drives the
    /// batch, which goes on while the stream is not polled until 1024 results wait.
    pub fn put_stream<I, S>(&self, inputs: I) -> BoxStream<'static, Result<PutOutcome>>
    where
        I: Stream<Item = (S, PutOptions)> + Send + 'static,
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(GROUP_MAX);
        tokio::spawn(self.clone().drive(inputs, tx));
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
            .fuse()
            .boxed()
    }

    /// Ingests `inputs` and commits them group by group, sending each result to `tx` in order.
    async fn drive<I, S>(self, inputs: I, tx: mpsc::Sender<Result<PutOutcome>>)
    where
        I: Stream<Item = (S, PutOptions)> + Send + 'static,
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        // Each blob is read, hashed and written on its own task, so separate blobs hash on
        // separate cores; a few per core keep the cores busy while others wait on a read.
        let parallel =
            crate::task::cores().map_or(BATCH_PER_CORE * 2, |n| (n * BATCH_PER_CORE).clamp(4, 32));
        // More blobs are coming while inputs are: blobs already read wait a moment (at most
        // 1 ms) for them to hash their sha512 together (`integrity/sha512_pool.rs`) rather than
        // one by one. So the batch holds a ticket of the queue until its inputs end, and each input
        // one from the moment it is taken until its stream is first read, by which time its
        // hasher holds its own. Once the last input is taken, the blobs in flight are all that is
        // coming, and the last of them to be read need not wait out the 1 ms: a batch of two
        // files used to (2 ms with the timer's granularity, as much as the rest of the batch).
        let mut more_coming = Some(crate::integrity::Sha512Ticket::new());
        let mut inputs = Box::pin(inputs);
        let inputs = futures::stream::poll_fn(move |cx| {
            let next = inputs.as_mut().poll_next(cx);
            if matches!(next, Poll::Ready(None)) {
                more_coming.take();
            }
            next
        });
        let store = self.clone();
        let mut ingested = InOrder::new(
            Box::pin(inputs),
            parallel,
            REORDER_WINDOW,
            move |(stream, options)| {
                let stream = ticketed(stream, crate::integrity::Sha512Ticket::new());
                store.clone().spawn_ingest(stream, options).boxed()
            },
        );
        let mut group: Vec<Slot> = Vec::new();
        let mut group_since = tokio::time::Instant::now();
        let mut committing: Option<Committing> = None;
        let mut ended = false;
        loop {
            let due = !group.is_empty()
                && (ended || group.len() >= GROUP_MIN || group_since.elapsed() >= GROUP_WAIT);
            if committing.is_none() && due {
                let group = std::mem::take(&mut group);
                let n = group.len();
                committing = Some((n, tokio::spawn(self.clone().commit_group(group))));
            }
            if ended && committing.is_none() && group.is_empty() {
                return;
            }
            let wait = tokio::time::sleep_until(group_since + GROUP_WAIT);
            tokio::select! {
                (n, done) = finished(&mut committing), if committing.is_some() => {
                    committing = None;
                    let results = done.unwrap_or_else(|e| {
                        (0..n)
                            .map(|_| Err(Error::InvalidInput(format!("batch commit failed: {e}"))))
                            .collect()
                    });
                    for r in results {
                        if tx.send(r).await.is_err() {
                            // The caller went away: take no more inputs; `group`'s uploads are
                            // removed as their writers drop.
                            return;
                        }
                    }
                }
                next = ingested.next(), if !ended && group.len() < GROUP_MAX => match next {
                    Some(slot) => {
                        if group.is_empty() {
                            group_since = tokio::time::Instant::now();
                        }
                        group.push(slot);
                    }
                    None => ended = true,
                },
                () = wait, if !group.is_empty() && committing.is_none() => {}
                // The caller went away while inputs were slow to come: stop taking them now.
                () = tx.closed() => return,
            }
        }
    }

    /// Ingests one input on a task of its own; its upload is written out (not yet published).
    async fn spawn_ingest<S>(self, stream: S, options: PutOptions) -> Slot
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let task = tokio::spawn(async move {
            let hint = PutHint {
                batch: true,
                size: options.expected_size,
                ..PutHint::default()
            };
            let writer = self.backend.begin_put(&hint).await?;
            let (ingest, writer) = self
                .ingest_with(stream, &options, Some(writer), None, Hashing::Batch)
                .await?;
            // Write it out now, on this task, rather than one blob after another at the commit.
            let Some(mut w) = writer else {
                return Ok(Slot::Done(Ok(PutOutcome {
                    digests: ingest.digests,
                    stored: false,
                    report: ingest.report,
                })));
            };
            if let Err(e) = w.finish_writes().await {
                if let Err(abort) = w.abort().await {
                    tracing::warn!(error = %abort.report(), "abort after a failed write also failed");
                }
                return Err(e);
            }
            Ok(Slot::Pending(w, ingest))
        });
        // Dropped (the batch's stream dropped while this input is still being read) means
        // aborted: a detached task would go on reading an input that may never end, holding its
        // upload's temp file.
        let mut task = AbortOnDrop(task);
        match (&mut task.0).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(e)) => Slot::Done(Err(e)),
            Err(e) => Slot::Done(Err(Error::InvalidInput(format!("put task failed: {e}")))),
        }
    }

    /// Commits a group's pending uploads together; returns every slot's result in order.
    async fn commit_group(self, group: Vec<Slot>) -> Vec<Result<PutOutcome>> {
        let mut results: Vec<Option<Result<PutOutcome>>> = Vec::with_capacity(group.len());
        let mut pending = Vec::new();
        let mut ingests = Vec::new();
        for (i, slot) in group.into_iter().enumerate() {
            match slot {
                Slot::Done(r) => results.push(Some(r)),
                Slot::Pending(w, ingest) => {
                    pending.push((w, ingest.digests));
                    ingests.push((i, ingest));
                    results.push(None);
                }
            }
        }
        let committed = self.commit_firsts(pending).await;
        for ((i, ingest), c) in ingests.into_iter().zip(committed) {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(c.map(|c| PutOutcome {
                    digests: ingest.digests,
                    stored: c == Committed::Stored,
                    report: ingest.report,
                }));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::InvalidInput("batch item lost".into()))))
            .collect()
    }

    /// Commits a group in which a blob may come more than once. The backend commits the first
    /// copy of each blob (it may commit a batch's items concurrently, and two copies of one blob
    /// committed at once could both be told `Stored`). A later copy is then `AlreadyPresent`
    /// without being committed, unless its first failed: those are committed the same way, next.
    fn commit_firsts(&self, pending: Vec<PendingBlob>) -> BoxFuture<'_, Vec<Result<Committed>>> {
        async move {
            if pending.is_empty() {
                return Vec::new();
            }
            let mut first_of: HashMap<[u8; 64], usize> = HashMap::with_capacity(pending.len());
            let mut firsts = Vec::with_capacity(pending.len());
            // Each item: its index among the firsts, or the first it repeats with its upload.
            let mut places = Vec::with_capacity(pending.len());
            for (writer, digests) in pending {
                if let Some(&f) = first_of.get(&digests.sha512) {
                    places.push(Err((f, writer, digests)));
                } else {
                    first_of.insert(digests.sha512, firsts.len());
                    places.push(Ok(firsts.len()));
                    firsts.push((writer, digests));
                }
            }
            let unique = firsts.len() == places.len();
            let mut first_results: Vec<Option<Result<Committed>>> =
                self.backend.commit_batch(firsts).await.into_iter().map(Some).collect();
            if unique {
                return first_results.into_iter().flatten().collect();
            }
            let failed: Vec<bool> = first_results
                .iter()
                .map(|r| matches!(r, Some(Err(_))))
                .collect();
            let mut again = Vec::new();
            let mut out: Vec<Option<Result<Committed>>> = Vec::with_capacity(places.len());
            for place in places {
                out.push(match place {
                    Ok(f) => first_results.get_mut(f).and_then(Option::take),
                    Err((f, writer, digests)) if failed.get(f) == Some(&true) => {
                        again.push((writer, digests));
                        None
                    }
                    Err((_, writer, _)) => {
                        // Its blob is committed already: this copy's upload is not needed.
                        if let Err(e) = writer.abort().await {
                            tracing::warn!(error = %e.report(), "discarding a repeated blob's upload failed");
                        }
                        Some(Ok(Committed::AlreadyPresent))
                    }
                });
            }
            let mut again = self.commit_firsts(again).await.into_iter();
            out.into_iter()
                .map(|r| {
                    r.or_else(|| again.next())
                        .unwrap_or_else(|| Err(Error::InvalidInput("batch item lost".into())))
                })
                .collect()
        }
        .boxed()
    }
}

/// `stream`, holding `ticket` until it is first polled (see `drive`). Pinned here, so that a
/// caller's input need not be `Unpin` (a stream of async code is not).
fn ticketed<S>(
    stream: S,
    ticket: crate::integrity::Sha512Ticket,
) -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    let mut stream = Box::pin(stream);
    let mut ticket = Some(ticket);
    futures::stream::poll_fn(move |cx| {
        ticket.take();
        stream.poll_next_unpin(cx)
    })
}
