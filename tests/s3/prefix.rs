//! The store prefix starts every key exactly as given (`<prefix>/blobs/…`), whatever characters it
//! has, and an `s3://` URL's path is percent-decoded into it.
#![allow(dead_code)]

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStore;
use tarvault::backend::s3::{S3Backend, S3Config};
use tarvault::backend::Backend;
use tarvault::{Algorithm, PutOptions, Store};

use super::Server;
use crate::common::noise;

/// Puts one blob under `prefix`, then lists the bucket raw: every key the store wrote starts
/// with `prefix/` verbatim, and the blob, its markers and lookups work.
async fn stored_verbatim(s: &Server, prefix: &str) {
    let c = s.config(prefix);
    let backend = S3Backend::connect(&c).await.expect("connect");
    let store = Store::new(backend.clone());
    let put = store
        .put_bytes(noise(3000, 31), &PutOptions::default())
        .await
        .expect("put");
    let raw = s.raw();
    let listed: Vec<String> = raw
        .list(Some(&Path::parse(prefix).expect("a valid prefix")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("raw list");
    let want = format!("{prefix}/blobs/");
    assert!(
        listed.iter().any(|k| k.starts_with(&want)),
        "no key starts with {want:?}: {listed:?}"
    );
    assert!(
        listed.iter().all(|k| k.starts_with(&format!("{prefix}/"))),
        "{listed:?}"
    );
    let sha1 = put.digests.hash(Algorithm::Sha1);
    assert!(backend.resolve_alias(&sha1).await.expect("alias").is_some());
    let keys: Vec<_> = backend.list().try_collect().await.expect("list");
    assert_eq!(keys.len(), 1, "{keys:?}");
    crate::common::read_verified(&store, &put.digests.integrity()).await;
}

/// Characters object_store would percent-encode into a key (`~ % [ ] { } ^ | < > # " *`, and
/// non-ASCII) stay as they are.
pub async fn odd_prefix_is_used_verbatim(s: &Server) {
    let prefix = format!(
        "{}/~team/50% [a]{{b}}^|<>#\"*é",
        Server::fresh_prefix("odd")
    );
    stored_verbatim(s, &prefix).await;
}

/// `s3://bucket/my%20dir` is the prefix `my dir`.
pub async fn url_prefix_is_percent_decoded(s: &Server) {
    let fresh = Server::fresh_prefix("dec");
    let parsed =
        S3Config::parse(&format!("s3://{}/{fresh}/my%20dir%7E/", s.bucket())).expect("parse");
    assert_eq!(parsed.prefix, format!("{fresh}/my dir~"));
    stored_verbatim(s, &parsed.prefix).await;
}
