//! The npm tarball URLs a server answers, from the mapping `tarvault migrate couch` writes:
//! `(name, file)` → the blob's address. A mapping file is read into an SQLite database beside it
//! ([`crate::mapping::db`]); entries given in memory ([`super::Server::with_mapping`]) are held in a
//! map, with each entity tag computed once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;

use crate::backend::BlobKey;
use crate::integrity::Integrity;
use crate::mapping::db::MapDb;
use crate::mapping::sha512_of;
use crate::mapping::MapEntry;
use crate::{Error, Result};

/// One tarball URL's blob.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    pub(crate) key: BlobKey,
    /// What the store is asked for (the mapping's sha512 integrity).
    pub(crate) address: Integrity,
    pub(crate) etag: HeaderValue,
}

impl Named {
    fn of(key: BlobKey) -> Named {
        Named {
            key,
            address: Integrity::from(key.hash()),
            etag: super::http::etag(&key),
        }
    }
}

/// Where a server finds its tarball URLs.
#[derive(Debug)]
pub(crate) enum NameIndex {
    /// Entries held in memory.
    Memory(NameMap),
    /// A mapping file's database.
    Db(Arc<MapDb>),
}

impl Default for NameIndex {
    fn default() -> Self {
        NameIndex::Memory(NameMap::default())
    }
}

impl NameIndex {
    /// The blob of `/<name>/-/<file>`. A database that does not know the URL first reads what
    /// was appended to its mapping, at most once a second, waiting for that reading up to
    /// [`MISS_WAIT`].
    pub(crate) async fn get(&self, name: &str, file: &str) -> Result<Option<Named>> {
        let db = match self {
            NameIndex::Memory(m) => return Ok(m.get(name, file).cloned()),
            NameIndex::Db(db) => db,
        };
        if let Some(key) = db.url(name, file)? {
            return Ok(Some(Named::of(key)));
        }
        if !db.due() {
            return Ok(None);
        }
        let reader = db.clone();
        let reading = tokio::task::spawn_blocking(move || catch_up(&reader));
        match tokio::time::timeout(MISS_WAIT, reading).await {
            Ok(joined) => joined.map_err(Error::Task)?,
            // Still reading (many lines, or another process holds the database's write lock to
            // read them): it goes on, and what it reads is found as it commits each batch.
            Err(_) => tracing::debug!(
                "the mapping's appended lines are still being read; answering from what is read"
            ),
        }
        Ok(db.url(name, file)?.map(Named::of))
    }

    /// How many tarball URLs are mapped.
    pub(crate) fn len(&self) -> usize {
        match self {
            NameIndex::Memory(m) => m.len(),
            NameIndex::Db(db) => db.len(),
        }
    }
}

/// How long a miss waits for the lines appended to the mapping to be read in before it is answered
/// from what is read: long enough for the few lines a migration appends in a second (a few ms),
/// with room for a loaded machine, so that a URL migrated a moment ago is found at once; bounded,
/// so that a miss meeting a long reading (a mapping of millions of lines appended, or read again
/// after it was cut back, or another process holding the database's write lock while it reads
/// them, for up to the busy timeout of two minutes) does not hold its client for it. At most one
/// miss a second waits at all (the others find the reading due or under way).
const MISS_WAIT: Duration = Duration::from_secs(1);

/// Reads in the lines appended to `db`'s mapping, unless this process is reading them already,
/// and says what went wrong: on a blocking thread that may outlive the miss that started it.
fn catch_up(db: &MapDb) {
    match db.catch_up_unless_reading() {
        // Another miss's reading is under way: this one is answered from what is read.
        Ok(false) => {}
        // A line that is not a mapping entry, say: the URLs read so far stay served, and the
        // next miss a second later tries again (and logs again).
        Err(e) => {
            tracing::error!(error = %e.report(), "cannot read the lines appended to the mapping")
        }
        // A line appended that names a URL's second blob is recorded, not an error (the
        // migration writing the mapping must not stop on it), and the URL keeps its first
        // blob; a restart refuses the mapping, so it is said here, on every catch-up.
        Ok(true) => {
            if let Ok(Some(conflict)) = db.conflict() {
                tracing::error!(conflict = %conflict, "the mapping names two blobs for one URL: it is served its first, and a restart will refuse the mapping");
            }
        }
    }
}

/// Package name → file name → blob. Two levels so that a lookup borrows the request's strings.
#[derive(Debug, Default)]
pub(crate) struct NameMap {
    by_name: HashMap<String, HashMap<String, Named>>,
    len: usize,
}

impl NameMap {
    /// Builds the index. A URL mapped to two different blobs is refused: which one a client gets
    /// must not depend on line order.
    pub(crate) fn build(entries: impl IntoIterator<Item = MapEntry>) -> Result<NameMap> {
        let mut index = NameMap::default();
        for entry in entries {
            let key = sha512_of(&entry)?;
            let files = index.by_name.entry(entry.name.clone()).or_default();
            if let Some(old) = files.get(&entry.file) {
                if old.key != key {
                    return Err(Error::Config(format!(
                        "mapping names two different blobs for {}/-/{}",
                        entry.name, entry.file
                    )));
                }
                continue;
            }
            files.insert(entry.file, Named::of(key));
            index.len += 1;
        }
        Ok(index)
    }

    pub(crate) fn get(&self, name: &str, file: &str) -> Option<&Named> {
        self.by_name.get(name)?.get(file)
    }

    /// How many tarball URLs are mapped.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
