//! Cases scripted on the fake CouchDB of `fake.rs`: they run without pouchdb-server.

use std::path::Path;

use futures::TryStreamExt;
use serde_json::json;
use tarvault::migrate::OutcomeKind;
use tarvault::Store;

use crate::common::{sha1_hex, sha512_sri};
use crate::fake::{couch_md5, migration, row, serve, sha1_sri, static_registry, Attachments};

/// `(id, attachment) → bytes` for packages whose attachment is `<id>-1.0.0.tgz`.
fn atts(of: &[(&str, &[u8])]) -> Attachments {
    of.iter()
        .map(|(id, data)| ((id.to_string(), format!("{id}-1.0.0.tgz")), data.to_vec()))
        .collect()
}

async fn blob_count(dir: &Path) -> usize {
    let spec = format!("file://{}?fsync=false", dir.join("store").display());
    let store = Store::open(&spec).await.expect("store");
    let keys: Vec<_> = store.list().try_collect().await.expect("list");
    keys.len()
}

fn map_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("map.jsonl")).unwrap_or_default()
}

const TGZ: &[u8] = b"pretend this is a gzipped tarball";
const OTHER: &[u8] = b"some other bytes entirely";

/// `dist.shasum`, a sha1 in `dist.integrity` and the attachment's md5 are three claims about the
/// same bytes: each must hold on its own, and the problem names the one that does not.
#[tokio::test]
async fn every_digest_the_document_offers_must_match_on_its_own() {
    let rows = vec![
        // The shasum is right, the integrity's sha1 is of other bytes.
        row(
            1,
            "a",
            json!({"shasum": sha1_hex(TGZ), "integrity": sha1_sri(OTHER)}),
            TGZ,
        ),
        // The other way round.
        row(
            2,
            "b",
            json!({"shasum": sha1_hex(OTHER), "integrity": sha1_sri(TGZ)}),
            TGZ,
        ),
        // Only CouchDB's md5 disagrees.
        {
            let mut r = row(3, "c", json!({"shasum": sha1_hex(TGZ)}), TGZ);
            r["doc"]["_attachments"]["c-1.0.0.tgz"]["digest"] = json!(couch_md5(OTHER));
            r
        },
        // Everything agrees: migrated.
        row(
            4,
            "d",
            json!({"shasum": sha1_hex(TGZ),
            "integrity": format!("{} {}", sha512_sri(TGZ), sha1_sri(TGZ))}),
            TGZ,
        ),
    ];
    let served = atts(&[("a", TGZ), ("b", TGZ), ("c", TGZ), ("d", TGZ)]);
    let url = serve(static_registry(rows, served)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect("run");
    let c = s.report.counts;
    assert_eq!(
        (c.migrated, c.digest_mismatch, c.failures()),
        (1, 3, 3),
        "{c:?}"
    );
    let named: Vec<(String, String)> = s
        .report
        .problems
        .iter()
        .map(|p| {
            assert_eq!(p.kind, OutcomeKind::DigestMismatch, "{}", p.line());
            assert!(p.expected.is_some() && p.actual.is_some(), "{}", p.line());
            (p.id.clone(), p.detail.clone())
        })
        .collect();
    assert_eq!(named.len(), 3);
    assert!(named[0].1.contains("dist.integrity"), "{named:?}");
    assert!(named[1].1.contains("dist.shasum"), "{named:?}");
    assert!(
        named[2].1.contains(r#"_attachments["c-1.0.0.tgz"].digest"#),
        "{named:?}"
    );
    // Only d's bytes are stored (a, b and c have the same bytes: had any been accepted, the blob
    // would be there for them too) and only d is mapped.
    assert_eq!(blob_count(dir.path()).await, 1);
    let map = map_text(dir.path());
    assert_eq!(map.lines().count(), 1);
    assert!(map.contains(r#""name":"d""#), "{map}");
}

/// A version refused for its metadata still names its attachment in `dist.tarball`: one failure,
/// not also an orphan. An attachment no version names is still an orphan.
#[tokio::test]
async fn a_refused_version_s_attachment_is_not_also_an_orphan() {
    let mut r = row(1, "b", json!({"shasum": "zz"}), TGZ);
    r["doc"]["_attachments"]["b-0.9.0.tgz"] =
        json!({"digest": couch_md5(OTHER), "length": OTHER.len(), "stub": true});
    let url = serve(static_registry(vec![r], atts(&[("b", TGZ)]))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect("run");
    let c = s.report.counts;
    assert_eq!((c.unreadable, c.orphan), (1, 1), "{c:?}");
    let lines: Vec<String> = s.report.problems.iter().map(|p| p.line()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let orphan = s
        .report
        .problems
        .iter()
        .find(|p| p.kind == OutcomeKind::Orphan);
    assert_eq!(orphan.and_then(|p| p.file.as_deref()), Some("b-0.9.0.tgz"));
}
