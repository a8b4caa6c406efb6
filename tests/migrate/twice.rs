//! Documents with a key twice, on the fake CouchDB of `fake.rs`. serde_json keeps the last of two
//! equal keys, CouchDB and the npm clients it serves see the first: such a document is unreadable,
//! named by the repeated key's path, and nothing of it is fetched, stored or mapped, while the
//! other documents of the run migrate and what earlier runs stored stays.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tarvault::migrate::{OutcomeKind, Summary};
use tarvault::{Integrity, Store};

use crate::common::{sha1_hex, sha512_sri};
use crate::fake::{couch_md5, migrate_once, row, serve, static_registry, Attachments, Handler};

/// The `1.0.0` tarballs of the packages these tests serve: different bytes for each, so that the
/// store shows whose were kept.
const SHASUM_TWICE: &[u8] = b"the tarball of a document whose dist.shasum is given twice";
const ATTACHMENT_TWICE: &[u8] = b"the tarball of a document with its attachment twice";
const FINE: &[u8] = b"the tarball of a document with every key once";
const OTHER: &[u8] = b"bytes the first of the two keys would vouch for";

/// A registry serving `rows` (which a test may add to) and `atts`, whose `_changes` pages are the
/// text serde_json writes with the first `from` of each `(from, to)` of `edits` replaced by `to`:
/// how a document gets a key twice, which serde_json cannot write. The path of every attachment
/// asked for is added to `fetched`.
fn edited_registry(
    rows: Arc<Mutex<Vec<Value>>>,
    atts: Attachments,
    edits: Vec<(String, String)>,
    fetched: Arc<Mutex<Vec<String>>>,
) -> Handler {
    Arc::new(move |req| {
        let rows = rows.lock().expect("rows").clone();
        let mut resp = static_registry(rows, atts.clone())(req);
        match req.segs.as_slice() {
            [_db, c] if c == "_changes" => {
                let mut text = String::from_utf8(resp.body).expect("utf-8 page");
                for (from, to) in &edits {
                    text = text.replacen(from.as_str(), to, 1);
                }
                resp.body = text.into_bytes();
            }
            [_db, id, att] => fetched.lock().expect("fetched").push(format!("{id}/{att}")),
            _ => {}
        }
        resp
    })
}

/// `"key":value` as serde_json writes it in a page.
fn member(key: &str, value: Value) -> String {
    format!("{}:{value}", json!(key))
}

/// The stub CouchDB lists for an attachment of `data`.
fn stub(data: &[u8]) -> Value {
    json!({"content_type": "application/octet-stream", "digest": couch_md5(data),
        "length": data.len(), "revpos": 1, "stub": true})
}

async fn store(dir: &Path) -> Store {
    let spec = format!("file://{}?fsync=false", dir.join("store").display());
    Store::open(&spec).await.expect("store")
}

async fn stored(dir: &Path, data: &[u8]) -> bool {
    let address = Integrity::parse(&sha512_sri(data)).expect("sri");
    store(dir).await.contains(&address).await.expect("contains")
}

fn mapped_names(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("map.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("mapping line");
            let field = |f: &str| v[f].as_str().unwrap_or_default().to_string();
            format!("{}@{}", field("name"), field("version"))
        })
        .collect()
}

/// The unreadable problems of a run: `(id, detail)`.
fn unreadable(s: &Summary) -> Vec<(String, String)> {
    s.report
        .problems
        .iter()
        .filter(|p| p.kind == OutcomeKind::Unreadable)
        .map(|p| (p.id.clone(), p.detail.clone()))
        .collect()
}

/// In one page: a document whose `dist.shasum` is given twice (the first naming other bytes, the
/// last, which serde_json keeps, the bytes served), one whose attachment is listed twice (the
/// first with the digest and length of other bytes), and one with every key once. The first two
/// are unreadable, named by the repeated key; neither tarball is fetched or stored; the third
/// migrates.
#[tokio::test]
async fn a_document_with_a_key_twice_is_unreadable_and_the_others_migrate() {
    let rows = vec![
        row(
            1,
            "shasum-twice",
            json!({"shasum": sha1_hex(SHASUM_TWICE)}),
            SHASUM_TWICE,
        ),
        row(
            2,
            "attachment-twice",
            json!({"shasum": sha1_hex(ATTACHMENT_TWICE)}),
            ATTACHMENT_TWICE,
        ),
        row(3, "fine", json!({"shasum": sha1_hex(FINE)}), FINE),
    ];
    let atts: Attachments = [
        ("shasum-twice", SHASUM_TWICE),
        ("attachment-twice", ATTACHMENT_TWICE),
        ("fine", FINE),
    ]
    .iter()
    .map(|(id, data)| ((id.to_string(), format!("{id}-1.0.0.tgz")), data.to_vec()))
    .collect();
    let shasum = member("shasum", json!(sha1_hex(SHASUM_TWICE)));
    let file = json!("attachment-twice-1.0.0.tgz").to_string();
    let edits = vec![
        (
            shasum.clone(),
            format!("{},{shasum}", member("shasum", json!(sha1_hex(OTHER)))),
        ),
        (
            format!("\"_attachments\":{{{file}:"),
            format!("\"_attachments\":{{{file}:{},{file}:", stub(OTHER)),
        ),
    ];
    let fetched = Arc::new(Mutex::new(Vec::new()));
    let rows = Arc::new(Mutex::new(rows));
    let url = serve(edited_registry(rows, atts, edits, fetched.clone())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migrate_once(&url, dir.path()).await;

    let c = s.report.counts;
    assert_eq!((c.documents, c.migrated, c.unreadable), (3, 1, 2), "{c:?}");
    assert_eq!(c.failures(), 2, "{c:?}");
    let twice = "given twice: JSON readers disagree on which one counts";
    assert_eq!(
        unreadable(&s),
        [
            (
                "shasum-twice".to_string(),
                format!(r#"versions["1.0.0"].dist.shasum {twice}"#)
            ),
            (
                "attachment-twice".to_string(),
                format!(r#"_attachments["attachment-twice-1.0.0.tgz"] {twice}"#)
            ),
        ]
    );
    assert_eq!(
        fetched.lock().expect("fetched").as_slice(),
        ["fine/fine-1.0.0.tgz"],
        "only the readable document's tarball is fetched"
    );
    assert!(!stored(dir.path(), SHASUM_TWICE).await);
    assert!(!stored(dir.path(), ATTACHMENT_TWICE).await);
    assert!(stored(dir.path(), FINE).await);
    assert_eq!(mapped_names(dir.path()), ["fine@1.0.0"]);
}

/// A package migrated by one run comes back in the feed with a new version whose
/// `dist.integrity` is given twice: that revision is unreadable, and the version the first run
/// stored and mapped is still stored and mapped.
#[tokio::test]
async fn a_document_that_gains_a_key_twice_keeps_what_was_migrated() {
    let first = row(1, "pkg", json!({"shasum": sha1_hex(FINE)}), FINE);
    let rows = Arc::new(Mutex::new(vec![first.clone()]));
    let atts: Attachments = [
        (
            ("pkg".to_string(), "pkg-1.0.0.tgz".to_string()),
            FINE.to_vec(),
        ),
        (
            ("pkg".to_string(), "pkg-1.1.0.tgz".to_string()),
            SHASUM_TWICE.to_vec(),
        ),
    ]
    .into_iter()
    .collect();
    let integrity = member("integrity", json!(sha512_sri(SHASUM_TWICE)));
    let edits = vec![(
        integrity.clone(),
        format!(
            "{},{integrity}",
            member("integrity", json!(sha512_sri(OTHER)))
        ),
    )];
    let fetched = Arc::new(Mutex::new(Vec::new()));
    let url = serve(edited_registry(rows.clone(), atts, edits, fetched)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migrate_once(&url, dir.path()).await;
    assert_eq!(s.report.counts.migrated, 1, "{:?}", s.report.counts);

    // Revision 2: version 1.1.0 added, its `dist.integrity` twice.
    let mut second = first;
    second["seq"] = json!(2);
    second["doc"]["_rev"] = json!("2-b");
    second["doc"]["versions"]["1.1.0"] = json!({"name": "pkg", "version": "1.1.0", "dist": {
        "integrity": sha512_sri(SHASUM_TWICE), "tarball": "http://r/pkg/-/pkg-1.1.0.tgz"}});
    second["doc"]["_attachments"]["pkg-1.1.0.tgz"] = stub(SHASUM_TWICE);
    rows.lock().expect("rows").push(second);
    let s = migrate_once(&url, dir.path()).await;
    let c = s.run;
    assert_eq!((c.documents, c.migrated, c.unreadable), (1, 0, 1), "{c:?}");
    let (id, detail) = unreadable(&s).pop().expect("an unreadable problem");
    assert_eq!(id, "pkg");
    assert!(
        detail.starts_with(r#"versions["1.1.0"].dist.integrity given twice"#),
        "{detail}"
    );
    assert!(!stored(dir.path(), SHASUM_TWICE).await);
    assert!(stored(dir.path(), FINE).await);
    assert_eq!(mapped_names(dir.path()), ["pkg@1.0.0"]);
}
