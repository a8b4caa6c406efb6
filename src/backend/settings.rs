//! What the backends read and build alike: the spellings of a store URL's options, and the HTTP
//! client of those that speak plain HTTP.

#[cfg(any(feature = "fs", feature = "s3", feature = "manta", feature = "http"))]
use crate::{Error, Result};

/// An on/off store option's value: `true`, `1`, `on`, `yes` or `false`, `0`, `off`, `no`. One
/// reading for every backend's URL, so that each accepts the same spellings.
#[cfg(any(feature = "fs", feature = "s3", feature = "manta"))]
pub(crate) fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "on" | "yes" => Some(true),
        "false" | "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// Refuses a store URL option `key` that `earlier` (the keys before it) holds already: given twice,
/// it says two things, and which one was meant is not ours to guess. One rule for every
/// backend's URL, as with [`parse_flag`].
#[cfg(any(feature = "fs", feature = "s3", feature = "manta"))]
pub(crate) fn option_once<'a>(mut earlier: impl Iterator<Item = &'a str>, key: &str) -> Result<()> {
    if earlier.any(|k| k == key) {
        return Err(Error::Config(format!("store option {key:?} given twice")));
    }
    Ok(())
}

/// The HTTP client of the remote backends that speak plain HTTP (Manta, another tarvault): one
/// configuration for timeouts and the user agent.
#[cfg(feature = "manta")]
pub(crate) fn http_client() -> Result<reqwest::Client> {
    http_client_with(reqwest::Client::builder())
}

/// [`http_client`] on a builder the caller has set up further (a read timeout, say).
#[cfg(any(feature = "manta", feature = "http"))]
pub(crate) fn http_client_with(builder: reqwest::ClientBuilder) -> Result<reqwest::Client> {
    builder
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("tarvault/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))
}
