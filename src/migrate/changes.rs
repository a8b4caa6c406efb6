//! The `_changes` feed, read in `limit`-sized batches with `include_docs`, then (with `follow`)
//! by `longpoll` until stopped.
//!
//! Sequence values are opaque: integers on CouchDB 1.x and pouchdb-server, strings like
//! `"5-g1AAAA…"` on 2.x and later, arrays on BigCouch. They are kept as JSON and echoed back
//! unchanged, never compared or incremented.
//!
//! Every answer is capped at `MigrateOptions::max_body`, and a page holds its documents whole: a
//! page over the cap is asked again for half as many documents, down to one, then grown back
//! (see [`Limit`]). Only a single document over the cap ends the run.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::couch::{CouchClient, FetchError, Oversize};
use crate::{strict_json, Error, Result};

/// A `_changes` sequence value, kept exactly as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub Value);

impl Seq {
    /// Whether this is `now`, CouchDB's name for the end of the feed when the request is made: a
    /// position only the server can resolve, never to be saved as a checkpoint (a later run would
    /// resolve it to a later end and skip everything in between).
    pub fn is_now(&self) -> bool {
        self.0.as_str() == Some("now")
    }

    /// Reads a sequence given on a command line: JSON if it parses as JSON (`42`, `[1,"x"]`),
    /// otherwise the text itself as a string sequence (`5-g1AAAA…`, `now`).
    pub fn from_arg(text: &str) -> Seq {
        let text = text.trim();
        match serde_json::from_str::<Value>(text) {
            Ok(v) => Seq(v),
            Err(_) => Seq(Value::String(text.to_string())),
        }
    }

    /// The value for `?since=`: strings bare, numbers in decimal, anything else as JSON.
    pub fn to_query(&self) -> String {
        match &self.0 {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_query())
    }
}

/// One row of the feed.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeRow {
    /// Where this change is in the feed.
    pub seq: Seq,
    /// The document id.
    pub id: String,
    /// Whether the document is deleted.
    #[serde(default)]
    pub deleted: bool,
    /// The document (with `include_docs`); `None` for deleted documents. `Err` for one with a
    /// key twice, naming the first such key by its path (`versions["1.0.0"].dist.shasum`): serde
    /// would keep the last of the two and CouchDB, and the npm clients it serves, see the first,
    /// so such a document is not read at all (the migration reports it unreadable).
    #[serde(default, deserialize_with = "strict_doc")]
    pub doc: Option<std::result::Result<Value, String>>,
}

/// A row's `doc`, every object's keys checked (`crate::strict_json::read`); `null` is none.
fn strict_doc<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<std::result::Result<Value, String>>, D::Error> {
    Ok(match strict_json::read(d)? {
        Ok(Value::Null) => None,
        doc => Some(doc),
    })
}

#[derive(Debug, Deserialize)]
struct ChangesPage {
    results: Vec<ChangeRow>,
    #[serde(default)]
    last_seq: Option<Seq>,
    /// CouchDB 2.x+: rows left after this page.
    #[serde(default)]
    pending: Option<u64>,
}

/// What the feeder task sends, in feed order.
#[derive(Debug)]
pub(crate) enum Fed {
    /// A change to process.
    Row(ChangeRow),
    /// Every change up to here has been sent: a page's `last_seq` beyond its last row (an empty
    /// page, `since=now` resolved). The checkpoint may move here once the rows before it are done.
    Reached(Seq),
}

/// What the feeder task sends: [`Fed`] items, or the error that ended the feed.
pub(crate) type FeedItem = Result<Fed>;

/// How the feeder reads.
#[derive(Debug, Clone)]
pub(crate) struct FeedOptions {
    pub since: Option<Seq>,
    pub batch: usize,
    pub follow: bool,
}

/// Attempts for one `_changes` request before the feed gives up.
const ATTEMPTS: u32 = 5;

/// How many pages with rows one position may start before the feed is taken to go round in
/// circles.
const VISITS: u8 = 3;

/// Positions remembered by [`Visits`]: a few hundred KB at most, forgotten all at once when full.
const REMEMBERED: usize = 4096;

/// The positions pages with rows were read from, and how often. A feed may go back: CouchDB
/// rewinds it when a shard is replaced, and the rows come again, which the migration takes as
/// already done. But a feed that keeps coming back to the same position (a broken or hostile
/// server) would hold a run that does not `--follow` forever, counting the same documents again
/// and again. A position is compared as the server wrote it, never ordered (see the module docs).
#[derive(Default)]
struct Visits(HashMap<String, u8>);

impl Visits {
    /// Notes a page with rows read from `since`; an error once that position has started
    /// [`VISITS`] of them.
    fn page_from(&mut self, client: &CouchClient, since: Option<&Seq>) -> Result<()> {
        let key = since.map_or_else(String::new, |s| s.0.to_string());
        if self.0.len() >= REMEMBERED && !self.0.contains_key(&key) {
            self.0.clear();
        }
        let n = self.0.entry(key).or_insert(0);
        *n += 1;
        if *n < VISITS {
            return Ok(());
        }
        Err(Error::backend(
            client.source().to_string(),
            format!(
                "_changes: the feed came back to {} {n} times with rows: it goes round in \
                 circles and would never end; stopped (what was done is saved)",
                position(since)
            ),
        ))
    }
}

/// A feed position as errors and logs name it: `seq <since>`, or `the start`.
fn position(since: Option<&Seq>) -> String {
    since.map_or_else(|| "the start".to_string(), |s| format!("seq {s}"))
}

/// The `limit` of the next `_changes` request. A page holds its documents whole and must fit in
/// `max_body`, so a few fat packuments can put a page of the configured batch over the cap where
/// fewer documents would fit: such a page is asked again for half as many, down to one, rather
/// than ending the run. Each page that then fits doubles the limit back towards the batch, so one
/// fat document does not leave the rest of the run reading pages of one. The position asked from
/// is the same on every try, so nothing is skipped or read twice.
struct Limit {
    batch: usize,
    now: usize,
}

impl Limit {
    fn new(batch: usize) -> Limit {
        let batch = batch.max(1);
        Limit { batch, now: batch }
    }

    /// A page asked from `since` was over the cap: the next request asks for half as many
    /// documents. At one document there is nothing smaller to ask for, and the error says which
    /// document it is and what to raise.
    fn halve(&mut self, since: Option<&Seq>, over: Oversize) -> Result<()> {
        let at = position(since);
        if self.now <= 1 {
            return Err(Error::backend(
                over.backend,
                format!(
                    "_changes from {at}: the document after it is larger than the {}-byte limit \
                     on its own, even in a page of one ({}); raise MigrateOptions::max_body (the \
                     CLI has no flag for it) to migrate it. Everything before it is saved, and a \
                     rerun resumes there",
                    over.max, over.detail
                ),
            ));
        }
        self.now /= 2;
        tracing::warn!(since = %at, limit = self.now, detail = %over.detail,
            "a _changes page is over max_body; asking for fewer documents");
        Ok(())
    }

    /// A page fitted: the next one may ask for twice as many, up to the batch.
    fn fitted(&mut self, since: Option<&Seq>) {
        if self.now < self.batch {
            self.now = self.now.saturating_mul(2).min(self.batch);
            tracing::info!(since = %position(since), limit = self.now,
                "a _changes page fitted in max_body; asking for more documents again");
        }
    }
}

/// Starts a task that reads the feed into a bounded channel: the channel's capacity is the
/// back-pressure (the feed is read only as fast as documents are taken off it), and a separate
/// task means a batch request is never abandoned half-way because a document finished.
pub(crate) fn spawn_feed(
    client: CouchClient,
    options: FeedOptions,
    stop: CancellationToken,
) -> mpsc::Receiver<FeedItem> {
    let (tx, rx) = mpsc::channel(options.batch.max(1));
    tokio::spawn(async move {
        if let Err(e) = feed(&client, &options, &stop, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn feed(
    client: &CouchClient,
    options: &FeedOptions,
    stop: &CancellationToken,
    tx: &mpsc::Sender<FeedItem>,
) -> Result<()> {
    let mut since = options.since.clone();
    let mut longpoll = false;
    let mut visits = Visits::default();
    let mut limit = Limit::new(options.batch);
    loop {
        let page = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            page = fetch_fitting(client, since.as_ref(), &mut limit, longpoll) => page?,
        };
        let n = page.results.len();
        if n > 0 {
            visits.page_from(client, since.as_ref())?;
        }
        tracing::debug!(rows = n, since = ?since, longpoll, "changes page");
        for row in page.results {
            since = Some(row.seq.clone());
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                sent = tx.send(Ok(Fed::Row(row))) => if sent.is_err() { return Ok(()) },
            }
        }
        // `last_seq` is only ever past the rows when the page ended on nothing to send (the
        // rows' own sequences are the checkpoint otherwise); a page with rows is not trusted to
        // say more than its last row.
        if let Some(last) = page
            .last_seq
            .filter(|l| n == 0 && since.as_ref() != Some(l))
        {
            since = Some(last.clone());
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                sent = tx.send(Ok(Fed::Reached(last))) => if sent.is_err() { return Ok(()) },
            }
        }
        let caught_up = n == 0 || page.pending == Some(0);
        if caught_up {
            if !options.follow {
                return Ok(());
            }
            longpoll = true;
        }
    }
}

/// The page from `since`, asked for fewer documents while it is over `max_body` (see [`Limit`]).
async fn fetch_fitting(
    client: &CouchClient,
    since: Option<&Seq>,
    limit: &mut Limit,
    longpoll: bool,
) -> Result<ChangesPage> {
    loop {
        match fetch_page(client, since, limit.now, longpoll).await {
            Ok(page) => {
                limit.fitted(since);
                return Ok(page);
            }
            Err(FetchError::TooBig(over)) => limit.halve(since, over)?,
            Err(e) => return Err(e.into_error()),
        }
    }
}

/// One page of `limit` documents, retried while it fails in a way that may pass.
async fn fetch_page(
    client: &CouchClient,
    since: Option<&Seq>,
    limit: usize,
    longpoll: bool,
) -> std::result::Result<ChangesPage, FetchError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.changes::<ChangesPage>(since, limit, longpoll).await {
            Err(FetchError::Transient(e)) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e.report(), attempt, "changes request failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            other => return other,
        }
    }
}

/// 200 ms, 400 ms, 800 ms, … capped at 5 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.saturating_sub(1).min(5)).min(5000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_echoed_unchanged() {
        assert_eq!(Seq::from_arg("42").to_query(), "42");
        assert_eq!(Seq::from_arg("42").0, Value::from(42));
        let two =
            "5-g1AAAAFTeJzLYWBg4MhgTmHgz8tPSTV0MDQy1zMAQsMcoARTIkOS_P___7MymBMZc4ECYsZGRgYmZqaY";
        assert_eq!(Seq::from_arg(two).to_query(), two);
        assert_eq!(Seq::from_arg("now").0, Value::String("now".into()));
        let arr = Seq::from_arg(r#"[12,"g1AAA"]"#);
        assert_eq!(arr.to_query(), r#"[12,"g1AAA"]"#);
        // Round trip through the state file keeps the JSON type.
        let s: Seq = serde_json::from_str(r#""7-abc""#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_string(&s).ok().as_deref(),
            Some(r#""7-abc""#)
        );
    }

    #[test]
    fn parses_couch_pages_of_both_eras() {
        let one: ChangesPage = serde_json::from_str(
            r#"{"results":[{"seq":3,"id":"a","changes":[{"rev":"1-x"}],"doc":{"_id":"a"}},
                {"seq":4,"id":"b","changes":[{"rev":"2-y"}],"deleted":true,"doc":null}],"last_seq":4}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.results.len(), 2);
        assert!(one.results[1].deleted);
        assert!(one.results[1].doc.is_none());
        let two: ChangesPage = serde_json::from_str(
            r#"{"results":[{"seq":"5-g1A","id":"a","changes":[]}],"last_seq":"5-g1A","pending":0}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(two.results[0].seq, Seq(Value::String("5-g1A".into())));
        assert_eq!(two.pending, Some(0));
    }

    /// A document with a key twice is held as the path of that key, and the rows after it (and
    /// the page's `last_seq`) are read as ever.
    #[test]
    fn a_document_with_a_key_twice_is_named_not_read() {
        let page: ChangesPage = serde_json::from_str(
            r#"{"results":[
                {"seq":1,"id":"a","doc":{"_id":"a","versions":{"1.0.0":{"dist":
                    {"shasum":"aa","tarball":"t","shasum":"bb"}}}}},
                {"seq":2,"id":"b","doc":{"_id":"b","_attachments":{"b.tgz":{"length":1},
                    "b.tgz":{"length":2}}}},
                {"seq":3,"id":"c","doc":{"_id":"c","n":[{"k":1,"k":2}],"_id":"c"}},
                {"seq":4,"id":"d","doc":{"_id":"d","versions":{"1.0.0":{"dist":{"shasum":"aa"}}}}}
            ],"last_seq":4}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let docs: Vec<_> = page.results.iter().map(|r| r.doc.clone()).collect();
        assert_eq!(
            docs,
            [
                Some(Err(r#"versions["1.0.0"].dist.shasum"#.to_string())),
                Some(Err(r#"_attachments["b.tgz"]"#.to_string())),
                // The first repeat in the text is the one named.
                Some(Err("n[0].k".to_string())),
                Some(Ok(serde_json::json!(
                    {"_id": "d", "versions": {"1.0.0": {"dist": {"shasum": "aa"}}}}
                ))),
            ]
        );
        assert_eq!(page.last_seq, Some(Seq(Value::from(4))));
    }

    fn over() -> Oversize {
        Oversize {
            backend: "couch http://h/db".into(),
            detail: "GET _changes: the answer is 9 bytes".into(),
            max: 8,
        }
    }

    #[test]
    fn the_limit_halves_to_one_then_names_the_position() {
        let mut limit = Limit::new(100);
        let since = Seq(Value::from(42));
        let mut asked = vec![limit.now];
        while limit.halve(Some(&since), over()).is_ok() {
            asked.push(limit.now);
        }
        assert_eq!(asked, [100, 50, 25, 12, 6, 3, 1]);
        let e = limit
            .halve(Some(&since), over())
            .expect_err("nothing under one document");
        assert_eq!(e.kind(), crate::ErrorKind::Backend);
        let text = e.to_string();
        for part in [
            "seq 42",
            "8-byte limit",
            "MigrateOptions::max_body",
            "9 bytes",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }

    #[test]
    fn the_limit_grows_back_to_the_batch() {
        let mut limit = Limit::new(10);
        limit.fitted(None);
        assert_eq!(limit.now, 10);
        for _ in 0..3 {
            assert!(limit.halve(None, over()).is_ok());
        }
        assert_eq!(limit.now, 1);
        let mut grown = Vec::new();
        for _ in 0..5 {
            limit.fitted(None);
            grown.push(limit.now);
        }
        assert_eq!(grown, [2, 4, 8, 10, 10]);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(20), Duration::from_millis(5000));
    }
}
