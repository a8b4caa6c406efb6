//! The conformance suite on the Manta backend, against the Manta protocol test server
//! (`backends/manta`). Each test gets its own store directory on the shared server.

mod common;
mod conformance;
mod manta_common;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use tarvault::backend::manta::protocol::RequestBody;
use tarvault::backend::manta::MantaBackend;
use tarvault::backend::{Backend, BlobKey};

struct Manta {
    backend: MantaBackend,
    config: tarvault::backend::manta::MantaConfig,
    _target: manta_common::Target,
}

#[async_trait]
impl conformance::Fixture for Manta {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.backend.clone())
    }

    /// Another instance on the same store directory, with caches of its own (a second process).
    fn second(&self) -> Option<Arc<dyn Backend>> {
        Some(Arc::new(
            MantaBackend::new(self.config.clone()).expect("second instance"),
        ))
    }

    /// Overwrites the object with raw bytes through the Manta API, keeping its metadata: what a
    /// storage node that rots or a server that lies would serve.
    async fn plant(&self, key: &BlobKey, bytes: Bytes) {
        let client = self.backend.client();
        let path = self.backend.blob_path(key);
        let old = client
            .head(&path)
            .await
            .expect("head")
            .expect("blob exists");
        let mut headers = HeaderMap::new();
        for (name, value) in &old {
            if name.as_str().starts_with("m-") {
                headers.insert(name.clone(), value.clone());
            }
        }
        client
            .put_object(&path, headers, RequestBody::Bytes(bytes))
            .await
            .expect("plant");
    }
}

async fn make() -> Option<Manta> {
    let target = manta_common::Target::get("backend_manta")?;
    let config = target.config("conformance");
    Some(Manta {
        backend: MantaBackend::new(config.clone()).expect("backend"),
        config,
        _target: target,
    })
}

conformance::suite!(make);
