//! Large puts on a server with SnapLinks: the bytes stream to a staging object while they are
//! hashed, and a SnapLink names the final path once they verified.
//!
//! A blob's path is its sha512, known only after the last byte, and a spooled put (see `writer`)
//! sends nothing until then: it costs the time to hash *and then* the time to upload. Manta v1
//! can name an object server-side without moving its bytes (PutSnapLink), so there the upload
//! overlaps the hashing instead:
//!
//! 1. once a put outgrows the in-memory spool, one PUT to `<root>/staging/<unix ms>-<random>`
//!    starts, its body streamed (`Transfer-Encoding: chunked`) as the store hands the bytes over;
//! 2. at commit, after the store verified every byte, the body ends. Only then: a put that fails
//!    verification, is aborted or dropped breaks the body off, and Manta keeps nothing of an
//!    upload whose body did not end (`UploadAbandoned`), so even a staging path only ever holds
//!    verified bytes. Manta's `Computed-MD5` must match the MD5 of what was hashed here;
//! 3. the staging object's metadata is set to the blob's digests (a link shares its source's
//!    metadata), while a `HEAD` of the final path looks for a dedupe hit and the alias markers go
//!    up;
//! 4. unless the blob is there already, a SnapLink names the final path. A link cannot be
//!    create-only (Manta evaluates its conditional headers against the *source*), so two puts of
//!    the same new blob may both link; both link verified bytes of the same digest;
//! 5. the staging object is deleted (the link keeps the bytes).
//!
//! Manta v2 refuses every SnapLink (403 `SnaplinksDisabledError`). Whether the server links is
//! asked once per backend, before the first staged upload, with a link to an object that does
//! not exist: v1 answers 404 `SourceObjectNotFound`, v2 403 ([`LinkSupport`]). Where links are
//! refused, or `?staging=false`, large puts spool as before. Should a server that linked refuse
//! later, the staged bytes are read back into a spool and published by one PUT.
//!
//! A streamed body cannot be sent again, so a staged upload that fails (a dropped connection, a
//! 503) fails its put, where a spooled one is retried from its spool: the caller puts again.
//! Such a put deletes its staging object all the same, as after step 5: one whose body ended
//! may have been stored though its answer was lost. A process killed between steps 2 and 5
//! leaves a staging object behind, as does an upload stored only after that delete (its answer
//! given up on, the server still storing it); [`sweep`] (run by `fsck`) deletes those older
//! than [`STAGING_MAX_AGE`].

use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt;
use reqwest::header::{HeaderMap, HeaderValue};

use super::client::RequestBody;
use super::resume;
use super::streamed::{stored_md5, Streamed};
use super::{api_error, digest_metadata, MantaBackend};
use crate::backend::{Backend as _, BlobKey, Committed};
use crate::integrity::Digests;
use crate::{Error, Result};

/// Staging objects older than this are leftovers of a dead process; younger ones may belong to a
/// put being committed right now.
pub(crate) const STAGING_MAX_AGE: Duration = Duration::from_secs(3600);

/// What is known of the server's SnapLinks: untried, working, or refused. Shared by every put of
/// one backend.
#[derive(Debug, Default)]
pub(crate) struct LinkSupport(AtomicU8);

// 0 (the default): untried.
const WORKS: u8 = 1;
const REFUSED: u8 = 2;

impl LinkSupport {
    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn known(&self) -> Option<bool> {
        match self.get() {
            WORKS => Some(true),
            REFUSED => Some(false),
            _ => None,
        }
    }

    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Whether a large put should stage: staging is on and the server links (asked once).
pub(crate) async fn usable(backend: &MantaBackend) -> Result<bool> {
    if !backend.client.config().staging {
        return Ok(false);
    }
    match backend.links.get() {
        WORKS => return Ok(true),
        REFUSED => return Ok(false),
        _ => {}
    }
    let dir = backend.layout.staging_dir();
    backend.dirs.ensure(&dir).await?;
    let probe = format!("{dir}/.link-probe-{:016x}", rand::random::<u64>());
    let absent = format!("{dir}/.no-such-object-{:016x}", rand::random::<u64>());
    let links = match backend
        .client
        .put_object(&probe, link_to(&absent)?, RequestBody::Empty)
        .await
    {
        // Nothing to link: the server got as far as looking the source up.
        Err(e) if api_error(&e).is_some_and(|a| a.code == "SourceObjectNotFound") => true,
        Err(e) if api_error(&e).is_some_and(|a| a.code == "SnaplinksDisabledError") => false,
        Err(e) if api_error(&e).is_some_and(|a| a.status < 500) => {
            // Not an answer about links (an expired request, a refused key): this put spools,
            // and a later one asks again.
            tracing::warn!(backend = %backend.describe(), error = %e.report(),
                "SnapLink probe answered unexpectedly: this put spools");
            return Ok(false);
        }
        Err(e) => return Err(e),
        Ok(_) => {
            // A link to nothing was made: not a server to trust with links.
            let _ = backend.client.delete(&probe).await;
            false
        }
    };
    tracing::debug!(links, "Manta SnapLink support");
    backend.links.set(if links { WORKS } else { REFUSED });
    Ok(links)
}

/// A streamed PUT to a staging path, in progress.
pub(crate) struct Staged(Streamed);

impl Staged {
    /// Starts the PUT to a fresh staging path (whose directory [`usable`] made). A streamed
    /// upload is capped at 5 GB unless it names its size (`size`, when the put knows it).
    pub(crate) async fn start(backend: &MantaBackend, size: Option<u64>) -> Result<Staged> {
        // No request while the directory is known; made again once a put found it missing.
        backend.dirs.ensure(&backend.layout.staging_dir()).await?;
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let path = format!(
            "{}/{millis:013}-{:016x}",
            backend.layout.staging_dir(),
            rand::random::<u64>()
        );
        let headers = Streamed::headers(backend, size, &[])?;
        Ok(Staged(Streamed::start(backend, path, headers)))
    }

    /// Hands a piece of the body over.
    pub(crate) async fn send(&mut self, chunk: Bytes) -> Result<()> {
        self.0.send(chunk).await
    }

    /// Ends the body and publishes the verified bytes under their key (module docs, steps 2–5).
    pub(crate) async fn publish(
        self,
        backend: &MantaBackend,
        digests: &Digests,
        md5: [u8; 16],
    ) -> Result<Committed> {
        let path = self.0.path().to_string();
        // An upload whose answer was lost (or that failed once its body had ended) may have been
        // stored all the same: it goes too, rather than wait an hour for fsck's sweep.
        let named = match self.0.finish().await {
            Ok(reply) => name(backend, &path, &reply, digests, md5).await,
            Err(e) => Err(e),
        };
        // The staging object goes whatever happened; if deleting fails, fsck's sweep removes it.
        if let Err(e) = backend.client.delete(&path).await {
            tracing::warn!(staging = %path, error = %e.report(),
                "could not delete a staging object; fsck's sweep will");
        }
        named
    }
}

/// Names the final path of staged bytes: a dedupe hit or a SnapLink (else a copy by one PUT).
async fn name(
    backend: &MantaBackend,
    staging: &str,
    reply: &HeaderMap,
    d: &Digests,
    md5: [u8; 16],
) -> Result<Committed> {
    let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5);
    let stored = stored_md5(backend, staging, reply).await?;
    if stored.as_deref() != Some(md5_b64.as_str()) {
        // Not the bytes hashed here, or no way to tell: the staging object is not linked.
        return Err(backend.describe_err(format!(
            "{staging}: server reports MD5 {stored:?}, sent {md5_b64}; not published"
        )));
    }
    let key = BlobKey::new(d.sha512);
    let path = backend.layout.blob_path(&key);
    let metadata = digest_metadata(d)?;
    let (tagged, there, aliases) = futures::join!(
        backend.client.put_metadata(staging, metadata),
        backend.client.head(&path),
        backend.aliases.record_alongside(d)
    );
    // Digests in metadata spare a later `head` (and fsck) a read of the bytes; not worth failing
    // the put over (a staging object that is gone fails the link below).
    if let Err(e) = tagged {
        tracing::warn!(staging, error = %e.report(), "linking a blob without its digests in metadata");
    }
    let aliases = aliases?;
    if let Some(h) = there? {
        if backend.stat_from_headers(&key, &h)?.size == d.size {
            backend.aliases.settle(d, aliases).await?;
            return Ok(Committed::AlreadyPresent);
        }
        tracing::warn!(path, "replacing a wrong-sized object with verified bytes");
    }
    match backend
        .dirs
        .put_with_parents(&path, link_to(staging)?, RequestBody::Empty)
        .await
    {
        Ok(_) => {}
        Err(e) if api_error(&e).is_some_and(|a| a.code == "SnaplinksDisabledError") => {
            tracing::warn!(error = %e.report(),
                "the server stopped linking: publishing by one PUT, and spooling later large puts");
            backend.links.set(REFUSED);
            // Its own publish writes the markers again and reports a dedupe hit as such.
            return copy_through_client(backend, staging, d, md5).await;
        }
        Err(e) => return Err(e),
    }
    backend.aliases.settle(d, aliases).await?;
    Ok(Committed::Stored)
}

/// The headers of a PutSnapLink to `source`.
fn link_to(source: &str) -> Result<HeaderMap> {
    let mut link = HeaderMap::new();
    link.insert(
        "content-type",
        HeaderValue::from_static("application/json; type=link"),
    );
    link.insert(
        "location",
        HeaderValue::from_str(source).map_err(|e| Error::InvalidInput(e.to_string()))?,
    );
    Ok(link)
}

/// Reads the staging object back into a local spool and publishes it by one verified PUT (a
/// server that refused the link). The read is a blob's read ([`resume::stream_of`]): each piece
/// waits at most the response timeout, and a read cut off or stalled goes on from where it
/// stopped, so a server that hangs mid-body fails the put in bounded time instead of holding it.
async fn copy_through_client(
    backend: &MantaBackend,
    staging: &str,
    d: &Digests,
    md5: [u8; 16],
) -> Result<Committed> {
    let resp = backend.client.get(staging, HeaderMap::new()).await?;
    if !resp.status().is_success() {
        return Err(backend
            .client
            .api_error(&reqwest::Method::GET, staging, resp)
            .await);
    }
    let mut spool =
        tempfile::NamedTempFile::new().map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
    let mut body = resume::stream_of(
        &backend.client,
        backend.describe(),
        resp,
        staging.to_string(),
        0,
    );
    let mut got = 0u64;
    while let Some(chunk) = body.try_next().await? {
        got += chunk.len() as u64;
        spool
            .write_all(&chunk)
            .map_err(|e| Error::io("write", spool.path().to_path_buf(), e))?;
    }
    if got != d.size {
        return Err(
            backend.describe_err(format!("{staging} holds {got} bytes, expected {}", d.size))
        );
    }
    spool
        .flush()
        .map_err(|e| Error::io("flush", spool.path().to_path_buf(), e))?;
    let body = RequestBody::File(Arc::new(spool.path().to_path_buf()), got);
    // Content-MD5 makes Manta refuse bytes other than the ones verified.
    backend.publish(d, md5, body).await
}

/// Deletes staging objects older than `max_age` (leftovers of processes that died between
/// ending a staged upload and deleting it). An object's age is taken from the later of the time
/// in its name (its upload's start, on the putting host's clock) and its listing's `mtime` (its
/// body's end, on the server's), so that a slow upload being linked right now is not taken for a
/// leftover. One that cannot be deleted is reported and the sweep goes on. Returns how many went.
pub(crate) async fn sweep(backend: &MantaBackend, max_age: Duration) -> Result<u64> {
    let Some(cutoff) = SystemTime::now().checked_sub(max_age) else {
        return Ok(0);
    };
    let dir = backend.layout.staging_dir();
    // Deleted as the listing comes: a page's marker is a name, so deleting entries already
    // listed does not disturb the pages after it.
    let mut entries = backend.client.list_dir_entries(&dir);
    let mut removed = 0;
    while let Some(e) = entries.try_next().await? {
        let named = e
            .name
            .split('-')
            .next()
            .and_then(|ms| ms.parse::<u64>().ok())
            .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)));
        let modified = e.mtime.as_deref().and_then(super::aliases::parse_mtime);
        let old = e.kind == "object"
            && named.is_some_and(|t| t < cutoff)
            && modified.is_none_or(|t| t < cutoff);
        if !old {
            continue;
        }
        let path = format!("{dir}/{}", e.name);
        match backend.client.delete(&path).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%path, error = %e.report(), "could not delete a staging leftover")
            }
        }
    }
    Ok(removed)
}
