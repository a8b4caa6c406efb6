//! Where things live under the store's root directory.
//!
//! ```text
//! <root>/blobs/<sha512 hex[0..3]>/<sha512 hex>           the blobs
//! <root>/aliases/sha1/<sha1 hex[0..3]>/<sha1 hex>        zero-byte objects, m-tarvault-sha512 = key
//! <root>/aliases/blake3/<blake3 hex[0..3]>/<blake3 hex>
//! <root>/quarantine/<sha512 hex>                          corrupt blobs moved aside by fsck
//! ```
//!
//! Three hex digits give 4096 shard directories: enough to keep every directory far below Manta's
//! per-directory entry limit (1,000,000) for any registry, few enough that listing an almost empty
//! store is quick. Alias objects carry no bytes, so Manta stores them as metadata only.

use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Digests};

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

    /// The directory holding the alias shards for `alg` (sha1 or blake3).
    pub fn alias_dir(&self, alg: Algorithm) -> String {
        format!("{}/aliases/{}", self.root, alg_name(alg))
    }

    /// The alias object for a digest.
    pub fn alias_path(&self, alg: Algorithm, digest: &[u8]) -> String {
        let hex = hex::encode(digest);
        format!("{}/{}/{hex}", self.alias_dir(alg), &hex[..3.min(hex.len())])
    }

    /// A blob's two alias objects: by sha1, then by blake3.
    pub fn alias_paths(&self, d: &Digests) -> [String; 2] {
        [
            self.alias_path(Algorithm::Sha1, &d.sha1),
            self.alias_path(Algorithm::Blake3, &d.blake3),
        ]
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
