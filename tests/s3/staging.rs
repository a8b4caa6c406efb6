//! Large puts of unknown digest on a real server: streamed to a staging key while hashed, then
//! named by a server-side copy. Nothing is left under `staging/`, nothing is visible after a
//! mismatch, and the spool fallback (`staging=false`) still stores.
#![allow(dead_code)]

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tarvault::backend::s3::S3Backend;
use tarvault::{ErrorKind, Integrity, PutOptions, Store};

use super::Server;
use crate::common::{addr, chunked, noise, sha1_hex, sha512_sri};

/// 20 MiB: over the 1 MiB threshold set here, three 8 MiB-or-less parts.
const SIZE: usize = 20 << 20;

async fn store(s: &Server, prefix: &str, staging: bool) -> Store {
    let mut c = s.config(prefix);
    c.multipart_threshold = 1 << 20;
    c.stage_unknown = staging;
    Store::new(S3Backend::connect(&c).await.expect("connect"))
}

/// Every object key under `prefix`.
async fn keys_under(s: &Server, prefix: &str) -> Vec<String> {
    s.raw()
        .list(Some(&Path::from(prefix)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list")
}

async fn put_unknown_and_check(s: &Server, staging: bool) {
    let prefix = Server::fresh_prefix(if staging { "stage" } else { "spool" });
    let st = store(s, &prefix, staging).await;
    let bytes = Bytes::from(noise(SIZE, 17));
    let put = st
        .put(chunked(&bytes, 300 * 1024), &PutOptions::default())
        .await
        .expect("put of unknown digest");
    assert!(put.stored);
    assert_eq!(
        put.digests.integrity().to_string(),
        sha512_sri(&bytes),
        "{}",
        s.name
    );
    // Read back verified, by sha512 and by sha1 (the alias was recorded).
    let got = st
        .get(&put.digests.integrity())
        .await
        .expect("get")
        .bytes()
        .await
        .expect("verified read");
    assert!(got == bytes, "{}: bytes differ", s.name);
    let by_sha1 = Integrity::parse_address(&sha1_hex(&bytes)).expect("address");
    assert_eq!(
        st.stat(&by_sha1).await.expect("stat by sha1").size,
        SIZE as u64
    );
    // No staging object left, and the blob is where the layout says.
    let keys = keys_under(s, &prefix).await;
    assert!(
        !keys.iter().any(|k| k.contains("/staging/")),
        "{}: staging objects left: {keys:?}",
        s.name
    );
    assert_eq!(
        keys.iter().filter(|k| k.contains("/blobs/")).count(),
        1,
        "{}: {keys:?}",
        s.name
    );
    // The same bytes again: a dedupe hit, still no staging object left.
    let again = st
        .put(chunked(&bytes, 1 << 20), &PutOptions::default())
        .await
        .expect("second put");
    assert!(!again.stored, "{}: the second put should dedupe", s.name);
    let keys = keys_under(s, &prefix).await;
    assert!(!keys.iter().any(|k| k.contains("/staging/")), "{keys:?}");
}

/// A 20 MiB put of unknown digest goes through a staging key and a server-side copy: it stores,
/// reads back verified, is found by sha1, and leaves no staging object.
pub async fn large_unknown_put_is_staged(s: &Server) {
    put_unknown_and_check(s, true).await;
}

/// The spool fallback (`staging=false`) stores the same way.
pub async fn large_unknown_put_spools_when_staging_is_off(s: &Server) {
    put_unknown_and_check(s, false).await;
}

/// A large put whose bytes do not match the expected sha1 (so it streams to a staging key, the
/// sha512 being unknown) fails with a mismatch and leaves nothing under the store's prefix.
pub async fn staged_mismatch_leaves_nothing(s: &Server) {
    let prefix = Server::fresh_prefix("stagebad");
    let st = store(s, &prefix, true).await;
    let bytes = Bytes::from(noise(SIZE, 18));
    let wrong = addr(&format!(
        "sha1-{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 20])
    ));
    let err = st
        .put(chunked(&bytes, 1 << 20), &PutOptions::expect(wrong))
        .await
        .expect_err("a mismatching put must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::IntegrityMismatch,
        "{}: {err}",
        s.name
    );
    let keys = keys_under(s, &prefix).await;
    assert!(keys.is_empty(), "{}: objects left: {keys:?}", s.name);
    let by_sha512 = addr(&sha512_sri(&bytes));
    assert!(!st.contains(&by_sha512).await.expect("contains"));
}

/// The sweep judges a staging object's age by the later of the time in its name (its upload's
/// start, on the putting host's clock) and its listing's Last-Modified, as on Manta: an object
/// whose Last-Modified is old but whose name says its upload began just now (a clock behind the
/// server's, or a server that dates a multipart object by its upload's start) belongs to a put
/// that may be copying it right now, and stays. s3s-fs only: the test ages objects by setting
/// their files' modification times (Last-Modified there).
pub async fn staging_sweep_takes_the_later_of_name_and_last_modified(s: &Server) {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use tarvault::backend::Backend;
    let Some(dir) = s.vars.get("TARVAULT_S3_DIR").filter(|_| s.name == "s3s-fs") else {
        println!("skipped: {}: object files are not reachable to age", s.name);
        return;
    };
    let prefix = Server::fresh_prefix("sweep");
    let backend = S3Backend::connect(&s.config(&prefix))
        .await
        .expect("connect");
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("clock").as_millis();
    let now = SystemTime::now();
    let two_hours_ago = now - Duration::from_secs(2 * 3600);
    let young_name = format!("{:013}-{:016x}", ms(now), 1);
    let old_name = format!("{:013}-{:016x}", ms(two_hours_ago), 2);
    let raw = s.raw();
    for name in [&young_name, &old_name, &"not-a-staging-name".to_string()] {
        let key = Path::from(format!("{prefix}/staging/{name}"));
        raw.put(&key, Bytes::from_static(b"staged bytes").into())
            .await
            .expect("plant a staging object");
        // Its Last-Modified two hours back.
        let file = std::path::Path::new(dir)
            .join("data")
            .join(s.bucket())
            .join(&prefix)
            .join("staging")
            .join(name);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(two_hours_ago))
            .unwrap_or_else(|e| panic!("age {}: {e}", file.display()));
    }
    let listed: Vec<_> = raw
        .list(Some(&Path::from(format!("{prefix}/staging"))))
        .try_collect()
        .await
        .expect("list");
    assert!(
        listed
            .iter()
            .all(|m| m.last_modified.timestamp_millis() < ms(now) as i64 - 3_600_000),
        "the server does not date objects by their files: {listed:?}"
    );
    // The object named just now stays; both old by name and by Last-Modified go.
    assert_eq!(backend.sweep().await.expect("sweep"), 2);
    let keys = keys_under(s, &format!("{prefix}/staging")).await;
    assert_eq!(keys, vec![format!("{prefix}/staging/{young_name}")]);
}

/// A client that refuses `CopyObject` (as some S3-compatible servers do) and, when `tamper` is
/// set, hands back a staging object's bytes with one of them changed (a server or proxy that
/// answers a GET with other bytes of the same length).
#[derive(Debug)]
struct NoCopy {
    inner: std::sync::Arc<dyn ObjectStore>,
    tamper: bool,
}

impl std::fmt::Display for NoCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no-copy({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for NoCopy {
    async fn put_opts(
        &self,
        location: &Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        use futures::StreamExt;
        let got = self.inner.get_opts(location, options).await?;
        if self.tamper && location.as_ref().contains("/staging/") {
            let (meta, range, attributes) =
                (got.meta.clone(), got.range.clone(), got.attributes.clone());
            let stream = got.into_stream();
            let mut first = true;
            let changed = stream.map(move |chunk| {
                let chunk = chunk?;
                if !std::mem::take(&mut first) || chunk.is_empty() {
                    return Ok(chunk);
                }
                let mut v = chunk.to_vec();
                v[0] ^= 0xff;
                Ok(Bytes::from(v))
            });
            return Ok(object_store::GetResult {
                payload: object_store::GetResultPayload::Stream(changed.boxed()),
                meta,
                range,
                attributes,
                extensions: Default::default(),
            });
        }
        Ok(got)
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented {
            operation: "copy".into(),
            implementer: "this test's server".into(),
        })
    }
}

/// A server that refuses `CopyObject`: a staged put is copied through the client instead. Its
/// bytes are checked on the way against the sha512 they verified as: where the server hands the
/// staging object back with other bytes, the put fails and nothing is published under the
/// blob's key (nor left under `staging/`); with the right bytes it stores and reads back.
pub async fn a_copy_through_the_client_publishes_only_verified_bytes(s: &Server) {
    for tamper in [true, false] {
        let prefix = Server::fresh_prefix("nocopy");
        let mut c = s.config(&prefix);
        c.multipart_threshold = 1 << 20;
        let client = std::sync::Arc::new(NoCopy {
            inner: std::sync::Arc::new(c.build().expect("client")),
            tamper,
        });
        let st = Store::new(S3Backend::with_store_config(client, &c));
        let bytes = Bytes::from(noise(3 << 20, 23));
        let put = st
            .put(chunked(&bytes, 256 * 1024), &PutOptions::default())
            .await;
        let keys = keys_under(s, &prefix).await;
        assert!(
            !keys.iter().any(|k| k.contains("/staging/")),
            "{}: staging objects left: {keys:?}",
            s.name
        );
        if tamper {
            let err = put.expect_err("other bytes must not be published");
            assert_eq!(err.kind(), ErrorKind::Backend, "{}: {err}", s.name);
            assert!(
                !keys.iter().any(|k| k.contains("/blobs/")),
                "{}: published unverified bytes: {keys:?}",
                s.name
            );
            continue;
        }
        let put = put.expect("put copied through the client");
        assert!(put.stored);
        let got = st
            .get(&put.digests.integrity())
            .await
            .expect("get")
            .bytes()
            .await
            .expect("verified read");
        assert!(got == bytes, "{}: bytes differ", s.name);
    }
}
