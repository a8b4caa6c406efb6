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

/// `copy` into a replicated store of two Manta stores whose first replica holds a blob past the
/// in-memory spool (17 MiB) cut short and whose second lacks it: the blob is copied, both replicas
/// then hold it whole, and a second run skips it. (The put streamed the blob straight to its path
/// on each replica, create-only, which the first replica's object refused, so the put missed its
/// quorum on every run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_a_replicated_target_replaces_a_copy_cut_short_beside_a_replica_lacking_it() {
    use conformance::Fixture as _;
    use tarvault::backend::compose::{Replicated, ReplicatedOptions};
    let (Some(source), Some(first), Some(second)) = (make().await, make().await, make().await)
    else {
        return;
    };
    let data = common::noise(17 * 1024 * 1024 + 5, 171);
    let from = tarvault::Store::new(source.backend.clone());
    for store in [&from, &tarvault::Store::new(first.backend.clone())] {
        store
            .put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .expect("put");
    }
    let key = common::key_of(&data);
    first.plant(&key, data[..4096].to_vec().into()).await;
    let replicas = vec![first.backend(), second.backend()];
    let to = Replicated::new(replicas, ReplicatedOptions::default()).expect("replicated");
    let to = tarvault::Store::new(to);
    common::copy_runs(&from, &to, &[(1, 1, 0), (1, 0, 1)]).await;
    for m in [&first, &second] {
        let head = m.backend.head(&key).await.expect("head");
        assert_eq!(head.map(|st| st.size), Some(data.len() as u64));
    }
}
