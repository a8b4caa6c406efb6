//! Where things live inside a filesystem store.
//!
//! ```text
//! <root>/tarvault-store.json          format marker
//! <root>/sha512/ab/cd/<128 hex>       blobs, sharded by the first two bytes of the digest
//! <root>/tmp/<pid>.<random>.tmp       uploads in progress (same filesystem, so rename is atomic)
//! <root>/index/blobs.sqlite           sha1 / blake3 -> sha512 and each blob's record (SQLite, WAL)
//! <root>/index/aliases.log            the alias log of stores written before the index (imported)
//! <root>/quarantine/<hex>.<secs>      blobs fsck found corrupt
//! ```

use std::path::{Path, PathBuf};

use crate::backend::BlobKey;

/// Paths inside one store root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn marker(&self) -> PathBuf {
        self.root.join("tarvault-store.json")
    }

    pub(crate) fn blobs(&self) -> PathBuf {
        self.root.join("sha512")
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn index(&self) -> PathBuf {
        self.root.join("index")
    }

    pub(crate) fn index_db(&self) -> PathBuf {
        self.index().join("blobs.sqlite")
    }

    pub(crate) fn aliases(&self) -> PathBuf {
        self.index().join("aliases.log")
    }

    pub(crate) fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// `sha512/ab/cd/<hex>`.
    pub(crate) fn blob(&self, key: &BlobKey) -> PathBuf {
        let hex = key.to_hex();
        self.blobs().join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// The tombstone of `key`: where a delete moves the blob (see [`TOMBSTONE`]).
    pub(crate) fn tombstone(&self, key: &BlobKey) -> PathBuf {
        self.tmp().join(format!("{}{TOMBSTONE}", key.to_hex()))
    }

    /// A fresh temp path, unique across processes (pid) and within one (random suffix).
    pub(crate) fn new_temp(&self) -> PathBuf {
        let n: u64 = rand::random();
        self.tmp()
            .join(format!("{}.{n:016x}.tmp", std::process::id()))
    }
}

/// Where a delete moves a blob while it removes the blob's record (`tmp/<hex>.deleting`).
pub(crate) const TOMBSTONE: &str = ".deleting";

/// The blob a tombstone name stands for.
pub(crate) fn tombstone_key(name: &str) -> Option<BlobKey> {
    BlobKey::from_hex(name.strip_suffix(TOMBSTONE)?).ok()
}

/// The pid a temp file name was made by, if it is one of ours.
pub(crate) fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_suffix(".tmp")?;
    let (pid, _) = rest.split_once('.')?;
    pid.parse().ok()
}
