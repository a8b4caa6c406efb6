//! The `_changes` feed, read in `limit`-sized batches with `include_docs`, then (with `follow`)
//! by `longpoll` until stopped.
//!
//! Sequence values are opaque: integers on CouchDB 1.x and pouchdb-server, strings like
//! `"5-g1AAAA…"` on 2.x and later, arrays on BigCouch. They are kept as JSON and echoed back
//! unchanged, never compared or incremented.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::couch::{CouchClient, FetchError};
use crate::{Error, Result};

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
    /// The document (with `include_docs`); `None` for deleted documents.
    #[serde(default)]
    pub doc: Option<Value>,
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
        let at = since.map_or_else(|| "the start".to_string(), |s| format!("seq {s}"));
        Err(Error::backend(
            client.source().to_string(),
            format!(
                "_changes: the feed came back to {at} {n} times with rows: it goes round in \
                 circles and would never end; stopped (what was done is saved)"
            ),
        ))
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
    loop {
        let page = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            page = fetch_page(client, since.as_ref(), options.batch, longpoll) => page?,
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

async fn fetch_page(
    client: &CouchClient,
    since: Option<&Seq>,
    batch: usize,
    longpoll: bool,
) -> Result<ChangesPage> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.changes::<ChangesPage>(since, batch, longpoll).await {
            Ok(page) => return Ok(page),
            Err(FetchError::Transient(e)) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "changes request failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e.into_error()),
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

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(20), Duration::from_millis(5000));
    }
}
