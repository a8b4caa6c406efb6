//! The conformance suite on the S3 backend, against two real servers: s3s-fs (SigV4 enforced)
//! and a single-node Ceph RADOS Gateway. See `tests/s3/mod.rs` for how the servers are found.

mod common;
mod conformance;
mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use tarvault::backend::s3::S3Backend;
use tarvault::backend::{Backend, BlobKey};

use crate::s3::Server;

/// A backend under a fresh prefix, or nothing when the server is not configured.
struct S3Fixture(Option<S3Backend>);

#[async_trait]
impl conformance::Fixture for S3Fixture {
    fn backend(&self) -> Arc<dyn Backend> {
        match &self.0 {
            Some(b) => Arc::new(b.clone()),
            None => Arc::new(tarvault::backend::memory::MemoryBackend::new()),
        }
    }
    /// Overwrites the object with raw bytes through object_store, bypassing the backend.
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        let Some(b) = &self.0 else { return };
        b.object_store()
            .put(&b.blob_path(key), PutPayload::from(bytes))
            .await
            .expect("plant");
    }
}

async fn fixture(var: &str, name: &'static str) -> S3Fixture {
    match Server::from_env(var, name) {
        Some(s) => {
            // 1 MiB: the suite's larger blobs then take the spool + multipart path too.
            let mut c = s.config(&Server::fresh_prefix("conf"));
            c.multipart_threshold = 1 << 20;
            S3Fixture(Some(S3Backend::connect(&c).await.expect("connect")))
        }
        // Skipped outside CI: the suite then runs on memory, which proves nothing about S3 but
        // keeps the cases compiling and quick.
        None => S3Fixture(None),
    }
}

/// One `#[tokio::test]` per fault case, against the server named by an env variable.
macro_rules! faults {
    ($var:literal, $name:literal; $($case:ident),* $(,)?) => {
        mod faults {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(s) = crate::s3::Server::from_env($var, $name) {
                        crate::s3::faults::$case(&s).await;
                    }
                }
            )*
        }
    };
}

macro_rules! server {
    ($module:ident, $var:literal, $name:literal) => {
        mod $module {
            use super::*;
            async fn make() -> S3Fixture {
                fixture($var, $name).await
            }
            conformance::suite!(make);
            faults!($var, $name; wrong_credentials, missing_bucket, unavailable_is_bounded,
                transient_errors_are_retried, reset_mid_upload, single_reset_is_retried,
                boto3_interop, cli_store_url, alias_log_is_shared_and_merged);
        }
    };
}

server!(s3s_fs, "TARVAULT_S3S_ENV", "s3s-fs");
server!(ceph, "TARVAULT_CEPH_ENV", "ceph");
