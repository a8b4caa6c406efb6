//! A tarball's size from CouchDB's own attachment stub (`length`) is the size the store's put is
//! given: bytes that run past it stop being read there, a mismatch naming the field; and on S3,
//! which keeps no trusted record of an object's size, the put knows before reading whether the
//! object at the tarball's key is whole.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tarvault::migrate::OutcomeKind;

use crate::common::{sha1_hex, sha512_sri};
use crate::fake::{migration, row, serve, static_registry, Attachments, Handler, Length};

const TGZ: &[u8] = b"pretend this is a gzipped tarball";

/// The `dist` of a version whose tarball is `data`.
fn dist(data: &[u8]) -> Value {
    json!({"shasum": sha1_hex(data), "integrity": sha512_sri(data)})
}

/// `(id, <id>-1.0.0.tgz) → bytes`.
fn served(of: &[(&str, &[u8])]) -> Attachments {
    of.iter()
        .map(|(id, data)| ((id.to_string(), format!("{id}-1.0.0.tgz")), data.to_vec()))
        .collect()
}

/// Two attachments whose bytes disagree with their stub's `length`: one longer, its body not over
/// as far as its `Content-Length` tells (the server then holds the connection open), and one
/// shorter. Each is a digest mismatch naming the stub's `length`, and nothing is stored or mapped;
/// the longer one is not read past the length (it was read on until the body broke off, and then
/// fetched again, four times).
#[tokio::test]
async fn bytes_other_than_the_stubs_length_are_a_mismatch_naming_it() {
    let rows = vec![
        row(1, "long", dist(TGZ), TGZ),
        row(2, "short", dist(TGZ), TGZ),
    ];
    let mut longer = TGZ.to_vec();
    longer.extend_from_slice(b", and then some");
    let registry = static_registry(rows, served(&[("long", &longer), ("short", &TGZ[..10])]));
    let handler: Handler = Arc::new(move |req| {
        let mut resp = registry(req);
        if req.segs.last().is_some_and(|s| s == "long-1.0.0.tgz") {
            resp.length = Length::Claimed(1 << 30);
            resp.hold = true;
        }
        resp
    });
    let url = serve(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let run = async { migration(&url, dir.path(), |_| {}).await.run().await };
    let s = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the longer body was read on past its stub's length")
        .expect("run");
    let c = &s.report.counts;
    assert_eq!((c.migrated, c.digest_mismatch), (0, 2), "{c:?}");
    let n = TGZ.len();
    for (id, actual) in [
        ("long", format!("more than {n} bytes")),
        ("short", "10 bytes".into()),
    ] {
        let p = s
            .report
            .problems
            .iter()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no problem for {id}"));
        assert_eq!(p.kind, OutcomeKind::DigestMismatch, "{}", p.line());
        let field = format!(r#"_attachments["{id}-1.0.0.tgz"].length"#);
        assert!(p.detail.contains(&field), "{}", p.line());
        assert_eq!(p.expected.as_deref(), Some(format!("{n} bytes").as_str()));
        assert_eq!(p.actual.as_deref(), Some(actual.as_str()), "{}", p.line());
    }
    let map = std::fs::read_to_string(dir.path().join("map.jsonl")).unwrap_or_default();
    assert!(map.is_empty(), "{map}");
}

#[cfg(feature = "s3")]
mod s3 {
    use std::sync::atomic::Ordering;

    use object_store::{ObjectStoreExt, PutPayload};
    use tarvault::backend::s3::{S3Backend, S3Config};
    use tarvault::backend::Backend;
    use tarvault::migrate::{CouchSource, MigrateOptions, Migration, Summary};
    use tarvault::Store;

    use super::*;
    use crate::common::tally::Tally;
    use crate::common::{key_of, noise};

    /// Runs a migration of `url` into `store` with a state and mapping of its own (a run with the
    /// mapping gone), to its end.
    async fn migrate_into(url: &str, store: &Store) -> Summary {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = MigrateOptions::new(dir.path().join("state.json"), dir.path().join("map.jsonl"));
        Migration::new(
            CouchSource::parse(url).expect("source"),
            store.clone(),
            opts,
        )
        .expect("migration")
        .run()
        .await
        .expect("run")
    }

    /// On S3, over object_store's in-memory store: a run with the mapping gone, over a tarball
    /// whose object at its key was cut short, replaces it and counts it migrated; a run over it
    /// whole begins no upload, and counts it already present. (Without the stub's length the put
    /// could not tell the object whole before reading: it held the bytes to compare sizes.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_tarball_of_the_stubs_length_is_taken_without_an_upload() {
        let data = noise(5000, 81);
        let url = serve(static_registry(
            vec![row(1, "p", dist(&data), &data)],
            served(&[("p", &data)]),
        ))
        .await;
        let config = S3Config::new("memory", format!("t-sized-{}", std::process::id()));
        let memory = Arc::new(object_store::memory::InMemory::new());
        let inner = S3Backend::with_store_config(memory, &config);
        let backend = Tally::new(inner.clone());
        let store = Store::new(backend.clone());
        let counts = |s: &Summary| (s.report.counts.migrated, s.report.counts.already_present);
        assert_eq!(counts(&migrate_into(&url, &store).await), (1, 0));
        let path = inner.blob_path(&key_of(&data));
        inner
            .object_store()
            .put(&path, PutPayload::from(data[..4000].to_vec()))
            .await
            .expect("cut the object short");
        assert_eq!(
            counts(&migrate_into(&url, &store).await),
            (1, 0),
            "replaced"
        );
        let head = inner.head(&key_of(&data)).await.expect("head");
        assert_eq!(
            head.map(|st| st.size),
            Some(5000),
            "the object is whole again"
        );
        let begun = backend.begun.load(Ordering::SeqCst);
        assert_eq!(counts(&migrate_into(&url, &store).await), (0, 1), "present");
        assert_eq!(
            backend.begun.load(Ordering::SeqCst),
            begun,
            "an upload was begun"
        );
    }
}
