//! A scripted CouchDB in the test process (raw HTTP/1.1 on tokio): each test decides exactly what
//! every request is answered, for the cases a real server cannot be made to produce on cue (a
//! document deleted between the feed read and the attachment download, digests that disagree
//! with one another, `since=now`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use tarvault::migrate::{CouchSource, MigrateOptions, Migration, Summary};
use tarvault::Store;
use tokio::io::AsyncWriteExt;

/// One request: the decoded path segments after the host (`["registry", "_changes"]`) and the
/// decoded query. A path is decoded as CouchDB (mochiweb's `unquote`, up to 3.x) decodes it: like
/// a query string, a bare `+` a space.
pub struct Req {
    pub segs: Vec<String>,
    pub query: HashMap<String, String>,
    /// Whether the request carried an `Authorization` header.
    pub auth: bool,
}

impl Req {
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
}

/// An answer: status, body, and how long to wait before sending it (a longpoll with nothing new).
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay: Duration,
    pub length: Length,
    /// Leave the connection open once the body is written (for a minute), instead of closing it:
    /// a body that, as far as the client can tell, is not over.
    pub hold: bool,
    /// Write this many bytes of the body, then wait this long before the rest: a download caught
    /// half-way while something else happens.
    pub pause: Option<(usize, Duration)>,
}

/// How an answer's length is told.
#[derive(Clone, Copy)]
pub enum Length {
    /// `Content-Length` of the body.
    Exact,
    /// `Content-Length` of this many bytes, whatever the body holds.
    Claimed(u64),
    /// `Transfer-Encoding: chunked`: no length up front.
    Chunked,
}

impl Resp {
    pub fn json(status: u16, v: Value) -> Resp {
        Resp {
            status,
            body: serde_json::to_vec(&v).expect("json"),
            delay: Duration::ZERO,
            length: Length::Exact,
            hold: false,
            pause: None,
        }
    }

    pub fn bytes(body: &[u8]) -> Resp {
        Resp {
            status: 200,
            body: body.to_vec(),
            delay: Duration::ZERO,
            length: Length::Exact,
            hold: false,
            pause: None,
        }
    }

    pub fn not_found() -> Resp {
        Resp::json(404, json!({"error": "not_found", "reason": "missing"}))
    }
}

pub type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

/// Attachment bytes by `(document id, attachment name)`.
pub type Attachments = HashMap<(String, String), Vec<u8>>;

/// Serves `handler` on a loopback port; returns the database URL (`http://127.0.0.1:N/registry`).
pub async fn serve(handler: Handler) -> String {
    let (listener, addr) = crate::common::loopback().await;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(Some(buf)) = crate::common::request_proxy::read_head(&mut sock).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf).to_string();
                let target = head.split(' ').nth(1).unwrap_or("/").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
                let req = Req {
                    segs: path
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(|s| decode(&s.replace('+', " ")))
                        .collect(),
                    query: query
                        .split('&')
                        .filter(|s| !s.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (decode(k), decode(&v.replace('+', " ")))
                        })
                        .collect(),
                    auth: head
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("authorization:")),
                };
                let r = handler(&req);
                tokio::time::sleep(r.delay).await;
                let length = match r.length {
                    Length::Exact => format!("Content-Length: {}", r.body.len()),
                    Length::Claimed(n) => format!("Content-Length: {n}"),
                    Length::Chunked => "Transfer-Encoding: chunked".into(),
                };
                let head = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n{length}\r\n\
                     Connection: close\r\n\r\n",
                    r.status,
                );
                let _ = sock.write_all(head.as_bytes()).await;
                if let Length::Chunked = r.length {
                    let size = format!("{:x}\r\n", r.body.len());
                    let _ = sock.write_all(size.as_bytes()).await;
                    let _ = sock.write_all(&r.body).await;
                    let _ = sock.write_all(b"\r\n0\r\n\r\n").await;
                } else {
                    let at = r.pause.map_or(r.body.len(), |(at, _)| at.min(r.body.len()));
                    let (first, rest) = r.body.split_at(at);
                    let _ = sock.write_all(first).await;
                    if let Some((_, wait)) = r.pause {
                        let _ = sock.flush().await;
                        tokio::time::sleep(wait).await;
                    }
                    let _ = sock.write_all(rest).await;
                }
                if r.hold {
                    let _ = sock.flush().await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}/registry")
}

/// A `_changes` page over `rows` (integer `seq`s), as CouchDB 1.x answers it: `since=now` is the
/// end of the feed, and a longpoll with nothing new waits a little and returns nothing.
pub fn changes_page(rows: &[Value], req: &Req) -> Resp {
    let end = rows
        .iter()
        .filter_map(|r| r["seq"].as_i64())
        .max()
        .unwrap_or(0);
    if req.q("since") == Some("now") {
        return Resp::json(200, json!({"results": [], "last_seq": end}));
    }
    let since: i64 = req.q("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let limit: usize = req
        .q("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let mut rows: Vec<Value> = rows
        .iter()
        .filter(|r| r["seq"].as_i64().is_some_and(|s| s > since))
        .cloned()
        .collect();
    rows.sort_by_key(|r| r["seq"].as_i64());
    rows.truncate(limit);
    let last = rows.last().map_or(json!(since), |r| r["seq"].clone());
    let mut resp = Resp::json(200, json!({"results": rows, "last_seq": last}));
    if rows.is_empty() && req.q("feed") == Some("longpoll") {
        resp.delay = Duration::from_millis(200);
    }
    resp
}

/// CouchDB's `md5-<base64>` attachment digest of `data`.
pub fn couch_md5(data: &[u8]) -> String {
    let mut h = tarvault::integrity::MultiHasher::new(&[tarvault::Algorithm::Md5]);
    h.update(data);
    let set = h.finalize();
    let md5 = set.get(tarvault::Algorithm::Md5).expect("md5");
    format!("md5-{}", md5.to_base64())
}

/// `sha1-<base64>` of `data`, as a `dist.integrity` may hold it.
pub fn sha1_sri(data: &[u8]) -> String {
    let hex = crate::common::sha1_hex(data);
    let raw: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    format!(
        "sha1-{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A `_changes` row for package `id` at revision `1-a`: version 1.0.0 with `dist` (its
/// `tarball` filled in when missing), and one attachment `<id>-1.0.0.tgz` described as `data`.
pub fn row(seq: i64, id: &str, mut dist: Value, data: &[u8]) -> Value {
    let file = format!("{id}-1.0.0.tgz");
    if dist.get("tarball").is_none() {
        dist["tarball"] = json!(format!("http://r/{id}/-/{file}"));
    }
    json!({"seq": seq, "id": id, "changes": [{"rev": "1-a"}], "doc": {
        "_id": id, "_rev": "1-a", "name": id,
        "versions": {"1.0.0": {"name": id, "version": "1.0.0", "dist": dist}},
        "_attachments": {file: {"content_type": "application/octet-stream",
            "digest": couch_md5(data), "length": data.len(), "stub": true, "revpos": 1}}
    }})
}

/// A registry that does not change: `GET /registry`, `_changes` over `rows`, and the attachments
/// `(id, name) → bytes`; everything else is 404.
pub fn static_registry(rows: Vec<Value>, atts: Attachments) -> Handler {
    Arc::new(move |req| match req.segs.as_slice() {
        [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": rows.len()})),
        [_db, c] if c == "_changes" => changes_page(&rows, req),
        [_db, id, att] => match atts.get(&(id.clone(), att.clone())) {
            Some(b) => Resp::bytes(b),
            None => Resp::not_found(),
        },
        _ => Resp::not_found(),
    })
}

/// A migration of `url` into a store under `dir`, with its state and mapping there too.
pub async fn migration(url: &str, dir: &Path, edit: impl FnOnce(&mut MigrateOptions)) -> Migration {
    let spec = format!("file://{}?fsync=false", dir.join("store").display());
    let store = Store::open(&spec).await.expect("store");
    let mut opts = MigrateOptions::new(dir.join("state.json"), dir.join("map.jsonl"));
    edit(&mut opts);
    Migration::new(CouchSource::parse(url).expect("source"), store, opts).expect("migration")
}

/// Runs a migration of `url` with the defaults (see [`migration`]) to its end.
pub async fn migrate_once(url: &str, dir: &Path) -> Summary {
    migration(url, dir, |_| {})
        .await
        .run()
        .await
        .expect("migration run")
}
