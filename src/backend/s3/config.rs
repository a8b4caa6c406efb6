//! `s3://bucket/prefix?option=value` and the `AWS_*` environment, turned into an `AmazonS3` client.
//!
//! Credentials, region and endpoint come from the usual environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …, as read by `object_store`), so the same URL works on
//! AWS and on any S3-compatible server. Query options override the environment:
//!
//! | option | meaning |
//! |---|---|
//! | `endpoint=URL` | a non-AWS server (Ceph RGW, MinIO, Garage, R2, …); path-style addressing |
//! | `allow_http=true` | permit plain HTTP (loopback test servers) |
//! | `region=NAME` | the signing region |
//! | `checksum=sha256\|none` | send `x-amz-checksum-sha256` so the server verifies each upload too (default `sha256`; it costs nothing extra, SigV4 already hashes the payload) |
//! | `max_retries=N` | retries of a failed request (5xx, connection reset, timeout), default 4 |
//! | `retry_timeout_secs=N` | give up retrying a request after this long, default 30 |
//! | `multipart_threshold=BYTES` | larger blobs go up as multipart uploads, default 16 MiB |
//! | `staging=true\|false` | a larger blob of unknown digest streams to a staging key while hashed, then a server-side copy names it (default `true`); `false` spools it to a local file and uploads it once hashed |
//! | `alias_cache_bytes=BYTES` | memory for cached sha1/blake3 lookups, default 32 MiB |
//! | `alias_miss_ttl_ms=N` | how long a lookup that found nothing is answered from memory, default 1000 (0: never) |
//! | `alias_grace_secs=N` | fsck checks whether a marker's blob exists only once the marker is this old, default 3600 (a put's blob lands within that of its markers) |

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

use crate::{Error, Result};

/// Parsed `s3://` store location.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The key prefix the store lives under (may be empty), used verbatim: every key starts
    /// with it. Leading and trailing `/` are ignored; empty, `.` and `..` segments and control
    /// characters are refused.
    pub prefix: String,
    /// Endpoint override (else `AWS_ENDPOINT_URL` or AWS itself).
    pub endpoint: Option<String>,
    /// Allow plain HTTP (else `AWS_ALLOW_HTTP`).
    pub allow_http: Option<bool>,
    /// Region override (else `AWS_REGION`).
    pub region: Option<String>,
    /// Send a sha256 checksum with every upload.
    pub checksum: bool,
    /// Bounded retries with exponential backoff.
    pub max_retries: usize,
    /// Total time allowed for one request's retries.
    pub retry_timeout: Duration,
    /// Explicit credentials (else the environment).
    pub credentials: Option<(String, String)>,
    /// Blobs larger than this are spooled to a temp file and sent as a multipart upload; smaller
    /// ones are held in memory and sent with one PUT.
    pub multipart_threshold: u64,
    /// Large blobs of unknown digest stream to a staging key while they are hashed and are then
    /// copied on the server to their key, instead of being spooled to a local file and uploaded
    /// once hashed. Falls back to spooling by itself where the server cannot copy.
    pub stage_unknown: bool,
    /// What the alias index may keep in memory.
    pub alias_cache: crate::backend::AliasCacheConfig,
    /// How old an alias marker must be before fsck checks whether its blob exists (and removes
    /// it if not): a younger one may belong to a put whose blob is still going up.
    pub alias_grace: Duration,
}

impl S3Config {
    /// A config for `bucket` and `prefix` with defaults for everything else.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: None,
            allow_http: None,
            region: None,
            checksum: true,
            max_retries: 4,
            retry_timeout: Duration::from_secs(30),
            credentials: None,
            multipart_threshold: crate::backend::s3::writer::SINGLE_PUT_MAX,
            stage_unknown: true,
            alias_cache: crate::backend::AliasCacheConfig::default(),
            alias_grace: crate::backend::DEFAULT_ALIAS_GRACE,
        }
    }

    /// Parses `s3://bucket[/prefix][?options]`.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::Config(format!("not an s3:// URL: {url}")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!("no bucket in {url}")));
        }
        // The URL's path is percent-encoded (`my%20dir` is the prefix `my dir`), as in a
        // `manta://` URL; the keys then start with the decoded prefix exactly (see `Keys`).
        let prefix = percent_encoding::percent_decode_str(prefix)
            .decode_utf8()
            .map_err(|e| Error::Config(format!("bad prefix in {url}: {e}")))?;
        super::keys::check_prefix(&prefix)?;
        let mut c = S3Config::new(bucket, prefix.trim_matches('/'));
        let mut given: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("store option {pair:?} has no value")))?;
            crate::backend::option_once(given.iter().copied(), k)?;
            given.push(k);
            let bad = || Error::Config(format!("bad value for store option {k}: {v:?}"));
            match k {
                "endpoint" => c.endpoint = Some(v.to_string()),
                "allow_http" => c.allow_http = Some(crate::backend::parse_flag(v).ok_or_else(bad)?),
                "region" => c.region = Some(v.to_string()),
                "checksum" => {
                    c.checksum = match v {
                        "sha256" => true,
                        "none" => false,
                        _ => return Err(bad()),
                    }
                }
                "max_retries" => c.max_retries = v.parse().map_err(|_| bad())?,
                "multipart_threshold" => c.multipart_threshold = v.parse().map_err(|_| bad())?,
                "staging" => c.stage_unknown = crate::backend::parse_flag(v).ok_or_else(bad)?,
                "alias_cache_bytes" => c.alias_cache.bytes = v.parse().map_err(|_| bad())?,
                "alias_miss_ttl_ms" => {
                    c.alias_cache.miss_ttl = Duration::from_millis(v.parse().map_err(|_| bad())?)
                }
                "alias_grace_secs" => {
                    c.alias_grace = Duration::from_secs(v.parse().map_err(|_| bad())?)
                }
                "retry_timeout_secs" => {
                    c.retry_timeout = Duration::from_secs(v.parse().map_err(|_| bad())?)
                }
                _ => return Err(Error::Config(format!("unknown s3 store option {k:?}"))),
            }
        }
        Ok(c)
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The retry policy: exponential backoff from 100 ms to 2 s, at most `max_retries` times
    /// and never longer than `retry_timeout` in all, so a dead server fails a call in bounded
    /// time instead of hanging it.
    pub(crate) fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    /// Builds the `object_store` client (also for raw access beside a store: tools, tests).
    pub fn build(&self) -> Result<AmazonS3> {
        // A prefix set in code rather than parsed from a URL is checked here, before any key is
        // made from it.
        super::keys::check_prefix(&self.prefix)?;
        install_tls_provider();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_retry(self.retry())
            // Client options one by one: `with_client_options` would replace those read from the
            // environment (AWS_ALLOW_HTTP among them).
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "10s",
            )
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "300s");
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(h) = self.allow_http {
            b = b.with_allow_http(h);
        }
        if let Some(r) = &self.region {
            b = b.with_region(r);
        }
        if let Some((id, secret)) = &self.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        if self.checksum {
            b = b.with_checksum_algorithm(Checksum::SHA256);
        }
        b.build()
            .map_err(|e| Error::Config(format!("{}: {e}", self.describe())))
    }
}

/// Gets the client's credentials before the store is first used. A key pair given in the config
/// or the environment is there already; without one, object_store fetches credentials (from the
/// instance-metadata service, or a web identity or container endpoint where those are set), and
/// a failure there is a configuration error naming the store and the variables to set, not a
/// backend error about a request to the metadata service. The credentials fetched are cached by
/// the client for the requests that follow.
pub(crate) async fn fetch_credentials(client: &AmazonS3, describe: &str) -> Result<()> {
    client.credentials().get_credential().await.map_err(|e| {
        Error::config(
            format!(
                "{describe}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (none were given, and fetching them from the instance-metadata service or the \
                 credential source configured in AWS_* failed)"
            ),
            e,
        )
    })?;
    Ok(())
}

/// TLS for the S3 client uses rustls on `ring` (see Cargo.toml); rustls wants a process-wide
/// provider. Installing fails harmlessly when the application already installed one.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = S3Config::parse("s3://b/p/q/?endpoint=http://127.0.0.1:9000&allow_http=true")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.bucket, "b");
        assert_eq!(c.prefix, "p/q");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.allow_http, Some(true));
        assert_eq!(c.describe(), "s3://b/p/q");
        assert!(S3Config::parse("s3://").is_err());
        assert!(S3Config::parse("s3://b?nope=1").is_err());
        assert!(S3Config::parse("s3://b?checksum=md5").is_err());
        assert!(S3Config::parse("s3://b").is_ok_and(|c| c.stage_unknown));
        assert!(S3Config::parse("s3://b?staging=false").is_ok_and(|c| !c.stage_unknown));
        assert!(S3Config::parse("s3://b?staging=maybe").is_err());
        assert!(S3Config::parse("s3://b?max_retries=1&max_retries=9").is_err());
        assert_eq!(
            S3Config::parse("s3://b").map(|c| c.prefix).ok().as_deref(),
            Some("")
        );
        let prefix = |url: &str| S3Config::parse(url).map(|c| c.prefix);
        assert_eq!(prefix("s3://b/my%20dir/").ok().as_deref(), Some("my dir"));
        assert_eq!(
            prefix("s3://b/~team/caf%C3%A9").ok().as_deref(),
            Some("~team/café")
        );
        assert_eq!(prefix("s3://b/50%25").ok().as_deref(), Some("50%"));
        for bad in ["s3://b/a//b", "s3://b/a/../b", "s3://b/a%00b", "s3://b/%FF"] {
            assert!(
                prefix(bad).is_err_and(|e| e.kind() == crate::ErrorKind::Config),
                "{bad}"
            );
        }
        assert!(S3Config::new("b", "a/./b").build().is_err());
    }
}
