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
//! (read-repair). A replica that does not answer within `read_timeout` is skipped. A read (or a
//! `head`, or an alias lookup) that finds no good copy reports the error of a replica that failed,
//! if one did, rather than `None` or a corrupt copy: that replica's copy may be good, or the only
//! one. Not found means every replica answered that it lacks the blob.
//!
//! **Deletes win over repairs and late commits**: a repair that read its good copy before a
//! delete of the blob does not leave that copy on a replica after it, nor does the late commit of
//! a put acknowledged before the delete, made in this process or (checked a second after the late
//! commit, one `head`) in another (see `fence.rs`). A put is reported `Stored` only if the
//! blob was not stored before: a second put can find a replica the first had not reached yet.
//!
//! **Repair** ([`Replicated::repair`]) lists every replica and copies each blob to the replicas that
//! lack it; with `verify` it also re-hashes every copy and replaces the corrupt ones.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, FuturesUnordered, StreamExt};

use super::fan_out::{rebuild_each, Filter};
use super::verify::{size_confirmed, Read};
use crate::backend::{
    AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, GetResult, Misplaced, Presence, PutHint,
};
use crate::integrity::{Digests, Hash};
use crate::{Error, Result};

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

mod fence;
mod list;
mod read;
mod repair;
mod writer;

pub(crate) use repair::put_copy;
pub use repair::RepairReport;

impl Default for ReplicatedOptions {
    fn default() -> Self {
        ReplicatedOptions {
            write_quorum: None,
            read_timeout: None,
            read_repair: true,
        }
    }
}

/// N backends acting as one: quorum writes, verified reads with failover and read-repair, and
/// [`Replicated::repair`] (see [`compose`](super)).
#[derive(Debug, Clone)]
pub struct Replicated {
    replicas: Arc<Vec<Arc<dyn Backend>>>,
    quorum: usize,
    read_timeout: Option<Duration>,
    read_repair: bool,
    fence: Arc<fence::Fence>,
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
            fence: Arc::default(),
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
        writer::begin_put(self, hint).await
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        self.read(key, range, Read::Served).await
    }

    /// [`get`](Backend::get), reading each replica's store of record: a pass over a replicated
    /// store checks a cached replica's remote copy and fills no tier. A bad copy is still
    /// repaired from a good one (with `read_repair`).
    async fn get_uncached(&self, key: &BlobKey) -> Result<Option<GetResult>> {
        self.read(key, None, Read::OfRecord).await
    }

    /// The first replica's whose size its trusted record confirms; a copy without (cut short,
    /// grown) names its size only if no replica's can, and no replica failed.
    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        let (mut unconfirmed, mut last_err) = (None, None);
        for replica in self.replicas.iter() {
            match self.timed(replica.head(key)).await {
                Ok(Some(st)) if size_confirmed(&**replica, &st) => return Ok(Some(st)),
                Ok(Some(st)) => {
                    unconfirmed.get_or_insert(st);
                }
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
        }
        match (last_err, unconfirmed) {
            (Some(e), _) => Err(e),
            (None, st) => Ok(st),
        }
    }

    /// The first replica's size when it holds the blob and can tell at once (an fs replica: one
    /// `stat` and its record), as [`head`](Backend::head) would answer; otherwise `None`, and
    /// `head` asks the replicas in order.
    fn size_now(&self, key: &BlobKey) -> Option<Result<Option<u64>>> {
        match self.replicas.first()?.size_now(key)? {
            Ok(Some(size)) => Some(Ok(Some(size))),
            _ => None,
        }
    }

    /// The first replica's "yes" when it can give one at once, as for
    /// [`size_now`](Backend::size_now).
    fn exists_now(&self, key: &BlobKey) -> Option<Result<bool>> {
        match self.replicas.first()?.exists_now(key)? {
            Ok(true) => Some(Ok(true)),
            _ => None,
        }
    }

    /// Reads serve the first copy that verifies whole.
    fn verifies_reads_whole(&self) -> Option<crate::backend::Vouched> {
        Some(crate::backend::Vouched::new())
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        // Registered before any replica is touched: a repair that read the blob before is told.
        let _deleting = self.fence.deleting(key);
        let results = futures::future::join_all(self.replicas.iter().map(|r| r.delete(key))).await;
        let mut any = false;
        for r in results {
            any |= r?;
        }
        Ok(any)
    }

    /// Every replica's: the blob counts as stored only while every replica holds it (a put that
    /// wrote nothing relied on all of them holding it, see [`head_of_record`](Backend::head_of_record)).
    async fn freshen(&self, key: &BlobKey) -> Result<Presence> {
        self.held_by_every(key, |replica| replica.freshen(key))
            .await
    }

    /// [`Presence::Held`] for a blob every replica holds at one size; [`Presence::Missing`] if
    /// none holds it; and [`Presence::Partly`] if some replica lacks it or holds a copy of another
    /// size, so that a put (or a copy into the store) writes it through the quorum instead of
    /// trusting one replica's copy, filling the replicas that lack it and replacing the wrong
    /// copies. A replica that cannot say is an error, which a put takes as "not stored" too.
    async fn head_of_record(&self, key: &BlobKey) -> Result<Presence> {
        self.held_by_every(key, |replica| replica.head_of_record(key))
            .await
    }

    /// Every replica's copy: a put writes the blob through the quorum if any is damaged. The
    /// replicas check at once (each may read its copy back), and the first damaged one answers.
    async fn copy_holds(&self, key: &BlobKey, record: &Digests) -> Result<bool> {
        let mut checks: FuturesUnordered<_> = self
            .replicas
            .iter()
            .map(|r| r.copy_holds(key, record))
            .collect();
        while let Some(holds) = checks.next().await {
            if !holds? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        list::union(self.replicas.clone(), self.describe())
    }

    /// The replicas' listings, each blob as the first replica that lists it gives it: sizes and
    /// times from an object store's listing, with no `HEAD` per blob.
    fn list_meta(self: Arc<Self>) -> BoxStream<'static, Result<BlobStat>> {
        list::union_meta(self.replicas.clone(), self.describe())
    }

    /// Each replica's own, as [`head_of_record`](Backend::head_of_record) asks each of them.
    fn listings_of_record(self: Arc<Self>) -> Vec<BoxStream<'static, Result<BlobStat>>> {
        self.replicas
            .iter()
            .flat_map(|r| r.clone().listings_of_record())
            .collect()
    }

    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        self.first_answer(|replica| replica.resolve_alias(hash))
            .await
    }

    /// Every replica's: `freshen` found the blob on each of them.
    async fn index_stored(&self, digests: &Digests) -> Result<()> {
        let each = self.replicas.iter().map(|r| r.index_stored(digests));
        for r in futures::future::join_all(each).await {
            r?;
        }
        Ok(())
    }

    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &crate::backend::RebuildOptions,
    ) -> Result<AliasRebuild> {
        let members = self
            .replicas
            .iter()
            .map(|r| (&**r as &dyn Backend, Box::new(|_: &Digests| true) as Filter))
            .collect();
        // Each replica was given the same records: count them once, and sum the repairs.
        let mut total = AliasRebuild::default();
        for r in rebuild_each(found, members, options).await {
            let r = r?;
            let indexed = total.indexed.max(r.indexed);
            total.add(&r);
            total.indexed = indexed;
        }
        Ok(total)
    }

    /// Quarantines the copies of `key` found bad, each replica's copy read and hashed first: a
    /// copy that verifies stays in service, and so does one that could not be read (see
    /// `quarantine_bad` in `repair.rs`).
    async fn quarantine(&self, key: &BlobKey) -> Result<bool> {
        self.quarantine_bad(key).await
    }

    fn recorded_digests_trusted(&self) -> Option<crate::backend::Vouched> {
        let all = self
            .replicas
            .iter()
            .all(|r| r.recorded_digests_trusted().is_some());
        all.then(crate::backend::Vouched::new)
    }

    async fn restore_misplaced(&self) -> Result<Misplaced> {
        let mut all = Misplaced::default();
        for r in
            futures::future::join_all(self.replicas.iter().map(|r| r.restore_misplaced())).await
        {
            all.merge(r?);
        }
        Ok(all)
    }

    async fn sweep(&self) -> Result<u64> {
        let mut n = 0;
        for r in futures::future::join_all(self.replicas.iter().map(|r| r.sweep())).await {
            n += r?;
        }
        Ok(n)
    }
}
