//! Reads: a blob (or a byte range of it) as a stream, straight from the object's body.

use std::ops::Range;

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use super::errors::{absent_ok, backend_error};
use super::Inner;
use crate::backend::{check_range, BlobKey, GetResult};
use crate::Result;

/// `GET`, with a `Range` header when a range is asked for. The body streams as it arrives, so
/// memory stays flat whatever the blob's size.
pub(super) async fn get(
    inner: &Inner,
    key: &BlobKey,
    range: Option<Range<u64>>,
) -> Result<Option<GetResult>> {
    let path = inner.keys.blob(key);
    // An empty range cannot be expressed as an HTTP Range; a HEAD gives the size to check it by.
    if let Some(r) = range.as_ref().filter(|r| r.start >= r.end) {
        let Some(meta) = absent_ok(&inner.describe, "head", inner.store.head(&path).await)? else {
            return Ok(None);
        };
        check_range(r, meta.size)?;
        return Ok(Some(GetResult {
            size: meta.size,
            stream: stream::empty().boxed(),
            digests: None,
            verified_whole: None,
        }));
    }
    let opts = GetOptions {
        range: range.clone().map(GetRange::Bounded),
        ..GetOptions::default()
    };
    let got = match inner.store.get_opts(&path, opts).await {
        Ok(g) => g,
        Err(e) => {
            // A range past the end is a 416 from the server: report it like every other backend.
            if let Some(r) = &range {
                if let Some(meta) =
                    absent_ok(&inner.describe, "head", inner.store.head(&path).await)?
                {
                    check_range(r, meta.size)?;
                }
            }
            return absent_ok(&inner.describe, "get", Err(e)).map(|_: Option<()>| None);
        }
    };
    let size = got.meta.size;
    if let Some(r) = &range {
        check_range(r, size)?;
    }
    let describe = inner.describe.clone();
    let stream = got
        .into_stream()
        .map_err(move |e| backend_error(&describe, "read", e))
        .boxed();
    Ok(Some(GetResult {
        size,
        stream,
        digests: None,
        verified_whole: None,
    }))
}
