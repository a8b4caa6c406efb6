//! Where things live under the store's root directory.
//!
//! ```text
//! <root>/blobs/<sha512 hex[0..3]>/<sha512 hex>           the blobs
//! <root>/markers/sha1/<hex[0..3]>/<sha1 hex>              alias markers: a blob's record, named
//! <root>/markers/blake3/<hex[0..3]>/<blake3 hex>          by its sha1 or blake3
//! <root>/aliases/log/<time>-<random>                     alias log segments of earlier versions
//! <root>/quarantine/<sha512 hex>                          corrupt blobs moved aside by fsck
//! <root>/staging/<unix ms>-<random>                      large uploads before they are linked
//! ```
//!
//! Three hex digits give 4096 shard directories: enough to keep every directory far below Manta's
//! per-directory entry limit (1,000,000) for any registry, few enough that listing an almost empty
//! store is quick. Markers are sharded the same way (10,000 per directory at 40M blobs). They live
//! apart from `aliases/`, whose per-alias objects of an older layout `fsck` of earlier versions
//! deletes.

use crate::backend::BlobKey;
use crate::integrity::Algorithm;

/// Paths of one store.
#[derive(Debug, Clone)]
pub struct Layout {
    root: String,
}

impl Layout {
    /// A layout under `root` (absolute, no trailing slash).
    pub fn new(root: &str) -> Self {
        Layout {
            root: root.trim_end_matches('/').to_string(),
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The directory holding the shard directories of blobs.
    pub fn blobs_dir(&self) -> String {
        format!("{}/blobs", self.root)
    }

    /// The object path of a blob.
    pub fn blob_path(&self, key: &BlobKey) -> String {
        let hex = key.to_hex();
        format!("{}/blobs/{}/{hex}", self.root, &hex[..3])
    }

    /// Where [`quarantine`](crate::backend::Backend::quarantine) keeps a corrupt blob's bytes.
    pub fn quarantine_path(&self, key: &BlobKey) -> String {
        format!("{}/quarantine/{}", self.root, key.to_hex())
    }

    /// Where large uploads go before a SnapLink names them (see `staging`).
    pub fn staging_dir(&self) -> String {
        format!("{}/staging", self.root)
    }

    /// The directory holding the shard directories of `alg`'s markers.
    pub fn markers_dir(&self, alg: Algorithm) -> String {
        format!("{}/markers/{}", self.root, alg_name(alg))
    }

    /// The marker naming the blob whose `alg` digest is `hex` (lowercase hex digits).
    pub fn marker_path(&self, alg: Algorithm, hex: &str) -> String {
        let shard = hex.get(..3).unwrap_or("000");
        format!("{}/markers/{}/{shard}/{hex}", self.root, alg_name(alg))
    }

    /// The directory holding the alias log's segments (earlier versions).
    pub fn alias_log_dir(&self) -> String {
        format!("{}/aliases/log", self.root)
    }

    /// The directory of an older layout's per-alias objects (removed by `fsck`).
    pub fn legacy_alias_dir(&self, alg: Algorithm) -> String {
        format!("{}/aliases/{}", self.root, alg_name(alg))
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::Sha1 => "sha1",
        Algorithm::Blake3 => "blake3",
        _ => "sha512",
    }
}

/// The parent directory of a path.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The directories `mkdir -p dir` creates, outermost first: each ancestor below the account's
/// top directory (`/<user>/stor`, which always exists), and `dir` itself.
pub fn ancestors(dir: &str) -> Vec<String> {
    let parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    (3..=parts.len())
        .map(|depth| format!("/{}", parts[..depth].join("/")))
        .collect()
}
