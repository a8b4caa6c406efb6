//! `cargo bench --features s3 --bench network`: tarvault on a realistic network. Each S3 server
//! (s3s-fs, Ceph RGW; env files from `backends/s3/start-*.sh` named by `TARVAULT_S3S_ENV` and
//! `TARVAULT_CEPH_ENV`) is put behind a userspace proxy (`common/netem.rs`, its own process) that
//! adds 1 ms of round trip and caps each direction at 1 Gbit/s, and tarvault is measured against
//! raw object_store on the same proxy, in the same run:
//!
//! - 64 KiB puts and gets at concurrency 1, 16 and 64;
//! - a 256 MiB put with the sha512 given (streams to its key), of unknown digest both ways
//!   (staging key + server-side copy, and the spool-to-disk fallback), and a 256 MiB get;
//! - client CPU seconds per GB (getrusage of this process; the server and the proxy are other
//!   processes) of tarvault against the raw client plus the digests a verified store must
//!   compute, timed here on the same bytes.
//!
//! Each timed 256 MiB operation starts with the machine's dirty pages written out
//! (`net_rows::timed_settled`), so that none pays for the server's writeback of the one before.
//!
//! The proxy is checked first against a local echo server (added round trip, capped rate).
//! A server whose variable is unset is skipped with a reason. `TARVAULT_NET_RTT_US` and
//! `TARVAULT_NET_MBIT` change the emulated network.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/net_rows.rs"]
mod net_rows;
#[path = "common/netem.rs"]
mod netem;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use net_rows::{
    addr_of, chunks, print_rows, small_rows, timed, timed_settled, Floors, Row, SMALL_CASES,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tarvault::backend::s3::{S3Backend, S3Config};
use tarvault::integrity::Algorithm;
use tarvault::{Integrity, PutOptions, Store};

const MIB: usize = 1 << 20;
const SMALL: usize = 64 * 1024;
const LARGE: usize = 256 * MIB;
const ROUNDS: usize = 2;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if netem::run_if_child() {
        return;
    }
    let net = netem::Netem::from_env();
    let exe = std::env::current_exe().expect("exe");
    println!(
        "# tarvault on an emulated network: {:.1} ms round trip, {:.0} Mbit/s each way ({} cores, servers on this machine)\n",
        2.0 * net.one_way.as_secs_f64() * 1e3,
        net.bytes_per_sec * 8.0 / 1e6,
        cpu::cores()
    );
    calibrate(&exe, net);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (var, name) in [
        ("TARVAULT_S3S_ENV", "s3s-fs"),
        ("TARVAULT_CEPH_ENV", "Ceph RGW"),
    ] {
        let Ok(file) = std::env::var(var) else {
            println!(
                "\n## {name}\n\nskipped: {var} is not set (start one with backends/s3/start-*.sh)"
            );
            continue;
        };
        let vars = read_env(&file);
        let upstream = vars["AWS_ENDPOINT_URL"]
            .trim_start_matches("http://")
            .to_string();
        let proxy = netem::Child::start(&exe, &upstream, net);
        println!("\n## {name} ({upstream} behind the proxy)\n");
        let config = config_from(&vars, &proxy.endpoint());
        rt.block_on(s3(&config));
    }
    println!(
        "\nThe Manta and migration rows run through the same emulator in their own benchmarks: \
         `TARVAULT_NETEM=1 cargo bench --features manta --bench manta` (tarvault vs plain signed \
         HTTP) and `cargo bench --bench migrate` (its emulated-network section)."
    );
}

/// What the proxy adds, measured: round trip and one-way rate to a local echo server, directly
/// and through a proxy.
fn calibrate(exe: &std::path::Path, net: netem::Netem) {
    let port = netem::calibration_server();
    let (rtt0, rate0) = netem::measure(port);
    let proxy = netem::Child::start(exe, &format!("127.0.0.1:{port}"), net);
    let (rtt, rate) = netem::measure(proxy.port);
    println!(
        "| proxy check (local echo server) | round trip µs (median of 200) | 64 MiB one way MB/s |"
    );
    println!("|---|---|---|");
    println!("| direct | {rtt0:.0} | {rate0:.0} |");
    println!("| through the proxy | {rtt:.0} | {rate:.0} |");
}

fn read_env(file: &str) -> HashMap<String, String> {
    std::fs::read_to_string(file)
        .expect("env file")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn config_from(v: &HashMap<String, String>, endpoint: &str) -> S3Config {
    let mut c = S3Config::new(
        &v["TARVAULT_S3_BUCKET"],
        format!("netbench-{:08x}", rand::random::<u32>()),
    );
    c.endpoint = Some(endpoint.to_string());
    c.allow_http = Some(true);
    c.region = Some(v["AWS_REGION"].clone());
    c.credentials = Some((
        v["AWS_ACCESS_KEY_ID"].clone(),
        v["AWS_SECRET_ACCESS_KEY"].clone(),
    ));
    c
}

async fn s3(config: &S3Config) {
    let raw: Arc<dyn ObjectStore> = Arc::new(config.build().expect("client"));
    let tv = Store::new(S3Backend::connect(config).await.expect("connect"));
    let mut spool_config = config.clone();
    spool_config.stage_unknown = false;
    let tv_spool = Store::new(S3Backend::connect(&spool_config).await.expect("connect"));

    let put_algs = [Algorithm::Sha512, Algorithm::Sha1, Algorithm::Blake3];
    let floors = Floors::measure(SMALL, LARGE, &put_algs);
    let counts = SMALL_CASES;
    let mut rows = small_rows(SMALL, &floors);
    let large = [
        ("put 256 MiB, sha512 given", floors.large_put, None),
        (
            "put 256 MiB, digest unknown (staging + copy)",
            floors.large_put,
            Some(0.8),
        ),
        (
            "put 256 MiB, digest unknown (spool, then upload)",
            floors.large_put,
            Some(0.8),
        ),
        ("get 256 MiB", floors.large_get, Some(0.9)),
    ];
    for (case, d, target) in large {
        rows.push(Row::new(case, LARGE, d, target));
    }

    for round in 0..ROUNDS {
        let raw_first = round % 2 == 0;
        let raw_dir = format!("{}-raw-r{round}", config.prefix);
        for (i, (c, n)) in counts.into_iter().enumerate() {
            let blobs: Vec<Bytes> = (0..n)
                .map(|j| Bytes::from(common::noise(SMALL, (round * 10_000 + i * 2000 + j) as u64)))
                .collect();
            let addrs: Vec<Integrity> = blobs.iter().map(|b| addr_of(b)).collect();
            for pass in 0..2 {
                if (pass == 0) == raw_first {
                    let (s, r) = timed(
                        futures::stream::iter(blobs.iter().enumerate())
                            .map(|(j, b)| {
                                let (raw, b) = (raw.clone(), b.clone());
                                let p = Path::from(format!("{raw_dir}/s{i}/{j}"));
                                async move { raw.put(&p, PutPayload::from(b)).await }
                            })
                            .buffer_unordered(c)
                            .try_collect::<Vec<_>>(),
                    )
                    .await;
                    r.expect("raw put");
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
                    let (s, r) = timed(
                        futures::stream::iter(0..n)
                            .map(|j| {
                                let raw = raw.clone();
                                let p = Path::from(format!("{raw_dir}/s{i}/{j}"));
                                async move { raw.get(&p).await?.bytes().await }
                            })
                            .buffer_unordered(c)
                            .try_collect::<Vec<_>>(),
                    )
                    .await;
                    r.expect("raw get");
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
                    r.expect("tarvault get");
                    rows[2 * i + 1].tv.push(s);
                }
            }
        }

        // Large: fresh bytes per put so each one really stores.
        let base = 6;
        let big = |seed: u64| {
            let mut v = common::noise(LARGE, 1);
            v[..8].copy_from_slice(&(seed + 1000 * round as u64).to_le_bytes());
            Bytes::from(v)
        };
        let raw_big = Path::from(format!("{raw_dir}/big"));
        let (s, r) = timed_settled(raw_upload(&raw, &raw_big, big(0))).await;
        r.expect("raw big put");
        for row in &mut rows[base..base + 3] {
            row.raw.push(s);
        }
        let known = big(1);
        let known_addr = addr_of(&known);
        let (s, r) = timed_settled(tv.put(chunks(&known), &PutOptions::expect(known_addr))).await;
        assert!(r.expect("put, sha512 given").stored);
        rows[base].tv.push(s);
        drop(known);
        let staged = big(2);
        let staged_addr = addr_of(&staged);
        let (s, r) = timed_settled(tv.put(chunks(&staged), &PutOptions::default())).await;
        assert!(r.expect("put, staged").stored);
        rows[base + 1].tv.push(s);
        drop(staged);
        let spooled = big(3);
        let (s, r) = timed_settled(tv_spool.put(chunks(&spooled), &PutOptions::default())).await;
        assert!(r.expect("put, spooled").stored);
        rows[base + 2].tv.push(s);
        drop(spooled);
        for pass in 0..2 {
            if (pass == 0) == raw_first {
                let (s, n) = timed_settled(async {
                    let mut st = raw.get(&raw_big).await.expect("get").into_stream();
                    let mut n = 0;
                    while let Some(c) = st.next().await {
                        n += c.expect("chunk").len();
                    }
                    n
                })
                .await;
                assert_eq!(n, LARGE);
                rows[base + 3].raw.push(s);
            } else {
                let (s, n) = timed_settled(async {
                    let mut st = tv.get(&staged_addr).await.expect("get");
                    let mut n = 0;
                    while let Some(c) = st.next().await {
                        n += c.expect("verified chunk").len();
                    }
                    n
                })
                .await;
                assert_eq!(n, LARGE);
                rows[base + 3].tv.push(s);
            }
        }
        let all = raw
            .list(Some(&Path::from(config.prefix.as_str())))
            .map_ok(|m| m.location)
            .boxed();
        let _ = raw.delete_stream(all).try_collect::<Vec<_>>().await;
    }
    // The raw side's prefix is a sibling of the stores' (`<prefix>-raw-rN`).
    for round in 0..ROUNDS {
        let dir = Path::from(format!("{}-raw-r{round}", config.prefix));
        let all = raw.list(Some(&dir)).map_ok(|m| m.location).boxed();
        let _ = raw.delete_stream(all).try_collect::<Vec<_>>().await;
    }
    print_rows(
        &rows,
        "raw object_store",
        &format!("(medians of {ROUNDS} rounds, alternating which side goes first; the three 256 MiB puts share one raw upload per round; CPU target ≤ 1.1x)"),
    );
}

/// A raw multipart upload with the backend's part size and parts in flight (8 MiB, 4).
async fn raw_upload(raw: &Arc<dyn ObjectStore>, p: &Path, b: Bytes) -> object_store::Result<()> {
    let up = raw.put_multipart(p).await?;
    let mut w = WriteMultipart::new_with_chunk_size(up, 8 * MIB);
    for part in b.chunks(8 * MIB) {
        w.wait_for_capacity(4).await?;
        w.put(b.slice_ref(part));
    }
    w.finish().await.map(|_| ())
}
