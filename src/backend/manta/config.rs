//! Configuration with node-manta's conventions: `MANTA_URL`, `MANTA_USER`, `MANTA_SUBUSER`,
//! `MANTA_ROLE`, `MANTA_KEY_ID`, and a private key file (`MANTA_KEY_MATERIAL`, the name the Go and
//! Triton tools use for a key path; otherwise the key in `~/.ssh` whose fingerprint is
//! `MANTA_KEY_ID`, or `~/.ssh/id_rsa` / `id_ecdsa`).
//!
//! A store URL overrides any of them:
//! `manta://[host[:port]]/<dir>[?url=…&user=…&subuser=…&role=…&key=…&key_id=…&durability=N&hash=sha256|sha512&tls=false&retries=N&timeout=SECS&alias_cache_bytes=N&alias_miss_ttl_ms=N&alias_grace_secs=N&staging=true|false]`
//! (the last two: memory for cached sha1/blake3 lookups, default 32 MiB, and how long a lookup
//! that found nothing is answered from memory, default 1000 ms).
//! `<dir>` is relative to the account (`/stor/tarvault` means `/<user>/stor/tarvault`; a leading
//! `~~` is accepted too). Without a host the endpoint is `MANTA_URL`.

use std::path::PathBuf;
use std::time::Duration;

use super::auth::{KeyError, LoadedKey, SignHash, Signer};
use crate::{Error, Result};

/// Everything needed to talk to one Manta store directory.
#[derive(Debug, Clone)]
pub struct MantaConfig {
    /// The endpoint, e.g. `https://us-central.manta.mnx.io` (no trailing slash).
    pub url: String,
    /// The account login (`MANTA_USER`).
    pub user: String,
    /// An RBAC sub-user (`MANTA_SUBUSER`).
    pub subuser: Option<String>,
    /// Roles to assume (`MANTA_ROLE`, comma separated), sent as the `Role` header.
    pub role: Option<String>,
    /// The private key file; `None` searches `~/.ssh`.
    pub key_path: Option<PathBuf>,
    /// `MANTA_KEY_ID` (MD5 or SHA256 form), used to pick the key in `~/.ssh` and checked against a
    /// given key file.
    pub key_id: Option<String>,
    /// Signature hash (default per key type).
    pub hash: Option<SignHash>,
    /// The store's root directory, absolute (`/<user>/stor/tarvault`).
    pub root: String,
    /// `durability-level` of stored blobs (number of copies, 1..9; Manta's default is 2).
    pub durability: u8,
    /// Attempts per request on 503 / `ThrottledError` / connection errors (at least 1).
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter, capped at [`MantaConfig::max_backoff`].
    pub base_backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
    /// How long a request may wait for the response head before it counts as failed (and is
    /// retried like a dropped connection). An upload's wait also allows its body to go out at
    /// 1 MiB/s. The same bounds a body: a small one read whole (a marker, a listing page) must
    /// arrive within it, and a blob's stream may wait this long for each piece (then it resumes
    /// where it stopped). A server that hangs then costs bounded time instead of forever.
    pub response_timeout: Duration,
    /// What the alias index may keep in memory (`?alias_cache_bytes=`, `?alias_miss_ttl_ms=`).
    pub alias_cache: crate::backend::AliasCacheConfig,
    /// How old an alias marker must be before fsck checks whether its blob exists (and removes
    /// it if not): a younger one may belong to a put whose blob is still going up
    /// (`?alias_grace_secs=`, default [`DEFAULT_ALIAS_GRACE`](crate::backend::DEFAULT_ALIAS_GRACE)).
    pub alias_grace: Duration,
    /// Whether a put past the in-memory spool streams to a staging object while it is hashed
    /// and is then named by a SnapLink, where the server makes them (`?staging=`, default
    /// `true`; see `staging`). `false` spools it to a local file and uploads it once hashed.
    pub staging: bool,
}

/// The default [`MantaConfig::response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

impl MantaConfig {
    /// The account `user` at `url`, with no key, sub-user or role yet, no root, and every other
    /// setting at its default.
    fn defaults(url: &str, user: String) -> Self {
        MantaConfig {
            url: normalise_url(url),
            user,
            root: String::new(),
            subuser: None,
            role: None,
            key_path: None,
            key_id: None,
            hash: None,
            durability: 2,
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            alias_cache: crate::backend::AliasCacheConfig::default(),
            alias_grace: crate::backend::DEFAULT_ALIAS_GRACE,
            staging: true,
        }
    }

    /// Reads `MANTA_*` from the environment, for a store at `root` (relative to the account or
    /// absolute).
    pub fn from_env(root: &str) -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let url = var("MANTA_URL").ok_or_else(|| Error::Config("MANTA_URL is not set".into()))?;
        let user =
            var("MANTA_USER").ok_or_else(|| Error::Config("MANTA_USER is not set".into()))?;
        let mut c = MantaConfig {
            subuser: var("MANTA_SUBUSER"),
            role: var("MANTA_ROLE"),
            key_path: var("MANTA_KEY_MATERIAL").map(PathBuf::from),
            key_id: var("MANTA_KEY_ID"),
            ..MantaConfig::defaults(&url, user)
        };
        c.root = c.absolute(root)?;
        Ok(c)
    }

    /// Parses a `manta://` store URL (see the module docs), filling the rest from the environment.
    pub fn from_store_url(spec: &str) -> Result<Self> {
        let rest = spec
            .strip_prefix("manta://")
            .ok_or_else(|| Error::Config(format!("not a manta:// URL: {spec}")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, path) = match location.find('/') {
            Some(i) => (&location[..i], &location[i..]),
            None => (location, ""),
        };
        let path = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map_err(|e| Error::Config(format!("bad path in {spec}: {e}")))?
            .into_owned();
        let path = path.strip_prefix("/~~").map(str::to_string).unwrap_or(path);
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|e| Error::Config(format!("bad value for {k}: {e}")))?
                .into_owned();
            // (`user` had been read from the first of two, `durability` from the last.)
            crate::backend::option_once(pairs.iter().map(|(n, _)| n.as_str()), k)?;
            pairs.push((k.to_string(), v));
        }
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());

        // Endpoint: ?url= wins, then the URL's host, then MANTA_URL.
        let tls = get("tls").and_then(|v| crate::backend::parse_flag(&v)) != Some(false);
        let url = match (get("url"), host.is_empty()) {
            (Some(u), _) => Some(u),
            (None, false) => Some(format!("{}://{host}", if tls { "https" } else { "http" })),
            (None, true) => None,
        };
        // Let explicit parameters stand in for missing environment variables.
        let env_or = |param: Option<String>, var: &str| {
            param.or_else(|| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        };
        let url = env_or(url, "MANTA_URL").ok_or_else(|| {
            Error::Config("no Manta endpoint: set MANTA_URL or name a host".into())
        })?;
        let user = env_or(get("user"), "MANTA_USER")
            .ok_or_else(|| Error::Config("no Manta account: set MANTA_USER or ?user=".into()))?;
        let mut c = MantaConfig {
            subuser: env_or(get("subuser"), "MANTA_SUBUSER"),
            role: env_or(get("role"), "MANTA_ROLE"),
            // A key file named in the URL is not checked against the environment's key id.
            key_id: match get("key") {
                Some(_) => get("key_id"),
                None => env_or(get("key_id"), "MANTA_KEY_ID"),
            },
            key_path: env_or(get("key"), "MANTA_KEY_MATERIAL").map(PathBuf::from),
            hash: get("hash")
                .map(|h| SignHash::parse(&h))
                .transpose()
                .map_err(|e| Error::config("manta `hash`", e))?,
            ..MantaConfig::defaults(&url, user)
        };
        if path.trim_matches('/').is_empty() {
            return Err(Error::Config(format!(
                "{spec}: name a directory, e.g. manta:///stor/tarvault"
            )));
        }
        c.root = c.absolute(&path)?;
        for (k, v) in &pairs {
            match k.as_str() {
                "durability" | "durability-level" => {
                    c.durability =
                        v.parse()
                            .ok()
                            .filter(|d| (1..=9).contains(d))
                            .ok_or_else(|| {
                                Error::Config(format!("durability must be 1..9, not {v:?}"))
                            })?
                }
                "retries" => {
                    // The first attempt and `n` more: a count with no room for the first is
                    // refused (`n + 1` overflowed: a panic, or no retry at all).
                    c.max_attempts = v
                        .parse::<u32>()
                        .ok()
                        .and_then(|n| n.checked_add(1))
                        .ok_or_else(|| Error::Config(format!("bad retries value {v:?}")))?;
                }
                "timeout" => {
                    c.response_timeout = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .ok_or_else(|| Error::Config(format!("bad timeout value {v:?}")))?;
                }
                "alias_cache_bytes" => {
                    c.alias_cache.bytes = v
                        .parse()
                        .map_err(|_| Error::Config(format!("bad alias_cache_bytes value {v:?}")))?
                }
                "alias_miss_ttl_ms" => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| Error::Config(format!("bad alias_miss_ttl_ms value {v:?}")))?;
                    c.alias_cache.miss_ttl = Duration::from_millis(ms);
                }
                "alias_grace_secs" => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| Error::Config(format!("bad alias_grace_secs value {v:?}")))?;
                    c.alias_grace = Duration::from_secs(secs);
                }
                "staging" => {
                    c.staging = crate::backend::parse_flag(v)
                        .ok_or_else(|| Error::Config(format!("bad staging value {v:?}")))?;
                }
                "url" | "user" | "subuser" | "role" | "key" | "key_id" | "hash" | "tls" => {}
                other => {
                    return Err(Error::Config(format!(
                        "unknown manta store option {other:?}"
                    )))
                }
            }
        }
        Ok(c)
    }

    /// Makes `dir` absolute under the account: `/stor/x` and `stor/x` become `/<user>/stor/x`;
    /// `/<user>/…` stays. Only `stor` and `public` can hold objects.
    fn absolute(&self, dir: &str) -> Result<String> {
        let dir = dir.strip_prefix("~~").unwrap_or(dir);
        let parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        let parts: Vec<&str> = if parts.first() == Some(&self.user.as_str()) {
            parts[1..].to_vec()
        } else {
            parts
        };
        match parts.first() {
            Some(&"stor") | Some(&"public") => {}
            _ => {
                return Err(Error::Config(format!(
                    "Manta store directory {dir:?} must be under /stor or /public"
                )))
            }
        }
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(Error::Config(format!("bad Manta directory {dir:?}")));
        }
        Ok(format!("/{}/{}", self.user, parts.join("/")))
    }

    /// Loads the private key and builds the request signer.
    pub fn signer(&self) -> Result<Signer> {
        let key = self
            .load_key()
            .map_err(|e| Error::config("manta signing key", e))?;
        Ok(Signer::new(
            key,
            &self.user,
            self.subuser.as_deref(),
            self.hash,
        ))
    }

    /// The key named by the configuration, as a typed [`KeyError`] on failure (so callers can
    /// tell an ed25519 key from a missing file).
    pub fn load_key(&self) -> std::result::Result<LoadedKey, KeyError> {
        if let Some(path) = &self.key_path {
            let key = LoadedKey::from_file(path)?;
            if let Some(id) = &self.key_id {
                if !key.matches_key_id(id) {
                    return Err(KeyError::Malformed {
                        what: path.display().to_string(),
                        reason: format!(
                            "its fingerprint {} is not MANTA_KEY_ID {id}",
                            key.md5_fingerprint()
                        ),
                    });
                }
            }
            return Ok(key);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let dir = home.join(".ssh");
        let mut candidates: Vec<PathBuf> = ["id_rsa", "id_ecdsa", "id_ed25519"]
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_file())
            .collect();
        if self.key_id.is_some() {
            // Any other private key in ~/.ssh may be the one MANTA_KEY_ID names.
            if let Ok(rd) = std::fs::read_dir(&dir) {
                let mut more: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_file()
                            && p.extension().is_none()
                            && !candidates.contains(p)
                            && p.file_name().is_some_and(|n| {
                                let n = n.to_string_lossy();
                                !n.starts_with("known_hosts")
                                    && n != "config"
                                    && n != "authorized_keys"
                            })
                    })
                    .collect();
                more.sort();
                candidates.extend(more);
            }
        }
        let mut first_err = None;
        for path in &candidates {
            match LoadedKey::from_file(path) {
                Ok(key) => match &self.key_id {
                    Some(id) if !key.matches_key_id(id) => continue,
                    _ => return Ok(key),
                },
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // With no key id, a lone unusable key (say ed25519) is the clearest thing to report.
        if let Some(e) = first_err.filter(|_| self.key_id.is_none()) {
            return Err(e);
        }
        Err(KeyError::NoKey {
            dir,
            detail: match &self.key_id {
                Some(id) => format!("matching MANTA_KEY_ID {id}"),
                None => "(tried id_rsa, id_ecdsa; set MANTA_KEY_MATERIAL)".into(),
            },
        })
    }
}

fn normalise_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        // node-manta does the same with a scheme-less MANTA_URL.
        format!("https://{url}")
    }
}
