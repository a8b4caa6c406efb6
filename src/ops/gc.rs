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
//! address (`sha512-…`, or any address `tarvault get` accepts). It is read a line at a time
//! ([`keep_file`]) into a set that moves to a temp database past a million keys
//! (`backend/key_table.rs`): a live set of tens of millions of blobs is not held in memory.
//! Read with [`keep_lines`], each address keeps its line, so that an error about it (a sha1
//! whose index entry names a blob without that sha1) says which line of the file it is.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde::Serialize;

use crate::backend::key_table::{self, KeyTable};
use crate::backend::{AgedDelete, BlobKey, Sample};
use crate::{Algorithm, Error, Integrity, Result, Store};

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
    /// Live addresses that name no stored blob (an address of several sha512s counts once for
    /// each of them that is not stored).
    pub live_missing: u64,
    /// Blobs kept because they are live.
    pub kept_live: u64,
    /// Unlisted blobs kept because they are within the grace period.
    pub kept_recent: u64,
    /// Unlisted blobs kept because their age is unknown.
    pub kept_unknown_age: u64,
    /// Unlisted blobs already gone when gc came to delete them: deleted by another process (an
    /// `rm`, another gc) since the listing. Neither kept nor deleted by this gc. Where a backend
    /// cannot tell (see [`AgedDelete`]), such a blob counts in `garbage`.
    pub gone: u64,
    /// Unlisted blobs kept because a live sha1 or blake3 address names them although the index
    /// has no entry for them (found in their record or their bytes; `fsck` indexes them). Their
    /// addresses count in `live_missing` too.
    pub kept_unindexed: u64,
    /// Garbage: blobs deleted (or that would be, in a dry run).
    pub garbage: u64,
    /// Their bytes.
    pub garbage_bytes: u64,
    /// Deletions that failed (`address: error`): all counted, the first kept (each one is
    /// logged as it happens).
    pub failed: Sample<String>,
}

/// An address of a live set, as [`gc`] takes it: an [`Integrity`], or a [`KeepLine`], which an
/// error about its address names by its file and line.
pub trait LiveAddress {
    /// The address.
    fn address(&self) -> &Integrity;
    /// Where it was read (`keep.txt:12`), if anywhere in particular.
    fn origin(&self) -> Option<String> {
        None
    }
}

impl LiveAddress for Integrity {
    fn address(&self) -> &Integrity {
        self
    }
}

/// A keep file line's address ([`keep_lines`]), with where it was read.
#[derive(Debug, Clone)]
pub struct KeepLine {
    /// The keep file.
    pub path: Arc<Path>,
    /// Its line, counted from 1.
    pub line: usize,
    /// The line's address.
    pub address: Integrity,
}

impl LiveAddress for KeepLine {
    fn address(&self) -> &Integrity {
        &self.address
    }
    fn origin(&self) -> Option<String> {
        Some(format!("{}:{}", self.path.display(), self.line))
    }
}

/// The addresses of a keep file, read a line at a time (see the [module documentation](self)). A
/// line that does not parse is an error naming it.
pub fn keep_file(path: &Path) -> Result<impl Iterator<Item = Result<Integrity>>> {
    Ok(keep_lines(path)?.map(|line| line.map(|l| l.address)))
}

/// [`keep_file`]'s addresses, each with its line: [`gc`] of them names the line of an address
/// it cannot look up.
pub fn keep_lines(path: &Path) -> Result<impl Iterator<Item = Result<KeepLine>>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let path: Arc<Path> = Arc::from(path);
    let lines = std::io::BufReader::new(file).lines().enumerate();
    Ok(lines.filter_map(move |(n, line)| {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(Error::io("read", &*path, e))),
        };
        // A file saved by an editor that marks UTF-8 (a byte-order mark) is the same file.
        let text = match n {
            0 => line.strip_prefix('\u{feff}').unwrap_or(&line),
            _ => &line,
        };
        let address = keep_line(&path, n + 1, text.trim()).transpose()?;
        Some(address.map(|address| KeepLine {
            path: path.clone(),
            line: n + 1,
            address,
        }))
    }))
}

/// One keep file line's address (`None` for a blank line or a comment).
fn keep_line(path: &Path, n: usize, line: &str) -> Result<Option<Integrity>> {
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let bad = |why: String| Error::InvalidInput(format!("{}:{n}: {why}", path.display()));
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
    Integrity::parse_address(&address)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// Deletes (or with `delete: false`, lists) every blob of `store` not named by `keep` and older
/// than the grace period. `on_garbage` sees each garbage blob and its size. Every address of
/// `keep` is read before anything is deleted: an error in it (a line of [`keep_file`] that does
/// not parse), or one looking it up (a sha1 whose index entry is wrong: an error of the kind the
/// lookup met, naming the address and, from [`keep_lines`], its line), stops gc first.
pub async fn gc(
    store: &Store,
    keep: impl IntoIterator<Item = Result<impl LiveAddress>>,
    options: &GcOptions,
    on_garbage: impl FnMut(&BlobKey, u64),
) -> Result<GcReport> {
    collect(store, keep, options, key_table::IN_MEMORY, on_garbage).await
}

/// [`gc`], with the live set held in memory up to `in_memory` keys.
async fn collect(
    store: &Store,
    keep: impl IntoIterator<Item = Result<impl LiveAddress>>,
    options: &GcOptions,
    in_memory: usize,
    mut on_garbage: impl FnMut(&BlobKey, u64),
) -> Result<GcReport> {
    let mut report = GcReport {
        deleted_for_real: options.delete,
        ..GcReport::default()
    };
    let mut live = KeyTable::new(in_memory);
    // The sha1 and blake3 digests of live addresses the index did not know (see `named_by`).
    let mut unresolved = KeyTable::new(in_memory);
    for entry in keep {
        let entry = entry?;
        let address = entry.address();
        report.live_addresses += 1;
        // Every sha512 of the address: a read of it serves whichever is stored, so each may be
        // the live blob (noting only the first would delete the blob a later one names).
        let mut direct = address
            .all_of(Algorithm::Sha512)
            .filter_map(BlobKey::from_hash)
            .peekable();
        match direct.peek() {
            Some(_) => {
                for k in direct {
                    live.note(k, 1)?;
                }
            }
            // By sha1 or blake3: the index entry, checked against a trusted record where there
            // is one; not the blob's bytes (a live set may name every blob of a remote store).
            None => match store
                .live_key(address)
                .await
                .map_err(|e| lookup_failed(e, &entry))?
            {
                Some(key) => live.note(key, 1)?,
                None => {
                    report.live_missing += 1;
                    for alg in [Algorithm::Sha1, Algorithm::Blake3] {
                        for hash in address.all_of(alg) {
                            unresolved.note(key_table::alias_key(alg, hash.digest()), 1)?;
                        }
                    }
                }
            },
        }
    }
    live.finish()?;
    unresolved.finish()?;
    let unresolved = (unresolved.len()? > 0).then_some(unresolved);
    if report.live_addresses == 0 {
        return Err(Error::InvalidInput(
            "the live set is empty: refusing to collect every blob".into(),
        ));
    }
    let cutoff = SystemTime::now()
        .checked_sub(options.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // One pass that brings each blob's size and age with its key (no `head` per blob on the fs
    // or an object store: their listings carry both).
    let mut stats = store.backend().clone().list_meta();
    let mut present_live = 0u64;
    while let Some(stat) = stats.next().await {
        let stat = stat?;
        let key = stat.key;
        report.listed += 1;
        if live.contains(&key)? {
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
        if let Some(unresolved) = &unresolved {
            match named_by(store, &key, unresolved).await {
                Ok(false) => {}
                Ok(true) => {
                    report.kept_unindexed += 1;
                    continue;
                }
                // Kept: whether it is live cannot be told.
                Err(e) => {
                    tracing::warn!(blob = %key, error = %e.report(), "gc: cannot tell whether a live address names this blob; kept");
                    report.failed.push(format!("{key}: kept, not checked against the live sha1/blake3 addresses the index lacks: {}", e.report()));
                    continue;
                }
            }
        }
        if options.delete {
            // Asked again as it is deleted: a listing of a large store takes a while, and
            // publishes go on meanwhile (a put of bytes already stored marks the blob, see
            // `Backend::freshen`).
            match store
                .backend()
                .delete_unless_written_since(&key, cutoff)
                .await
            {
                Ok(AgedDelete::Deleted) => {}
                Ok(AgedDelete::Kept) => {
                    report.kept_recent += 1;
                    continue;
                }
                Ok(AgedDelete::Gone) => {
                    report.gone += 1;
                    continue;
                }
                // Still stored: counted in `failed` only, not reported deleted.
                Err(e) => {
                    tracing::warn!(blob = %key, error = %e.report(), "gc delete failed");
                    report.failed.push(format!("{key}: {}", e.report()));
                    continue;
                }
            }
        }
        report.garbage += 1;
        report.garbage_bytes += stat.size;
        on_garbage(&key, stat.size);
    }
    report.kept_live = present_live;
    let distinct = live.len()?;
    report.live_missing += distinct - present_live.min(distinct);
    Ok(report)
}

/// `e`, met looking up the live address `live`, saying which it is (and its keep file line), that
/// gc stopped before deleting anything and, for a wrong index entry or an index that cannot be
/// read, that `tarvault fsck` repairs the index. Its kind is unchanged: where the error has no
/// message to add to (an I/O error, whose message is its path), the live address is logged.
fn lookup_failed(mut e: Error, live: &impl LiveAddress) -> Error {
    let at = match live.origin() {
        Some(origin) => format!("{origin} ({})", live.address()),
        None => live.address().to_string(),
    };
    let note = |message: &str, fsck: bool| {
        let fsck = if fsck && !message.contains("tarvault fsck") {
            "; tarvault fsck repairs the index"
        } else {
            ""
        };
        format!("{message}; live address {at}: gc stopped before deleting anything{fsck}")
    };
    match &mut e {
        Error::Corrupt { actual: m, .. } | Error::Index { message: m, .. } => *m = note(m, true),
        Error::Backend { message, .. } => *message = note(message, false),
        _ => tracing::warn!(live = %at, error = %e.report(), "gc: cannot look up a live address"),
    }
    e
}

/// Whether a live sha1 or blake3 address that the index did not resolve (`unresolved`) names the
/// blob `key`. A blob can be stored with no entry (a crash between its link and its record, blob
/// files restored without the index: `fsck` indexes them), and a live set may name it only by its
/// sha1 (npm's `shasum`, all the mapping has for old tarballs): deleting it as garbage would lose
/// a live tarball. Its trusted record answers if it has one; otherwise its bytes are read (only
/// while some live alias is unresolved, and only for blobs about to be deleted).
async fn named_by(store: &Store, key: &BlobKey, unresolved: &KeyTable) -> Result<bool> {
    let backend = store.backend();
    let recorded = match backend.recorded_digests_trusted() {
        Some(_) => backend.head(key).await?.and_then(|st| st.digests),
        None => None,
    };
    let named = |alg, digest: &[u8]| unresolved.contains(&key_table::alias_key(alg, digest));
    if let Some(d) = recorded.filter(|d| d.sha512 == *key.as_bytes()) {
        return Ok(named(Algorithm::Sha1, &d.sha1)? || named(Algorithm::Blake3, &d.blake3)?);
    }
    // The read checks the sha512 itself: only the two aliases are computed here.
    let mut stream = store.get_uncached(key).await?;
    let aliases = [Algorithm::Sha1, Algorithm::Blake3];
    let mut hasher = crate::integrity::MultiHasher::new(&aliases);
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    let got = hasher.finalize();
    for alg in aliases {
        if got.get(alg).map(|h| named(alg, h.digest())).transpose()? == Some(true) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::Digests;

    /// A keep file that starts with a UTF-8 byte-order mark (as some editors save) is read as
    /// the same file without it: its first line, a comment or a mapping's JSON line, is what it
    /// is, not a line that does not parse (an address alone was read already: npm's whitespace,
    /// which addresses are split on, includes the mark).
    #[test]
    fn a_keep_file_may_start_with_a_byte_order_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sha1 = "5b8a3a7765dfe001261dde915589e782f8c94d1e";
        let want = Integrity::parse_address(sha1).expect("sha1").to_string();
        for first in [
            "# live tarballs".to_string(),
            format!(r#"{{"integrity":"{sha1}"}}"#),
        ] {
            let path = dir.path().join("keep");
            std::fs::write(&path, format!("\u{feff}{first}\n{sha1}\n")).expect("write");
            let lines: Vec<_> = keep_file(&path).expect("open").collect();
            assert!(lines.iter().all(Result::is_ok), "{first}: {lines:?}");
            let addresses: Vec<String> = lines.iter().flatten().map(|i| i.to_string()).collect();
            assert!(
                !addresses.is_empty() && addresses.iter().all(|a| *a == want),
                "{first}"
            );
        }
    }

    /// A live sha1 whose index entry names a blob that its trusted record says has another sha1
    /// stops gc before anything is deleted, with an error of the lookup's kind (`Corrupt`) that
    /// names the keep file line it was read from and `tarvault fsck` (which repairs the entry).
    #[tokio::test]
    async fn a_wrong_live_alias_is_named_by_its_keep_line() {
        use crate::backend::{Backend, PutHint};
        let memory = MemoryBackend::new();
        let store = Store::new(memory.clone());
        let options = crate::PutOptions::default();
        let b = store.put_bytes(b"blob B".to_vec(), &options).await;
        let b = b.expect("put").digests;
        let garbage = store.put_bytes(b"blob C".to_vec(), &options).await;
        let garbage = garbage.expect("put").digests.integrity();
        let mut h = crate::integrity::MultiHasher::new(&[Algorithm::Sha1]);
        h.update(b"blob A");
        let sha1_a = h.finalize().get(Algorithm::Sha1).cloned().expect("sha1");
        // One wrong commit names B for A's sha1; B's record is then put right, the entry left.
        let wrong = Digests::from_parts(&b.sha512, sha1_a.digest(), &b.blake3, b.size);
        for digests in [wrong.expect("digests"), b] {
            let w = memory.begin_put(&PutHint::default()).await.expect("begin");
            w.commit(&digests).await.expect("commit");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keep");
        let text = format!("# live\n{}\n{sha1_a}\n", b.integrity());
        std::fs::write(&path, text).expect("write");
        let options = GcOptions {
            grace: Duration::ZERO,
            delete: true,
        };
        let keep = keep_lines(&path).expect("open");
        let err = gc(&store, keep, &options, |_, _| {})
            .await
            .expect_err("wrong");
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
        let message = err.report().to_string();
        let line = format!("{}:3 ({sha1_a})", path.display());
        assert!(message.contains(&line), "{message}");
        assert!(message.contains("tarvault fsck"), "{message}");
        assert!(
            store.contains(&garbage).await.expect("contains"),
            "deleted nothing"
        );
    }

    /// A keep line of several sha512s names every blob a read of it may serve (`get` tries each
    /// in turn): a blob named by the second is live even when the first is not stored.
    #[tokio::test]
    async fn every_sha512_of_a_keep_line_is_live() {
        let store = Store::new(MemoryBackend::new());
        let stored = crate::store::put_numbered(&store, 1).await[0].integrity();
        let mut h = crate::integrity::MultiHasher::new(&[Algorithm::Sha512]);
        h.update(b"never stored");
        let absent = h.finalize().integrity().expect("integrity");
        let line = Integrity::parse_address(&format!("{absent} {stored}")).expect("address");
        assert!(
            store.get(&line).await.is_ok(),
            "a read of the line serves the blob"
        );
        let options = GcOptions {
            grace: Duration::ZERO,
            delete: true,
        };
        let report = gc(&store, [Ok(line)], &options, |_, _| {})
            .await
            .expect("gc");
        assert_eq!(report.garbage, 0);
        assert!(store.contains(&stored).await.expect("contains"));
    }

    /// A live set larger than what is held in memory (it moves to disk) keeps exactly its blobs.
    #[tokio::test]
    async fn a_live_set_on_disk_keeps_exactly_its_blobs() {
        let store = Store::new(MemoryBackend::new());
        let addresses: Vec<Integrity> = crate::store::put_numbered(&store, 40)
            .await
            .iter()
            .map(Digests::integrity)
            .collect();
        let missing = (0..5).map(|i| {
            let mut h = crate::integrity::MultiHasher::new(&[Algorithm::Sha512]);
            h.update(format!("absent {i}").as_bytes());
            h.finalize().integrity().expect("integrity")
        });
        // Every other blob is live, some twice, with five addresses of blobs never stored.
        let keep: Vec<Integrity> = addresses
            .iter()
            .step_by(2)
            .chain(addresses.iter().step_by(4))
            .cloned()
            .chain(missing)
            .collect();
        let options = GcOptions {
            grace: Duration::ZERO,
            delete: true,
        };
        let mut garbage = Vec::new();
        let report = collect(&store, keep.into_iter().map(Ok), &options, 3, |k, _| {
            garbage.push(*k)
        })
        .await
        .expect("gc");
        assert_eq!(report.listed, 40);
        assert_eq!(report.kept_live, 20);
        assert_eq!(report.garbage, 20);
        assert_eq!(report.live_missing, 5);
        assert_eq!(report.live_addresses, 35);
        for (i, a) in addresses.iter().enumerate() {
            assert_eq!(
                store.contains(a).await.expect("contains"),
                i % 2 == 0,
                "blob {i}"
            );
        }
        // An error in the live set stops gc before anything is deleted.
        let bad = vec![
            Ok(addresses[0].clone()),
            Err(Error::InvalidInput("line 2".into())),
        ];
        assert!(collect(&store, bad, &options, 3, |_, _| {}).await.is_err());
        assert!(store.contains(&addresses[2]).await.expect("contains"));
    }
}
