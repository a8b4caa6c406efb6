//! Tarball inspection during `put`, on a thread of its own.
//!
//! Decompression is the slowest thing a put that inspects does (about 4× slower than sha512 here),
//! so the inspector runs on its own thread, fed the same chunks as the hashers: hashing and writing
//! then hide behind decompression instead of adding to it. If the inspector rejects the tarball it
//! stops at once, and the put stops reading and aborts: a decompression bomb costs a few KB of input.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::tarball::{Inspector, Policy, Report, TarballError};
use crate::{Error, Result};

/// Chunks the inspector may lag behind.
const DEPTH: usize = 4;

pub(super) struct InspectLane {
    tx: Option<mpsc::Sender<Bytes>>,
    done: oneshot::Receiver<std::result::Result<Report, TarballError>>,
}

impl InspectLane {
    pub(super) fn spawn(policy: Policy) -> Result<InspectLane> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("tarvault-inspect".into())
            .spawn(move || {
                let mut inspector = Inspector::new(policy);
                while let Some(chunk) = rx.blocking_recv() {
                    if let Err(e) = inspector.update(&chunk) {
                        // Dropping `rx` tells the feeder to stop.
                        let _ = done_tx.send(Err(e));
                        return;
                    }
                }
                let _ = done_tx.send(inspector.finish());
            })
            .map_err(|e| Error::InvalidInput(format!("cannot start inspector thread: {e}")))?;
        Ok(InspectLane { tx: Some(tx), done })
    }

    /// Feeds a chunk. Returns `false` once the inspector has stopped (it rejected the tarball).
    pub(super) async fn feed(&mut self, chunk: Bytes) -> bool {
        match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        }
    }

    /// The verdict, once the input has ended (or the inspector stopped).
    pub(super) async fn finish(mut self, what: &str) -> Result<Report> {
        self.tx = None;
        match self.done.await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(source)) => Err(Error::Tarball {
                what: what.to_string(),
                source,
            }),
            Err(_) => Err(Error::InvalidInput("inspector thread died".into())),
        }
    }
}
