//! Serving tarballs over HTTP: an [axum] router a registry embeds in its own app, and what
//! `tarvault serve` runs.
//!
//! Routes (`GET` and `HEAD`):
//! - `/sha512/<hex>`, `/sha1/<hex>` (npm's `shasum`) and `/blake3/<hex>`: any stored blob by
//!   digest;
//! - with a mapping ([`Server::with_mapping`], written by `tarvault migrate couch`), npm's tarball
//!   URLs `/<name>/-/<file>` and `/@scope/<name>/-/<file>` (also with the slash as `%2F`);
//! - `/-/health` and `/-/metrics` (Prometheus).
//!
//! Blob responses are made for CDNs: a strong `ETag` that is the blob's integrity, `Cache-Control:
//! public, max-age=31536000, immutable`, `If-Match` (412 unless `*` or a strong match) and
//! `If-None-Match` (304) answered from a stat alone (the blob is not read), and single `Range`s
//! (206; several ranges get the whole blob). Every byte
//! is verified as it streams: a blob that fails verification before its head is sent gets a 500,
//! and one that fails later has its body aborted short of its `Content-Length`, so no client or
//! cache ever holds a complete bad body. Either way the failure is logged and counted.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tarvault::server::Server;
//! use tarvault::Store;
//!
//! let server = Server::new(Store::open("/var/lib/tarvault").await?);
//! // Embed `server.router()` in an app (below), or run it on its own:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tarvault::server::serve(listener, server, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! The blob routes are the router's fallback, so `merge` needs an app without a fallback of its
//! own (axum panics on a second one). Nested under a prefix, the router keeps its fallback to its
//! prefix, beside the app's own routes and fallback (or the app calls it as a service, as
//! `examples/npm_registry` does):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use axum::{routing::get, Router};
//! use tarvault::{server::Server, PutOptions, Store};
//! use tower::ServiceExt; // `oneshot`
//!
//! let store = Store::memory();
//! let put = store.put_bytes(&b"hello"[..], &PutOptions::default()).await?;
//! let app = Router::new()
//!     .route("/", get(|| async { "my registry" }))
//!     .nest("/tarballs", Server::new(store).router())
//!     .fallback(|| async { (StatusCode::NOT_FOUND, "not mine") });
//!
//! let uri = format!("/tarballs/sha1/{}", put.digests.shasum());
//! let response = app.clone().oneshot(Request::get(uri).body(Body::empty())?).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
//! assert_eq!(&body[..], b"hello");
//! let health = app.oneshot(Request::get("/tarballs/-/health").body(Body::empty())?).await?;
//! assert_eq!(health.status(), StatusCode::OK);
//! # Ok(()) }
//! ```
//!
//! [`serve`] bounds every connection ([`ServeOptions`]: a header timeout, an idle timeout, a send
//! timeout for clients that stop reading, a cap on open connections, a small HTTP/2 stream limit), because the server is an origin that is
//! often reachable without its CDN in front, and answers 400 on every route to an HTTP/1.1
//! request without a `Host` header or any request with two (RFC 9112 §3.2). A registry that
//! embeds [`Server::router`] in its own app gets the same by serving that app with [`serve`] or
//! [`serve_with`] too (as `examples/npm_registry` does); served any other way, it has to set such
//! bounds itself.

mod fd_limit;
mod handler;
mod http;
mod listen;
mod metrics;
mod names;
mod progress;
mod routes;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::mapping::MapEntry;
use crate::{Result, Store};

use crate::mapping::db::MapDb;
pub use fd_limit::raise_open_file_limit;
pub use handler::VERIFIED_BEFORE_HEAD;
pub use listen::{serve, serve_with, ServeOptions};
pub use metrics::Metrics;
use names::{NameIndex, NameMap};
use routes::Route;

/// A tarball server over a [`Store`]. Cheap to clone (an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Server {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    names: NameIndex,
    metrics: Arc<Metrics>,
    /// See [`Server::verify_before_head`].
    verified_before_head: AtomicU64,
}

impl Server {
    /// A server of `store` by digest only (`/sha512/…`, `/sha1/…`, `/blake3/…`).
    pub fn new(store: Store) -> Server {
        Server::with_names(store, NameIndex::default())
    }

    fn with_names(store: Store, names: NameIndex) -> Server {
        Server {
            inner: Arc::new(Inner {
                store,
                names,
                metrics: Arc::default(),
                verified_before_head: AtomicU64::new(handler::VERIFIED_BEFORE_HEAD),
            }),
        }
    }

    /// A server that also answers npm's tarball URLs for every entry of a mapping. Fails if an
    /// entry's integrity is not sha512 or if one URL is mapped to two different blobs.
    pub fn with_mapping(
        store: Store,
        entries: impl IntoIterator<Item = MapEntry>,
    ) -> Result<Server> {
        let names = NameIndex::Memory(NameMap::build(entries)?);
        Ok(Server::with_names(store, names))
    }

    /// [`Server::with_mapping`] with the mapping file `tarvault migrate couch --map` wrote, read
    /// into an SQLite database beside it (`<path>.sqlite`) that every server process of the host
    /// shares: opening it reads only the lines appended since it was last read, memory does not
    /// grow with the mapping, and a URL migrated while the server runs is found within a second.
    /// Where that file cannot be made (a read-only directory), the database is kept in the temp
    /// directory (`$TMPDIR`), named after the mapping's path and shared the same way; only where
    /// it cannot be made there either is the mapping held in memory (a warning says so).
    /// Blocking (it may read the whole mapping once).
    pub fn with_mapping_file(store: Store, path: &Path) -> Result<Server> {
        let names = match MapDb::open(path) {
            Ok(db) => {
                if let Some(conflict) = db.conflict()? {
                    return Err(crate::Error::Config(conflict));
                }
                NameIndex::Db(Arc::new(db))
            }
            Err(e @ crate::Error::Index { .. }) => {
                tracing::warn!(mapping = %path.display(), error = %e.report(), "cannot keep the mapping in a database beside it or in the temp directory; holding it in memory (it grows with the mapping)");
                NameIndex::Memory(NameMap::build(crate::mapping::read_mapping(path)?)?)
            }
            Err(e) => return Err(e),
        };
        Ok(Server::with_names(store, names))
    }

    /// The store served.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Blobs up to `bytes` long are read and verified whole before a response's head is sent
    /// (default 64 MiB), where the store reads them locally (the fs; from a remote store that
    /// would be a second download); a larger one, or one from a remote store, streams verified as
    /// it goes, and one found corrupt then has its body cut short after bytes of it went out.
    /// A whole blob verified first is held in memory until sent, within the process's budget for
    /// held copies ([`HELD_IN_MEMORY`](crate::backend::compose::verify::HELD_IN_MEMORY)); past
    /// it, and for a range, the blob is read a second time to be sent. Raising the size keeps
    /// every unchecked byte from the wire for larger blobs, at the cost of that memory or second
    /// read, and of a longer wait for the first byte; for the requests that start after the call.
    pub fn verify_before_head(&self, bytes: u64) {
        self.inner
            .verified_before_head
            .store(bytes, Ordering::Relaxed);
    }

    fn verified_before_head(&self) -> u64 {
        self.inner.verified_before_head.load(Ordering::Relaxed)
    }

    /// How many tarball URLs the mapping gave.
    pub fn mapped_urls(&self) -> usize {
        self.inner.names.len()
    }

    /// The live counters (also at `/-/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn metrics_arc(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    fn names(&self) -> &NameIndex {
        &self.inner.names
    }

    /// The routes, ready to serve or to merge into (or nest under) a registry's own router.
    pub fn router(&self) -> Router {
        Router::new()
            // Other methods: the blob routes' 405 (`Allow`, `no-store`), counted, not axum's own.
            .route("/-/health", get(health).fallback(health_other_method))
            .route(
                "/-/metrics",
                get(metrics_page).fallback(metrics_other_method),
            )
            .fallback(handler::blob)
            .with_state(self.clone())
    }
}

/// What [`serve`] and [`serve_with`] serve a server as: [`Server::router`].
impl From<Server> for Router {
    fn from(server: Server) -> Router {
        server.router()
    }
}

async fn health(State(server): State<Server>) -> Response {
    let started = Instant::now();
    let r = handler::plain(StatusCode::OK, "ok\n");
    server
        .metrics()
        .response(Route::Health, r.status(), started.elapsed());
    r
}

fn other_method(server: &Server, route: Route) -> Response {
    let started = Instant::now();
    let r = handler::method_not_allowed();
    server
        .metrics()
        .response(route, r.status(), started.elapsed());
    r
}

async fn health_other_method(State(server): State<Server>) -> Response {
    other_method(&server, Route::Health)
}

async fn metrics_other_method(State(server): State<Server>) -> Response {
    other_method(&server, Route::Metrics)
}

async fn metrics_page(State(server): State<Server>) -> Response {
    let started = Instant::now();
    let mut r = Response::new(axum::body::Body::from(server.metrics().render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    // A CDN in front must not keep (and serve to anyone) this moment's figures.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, http::NO_STORE);
    server
        .metrics()
        .response(Route::Metrics, r.status(), started.elapsed());
    r
}
