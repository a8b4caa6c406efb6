//! Cases scripted on the fake CouchDB of `fake.rs`: they run without pouchdb-server.

use serde_json::json;
use tarvault::migrate::OutcomeKind;

use crate::fake::{couch_md5, migration, row, serve, static_registry, Attachments};

/// `(id, attachment) → bytes` for packages whose attachment is `<id>-1.0.0.tgz`.
fn atts(of: &[(&str, &[u8])]) -> Attachments {
    of.iter()
        .map(|(id, data)| ((id.to_string(), format!("{id}-1.0.0.tgz")), data.to_vec()))
        .collect()
}

const TGZ: &[u8] = b"pretend this is a gzipped tarball";
const OTHER: &[u8] = b"some other bytes entirely";

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
