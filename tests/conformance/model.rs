//! The store against a model: a random sequence of puts (one at a time and in batches, with
//! right and wrong expected integrities), reads (whole and ranged, by each of the three
//! digests), stats, deletes, listings, fsck and reopenings. After every operation the store must
//! answer as a plain set of stored blobs says it should: the bytes, the error kind, whether a put
//! stored or found its blob. `tests/store_model.rs` runs it under proptest (shrinking what fails); every
//! backend's suite runs one seeded sequence of it ([`follows_a_model`]).

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::TryStreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tarvault::{Algorithm, ErrorKind, Integrity, PutOptions, Store};

use super::{store_of, Fixture};
use crate::common::{digests_of, noise};

/// Sizes of the blobs the operations draw from: empty, tiny, and around the read and chunk sizes.
const SIZES: [usize; 6] = [0, 1, 100, 4096, 70_000, 300_000];

fn pool() -> Vec<Bytes> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from(noise(n, 900 + i as u64)))
        .collect()
}

/// How an operation names a blob.
#[derive(Debug, Clone, Copy)]
pub enum Name {
    Sha512,
    Sha1,
    Blake3,
    /// All three digests in one integrity string.
    All,
}

fn address(bytes: &[u8], name: Name) -> Integrity {
    let d = digests_of(bytes);
    match name {
        Name::Sha512 => d.integrity(),
        Name::Sha1 => Integrity::from(d.hash(Algorithm::Sha1)),
        Name::Blake3 => Integrity::from(d.hash(Algorithm::Blake3)),
        Name::All => d.full_integrity(),
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Put blob `i`; with `Some(name)` expecting its own address by that name; `wrong` expects
    /// another blob's sha512 instead.
    Put {
        i: usize,
        expect: Option<Name>,
        wrong: bool,
    },
    /// One batch of puts, each maybe expecting a wrong integrity.
    Batch(Vec<(usize, bool)>),
    Get {
        i: usize,
        name: Name,
    },
    /// A range given as fractions of the blob's size (in 1/8ths; 9 is one byte past the end).
    Range {
        i: usize,
        name: Name,
        from: u64,
        to: u64,
    },
    Stat {
        i: usize,
        name: Name,
    },
    Delete {
        i: usize,
        name: Name,
    },
    List,
    /// `fsck`: clean, every stored blob checked, and the blobs unchanged.
    Fsck,
    /// Drop the store and open it again (the filesystem backend; a no-op in memory).
    Reopen,
}

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        Just(Name::Sha512),
        Just(Name::Sha1),
        Just(Name::Blake3),
        Just(Name::All)
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    let i = 0..SIZES.len();
    prop_oneof![
        4 => (i.clone(), proptest::option::of(name()), proptest::bool::weighted(0.2))
            .prop_map(|(i, expect, wrong)| Op::Put { i, expect, wrong }),
        2 => proptest::collection::vec((i.clone(), proptest::bool::weighted(0.15)), 1..6)
            .prop_map(Op::Batch),
        3 => (i.clone(), name()).prop_map(|(i, name)| Op::Get { i, name }),
        2 => (i.clone(), name(), 0..10u64, 0..10u64)
            .prop_map(|(i, name, from, to)| Op::Range { i, name, from, to }),
        2 => (i.clone(), name()).prop_map(|(i, name)| Op::Stat { i, name }),
        2 => (i.clone(), name()).prop_map(|(i, name)| Op::Delete { i, name }),
        1 => Just(Op::List),
        1 => Just(Op::Fsck),
        1 => Just(Op::Reopen),
    ]
}

/// Opens the store under test: `None` the first time, then the store to open again (as a second
/// process would; a backend without a second instance hands the same store back).
pub type Open<'a> = Box<dyn FnMut(Option<Store>) -> BoxFuture<'a, Store> + Send + 'a>;

/// The sha512 address of a blob other than `i`: a wrong expectation for blob `i`.
fn another_blob(pool: &[Bytes], i: usize) -> Integrity {
    address(&pool[(i + 1) % pool.len()], Name::Sha512)
}

/// Checks what a put of blob `i` (`wrong`: expecting another blob's address) answered, and
/// records a stored blob in the model.
fn put_outcome(
    r: tarvault::Result<tarvault::PutOutcome>,
    (i, wrong): (usize, bool),
    pool: &[Bytes],
    model: &mut BTreeSet<usize>,
    what: &str,
) {
    if wrong {
        assert_eq!(kind(r, what), ErrorKind::IntegrityMismatch);
    } else {
        let out = r.unwrap_or_else(|e| panic!("{what}: put of blob {i}: {e}"));
        assert_eq!(out.digests, digests_of(&pool[i]));
        assert_eq!(out.stored, model.insert(i), "{what}: stored, for blob {i}");
    }
}

fn kind<T>(r: tarvault::Result<T>, op: &str) -> ErrorKind {
    match r {
        Ok(_) => panic!("{op}: expected an error"),
        Err(e) => e.kind(),
    }
}

/// Runs `ops` against the store `open` gives and the model, failing at the first difference.
pub async fn check(mut open: Open<'_>, ops: Vec<Op>) {
    let pool = pool();
    let mut model: BTreeSet<usize> = BTreeSet::new();
    let mut store = open(None).await;
    for op in ops {
        let what = format!("{op:?}");
        match op {
            Op::Put { i, expect, wrong } => {
                let expected = if wrong {
                    Some(another_blob(&pool, i))
                } else {
                    expect.map(|n| address(&pool[i], n))
                };
                let options = PutOptions {
                    expected,
                    ..PutOptions::default()
                };
                let r = store.put_bytes(pool[i].clone(), &options).await;
                put_outcome(r, (i, wrong), &pool, &mut model, &what);
            }
            Op::Batch(items) => {
                let inputs: Vec<_> = items
                    .iter()
                    .map(|&(i, wrong)| {
                        let expected = wrong.then(|| another_blob(&pool, i));
                        let body =
                            futures::stream::iter([Ok::<_, std::io::Error>(pool[i].clone())]);
                        (
                            body,
                            PutOptions {
                                expected,
                                ..PutOptions::default()
                            },
                        )
                    })
                    .collect();
                let results = store.put_batch(inputs).await;
                assert_eq!(results.len(), items.len());
                for (&item, r) in items.iter().zip(results) {
                    put_outcome(r, item, &pool, &mut model, &what);
                }
            }
            Op::Get { i, name } => {
                let r = store.get(&address(&pool[i], name)).await;
                if model.contains(&i) {
                    let bytes = r.expect("get").bytes().await.expect("verified bytes");
                    assert_eq!(bytes, pool[i], "blob {i} by {name:?}");
                } else {
                    assert_eq!(kind(r, &what), ErrorKind::NotFound, "blob {i} by {name:?}");
                }
            }
            Op::Range { i, name, from, to } => {
                let size = pool[i].len() as u64;
                let at = |v: u64| if v > 8 { size + 1 } else { v * size / 8 };
                let range = at(from)..at(to);
                let r = store
                    .get_range(&address(&pool[i], name), range.clone())
                    .await;
                if !model.contains(&i) {
                    assert_eq!(kind(r, &what), ErrorKind::NotFound);
                } else if range.start > range.end || range.end > size {
                    assert_eq!(
                        kind(r, &what),
                        ErrorKind::InvalidInput,
                        "{range:?} of {size}"
                    );
                } else {
                    let bytes = r.expect("range").bytes().await.expect("verified range");
                    let want = pool[i].slice(range.start as usize..range.end as usize);
                    assert_eq!(bytes, want, "{range:?} of blob {i}");
                }
            }
            Op::Stat { i, name } => {
                let address = address(&pool[i], name);
                let r = store.stat(&address).await;
                assert_eq!(
                    store.contains(&address).await.expect("contains"),
                    model.contains(&i)
                );
                if model.contains(&i) {
                    let info = r.expect("stat");
                    assert_eq!(info.size, pool[i].len() as u64);
                    assert_eq!(
                        info.key,
                        tarvault::backend::BlobKey::new(digests_of(&pool[i]).sha512)
                    );
                    if let Some(d) = info.digests {
                        assert_eq!(d, digests_of(&pool[i]));
                    }
                } else {
                    assert_eq!(kind(r, &what), ErrorKind::NotFound);
                }
            }
            Op::Delete { i, name } => {
                let removed = store
                    .delete(&address(&pool[i], name))
                    .await
                    .expect("delete");
                assert_eq!(removed, model.remove(&i), "delete blob {i} by {name:?}");
            }
            Op::List => {
                let keys: BTreeSet<_> = store.list().try_collect().await.expect("list");
                let want: BTreeSet<_> = model
                    .iter()
                    .map(|&i| tarvault::backend::BlobKey::new(digests_of(&pool[i]).sha512))
                    .collect();
                assert_eq!(keys, want);
            }
            Op::Fsck => {
                let report = store
                    .fsck(&tarvault::FsckOptions::default())
                    .await
                    .expect("fsck");
                assert!(report.is_clean(), "{report:?}");
                assert_eq!(report.checked, model.len() as u64, "{report:?}");
            }
            Op::Reopen => store = open(Some(store)).await,
        }
    }
}

/// One seeded sequence of 120 operations on the fixture's backend, reopened each time as a new
/// second instance where it has them.
pub async fn follows_a_model(f: &dyn Fixture) {
    let mut runner = TestRunner::deterministic();
    let ops = proptest::collection::vec(op(), 120)
        .new_tree(&mut runner)
        .expect("operations")
        .current();
    let first = store_of(f);
    let open: Open<'_> = Box::new(move |current| {
        let store = match current {
            None => first.clone(),
            Some(current) => f.second().map_or(current, Store::from_arc),
        };
        Box::pin(async move { store })
    });
    check(open, ops).await;
}
