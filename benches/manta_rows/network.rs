//! The Manta rows of the network benchmark (`benches/network.rs` has the S3 ones): tarvault
//! against plain signed HTTP on the same test server through the same emulated link, in the same
//! run, with the client's CPU per GB against plain HTTP plus the digests a verified store must
//! compute.
//!
//! - 64 KiB puts and gets at concurrency 1, 16 and 64;
//! - a 256 MiB put with the sha512 given (streamed to the blob's path while hashed,
//!   `src/backend/manta/direct.rs`) and of unknown digest (staged while hashed and named by a
//!   SnapLink where the test server makes links as Manta v1 does, `staging.rs`; spooled with
//!   `--v2`), the same of unknown digest spooled and sent by one PUT with `Content-MD5` once
//!   hashed (`?staging=false`), and a 256 MiB get;
//! - 64 KiB puts at c=1, 16 and 64 whose shard directories this process made earlier (as a
//!   long-lived process puts): what a fresh process's directory PUTs cost the rows above.
//!
//! Client CPU is getrusage of this process; the server and the proxy are other processes.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tarvault::backend::manta::protocol::MantaClient;
use tarvault::backend::manta::MantaBackend;
use tarvault::integrity::Algorithm;
use tarvault::{Integrity, PutOptions, Store};

use crate::net_rows::{
    addr_of, chunks, print_rows, small_rows, timed, timed_settled, Floors, Row, SMALL_CASES,
};
use crate::{common, manta_common};

const MIB: usize = 1 << 20;
const SMALL: usize = 64 * 1024;
const ROUNDS: usize = 2;

/// What a verified Manta put computes: the three digests of its name and aliases, and the MD5 of
/// the `Content-MD5` header that makes the server check the bytes it stored.
const PUT_ALGS: [Algorithm; 4] = [
    Algorithm::Sha512,
    Algorithm::Sha1,
    Algorithm::Blake3,
    Algorithm::Md5,
];

/// A plain signed PUT of `data` to `path`: no Content-MD5, no metadata.
pub async fn plain_put(http: &reqwest::Client, client: &MantaClient, path: &str, data: Bytes) {
    let (date, auth) = client.signer().sign_now();
    let resp = http
        .put(client.url_of(path))
        .header("date", date)
        .header("authorization", auth)
        .header("content-type", "application/octet-stream")
        .header("content-length", data.len())
        .body(data)
        .send()
        .await
        .expect("plain put");
    assert!(resp.status().is_success(), "plain put: {}", resp.status());
}

/// A plain signed GET of `path`, its body read to the end; returns its length.
pub async fn plain_get(http: &reqwest::Client, client: &MantaClient, path: &str) -> usize {
    let (date, auth) = client.signer().sign_now();
    let resp = http
        .get(client.url_of(path))
        .header("date", date)
        .header("authorization", auth)
        .send()
        .await
        .expect("plain get");
    assert!(resp.status().is_success(), "plain get: {}", resp.status());
    let mut st = resp.bytes_stream();
    let mut n = 0;
    while let Some(c) = st.next().await {
        n += c.expect("body").len();
    }
    n
}

/// Runs every row against `target` (already behind the emulator) and prints the table.
pub async fn run(target: &manta_common::Target, large_mib: usize) {
    let large = large_mib * MIB;
    let backend: MantaBackend = target.backend("net");
    let tv = Store::new(backend.clone());
    let client = backend.client();
    let http = reqwest::Client::new();
    let root = backend.layout().root().to_string();
    client.put_directory(&root).await.expect("mkdir root");

    let floors = Floors::measure(SMALL, large, &PUT_ALGS);
    let counts = SMALL_CASES;
    let mut rows = small_rows(SMALL, &floors);
    rows.push(Row::new(
        format!("put {large_mib} MiB, sha512 given (streamed to its path)"),
        large,
        floors.large_put,
        None,
    ));
    rows.push(Row::new(
        format!("put {large_mib} MiB, digest unknown (staging + link where the server links)"),
        large,
        floors.large_put,
        Some(0.8),
    ));
    rows.push(Row::new(
        format!("get {large_mib} MiB"),
        large,
        floors.large_get,
        Some(0.9),
    ));
    rows.push(Row::new(
        format!("put {large_mib} MiB, digest unknown (spool, then upload)"),
        large,
        floors.large_put,
        None,
    ));
    let mut spooling = target.config("net-spool");
    spooling.staging = false;
    let spooled = Store::new(MantaBackend::new(spooling).expect("backend"));

    for round in 0..ROUNDS {
        let raw_first = round % 2 == 0;
        let raw_dir = format!("{root}/plain-r{round}");
        client.put_directory(&raw_dir).await.expect("mkdir");
        for (i, (c, n)) in counts.into_iter().enumerate() {
            let dir = format!("{raw_dir}/s{i}");
            client.put_directory(&dir).await.expect("mkdir");
            let blobs: Vec<Bytes> = (0..n)
                .map(|j| Bytes::from(common::noise(SMALL, (round * 10_000 + i * 2000 + j) as u64)))
                .collect();
            let addrs: Vec<Integrity> = blobs.iter().map(|b| addr_of(b)).collect();
            let paths: Vec<String> = (0..n).map(|j| format!("{dir}/{j}")).collect();
            for pass in 0..2 {
                if (pass == 0) == raw_first {
                    let (s, ()) = timed(
                        futures::stream::iter(paths.iter().zip(&blobs))
                            .map(|(p, b)| plain_put(&http, client, p, b.clone()))
                            .buffer_unordered(c)
                            .collect::<()>(),
                    )
                    .await;
                    rows[2 * i].raw.push(s);
                } else {
                    let opts = PutOptions::default();
                    let (s, r) = timed(
                        futures::stream::iter(blobs.iter())
                            .map(|b| tv.put_bytes(b.clone(), &opts))
                            .buffer_unordered(c)
                            .try_collect::<Vec<_>>(),
                    )
                    .await;
                    assert!(r.expect("tarvault put").iter().all(|o| o.stored));
                    rows[2 * i].tv.push(s);
                }
            }
            for pass in 0..2 {
                if (pass == 0) == raw_first {
                    let (s, got) = timed(
                        futures::stream::iter(paths.iter())
                            .map(|p| plain_get(&http, client, p))
                            .buffer_unordered(c)
                            .collect::<Vec<usize>>(),
                    )
                    .await;
                    assert!(got.iter().all(|&g| g == SMALL));
                    rows[2 * i + 1].raw.push(s);
                } else {
                    let (s, r) = timed(
                        futures::stream::iter(addrs.iter())
                            .map(|a| {
                                let tv = tv.clone();
                                async move { tv.get(a).await?.bytes().await }
                            })
                            .buffer_unordered(c)
                            .try_collect::<Vec<_>>(),
                    )
                    .await;
                    assert!(r.expect("tarvault get").iter().all(|b| b.len() == SMALL));
                    rows[2 * i + 1].tv.push(s);
                }
            }
        }

        // Large: fresh bytes per put so each one really stores.
        let base = 2 * counts.len();
        let big = |seed: u64| {
            let mut v = common::noise(large, 1);
            v[..8].copy_from_slice(&(seed + 1000 * round as u64).to_le_bytes());
            Bytes::from(v)
        };
        let raw_big = format!("{raw_dir}/big");
        let (s, ()) = timed_settled(plain_put(&http, client, &raw_big, big(0))).await;
        rows[base].raw.push(s);
        rows[base + 1].raw.push(s);
        rows[base + 3].raw.push(s);
        let known = big(1);
        let known_addr = addr_of(&known);
        let (s, r) = timed_settled(tv.put(chunks(&known), &PutOptions::expect(known_addr))).await;
        assert!(r.expect("put, sha512 given").stored);
        rows[base].tv.push(s);
        drop(known);
        let unknown = big(2);
        let unknown_addr = addr_of(&unknown);
        let (s, r) = timed_settled(tv.put(chunks(&unknown), &PutOptions::default())).await;
        assert!(r.expect("put, digest unknown").stored);
        rows[base + 1].tv.push(s);
        drop(unknown);
        let (s, r) = timed_settled(spooled.put(chunks(&big(3)), &PutOptions::default())).await;
        assert!(r.expect("put, digest unknown, spooled").stored);
        rows[base + 3].tv.push(s);
        for pass in 0..2 {
            if (pass == 0) == raw_first {
                let (s, n) = timed_settled(plain_get(&http, client, &raw_big)).await;
                assert_eq!(n, large);
                rows[base + 2].raw.push(s);
            } else {
                let (s, n) = timed_settled(async {
                    let mut st = tv.get(&unknown_addr).await.expect("get");
                    let mut n = 0;
                    while let Some(c) = st.next().await {
                        n += c.expect("verified chunk").len();
                    }
                    n
                })
                .await;
                assert_eq!(n, large);
                rows[base + 2].tv.push(s);
            }
        }
    }
    // The test server's data directory goes with it; the large objects are removed now, to keep
    // the disk free for the next round's and other runs'.
    let _ = tokio::time::timeout(Duration::from_secs(60), remove_large(client, &root)).await;
    let made = shard_dirs(client, &root).await;
    for (k, (c, n)) in [(1, 200), (16, 1000), (64, 1000)].into_iter().enumerate() {
        let seed = 1_000_000 * (k as u64 + 1);
        let row = warm_row(
            &tv,
            client,
            &http,
            &root,
            &made,
            floors.small_put,
            (c, n, seed),
        );
        rows.push(row.await);
    }
    print_rows(
        &rows,
        "plain HTTP",
        &format!("(medians of {ROUNDS} rounds, alternating which side goes first; both large puts share one plain PUT per round; digests: put sha512+sha1+blake3+MD5, get sha512; CPU target ≤ 1.1x)"),
    );
    let puts: usize = ROUNDS * (counts.iter().map(|(_, n)| n).sum::<usize>() + 2);
    println!(
        "shard directories made by tarvault's {puts} puts before the rows with shard directories known (of 4096 per kind): blobs {}, markers/sha1 {}, markers/blake3 {}",
        made[0].len(),
        made[1].len(),
        made[2].len()
    );
    let after = shard_dirs(client, &root).await;
    let same = after.iter().zip(&made).all(|(a, b)| a.len() == b.len());
    println!("the rows with shard directories known made no directory: {same}");
}

/// `n` 64 KiB puts at concurrency `c` whose three shard directories (blob, sha1 marker, blake3
/// marker) this process made already, as a long-lived process would have: picked from fresh
/// noise (from `seed` on) by their digests. A put is then its three PUTs and no directory PUT.
/// Both orders, one pass each.
async fn warm_row(
    tv: &Store,
    client: &MantaClient,
    http: &reqwest::Client,
    root: &str,
    known: &[HashSet<String>; 3],
    small_put_d: f64,
    (c, n, mut seed): (usize, usize, u64),
) -> Row {
    use sha2::Digest as _;
    let mut row = Row::new(
        format!("put 64 KiB x{n}, c={c}, shard directories known"),
        n * SMALL,
        small_put_d * n as f64,
        (c == 16).then_some(0.9),
    );
    let mut pick = || {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            seed += 1;
            let b = common::noise(SMALL, seed);
            let shards = [
                hex::encode(sha2::Sha512::digest(&b)),
                hex::encode(sha1::Sha1::digest(&b)),
                blake3::hash(&b).to_hex().to_string(),
            ];
            if shards.iter().zip(known).all(|(h, k)| k.contains(&h[..3])) {
                out.push(Bytes::from(b));
            }
        }
        out
    };
    let sets = [pick(), pick()];
    for (pass, blobs) in sets.iter().enumerate() {
        let dir = format!("{root}/plain-warm-c{c}-{pass}");
        client.put_directory(&dir).await.expect("mkdir");
        let paths: Vec<String> = (0..n).map(|j| format!("{dir}/{j}")).collect();
        for raw_turn in [pass == 0, pass != 0] {
            if raw_turn {
                let (s, ()) = timed(
                    futures::stream::iter(paths.iter().zip(blobs))
                        .map(|(p, b)| plain_put(http, client, p, b.clone()))
                        .buffer_unordered(c)
                        .collect::<()>(),
                )
                .await;
                row.raw.push(s);
            } else {
                let opts = PutOptions::default();
                let (s, r) = timed(
                    futures::stream::iter(blobs.iter())
                        .map(|b| tv.put_bytes(b.clone(), &opts))
                        .buffer_unordered(c)
                        .try_collect::<Vec<_>>(),
                )
                .await;
                assert!(r.expect("tarvault put").iter().all(|o| o.stored));
                row.tv.push(s);
            }
        }
    }
    row
}

/// The shard directories of the store's blobs, sha1 markers and blake3 markers, which this
/// process made (one `PUT` of a directory each, before the first object in it; the backend
/// remembers them for the life of the process): the requests a put of a fresh process makes
/// beyond its blob's PUT and two marker PUTs.
async fn shard_dirs(client: &MantaClient, root: &str) -> [HashSet<String>; 3] {
    let mut out: [HashSet<String>; 3] = Default::default();
    for (set, dir) in out
        .iter_mut()
        .zip(["blobs", "markers/sha1", "markers/blake3"])
    {
        *set = client
            .list_dir(&format!("{root}/{dir}"))
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.kind == "directory")
            .map(|e| e.name)
            .collect();
    }
    out
}

/// Deletes the plain side's large objects (the store's are left: tarvault has no delete here
/// that is not the store's own, and the server's data directory is removed with it).
async fn remove_large(client: &MantaClient, root: &str) {
    for round in 0..ROUNDS {
        let _ = client.delete(&format!("{root}/plain-r{round}/big")).await;
    }
}
