//! npm publish ingest (`tarvault::publish::ingest`) against `Store::put` of the same bytes, and the
//! peak memory of ingesting a large attachment, printed as a table (same-run ratios and medians:
//! the machine is shared and noisy).
//!
//! - throughput: a publish document whose attachment is `TARVAULT_BENCH_MIB` MiB (default 256),
//!   held in memory as the body, against `Store::put` of the decoded bytes from memory, both into
//!   a filesystem store (fsync off, so the disk does not dominate); target ≥ 0.8×;
//! - peak RSS: a child process streams a 256 MiB attachment's document, generated on the fly
//!   (never held whole), into a filesystem store and reports its `VmHWM`; target ≤ 64 MiB. A
//!   child doing `Store::put` of the same stream is the reference.
//!
//! Run: `cargo bench --bench publish`.

#[path = "common/rss.rs"]
mod rss;

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::Stream;
use sha2::Digest;
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::publish::{ingest, PublishOptions};
use tarvault::{PutOptions, Store};

const MIB: usize = 1 << 20;
/// Raw bytes per generated chunk: a multiple of 3, so each chunk's base64 has no padding.
const RAW_CHUNK: usize = 48 * 1024;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let mib: usize = std::env::var("TARVAULT_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let work =
        tempfile::tempdir_in(std::env::var("TARVAULT_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("bench dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "tarvault publish ingest ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    throughput(&rt, work.path(), mib);
    println!();
    println!("peak RSS, 256 MiB attachment, in a child process (target: publish ≤ 64 MiB)");
    for mode in ["publish", "put"] {
        let store = work.path().join(format!("rss-{mode}"));
        println!(
            "  {mode:<8} {}",
            rss::child_rss(&[mode, &store.display().to_string()])
        );
    }
}

/// Deterministic pseudo-random bytes (xorshift), chunk `i` of a blob.
fn chunk(i: usize, len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut out = vec![0u8; len];
    for c in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    out
}

fn chunks_of(total: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..total.div_ceil(RAW_CHUNK)).map(move |i| chunk(i, RAW_CHUNK.min(total - i * RAW_CHUNK)))
}

/// The document around the attachment: `(before data, after data)`.
fn envelope(total: usize, sha512: &[u8], sha1: &[u8]) -> (String, String) {
    let doc = serde_json::json!({
        "_id": "big", "name": "big", "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {"name": "big", "version": "1.0.0", "dist": {
            "integrity": format!("sha512-{}", B64.encode(sha512)),
            "shasum": hex::encode(sha1),
            "tarball": "http://localhost/big/-/big-1.0.0.tgz"}}},
    })
    .to_string();
    let head = format!(
        r#"{},"_attachments":{{"big-1.0.0.tgz":{{"content_type":"application/octet-stream","data":""#,
        doc.strip_suffix('}').unwrap_or(&doc)
    );
    (head, format!(r#"","length":{total}}}}}}}"#))
}

fn digests(total: usize) -> (Vec<u8>, Vec<u8>) {
    let mut s512 = sha2::Sha512::new();
    let mut s1 = sha1::Sha1::new();
    for c in chunks_of(total) {
        s512.update(&c);
        s1.update(&c);
    }
    (s512.finalize().to_vec(), s1.finalize().to_vec())
}

/// The publish body generated as it is read: nothing but one chunk is held at a time.
fn generated_body(total: usize) -> impl Stream<Item = io::Result<Bytes>> + Unpin {
    let (sha512, sha1) = digests(total);
    let (head, tail) = envelope(total, &sha512, &sha1);
    let data = chunks_of(total).map(|c| Ok(Bytes::from(B64.encode(c))));
    futures::stream::iter(
        std::iter::once(Ok(Bytes::from(head)))
            .chain(data)
            .chain(std::iter::once(Ok(Bytes::from(tail)))),
    )
}

fn fs_store(dir: &Path) -> Store {
    let options = FsOptions {
        fsync: false,
        ..Default::default()
    };
    Store::new(FsBackend::open(dir, options).expect("open store"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn throughput(rt: &tokio::runtime::Runtime, work: &Path, mib: usize) {
    let total = mib * MIB;
    let raw: Vec<Bytes> = chunks_of(total).map(Bytes::from).collect();
    let (sha512, sha1) = digests(total);
    let (head, tail) = envelope(total, &sha512, &sha1);
    // The body as it arrives from a socket: base64 text in 64 KiB pieces.
    let mut text = head;
    for c in &raw {
        B64.encode_string(c, &mut text);
    }
    text.push_str(&tail);
    let body = Bytes::from(text.into_bytes());
    let pieces: Vec<Bytes> = (0..body.len())
        .step_by(64 * 1024)
        .map(|i| body.slice(i..(i + 64 * 1024).min(body.len())))
        .collect();
    // `TARVAULT_BENCH_MIB` may ask for more than the default cap on a publish's tarball.
    let options = PublishOptions {
        max_tarball: (total as u64).max(tarvault::publish::DEFAULT_MAX_TARBALL),
        ..PublishOptions::default()
    };
    let (mut t_put, mut t_pub) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let dir = work.join(format!("put-{round}"));
        let store = fs_store(&dir);
        let stream = futures::stream::iter(raw.clone().into_iter().map(Ok));
        let started = Instant::now();
        rt.block_on(store.put(stream, &PutOptions::default()))
            .expect("put");
        t_put.push(started.elapsed());
        drop(store);
        std::fs::remove_dir_all(&dir).ok();

        let dir = work.join(format!("publish-{round}"));
        let store = fs_store(&dir);
        let stream = futures::stream::iter(pieces.clone().into_iter().map(Ok));
        let started = Instant::now();
        let p = rt
            .block_on(ingest(&store, stream, &options))
            .expect("publish");
        t_pub.push(started.elapsed());
        assert!(p.tarball.is_some_and(|t| t.stored));
        drop(store);
        std::fs::remove_dir_all(&dir).ok();
    }
    let (put, publish) = (median(t_put), median(t_pub));
    let rate = |d: Duration| total as f64 / d.as_secs_f64() / 1e6;
    println!("throughput, {mib} MiB tarball (decoded bytes/s), median of 3, fs store, fsync off");
    println!(
        "  Store::put          {:>8.1} MB/s  {:>7.3} s",
        rate(put),
        put.as_secs_f64()
    );
    println!(
        "  publish::ingest     {:>8.1} MB/s  {:>7.3} s  ({:.2}× put; target ≥ 0.8×)",
        rate(publish),
        publish.as_secs_f64(),
        put.as_secs_f64() / publish.as_secs_f64()
    );
}

/// One measured operation on a 256 MiB blob, then its peak RSS.
fn child(args: &[String]) {
    let total = 256 * MIB;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = fs_store(Path::new(&args[1]));
    match args[0].as_str() {
        "publish" => {
            let p = rt
                .block_on(ingest(
                    &store,
                    generated_body(total),
                    &PublishOptions::default(),
                ))
                .expect("publish");
            assert_eq!(p.tarball.map(|t| t.digests.size), Some(total as u64));
        }
        _ => {
            let stream = futures::stream::iter(chunks_of(total).map(|c| Ok(Bytes::from(c))));
            rt.block_on(store.put(stream, &PutOptions::default()))
                .expect("put");
        }
    }
    println!("{}", rss::peak_rss());
}
