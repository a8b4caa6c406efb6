//! The conformance suite on the in-memory backend.

mod common;
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tarvault::backend::memory::MemoryBackend;
use tarvault::backend::{Backend, BlobKey};

struct Memory(MemoryBackend);

#[async_trait]
impl conformance::Fixture for Memory {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.0.clone())
    }
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        assert!(self.0.corrupt_for_test(key, bytes), "nothing to corrupt");
    }
}

async fn make() -> Memory {
    Memory(MemoryBackend::new())
}

conformance::suite!(make);
