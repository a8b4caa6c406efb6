//! Opening stores from text: what `--store` and `TARVAULT_STORE` accept.
//!
//! This module sits above [`store`](crate::Store) and the backends: it parses a store spec and
//! builds the backends it names (composite ones from [`config`] too), so neither the store nor a
//! backend ever needs to open another store by name. A spec is
//! - a filesystem path, or `file:///path` (the embedded default; fsync on, or off with
//!   `?fsync=false` on the `file:` form; `&batch_flush=per-file` makes batches durable with each
//!   blob's own fsyncs instead of `syncfs`, see [`BatchFlush`](crate::backend::fs::BatchFlush));
//! - `memory:` for a store that lives as long as the process;
//! - a remote URL (`s3://`, `manta://`), each behind its cargo feature;
//! - `http://host[:port][/prefix]` (or `https://`): another tarvault server, read-only (feature
//!   `http`; see `backend::http`), the upstream of a mirror;
//! - `config:FILE[#NAME]`, a `.toml`/`.json` file, or inline JSON: a replicated or cached store
//!   (see [`config`]).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::backend::Backend;
use crate::{Error, Result, Store};

pub mod config;
#[cfg(feature = "fs")]
mod file_url;

pub use config::{is_config_spec, open_typed, Opened};

/// What opening a filesystem store does when nothing is at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Makes a new, empty store there ([`Store::open`]).
    Create,
    /// Refuses, with an error of kind [`Config`](crate::ErrorKind::Config)
    /// ([`Store::open_existing`]).
    Refuse,
}

/// What opens one URL scheme: the whole URL in, a backend out.
type Opener = for<'a> fn(&'a str) -> BoxFuture<'a, Result<Arc<dyn Backend>>>;

/// `scheme!("feature", open)`: an [`Opener`] calling `async fn open(url: &str) -> Result<impl
/// Backend>` when the cargo feature is on, and saying which feature is missing when it is off.
macro_rules! scheme {
    ($feature:literal, $open:path) => {{
        #[cfg(feature = $feature)]
        let open: Opener =
            |url| Box::pin(async move { Ok(Arc::new($open(url).await?) as Arc<dyn Backend>) });
        #[cfg(not(feature = $feature))]
        let open: Opener = |url| {
            let scheme = url.split_once("://").map_or("file", |(s, _)| s);
            let message = format!(
                "{scheme}:// stores need tarvault built with the `{}` feature",
                $feature
            );
            Box::pin(async move { Err(Error::Config(message)) })
        };
        open
    }};
}

/// The URL schemes a spec may use and the cargo feature each needs. A new backend is one line
/// here, given an `async fn(&str) -> Result<impl Backend>` that opens it from its URL (behind its
/// feature, like `open_s3` below).
fn schemes() -> Vec<(&'static str, Opener)> {
    vec![
        ("file", scheme!("fs", open_file)),
        ("s3", scheme!("s3", open_s3)),
        ("manta", scheme!("manta", open_manta)),
        ("http", scheme!("http", open_http)),
        ("https", scheme!("http", open_http)),
    ]
}

impl Store {
    /// Opens the store named by `spec` (see the [`open`](crate::open) module for what a spec is).
    /// A filesystem store is created where there is none. Call it within a Tokio runtime, as
    /// every operation of a store: a filesystem store is opened on its blocking pool (making
    /// directories, sweeping temp files), a remote one with its HTTP client. A caller without
    /// one opens a filesystem store with [`Store::open_fs`], on its own thread.
    pub async fn open(spec: &str) -> Result<Store> {
        open_backend(spec).await.map(Store::from_arc)
    }

    /// [`Store::open`] for a caller that only reads (`get`, `has`, `ls`, `fsck`…): a spec naming
    /// a filesystem path (or `file:` URL) where nothing is, or a directory of other files, is an
    /// error of kind [`Config`](crate::ErrorKind::Config) instead of a new, empty store there
    /// (see [`FsBackend::check_existing`](crate::backend::fs::FsBackend::check_existing)). The
    /// same holds for every member of a configuration, but a cache's local tier (made where
    /// there is none, as a read through the cache fills it): a mistyped replica or remote is an
    /// error, not a new, empty member. Other specs open as with [`Store::open`].
    pub async fn open_existing(spec: &str) -> Result<Store> {
        open_backend_as(spec, Missing::Refuse)
            .await
            .map(Store::from_arc)
    }
}

/// The directory a spec that is not a configuration names when it is a filesystem store (a
/// path or a `file:` URL).
#[cfg(feature = "fs")]
fn fs_path(spec: &str) -> Result<Option<std::path::PathBuf>> {
    if spec.starts_with("memory:") {
        return Ok(None);
    }
    Ok(match scheme_of(spec) {
        None => Some(spec.into()),
        Some("file") => Some(file_url::parse(spec)?.0),
        Some(_) => None,
    })
}

/// The URL scheme of a spec that is not a configuration or `memory:`; `None` for a plain path.
fn scheme_of(spec: &str) -> Option<&str> {
    // `file:/dir` is a URL too (RFC 8089's short form), not a relative path starting `file:`.
    match spec.split_once("://") {
        Some((scheme, _)) => Some(scheme),
        None => spec.starts_with("file:").then_some("file"),
    }
}

/// Opens the backend named by `spec`, composite or plain: [`Store::open`] without the store.
pub async fn open_backend(spec: &str) -> Result<Arc<dyn Backend>> {
    open_backend_as(spec, Missing::Create).await
}

/// [`open_backend`], with what a filesystem store named in `spec` does when it is missing.
async fn open_backend_as(spec: &str, missing: Missing) -> Result<Arc<dyn Backend>> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(Error::Config("empty store location".into()));
    }
    if is_config_spec(spec) {
        return Ok(config::open_as(spec, missing).await?.backend());
    }
    open_plain(spec, missing).await
}

/// Opens a spec that is not a configuration: a path, `memory:` or a URL. The members of a
/// composite store are opened here.
async fn open_plain(spec: &str, missing: Missing) -> Result<Arc<dyn Backend>> {
    #[cfg(not(feature = "fs"))]
    let _ = missing;
    #[cfg(feature = "fs")]
    if missing == Missing::Refuse {
        if let Some(path) = fs_path(spec)? {
            crate::backend::fs::FsBackend::check_existing(path)?;
        }
    }
    if spec == "memory:" || spec == "memory://" {
        #[cfg(feature = "memory")]
        return Ok(Arc::new(crate::backend::memory::MemoryBackend::new()));
        #[cfg(not(feature = "memory"))]
        return Err(Error::Config("built without the `memory` feature".into()));
    }
    // Not a directory named `memory:x`: a store of the process, which takes no name.
    if spec.starts_with("memory:") {
        return Err(Error::Config(format!(
            "unknown store {spec:?}: a memory store is `memory:`, with nothing after it"
        )));
    }
    match scheme_of(spec) {
        Some(scheme) => match schemes().iter().find(|(name, _)| *name == scheme) {
            Some((_, open)) => open(spec).await,
            None => {
                let known: Vec<String> = schemes().iter().map(|(s, _)| format!("{s}://")).collect();
                Err(Error::Config(format!(
                    "unknown store scheme {scheme}:// (a store is a directory, memory:, a \
                     configuration, or a URL of {})",
                    known.join(", ")
                )))
            }
        },
        None => scheme!("fs", open_path)(spec).await,
    }
}

/// A filesystem store at a plain path (a `?` in it is part of the name, not a query).
#[cfg(feature = "fs")]
async fn open_path(path: &str) -> Result<crate::backend::fs::FsBackend> {
    open_fs_backend(path.into(), crate::backend::fs::FsOptions::default()).await
}

/// [`FsBackend::open`](crate::backend::fs::FsBackend::open) on the blocking pool: it creates
/// directories, sweeps dead writers' temp files and may import (under a lock another process can
/// hold) an old alias log, none of which may hold up the runtime thread of the service opening it.
#[cfg(feature = "fs")]
async fn open_fs_backend(
    path: std::path::PathBuf,
    options: crate::backend::fs::FsOptions,
) -> Result<crate::backend::fs::FsBackend> {
    crate::task::blocking(move || crate::backend::fs::FsBackend::open(path, options)).await
}

/// A filesystem store named by URL:
/// `file:///path?fsync=true|false&batch_flush=syncfs|per-file&direct_writes=true|false&read_budget=256MiB`
/// (also `file://localhost/path` and `file:/path`; the path percent-decoded, see [`file_url`]).
/// `read_budget` is [`FsOptions::read_budget`](crate::backend::fs::FsOptions::read_budget).
#[cfg(feature = "fs")]
async fn open_file(spec: &str) -> Result<crate::backend::fs::FsBackend> {
    let (path, query) = file_url::parse(spec)?;
    let mut options = crate::backend::fs::FsOptions::default();
    let mut given: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        crate::backend::option_once(given.iter().copied(), key)?;
        given.push(key);
        match pair.split_once('=') {
            Some(("fsync", v)) => {
                options.fsync = crate::backend::parse_flag(v)
                    .ok_or_else(|| Error::Config(format!("bad fsync value {v:?}")))?;
            }
            Some(("batch_flush", v)) => options.batch_flush = v.parse()?,
            Some(("direct_writes", v)) => {
                let on = crate::backend::parse_flag(v)
                    .ok_or_else(|| Error::Config(format!("bad direct_writes value {v:?}")))?;
                options.direct_writes_from = on.then_some(crate::backend::fs::DIRECT_WRITES_FROM);
            }
            Some(("read_budget", v)) => {
                options.read_budget = crate::units::parse_size(v)
                    .map_err(|e| Error::Config(format!("read_budget: {e}")))?;
            }
            _ => return Err(Error::Config(format!("unknown store option {pair:?}"))),
        }
    }
    open_fs_backend(path, options).await
}

/// An S3 store: `s3://bucket/prefix?options` plus the `AWS_*` environment
/// (see [`S3Config`](crate::backend::s3::S3Config)).
#[cfg(feature = "s3")]
async fn open_s3(spec: &str) -> Result<crate::backend::s3::S3Backend> {
    let config = crate::backend::s3::S3Config::parse(spec)?;
    crate::backend::s3::S3Backend::connect(&config).await
}

/// A Manta store: `manta://[host[:port]]/path?user=…` plus the `MANTA_*` environment (the
/// account is `?user=` or `MANTA_USER`, never a `user@` before the host).
#[cfg(feature = "manta")]
async fn open_manta(spec: &str) -> Result<crate::backend::manta::MantaBackend> {
    crate::backend::manta::MantaBackend::open_url(spec)
}

/// Another tarvault server, read-only: `http(s)://host[:port][/prefix]` (with a local tier, a
/// mirror).
#[cfg(feature = "http")]
async fn open_http(spec: &str) -> Result<crate::backend::http::HttpBackend> {
    crate::backend::http::HttpBackend::open_url(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[tokio::test]
    async fn schemes_dispatch_and_unknown_ones_are_config_errors() {
        let unknown = open_backend("gopher://x/y").await.err();
        assert_eq!(unknown.map(|e| e.kind()), Some(ErrorKind::Config));
        let empty = open_backend("  ").await.err();
        assert_eq!(empty.map(|e| e.kind()), Some(ErrorKind::Config));
        #[cfg(feature = "memory")]
        assert!(open_backend("memory:").await.is_ok());
        // Not a directory of that name.
        let named = open_backend("memory:foo").await.err();
        assert_eq!(named.map(|e| e.kind()), Some(ErrorKind::Config));
        assert!(!std::path::Path::new("memory:foo").exists());
        let names: Vec<&str> = schemes().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["file", "s3", "manta", "http", "https"]);
    }

    /// `fsync=false&fsync=true` says two things: refused, not read as whichever comes last.
    #[cfg(feature = "fs")]
    #[tokio::test]
    async fn a_store_option_given_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = dir.path().join("s");
        let spec = format!("file://{}?fsync=false&fsync=true", store.display());
        let err = open_backend(&spec).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Config));
        assert!(!store.exists());
    }
}
