//! A backend written outside the crate cannot vouch for the digests it records
//! ([`Backend::recorded_digests_trusted`] answers with a token only the crate makes), so a record
//! damaged or forged together with the bytes it describes does not let those bytes through a
//! store's fast verification: they are checked against their sha512.

mod common;

use std::ops::Range;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tarvault::backend::memory::MemoryBackend;
use tarvault::backend::{
    AliasRebuild, Backend, BlobKey, BlobStat, BlobWriter, GetResult, PutHint, RebuildOptions,
};
use tarvault::{Digests, ErrorKind, Hash, Integrity, PutOptions, Result, Store, Verification};

use common::{addr, digests_of, noise, sha1_hex, sha512_sri};

/// Keeps its blobs in a memory store and hands out a copy with its first byte flipped, along
/// with a record made to match that copy (its sha1, blake3 and size) under the blob's own sha512:
/// the damage a backend keeping its records next to its bytes, in one place, could do to both.
#[derive(Debug, Clone)]
struct Forging(MemoryBackend);

fn damaged(data: &[u8]) -> Vec<u8> {
    let mut bad = data.to_vec();
    bad[0] ^= 0x5a;
    bad
}

/// A record of `bad` that names `key` as its sha512.
fn forged(key: &BlobKey, bad: &[u8]) -> Digests {
    let of_bad = digests_of(bad);
    Digests {
        sha512: *key.as_bytes(),
        ..of_bad
    }
}

#[async_trait::async_trait]
impl Backend for Forging {
    fn describe(&self) -> String {
        format!("forging {}", self.0.describe())
    }
    async fn begin_put(&self, hint: &PutHint) -> Result<Box<dyn BlobWriter>> {
        self.0.begin_put(hint).await
    }
    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Option<GetResult>> {
        let Some(got) = self.0.get(key, None).await? else {
            return Ok(None);
        };
        let whole: Vec<Bytes> = got.stream.try_collect().await?;
        let bad = damaged(&whole.concat());
        let size = bad.len() as u64;
        let range = range.unwrap_or(0..size);
        let part = Bytes::copy_from_slice(&bad[range.start as usize..range.end as usize]);
        Ok(Some(GetResult {
            size,
            stream: futures::stream::iter([Ok(part)]).boxed(),
            digests: Some(forged(key, &bad)),
            verified_whole: None,
        }))
    }
    async fn head(&self, key: &BlobKey) -> Result<Option<BlobStat>> {
        let Some(mut st) = self.0.head(key).await? else {
            return Ok(None);
        };
        if let Some(d) = st.digests.as_mut() {
            let Some(got) = self.0.get(key, None).await? else {
                return Ok(None);
            };
            let whole: Vec<Bytes> = got.stream.try_collect().await?;
            *d = forged(key, &damaged(&whole.concat()));
        }
        Ok(Some(st))
    }
    async fn delete(&self, key: &BlobKey) -> Result<bool> {
        self.0.delete(key).await
    }
    fn list(&self) -> BoxStream<'static, Result<BlobKey>> {
        self.0.list()
    }
    async fn resolve_alias(&self, hash: &Hash) -> Result<Option<BlobKey>> {
        self.0.resolve_alias(hash).await
    }
    async fn rebuild_aliases(
        &self,
        found: BoxStream<'_, Digests>,
        options: &RebuildOptions,
    ) -> Result<AliasRebuild> {
        self.0.rebuild_aliases(found, options).await
    }
}

async fn read(store: &Store, address: &Integrity, range: Option<Range<u64>>) -> Result<Vec<u8>> {
    let stream = match range {
        Some(r) => store.get_range(address, r).await?,
        None => store.get(address).await?,
    };
    let chunks: Vec<Bytes> = stream.try_collect().await?;
    Ok(chunks.concat())
}

#[tokio::test]
async fn a_forged_record_does_not_pass_damaged_bytes() {
    let memory = MemoryBackend::new();
    let data = noise(100_000, 41);
    let by_sha512 = addr(&sha512_sri(&data));
    let by_sha1 = addr(&sha1_hex(&data));
    Store::new(memory.clone())
        .put_bytes(data.clone(), &PutOptions::default())
        .await
        .expect("put");
    // The memory store vouches for its records; the same bytes read through it are good.
    assert!(memory.recorded_digests_trusted().is_some());
    assert_eq!(
        read(&Store::new(memory.clone()), &by_sha512, None)
            .await
            .expect("read"),
        data
    );

    let forging = Forging(memory);
    assert!(forging.recorded_digests_trusted().is_none());
    for verification in [Verification::Fast, Verification::Full] {
        let store = Store::new(forging.clone()).with_verification(verification);
        for (address, range) in [
            (&by_sha512, None),
            (&by_sha512, Some(0..10)),
            (&by_sha1, None),
        ] {
            let err = read(&store, address, range.clone())
                .await
                .expect_err("damaged bytes under a forged record");
            assert_eq!(
                err.kind(),
                ErrorKind::Corrupt,
                "{verification:?} {address} {range:?}: {err}"
            );
        }
    }
}
