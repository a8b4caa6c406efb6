//! [`BlobKey`]: the name a backend stores a blob under, its sha512 digest, and the forms it is
//! written in (hex in paths and object names, `sha512-<base64>` where it is shown).

use std::fmt;

use crate::integrity::{Algorithm, Hash};
use crate::{Error, Result};

/// The key a blob is stored under: its sha512 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey([u8; 64]);

impl BlobKey {
    /// The key for a sha512 digest.
    pub fn new(sha512: [u8; 64]) -> Self {
        BlobKey(sha512)
    }

    /// The key of a sha512 [`Hash`](struct@Hash); `None` for other algorithms.
    pub fn from_hash(hash: &Hash) -> Option<Self> {
        if hash.algorithm() != Algorithm::Sha512 {
            return None;
        }
        hash.digest().try_into().ok().map(BlobKey)
    }

    /// Parses 128 hex digits.
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        let mut out = [0u8; 64];
        hex::decode_to_slice(hex_key, &mut out).map_err(|e| {
            // A key is 128 characters: more is quoted cut (a caller's 100 KB is not the message).
            let shown = crate::error::clipped(hex_key, 130);
            Error::InvalidInput(format!("bad blob key {shown:?}: {e}"))
        })?;
        Ok(BlobKey(out))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Lower-case hex, as used in paths and object names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key as a `sha512-…` hash.
    pub fn hash(&self) -> Hash {
        Hash::new_unchecked(Algorithm::Sha512, &self.0)
    }
}

/// The address of the blob stored under a key (as [`Store::list`](crate::Store::list) yields
/// them), a `sha512-…` integrity to read, stat or delete it by.
impl From<BlobKey> for crate::integrity::Integrity {
    fn from(key: BlobKey) -> Self {
        Self::from(key.hash())
    }
}

/// Parses what [`Display`](fmt::Display) prints, `sha512-<base64>` (a key a service kept as
/// text; hex is [`BlobKey::from_hex`]). Another algorithm names no key: an error.
impl std::str::FromStr for BlobKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let hash: Hash = s.parse()?;
        BlobKey::from_hash(&hash).ok_or_else(|| {
            let shown = crate::error::clipped(s, 130);
            Error::InvalidInput(format!("bad blob key {shown:?}: not a sha512"))
        })
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobKey({}…)", &self.to_hex()[..16])
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hash())
    }
}
