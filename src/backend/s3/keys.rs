//! Where things live in the bucket, and how a blob's digests ride along as object metadata.
//!
//! ```text
//! <prefix>/blobs/Ab/<sha512 base64url>  a blob (Ab: the first two characters of its name)
//! <prefix>/markers/sha1/ab/<sha1 hex>   an alias marker: the blob's record, named by its sha1
//! <prefix>/markers/blake3/ab/<hex>      … and by its blake3 (ab: the first two hex digits)
//! <prefix>/alias/log/<time>-<random>    a segment of the alias log of earlier versions
//! <prefix>/quarantine/<sha512 base64url> a blob fsck found corrupt, kept for inspection
//! <prefix>/staging/<unix ms>-<random>    a large put's verified bytes, until copied to their key
//! ```
//!
//! S3 scales its request rate per key prefix and splits partitions on key ranges. Everything after
//! `blobs/` starts with digest bytes, which are uniformly distributed, so the server can split the
//! keyspace evenly (`blobs/00`…`blobs/ff`) as load grows; a time- or name-ordered layout would
//! send every new write to the same partition.
//!
//! Blob names are the sha512 in unpadded base64url (86 characters, the same digest npm's integrity
//! string carries), not hex (128): some servers derive file names from keys (s3s-fs names its
//! metadata file after the base64 of the whole key, and fails with `ENAMETOOLONG` past ~155
//! bytes), so short keys keep a store working there under a reasonable prefix.

use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes};

use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Digests};

/// Metadata keys (`x-amz-meta-…`) holding the digests recorded at commit.
const META_SHA1: &str = "tarvault-sha1";
const META_BLAKE3: &str = "tarvault-blake3";
const META_SIZE: &str = "tarvault-size";

/// The key layout under one store prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The prefix, without leading or trailing `/` (may be empty), as the keys start with it.
    prefix: Path,
}

impl Keys {
    /// The layout under `prefix`, which starts every key exactly as given (`<prefix>/blobs/…`):
    /// `Path::parse` keeps it verbatim, and object_store escapes it only on the wire. (`Path::from`
    /// would percent-encode `~ % [ ] { } ^ | < > # " \ * ?` and every non-ASCII character into
    /// the stored keys themselves.) A prefix [`check_prefix`] refuses cannot be kept verbatim; it
    /// only gets here through `S3Backend::with_store`, and is escaped as object_store does.
    pub(crate) fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        Keys {
            prefix: Path::parse(trimmed).unwrap_or_else(|_| Path::from(trimmed)),
        }
    }

    /// `<prefix>/<rest>`; the parts of `rest` are tarvault's own (ASCII names and digests).
    fn join(&self, rest: &str) -> Path {
        rest.split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// The folder holding every blob.
    pub(crate) fn blobs(&self) -> Path {
        self.join("blobs")
    }

    pub(crate) fn blob(&self, key: &BlobKey) -> Path {
        let name = blob_name(key);
        self.join(&format!("blobs/{}/{name}", &name[..2]))
    }

    /// The folder holding every alias record.
    pub(crate) fn aliases(&self) -> Path {
        self.join("alias")
    }

    /// The folder holding the alias log's segments.
    pub(crate) fn alias_log(&self) -> Path {
        self.join("alias/log")
    }

    /// The folder holding staging objects (see `staging`).
    pub(crate) fn staging_dir(&self) -> Path {
        self.join("staging")
    }

    /// A staging object named `name`.
    pub(crate) fn staging(&self, name: &str) -> Path {
        self.join(&format!("staging/{name}"))
    }

    /// The marker naming the blob whose `alg` digest is `hex` (hex digits, lowercase).
    pub(crate) fn marker(&self, alg: Algorithm, hex: &str) -> Path {
        let dir = match alg {
            Algorithm::Sha1 => "sha1",
            _ => "blake3",
        };
        let shard = hex.get(..2).unwrap_or("00");
        self.join(&format!("markers/{dir}/{shard}/{hex}"))
    }

    /// The folder holding every marker.
    pub(crate) fn markers(&self) -> Path {
        self.join("markers")
    }

    /// The algorithm and hex digest a listed marker path names: `None` if it is not a well-formed
    /// marker path (`markers/<alg>/<hex[..2]>/<hex>` of the right length, lowercase).
    pub(crate) fn marker_of(path: &Path) -> Option<(Algorithm, String)> {
        let parts: Vec<_> = path.parts().collect();
        let [.., dir, alg, shard, hex] = parts.as_slice() else {
            return None;
        };
        let (alg, len) = match alg.as_ref() {
            "sha1" => (Algorithm::Sha1, 40),
            "blake3" => (Algorithm::Blake3, 64),
            _ => return None,
        };
        let hex = hex.as_ref();
        let well_formed = dir.as_ref() == "markers"
            && hex.len() == len
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && hex.get(..2) == Some(shard.as_ref());
        well_formed.then(|| (alg, hex.to_string()))
    }

    pub(crate) fn quarantine(&self, key: &BlobKey) -> Path {
        self.join(&format!("quarantine/{}", blob_name(key)))
    }
}

/// Refuses a store prefix that cannot start S3 keys as it is: one with an empty, `.` or `..`
/// segment (`a//b`, `a/./b`) or a control character. Leading and trailing `/` are ignored.
pub(crate) fn check_prefix(prefix: &str) -> crate::Result<()> {
    let trimmed = prefix.trim_matches('/');
    Path::parse(trimmed).map(|_| ()).map_err(|e| {
        crate::Error::Config(format!(
            "S3 prefix {prefix:?}: a prefix cannot have empty, `.` or `..` segments or control \
             characters ({e})"
        ))
    })
}

/// A blob's object name: its sha512 in unpadded base64url.
fn blob_name(key: &BlobKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

impl Keys {
    /// The blob a listed object path names, if it is exactly that blob's path: an object in
    /// another shard than its name's (copied there by hand, say) is not a blob this store can
    /// read, and listing it as one would make `copy` skip a blob its target lacks.
    pub(crate) fn key_of(&self, path: &Path) -> Option<BlobKey> {
        key_from_path(path).filter(|key| self.blob(key) == *path)
    }
}

/// The blob key a listed object path's name encodes, if the name is well formed.
fn key_from_path(path: &Path) -> Option<BlobKey> {
    use base64::Engine;
    let name = path.filename()?;
    if name.len() != 86 {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(name)
        .ok()?;
    Some(BlobKey::new(raw.try_into().ok()?))
}

/// The metadata recorded on a blob: its sha1, blake3 and size (the sha512 is its key).
pub(crate) fn digest_attributes(d: &Digests) -> Attributes {
    let mut a = Attributes::new();
    a.insert(
        Attribute::Metadata(META_SHA1.into()),
        AttributeValue::from(d.shasum()),
    );
    a.insert(
        Attribute::Metadata(META_BLAKE3.into()),
        AttributeValue::from(d.blake3_hex()),
    );
    a.insert(
        Attribute::Metadata(META_SIZE.into()),
        AttributeValue::from(d.size.to_string()),
    );
    a.insert(
        Attribute::ContentType,
        AttributeValue::from("application/octet-stream"),
    );
    a
}

/// The digests recorded on a blob, if its metadata has them all and they fit its size.
pub(crate) fn digests_from_attributes(key: &BlobKey, size: u64, a: &Attributes) -> Option<Digests> {
    let get = |k: &'static str| a.get(&Attribute::Metadata(k.into())).map(|v| v.as_ref());
    let sha1 = hex::decode(get(META_SHA1)?).ok()?;
    let blake3 = hex::decode(get(META_BLAKE3)?).ok()?;
    let recorded: u64 = get(META_SIZE)?.parse().ok()?;
    if recorded != size {
        return None;
    }
    Digests::from_parts(key.as_bytes(), &sha1, &blake3, size).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let key = BlobKey::new([0xab; 64]);
        let k = Keys::new("/some/prefix/");
        let p = k.blob(&key).to_string();
        assert!(p.starts_with("some/prefix/blobs/q6/q6ur"), "{p}");
        assert_eq!(k.key_of(&k.blob(&key)), Some(key));
        assert_eq!(Keys::new("").blobs().to_string(), "blobs");
        // The right name in another shard, or under another prefix, is no blob of this store.
        let name = p.rsplit('/').next().unwrap_or_default().to_string();
        let misplaced = Path::from(format!("some/prefix/blobs/zz/{name}"));
        assert_eq!(k.key_of(&misplaced), None);
        assert_eq!(Keys::new("other").key_of(&k.blob(&key)), None);
    }

    #[test]
    fn prefix_is_verbatim() {
        let odd = "~team/a%20b [x]{y}^|<>#\"*?\\/café";
        assert!(check_prefix(odd).is_ok());
        let k = Keys::new(&format!("/{odd}/"));
        assert_eq!(k.blobs().as_ref(), format!("{odd}/blobs"));
        let key = BlobKey::new([0xab; 64]);
        assert_eq!(k.key_of(&k.blob(&key)), Some(key));
        for bad in ["a//b", "a/./b", "../a", "a\u{7}b"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_round_trip() {
        let d =
            Digests::from_parts(&[1; 64], &[2; 20], &[3; 32], 9).unwrap_or_else(|e| panic!("{e}"));
        let key = BlobKey::new(d.sha512);
        let a = digest_attributes(&d);
        assert_eq!(digests_from_attributes(&key, 9, &a), Some(d));
        assert_eq!(digests_from_attributes(&key, 10, &a), None);
    }
}
