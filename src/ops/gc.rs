//! Garbage collection: delete the blobs a live set does not name.
//!
//! Deleting is the one irreversible thing tarvault does, so gc is careful by construction:
//! - a dry run unless asked to delete;
//! - a blob written within the grace period is never deleted, whatever the live set says (it may
//!   belong to a publish that has not reached the live set yet), and neither is a blob whose age
//!   the backend cannot tell. A put of bytes that were stored already counts as writing them
//!   (the filesystem and memory stores [freshen](crate::backend::Backend::freshen) the blob), and
//!   each blob's age is asked again just before it is deleted. On S3 and Manta an object's time
//!   is the server's, set by its first put: keep the grace period longer than a publish takes to
//!   reach the live set;
//! - an empty live set, or one line of it that does not parse, stops gc before anything is deleted
//!   (a truncated or wrong keep file must not empty the store).
//!
//! The live set is a file of lines, each either a JSON object with an `integrity` field (the
//! migration mapping, one `{name, version, file, integrity, shasum, size}` per line) or a bare
//! address (`sha512-…`, or any address `tarvault get` accepts).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde::Serialize;

use crate::backend::BlobKey;
use crate::{Algorithm, Error, ErrorKind, Integrity, Result, Store};

/// Options for [`gc`].
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Blobs younger than this are kept.
    pub grace: Duration,
    /// Delete (otherwise only report what would be deleted).
    pub delete: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(24 * 3600),
            delete: false,
        }
    }
}

/// What [`gc`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Whether blobs were deleted (false: a dry run).
    pub deleted_for_real: bool,
    /// Blobs listed in the store.
    pub listed: u64,
    /// Addresses in the live set.
    pub live_addresses: u64,
    /// Live addresses that name no stored blob.
    pub live_missing: u64,
    /// Blobs kept because they are live.
    pub kept_live: u64,
    /// Unlisted blobs kept because they are within the grace period.
    pub kept_recent: u64,
    /// Unlisted blobs kept because their age is unknown.
    pub kept_unknown_age: u64,
    /// Garbage: blobs deleted (or that would be, in a dry run).
    pub garbage: u64,
    /// Their bytes.
    pub garbage_bytes: u64,
    /// Deletions that failed.
    pub failed: Vec<String>,
}

/// Reads a keep file (see the [module documentation](self)).
pub fn read_keep_file(path: &Path) -> Result<Vec<Integrity>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| Error::InvalidInput(format!("{}:{}: {why}", path.display(), n + 1));
        let address = if line.starts_with('{') {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
            v.get("integrity")
                .and_then(|i| i.as_str())
                .ok_or_else(|| bad("no \"integrity\" field".into()))?
                .to_string()
        } else {
            line.to_string()
        };
        out.push(Integrity::parse_address(&address).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// Deletes (or with `delete: false`, lists) every blob of `store` not named by `keep` and older
/// than the grace period. `on_garbage` sees each garbage blob and its size.
pub async fn gc(
    store: &Store,
    keep: &[Integrity],
    options: &GcOptions,
    mut on_garbage: impl FnMut(&BlobKey, u64),
) -> Result<GcReport> {
    if keep.is_empty() {
        return Err(Error::InvalidInput(
            "the live set is empty: refusing to collect every blob".into(),
        ));
    }
    let mut report = GcReport {
        deleted_for_real: options.delete,
        live_addresses: keep.len() as u64,
        ..GcReport::default()
    };
    let mut live: HashSet<BlobKey> = HashSet::with_capacity(keep.len());
    for address in keep {
        let direct = address
            .all_of(Algorithm::Sha512)
            .find_map(BlobKey::from_hash);
        match direct {
            Some(k) => {
                live.insert(k);
            }
            None => match store.stat(address).await {
                Ok(info) => {
                    live.insert(info.key);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => report.live_missing += 1,
                Err(e) => return Err(e),
            },
        }
    }
    let cutoff = SystemTime::now()
        .checked_sub(options.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // One pass that brings each blob's size and age with its key (no `head` per blob on the fs).
    let mut stats = store.backend().clone().list_stat();
    let mut present_live = 0u64;
    while let Some(stat) = stats.next().await {
        let stat = stat?;
        let key = stat.key;
        report.listed += 1;
        if live.contains(&key) {
            present_live += 1;
            continue;
        }
        match stat.modified {
            None => {
                report.kept_unknown_age += 1;
                continue;
            }
            Some(t) if t > cutoff => {
                report.kept_recent += 1;
                continue;
            }
            Some(_) => {}
        }
        if options.delete && put_again_since(store, &key, cutoff).await? {
            report.kept_recent += 1;
            continue;
        }
        report.garbage += 1;
        report.garbage_bytes += stat.size;
        on_garbage(&key, stat.size);
        if options.delete {
            if let Err(e) = store.backend().delete(&key).await {
                tracing::warn!(blob = %key, error = %e, "gc delete failed");
                report.failed.push(format!("{key}: {e}"));
            }
        }
    }
    report.kept_live = present_live;
    report.live_missing += live.len() as u64 - present_live.min(live.len() as u64);
    Ok(report)
}

/// Whether a blob listed as old has been put again since the listing (a put of bytes already
/// stored freshens the blob, see [`crate::backend::Backend::freshen`]): asked again just before
/// deleting, because a listing of a large store takes a while and publishes go on meanwhile.
async fn put_again_since(store: &Store, key: &BlobKey, cutoff: SystemTime) -> Result<bool> {
    Ok(store
        .backend()
        .head(key)
        .await?
        .is_some_and(|stat| stat.modified.is_none_or(|t| t > cutoff)))
}
