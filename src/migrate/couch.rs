//! A small CouchDB client: the database, its `_changes` feed, and attachment downloads.
//!
//! Credentials come from the URL's userinfo or `COUCH_USER` / `COUCH_PASSWORD`, are sent as HTTP
//! basic auth, and never appear in anything printed: request URLs are built without userinfo, and
//! [`CouchSource`]'s `Display` is the redacted form, so even reqwest's own errors cannot leak them.
//!
//! No `Accept-Encoding` is sent (the `gzip` feature of reqwest is off): pouchdb-server would gzip
//! tarballs on the fly and CouchDB would send stored-gzip attachments encoded, and either way the
//! bytes hashed must be the identity bytes the document's digests describe.

use std::fmt;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::changes::Seq;
use crate::backend::body::{first_line, message_start, read_within, NotWhole, MESSAGE_CHARS};
use crate::{Error, Result};

/// The most a JSON answer from CouchDB (a document, a `_changes` page with its documents) may hold
/// by default ([`MigrateOptions::max_body`](super::MigrateOptions::max_body)): 256 MiB. An npm
/// document (every version's package.json, readmes, times) can legitimately run to tens of MB for
/// a package with thousands of versions, and npm's registry refuses a publish that would take one
/// past 100 MB; CouchDB 2.x caps a document at 64 MB by default. The limit is there so that a
/// broken or hostile server (an endless or absurdly long body) gets an error naming the request
/// instead of the migration's whole memory.
pub const DEFAULT_MAX_BODY: u64 = 256 << 20;

/// Where to migrate from: a CouchDB server and database, with optional credentials.
#[derive(Clone)]
pub struct CouchSource {
    /// The server URL up to (not including) the database segment, without userinfo.
    server: Url,
    /// The database name, decoded.
    db: String,
    user: Option<String>,
    password: Option<String>,
}

impl CouchSource {
    /// Parses `http[s]://[user:password@]host[:port][/prefix]/db`. Credentials missing from the URL
    /// are taken from `COUCH_USER` / `COUCH_PASSWORD`.
    pub fn parse(url: &str) -> Result<CouchSource> {
        // An empty variable is an unset one (`COUCH_USER= tarvault …`).
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self::parse_with_env(url, var("COUCH_USER"), var("COUCH_PASSWORD"))
    }

    /// [`CouchSource::parse`] with explicit fallbacks instead of the environment.
    pub fn parse_with_env(
        url: &str,
        env_user: Option<String>,
        env_password: Option<String>,
    ) -> Result<CouchSource> {
        // Never echo the input: it may hold a password.
        let mut parsed = Url::parse(url.trim())
            .map_err(|e| Error::Config(format!("--from is not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "--from must be an http:// or https:// URL, not {}:",
                parsed.scheme()
            )));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let url_user = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let url_password = parsed.password().map(decode);
        let mut segments: Vec<String> = parsed
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(decode).collect())
            .unwrap_or_default();
        let Some(db) = segments.pop() else {
            return Err(Error::Config(
                "--from must name a database: http://host:5984/registry".into(),
            ));
        };
        // Credentials are kept aside; the URL itself carries none from here on.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        parsed.set_query(None);
        parsed.set_fragment(None);
        {
            let mut path = parsed
                .path_segments_mut()
                .map_err(|_| Error::Config("--from cannot be a base URL".into()))?;
            path.clear();
            for s in &segments {
                path.push(s);
            }
        }
        let (user, password) = match url_user {
            Some(u) => (Some(u), url_password),
            None => (env_user, env_password),
        };
        Ok(CouchSource {
            server: parsed,
            db,
            user,
            password,
        })
    }

    /// The database name.
    pub fn db(&self) -> &str {
        &self.db
    }

    /// The database URL without credentials: what a state file is tied to.
    pub fn identity(&self) -> String {
        self.url(&[]).to_string()
    }

    /// Whether credentials will be sent.
    pub fn has_credentials(&self) -> bool {
        self.user.is_some()
    }

    /// The URL of a path under the database, each segment percent-encoded on its own (so a scoped
    /// id `@scope/name` becomes `@scope%2Fname`, as CouchDB requires), `+` included: CouchDB
    /// decodes a path as a query string (mochiweb's `unquote`, up to 3.x), so a bare `+` reaches
    /// it as a space, and an attachment `a-1.0.0+build.5.tgz` (old registries kept such version
    /// keys) would be asked for as `a-1.0.0 build.5.tgz`: a 404, reported missing.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.server.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.push(&self.db);
            for s in segments {
                path.push(s);
            }
        }
        // Every other character that needs it is encoded by now, `%` too, so a `+` left in the
        // path is one of a segment's own.
        if url.path().contains('+') {
            let path = url.path().replace('+', "%2B");
            url.set_path(&path);
        }
        url
    }
}

impl fmt::Display for CouchSource {
    /// The URL with credentials replaced by `***`: safe for logs, errors and the state file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url(&[]);
        if self.has_credentials() {
            let s = url.as_str();
            match s.split_once("://") {
                Some((scheme, rest)) => write!(f, "{scheme}://***@{rest}"),
                None => f.write_str(s),
            }
        } else {
            f.write_str(url.as_str())
        }
    }
}

impl fmt::Debug for CouchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CouchSource({self})")
    }
}

/// What `GET /db` says.
#[derive(Debug, Clone, Deserialize)]
pub struct DbInfo {
    /// Documents in the database (not counting deleted ones).
    #[serde(default)]
    pub doc_count: Option<u64>,
    /// The current end of the changes feed.
    #[serde(default)]
    pub update_seq: Option<Seq>,
}

/// An HTTP client bound to one [`CouchSource`].
#[derive(Clone)]
pub struct CouchClient {
    source: CouchSource,
    http: reqwest::Client,
    /// The most a JSON answer may hold ([`DEFAULT_MAX_BODY`] unless set).
    max_body: u64,
}

/// How a request failed: worth retrying, worth asking for less, or neither.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// Connection refused or reset, timeout, 5xx: the same request may succeed later.
    Transient(Error),
    /// The answer is over `max_body`: the same request would get the same, but a `_changes`
    /// page with a smaller `limit` may fit (see `changes::feed`). Kept apart from [`Fatal`] so
    /// that nothing else makes the feed ask for less.
    ///
    /// [`Fatal`]: FetchError::Fatal
    TooBig(Oversize),
    /// Anything else (401, 400, a response that is not what CouchDB sends).
    Fatal(Error),
}

impl FetchError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            FetchError::Transient(e) | FetchError::Fatal(e) => e,
            FetchError::TooBig(o) => o.into_error(),
        }
    }
}

/// An answer over the client's `max_body`, by its `Content-Length` or as it arrived.
#[derive(Debug)]
pub(crate) struct Oversize {
    /// The backend an error names (`couch <source>`).
    pub(crate) backend: String,
    /// The request and how big its answer is or was found to be.
    pub(crate) detail: String,
    /// The limit it is over.
    pub(crate) max: u64,
}

impl Oversize {
    /// The error of a request whose answer cannot be made smaller: a document, the database.
    pub(crate) fn into_error(self) -> Error {
        Error::backend(self.backend, self.detail)
    }
}

impl CouchClient {
    /// A client for `source`.
    pub fn new(source: CouchSource) -> Result<CouchClient> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("tarvault/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // A stalled body is an error after this long without a byte; longpoll requests ask for
            // heartbeats well inside it.
            .read_timeout(Duration::from_secs(120))
            // Node (pouchdb-server) closes idle keep-alive connections after 5 s: reuse them for
            // less than that, or a request races the server's close and fails with a reset.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(CouchClient {
            source,
            http,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// This client, refusing a JSON answer (a document, a `_changes` page) of more than `max`
    /// bytes instead of [`DEFAULT_MAX_BODY`].
    pub fn with_max_body(mut self, max: u64) -> CouchClient {
        self.max_body = max;
        self
    }

    /// The source this client reads.
    pub fn source(&self) -> &CouchSource {
        &self.source
    }

    fn get(&self, url: Url) -> reqwest::RequestBuilder {
        let req = self.http.get(url);
        match &self.source.user {
            Some(u) => req.basic_auth(u, self.source.password.as_deref()),
            None => req,
        }
    }

    fn error(&self, message: String) -> Error {
        Error::backend(self.backend_name(), message)
    }

    /// A request that failed below HTTP (refused, reset, DNS, TLS): `what` was being done, and the
    /// client's error is the source, so that a report names the cause ("Connection refused"),
    /// where its own text says only "error sending request". `without_url`: the URL has no
    /// credentials, but errors stay short and uniform.
    fn request_failed(&self, what: &str, e: reqwest::Error) -> Error {
        Error::Backend {
            backend: self.backend_name(),
            message: what.to_string(),
            source: Some(Box::new(e.without_url())),
        }
    }

    /// The backend errors about this source name: `couch <source>`, credentials redacted.
    fn backend_name(&self) -> String {
        format!("couch {}", self.source)
    }

    /// Sends a GET and sorts failures into transient and fatal. `Ok(None)` is a 404.
    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> std::result::Result<Option<reqwest::Response>, FetchError> {
        let resp = req
            .send()
            .await
            .map_err(|e| FetchError::Transient(self.request_failed(what, e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Some(resp));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // Only the start is shown: it is all that is read, and the rest is not waited for.
        let start = message_start(resp.bytes_stream()).await;
        let body = first_line(&start, MESSAGE_CHARS);
        let e = self.error(format!("{what}: HTTP {status}: {body}"));
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(FetchError::Transient(e))
        } else {
            Err(FetchError::Fatal(e))
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: Url,
    ) -> std::result::Result<T, FetchError> {
        let req = self
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        let Some(resp) = self.send(what, req).await? else {
            return Err(FetchError::Fatal(
                self.error(format!("{what}: HTTP 404 (no such database?)")),
            ));
        };
        let bytes = self.body(what, &url, resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            FetchError::Fatal(self.error(format!("{what}: not the JSON CouchDB sends: {e}")))
        })
    }

    /// The body of a JSON answer to `url`, of at most `max_body` bytes: one that says (by its
    /// `Content-Length`) or turns out to be longer is [`FetchError::TooBig`], naming the URL
    /// (asking again would get the same; a `_changes` page asked for fewer documents may fit),
    /// and nothing past the limit is read. A body cut off is transient.
    async fn body(
        &self,
        what: &str,
        url: &Url,
        resp: reqwest::Response,
    ) -> std::result::Result<bytes::Bytes, FetchError> {
        let max = self.max_body;
        let claimed = resp.content_length();
        match read_within(resp.bytes_stream(), claimed, max).await {
            Ok(body) => Ok(body),
            Err(NotWhole::Over(size)) => Err(FetchError::TooBig(Oversize {
                backend: self.backend_name(),
                detail: format!(
                    "{what} {url}: the answer is {size} bytes, over the {max}-byte limit \
                     (MigrateOptions::max_body)"
                ),
                max,
            })),
            Err(NotWhole::Failed(e)) => Err(FetchError::Transient(self.request_failed(what, e))),
        }
    }

    /// `GET /db`: checks the database exists (and the credentials work).
    pub async fn db_info(&self) -> Result<DbInfo> {
        self.json("GET database", self.source.url(&[]))
            .await
            .map_err(FetchError::into_error)
    }

    /// One `_changes` request: `normal` (returns at once) or `longpoll` (waits for a change).
    pub(crate) async fn changes<T: serde::de::DeserializeOwned>(
        &self,
        since: Option<&Seq>,
        limit: usize,
        longpoll: bool,
    ) -> std::result::Result<T, FetchError> {
        let mut url = self.source.url(&["_changes"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = since {
                q.append_pair("since", &s.to_query());
            }
            q.append_pair("limit", &limit.to_string());
            q.append_pair("include_docs", "true");
            // A document's `_conflicts`: the revisions that lost to the one sent, which the
            // planner lists (otherwise nothing of them would be seen at all).
            q.append_pair("conflicts", "true");
            // Says whether an attachment is stored gzipped (its `digest` is then of the gzip bytes).
            q.append_pair("att_encoding_info", "true");
            if longpoll {
                q.append_pair("feed", "longpoll");
                q.append_pair("heartbeat", "30000");
            }
        }
        self.json("GET _changes", url).await
    }

    /// `GET /db/<id>/<attachment>[?rev=<rev>]`: the response, streaming, or `None` for a 404.
    /// At a given revision CouchDB serves the attachment as that revision had it even after the
    /// document was deleted or changed, until compaction.
    pub(crate) async fn attachment(
        &self,
        id: &str,
        name: &str,
        rev: Option<&str>,
    ) -> std::result::Result<Option<reqwest::Response>, FetchError> {
        // An attachment name may itself contain `/` (`@scope/name-1.0.0.tgz`): encode it whole.
        let mut url = self.source.url(&[id, name]);
        if let Some(rev) = rev {
            url.query_pairs_mut().append_pair("rev", rev);
        }
        self.send("GET attachment", self.get(url)).await
    }

    /// `GET <url>`, a tarball outside CouchDB (a version's `dist.tarball`): the response,
    /// streaming, or `None` for a 404. Sent without the source's credentials, which belong to
    /// CouchDB alone, and with redirects followed as the client does (up to ten).
    pub(crate) async fn elsewhere(
        &self,
        url: Url,
    ) -> std::result::Result<Option<reqwest::Response>, FetchError> {
        self.send("GET dist.tarball", self.http.get(url)).await
    }

    /// The document's current `_rev`, or `None` if it is deleted (404).
    pub(crate) async fn current_rev(
        &self,
        id: &str,
    ) -> std::result::Result<Option<String>, FetchError> {
        #[derive(Deserialize)]
        struct Rev {
            #[serde(rename = "_rev")]
            rev: String,
        }
        let Some(bytes) = self
            .document("GET document", self.source.url(&[id]))
            .await?
        else {
            return Ok(None);
        };
        let doc: Rev = serde_json::from_slice(&bytes).map_err(|e| {
            FetchError::Fatal(self.error(format!("GET document: not a CouchDB document: {e}")))
        })?;
        Ok(Some(doc.rev))
    }

    /// `GET /db/<id>?rev=<rev>`: the document as that revision has it, unparsed (a losing
    /// revision of a conflict, whose attachments CouchDB keeps while it is a leaf), or `None` for
    /// a 404. Its attachments are stubs saying how each is stored, as in the feed.
    pub(crate) async fn document_at(
        &self,
        id: &str,
        rev: &str,
    ) -> std::result::Result<Option<bytes::Bytes>, FetchError> {
        let mut url = self.source.url(&[id]);
        url.query_pairs_mut()
            .append_pair("rev", rev)
            .append_pair("att_encoding_info", "true");
        self.document("GET document revision", url).await
    }

    /// A document's body, at most `max_body` bytes, or `None` for a 404.
    async fn document(
        &self,
        what: &str,
        url: Url,
    ) -> std::result::Result<Option<bytes::Bytes>, FetchError> {
        let req = self
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        let Some(resp) = self.send(what, req).await? else {
            return Ok(None);
        };
        self.body(what, &url, resp).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_db_and_credentials() {
        let s = CouchSource::parse_with_env("http://al%40x:s3cr%3At@h:5984/registry/", None, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.db(), "registry");
        assert_eq!(s.user.as_deref(), Some("al@x"));
        assert_eq!(s.password.as_deref(), Some("s3cr:t"));
        let shown = s.to_string();
        assert_eq!(shown, "http://***@h:5984/registry");
        assert!(!format!("{s:?}").contains("s3cr"));
        assert_eq!(
            s.url(&["@babel/core", "core-7.23.6.tgz"]).as_str(),
            "http://h:5984/registry/@babel%2Fcore/core-7.23.6.tgz"
        );
        assert_eq!(
            s.url(&["@sc/pk", "@sc/pk-1.0.0.tgz"]).as_str(),
            "http://h:5984/registry/@sc%2Fpk/@sc%2Fpk-1.0.0.tgz"
        );
        // CouchDB reads a bare `+` in a path as a space.
        assert_eq!(
            s.url(&["a+b", "a-1.0.0+b.5 %2B.tgz"]).as_str(),
            "http://h:5984/registry/a%2Bb/a-1.0.0%2Bb.5%20%252B.tgz"
        );
    }

    #[test]
    fn env_credentials_and_prefixes() {
        let s = CouchSource::parse_with_env(
            "https://couch.example/prefix/npm%2Freg?x=1",
            Some("u".into()),
            Some("p".into()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.db(), "npm/reg");
        assert!(s.has_credentials());
        assert_eq!(
            s.url(&["_changes"]).as_str(),
            "https://couch.example/prefix/npm%2Freg/_changes"
        );
        assert_eq!(s.to_string(), "https://***@couch.example/prefix/npm%2Freg");
        let none = CouchSource::parse_with_env("http://h/db", None, None).unwrap_or_else(|e| {
            panic!("{e}");
        });
        assert_eq!(none.to_string(), "http://h/db");
    }

    #[test]
    fn rejects_without_echoing_secrets() {
        for bad in [
            "http://u:hunter2@h:5984/",
            "ftp://u:hunter2@h/db",
            "u:hunter2@",
        ] {
            let e = CouchSource::parse_with_env(bad, None, None).expect_err(bad);
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
