//! Where things live inside a filesystem store.
//!
//! ```text
//! <root>/tarvault-store.json          format marker
//! <root>/sha512/ab/cd/<128 hex>       blobs, sharded by the first two bytes of the digest
//! <root>/tmp/<pid>.<lease>.<n>.tmp    uploads in progress (same filesystem, so rename is atomic)
//! <root>/leases/<lease>               one per open store, locked while open (see `lease.rs`)
//! <root>/index/blobs.sqlite           sha1 / blake3 -> sha512 and each blob's record (SQLite, WAL)
//! <root>/index/aliases.log            the alias log of stores written before the index (imported)
//! <root>/index/cache.sqlite           size and last use of each blob, when the store is a cache tier
//! <root>/quarantine/<hex>.<secs>.<pid>.<n>
//!                                     blobs fsck found corrupt
//! ```

use std::path::{Path, PathBuf};

use crate::backend::BlobKey;

/// The format marker's name, in the root of every store.
const MARKER: &str = "tarvault-store.json";

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
        self.root.join(MARKER)
    }

    pub(crate) fn blobs(&self) -> PathBuf {
        self.root.join("sha512")
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn leases(&self) -> PathBuf {
        self.root.join("leases")
    }

    pub(crate) fn index(&self) -> PathBuf {
        self.root.join("index")
    }

    pub(crate) fn index_db(&self) -> PathBuf {
        self.index().join("blobs.sqlite")
    }

    pub(crate) fn cache_ledger(&self) -> PathBuf {
        self.index().join("cache.sqlite")
    }

    pub(crate) fn aliases(&self) -> PathBuf {
        self.index().join("aliases.log")
    }

    pub(crate) fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// Where a quarantine of `key` keeps its bytes: `quarantine/<hex>.<secs>.<pid>.<random>`. The
    /// time says when; the pid and the random part keep a second quarantine of the blob (put
    /// again, found corrupt again, within the same second) from replacing the first one's bytes.
    pub(crate) fn new_quarantine(&self, key: &BlobKey) -> PathBuf {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n: u64 = rand::random();
        let pid = std::process::id();
        self.quarantine()
            .join(format!("{}.{secs}.{pid}.{n:016x}", key.to_hex()))
    }

    /// `sha512/ab/cd/<hex>`.
    pub(crate) fn blob(&self, key: &BlobKey) -> PathBuf {
        let hex = key.to_hex();
        self.blobs().join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// A fresh tombstone of `key`: where a delete moves the blob (see [`TOMBSTONE`]). Each delete
    /// has its own (pid and a random number in the name): with one name per blob, a delete that
    /// had committed could unlink, late, the tombstone of a second delete of the blob put again
    /// meanwhile, and a second delete that then failed had nothing to put back.
    pub(crate) fn new_tombstone(&self, key: &BlobKey) -> PathBuf {
        let n: u64 = rand::random();
        let pid = std::process::id();
        self.tmp()
            .join(format!("{}.{pid}.{n:016x}{TOMBSTONE}", key.to_hex()))
    }

    /// A fresh temp path, unique across processes (pid, and the writer's lease where it has one)
    /// and within one (random suffix).
    pub(crate) fn new_temp(&self, lease: Option<&str>) -> PathBuf {
        let n: u64 = rand::random();
        let pid = std::process::id();
        self.tmp().join(match lease {
            Some(lease) => format!("{pid}.{lease}.{n:016x}.tmp"),
            None => format!("{pid}.{n:016x}.tmp"),
        })
    }
}

/// Whether `root` is somewhere a command that only reads may open a store: a store (its marker
/// or its blob directory is there) or an empty directory. Opening creates a store wherever it is
/// asked to, so without this a mistyped `--store` of `has` or `ls` became a new empty store that
/// answered "not found", and a directory of other files got a store's directories added to it.
pub(crate) fn check_existing(root: &Path) -> crate::Result<()> {
    let layout = Layout::new(root.to_path_buf());
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::Error::Config(format!(
                "no store at {}: nothing is there (a put creates a store)",
                root.display()
            )));
        }
        // Not a directory, or unreadable: opening says which.
        Err(_) => return Ok(()),
    };
    let mut entries = entries.peekable();
    if entries.peek().is_none() || layout.marker().exists() || layout.blobs().is_dir() {
        return Ok(());
    }
    Err(crate::Error::Config(format!(
        "{} is not a tarvault store (it has other files and no {}); a command that only reads \
         does not make one there",
        root.display(),
        MARKER
    )))
}

/// Where a delete moves a blob while it removes the blob's record
/// (`tmp/<hex>.<pid>.<random>.deleting`; releases before 2026-12-05 wrote `tmp/<hex>.deleting`).
pub(crate) const TOMBSTONE: &str = ".deleting";

/// The blob a tombstone name stands for.
pub(crate) fn tombstone_key(name: &str) -> Option<BlobKey> {
    let stem = name.strip_suffix(TOMBSTONE)?;
    BlobKey::from_hex(stem.split('.').next()?).ok()
}

/// Who wrote a temp file, by its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TempOwner<'a> {
    /// A store holding this lease (`<pid>.<lease>.<n>.tmp`).
    Lease(&'a str),
    /// A process with this pid, of a release before leases or on a filesystem without `flock`
    /// (`<pid>.<n>.tmp`).
    Pid(u32),
}

/// Who wrote a temp file, if its name is one of ours.
pub(crate) fn temp_owner(name: &str) -> Option<TempOwner<'_>> {
    let rest = name.strip_suffix(".tmp")?;
    let mut parts = rest.split('.');
    let pid: u32 = parts.next()?.parse().ok()?;
    match (parts.next()?, parts.next(), parts.next()) {
        (_, None, _) => Some(TempOwner::Pid(pid)),
        (lease, Some(_), None) if !lease.is_empty() => Some(TempOwner::Lease(lease)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_say_who_wrote_them() {
        let layout = Layout::new(PathBuf::from("/s"));
        let name = |p: PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let leased = name(layout.new_temp(Some("00ff"))).unwrap_or_default();
        assert_eq!(temp_owner(&leased), Some(TempOwner::Lease("00ff")));
        let bare = name(layout.new_temp(None)).unwrap_or_default();
        assert_eq!(temp_owner(&bare), Some(TempOwner::Pid(std::process::id())));
        assert_eq!(temp_owner("12.ab.cd.ef.tmp"), None);
        assert_eq!(temp_owner("x.ab.tmp"), None);
        assert_eq!(temp_owner("12.ab"), None);
    }

    #[test]
    fn each_delete_has_its_own_tombstone_and_old_names_still_parse() {
        let layout = Layout::new(PathBuf::from("/s"));
        let key = BlobKey::new([7; 64]);
        let (a, b) = (layout.new_tombstone(&key), layout.new_tombstone(&key));
        assert_ne!(a, b, "two deletes of one blob, two tombstones");
        for path in [a, b] {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            assert_eq!(tombstone_key(&name.unwrap_or_default()), Some(key));
        }
        let old = format!("{}.deleting", key.to_hex());
        assert_eq!(
            tombstone_key(&old),
            Some(key),
            "a release before this one's"
        );
        assert_eq!(tombstone_key("nothex.1.2.deleting"), None);
    }
}
