//! Large puts whose sha512 the caller gave (a registry publish, a migration): the bytes stream
//! straight to the blob's own path while they are hashed (`streamed`), on Manta v1 and v2 alike.
//!
//! The PUT is create-only (`If-Unmodified-Since` the epoch; Manta refuses it with 412 before
//! taking the body when the blob exists), carries the sha512 as metadata, and its body is ended
//! only once the store verified every byte against that sha512, so nothing else can appear
//! under the path. Manta's `Computed-MD5` must then match the MD5 of what was hashed (a server
//! that stored other bytes has them deleted again), and the sha1 and blake3, known only now, are
//! added to the object's metadata while the alias markers go up. Until then a `head` of the blob
//! reports no digests, as for a blob of an earlier version.
//!
//! A 412 (the blob appeared since the store looked) turns the rest of the put into hashing only:
//! the blob is there, and at commit a `HEAD` confirms its size.

use base64::Engine as _;
use bytes::Bytes;

use super::streamed::{stored_md5, Streamed};
use super::{create_only, digest_metadata, exists_already, layout, MantaBackend, META_SHA512};
use crate::backend::{BlobKey, Committed};
use crate::integrity::Digests;
use crate::Result;

/// A streamed PUT to a blob's own path, in progress.
pub(crate) struct Direct {
    key: BlobKey,
    /// `None` once Manta said the blob is there already.
    up: Option<Streamed>,
}

impl Direct {
    /// Starts the create-only PUT to `key`'s path (making its directory first).
    pub(crate) async fn start(
        backend: &MantaBackend,
        key: BlobKey,
        size: Option<u64>,
    ) -> Result<Direct> {
        let path = backend.layout.blob_path(&key);
        backend.dirs.ensure(layout::parent(&path)).await?;
        let mut headers = Streamed::headers(backend, size, &[(META_SHA512, key.to_hex())])?;
        create_only(&mut headers);
        Ok(Direct {
            key,
            up: Some(Streamed::start(backend, path, headers)),
        })
    }

    /// Hands a piece of the body over (nothing, once the blob turned out to be there).
    pub(crate) async fn send(&mut self, chunk: Bytes) -> Result<()> {
        let Some(up) = &mut self.up else {
            return Ok(());
        };
        match up.send(chunk).await {
            Err(e) if exists_already(&e) => {
                self.up = None;
                Ok(())
            }
            other => other,
        }
    }

    /// Ends the body of verified bytes and completes the blob's record.
    pub(crate) async fn publish(
        self,
        backend: &MantaBackend,
        d: &Digests,
        md5: [u8; 16],
    ) -> Result<Committed> {
        // Ending the body publishes under the key the upload was started for: only bytes of that
        // sha512 may go there. Dropping `self.up` breaks the body off, so nothing is published.
        if d.sha512 != *self.key.as_bytes() {
            return Err(crate::Error::InvalidInput(format!(
                "commit of sha512 {} under another key than the upload was started for ({})",
                hex::encode(d.sha512),
                self.key.to_hex()
            )));
        }
        let path = backend.layout.blob_path(&self.key);
        let (answer, aliases) = match self.up {
            Some(up) => {
                let (answer, aliases) =
                    futures::join!(up.finish(), backend.aliases.record_alongside(d));
                (Some(answer), aliases)
            }
            None => (None, backend.aliases.record_alongside(d).await),
        };
        let reply = match answer {
            Some(Ok(reply)) => reply,
            Some(Err(e)) if !exists_already(&e) => return Err(e),
            _ => {
                // There already: this put's bytes went nowhere, and its verified digest is the
                // blob's name, so a blob of the right size is the same blob.
                let aliases = aliases?;
                let there = backend.client.head(&path).await?;
                return match there {
                    Some(h) if backend.stat_from_headers(&self.key, &h)?.size == d.size => {
                        backend.aliases.settle(d, aliases).await?;
                        Ok(Committed::AlreadyPresent)
                    }
                    _ => Err(backend.describe_err(format!(
                        "{path}: another object of another size appeared during the put; put again"
                    ))),
                };
            }
        };
        let aliases = aliases?;
        let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5);
        match stored_md5(backend, &path, &reply).await? {
            Some(stored) if stored == md5_b64 => {}
            Some(stored) => {
                // The server kept other bytes than the verified ones: they must not stay there.
                if let Err(e) = backend.client.delete(&path).await {
                    tracing::warn!(%path, error = %e.report(), "cannot remove an upload with a wrong MD5");
                }
                return Err(backend.describe_err(format!(
                    "{path}: server reports MD5 {stored}, sent {md5_b64}; upload removed"
                )));
            }
            // A server that reports no MD5 at all: the bytes were verified on their way out, and
            // every read verifies them again.
            None => tracing::warn!(%path, "the server reports no MD5 for a streamed upload"),
        }
        let metadata = digest_metadata(d)?;
        // The blob is stored and verified; its digests in metadata spare a later `head` (and
        // fsck) a read of the bytes, and are not worth failing the put over.
        if let Err(e) = backend.client.put_metadata(&path, metadata).await {
            tracing::warn!(%path, error = %e.report(), "stored a blob without its digests in metadata");
        }
        backend.aliases.settle(d, aliases).await?;
        Ok(Committed::Stored)
    }
}
