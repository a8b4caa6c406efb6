//! [`Replicated`]: one logical store kept on N backends.
//!
//! **Writes fan out.** One put stream is teed to N [`BlobWriter`]s, one per replica, each fed by its
//! own task through a bounded queue, so a slow replica lags behind (up to the queue) instead of
//! slowing every chunk. The alternative, writing one replica and copying from it afterwards, would
//! read every blob back and leave a window where only one copy exists; teeing costs only the
//! upload bandwidth the copies need anyway. A commit is acknowledged as soon as `write_quorum`
//! replicas committed; the stragglers finish in the background (their failures are logged and left
//! to [`Replicated::repair`]). If the quorum cannot be reached, the copies that were committed are
//! deleted again and the put fails with [`Error::QuorumNotReached`]: nothing stays visible.
//!
//! **Reads** go to the replicas in order and take the first copy that *verifies* (sha512 against
//! the key, checked here rather than in the store, so a corrupt replica can be skipped instead of
//! failing the read). Replicas found missing or corrupt on the way are repaired from the good copy
//! (read-repair). A replica that does not answer within `read_timeout` is skipped.
//!
//! **Repair** ([`Replicated::repair`]) lists every replica and copies each blob to the replicas that
//! lack it; with `verify` it also re-hashes every copy and replaces the corrupt ones.

use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, FuturesUnordered, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::fan_out::{rebuild_each, Filter};
use super::verify::{digests, fetch_verified, slice, Fetched, Held};
use crate::backend::{
    AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, Committed, GetResult, PutHint,
};
use crate::integrity::{Digests, Hash};
use crate::{Error, Result};

/// Chunks queued per replica before a write waits for it.
const LANE_DEPTH: usize = 64;

/// How a [`Replicated`] backend behaves.
#[derive(Debug, Clone)]
pub struct ReplicatedOptions {
    /// Replicas that must commit a write before it is acknowledged. `None`: a majority.
    pub write_quorum: Option<usize>,
    /// How long one replica may take to answer a read (`head`, `get`, alias lookup) before the next
    /// one is tried. `None`: no limit.
    pub read_timeout: Option<Duration>,
    /// Repair replicas found missing or corrupt while reading (default: on).
    pub read_repair: bool,
}

impl Default for ReplicatedOptions {
    fn default() -> Self {
        ReplicatedOptions {
            write_quorum: None,
            read_timeout: None,
            read_repair: true,
        }
    }
}

/// N backends acting as one; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Replicated {
    replicas: Arc<Vec<Arc<dyn Backend>>>,
    quorum: usize,
    read_timeout: Option<Duration>,
    read_repair: bool,
}

/// What [`Replicated::repair`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Distinct blobs over all replicas.
    pub blobs: u64,
    /// Copies written to replicas that lacked a blob.
    pub copied: u64,
    /// Corrupt copies found (with `verify`) and replaced.
    pub replaced: u64,
    /// Blobs with no good copy anywhere (address: what was found).
    pub unrecoverable: Vec<String>,
    /// Copies that could not be written (replica, address: error).
    pub failed: Vec<String>,
}

impl RepairReport {
    /// Whether every replica now holds a good copy of every blob.
    pub fn is_clean(&self) -> bool {
        self.unrecoverable.is_empty() && self.failed.is_empty()
    }
}

impl Replicated {
    /// Replicates over `replicas` (in read-preference order).
    pub fn new(replicas: Vec<Arc<dyn Backend>>, options: ReplicatedOptions) -> Result<Self> {
        let n = replicas.len();
        if n == 0 {
            return Err(Error::Config(
                "a replicated store needs at least one replica".into(),
            ));
        }
        let quorum = options.write_quorum.unwrap_or(n / 2 + 1);
        if quorum == 0 || quorum > n {
            return Err(Error::Config(format!(
                "write quorum {quorum} is impossible with {n} replicas"
            )));
        }
        Ok(Replicated {
            replicas: Arc::new(replicas),
            quorum,
            read_timeout: options.read_timeout,
            read_repair: options.read_repair,
        })
    }

    /// The replicas, in read-preference order.
    pub fn replicas(&self) -> &[Arc<dyn Backend>] {
        &self.replicas
    }

    /// The write quorum.
    pub fn write_quorum(&self) -> usize {
        self.quorum
    }

    async fn timed<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match self.read_timeout {
            None => fut.await,
            Some(limit) => tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(Error::backend(
                    self.describe(),
                    format!("replica did not answer within {limit:?}"),
                ))
            }),
        }
    }

    /// Writes a good copy to each replica in `targets`, quarantining a bad copy first where
    /// `replace` is set. Returns the failures.
    async fn write_copies(
        &self,
        key: &BlobKey,
        held: &Held,
        digests: &Digests,
        targets: &[(usize, bool)],
    ) -> Vec<(usize, String)> {
        let mut failed = Vec::new();
        for &(i, replace) in targets {
            let replica = &self.replicas[i];
            let result = async {
                if replace {
                    replica.quarantine(key).await?;
                }
                put_copy(&**replica, key, held, digests).await
            }
            .await;
            match result {
                Ok(_) => {
                    tracing::info!(blob = %key, replica = %replica.describe(), replace, "repaired replica")
                }
                Err(e) => {
                    tracing::warn!(blob = %key, replica = %replica.describe(), error = %e, "repair failed");
                    failed.push((i, format!("{} {key}: {e}", replica.describe())));
                }
            }
        }
        failed
    }

    /// Brings every replica to the same set of blobs: each blob missing from a replica is copied
    /// there from a replica whose copy verifies. With `verify`, every copy is re-hashed and corrupt
    /// ones are replaced too (a cross-replica scrub); without, only presence is compared.
    pub async fn repair(&self, verify: bool, concurrency: usize) -> Result<RepairReport> {
        let mut present: Vec<HashSet<BlobKey>> = Vec::with_capacity(self.replicas.len());
        for r in self.replicas.iter() {
            let keys: HashSet<BlobKey> = r.list().try_collect().await?;
            present.push(keys);
        }
        let mut all: Vec<BlobKey> = present.iter().flatten().copied().collect();
        all.sort();
        all.dedup();
        let present = Arc::new(present);
        let mut report = RepairReport {
            blobs: all.len() as u64,
            ..RepairReport::default()
        };
        let mut work = stream::iter(all)
            .map(|key| {
                let present = present.clone();
                async move { self.repair_one(key, &present, verify).await }
            })
            .buffer_unordered(concurrency.max(1));
        while let Some(one) = work.next().await {
            report.copied += one.copied;
            report.replaced += one.replaced;
            report.unrecoverable.extend(one.unrecoverable);
            report.failed.extend(one.failed);
        }
        report.unrecoverable.sort();
        report.failed.sort();
        Ok(report)
    }

    async fn repair_one(
        &self,
        key: BlobKey,
        present: &[HashSet<BlobKey>],
        verify: bool,
    ) -> RepairReport {
        let mut out = RepairReport::default();
        let mut good: Option<Held> = None;
        let mut targets = Vec::new();
        let mut found = Vec::new();
        for (i, replica) in self.replicas.iter().enumerate() {
            if !present[i].contains(&key) {
                targets.push((i, false));
                continue;
            }
            if good.is_some() && !verify {
                continue;
            }
            match fetch_verified(&**replica, &key).await {
                Ok(Fetched::Good(b)) => {
                    good.get_or_insert(b);
                }
                Ok(Fetched::Missing) => targets.push((i, false)),
                Ok(Fetched::Bad(_, f)) => {
                    targets.push((i, true));
                    found.push(format!("{}: {f}", replica.describe()));
                }
                Err(e) => found.push(format!("{}: {e}", replica.describe())),
            }
        }
        let Some(bytes) = good else {
            out.unrecoverable
                .push(format!("{key}: {}", found.join("; ")));
            return out;
        };
        if targets.is_empty() {
            return out;
        }
        let digests = match digests(&bytes).await {
            Ok(d) => d,
            Err(e) => {
                out.failed.push(format!("{key}: {e}"));
                return out;
            }
        };
        let failed = self.write_copies(&key, &bytes, &digests, &targets).await;
        let ok = |replace: bool| {
            targets
                .iter()
                .filter(|(i, r)| *r == replace && !failed.iter().any(|(f, _)| f == i))
                .count() as u64
        };
        out.copied = ok(false);
        out.replaced = ok(true);
        out.failed = failed.into_iter().map(|(_, e)| e).collect();
        out
    }
}

/// Stores `held` (already verified to be `digests`) in `backend`.
pub(crate) async fn put_copy(
    backend: &dyn Backend,
    key: &BlobKey,
    held: &Held,
    digests: &Digests,
) -> Result<Committed> {
    let hint = PutHint {
        expected_key: Some(*key),
        size: Some(held.len()),
        batch: false,
    };
    let mut w = backend.begin_put(&hint).await?;
    let mut chunks = held.stream(0..held.len());
    while let Some(chunk) = chunks.next().await {
        if let Err(e) = async { w.write(chunk?).await }.await {
            let _ = w.abort().await;
            return Err(e);
        }
    }
    w.commit(digests).await
}

#[async_trait]
impl Backend for Replicated {
    fn describe(&self) -> String {
        let members: Vec<String> = self.replicas.iter().map(|r| r.describe()).collect();
        format!(
            "replicated(quorum {} of {}: {})",
            self.quorum,
            self.replicas.len(),
            members.join(", ")
        )
    }

    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        let hint = PutHint {
            batch: false,
            ..hint.clone()
        };
        let starts =
            futures::future::join_all(self.replicas.iter().map(|r| r.begin_put(&hint))).await;
        let mut lanes = Vec::with_capacity(starts.len());
        let mut failures = Vec::new();
        for (i, s) in starts.into_iter().enumerate() {
            match s {
                Ok(w) => lanes.push(Lane::spawn(i, w)),
                Err(e) => failures.push(format!("{}: {e}", self.replicas[i].describe())),
            }
        }
        let writer = ReplicatedWriter {
            backend: self.clone(),
            lanes,
            failures,
        };
        writer.check_quorum(0)?;
        Ok(Box::new(writer))
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        let mut to_fix = Vec::new();
        let mut first_bad = None;
        let mut answered = false;
        let mut last_err = None;
        for (i, replica) in self.replicas.iter().enumerate() {
            match self.timed(fetch_verified(&**replica, key)).await {
                Ok(Fetched::Good(bytes)) => {
                    if self.read_repair && !to_fix.is_empty() {
                        match digests(&bytes).await {
                            Ok(d) => {
                                self.write_copies(key, &bytes, &d, &to_fix).await;
                            }
                            Err(e) => {
                                tracing::warn!(blob = %key, error = %e, "read-repair skipped")
                            }
                        }
                    }
                    return slice(bytes, range).map(Some);
                }
                Ok(Fetched::Missing) => {
                    answered = true;
                    to_fix.push((i, false));
                }
                Ok(Fetched::Bad(bytes, found)) => {
                    answered = true;
                    tracing::warn!(blob = %key, replica = %replica.describe(), %found, "corrupt replica");
                    to_fix.push((i, true));
                    first_bad.get_or_insert(bytes);
                }
                Err(e) => {
                    tracing::warn!(blob = %key, replica = %replica.describe(), error = %e, "replica read failed");
                    last_err = Some(e);
                }
            }
        }
        // No copy verifies: hand out a bad one so the store reports the blob corrupt (and fsck can
        // quarantine it) rather than pretending it is not there.
        if let Some(bytes) = first_bad {
            return slice(bytes, range).map(Some);
        }
        match (answered, last_err) {
            (false, Some(e)) => Err(e),
            _ => Ok(None),
        }
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        let mut answered = false;
        let mut last_err = None;
        for replica in self.replicas.iter() {
            match self.timed(replica.head(key)).await {
                Ok(Some(st)) => return Ok(Some(st)),
                Ok(None) => answered = true,
                Err(e) => last_err = Some(e),
            }
        }
        match (answered, last_err) {
            (false, Some(e)) => Err(e),
            _ => Ok(None),
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        let results = futures::future::join_all(self.replicas.iter().map(|r| r.delete(key))).await;
        let mut any = false;
        for r in results {
            any |= r?;
        }
        Ok(any)
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        let replicas = self.replicas.clone();
        let describe = self.describe();
        stream::once(async move {
            let mut seen = HashSet::new();
            let mut order = Vec::new();
            let mut failures = Vec::new();
            for r in replicas.iter() {
                match r.list().try_collect::<Vec<BlobKey>>().await {
                    Ok(keys) => {
                        for k in keys {
                            if seen.insert(k) {
                                order.push(Ok(k));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(replica = %r.describe(), error = %e, "replica list failed");
                        failures.push(format!("{}: {e}", r.describe()));
                    }
                }
            }
            if failures.len() == replicas.len() {
                order = vec![Err(Error::backend(describe, failures.join("; ")))];
            }
            stream::iter(order)
        })
        .flatten()
        .boxed()
    }

    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        let mut answered = false;
        let mut last_err = None;
        for replica in self.replicas.iter() {
            match self.timed(replica.resolve_alias(hash)).await {
                Ok(Some(k)) => return Ok(Some(k)),
                Ok(None) => answered = true,
                Err(e) => last_err = Some(e),
            }
        }
        match (answered, last_err) {
            (false, Some(e)) => Err(e),
            _ => Ok(None),
        }
    }

    async fn rebuild_aliases(&self, found: BoxStream<'_, Digests>) -> Result<AliasRebuild> {
        let members = self
            .replicas
            .iter()
            .map(|r| (&**r as &dyn Backend, Box::new(|_: &Digests| true) as Filter))
            .collect();
        // Each replica was given the same records: count them once, and sum the repairs.
        let mut total = AliasRebuild::default();
        for r in rebuild_each(found, members).await {
            let r = r?;
            let indexed = total.indexed.max(r.indexed);
            total.add(&r);
            total.indexed = indexed;
        }
        Ok(total)
    }

    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        let results =
            futures::future::join_all(self.replicas.iter().map(|r| r.quarantine(key))).await;
        let mut any = false;
        for r in results {
            any |= r?;
        }
        Ok(any)
    }

    fn recorded_digests_trusted(&self) -> bool {
        self.replicas.iter().all(|r| r.recorded_digests_trusted())
    }

    async fn sweep(&self) -> Result<u64> {
        let mut n = 0;
        for r in futures::future::join_all(self.replicas.iter().map(|r| r.sweep())).await {
            n += r?;
        }
        Ok(n)
    }
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
                            let _ = writer.abort().await;
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
                Ok(Err(e)) => e.to_string(),
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
        let mut pending = FuturesUnordered::new();
        for mut lane in std::mem::take(&mut self.lanes) {
            let Some(tx) = lane.tx.take() else { continue };
            let replica = lane.replica;
            if tx.send(Msg::Commit(*digests)).await.is_err() {
                // Its task ended on an error; collect it below like any other failure.
            }
            pending.push(async move { (replica, lane.task.await) });
        }
        let mut committed = Vec::new();
        let mut stored = false;
        while let Some((replica, outcome)) = pending.next().await {
            match outcome {
                Ok(Ok(c)) => {
                    stored |= c == Committed::Stored;
                    committed.push((replica, c));
                }
                Ok(Err(e)) => {
                    let name = self.replica_name(replica);
                    self.failures.push(format!("{name}: {e}"));
                }
                Err(e) => {
                    let name = self.replica_name(replica);
                    self.failures.push(format!("{name}: task failed: {e}"));
                }
            }
            if committed.len() >= self.backend.quorum {
                let describe = self.backend.describe();
                let names: Vec<String> =
                    self.backend.replicas.iter().map(|r| r.describe()).collect();
                if !pending.is_empty() {
                    // Acknowledged: the stragglers finish on their own; a failure among them
                    // leaves a copy missing, which read-repair or `repair` fills.
                    tokio::spawn(async move {
                        while let Some((replica, outcome)) = pending.next().await {
                            let failed = match outcome {
                                Ok(Ok(_)) => None,
                                Ok(Err(e)) => Some(e.to_string()),
                                Err(e) => Some(e.to_string()),
                            };
                            if let Some(error) = failed {
                                tracing::warn!(backend = %describe, replica = %names[replica], %error, "late replica commit failed");
                            }
                        }
                    });
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
                    tracing::warn!(blob = %key, replica = %self.replica_name(*replica), error = %e, "rollback of a partial put failed");
                }
            }
        }
        Err(self.quorum_error(committed.len()))
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        for mut lane in std::mem::take(&mut self.lanes) {
            drop(lane.tx.take());
            // The lane aborts its writer when its queue closes; wait so nothing is left behind.
            let _ = lane.task.await;
        }
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}
