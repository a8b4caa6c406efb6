//! The store against a model (`tests/conformance/model.rs`) under proptest: on the memory and fs
//! backends, and through a cache tier and three replicas, reopened as a second process would
//! open them.

mod common;
#[allow(unused)] // the backend suite's macro and cases; only the model is used here
mod conformance;

use std::sync::Arc;

use proptest::prelude::*;
use tarvault::backend::compose::{Cached, CachedOptions, Replicated, ReplicatedOptions};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::memory::MemoryBackend;
use tarvault::backend::Backend;
use tarvault::Store;

use conformance::model::{check, op, Op};

/// Where the store under test lives.
enum Under {
    Memory,
    Fs(tempfile::TempDir),
    /// A [`Cached`] tier on the filesystem (smaller than the pool: it evicts) over a memory remote.
    Cached(tempfile::TempDir, Arc<dyn Backend>),
    /// Three memory replicas, majority writes (reopening keeps the one instance).
    Replicated(Vec<Arc<dyn Backend>>),
}

fn fs_backend(dir: &tempfile::TempDir) -> FsBackend {
    let options = FsOptions {
        fsync: false,
        ..Default::default()
    };
    FsBackend::open(dir.path(), options).expect("open the fs store")
}

impl Under {
    fn cached() -> Under {
        Under::Cached(
            tempfile::tempdir().expect("tempdir"),
            Arc::new(MemoryBackend::new()),
        )
    }

    fn replicated() -> Under {
        Under::Replicated(
            (0..3)
                .map(|_| Arc::new(MemoryBackend::new()) as Arc<dyn Backend>)
                .collect(),
        )
    }

    /// The store, opened again over the same storage (as another process would) if `current` is
    /// given and the storage outlives it.
    async fn open(&self, current: Option<Store>) -> Store {
        // The old instance is dropped only after the new one is open: two at once, as two
        // processes would have.
        match (self, current) {
            (Under::Memory, current) => current.unwrap_or_else(Store::memory),
            (Under::Fs(dir), _) => Store::new(fs_backend(dir)),
            (Under::Cached(dir, remote), _) => {
                let options = CachedOptions { capacity: 400_000 };
                let local: Arc<dyn Backend> = Arc::new(fs_backend(dir));
                let cached = Cached::new(local, remote.clone(), options);
                Store::new(cached.await.expect("cached"))
            }
            // One instance throughout: it keeps its late commits off the blobs that *it* deletes
            // (`fence.rs`), not off those another instance deletes meanwhile.
            (Under::Replicated(_), Some(current)) => current,
            (Under::Replicated(members), None) => {
                let options = ReplicatedOptions::default();
                Store::new(Replicated::new(members.clone(), options).expect("replicated"))
            }
        }
    }
}

fn run(under: impl Fn() -> Under, ops: Vec<Op>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let under = under();
            check(Box::new(|current| Box::pin(under.open(current))), ops).await
        });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(|| Under::Memory, ops);
    }

    #[test]
    fn fs_store_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(|| Under::Fs(tempfile::tempdir().expect("tempdir")), ops);
    }

    #[test]
    fn cached_store_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Under::cached, ops);
    }

    #[test]
    fn replicated_store_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Under::replicated, ops);
    }
}
