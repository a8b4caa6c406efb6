//! Answers from a fake CouchDB larger than any it sends: a document, or a `_changes` page still
//! over the migration's limit when asked for one document (by its `Content-Length`, or as it
//! streams), fails the run with a backend error naming the request and the limit, without being
//! read whole; an error answer is read for the start of its message only. No real server is
//! needed. (A page that fits when asked for fewer documents: `scripted.rs`.)

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tarvault::migrate::MigrateOptions;
use tarvault::ErrorKind;

use crate::fake::{changes_page, migration, row, serve, Handler, Length, Resp};
use crate::scripted::deleted_meanwhile;

/// 2^62: more memory than any machine has.
const HUGE: u64 = 1 << 62;

/// Runs a migration of `url` (options edited by `edit`), which must fail within 20 s.
async fn run_fails(url: &str, edit: impl FnOnce(&mut MigrateOptions)) -> tarvault::Error {
    let dir = tempfile::tempdir().expect("tempdir");
    let migration = migration(url, dir.path(), edit).await;
    match tokio::time::timeout(Duration::from_secs(20), migration.run()).await {
        Err(_) => panic!("the run was still going after 20 s"),
        Ok(Ok(s)) => panic!("the run must fail: {:?}", s.report.counts),
        Ok(Err(e)) => e,
    }
}

/// A registry whose every `_changes` request is answered with `page`.
fn changes_answered(page: Resp) -> Handler {
    Arc::new(move |req| match req.segs.as_slice() {
        [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": 1})),
        [_db, c] if c == "_changes" => page.clone(),
        _ => Resp::not_found(),
    })
}

fn assert_names(e: &tarvault::Error, parts: &[&str]) {
    assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    let text = e.to_string();
    for part in parts {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
}

/// A `_changes` page claiming 2^62 bytes (and then silent) is refused by its claim, at once.
#[tokio::test]
async fn a_changes_page_claiming_2_62_bytes_is_refused_unread() {
    let page = Resp {
        length: Length::Claimed(HUGE),
        hold: true,
        ..Resp::json(200, json!({"results": [], "last_seq": 0}))
    };
    let url = serve(changes_answered(page)).await;
    let e = run_fails(&url, |_| {}).await;
    assert_names(
        &e,
        &[
            "/registry/_changes?",
            "4611686018427387904 bytes",
            "268435456-byte limit",
        ],
    );
}

/// A chunked `_changes` page (no length up front) larger than the limit is read up to the limit.
#[tokio::test]
async fn a_streamed_changes_page_over_the_limit_is_refused() {
    let mut doc = row(1, "a", json!({"shasum": "00"}), b"x");
    doc["doc"]["readme"] = json!("r".repeat(256 << 10));
    let rows = vec![doc];
    let handler: Handler = Arc::new(move |req| match req.segs.as_slice() {
        [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": 1})),
        [_db, c] if c == "_changes" => Resp {
            length: Length::Chunked,
            ..changes_page(&rows, req)
        },
        _ => Resp::not_found(),
    });
    let url = serve(handler).await;
    let e = run_fails(&url, |o| o.max_body = 64 << 10).await;
    assert_names(
        &e,
        &[
            "/registry/_changes?",
            "more than 65536 bytes",
            "65536-byte limit",
        ],
    );
}

/// The document read when an attachment is missing (for its current revision) is bounded too.
#[tokio::test]
async fn a_document_claiming_2_62_bytes_is_refused_unread() {
    let doc = Resp {
        length: Length::Claimed(HUGE),
        hold: true,
        ..Resp::json(200, json!({"_id": "c", "_rev": "2-b"}))
    };
    let url = serve(deleted_meanwhile("c", None, doc)).await;
    let e = run_fails(&url, |_| {}).await;
    assert_names(
        &e,
        &["GET document", "/registry/c:", "4611686018427387904 bytes"],
    );
}

/// An error answer is read for the start of its message only: a long one that never ends fails
/// the run at once, with its start in the message, not after the client's read timeout.
#[tokio::test]
async fn an_error_body_is_read_for_its_start_only() {
    let body = format!(
        "{{\"error\":\"bad_request\",\"reason\":\"{}\"}}",
        "z".repeat(64 << 10)
    );
    let refused = Resp {
        length: Length::Claimed(body.len() as u64 + 1),
        hold: true,
        ..Resp::bytes(body.as_bytes())
    };
    let refused = Resp {
        status: 400,
        ..refused
    };
    let url = serve(changes_answered(refused)).await;
    let e = run_fails(&url, |_| {}).await;
    assert_names(&e, &["HTTP 400", "bad_request", "zzzz"]);
}
