//! Repair: copying each blob to the replicas that lack it (or hold a corrupt copy), from a copy
//! that verifies. Read-repair uses the same copying.

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use super::fence::Ticket;
use super::Replicated;
use crate::backend::compose::verify::{
    digests, fetch_for_copy, fetch_verified, Fetched, Held, Read,
};
use crate::backend::key_table::{self, KeyTable};
use crate::backend::{Backend, BlobKey, Committed, PutHint, Sample};
use crate::integrity::Digests;
use crate::Result;

/// Blobs repaired per page of the census.
const PAGE: usize = 4096;

/// What [`Replicated::repair`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Distinct blobs over all replicas.
    pub blobs: u64,
    /// Copies written to replicas that lacked a blob.
    pub copied: u64,
    /// Corrupt copies found (with `verify`) and replaced.
    pub replaced: u64,
    /// Blobs with no good copy anywhere (address: what was found): all counted, the first kept
    /// (each one is logged).
    pub unrecoverable: Sample<String>,
    /// Copies that could not be written (replica, address: error): all counted, the first kept
    /// (each one is logged).
    pub failed: Sample<String>,
}

impl RepairReport {
    /// Whether every replica now holds a good copy of every blob.
    pub fn is_clean(&self) -> bool {
        self.unrecoverable.is_empty() && self.failed.is_empty()
    }
}

impl Replicated {
    /// Writes a good copy to each replica in `targets`, quarantining a bad copy first where
    /// `replace` is set. Returns the failures, or `None` if a delete of the blob overtook
    /// `ticket` (taken before `held` was read): then nothing is written, or what was written is
    /// deleted again, so that the repair does not bring a deleted blob back.
    pub(super) async fn write_copies(
        &self,
        key: &BlobKey,
        held: &Held,
        digests: &Digests,
        targets: &[(usize, bool)],
        ticket: &Ticket,
    ) -> Option<Vec<(usize, String)>> {
        if ticket.overtaken() {
            return None;
        }
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
                    tracing::warn!(blob = %key, replica = %replica.describe(), error = %e.report(), "repair failed");
                    failed.push((i, format!("{} {key}: {}", replica.describe(), e.report())));
                }
            }
        }
        if ticket.overtaken() {
            self.undo_copies(key, targets, &failed).await;
            return None;
        }
        Some(failed)
    }

    /// Quarantines, on each replica, the copy of `key` that is read back and found not to hash to
    /// the key; leaves a copy that verifies, and one that cannot be read (it may be good). A
    /// verdict of corrupt from [`Backend::get`] speaks of the copies that one read saw, not of
    /// every replica's: a replica may have failed that read, or been repaired since, so each copy
    /// is checked again here before it is taken out of service. Costs one read of each replica's
    /// copy, one replica at a time (a quarantine is rare: fsck, on a blob found corrupt). Returns
    /// whether any copy was moved; a replica's error (reading or moving its copy) is returned once
    /// every replica has been dealt with.
    pub(super) async fn quarantine_bad(&self, key: &BlobKey) -> Result<bool> {
        let mut moved = false;
        let mut first_err = None;
        for replica in self.replicas.iter() {
            let done = match self
                .timed(fetch_verified(&**replica, key, Read::OfRecord))
                .await
            {
                Ok(Fetched::Bad(_, found)) => {
                    tracing::warn!(blob = %key, replica = %replica.describe(), %found, "quarantining a corrupt copy");
                    replica.quarantine(key).await
                }
                Ok(Fetched::Good(_)) => {
                    tracing::info!(blob = %key, replica = %replica.describe(), "copy verifies: not quarantined");
                    Ok(false)
                }
                Ok(Fetched::Missing) => Ok(false),
                Err(e) => Err(e),
            };
            match done {
                Ok(m) => moved |= m,
                Err(e) => {
                    tracing::warn!(blob = %key, replica = %replica.describe(), error = %e.report(), "copy left in place: not checked");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }

    /// Deletes the copies of `key` written to `targets` (all but the `failed` ones).
    async fn undo_copies(
        &self,
        key: &BlobKey,
        targets: &[(usize, bool)],
        failed: &[(usize, String)],
    ) {
        for &(i, _) in targets {
            if failed.iter().any(|(f, _)| *f == i) {
                continue;
            }
            let replica = &self.replicas[i];
            match replica.delete(key).await {
                Ok(_) => {
                    tracing::info!(blob = %key, replica = %replica.describe(), "deleted meanwhile: repair undone")
                }
                Err(e) => {
                    tracing::warn!(blob = %key, replica = %replica.describe(), error = %e.report(), "cannot undo a repair of a deleted blob")
                }
            }
        }
    }

    /// Brings every replica to the same set of blobs: each blob missing from a replica is copied
    /// there from a replica whose copy verifies. With `verify`, every copy is re-hashed and corrupt
    /// ones are replaced too (a cross-replica scrub); without, only presence is compared.
    ///
    /// The replicas' listings are folded into one census of which replicas list each blob, held in
    /// memory up to 262,144 blobs and in a temp database beyond (`backend/key_table.rs`), and
    /// read back a page at a time: memory does not grow with the store.
    pub async fn repair(&self, verify: bool, concurrency: usize) -> Result<RepairReport> {
        self.repair_with(verify, concurrency, key_table::IN_MEMORY)
            .await
    }

    /// [`repair`](Self::repair), with the census in memory up to `in_memory` blobs.
    pub(super) async fn repair_with(
        &self,
        verify: bool,
        concurrency: usize,
        in_memory: usize,
    ) -> Result<RepairReport> {
        if self.replicas.len() > 64 {
            return Err(crate::Error::InvalidInput(
                "repair takes at most 64 replicas".into(),
            ));
        }
        let mut census = KeyTable::new(in_memory);
        for (i, r) in self.replicas.iter().enumerate() {
            let mut keys = r.list();
            while let Some(key) = keys.try_next().await? {
                census.note(key, 1 << i)?;
            }
        }
        census.finish()?;
        let mut report = RepairReport {
            blobs: census.len()?,
            ..RepairReport::default()
        };
        let mut after = None;
        loop {
            let page = census.page(after.as_ref(), PAGE)?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.0);
            let mut work = stream::iter(page)
                .map(|(key, mask)| self.repair_one(key, mask, verify))
                .buffer_unordered(concurrency.max(1));
            while let Some(one) = work.next().await {
                report.copied += one.copied;
                report.replaced += one.replaced;
                report.unrecoverable.merge(one.unrecoverable);
                report.failed.merge(one.failed);
            }
        }
        report.unrecoverable.sort();
        report.failed.sort();
        Ok(report)
    }

    async fn repair_one(&self, key: BlobKey, listed: u64, verify: bool) -> RepairReport {
        let mut out = RepairReport::default();
        // Taken before any copy is read, so that a delete from now on keeps it off the others.
        let ticket = self.fence.ticket(&key);
        let mut good: Option<Held> = None;
        let mut good_digests = None;
        let mut targets = Vec::new();
        let mut found = Vec::new();
        // When a replica is known to lack the blob, the copy made for it is hashed for its
        // record in the same pass that verifies it (once, not twice).
        let present = |i: usize| listed & (1 << i) != 0;
        let copy_needed = (0..self.replicas.len()).any(|i| !present(i));
        if !copy_needed && !verify {
            // Listed by every replica, and presence is all that is compared: nothing to read.
            return out;
        }
        for (i, replica) in self.replicas.iter().enumerate() {
            if !present(i) {
                targets.push((i, false));
                continue;
            }
            if good.is_some() && !verify {
                continue;
            }
            let fetched = if copy_needed && good.is_none() {
                fetch_for_copy(&**replica, &key, Read::OfRecord).await
            } else {
                fetch_verified(&**replica, &key, Read::OfRecord)
                    .await
                    .map(|f| (f, None))
            };
            match fetched {
                Ok((Fetched::Good(b), d)) => {
                    if good.is_none() {
                        good_digests = d;
                    }
                    good.get_or_insert(b);
                }
                Ok((Fetched::Missing, _)) => targets.push((i, false)),
                Ok((Fetched::Bad(_, f), _)) => {
                    targets.push((i, true));
                    found.push(format!("{}: {f}", replica.describe()));
                }
                Err(e) => found.push(format!("{}: {}", replica.describe(), e.report())),
            }
        }
        let Some(bytes) = good else {
            let found = found.join("; ");
            tracing::warn!(blob = %key, found, "no good copy to repair from");
            out.unrecoverable.push(format!("{key}: {found}"));
            return out;
        };
        if targets.is_empty() {
            return out;
        }
        let hashed = match good_digests {
            Some(d) => Ok(d),
            None => digests(&bytes).await,
        };
        let digests = match hashed {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(blob = %key, error = %e.report(), "repair failed");
                out.failed.push(format!("{key}: {}", e.report()));
                return out;
            }
        };
        let Some(failed) = self
            .write_copies(&key, &bytes, &digests, &targets, &ticket)
            .await
        else {
            // Deleted meanwhile: nothing to repair.
            return out;
        };
        let ok = |replace: bool| {
            targets
                .iter()
                .filter(|(i, r)| *r == replace && !failed.iter().any(|(f, _)| f == i))
                .count() as u64
        };
        out.copied = ok(false);
        out.replaced = ok(true);
        out.failed.extend(failed.into_iter().map(|(_, e)| e));
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
        ..PutHint::default()
    };
    let mut w = backend.begin_put(&hint).await?;
    let mut chunks = held.stream(0..held.len());
    while let Some(chunk) = chunks.next().await {
        if let Err(e) = async { w.write(chunk?).await }.await {
            if let Err(abort) = w.abort().await {
                tracing::warn!(blob = %key, backend = %backend.describe(), error = %abort.report(), "abort after a failed copy failed");
            }
            return Err(e);
        }
    }
    w.commit(digests).await
}

#[cfg(all(test, feature = "memory"))]
pub(super) mod tests {
    use std::sync::Arc;

    use futures::TryStreamExt;

    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::integrity::MultiHasher;

    /// Puts `bytes` into `backend`.
    pub(in crate::backend::compose::replicated) async fn put(
        backend: &MemoryBackend,
        bytes: &[u8],
    ) {
        let mut h = MultiHasher::standard();
        h.update(bytes);
        let digests = h.finalize().digests().expect("digests");
        let hint = PutHint {
            expected_key: Some(BlobKey::new(digests.sha512)),
            size: Some(bytes.len() as u64),
            batch: false,
            ..PutHint::default()
        };
        let mut w = backend.begin_put(&hint).await.expect("begin");
        w.write(bytes::Bytes::copy_from_slice(bytes))
            .await
            .expect("write");
        w.commit(&digests).await.expect("commit");
    }

    /// Three memory replicas of `n` blobs, each lacking a different third of them.
    pub(in crate::backend::compose::replicated) async fn each_lacking_a_third(
        n: u32,
    ) -> Vec<MemoryBackend> {
        let mems: Vec<MemoryBackend> = (0..3).map(|_| MemoryBackend::new()).collect();
        for i in 0..n {
            let bytes = format!("blob {i}");
            for (r, m) in mems.iter().enumerate() {
                if i as usize % 3 != r {
                    put(m, bytes.as_bytes()).await;
                }
            }
        }
        mems
    }

    /// Three replicas, each lacking a different third of 60 blobs: a repair whose census moved to
    /// disk (limit 4) copies exactly what each lacks, once.
    #[tokio::test]
    async fn a_repair_with_its_census_on_disk_copies_what_each_replica_lacks() {
        let mems = each_lacking_a_third(60).await;
        let replicas: Vec<Arc<dyn Backend>> = mems
            .iter()
            .map(|m| Arc::new(m.clone()) as Arc<dyn Backend>)
            .collect();
        let rep = Replicated::new(replicas, Default::default()).expect("replicated");
        let report = rep.repair_with(true, 4, 4).await.expect("repair");
        assert_eq!(report.blobs, 60);
        assert_eq!(report.copied, 60, "{report:?}");
        assert!(report.unrecoverable.is_empty() && report.failed.is_empty());
        for m in &mems {
            let keys: Vec<BlobKey> = m.list().try_collect().await.expect("list");
            assert_eq!(keys.len(), 60);
        }
        let again = rep.repair_with(true, 4, 4).await.expect("repair");
        assert_eq!((again.blobs, again.copied, again.replaced), (60, 0, 0));
    }
}
