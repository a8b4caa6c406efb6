//! Opening a store from a string: a path, `file://…`, `memory:`, and (with their features) remote
//! schemes. This is what `--store` and `TARVAULT_STORE` accept.

use super::Store;
use crate::{Error, Result};

impl Store {
    /// Opens a store named by `spec`:
    /// - a filesystem path, or `file:///path` (the embedded default; fsync on, or off with
    ///   `?fsync=false` on the `file:` form);
    /// - `memory:` for a store that lives as long as the process;
    /// - `config:FILE[#NAME]`, a `.toml`/`.json` file, or inline JSON: a replicated or cached store
    ///   (see [`backend::compose::config`](crate::backend::compose::config)).
    ///
    /// - `http://host[:port][/prefix]` (or `https://`): another tarvault server, read-only (see
    ///   [`backend::http`](crate::backend::http)); with a local tier it is a mirror.
    ///
    /// Remote schemes (`s3://`, `manta://`, `http://`) need their cargo features.
    pub async fn open(spec: &str) -> Result<Store> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::Config("empty store location".into()));
        }
        // Replicated or cached stores, from a config file or inline JSON (see
        // `backend::compose::config`); its members are opened by this function again.
        if let Some(store) = crate::backend::compose::config::open(spec).await? {
            return Ok(store);
        }
        if spec == "memory:" || spec == "memory://" {
            #[cfg(feature = "memory")]
            return Ok(Store::memory());
            #[cfg(not(feature = "memory"))]
            return Err(Error::Config("built without the `memory` feature".into()));
        }
        if let Some((scheme, rest)) = spec.split_once("://") {
            return match scheme {
                "file" => {
                    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                    open_fs(path, query)
                }
                #[cfg(feature = "manta")]
                "manta" => Ok(Store::new(crate::backend::manta::MantaBackend::open_url(
                    spec,
                )?)),
                "s3" => open_s3(spec).await,
                "http" | "https" => open_http(spec),
                #[allow(unreachable_patterns)] // "manta" is handled above when the feature is on
                "manta" => Err(Error::Config(format!(
                    "{scheme}:// stores need tarvault built with the `{scheme}` feature"
                ))),
                other => Err(Error::Config(format!("unknown store scheme {other}://"))),
            };
        }
        open_fs(spec, "")
    }
}

/// An S3 store: `s3://bucket/prefix?options` plus the `AWS_*` environment
/// (see [`S3Config`](crate::backend::s3::S3Config)).
async fn open_s3(spec: &str) -> Result<Store> {
    #[cfg(feature = "s3")]
    {
        let config = crate::backend::s3::S3Config::parse(spec)?;
        Ok(Store::new(
            crate::backend::s3::S3Backend::connect(&config).await?,
        ))
    }
    #[cfg(not(feature = "s3"))]
    {
        let _ = spec;
        Err(Error::Config(
            "s3:// stores need tarvault built with the `s3` feature".into(),
        ))
    }
}

/// A read-only store over another tarvault server (feature `http`).
fn open_http(spec: &str) -> Result<Store> {
    #[cfg(feature = "http")]
    return Ok(Store::new(crate::backend::http::HttpBackend::open_url(
        spec,
    )?));
    #[cfg(not(feature = "http"))]
    {
        let _ = spec;
        Err(Error::Config(
            "http:// stores need tarvault built with the `http` feature".into(),
        ))
    }
}

/// A filesystem store at `path`, with `query` options (`fsync=true|false`) from a `file://` URL.
fn open_fs(path: &str, query: &str) -> Result<Store> {
    #[cfg(feature = "fs")]
    {
        let mut options = crate::backend::fs::FsOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("fsync", v)) => {
                    options.fsync = match v {
                        "true" | "1" | "on" => true,
                        "false" | "0" | "off" => false,
                        _ => return Err(Error::Config(format!("bad fsync value {v:?}"))),
                    }
                }
                _ => return Err(Error::Config(format!("unknown store option {pair:?}"))),
            }
        }
        Ok(Store::new(crate::backend::fs::FsBackend::open(
            path, options,
        )?))
    }
    #[cfg(not(feature = "fs"))]
    {
        let _ = (path, query);
        Err(Error::Config("built without the `fs` feature".into()))
    }
}
