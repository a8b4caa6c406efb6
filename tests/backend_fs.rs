//! The conformance suite on the filesystem backend, with fsync on and off.

mod common;
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::{Backend, BlobKey};

struct Fs {
    backend: FsBackend,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl conformance::Fixture for Fs {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.backend.clone())
    }
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        let path = self.backend.blob_path(key);
        let mut perms = std::fs::metadata(&path).expect("blob exists").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).expect("chmod");
        std::fs::write(&path, &bytes).expect("plant");
    }
    fn second(&self) -> Option<Arc<dyn Backend>> {
        let opts = FsOptions {
            fsync: false,
            ..Default::default()
        };
        Some(Arc::new(
            FsBackend::open(self.backend.root(), opts).expect("second instance"),
        ))
    }
}

fn make_with(fsync: bool) -> Fs {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = FsBackend::open(
        dir.path().join("store"),
        FsOptions {
            fsync,
            ..Default::default()
        },
    )
    .expect("open");
    Fs { backend, _dir: dir }
}

mod fsync_on {
    use super::*;
    async fn make() -> Fs {
        make_with(true)
    }
    conformance::suite!(make);
}

mod fsync_off {
    use super::*;
    async fn make() -> Fs {
        make_with(false)
    }
    conformance::suite!(make);
}

/// A long-running reader (say `tarvault serve`) sees the records of blobs another instance commits
/// as soon as each put returns (so their reads verify with the recorded blake3 instead of
/// re-hashing sha512), with no delay and nothing reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_committed_by_another_process_are_found() {
    use tarvault::{PutOptions, Store};
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let opts = || FsOptions {
        fsync: false,
        ..Default::default()
    };
    let reader = FsBackend::open(root.clone(), opts()).expect("open");
    let writer = Store::new(FsBackend::open(root, opts()).expect("open"));

    let first = writer
        .put_bytes(Bytes::from_static(b"first blob"), &PutOptions::default())
        .await
        .expect("put");
    let got = reader
        .get(&BlobKey::new(first.digests.sha512), None)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.digests, Some(first.digests), "seen at once");

    let second = writer
        .put_bytes(Bytes::from_static(b"second blob"), &PutOptions::default())
        .await
        .expect("put");
    let got = reader
        .get(&BlobKey::new(second.digests.sha512), None)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        got.digests,
        Some(second.digests),
        "a later record is seen at once too"
    );
}
