//! `fsck`: re-hash every blob, report (and optionally quarantine) corrupt ones, sweep dead uploads
//! and rebuild the alias index from what the blobs actually contain.

use futures::{SinkExt, Stream, StreamExt};
use serde::Serialize;

use super::Store;
use crate::backend::{AliasRebuild, BlobKey, Misplaced, Sample};
use crate::integrity::{Digests, MultiHasher};
use crate::{Error, Result};

/// Options for [`Store::fsck`].
#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// Move corrupt blobs out of the way (they stop being served; the bytes are kept for study).
    pub quarantine: bool,
    /// Rebuild the sha1/blake3 alias index from the blobs (default: on).
    pub rebuild_aliases: bool,
    /// Blobs checked at once.
    pub concurrency: usize,
    /// What the index rebuild does with entries whose blob is gone (remote stores list their
    /// markers to find them): remove them (default), only report them, or skip that pass.
    pub dangling_aliases: crate::backend::Dangling,
}

impl Default for FsckOptions {
    fn default() -> Self {
        FsckOptions {
            quarantine: false,
            rebuild_aliases: true,
            concurrency: 4,
            dangling_aliases: crate::backend::Dangling::Remove,
        }
    }
}

/// One blob fsck found bad.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CorruptBlob {
    /// Its address (`sha512-…`).
    pub address: String,
    /// What its bytes hash to now, or the read error.
    pub found: String,
    /// Whether it was moved to quarantine.
    pub quarantined: bool,
}

/// What fsck found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// Blobs read and re-hashed.
    pub checked: u64,
    /// Blobs whose bytes match their address.
    pub ok: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Blobs whose bytes do not match (or could not be read): all counted, the first kept (each
    /// one is logged as it is found).
    pub corrupt: Sample<CorruptBlob>,
    /// Leftover uploads removed.
    pub temp_removed: u64,
    /// Blob files found outside the place their name gives them (where no read finds them).
    /// Each one whose bytes verified was moved back to its place first (`restored`), so it is
    /// counted in `checked` and indexed; the others were left as they were. A store with any is
    /// not clean: something moved its files. All counted, the first kept (each one is logged).
    pub misplaced: Misplaced,
    /// Entries in the rebuilt alias index (0 if not rebuilt).
    pub aliases: u64,
    /// What the rebuild did to the index: blobs that had no entry, entries that disagreed with
    /// their blob, entries whose blob was gone (all repaired).
    pub index: AliasRebuild,
}

impl FsckReport {
    /// Whether everything checked out: no corrupt blob and no misplaced file.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.misplaced.is_empty()
    }
}

enum Checked {
    Good(Digests),
    Bad(BlobKey, String),
    Gone,
}

impl Store {
    /// Verifies every blob. See [`FsckOptions`].
    pub async fn fsck(&self, options: &FsckOptions) -> Result<FsckReport> {
        self.fsck_keeping(options, Sample::new()).await
    }

    /// [`fsck`](Self::fsck), keeping the corrupt blobs in `corrupt` (a sample with its limit).
    pub(crate) async fn fsck_keeping(
        &self,
        options: &FsckOptions,
        corrupt: Sample<CorruptBlob>,
    ) -> Result<FsckReport> {
        let mut report = FsckReport {
            corrupt,
            temp_removed: self.backend.sweep().await?,
            // Before the scan: a blob put back is then listed, verified and indexed like any
            // other, instead of its index entry being removed as one whose blob is gone.
            misplaced: self.backend.restore_misplaced().await?,
            ..FsckReport::default()
        };
        let backend = self.backend.clone();
        let mut checks = self
            .backend
            .list()
            .map(|k| {
                let backend = backend.clone();
                async move {
                    let key = k?;
                    check_one(&*backend, key).await
                }
            })
            .buffer_unordered(options.concurrency.max(1));
        // Verified blobs stream into the index rebuild while the scan goes on: memory stays flat
        // and the rebuild merges, so nothing committed meanwhile is lost.
        let (mut found, found_rx) = futures::channel::mpsc::channel::<Digests>(1024);
        let rebuild = async {
            if options.rebuild_aliases {
                self.backend
                    .rebuild_aliases(
                        found_rx.boxed(),
                        &crate::backend::RebuildOptions {
                            dangling: options.dangling_aliases,
                            checks_per_second: None,
                        },
                    )
                    .await
                    .map(Some)
            } else {
                drop(found_rx);
                Ok(None)
            }
        };
        let scan = async {
            let scanned = self
                .scan(&mut checks, &mut found, &mut report, options)
                .await;
            // On every way out, an error included: the rebuild reads until the channel closes,
            // and the two are joined below, so a scan that failed without closing it would
            // leave fsck waiting forever (a server that fails mid-scan did exactly that).
            found.close_channel();
            scanned
        };
        let (scanned, rebuilt) = futures::join!(scan, rebuild);
        scanned?;
        if let Some(index) = rebuilt? {
            report.aliases = index.indexed;
            report.index = index;
        }
        report.corrupt.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(report)
    }

    /// Takes the verdict on every blob from `checks` into `report`, sending each good blob's
    /// digests to `found` (the index rebuild) if it is on; quarantines corrupt blobs if asked.
    async fn scan(
        &self,
        checks: &mut (impl Stream<Item = Result<Checked>> + Unpin),
        found: &mut futures::channel::mpsc::Sender<Digests>,
        report: &mut FsckReport,
        options: &FsckOptions,
    ) -> Result<()> {
        while let Some(checked) = checks.next().await {
            match checked? {
                Checked::Good(d) => {
                    report.checked += 1;
                    report.ok += 1;
                    report.bytes += d.size;
                    if options.rebuild_aliases {
                        // Fails only once the rebuild has ended with an error, reported below.
                        let _ = found.send(d).await;
                    }
                }
                Checked::Bad(key, found_digest) => {
                    report.checked += 1;
                    tracing::warn!(blob = %key, found = %found_digest, "corrupt blob");
                    let quarantined = options.quarantine && self.backend.quarantine(&key).await?;
                    report.corrupt.push(CorruptBlob {
                        address: key.to_string(),
                        found: found_digest,
                        quarantined,
                    });
                }
                Checked::Gone => {}
            }
        }
        Ok(())
    }
}

async fn check_one(backend: &dyn crate::backend::Backend, key: BlobKey) -> Result<Checked> {
    // The store of record's copy, not a cache tier's; and a pass over every blob through the
    // tier would push out what readers use.
    let got = match backend.get_uncached(&key).await {
        Ok(Some(got)) => got,
        // Deleted while we were listing.
        Ok(None) => return Ok(Checked::Gone),
        // A blob read in one piece meets its read error here, not in the stream: one file that
        // cannot be read is one bad blob, and the scan goes on to the others.
        Err(e @ Error::Io { .. }) => {
            return Ok(Checked::Bad(key, format!("unreadable: {}", e.report())))
        }
        Err(e) => return Err(e),
    };
    let mut hasher = MultiHasher::standard();
    let mut stream = got.stream;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => hasher.update(&c),
            Err(e @ Error::Io { .. }) => {
                return Ok(Checked::Bad(key, format!("unreadable: {}", e.report())))
            }
            // A wrapper's copy that it found bad already (no copy of it verifies).
            Err(Error::Corrupt { actual, .. }) => return Ok(Checked::Bad(key, actual)),
            Err(e) => return Err(e),
        }
    }
    let digests = hasher.finalize().digests()?;
    if digests.sha512 == *key.as_bytes() {
        Ok(Checked::Good(digests))
    } else {
        Ok(Checked::Bad(key, digests.integrity().to_string()))
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    /// More corrupt blobs than the report keeps: every one is counted, as many as the limit kept
    /// (each a blob that really is corrupt), and the good blobs are still checked.
    #[tokio::test]
    async fn more_corrupt_blobs_than_kept_are_all_counted() {
        let memory = MemoryBackend::new();
        let store = Store::new(memory.clone());
        let mut corrupted = std::collections::BTreeSet::new();
        for (i, digests) in crate::store::put_numbered(&store, 30)
            .await
            .iter()
            .enumerate()
        {
            if i % 3 != 0 {
                let key = BlobKey::new(digests.sha512);
                assert!(memory.corrupt_for_test(&key, bytes::Bytes::from("rot")));
                corrupted.insert(key.to_string());
            }
        }
        let report = store
            .fsck_keeping(&FsckOptions::default(), Sample::with_limit(4))
            .await
            .expect("fsck");
        assert_eq!((report.checked, report.ok), (30, 10), "{report:?}");
        assert_eq!(report.corrupt.total(), 20);
        assert_eq!(report.corrupt.len(), 4);
        assert_eq!(report.corrupt.omitted(), 16);
        assert!(!report.is_clean());
        for c in &report.corrupt {
            assert!(corrupted.contains(&c.address), "{c:?}");
        }
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["corrupt"]["total"], 20);
        assert_eq!(json["corrupt"]["kept"].as_array().map(Vec::len), Some(4));
    }
}
