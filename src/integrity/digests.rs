//! The digests tarvault records for every stored blob.

use serde::{Deserialize, Serialize};

use super::{Algorithm, Hash, Integrity};
use crate::Result;

/// What a registry needs to know about a blob: npm's `integrity` (sha512), npm's legacy `shasum`
/// (sha1), tarvault's fast secondary digest (blake3) and the size.
///
/// `Debug` shows the digests as they are written elsewhere (the sha512 as npm's integrity, the
/// sha1 and blake3 as hex), not as arrays of byte values, so that a logged `BlobInfo` or
/// `PutOutcome` can be read and searched for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digests {
    /// SHA-512, the primary address.
    pub sha512: [u8; 64],
    /// SHA-1, npm's `shasum`.
    pub sha1: [u8; 20],
    /// BLAKE3.
    pub blake3: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

impl Digests {
    /// The algorithms every put computes.
    pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::Sha512, Algorithm::Sha1, Algorithm::Blake3];

    /// Builds digests from raw parts, checking lengths.
    pub fn from_parts(sha512: &[u8], sha1: &[u8], blake3: &[u8], size: u64) -> Result<Digests> {
        let bad = |a: Algorithm, len: usize| {
            crate::Error::InvalidInput(format!("{a} digest has {len} bytes"))
        };
        Ok(Digests {
            sha512: sha512
                .try_into()
                .map_err(|_| bad(Algorithm::Sha512, sha512.len()))?,
            sha1: sha1
                .try_into()
                .map_err(|_| bad(Algorithm::Sha1, sha1.len()))?,
            blake3: blake3
                .try_into()
                .map_err(|_| bad(Algorithm::Blake3, blake3.len()))?,
            size,
        })
    }

    /// `sha512-<base64>`, byte-identical to npm's `dist.integrity`.
    pub fn integrity(&self) -> Integrity {
        Integrity::from(self.hash(Algorithm::Sha512))
    }

    /// npm's `shasum`: sha1 as lower-case hex.
    pub fn shasum(&self) -> String {
        hex::encode(self.sha1)
    }

    /// blake3 as lower-case hex.
    pub fn blake3_hex(&self) -> String {
        hex::encode(self.blake3)
    }

    /// sha512 as lower-case hex (the storage key).
    pub fn sha512_hex(&self) -> String {
        hex::encode(self.sha512)
    }

    /// All three digests as one multi-hash integrity string (sha512, sha1, blake3).
    pub fn full_integrity(&self) -> Integrity {
        let mut i = self.integrity();
        i.push(self.hash(Algorithm::Sha1));
        i.push(self.hash(Algorithm::Blake3));
        i
    }

    /// The digest for one of the three algorithms as a [`Hash`](struct@Hash). Any other
    /// algorithm (none is recorded) gives the sha512, the blob's address.
    pub fn hash(&self, algorithm: Algorithm) -> Hash {
        let bytes: &[u8] = match algorithm {
            Algorithm::Sha1 => &self.sha1,
            Algorithm::Blake3 => &self.blake3,
            _ => &self.sha512,
        };
        let algorithm = match algorithm {
            Algorithm::Sha1 | Algorithm::Blake3 => algorithm,
            _ => Algorithm::Sha512,
        };
        Hash::new_unchecked(algorithm, bytes)
    }
}

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digests")
            .field("sha512", &format_args!("{}", self.integrity()))
            .field("sha1", &format_args!("{}", self.shasum()))
            .field("blake3", &format_args!("{}", self.blake3_hex()))
            .field("size", &self.size)
            .finish()
    }
}

/// The JSON shape of [`Digests`], as the CLI and mapping files print it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DigestsJson {
    /// `sha512-<base64>`.
    pub integrity: String,
    /// sha1 hex.
    pub shasum: String,
    /// blake3 hex.
    pub blake3: String,
    /// Bytes.
    pub size: u64,
}

impl From<&Digests> for DigestsJson {
    fn from(d: &Digests) -> Self {
        DigestsJson {
            integrity: d.integrity().to_string(),
            shasum: d.shasum(),
            blake3: d.blake3_hex(),
            size: d.size,
        }
    }
}
