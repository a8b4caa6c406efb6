//! npm publish ingest: the body of `npm publish` (`PUT /:package`, one JSON document with the
//! tarball inlined as base64 in `_attachments`) streamed into a [`Store`] without ever holding
//! the tarball in memory.
//!
//! The document is scanned as it arrives (`reader.rs`, because serde_json needs a whole value in
//! memory and the tarball is one string of up to hundreds of megabytes). Everything except
//! `_attachments` is copied aside (at most [`PublishOptions::max_document`] bytes) and parsed
//! with serde_json at the end. The attachment's `data` is decoded on the fly (`base64.rs`) into a
//! [`Store::put`] running beside the scanner, and that put commits only once the whole document
//! has been read and its bytes match what the document says: every algorithm of
//! `versions[v].dist.integrity` (each algorithm it names is computed in the put's one pass, sha256,
//! sha384 and md5 included), `dist.shasum`, and the attachment's `length`. The attachment may
//! decode to at most [`PublishOptions::max_tarball`] bytes, or its `length` when that comes before
//! `data`, checked as it arrives. A mismatch, a malformed document, a body cut short, an
//! attachment too large: the put is aborted and nothing is stored, and the error names the field
//! ([`Error::Document`], [`Error::IntegrityMismatch`], [`Error::TooLarge`]).
//!
//! Memory is bounded by `max_document`, its parsed form (a budget of one unit per 16 bytes of it:
//! a value is one, an array four, an object twenty; about three times its size), and a few
//! blocks of decoded bytes, whatever the size of the tarball (`benches/publish.rs` measures a
//! 256 MiB one).
//!
//! ```no_run
//! # async fn demo() -> tarvault::Result<()> {
//! use tarvault::publish::{ingest, PublishOptions};
//!
//! let store = tarvault::Store::open("/var/lib/tarvault").await?;
//! // The request body, as a stream of chunks (axum: `body.into_data_stream()`, mapped to io errors).
//! let body = futures::stream::empty::<std::io::Result<bytes::Bytes>>();
//! let published = ingest(&store, body, &PublishOptions::default()).await?;
//! // `published.document` is the packument update without `_attachments`, for the registry's
//! // own metadata; the tarball is stored and verified.
//! # Ok(()) }
//! ```

mod base64;
mod document;
mod reader;

use std::collections::HashSet;
use std::io;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, SinkExt, Stream};
use serde_json::{Map, Value};

use crate::integrity::{Algorithm, Digests, Hash};
use crate::store::{Expectations, LateExpectations};
use crate::strict_json::{self, TWICE};
use crate::{package_name, Error, PutOptions, PutOutcome, Result, Store};
use reader::Reader;

/// How [`ingest`] treats a publish document.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The most bytes the document may have without its attachment (its `versions`, `readme`
    /// and the rest are held in memory to be parsed); more is [`Error::TooLarge`], and so is a
    /// document that parses into more than one unit per 16 bytes of this limit (a value is one
    /// unit, an array four, an object twenty): the smallest values, `0,` or `{"a":0},`, take 24
    /// to 80 times their text once parsed.
    pub max_document: usize,
    /// Inspect the tarball as it streams in, under this policy, and refuse one whose
    /// `package.json` names another package or version than the document.
    pub inspect: Option<crate::tarball::Policy>,
    /// The most bytes the attachment (the tarball) may decode to; default
    /// [`DEFAULT_MAX_TARBALL`]. Checked as the base64 arrives, not at its end, so that a body
    /// whose `data` never ends stops there instead of filling the disk under the store's temp
    /// file: past it the publish fails with [`Error::TooLarge`] and nothing is stored. A `length`
    /// given before `data` bounds the attachment the same way, failing with
    /// [`Error::IntegrityMismatch`] naming it (and a `length` past this limit is refused at once).
    pub max_tarball: u64,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            max_document: 8 << 20,
            inspect: None,
            max_tarball: DEFAULT_MAX_TARBALL,
        }
    }
}

/// What [`ingest`] stored and read.
#[derive(Debug, Clone)]
pub struct Published {
    /// The package name (`name`, equal to `_id`).
    pub name: String,
    /// The document without `_attachments`.
    pub document: Map<String, Value>,
    /// The tarball, when the document had one (a publish has; a metadata update has not).
    pub tarball: Option<StoredTarball>,
}

/// The attachment of a publish document, stored.
#[derive(Debug, Clone)]
pub struct StoredTarball {
    /// The attachment's name (`name-1.0.0.tgz`, `@scope/name-1.0.0.tgz`).
    pub file: String,
    /// The version it is the tarball of.
    pub version: String,
    /// Its digests (`digests.integrity()` is its address).
    pub digests: Digests,
    /// `false` when the same bytes were stored already.
    pub stored: bool,
    /// What inspection found, when [`PublishOptions::inspect`] was set.
    pub report: Option<crate::tarball::Report>,
}

/// The default of [`PublishOptions::max_tarball`], 256 MiB. npm's own registry refuses
/// (413) publishes of packages around 200 MB and more (npm/cli#4794: a 229.9 MB tarball), so
/// this refuses nothing it would take while bounding what one publish may write; it is also the
/// size `benches/publish.rs` measures and the migration's cap on a CouchDB answer
/// (`MigrateOptions::max_body`).
pub const DEFAULT_MAX_TARBALL: u64 = 256 << 20;

/// Attachment names, member names and small values are refused beyond this many bytes.
const SMALL: usize = 4096;

/// The most bytes of text an attachment's members other than `data` may have together, keys and
/// values (npm sends `content_type` and `length`, a CouchDB stub a few more). Each key is kept to
/// refuse a repeat, so without this bound endless distinct keys would grow memory without end.
const ATTACHMENT_META: usize = 16 * SMALL;

/// Reads a publish document from `body` and stores its tarball in `store`, verified; see the
/// [module documentation](self). Runs inside a Tokio runtime: the put is a task of its own beside
/// the scanner, so decoding and hashing use two cores. `body` need not be `Unpin`.
pub async fn ingest<S>(store: &Store, body: S, options: &PublishOptions) -> Result<Published>
where
    S: Stream<Item = io::Result<Bytes>>,
{
    let body = std::pin::pin!(body);
    let mut parse = Parse {
        reader: Reader::new(body),
        store,
        options,
        doc: Vec::with_capacity(4096),
        name: None,
        versions: None,
        upload: None,
        length: None,
        digest: None,
        computes_md5: false,
        upload_failed: false,
    };
    let parsed = parse.document().await.and_then(|()| {
        let Value::Object(document) =
            strict_json::parse(&parse.doc, None, "body", Some(options.max_document))?
        else {
            return Err(Error::document("body", "not an object"));
        };
        let name = document::package_name(&document)?;
        Ok((document, name))
    });
    let length = parse.length;
    let digest = parse.digest.take();
    let failed = parse.upload_failed;
    let Some(upload) = parse.upload.take() else {
        let (document, name) = parsed?;
        return Ok(Published {
            name,
            document,
            tarball: None,
        });
    };
    let checked = parsed.and_then(|(document, name)| {
        let versions = document.get("versions").unwrap_or(&Value::Null);
        let expected = document::expected_for(&name, versions, &upload.file)?;
        Ok((document, name, expected))
    });
    match checked {
        Ok((document, name, expected)) => {
            let late = document::expectations(
                &name,
                &upload.file,
                &expected,
                (length, digest),
                options.inspect.is_some(),
            );
            let put = upload.finish(late).await?;
            Ok(Published {
                name,
                document,
                tarball: Some(StoredTarball {
                    file: put.1,
                    version: expected.version,
                    digests: put.0.digests,
                    stored: put.0.stored,
                    report: put.0.report,
                }),
            })
        }
        Err(e) => {
            let file = upload.file.clone();
            // Dropping `late` makes the put abort; wait for it, so nothing is left when we answer.
            let put = upload.abandon().await;
            tracing::debug!(attachment = %file, error = %e.report(), "publish refused");
            match put {
                // The scanner stopped because the put failed first: that failure is the cause.
                Err(put_err) if failed => Err(put_err),
                _ => Err(e),
            }
        }
    }
}

/// The put of an attachment, running beside the scanner.
struct Upload {
    file: String,
    late: oneshot::Sender<Result<Expectations>>,
    task: tokio::task::JoinHandle<Result<PutOutcome>>,
}

impl Upload {
    /// Gives the put what it must check, and waits for its verdict.
    async fn finish(self, late: Expectations) -> Result<(PutOutcome, String)> {
        // The put is waiting for this; if it is gone its own error is returned below.
        let _ = self.late.send(Ok(late));
        let out = self
            .task
            .await
            .map_err(|e| Error::InvalidInput(format!("publish put task failed: {e}")))??;
        Ok((out, self.file))
    }

    /// Makes the put abort (its expectations will never come), and waits until it has.
    async fn abandon(self) -> Result<PutOutcome> {
        drop(self.late);
        self.task
            .await
            .map_err(|e| Error::InvalidInput(format!("publish put task failed: {e}")))?
    }
}

/// The scanner's state over one document.
struct Parse<'a, S> {
    reader: Reader<S>,
    store: &'a Store,
    options: &'a PublishOptions,
    /// The document without `_attachments`, as JSON text.
    doc: Vec<u8>,
    /// `name`, once seen (to fail early on an attachment without a version).
    name: Option<String>,
    /// The text range of `versions` in `doc`, once seen.
    versions: Option<std::ops::Range<usize>>,
    upload: Option<Upload>,
    /// The attachment's `length`.
    length: Option<u64>,
    /// The attachment's CouchDB `digest` (`md5-…`), checked like `dist.integrity`.
    digest: Option<Hash>,
    /// The put computes md5, so that a `digest` read after `data` can still be checked.
    computes_md5: bool,
    /// The put ended before the scanner was done sending it bytes.
    upload_failed: bool,
}

impl<S> Parse<'_, S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    async fn document(&mut self) -> Result<()> {
        let r = &mut self.reader;
        r.expect(b'{', "body").await?;
        self.doc.push(b'{');
        // Refused as soon as seen (the copy in `doc` would be refused at its parse anyway), so
        // that `name` and `versions` are never read from one copy and the document from another.
        let mut keys = HashSet::new();
        if self.reader.peek_token().await? == b'}' {
            self.reader.advance(1);
        } else {
            loop {
                let key = self.reader.string(SMALL, "body").await?;
                self.reader.expect(b':', &key).await?;
                if !keys.insert(key.clone()) {
                    return Err(Error::document(key, TWICE));
                }
                if key == "_attachments" {
                    self.attachments().await?;
                } else {
                    self.member(&key).await?;
                }
                if !self.reader.next_member(b'}', "body").await? {
                    break;
                }
            }
        }
        self.doc.push(b'}');
        self.reader.end().await
    }

    /// Copies a top-level member other than `_attachments` into `doc`.
    async fn member(&mut self, key: &str) -> Result<()> {
        if self.doc.len() > 1 {
            self.doc.push(b',');
        }
        serde_json::to_writer(&mut self.doc, key)
            .map_err(|e| Error::document("body", e.to_string()))?;
        self.doc.push(b':');
        let start = self.doc.len();
        let limit = self.options.max_document;
        self.reader
            .copy_value(
                &mut self.doc,
                limit,
                "the publish document without its attachment",
            )
            .await?;
        let value = start..self.doc.len();
        match key {
            "versions" => self.versions = Some(value),
            "name" => {
                let name = serde_json::from_slice::<String>(&self.doc[value]).ok();
                // A name that could not be served is refused before its tarball is read.
                if let Some(why) = name
                    .as_deref()
                    .and_then(|n| package_name::publishable(n).err())
                {
                    return Err(Error::document("name", why));
                }
                self.name = name;
            }
            _ => {}
        }
        Ok(())
    }

    async fn attachments(&mut self) -> Result<()> {
        self.reader.expect(b'{', "_attachments").await?;
        if self.reader.peek_token().await? == b'}' {
            self.reader.advance(1);
            return Ok(());
        }
        loop {
            let file = self.reader.string(SMALL, "_attachments").await?;
            if self.upload.as_ref().is_some_and(|u| u.file == file) {
                return Err(Error::document(format!("_attachments[{file:?}]"), TWICE));
            }
            if self.upload.is_some() {
                return Err(Error::document(
                    "_attachments",
                    "several attachments: a publish carries the tarball of one version",
                ));
            }
            self.reader.expect(b':', "_attachments").await?;
            self.attachment(file).await?;
            if !self.reader.next_member(b'}', "_attachments").await? {
                return Ok(());
            }
        }
    }

    async fn attachment(&mut self, file: String) -> Result<()> {
        let at = format!("_attachments[{file:?}]");
        if file.is_empty() || file.contains(['\\', '\0']) || file.contains("..") {
            return Err(Error::document(&at, "not a tarball file name"));
        }
        self.reader.expect(b'{', &at).await?;
        let mut keys = HashSet::new();
        // The text of the members other than `data` so far (see `ATTACHMENT_META`).
        let mut meta = 0usize;
        if self.reader.peek_token().await? == b'}' {
            self.reader.advance(1);
        } else {
            loop {
                let key = self.reader.string(SMALL, &at).await?;
                let here = format!("{at}.{key}");
                self.reader.expect(b':', &here).await?;
                if !keys.insert(key.clone()) {
                    return Err(Error::document(here, TWICE));
                }
                meta += key.len();
                match key.as_str() {
                    "data" => self.data(&file, &here).await?,
                    "length" => {
                        // No size in bytes takes more than 20 digits: longer text is a bad
                        // document (400), not a body too large for the server (413).
                        let n = self
                            .reader
                            .value::<u64>(64, &here)
                            .await
                            .map_err(|e| match e {
                                Error::TooLarge { .. } => {
                                    Error::document(&here, "is no size in bytes")
                                }
                                e => e,
                            })?;
                        self.length = Some(n);
                    }
                    "digest" => self.digest(&here).await?,
                    _ => {
                        let mut ignored = Vec::new();
                        self.reader.copy_value(&mut ignored, SMALL, &here).await?;
                        meta += ignored.len();
                        // The scanner only finds where the value ends: parsed, as the rest of
                        // the document is, so that bad JSON or a key twice is refused here too.
                        ignored_value(&ignored, &at, &key)?;
                    }
                }
                if meta > ATTACHMENT_META {
                    return Err(Error::TooLarge {
                        what: format!("{at} without its `data`"),
                        limit: ATTACHMENT_META as u64,
                    });
                }
                if !self.reader.next_member(b'}', &at).await? {
                    break;
                }
            }
        }
        if !keys.contains("data") {
            return Err(Error::document(at, "has no `data` (the tarball, base64)"));
        }
        Ok(())
    }

    /// Streams the attachment's base64 `data` into a put started here.
    async fn data(&mut self, file: &str, at: &str) -> Result<()> {
        // With `name` and `versions` already read (npm sends them first), an attachment that is
        // no version's tarball is refused before a byte of it is stored.
        let mut known = None;
        if let (Some(name), Some(range)) = (&self.name, &self.versions) {
            let versions = strict_json::parse(
                &self.doc[range.clone()],
                Some("versions"),
                "versions",
                Some(self.options.max_document),
            )?;
            known = Some(document::expected_for(name, &versions, file)?);
        }
        let cap = Cap::new(self.options.max_tarball, self.length, file)?;
        let b = self.reader.peek_token().await?;
        if b != b'"' {
            return Err(self.reader.unexpected(b, at, "a base64 string"));
        }
        self.reader.advance(1);
        let (mut tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let (late_tx, late_rx) = oneshot::channel::<Result<Expectations>>();
        let late = async move {
            late_rx
                .await
                .unwrap_or_else(|_| Err(Error::document("body", "publish refused")))
        }
        .boxed();
        // Each algorithm the document's digests name must be computed in the put's one pass
        // (sha256, sha384 and md5 are not among the store's own), or it could not be checked.
        // Known already (npm's order), they are the put's `expected`, as in a migration, which
        // also lets a stored sha512 spare the write; not known yet (`versions` after the
        // attachment), every algorithm is computed, slower but never unchecked.
        // A `digest` given before `data` is one more algorithm to compute; one given after can be
        // checked only if md5 is computed anyway (see `digest`).
        let mut expected = known.and_then(|k| crate::store::all_hashes(&k.checks));
        if let (Some(all), Some(md5)) = (&mut expected, &self.digest) {
            all.push(md5.clone());
        }
        let compute = match expected {
            Some(_) => Vec::new(),
            None => Algorithm::ALL.to_vec(),
        };
        self.computes_md5 = expected
            .as_ref()
            .is_none_or(|all| all.get(Algorithm::Md5).is_some());
        let late = LateExpectations {
            expectations: late,
            compute,
            // The put is given no size, so none to name: npm sends the `length` after `data`,
            // and one given before it is `Cap`'s bound.
            size_field: None,
        };
        let put = PutOptions {
            expected,
            label: Some(at.to_string()),
            inspect: self.options.inspect.clone(),
            ..PutOptions::default()
        };
        let store = self.store.clone();
        let task = tokio::spawn(async move { store.put_late(rx, &put, Some(late)).await });
        self.upload = Some(Upload {
            file: file.to_string(),
            late: late_tx,
            task,
        });
        let bad = |reason: String| Error::document(at, format!("bad base64: {reason}"));
        let mut decoder = base64::Decoder::default();
        loop {
            let text = self.reader.available().await?;
            let n = text.len();
            if n == 0 {
                return Err(Error::document(
                    "body",
                    format!("the body ends early, inside {at}"),
                ));
            }
            match memchr::memchr2(b'"', b'\\', text) {
                Some(i) => {
                    let end = text[i] == b'"';
                    decoder.feed(&text[..i]).map_err(bad)?;
                    self.reader.advance(i + 1);
                    if end {
                        break;
                    }
                    // JSON may escape any character: `/` as `\/` (PHP's encoder, some Java
                    // ones), `+` as `\u002B` (.NET's System.Text.Json by default). An escape of
                    // a character outside base64 is refused as that character would be.
                    match self.reader.escape().await? {
                        Ok(b) if b.is_ascii_alphanumeric() || b"+/=".contains(&b) => {
                            decoder.feed(&[b]).map_err(bad)?
                        }
                        Ok(b) => {
                            let why = format!(
                                "an escaped `{}`, not a base64 character",
                                b.escape_ascii()
                            );
                            return Err(bad(why));
                        }
                        Err(why) => return Err(bad(why)),
                    }
                }
                None => {
                    decoder.feed(text).map_err(bad)?;
                    self.reader.advance(n);
                }
            }
            // Checked as the text arrives, so that an attachment that never ends stops here
            // rather than when the disk under the store's temp file is full.
            cap.check(decoder.decoded(), at)?;
            if decoder.ready() >= base64::BLOCK && !self.send(&mut tx, decoder.take()).await {
                return Err(Error::document(at, "the store stopped taking it"));
            }
        }
        cap.check(decoder.decoded(), at)?;
        let last = decoder.finish().map_err(bad)?;
        if !last.is_empty() && !self.send(&mut tx, last).await {
            return Err(Error::document(at, "the store stopped taking it"));
        }
        Ok(())
    }

    /// Reads an attachment's `digest`. CouchDB checks an `md5-` digest against the bytes of an
    /// upload and silently drops any other, and it writes only `md5-` ones; here the md5 is
    /// checked like `dist.integrity`, and another or malformed digest is refused rather than
    /// dropped: a document that claims a digest nobody checks could pass it on as if checked.
    /// npm's client sends no `digest`, so this refuses no real publish.
    async fn digest(&mut self, at: &str) -> Result<()> {
        let text: String = self.reader.value(SMALL, at).await?;
        let md5 = Hash::from_couch_digest(&text).map_err(|why| Error::document(at, why))?;
        if self.upload.is_some() && !self.computes_md5 {
            // The put did not hash md5 as `data` went by; it cannot be checked after the fact.
            return Err(Error::document(
                at,
                "comes after `data` and could not be checked: give it before `data`",
            ));
        }
        self.digest = Some(md5);
        Ok(())
    }

    /// Hands decoded bytes to the put; `false` if it has ended (failed).
    async fn send(&mut self, tx: &mut mpsc::Sender<io::Result<Bytes>>, bytes: Bytes) -> bool {
        let ok = tx.send(Ok(bytes)).await.is_ok();
        self.upload_failed |= !ok;
        ok
    }
}

/// Checks an attachment member that is not read (`content_type`, a CouchDB stub's `revpos`…) as
/// the document's other members are at its end: JSON, with no key twice (named by its path under
/// the attachment `at`).
fn ignored_value(text: &[u8], at: &str, key: &str) -> Result<()> {
    match strict_json::parse(text, Some(key), &format!("{at}.{key}"), None) {
        Ok(_) => Ok(()),
        // The path starts at the member: `key.x`, or `["a key"].x` for a key that is not plain.
        Err(Error::Document { at: path, reason }) if reason == TWICE => {
            let sep = if path.starts_with('[') { "" } else { "." };
            Err(Error::document(format!("{at}{sep}{path}"), reason))
        }
        Err(e) => Err(e),
    }
}

/// The most bytes an attachment may decode to, and where that bound came from.
struct Cap {
    bytes: u64,
    /// `Some(field)` when the bound is the attachment's `length`, given before its `data`.
    length: Option<String>,
}

impl Cap {
    /// [`PublishOptions::max_tarball`], or the attachment's `length` when that came first: npm
    /// sends it after `data`, but a document that gives it before is held to it as the bytes
    /// arrive rather than once they all have. A `length` past the limit is refused at once.
    fn new(max: u64, length: Option<u64>, file: &str) -> Result<Cap> {
        let field = format!("_attachments[{file:?}].length");
        match length {
            Some(n) if n > max => Err(Error::TooLarge {
                what: format!("{field} ({n})"),
                limit: max,
            }),
            Some(n) => Ok(Cap {
                bytes: n,
                length: Some(field),
            }),
            None => Ok(Cap {
                bytes: max,
                length: None,
            }),
        }
    }

    /// Fails once `decoded` bytes of the attachment at `at` are more than it may have: a
    /// mismatch of the `length` it gave (like one found at the end), else too large.
    fn check(&self, decoded: u64, at: &str) -> Result<()> {
        if decoded <= self.bytes {
            return Ok(());
        }
        Err(match &self.length {
            Some(field) => Error::IntegrityMismatch {
                what: field.clone(),
                expected: format!("{} bytes", self.bytes),
                actual: format!("more than {} bytes", self.bytes),
            },
            None => Error::TooLarge {
                what: format!("the tarball in {at}"),
                limit: self.bytes,
            },
        })
    }
}
