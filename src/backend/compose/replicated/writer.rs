//! Writes: one put stream teed to a writer per replica, each fed by its own task through a bounded
//! queue (a lane), and acknowledged once `write_quorum` replicas committed.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Replicated;
use crate::backend::{Backend, BlobKey, BlobWriter, Committed, PutHint};
use crate::integrity::Digests;
use crate::{Error, ErrorKind, Result};

/// Chunks queued per replica before a write waits for it.
const LANE_DEPTH: usize = 64;

/// The replicas' commits still running, each with its replica's index.
type Late = FuturesUnordered<BoxFuture<'static, (usize, LaneResult)>>;
type LaneResult = std::result::Result<Result<Committed>, tokio::task::JoinError>;

/// Starts a put on every replica; fails at once if too few of them could start for the quorum.
pub(super) async fn begin_put(backend: &Replicated, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
    let hint = PutHint {
        batch: false,
        ..hint.clone()
    };
    let starts =
        futures::future::join_all(backend.replicas.iter().map(|r| r.begin_put(&hint))).await;
    let mut lanes = Vec::with_capacity(starts.len());
    let mut failures = Vec::new();
    for (i, s) in starts.into_iter().enumerate() {
        match s {
            Ok(w) => lanes.push(Lane::spawn(i, w)),
            Err(e) => failures.push(format!(
                "{}: {}",
                backend.replicas[i].describe(),
                e.report()
            )),
        }
    }
    let writer = ReplicatedWriter {
        backend: backend.clone(),
        lanes,
        failures,
    };
    writer.check_quorum(0)?;
    Ok(Box::new(writer))
}

enum Msg {
    Chunk(Bytes),
    Commit(Digests),
}

/// One replica's share of a put: a task that feeds its writer from a queue.
struct Lane {
    replica: usize,
    tx: Option<mpsc::Sender<Msg>>,
    task: JoinHandle<Result<Committed>>,
}

impl Lane {
    fn spawn(replica: usize, mut writer: Box<dyn BlobWriter>) -> Lane {
        let (tx, mut rx) = mpsc::channel(LANE_DEPTH);
        let task = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Chunk(c) => {
                        if let Err(e) = writer.write(c).await {
                            if let Err(abort) = writer.abort().await {
                                tracing::warn!(error = %abort.report(), "abort after a failed write failed");
                            }
                            return Err(e);
                        }
                    }
                    Msg::Commit(d) => return writer.commit(&d).await,
                }
            }
            // The put was aborted or dropped.
            writer.abort().await?;
            Err(Error::InvalidInput("upload aborted".into()))
        });
        Lane {
            replica,
            tx: Some(tx),
            task,
        }
    }
}

struct ReplicatedWriter {
    backend: Replicated,
    lanes: Vec<Lane>,
    failures: Vec<String>,
}

impl ReplicatedWriter {
    fn check_quorum(&self, committed: usize) -> Result<()> {
        if self.lanes.len() + committed < self.backend.quorum {
            return Err(self.quorum_error(committed));
        }
        Ok(())
    }

    fn quorum_error(&self, committed: usize) -> Error {
        Error::QuorumNotReached {
            backend: self.backend.describe(),
            needed: self.backend.quorum,
            committed,
            failures: self.failures.join("; "),
        }
    }

    fn replica_name(&self, i: usize) -> String {
        self.backend.replicas[i].describe()
    }

    /// Lets the replicas that had not committed when the put was acknowledged finish on their
    /// own. A failure among them leaves a copy missing, which read-repair or `repair` fills; a
    /// copy published after a delete of the blob is deleted again (see `fence.rs`): at once if
    /// the delete was made here, and after [`DELETE_GRACE`] if the replicas that acknowledged
    /// the put (`acked`) no longer have the blob, which is a delete made by another process.
    fn finish_late(&self, key: BlobKey, acked: Vec<usize>, mut pending: Late) {
        let ticket = self.backend.fence.ticket(&key);
        let replicas = self.backend.replicas.clone();
        let describe = self.backend.describe();
        tokio::spawn(async move {
            let mut published = Vec::new();
            while let Some((replica, outcome)) = pending.next().await {
                let failed = match outcome {
                    Ok(Ok(Committed::Stored)) if ticket.overtaken() => {
                        // The blob was deleted after the put was acknowledged.
                        let removed = replicas[replica].delete(&key).await;
                        removed
                            .err()
                            .map(|e| format!("deleted since; removing it failed: {}", e.report()))
                    }
                    Ok(Ok(Committed::Stored)) => {
                        published.push(replica);
                        None
                    }
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.report().to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(error) = failed {
                    let name = replicas[replica].describe();
                    tracing::warn!(backend = %describe, replica = %name, %error, "late replica commit failed");
                }
            }
            if published.is_empty() {
                return;
            }
            tokio::time::sleep(DELETE_GRACE).await;
            // Deleted here meanwhile: that delete reached the copies published before it.
            if ticket.overtaken() || !deleted_elsewhere(&replicas, &acked, &key).await {
                return;
            }
            for replica in published {
                let name = replicas[replica].describe();
                match replicas[replica].delete(&key).await {
                    Ok(_) => {
                        tracing::info!(backend = %describe, replica = %name, blob = %key, "late copy of a blob deleted by another process removed")
                    }
                    Err(e) => {
                        tracing::warn!(backend = %describe, replica = %name, blob = %key, error = %e.report(), "late copy of a blob deleted by another process could not be removed")
                    }
                }
            }
        });
    }
}

/// How long after a replica's late commit the replicas that acknowledged the put are asked
/// whether they still have the blob. A delete made by another process goes to every replica at
/// once; one that reached the late replica before its commit has reached the others within this.
const DELETE_GRACE: Duration = Duration::from_secs(1);

/// Whether every replica in `acked`, which committed the blob moments ago, is now without it: a
/// delete (made elsewhere, since the fence saw none here). One `head` while the first of them
/// still has it, which is the common answer. A replica that cannot answer counts as having it,
/// so that a late copy is never removed on a guess.
async fn deleted_elsewhere(replicas: &[Arc<dyn Backend>], acked: &[usize], key: &BlobKey) -> bool {
    for &replica in acked {
        match replicas[replica].head(key).await {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return false,
        }
    }
    !acked.is_empty()
}

#[async_trait]
impl BlobWriter for ReplicatedWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let mut dead = Vec::new();
        for (pos, lane) in self.lanes.iter().enumerate() {
            let sent = match &lane.tx {
                Some(tx) => tx.send(Msg::Chunk(chunk.clone())).await.is_ok(),
                None => false,
            };
            if !sent {
                dead.push(pos);
            }
        }
        for pos in dead.into_iter().rev() {
            let lane = self.lanes.remove(pos);
            let why = match lane.task.await {
                Ok(Err(e)) => e.report().to_string(),
                Ok(Ok(_)) => "committed early".into(),
                Err(e) => format!("task failed: {e}"),
            };
            tracing::warn!(replica = %self.replica_name(lane.replica), error = %why, "replica dropped out of a put");
            let name = self.replica_name(lane.replica);
            self.failures.push(format!("{name}: {why}"));
        }
        self.check_quorum(0)
    }

    async fn commit(mut self: Box<Self>, digests: &Digests) -> Result<Committed> {
        let mut pending = Late::new();
        for mut lane in std::mem::take(&mut self.lanes) {
            let Some(tx) = lane.tx.take() else { continue };
            let replica = lane.replica;
            if tx.send(Msg::Commit(*digests)).await.is_err() {
                // Its task ended on an error; collect it below like any other failure.
            }
            pending.push(async move { (replica, lane.task.await) }.boxed());
        }
        let mut committed = Vec::new();
        let (mut stored, mut present) = (false, false);
        while let Some((replica, outcome)) = pending.next().await {
            match outcome {
                Ok(Ok(c)) => {
                    stored |= c == Committed::Stored;
                    present |= c == Committed::AlreadyPresent;
                    committed.push((replica, c));
                }
                Ok(Err(e)) => {
                    let name = self.replica_name(replica);
                    self.failures.push(format!("{name}: {}", e.report()));
                }
                Err(e) => {
                    let name = self.replica_name(replica);
                    self.failures.push(format!("{name}: task failed: {e}"));
                }
            }
            if committed.len() >= self.backend.quorum {
                let key = BlobKey::new(digests.sha512);
                // Answered both ways: another put of the blob committed on some replicas first.
                // A put acknowledged before this one reached a quorum, which shares a replica
                // with this one's, so answered only `Stored` this put is the first; answered both
                // ways it is the first unless a put here was told so since the last delete (the
                // earlier put's late commits may still be running, see `fence.rs`).
                let stored = stored && !(present && self.backend.fence.stored_before(&key));
                if stored {
                    self.backend.fence.reported_stored(&key);
                }
                if !pending.is_empty() {
                    let acked = committed.iter().map(|(replica, _)| *replica).collect();
                    self.finish_late(key, acked, pending);
                }
                return Ok(if stored {
                    Committed::Stored
                } else {
                    Committed::AlreadyPresent
                });
            }
        }
        // Quorum not reached: take back the copies this put published, so nothing is visible.
        let key = BlobKey::new(digests.sha512);
        for (replica, c) in &committed {
            if *c == Committed::Stored {
                if let Err(e) = self.backend.replicas[*replica].delete(&key).await {
                    tracing::warn!(blob = %key, replica = %self.replica_name(*replica), error = %e.report(), "rollback of a partial put failed");
                }
            }
        }
        Err(self.quorum_error(committed.len()))
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        for mut lane in std::mem::take(&mut self.lanes) {
            drop(lane.tx.take());
            // The lane aborts its writer when its queue closes; wait so nothing is left behind.
            match lane.task.await {
                // The lane's own "upload aborted" (InvalidInput) is the expected outcome.
                Ok(Err(e)) if e.kind() != ErrorKind::InvalidInput => {
                    tracing::warn!(replica = %self.replica_name(lane.replica), error = %e.report(), "replica abort failed")
                }
                Err(e) => {
                    tracing::warn!(replica = %self.replica_name(lane.replica), error = %e, "replica task failed")
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
