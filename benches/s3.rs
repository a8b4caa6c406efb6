//! S3 backend throughput: tarvault put/get against raw `object_store` put/get of the same bytes,
//! on the same server, in the same run (the machine is shared and noisy: only same-run ratios
//! mean anything). Cases: 1000 blobs of 64 KiB at 16-way concurrency, and one 256 MiB blob.
//! With `rss`, a 2 GiB put and get in child processes, reporting peak RSS.
//!
//! Run with a server started by `backends/s3/start-*.sh`:
//! `TARVAULT_S3S_ENV=/tmp/s3s.env cargo bench --features s3 --bench s3 [-- rss]`
//! (or `TARVAULT_CEPH_ENV`; each one set is measured).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/digest_floor.rs"]
mod digest_floor;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tarvault::backend::s3::{S3Backend, S3Config};
use tarvault::integrity::Algorithm;
use tarvault::{PutOptions, Store};

const MIB: usize = 1 << 20;
const SMALL: usize = 64 * 1024;
const SMALL_COUNT: usize = 1000;
const CONCURRENCY: usize = 16;
const LARGE: usize = 256 * MIB;
const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if args.get(1).map(String::as_str) == Some("--child") {
        rt.block_on(child(&args[2..]));
        return;
    }
    let mut any = false;
    for (var, name) in [
        ("TARVAULT_S3S_ENV", "s3s-fs"),
        ("TARVAULT_CEPH_ENV", "ceph"),
    ] {
        let Ok(file) = std::env::var(var) else {
            continue;
        };
        any = true;
        let config = config_from(&file, &format!("bench-{:08x}", rand::random::<u32>()));
        println!(
            "\n## {name} ({})",
            config.endpoint.as_deref().unwrap_or("?")
        );
        if args.iter().any(|a| a == "rss") {
            rss(&file);
        } else {
            rt.block_on(throughput(&config));
        }
    }
    if !any {
        println!(
            "no server: set TARVAULT_S3S_ENV and/or TARVAULT_CEPH_ENV (backends/s3/start-*.sh)"
        );
    }
}

fn config_from(file: &str, prefix: &str) -> S3Config {
    let text = std::fs::read_to_string(file).expect("env file");
    let v: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let mut c = S3Config::new(v["TARVAULT_S3_BUCKET"], prefix);
    c.endpoint = Some(v["AWS_ENDPOINT_URL"].to_string());
    c.allow_http = Some(true);
    c.region = Some(v["AWS_REGION"].to_string());
    c.credentials = Some((
        v["AWS_ACCESS_KEY_ID"].to_string(),
        v["AWS_SECRET_ACCESS_KEY"].to_string(),
    ));
    c
}

fn noise(len: usize, seed: u64) -> Bytes {
    Bytes::from(common::noise(len, seed))
}

struct Row {
    case: &'static str,
    bytes: usize,
    raw: Vec<cpu::Sample>,
    tv: Vec<cpu::Sample>,
}

async fn throughput(config: &S3Config) {
    let raw: Arc<dyn ObjectStore> = Arc::new(config.build().expect("client"));
    let mut rows = vec![
        Row {
            case: "put 64 KiB x1000, 16-way",
            bytes: SMALL * SMALL_COUNT,
            raw: vec![],
            tv: vec![],
        },
        Row {
            case: "get 64 KiB x1000, 16-way",
            bytes: SMALL * SMALL_COUNT,
            raw: vec![],
            tv: vec![],
        },
        Row {
            case: "put 256 MiB",
            bytes: LARGE,
            raw: vec![],
            tv: vec![],
        },
        Row {
            case: "get 256 MiB",
            bytes: LARGE,
            raw: vec![],
            tv: vec![],
        },
        // The raw side is the same as "put 256 MiB" (filled in after the rounds).
        Row {
            case: "put 256 MiB, sha512 given",
            bytes: LARGE,
            raw: vec![],
            tv: vec![],
        },
    ];
    let large = noise(LARGE, 99);
    for round in 0..ROUNDS {
        // Fresh prefixes and fresh bytes each round: every put really stores.
        let tag = format!("{}-r{round}", config.prefix);
        let blobs: Vec<Bytes> = (0..SMALL_COUNT)
            .map(|i| noise(SMALL, (round * SMALL_COUNT + i) as u64 + 1))
            .collect();
        let mut c = config.clone();
        c.prefix = format!("{tag}-tv");
        let store = Store::new(S3Backend::connect(&c).await.expect("connect"));
        let raw_dir = format!("{tag}-raw");

        // Alternate which goes first so neither always gets the warmer server.
        let raw_first = round % 2 == 0;
        for pass in 0..2 {
            if (pass == 0) == raw_first {
                let t = cpu::Span::start();
                futures::stream::iter(blobs.iter().enumerate())
                    .map(|(i, b)| {
                        let raw = raw.clone();
                        let p = Path::from(format!("{raw_dir}/{i}"));
                        let b = b.clone();
                        async move { raw.put(&p, PutPayload::from(b)).await }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("raw put");
                rows[0].raw.push(t.stop());
            } else {
                let t = cpu::Span::start();
                let opts = PutOptions::default();
                let outs = futures::stream::iter(blobs.iter())
                    .map(|b| store.put_bytes(b.clone(), &opts))
                    .buffer_unordered(CONCURRENCY)
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("tarvault put");
                rows[0].tv.push(t.stop());
                assert!(outs.iter().all(|o| o.stored));
            }
        }
        let addrs: Vec<_> = blobs
            .iter()
            .map(|b| {
                let d = tarvault::Store::memory();
                futures::executor::block_on(d.put_bytes(b.clone(), &PutOptions::default()))
                    .expect("digest")
                    .digests
                    .integrity()
            })
            .collect();
        for pass in 0..2 {
            if (pass == 0) == raw_first {
                let t = cpu::Span::start();
                futures::stream::iter(0..SMALL_COUNT)
                    .map(|i| {
                        let raw = raw.clone();
                        let p = Path::from(format!("{raw_dir}/{i}"));
                        async move { raw.get(&p).await?.bytes().await }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("raw get");
                rows[1].raw.push(t.stop());
            } else {
                let t = cpu::Span::start();
                futures::stream::iter(addrs.iter())
                    .map(|a| {
                        let store = store.clone();
                        async move { store.get(a).await?.bytes().await }
                    })
                    .buffer_unordered(CONCURRENCY)
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("tarvault get");
                rows[1].tv.push(t.stop());
            }
        }

        // One large blob, streamed in 256 KiB chunks for tarvault; raw uses the same part size
        // and parts in flight as the backend (8 MiB, 4).
        let big = {
            let mut v = large.to_vec();
            v[..8].copy_from_slice(&(round as u64).to_le_bytes());
            Bytes::from(v)
        };
        let raw_big = Path::from(format!("{tag}-raw/big"));
        for pass in 0..2 {
            if (pass == 0) == raw_first {
                let t = cpu::Span::start();
                let up = raw.put_multipart(&raw_big).await.expect("mpu");
                let mut w = WriteMultipart::new_with_chunk_size(up, 8 * MIB);
                for part in big.chunks(8 * MIB) {
                    w.wait_for_capacity(4).await.expect("capacity");
                    w.put(big.slice_ref(part));
                }
                w.finish().await.expect("complete");
                rows[2].raw.push(t.stop());
            } else {
                let t = cpu::Span::start();
                let chunks: Vec<std::io::Result<Bytes>> = big
                    .chunks(256 * 1024)
                    .map(|c| Ok(big.slice_ref(c)))
                    .collect();
                let put = store
                    .put(futures::stream::iter(chunks), &PutOptions::default())
                    .await
                    .expect("tarvault big put");
                rows[2].tv.push(t.stop());
                assert!(put.stored);
            }
        }
        // The same put with the caller naming the sha512 (as a registry publish or a migration
        // does): other bytes, so it really stores.
        let known = {
            let mut v = big.to_vec();
            v[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            Bytes::from(v)
        };
        let known_addr = futures::executor::block_on(
            Store::memory().put_bytes(known.clone(), &PutOptions::default()),
        )
        .expect("digest")
        .digests
        .integrity();
        {
            let t = cpu::Span::start();
            let chunks: Vec<std::io::Result<Bytes>> = known
                .chunks(256 * 1024)
                .map(|c| Ok(known.slice_ref(c)))
                .collect();
            let put = store
                .put(
                    futures::stream::iter(chunks),
                    &PutOptions::expect(known_addr.clone()),
                )
                .await
                .expect("tarvault big put, sha512 given");
            rows[4].tv.push(t.stop());
            assert!(put.stored);
        }
        let big_addr = futures::executor::block_on(
            Store::memory().put_bytes(big.clone(), &PutOptions::default()),
        )
        .expect("digest")
        .digests
        .integrity();
        for pass in 0..2 {
            if (pass == 0) == raw_first {
                let t = cpu::Span::start();
                let mut s = raw.get(&raw_big).await.expect("get").into_stream();
                let mut n = 0;
                while let Some(c) = s.next().await {
                    n += c.expect("chunk").len();
                }
                assert_eq!(n, LARGE);
                rows[3].raw.push(t.stop());
            } else {
                let t = cpu::Span::start();
                let mut s = store.get(&big_addr).await.expect("get");
                let mut n = 0;
                while let Some(c) = s.next().await {
                    n += c.expect("verified chunk").len();
                }
                assert_eq!(n, LARGE);
                rows[3].tv.push(t.stop());
            }
        }
        // Clean up this round's objects.
        let all = raw
            .list(Some(&Path::from(tag.as_str())))
            .map_ok(|m| m.location)
            .boxed();
        let _ = raw.delete_stream(all).try_collect::<Vec<_>>().await;
        for prefix in [format!("{tag}-tv"), format!("{tag}-raw")] {
            let all = raw
                .list(Some(&Path::from(prefix)))
                .map_ok(|m| m.location)
                .boxed();
            let _ = raw.delete_stream(all).try_collect::<Vec<_>>().await;
        }
    }
    rows[4].raw = rows[2].raw.clone();
    // A put computes sha512, sha1 and blake3 (the address and the records) and object_store the
    // sha256 of x-amz-checksum-sha256; a get verifies the sha512.
    let put_algs = [
        Algorithm::Sha512,
        Algorithm::Sha1,
        Algorithm::Blake3,
        Algorithm::Sha256,
    ];
    let smalls: Vec<Bytes> = (0..SMALL_COUNT)
        .map(|i| noise(SMALL, i as u64 + 1))
        .collect();
    let small_refs: Vec<&[u8]> = smalls.iter().map(|b| &b[..]).collect();
    let digest = [
        digest_floor::digest_rate(&small_refs, &put_algs),
        digest_floor::digest_rate(&small_refs, &[Algorithm::Sha512]),
        digest_floor::digest_rate(&[&large[..]], &put_algs),
        digest_floor::digest_rate(&[&large[..]], &[Algorithm::Sha512]),
        digest_floor::digest_rate(&[&large[..]], &put_algs),
    ];
    println!(
        "| case | raw object_store MB/s | tarvault MB/s | tarvault/raw | digests, one core MB/s | ceiling if digests serialize | {} |",
        cpu::HEADER
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (r, digest) in rows.into_iter().zip(digest) {
        let (raw_s, tv_s) = (cpu::medians(&r.raw), cpu::medians(&r.tv));
        let (raw, tv) = (
            r.bytes as f64 / raw_s.secs / 1e6,
            r.bytes as f64 / tv_s.secs / 1e6,
        );
        println!(
            "| {} | {raw:.1} | {tv:.1} | {:.2}x | {digest:.0} | {:.2}x | {} |",
            r.case,
            tv / raw,
            digest_floor::serial_ceiling(raw, digest),
            cpu::cells(raw_s, tv_s)
        );
    }
    println!("(medians of {ROUNDS} rounds; each round alternates which side goes first)");
}

/// 2 GiB put, then get, each in a child process so that its peak RSS is its own.
fn rss(env_file: &str) {
    let exe = std::env::current_exe().expect("exe");
    let prefix = format!("bench-rss-{:08x}", rand::random::<u32>());
    println!("| 2 GiB | seconds | MB/s | peak RSS MiB |");
    println!("|---|---|---|---|");
    for op in ["put", "get", "put-known"] {
        let out = std::process::Command::new(&exe)
            .args(["--child", op, env_file, &prefix])
            .output()
            .expect("child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

const RSS_SIZE: usize = 2048 * MIB;

async fn child(args: &[String]) {
    let (op, file, prefix) = (&args[0], &args[1], &args[2]);
    let store = Store::new(
        S3Backend::connect(&config_from(file, prefix))
            .await
            .expect("connect"),
    );
    // The same 2 GiB every time: 8 MiB of noise repeated, with the chunk index mixed in.
    let base = noise(8 * MIB, 7);
    let chunk = 256 * 1024;
    let make = move |i: usize| {
        let off = (i * chunk) % base.len();
        let mut c = base.slice(off..off + chunk).to_vec();
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
        Ok::<Bytes, std::io::Error>(Bytes::from(c))
    };
    let t = Instant::now();
    let n = RSS_SIZE / chunk;
    let addr_file = std::env::temp_dir().join(format!("{prefix}.addr"));
    if op == "put" {
        let put = store
            .put(
                futures::stream::iter((0..n).map(make)),
                &PutOptions::default(),
            )
            .await
            .expect("put");
        std::fs::write(&addr_file, put.digests.integrity().to_string()).expect("addr");
    } else if op == "put-known" {
        // Hashed first (untimed): the put then streams straight to its key.
        let mut h = <sha2::Sha512 as sha2::Digest>::new();
        for i in 0..n {
            sha2::Digest::update(&mut h, &make(i).expect("chunk")[..]);
        }
        let sri = format!(
            "sha512-{}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                sha2::Digest::finalize(h)
            )
        );
        let a = tarvault::Integrity::parse(&sri).expect("integrity");
        let t = Instant::now();
        store
            .put(
                futures::stream::iter((0..n).map(make)),
                &PutOptions::expect(a.clone()),
            )
            .await
            .expect("put");
        let secs = t.elapsed().as_secs_f64();
        store.delete(&a).await.expect("delete");
        report(op, secs);
        return;
    } else {
        let a = std::fs::read_to_string(&addr_file).expect("addr");
        let a = tarvault::Integrity::parse(&a).expect("integrity");
        let mut s = store.get(&a).await.expect("get");
        let mut got = 0;
        while let Some(c) = s.next().await {
            got += c.expect("verified").len();
        }
        assert_eq!(got, RSS_SIZE);
        store.delete(&a).await.expect("delete");
        let _ = std::fs::remove_file(&addr_file);
    }
    report(op, t.elapsed().as_secs_f64());
}

fn report(op: &str, secs: f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    println!(
        "| {op} | {secs:.1} | {:.1} | {:.0} |",
        RSS_SIZE as f64 / secs / 1e6,
        hwm_kb / 1024.0
    );
}
