//! Cases scripted on the fake CouchDB of `fake.rs`: they run without pouchdb-server.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use serde_json::{json, Value};
use tarvault::migrate::{OutcomeKind, Problem, Seq, State, Summary};
use tarvault::{ErrorKind, Store};

use crate::common::{sha1_hex, sha512_sri};
use crate::fake::{
    changes_page, couch_md5, migrate_once, migration, row, serve, sha1_sri, static_registry,
};
use crate::fake::{Attachments, Handler, Length, Resp};

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

/// Old registries kept version keys with build metadata (`1.0.0+build.5`), and their tarballs'
/// names with them. CouchDB reads a bare `+` in a request path as a space (as the fake does), so
/// the attachment must be asked for with the `+` encoded, or it is a 404 at the very revision
/// that lists it: reported missing, and never migrated.
#[tokio::test]
async fn an_attachment_with_a_plus_in_its_name_is_migrated() {
    let file = "plus-1.0.0+build.5.tgz";
    let mut r = row(1, "plus", json!({"shasum": sha1_hex(TGZ)}), TGZ);
    let doc = &mut r["doc"];
    let v = doc["versions"]["1.0.0"].take();
    doc["versions"] = json!({"1.0.0+build.5": v});
    doc["versions"]["1.0.0+build.5"]["dist"]["tarball"] = json!(format!("http://r/plus/-/{file}"));
    let stub = doc["_attachments"]["plus-1.0.0.tgz"].take();
    doc["_attachments"] = json!({file: stub});
    let atts: Attachments = [(("plus".to_string(), file.to_string()), TGZ.to_vec())].into();
    let rev_asked = Arc::new(Mutex::new(Vec::new()));
    let registry = static_registry(vec![r.clone()], atts);
    let asked = rev_asked.clone();
    let doc = r["doc"].clone();
    let url = serve(Arc::new(move |req| match req.segs.as_slice() {
        // The document, as asked for when an attachment is 404.
        [_db, id] if id == "plus" => {
            asked.lock().expect("lock").push(id.clone());
            Resp::json(200, doc.clone())
        }
        _ => registry(req),
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = migrate_once(&url, dir.path()).await;
    let c = summary.report.counts;
    assert_eq!((c.migrated, c.failures()), (1, 0), "{:#?}", summary.report);
    assert!(
        map_text(dir.path()).contains(file),
        "{}",
        map_text(dir.path())
    );
    assert_eq!(blob_count(dir.path()).await, 1);
    assert!(
        rev_asked.lock().expect("lock").is_empty(),
        "no 404 to look into"
    );
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

/// Package `id` (read from the feed at `1-a`) is deleted as soon as its attachment is asked for:
/// the attachment at the current revision is 404, at `?rev=1-a` it is `old_rev` (what CouchDB
/// serves until compaction), and the document itself answers `doc`.
pub fn deleted_meanwhile(id: &'static str, old_rev: Option<&'static [u8]>, doc: Resp) -> Handler {
    let rows = vec![row(1, id, json!({"shasum": sha1_hex(TGZ)}), TGZ)];
    let doc = Arc::new(doc);
    Arc::new(move |req| match req.segs.as_slice() {
        [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": 1})),
        [_db, c] if c == "_changes" => changes_page(&rows, req),
        [_db, d] if d == id => (*doc).clone(),
        [_db, d, _] if d == id => match (req.q("rev"), old_rev) {
            (Some("1-a"), Some(bytes)) => Resp::bytes(bytes),
            _ => Resp::not_found(),
        },
        _ => Resp::not_found(),
    })
}

/// The attachment is fetched at the revision the feed showed, so a package deleted (or
/// republished) meanwhile is still migrated while its old revision is kept.
#[tokio::test]
async fn a_document_deleted_mid_run_is_fetched_at_the_revision_read() {
    let deleted = Resp::json(404, json!({"error": "not_found", "reason": "deleted"}));
    let url = serve(deleted_meanwhile("c", Some(TGZ), deleted)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect("run");
    let c = s.report.counts;
    assert!(s.report.is_success(), "{c:?}");
    assert_eq!((c.migrated, c.gone), (1, 0), "{c:?}");
}

/// Gone at that revision too (compacted): counted as gone meanwhile, with a note, not a failure.
/// But an attachment missing from the very revision that lists it is still a failure.
#[tokio::test]
async fn an_attachment_gone_with_its_revision_is_noted_not_failed() {
    let deleted = Resp::json(404, json!({"error": "not_found", "reason": "deleted"}));
    let url = serve(deleted_meanwhile("c", None, deleted)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect("run");
    let c = s.report.counts;
    assert!(s.report.is_success(), "{c:?}");
    assert_eq!((c.documents, c.migrated, c.gone), (1, 0, 1), "{c:?}");
    let p = &s.report.problems[0];
    assert_eq!((p.kind, p.id.as_str()), (OutcomeKind::Gone, "c"));
    assert_eq!(p.file.as_deref(), Some("c-1.0.0.tgz"));
    assert!(!OutcomeKind::Gone.is_failure());

    let same_rev = Resp::json(200, json!({"_id": "m", "_rev": "1-a"}));
    let url = serve(deleted_meanwhile("m", None, same_rev)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect("run");
    let c = s.report.counts;
    assert_eq!((c.attachment_missing, c.gone), (1, 0), "{c:?}");
    assert!(!s.report.is_success());
}

/// An attachment the server lacks at the very revision that lists it is one failure however
/// often its document changes: a later revision (a new readme) still lacking it adds no second
/// problem line and no second count, as the problems file promises for a broken version that
/// stays broken.
#[tokio::test]
async fn an_attachment_still_missing_after_a_change_is_one_problem() {
    let rows = Arc::new(Mutex::new(vec![row(
        1,
        "m",
        json!({"shasum": sha1_hex(TGZ)}),
        TGZ,
    )]));
    let feed = rows.clone();
    let url = serve(Arc::new(move |req| {
        let rows = feed.lock().expect("rows").clone();
        let last = rows.last().map(|r| r["doc"].clone()).unwrap_or_default();
        match req.segs.as_slice() {
            [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": 1})),
            [_db, c] if c == "_changes" => changes_page(&rows, req),
            // The document as it is now; its attachment is 404 at every revision.
            [_db, id] if id == "m" => Resp::json(200, last),
            _ => Resp::not_found(),
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = migrate_once(&url, dir.path()).await;
    assert_eq!(
        first.report.counts.attachment_missing, 1,
        "{:#?}",
        first.report
    );

    let mut changed = row(2, "m", json!({"shasum": sha1_hex(TGZ)}), TGZ);
    changed["doc"]["_rev"] = json!("2-b");
    changed["doc"]["readme"] = json!("now with a readme");
    rows.lock().expect("rows").push(changed);
    let second = migrate_once(&url, dir.path()).await;
    assert_eq!(
        second.run.attachment_missing, 1,
        "read again: {:#?}",
        second.run
    );
    let c = second.report.counts;
    assert_eq!((c.attachment_missing, c.failures()), (1, 1), "{c:?}");
    let lines = std::fs::read_to_string(dir.path().join("state.json.problems.jsonl"))
        .expect("problems file");
    assert_eq!(lines.lines().count(), 1, "{lines}");
}

fn state_since(dir: &Path) -> Option<Value> {
    let state = State::load(&dir.join("state.json"))
        .expect("state")
        .expect("a state file");
    state.since.map(|s| s.0)
}

/// A registry whose feed and attachments can grow between runs; `update_seq` in `GET /db` or not.
struct Growing {
    rows: Arc<Mutex<Vec<Value>>>,
    atts: Arc<Mutex<Attachments>>,
    longpolls: Arc<AtomicBool>,
}

impl Growing {
    fn new() -> Growing {
        Growing {
            rows: Arc::default(),
            atts: Arc::default(),
            longpolls: Arc::default(),
        }
    }

    fn publish(&self, seq: i64, id: &str) {
        self.publish_padded(seq, id, 0);
    }

    /// [`Growing::publish`] of a document with `pad` bytes of readme.
    fn publish_padded(&self, seq: i64, id: &str, pad: usize) {
        let (r, data) = padded_row(seq, id, pad);
        self.rows.lock().expect("rows").push(r);
        let key = (id.to_string(), format!("{id}-1.0.0.tgz"));
        self.atts.lock().expect("atts").insert(key, data);
    }

    fn handler(&self, update_seq: bool) -> Handler {
        let (rows, atts, longpolls) =
            (self.rows.clone(), self.atts.clone(), self.longpolls.clone());
        Arc::new(move |req| {
            let rows = rows.lock().expect("rows").clone();
            match req.segs.as_slice() {
                [_db] => {
                    let mut info = json!({"db_name": "registry", "doc_count": rows.len()});
                    if update_seq {
                        info["update_seq"] = json!(rows.len());
                    }
                    Resp::json(200, info)
                }
                [_db, c] if c == "_changes" => {
                    if req.q("feed") == Some("longpoll") {
                        longpolls.store(true, Ordering::SeqCst);
                    }
                    changes_page(&rows, req)
                }
                [_db, id, att] => {
                    match atts.lock().expect("atts").get(&(id.clone(), att.clone())) {
                        Some(b) => Resp::bytes(b),
                        None => Resp::not_found(),
                    }
                }
                _ => Resp::not_found(),
            }
        })
    }
}

/// `--since now` is checkpointed as the position it stood for (from `update_seq`, or from the
/// feed's `last_seq`), so a later run picks up what was published in between.
#[tokio::test]
async fn since_now_is_checkpointed_as_the_position_it_stood_for() {
    for update_seq in [false, true] {
        let registry = Growing::new();
        registry.publish(1, "old");
        let url = serve(registry.handler(update_seq)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let first = migration(&url, dir.path(), |o| o.since = Some(Seq::from_arg("now")))
            .await
            .run()
            .await
            .expect("first run");
        assert!(first.caught_up);
        assert_eq!(first.report.counts.documents, 0);
        assert_eq!(
            first.since.map(|s| s.0),
            Some(json!(1)),
            "update_seq {update_seq}"
        );
        assert_eq!(state_since(dir.path()), Some(json!(1)));

        registry.publish(2, "new");
        let second = migration(&url, dir.path(), |_| {})
            .await
            .run()
            .await
            .expect("second run");
        let c = second.report.counts;
        assert_eq!(
            (c.documents, c.migrated),
            (1, 1),
            "update_seq {update_seq}: {c:?}"
        );
        assert!(map_text(dir.path()).contains(r#""name":"new""#));
        assert!(!map_text(dir.path()).contains(r#""name":"old""#));
    }
}

/// `--follow --since now` stopped before any change is published keeps the position "now" meant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_from_now_stopped_before_any_change_keeps_its_position() {
    let registry = Growing::new();
    registry.publish(1, "old");
    let url = serve(registry.handler(false)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let m = migration(&url, dir.path(), |o| {
        o.since = Some(Seq::from_arg("now"));
        o.follow = true;
    })
    .await;
    let stopper = m.stopper();
    let running = tokio::spawn(async move { m.run().await });
    // Stop once the feed has caught up and waits for changes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !registry.longpolls.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "never reached longpoll"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stopper.stop();
    let first = running.await.expect("join").expect("run");
    assert!(first.interrupted);
    assert_eq!(state_since(dir.path()), Some(json!(1)));

    registry.publish(2, "new");
    let second = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect("second run");
    assert_eq!(
        second.report.counts.migrated, 1,
        "{:?}",
        second.report.counts
    );
}

/// `--map` has a default, so a second migration (or one whose state file was lost) easily points
/// at an earlier migration's mapping: with no state file saying how much of it counts, the run
/// refuses to start instead of emptying it.
#[tokio::test]
async fn an_existing_mapping_without_a_state_file_is_refused() {
    let url = serve(static_registry(
        vec![row(1, "e", json!({"shasum": sha1_hex(TGZ)}), TGZ)],
        atts(&[("e", TGZ)]),
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let earlier = format!(
        "{}\n",
        json!({"name": "left-pad", "version": "1.3.0", "file": "left-pad-1.3.0.tgz",
            "integrity": sha512_sri(OTHER), "shasum": sha1_hex(OTHER), "size": OTHER.len()})
    );
    std::fs::write(dir.path().join("map.jsonl"), &earlier).expect("write mapping");
    let err = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("map.jsonl") && msg.contains("--state"),
        "{msg}"
    );
    assert_eq!(map_text(dir.path()), earlier, "the mapping was modified");
    assert!(!dir.path().join("state.json").exists());
    assert_eq!(blob_count(dir.path()).await, 0);

    // An empty mapping is nothing to lose: a new migration starts with it.
    std::fs::write(dir.path().join("map.jsonl"), "").expect("empty mapping");
    let s = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect("run");
    assert_eq!(s.report.counts.migrated, 1);
}

/// A feed that keeps going back (from seq 2 it sends seq 1 again, from 1 it sends 2: a broken or
/// hostile server) ends a run that does not follow with a Backend error naming the position,
/// after the same position started a few pages, instead of running forever and counting the
/// same documents again and again. Both packages are mapped once.
#[tokio::test]
async fn a_feed_that_goes_round_in_circles_stops_the_run() {
    let (a, b) = (b"tarball of a".to_vec(), b"tarball of b".to_vec());
    let rows = vec![
        row(1, "a", json!({"shasum": sha1_hex(&a)}), &a),
        row(2, "b", json!({"shasum": sha1_hex(&b)}), &b),
    ];
    let served = atts(&[("a", &a), ("b", &b)]);
    let pages = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = pages.clone();
    let handler: Handler = Arc::new(move |req| match req.segs.as_slice() {
        [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": 2})),
        [_db, c] if c == "_changes" => {
            counted.fetch_add(1, Ordering::SeqCst);
            let results = match req.q("since") {
                Some("2") => vec![rows[0].clone()],
                Some("1") => vec![rows[1].clone()],
                _ => rows.clone(),
            };
            let last = results.last().map(|r| r["seq"].clone());
            Resp::json(200, json!({"results": results, "last_seq": last}))
        }
        [_db, id, att] => match served.get(&(id.clone(), att.clone())) {
            Some(bytes) => Resp::bytes(bytes),
            None => Resp::not_found(),
        },
        _ => Resp::not_found(),
    });
    let url = serve(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let migration = migration(&url, dir.path(), |_| {}).await;
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), migration.run())
        .await
        .expect("the run never ended")
        .expect_err("a feed going round in circles is an error");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("seq 2"), "{err}");
    assert!(
        pages.load(Ordering::SeqCst) < 20,
        "stopped after a few pages"
    );
    assert_eq!(map_text(dir.path()).lines().count(), 2);
}

/// An attachment whose body breaks off every time (the server claims more than it sends) ends the
/// run, after its retries, with a Backend error that names the tarball, not a bare "reading input
/// failed". Nothing is stored or mapped.
#[tokio::test]
async fn a_download_that_always_breaks_off_names_its_tarball() {
    let a = b"tarball of a".to_vec();
    let rows = vec![row(1, "a", json!({"shasum": sha1_hex(&a)}), &a)];
    let served = a.clone();
    let handler: Handler = Arc::new(move |req| match req.segs.as_slice() {
        [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": 1})),
        [_db, c] if c == "_changes" => changes_page(&rows, req),
        [_db, _id, _att] => {
            let mut r = Resp::bytes(&served[..4]);
            r.length = crate::fake::Length::Claimed(served.len() as u64);
            r
        }
        _ => Resp::not_found(),
    });
    let url = serve(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let err = migration(&url, dir.path(), |_| {})
        .await
        .run()
        .await
        .expect_err("the body never comes whole");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(err.to_string().contains("a@1.0.0 (a-1.0.0.tgz)"), "{err}");
    assert_eq!(blob_count(dir.path()).await, 0);
    assert_eq!(map_text(dir.path()), "");
}

/// The `max_body` of the tests below: a page of four padded documents is over it, two fit.
const CAP: u64 = 32 << 10;

/// A row for package `id` whose document carries `pad` bytes of readme, and its tarball.
fn padded_row(seq: i64, id: &str, pad: usize) -> (Value, Vec<u8>) {
    let data = format!("tarball of {id}").into_bytes();
    let mut r = row(seq, id, json!({"shasum": sha1_hex(&data)}), &data);
    r["doc"]["readme"] = json!("r".repeat(pad));
    (r, data)
}

/// Waits until `done`, failing after 20 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The `(since, limit)` of every `_changes` request, and whether it was a longpoll.
type Asked = Arc<Mutex<Vec<(Option<String>, usize, bool)>>>;

/// `inner`, noting every `_changes` request in `asked` and sending its pages as `length` says.
fn noting(inner: Handler, asked: Asked, length: Length) -> Handler {
    Arc::new(move |req| {
        let mut resp = inner(req);
        if matches!(req.segs.as_slice(), [_db, c] if c == "_changes") {
            let limit = req.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
            let since = req.q("since").map(str::to_string);
            let longpoll = req.q("feed") == Some("longpoll");
            asked.lock().expect("asked").push((since, limit, longpoll));
            resp.length = length;
        }
        resp
    })
}

/// Migrates, with `batch` 4 and `max_body` [`CAP`], a registry of packages `(seq, id, readme
/// bytes)` whose `_changes` pages are sent as `length` says: the run's result, every `_changes`
/// request it made, and the directory of its store, state and mapping.
async fn run_padded(
    docs: &[(i64, String, usize)],
    length: Length,
) -> (tarvault::Result<Summary>, Asked, tempfile::TempDir) {
    let (rows, served): (Vec<Value>, Vec<(&str, Vec<u8>)>) = docs
        .iter()
        .map(|(seq, id, pad)| {
            let (r, data) = padded_row(*seq, id, *pad);
            (r, (id.as_str(), data))
        })
        .unzip();
    let served: Vec<(&str, &[u8])> = served.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    let asked = Asked::default();
    let handler = noting(static_registry(rows, atts(&served)), asked.clone(), length);
    let url = serve(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let result = migration(&url, dir.path(), |o| {
        o.batch = 4;
        o.max_body = CAP;
    })
    .await
    .run()
    .await;
    (result, asked, dir)
}

/// A page of `batch` documents over `max_body` (by its `Content-Length`, or found while it
/// streams) is asked again for fewer, and the limit grows back once a page fits: every package is
/// migrated and checkpointed, none twice.
#[tokio::test]
async fn a_page_over_max_body_is_asked_again_for_fewer_documents() {
    let docs: Vec<(i64, String, usize)> = (1..=6).map(|i| (i, format!("p{i}"), 10 << 10)).collect();
    for length in [Length::Exact, Length::Chunked] {
        let (result, asked, dir) = run_padded(&docs, length).await;
        let s = result.expect("a page over max_body is asked for less, not an error");
        let c = s.report.counts;
        assert_eq!((c.documents, c.migrated, c.failures()), (6, 6, 0), "{c:?}");
        assert_eq!(map_text(dir.path()).lines().count(), 6);
        assert_eq!(blob_count(dir.path()).await, 6);
        assert_eq!(state_since(dir.path()), Some(json!(6)));
        let asked = asked.lock().expect("asked").clone();
        let limits: Vec<usize> = asked.iter().map(|a| a.1).collect();
        // Halved to 2 from the start and from seq 2, grown back to 4 after each page that fits.
        assert_eq!(limits, [4, 2, 4, 2, 4, 4], "{asked:?}");
        let since: Vec<Option<&str>> = asked.iter().map(|a| a.0.as_deref()).collect();
        assert_eq!(
            since,
            [None, None, Some("2"), Some("2"), Some("4"), Some("6")],
            "{asked:?}"
        );
    }
}

/// `--follow` reads its longpoll pages the same way: four fat documents published at once come
/// in pages of two, and all are migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longpoll_page_over_max_body_is_asked_again_for_fewer_documents() {
    let registry = Growing::new();
    registry.publish(1, "first");
    let asked = Asked::default();
    let url = serve(noting(
        registry.handler(false),
        asked.clone(),
        Length::Exact,
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let m = migration(&url, dir.path(), |o| {
        o.follow = true;
        o.batch = 4;
        o.max_body = CAP;
    })
    .await;
    let stopper = m.stopper();
    let running = tokio::spawn(async move { m.run().await });
    until("reached longpoll", || {
        registry.longpolls.load(Ordering::SeqCst)
    })
    .await;
    for seq in 2..=5 {
        registry.publish_padded(seq, &format!("fat{seq}"), 10 << 10);
    }
    until("migrated the fat documents", || {
        map_text(dir.path()).lines().count() == 5
    })
    .await;
    stopper.stop();
    let s = running.await.expect("join").expect("run");
    assert_eq!(s.report.counts.migrated, 5, "{:?}", s.report.counts);
    assert_eq!(state_since(dir.path()), Some(json!(5)));
    let asked = asked.lock().expect("asked").clone();
    assert!(
        asked.contains(&(Some("1".into()), 2, true)),
        "no longpoll for 2 from seq 1: {asked:?}"
    );
}

/// A single document over `max_body` cannot be asked for in a smaller page: the run ends with a
/// Backend error naming the position before it and the option to raise, once the packages before
/// it are migrated and checkpointed.
#[tokio::test]
async fn a_single_document_over_max_body_ends_the_run_at_its_position() {
    let docs = [
        (1, "a", 100),
        (2, "b", 100),
        (3, "fat", 40 << 10),
        (4, "d", 100),
    ]
    .map(|(seq, id, pad)| (seq, id.to_string(), pad));
    let (result, asked, dir) = run_padded(&docs, Length::Exact).await;
    let err = result.expect_err("one document over max_body ends the run");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    let text = err.to_string();
    for part in ["seq 2", "MigrateOptions::max_body", "32768-byte limit"] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
    let map = map_text(dir.path());
    assert_eq!(map.lines().count(), 2, "{map}");
    assert!(
        map.contains(r#""name":"a""#) && map.contains(r#""name":"b""#),
        "{map}"
    );
    assert_eq!(blob_count(dir.path()).await, 2);
    assert_eq!(state_since(dir.path()), Some(json!(2)));
    let limits: Vec<usize> = asked.lock().expect("asked").iter().map(|a| a.1).collect();
    assert_eq!(limits, [4, 2, 4, 2, 1], "asked down to one document");
}

/// A migration into a store that takes no writes (an `http://` store, another tarvault's server)
/// stops on its first put with that store's error, of kind `Unsupported`, and files no tarball as
/// rejected: the refusal is the store's, not the tarball's, and a re-run into a writable store
/// must still migrate it.
#[cfg(all(feature = "http", feature = "server", feature = "memory"))]
#[tokio::test]
async fn a_store_that_takes_no_writes_stops_the_run_and_rejects_no_tarball() {
    use tarvault::migrate::{CouchSource, MigrateOptions, Migration};
    let rows = vec![row(1, "a", json!({"shasum": sha1_hex(TGZ)}), TGZ)];
    let url = serve(static_registry(rows, atts(&[("a", TGZ)]))).await;
    let upstream = crate::common::serve(tarvault::server::Server::new(Store::memory())).await;
    let store = Store::open(&upstream).await.expect("http store");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = MigrateOptions::new(dir.path().join("state.json"), dir.path().join("map.jsonl"));
    let source = CouchSource::parse(&url).expect("source");
    let err = Migration::new(source, store, options)
        .expect("migration")
        .run()
        .await
        .expect_err("an http:// store takes no puts");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(map_text(dir.path()).is_empty());
    let problems = std::fs::read_to_string(dir.path().join("state.json.problems.jsonl"));
    let problems = problems.unwrap_or_default();
    assert!(!problems.contains("rejected"), "{problems}");
}

/// A server that cannot be reached is named with the cause, not only with reqwest's own "error
/// sending request", which says nothing of why: the client's error is the source of the
/// migration's, and its report reaches the reason (here a refused connection).
#[tokio::test]
async fn an_unreachable_server_is_reported_with_its_cause() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("port").port();
    drop(closed);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{port}/registry");
    let err = match migration(&url, dir.path(), |_| {}).await.run().await {
        Ok(s) => panic!("migrated from a closed port: {s:?}"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    let report = err.report().to_string();
    assert!(report.contains("GET database"), "{report}");
    assert!(
        report.to_lowercase().contains("connection refused"),
        "{report}"
    );
}

/// A put that a delete overtakes (a gc in another process removes the blob the put found already
/// stored, before the put could mark it recent) is tried again, not the end of the run: the
/// delete means only that the blob must be written anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_overtaken_by_a_delete_is_tried_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = format!("file://{}?fsync=false", dir.path().join("store").display());
    let store = Store::open(&spec).await.expect("store");
    let put = store
        .put_bytes(TGZ.to_vec(), &tarvault::PutOptions::default())
        .await
        .expect("seed");
    assert!(put.stored);
    let address = tarvault::Integrity::parse(&sha512_sri(TGZ)).expect("address");
    let dist = json!({"shasum": sha1_hex(TGZ), "integrity": sha512_sri(TGZ)});
    let registry = static_registry(vec![row(1, "a", dist, TGZ)], atts(&[("a", TGZ)]));
    // The first download stops half-way for a while, and the blob is deleted meanwhile.
    let first = Arc::new(AtomicBool::new(true));
    let asked = Arc::new(tokio::sync::Notify::new());
    let handler: Handler = {
        let (first, asked) = (first.clone(), asked.clone());
        Arc::new(move |req| {
            let mut r = registry(req);
            if req.segs.len() == 3 && first.swap(false, Ordering::SeqCst) {
                r.pause = Some((TGZ.len() / 2, std::time::Duration::from_millis(500)));
                asked.notify_one();
            }
            r
        })
    };
    let url = serve(handler).await;
    let deleter = {
        let (store, address) = (store.clone(), address.clone());
        tokio::spawn(async move {
            asked.notified().await;
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            store.delete(&address).await.expect("delete")
        })
    };
    let summary = migrate_once(&url, dir.path()).await;
    assert!(
        deleter.await.expect("deleter"),
        "the blob was there to delete"
    );
    assert!(
        !first.load(Ordering::SeqCst),
        "the attachment was downloaded"
    );
    assert_eq!(summary.report.counts.migrated, 1, "{summary:?}");
    assert!(store.contains(&address).await.expect("has"), "stored again");
    assert_eq!(map_text(dir.path()).lines().count(), 1);
}

/// The first problem of the run's report that `which` picks.
fn line_of(s: &Summary, which: impl Fn(&Problem) -> bool) -> &Problem {
    let found = s.report.problems.iter().find(|p| which(p));
    found.unwrap_or_else(|| panic!("no such line: {:#?}", s.report.problems))
}

/// A losing revision is read with retries, and as the feed's documents are: with each
/// attachment's encoding, so that the md5 of an attachment CouchDB keeps gzipped (the gzip
/// bytes' digest) is not held against the tarball. Its own tarball is fetched at that revision
/// and stored, not mapped.
#[tokio::test]
async fn a_losing_revision_is_read_again_after_a_503_and_its_tarballs_stored() {
    const LOST: &[u8] = b"the tarball only the losing revision holds";
    let mut winner = row(1, "p", json!({"shasum": sha1_hex(TGZ)}), TGZ);
    winner["doc"]["_conflicts"] = json!(["1-b"]);
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = reads.clone();
    let handler: Handler = Arc::new(move |req| match req.segs.as_slice() {
        [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": 1})),
        [_db, c] if c == "_changes" => changes_page(std::slice::from_ref(&winner), req),
        [_db, id] if id == "p" && req.q("rev") == Some("1-b") => {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                return Resp::json(503, json!({"error": "unavailable"}));
            }
            let mut stub = json!({"content_type": "application/octet-stream",
                "digest": couch_md5(b"the gzip bytes"), "length": LOST.len(), "stub": true});
            if req.q("att_encoding_info") == Some("true") {
                stub["encoding"] = json!("gzip");
            }
            Resp::json(
                200,
                json!({"_id": "p", "_rev": "1-b", "name": "p",
                    "versions": {"0.5.0": {"name": "p", "version": "0.5.0", "dist": {
                        "tarball": "http://r/p/-/p-0.5.0.tgz", "shasum": sha1_hex(LOST)}},
                        "0.6.0": {"name": "p", "version": "0.6.0", "dist": {
                        "tarball": "http://r/p/-/p-0.6.0.tgz", "shasum": sha1_hex(OTHER)}}},
                    "_attachments": {"p-0.5.0.tgz": stub,
                        "p-0.6.0.tgz": {"length": OTHER.len(), "stub": true}}}),
            )
        }
        // The winner has moved on since the feed's row.
        [_db, id] if id == "p" => Resp::json(200, json!({"_id": "p", "_rev": "2-c"})),
        [_db, id, att] if id == "p" => match (att.as_str(), req.q("rev")) {
            ("p-1.0.0.tgz", Some("1-a")) => Resp::bytes(TGZ),
            ("p-0.5.0.tgz", Some("1-b")) => Resp::bytes(LOST),
            _ => Resp::not_found(),
        },
        _ => Resp::not_found(),
    });
    let url = serve(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migrate_once(&url, dir.path()).await;
    let c = s.report.counts;
    assert_eq!(
        (c.migrated, c.losing_revision, c.losing_tarball),
        (1, 1, 2),
        "{c:?} {:#?}",
        s.report.problems
    );
    assert!(s.report.is_success(), "{c:?}");
    assert_eq!(reads.load(Ordering::SeqCst), 2, "read again after the 503");
    assert_eq!(blob_count(dir.path()).await, 2);
    let lost = line_of(&s, |p| p.kind == OutcomeKind::LosingTarball);
    assert_eq!(lost.version.as_deref(), Some("0.5.0"));
    assert!(lost.detail.contains(&sha512_sri(LOST)), "{lost:?}");
    assert!(!map_text(dir.path()).contains("0.5.0"), "not mapped");
    // Its other tarball is not served at that revision: said so, and not as a change of the
    // document (which would name the winner's revision).
    let missing = line_of(&s, |p| p.version.as_deref() == Some("0.6.0"));
    assert_eq!(missing.kind, OutcomeKind::LosingTarball);
    assert!(missing.detail.contains("404"), "{missing:?}");
    assert!(!missing.detail.contains("2-c"), "{missing:?}");
}

/// Only bytes that verified vouch for a losing revision's tarball: the winner's 1.0.0 comes back
/// with other bytes than its shasum (a failure), and the losing revision's 1.0.0, with the same
/// shasum, is fetched from that revision and stored.
#[tokio::test]
async fn a_losing_tarball_is_stored_when_the_winners_copy_did_not_verify() {
    let mut winner = row(1, "q", json!({"shasum": sha1_hex(TGZ)}), TGZ);
    winner["doc"]["_conflicts"] = json!(["1-b"]);
    let mut loser = row(1, "q", json!({"shasum": sha1_hex(TGZ)}), TGZ)["doc"].clone();
    loser["_rev"] = json!("1-b");
    let handler: Handler = Arc::new(move |req| match req.segs.as_slice() {
        [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": 1})),
        [_db, c] if c == "_changes" => changes_page(std::slice::from_ref(&winner), req),
        [_db, id] if id == "q" && req.q("rev") == Some("1-b") => Resp::json(200, loser.clone()),
        [_db, id] if id == "q" => Resp::json(200, json!({"_id": "q", "_rev": "1-a"})),
        [_db, id, att] if id == "q" && att == "q-1.0.0.tgz" => match req.q("rev") {
            Some("1-a") => Resp::bytes(OTHER),
            Some("1-b") => Resp::bytes(TGZ),
            _ => Resp::not_found(),
        },
        _ => Resp::not_found(),
    });
    let url = serve(handler).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migrate_once(&url, dir.path()).await;
    let c = s.report.counts;
    assert_eq!(
        (c.migrated, c.digest_mismatch, c.losing_tarball),
        (0, 1, 1),
        "{c:?} {:#?}",
        s.report.problems
    );
    let lost = line_of(&s, |p| p.kind == OutcomeKind::LosingTarball);
    assert_eq!(lost.integrity.as_deref(), Some(sha512_sri(TGZ).as_str()));
    assert_eq!(blob_count(dir.path()).await, 1);
}

/// `keep_orphans` stores only what CouchDB's md5 vouches for: an orphan whose bytes disagree
/// with its md5, and one stored gzipped (its md5 is of the gzip bytes), are listed, not stored.
#[tokio::test]
async fn kept_orphans_are_only_those_their_md5_vouches_for() {
    let mut r = row(1, "o", json!({"shasum": sha1_hex(TGZ)}), TGZ);
    let stub = |digest: &[u8], len: usize| {
        json!({"content_type": "application/octet-stream", "digest": couch_md5(digest),
            "length": len, "stub": true})
    };
    let stubs = &mut r["doc"]["_attachments"];
    stubs["good.tgz"] = stub(OTHER, OTHER.len());
    stubs["forged.tgz"] = stub(b"not these bytes", OTHER.len());
    stubs["zipped.tgz"] = stub(b"gzip bytes", OTHER.len());
    stubs["zipped.tgz"]["encoding"] = json!("gzip");
    let mut served = atts(&[("o", TGZ)]);
    for name in ["good.tgz", "forged.tgz", "zipped.tgz"] {
        served.insert(("o".into(), name.into()), OTHER.to_vec());
    }
    let url = serve(static_registry(vec![r], served)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = migration(&url, dir.path(), |o| o.keep_orphans = true)
        .await
        .run()
        .await
        .expect("run");
    let c = s.report.counts;
    assert_eq!((c.migrated, c.orphan), (1, 3), "{c:?}");
    assert!(s.report.is_success(), "orphans are not failures: {c:?}");
    let of = |file: &str| line_of(&s, |p| p.file.as_deref() == Some(file)).clone();
    let good = of("good.tgz");
    assert_eq!(good.integrity.as_deref(), Some(sha512_sri(OTHER).as_str()));
    for refused in [of("forged.tgz"), of("zipped.tgz")] {
        assert!(refused.detail.contains("not stored"), "{refused:?}");
        assert_eq!(refused.integrity, None, "{refused:?}");
    }
    assert_eq!(blob_count(dir.path()).await, 2);
}

/// `fetch_missing`: a version whose document holds no attachment for it is fetched from its
/// `dist.tarball` on another host, without the source's credentials, verified against its
/// shasum and mapped; one whose bytes there disagree, one answered 404 and one refused (403) are
/// failures of their own, not the run's, as is every such version without the option (and then
/// nothing is asked of that host).
#[tokio::test]
async fn fetch_missing_takes_a_version_from_its_dist_tarball() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let files: Handler = Arc::new(move |req| {
        seen.lock()
            .expect("lock")
            .push((req.segs.join("/"), req.auth));
        match req.segs.as_slice() {
            [f, name] if f == "files" && name == "a-1.0.0.tgz" => Resp::bytes(TGZ),
            [f, name] if f == "files" && name == "b-1.0.0.tgz" => Resp::bytes(OTHER),
            [f, name] if f == "files" && name == "d-1.0.0.tgz" => {
                Resp::json(403, json!({"error": "forbidden"}))
            }
            _ => Resp::not_found(),
        }
    });
    let host = serve(files).await.replace("/registry", "/files");
    let skim = |seq: i64, id: &str| {
        let mut r = row(
            seq,
            id,
            json!({"shasum": sha1_hex(TGZ), "tarball": format!("{host}/{id}-1.0.0.tgz")}),
            TGZ,
        );
        r["doc"]
            .as_object_mut()
            .expect("doc")
            .remove("_attachments");
        r
    };
    let rows = vec![skim(1, "a"), skim(2, "b"), skim(3, "c"), skim(4, "d")];
    let couch = serve(static_registry(rows, atts(&[]))).await;
    let with_credentials = couch.replace("http://", "http://migrator:s3cret@");
    for fetch in [false, true] {
        asked.lock().expect("lock").clear();
        let dir = tempfile::tempdir().expect("tempdir");
        let s = migration(&with_credentials, dir.path(), |o| o.fetch_missing = fetch)
            .await
            .run()
            .await
            .expect("run");
        let c = s.report.counts;
        let asked = asked.lock().expect("lock").clone();
        if !fetch {
            assert_eq!((c.migrated, c.attachment_missing), (0, 4), "{c:?}");
            assert!(asked.is_empty(), "{asked:?}");
            continue;
        }
        assert_eq!(
            (c.migrated, c.digest_mismatch, c.attachment_missing),
            (1, 1, 2),
            "{c:?} {:#?}",
            s.report.problems
        );
        assert!(
            map_text(dir.path()).contains(&sha512_sri(TGZ)),
            "a is mapped"
        );
        assert_eq!(blob_count(dir.path()).await, 1);
        assert_eq!(asked.len(), 4, "{asked:?}");
        assert!(
            asked.iter().all(|(_, auth)| !auth),
            "no credentials sent: {asked:?}"
        );
        let gone = line_of(&s, |p| p.id == "c");
        assert!(gone.detail.contains("404"), "{gone:?}");
        let refused = line_of(&s, |p| p.id == "d");
        assert!(refused.detail.contains("403"), "{refused:?}");
    }
}
