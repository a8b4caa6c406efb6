//! npm publish ingest reads a document a client sends, with the tarball inside as base64: it must
//! never panic, whatever the bytes and however they are chunked, and the chunking must not change
//! the outcome. A refused document stores nothing; an accepted one stores exactly the tarball it
//! reports, readable (and so verified) by its integrity, and keeps `_attachments` out of the
//! document it hands back.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use futures::TryStreamExt;
use libfuzzer_sys::fuzz_target;
use tarvault::backend::memory::MemoryBackend;
use tarvault::publish::{ingest, PublishOptions, Published};
use tarvault::{Integrity, Store};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// Ingests `body` in pieces of `chunk` bytes into a fresh store; returns the outcome (an error as
/// its kind) and what the store holds afterwards.
async fn run(body: &[u8], chunk: usize) -> (Result<Published, String>, Vec<Bytes>) {
    let store = Store::new(MemoryBackend::new());
    let pieces: Vec<std::io::Result<Bytes>> = body
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let options = PublishOptions {
        max_document: 64 << 10,
        ..PublishOptions::default()
    };
    let outcome = ingest(&store, futures::stream::iter(pieces), &options)
        .await
        .map_err(|e| format!("{:?}", e.kind()));
    let keys: Vec<_> = store
        .list()
        .try_collect::<Vec<_>>()
        .await
        .expect("list the store");
    let mut held = Vec::new();
    for k in keys {
        let bytes = store
            .get(&Integrity::from(k.hash()))
            .await
            .expect("get a listed blob")
            .bytes()
            .await
            .expect("a stored blob reads back verified");
        held.push(bytes);
    }
    (outcome, held)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk size, so odd boundaries get explored too.
    let (chunk, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c) + 1, rest),
        None => (1, data),
    };
    runtime().block_on(async {
        let (whole, held) = run(body, usize::MAX).await;
        let (chunked, held_chunked) = run(body, chunk).await;
        match (&whole, &chunked) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.name, b.name, "chunking changed the name");
                assert_eq!(a.document, b.document, "chunking changed the document");
                let digests = |p: &Published| p.tarball.as_ref().map(|t| t.digests);
                assert_eq!(digests(a), digests(b), "chunking changed the tarball");
                assert!(!a.document.contains_key("_attachments"));
                match &a.tarball {
                    Some(t) => {
                        assert_eq!(held.len(), 1, "an accepted publish stores one blob");
                        assert_eq!(held[0].len() as u64, t.digests.size);
                        assert!(t.stored, "a fresh store had not held the tarball");
                    }
                    None => assert!(held.is_empty(), "no tarball reported, yet one stored"),
                }
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "chunking changed the error");
                assert!(held.is_empty(), "a refused publish stored a blob");
            }
            _ => panic!("chunking changed the verdict: {whole:?} / {chunked:?}"),
        }
        assert_eq!(held, held_chunked);
    });
});
