//! The S3 home of the alias index: markers ([`AliasIndex`](crate::backend::alias::marker)) under
//! `<prefix>/markers/`, and the segments of the log earlier versions wrote
//! ([`AliasLog`](crate::backend::alias::log)) under `<prefix>/alias/log/`, read while a store
//! upgrades.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use super::errors::{absent_ok, backend_error};
use super::head_object;
use super::keys::{digests_from_attributes, Keys};
use super::writer::put_create;
use crate::backend::alias::log::{SegmentStore, SEGMENT_MAX};
use crate::backend::alias::marker::{Listed, MarkerStore, MARKER_MAX};
use crate::backend::body::{read_within, NotWhole};
use crate::backend::BlobKey;
use crate::integrity::{Algorithm, Digests};
use crate::{Error, Result};

/// The whole body of `path` (or of its `range`), a `what` (a marker, a segment) of at most `max`
/// bytes, or `None` if there is none. The size of the answer (its `Content-Length`) is checked
/// against `max` before anything is read, and is not taken as the size of the buffer
/// (object_store's `GetResult::bytes` reserves it whole, so a claim of 2^62 bytes aborted the
/// process); the body is read by [`read_within`], which stops once it holds more than `max`.
async fn get_small(
    store: &dyn ObjectStore,
    describe: &str,
    what: &str,
    path: &Path,
    (range, max): (Option<Range<u64>>, u64),
) -> Result<Option<Bytes>> {
    let op = format!("read {what} {path}");
    let opts = GetOptions {
        range: range.map(Into::into),
        ..GetOptions::default()
    };
    let Some(got) = absent_ok(describe, &op, store.get_opts(path, opts).await)? else {
        return Ok(None);
    };
    // The length of what is sent: the object's size, or the range's (object_store checks that a
    // ranged answer's Content-Range is the range asked for).
    let claimed = got.range.end.saturating_sub(got.range.start);
    match read_within(got.into_stream(), Some(claimed), max).await {
        Ok(body) => Ok(Some(body)),
        Err(NotWhole::Over(size)) => Err(Error::backend(
            describe,
            format!("{op}: the answer is {size} bytes, over the {max}-byte limit of an {what}"),
        )),
        // Gone since it answered: as if it had not been there.
        Err(NotWhole::Failed(e)) => absent_ok(describe, &op, Err(e)),
    }
}

/// Markers as objects `<prefix>/markers/<alg>/<hex[..2]>/<hex>`.
pub(crate) struct S3Markers {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) keys: Keys,
    pub(crate) describe: String,
    /// Retries of a create-only PUT cut off in transit (object_store does not retry those: they
    /// are not idempotent in general; a marker's is, see [`MarkerStore::create`]).
    pub(crate) retries: usize,
}

#[async_trait]
impl MarkerStore for S3Markers {
    async fn create(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<bool> {
        let path = self.keys.marker(alg, hex);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let (created, _) =
            put_create(self.store.as_ref(), &path, body.into(), opts, self.retries).await;
        match created {
            Ok(_) => Ok(true),
            // Also what a retry of a create that did land sees: the caller reads it back.
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(backend_error(&self.describe, "write alias marker", e)),
        }
    }

    async fn replace(&self, alg: Algorithm, hex: &str, body: Bytes) -> Result<()> {
        self.store
            .put(&self.keys.marker(alg, hex), body.into())
            .await
            .map(|_| ())
            .map_err(|e| backend_error(&self.describe, "rewrite alias marker", e))
    }

    async fn get(&self, alg: Algorithm, hex: &str) -> Result<Option<Bytes>> {
        let path = self.keys.marker(alg, hex);
        get_small(
            self.store.as_ref(),
            &self.describe,
            "alias marker",
            &path,
            (None, MARKER_MAX),
        )
        .await
    }

    fn name(&self, alg: Algorithm, hex: &str) -> String {
        // The key holds the prefix, which `describe` ends with already.
        format!("{} key {}", self.describe, self.keys.marker(alg, hex))
    }

    /// One LIST of the markers folder, paged by object_store as it is read (1,000 keys a page).
    fn list(&self) -> BoxStream<'_, Result<Listed>> {
        self.store
            .list(Some(&self.keys.markers()))
            .map(|m| {
                let m = m.map_err(|e| backend_error(&self.describe, "list alias markers", e))?;
                Ok(match Keys::marker_of(&m.location) {
                    Some((alg, hex)) => Listed::Marker {
                        alg,
                        hex,
                        modified: Some(m.last_modified.into()),
                    },
                    None => Listed::Foreign(format!("{} key {}", self.describe, m.location)),
                })
            })
            .boxed()
    }

    async fn delete(&self, alg: Algorithm, hex: &str) -> Result<()> {
        match self.store.delete(&self.keys.marker(alg, hex)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend_error(&self.describe, "delete alias marker", e)),
        }
    }

    /// The digests the blob's object carries in its metadata (written with its bytes).
    async fn blob_record(&self, key: BlobKey) -> Result<Option<Option<Digests>>> {
        let got = head_object(&*self.store, &self.keys, &self.describe, &key).await?;
        Ok(got.map(|g| digests_from_attributes(&key, g.meta.size, &g.attributes)))
    }
}

pub(crate) struct S3Segments {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The folder holding the segments.
    pub(crate) dir: Path,
    pub(crate) describe: String,
}

impl S3Segments {
    fn path(&self, name: &str) -> Path {
        self.dir.clone().join(name)
    }
}

#[async_trait]
impl SegmentStore for S3Segments {
    async fn put(&self, name: &str, body: Bytes) -> Result<()> {
        // A plain PUT of a unique name: idempotent, so object_store retries it on its own.
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(name), body.into(), opts)
            .await
            .map(|_| ())
            .map_err(|e| backend_error(&self.describe, "write alias segment", e))
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name);
        get_small(
            self.store.as_ref(),
            &self.describe,
            "alias segment",
            &path,
            (None, SEGMENT_MAX),
        )
        .await
    }

    /// The range's bytes, and no more: `ObjectStore::get_range` reads whatever the answer's body
    /// holds, which a chunked body with the right `Content-Range` can make endless.
    async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        let max = range.end.saturating_sub(range.start);
        let path = self.path(name);
        get_small(
            self.store.as_ref(),
            &self.describe,
            "alias segment range",
            &path,
            (Some(range), max),
        )
        .await
    }

    async fn list(&self) -> Result<Vec<(String, u64)>> {
        self.store
            .list(Some(&self.dir))
            .map_err(|e| backend_error(&self.describe, "list alias segments", e))
            .try_filter_map(|m| async move {
                Ok(m.location.filename().map(|n| (n.to_string(), m.size)))
            })
            .try_collect()
            .await
    }

    async fn delete(&self, names: &[String]) -> Result<()> {
        let paths: Vec<Result<Path, object_store::Error>> =
            names.iter().map(|n| Ok(self.path(n))).collect();
        let outcomes: Vec<_> = self
            .store
            .delete_stream(futures::stream::iter(paths).boxed())
            .collect()
            .await;
        for r in outcomes {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(backend_error(&self.describe, "delete alias segments", e)),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::s3::S3Config;
    use crate::ErrorKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stand-in S3 server answering every GET with the first ten bytes of a 100-byte object
    /// (as its `Content-Range` says), but a `Content-Length` and a body of 1 MiB.
    async fn overlong_ranges() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let at = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let _ = sock.read(&mut buf).await;
                    let body = vec![b'x'; 1 << 20];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\n\
                         ETag: \"x\"\r\nLast-Modified: Wed, 01 Jan 2020 00:00:00 GMT\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{at}")
    }

    /// A range of a segment is read up to its length and no further: an answer whose body goes
    /// on past it (its `Content-Range` right, its length not) is a backend error naming
    /// the segment, not a megabyte (or an endless stream) read into memory.
    #[tokio::test]
    async fn a_range_answered_with_more_is_refused() {
        let mut c = S3Config::new("bucket", "p");
        c.endpoint = Some(overlong_ranges().await);
        c.allow_http = Some(true);
        c.region = Some("us-east-1".into());
        c.credentials = Some(("key".into(), "secret".into()));
        c.max_retries = 0;
        let store = c.build().unwrap_or_else(|e| panic!("{e}"));
        let segments = S3Segments {
            store: Arc::new(store),
            dir: Path::from("p/alias/log"),
            describe: "s3 stand-in".into(),
        };
        let got = segments.get_range("seg1", 0..10).await;
        let err = got
            .err()
            .unwrap_or_else(|| panic!("an overlong range must be refused"));
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
        let text = err.to_string();
        assert!(text.contains("p/alias/log/seg1"), "{text}");
        assert!(text.contains("more than 10 bytes"), "{text}");
    }
}
