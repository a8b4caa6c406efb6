//! [`BlobInfo`]: what a store knows about a blob without reading it, and its JSON form.

use std::time::SystemTime;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::backend::BlobKey;
use crate::integrity::{Digests, Integrity};

/// What [`Store::stat`](crate::Store::stat) knows about a blob.
///
/// Serialized as `tarvault stat --json` and `ls --json` print it, so that a service answering
/// with it speaks the CLI's format: `integrity` (the sha512 SRI string), `shasum` and `blake3`
/// (hex, left out without a record), `size`, and `modified` (whole seconds since the Unix epoch,
/// left out when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The sha512 key.
    pub key: BlobKey,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored, if known.
    pub modified: Option<SystemTime>,
    /// sha512, sha1 and blake3, if recorded at commit (always, unless the alias index was lost).
    pub digests: Option<Digests>,
}

impl BlobInfo {
    /// npm's integrity string for the blob.
    pub fn integrity(&self) -> Integrity {
        Integrity::from(self.key.hash())
    }

    /// [`modified`](Self::modified) in whole seconds since the Unix epoch (the fraction
    /// dropped); `None` if unknown or before the epoch.
    pub fn modified_secs(&self) -> Option<u64> {
        self.modified
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    }
}

impl Serialize for BlobInfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let modified = self.modified_secs();
        let fields = 2 + 2 * usize::from(self.digests.is_some()) + usize::from(modified.is_some());
        let mut out = s.serialize_struct("BlobInfo", fields)?;
        out.serialize_field("integrity", &self.integrity())?;
        match &self.digests {
            Some(d) => {
                out.serialize_field("shasum", &d.shasum())?;
                out.serialize_field("blake3", &d.blake3_hex())?;
            }
            None => {
                out.skip_field("shasum")?;
                out.skip_field("blake3")?;
            }
        }
        out.serialize_field("size", &self.size)?;
        match modified {
            Some(m) => out.serialize_field("modified", &m)?,
            None => out.skip_field("modified")?,
        }
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::integrity::MultiHasher;

    #[test]
    fn serializes_as_the_cli_prints_it() {
        let mut h = MultiHasher::standard();
        h.update(b"hello");
        let digests = h.finalize().digests().expect("digests");
        let key = BlobKey::new(digests.sha512);
        let mut info = BlobInfo {
            key,
            size: 5,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_900)),
            digests: Some(digests),
        };
        let json = serde_json::to_string(&info).expect("json");
        assert_eq!(
            json,
            format!(
                r#"{{"integrity":"{}","shasum":"aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d","blake3":"{}","size":5,"modified":1700000000}}"#,
                digests.integrity(),
                digests.blake3_hex()
            )
        );
        info.digests = None;
        info.modified = None;
        let json = serde_json::to_string(&info).expect("json");
        assert_eq!(
            json,
            format!(r#"{{"integrity":"{}","size":5}}"#, digests.integrity())
        );
    }
}
