//! The registry itself: an axum app over a [`Store`] (tarballs) and a directory of packument
//! files (metadata). Shared by the example's `main` and by `tests/npm_registry.rs`.
//!
//! Routes:
//! - `PUT /<name>` (`@scope%2fname` for scoped packages): `npm publish`, bearer token required;
//!   the body is streamed through [`tarvault::publish::ingest`], so a tarball of any size costs
//!   the same memory, one that disagrees with its document is refused before it is stored, and
//!   one past `PublishOptions::max_tarball` (256 MiB) is cut off there and answered 413;
//! - `GET /<name>`: the packument (`npm install`, `npm view`);
//! - `GET /<name>/-/<file>.tgz` (scoped: `/@scope/name/-/name-1.0.0.tgz`): the tarball, found
//!   through the packument and answered by the library's own handler ([`Server::router`]) as
//!   `/sha512/<hex>`, so it is verified while it streams and carries the ETag/Range/caching
//!   headers of `tarvault serve`;
//! - everything else (`/sha512/…`, `/sha1/…`, `/-/health`, `/-/metrics`): the library's router.
//!
//! [`serve`] runs the app on the library's accept loop, with the connection bounds of `tarvault
//! serve` ([`ServeOptions`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::TryStreamExt;
use serde_json::{json, Map, Value};
use tarvault::publish::{ingest, PublishOptions, Published};
use tarvault::server::{ServeOptions, Server};
use tarvault::{Algorithm, ErrorKind, Integrity, Store};
use tower::ServiceExt;

/// The registry's state: the store, where packuments live, and the publish token.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    blobs: Router,
    packuments: PathBuf,
    token: Option<Arc<str>>,
    /// Publishes of one package must not interleave their read-modify-write of its packument.
    writes: Arc<tokio::sync::Mutex<()>>,
}

impl Registry {
    /// A registry over `store`, keeping packuments in `packuments`; without a `token` every
    /// write is refused.
    pub fn new(store: Store, packuments: PathBuf, token: Option<String>) -> io::Result<Registry> {
        std::fs::create_dir_all(&packuments)?;
        Ok(Registry {
            blobs: Server::new(store.clone()).router(),
            store,
            packuments,
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            writes: Arc::default(),
        })
    }

    /// The app to serve.
    pub fn router(self) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }

    fn packument_path(&self, name: &str) -> PathBuf {
        // `/` is the only character of a valid name that cannot be in a file name.
        self.packuments
            .join(format!("{}.json", name.replace('/', "%2f")))
    }

    fn load(&self, name: &str) -> io::Result<Option<Map<String, Value>>> {
        match std::fs::read(self.packument_path(name)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a packument atomically (a temporary file renamed over the old one).
    fn save(&self, name: &str, doc: &Map<String, Value>) -> io::Result<()> {
        let path = self.packument_path(name);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(doc).map_err(io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }
}

/// `{"error": reason}` with `status`: npm prints the reason.
fn error(status: StatusCode, reason: impl std::fmt::Display) -> Response {
    let body = json!({ "error": reason.to_string() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A valid npm package name, decoded from the request path (`@scope%2fname` or `name`).
fn package_name(path: &str) -> Option<String> {
    let raw = path.strip_prefix('/')?;
    let name = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let ok_part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    };
    let valid = match name.strip_prefix('@') {
        Some(scoped) => matches!(scoped.split_once('/'), Some((s, n)) if ok_part(s) && ok_part(n)),
        None => ok_part(&name),
    };
    (valid && name.len() <= 214).then(|| name.into_owned())
}

/// One of the library's blob routes, `/<algorithm>/<digest>`: a single segment after the
/// algorithm, which no package's own URL has. A package may be named `sha1` or `blake3`, and
/// `/sha1/-/sha1-1.0.0.tgz` is its tarball, mapped through its packument like any other.
fn is_blob_path(path: &str) -> bool {
    ["/sha512/", "/sha1/", "/blake3/"].iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|digest| !digest.contains('/'))
    })
}

async fn dispatch(State(reg): State<Registry>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    if path.starts_with("/-/") || is_blob_path(&path) {
        return blobs(&reg, request).await;
    }
    if let Some((package, file)) = path.rsplit_once("/-/") {
        return tarball(&reg, package, file, request).await;
    }
    let Some(name) = package_name(&path) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    match method {
        Method::GET | Method::HEAD => match reg.load(&name) {
            Ok(Some(doc)) => json_response(StatusCode::OK, &Value::Object(doc)),
            Ok(None) => error(StatusCode::NOT_FOUND, "not found"),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        Method::PUT => publish(&reg, &name, request).await,
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

/// The library's router, for its own routes.
async fn blobs(reg: &Registry, request: Request) -> Response {
    match reg.blobs.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// A tarball URL: the packument names its integrity; the library's handler serves the blob.
async fn tarball(reg: &Registry, package: &str, file: &str, request: Request) -> Response {
    // `/@scope/name` and `/@scope%2fname` are the same package.
    let decoded = percent_encoding::percent_decode_str(package).decode_utf8_lossy();
    let Some(name) = package_name(&decoded) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let doc = match reg.load(&name) {
        Ok(Some(doc)) => doc,
        Ok(None) => return error(StatusCode::NOT_FOUND, "not found"),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let suffix = format!("/-/{file}");
    let integrity = doc
        .get("versions")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|v| v.values())
        .find(|m| {
            m.pointer("/dist/tarball")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(&suffix))
        })
        .and_then(|m| m.pointer("/dist/integrity"))
        .and_then(Value::as_str)
        .and_then(|s| Integrity::parse(s).ok());
    let Some(hash) = integrity.as_ref().and_then(|i| i.get(Algorithm::Sha512)) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let (mut parts, body) = request.into_parts();
    let uri = format!("/sha512/{}", hash.to_hex());
    parts.uri = match uri.parse::<Uri>() {
        Ok(u) => u,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    blobs(reg, Request::from_parts(parts, body)).await
}

/// Whether the request carries the publish token.
fn authorized(reg: &Registry, headers: &HeaderMap) -> bool {
    let Some(token) = &reg.token else {
        return false;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared in time independent of where they differ.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `npm publish`: the document streamed into the store, then merged into the packument.
async fn publish(reg: &Registry, name: &str, request: Request) -> Response {
    if !authorized(reg, request.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "a publish needs the registry's token",
        );
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(io::Error::other);
    let options = PublishOptions {
        inspect: Some(tarvault::tarball::Policy::default()),
        ..PublishOptions::default()
    };
    let published = match ingest(&reg.store, body, &options).await {
        Ok(p) => p,
        Err(e) => {
            let status = match e.kind() {
                ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::InvalidInput
                | ErrorKind::IntegrityMismatch
                | ErrorKind::Rejected
                | ErrorKind::Io => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(package = name, error = %e, "publish refused");
            return error(status, e);
        }
    };
    if published.name != name {
        return error(
            StatusCode::BAD_REQUEST,
            "the document names another package",
        );
    }
    let _guard = reg.writes.lock().await;
    match merge(reg, &published, &host) {
        Ok(()) => json_response(StatusCode::CREATED, &json!({"ok": true})),
        Err((status, reason)) => error(status, reason),
    }
}

/// Adds the published version to the package's packument: a version is published once (409
/// after that), its tarball URL points here, and `dist-tags` follow the document.
fn merge(reg: &Registry, p: &Published, host: &str) -> Result<(), (StatusCode, String)> {
    let fail = |e: io::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let Some(tarball) = &p.tarball else {
        return Err((
            StatusCode::BAD_REQUEST,
            "only publishes (with a tarball) are supported".into(),
        ));
    };
    let mut doc = reg.load(&p.name).map_err(fail)?.unwrap_or_else(|| {
        let mut m = Map::new();
        m.insert("_id".into(), json!(p.name));
        m.insert("name".into(), json!(p.name));
        m
    });
    let v = &tarball.version;
    let mut manifest = p.document["versions"][v].clone();
    let versions = doc.entry("versions").or_insert_with(|| json!({}));
    if versions.get(v).is_some() {
        return Err((
            StatusCode::CONFLICT,
            format!("{}@{v} is already published", p.name),
        ));
    }
    // The tarball URL is this registry's; `/@scope/name/-/name-1.0.0.tgz` for scoped names.
    let base = p.name.rsplit('/').next().unwrap_or(&p.name);
    manifest["dist"]["tarball"] = json!(format!("http://{host}/{}/-/{base}-{v}.tgz", p.name));
    manifest["dist"]["integrity"] = json!(tarball.digests.integrity().to_string());
    manifest["dist"]["shasum"] = json!(tarball.digests.shasum());
    versions[v] = manifest;
    let tags = doc.entry("dist-tags").or_insert_with(|| json!({}));
    if let Some(new) = p.document.get("dist-tags").and_then(Value::as_object) {
        for (tag, version) in new {
            tags[tag] = version.clone();
        }
    }
    let now = json!(humantime_now());
    let time = doc.entry("time").or_insert_with(|| json!({"created": now}));
    time["modified"] = now.clone();
    time[v] = now;
    for key in ["description", "readme", "maintainers"] {
        if let Some(value) = p.document.get(key) {
            doc.insert(key.into(), value.clone());
        }
    }
    reg.save(&p.name, &doc).map_err(fail)
}

/// Seconds since the epoch as an ISO-8601-ish UTC timestamp (npm only displays it).
fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The packument directory beside a store directory: `DIR.packuments`.
pub fn packuments_beside(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".packuments");
    PathBuf::from(name)
}

/// Serves `reg` on `listener` within `options`' bounds until `shutdown` resolves, then lets the
/// requests in flight finish. Through the library's accept loop rather than `axum::serve`, which
/// sets no header timeout, idle timeout or connection cap: a registry is often reachable directly,
/// and there every client that opens a connection and sends nothing would hold it forever.
pub async fn serve(
    listener: tokio::net::TcpListener,
    reg: Registry,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    tarvault::server::serve_with(listener, reg.router(), options, shutdown).await
}
