//! The npm tarball URLs a server answers, from the mapping `tarvault migrate couch` writes:
//! `(name, file)` → the blob's address, with its entity tag computed once at load.

use std::collections::HashMap;

use axum::http::HeaderValue;

use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Integrity};
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

/// Package name → file name → blob. Two levels so that a lookup borrows the request's strings.
#[derive(Debug, Default)]
pub(crate) struct NameIndex {
    by_name: HashMap<String, HashMap<String, Named>>,
    len: usize,
}

impl NameIndex {
    /// Builds the index. A URL mapped to two different blobs is refused: which one a client gets
    /// must not depend on line order.
    pub(crate) fn build(entries: impl IntoIterator<Item = MapEntry>) -> Result<NameIndex> {
        let mut index = NameIndex::default();
        for entry in entries {
            let address = Integrity::parse(&entry.integrity)?;
            let key = address
                .get(Algorithm::Sha512)
                .and_then(BlobKey::from_hash)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "mapping entry {}@{} has no sha512 integrity",
                        entry.name, entry.version
                    ))
                })?;
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
            let named = Named {
                key,
                address: Integrity::from(key.hash()),
                etag: super::http::etag(&key),
            };
            files.insert(entry.file, named);
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
