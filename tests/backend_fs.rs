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
}

fn make_with(fsync: bool) -> Fs {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = FsBackend::open(dir.path().join("store"), FsOptions { fsync }).expect("open");
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
