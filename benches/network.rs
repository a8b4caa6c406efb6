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
//! The proxy is checked first against a local echo server (added round trip, capped rate).
//! A server whose variable is unset is skipped with a reason. `TARVAULT_NET_RTT_US` and
//! `TARVAULT_NET_MBIT` change the emulated network.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/netem.rs"]
mod netem;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tarvault::backend::s3::{S3Backend, S3Config};
use tarvault::integrity::{Algorithm, MultiHasher};
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
    let net = netem_from_env();
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

fn netem_from_env() -> netem::Netem {
    let mut n = netem::Netem::LAN;
    if let Some(rtt) = std::env::var("TARVAULT_NET_RTT_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        n.one_way = Duration::from_micros(rtt / 2);
    }
    if let Some(mbit) = std::env::var("TARVAULT_NET_MBIT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        n.bytes_per_sec = mbit * 1e6 / 8.0;
    }
    n
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

/// Raw and tarvault samples of one case.
struct Row {
    case: String,
    bytes: usize,
    raw: Vec<cpu::Sample>,
    tv: Vec<cpu::Sample>,
    /// CPU seconds of the digests a verified store must compute over these bytes (one thread).
    digests: f64,
    target: Option<f64>,
}

impl Row {
    fn new(case: impl Into<String>, bytes: usize, digests: f64, target: Option<f64>) -> Row {
        Row {
            case: case.into(),
            bytes,
            raw: vec![],
            tv: vec![],
            digests,
            target,
        }
    }
}

/// CPU seconds of computing `algorithms` over each of `blobs` (best of three).
fn digest_secs(blobs: &[Bytes], algorithms: &[Algorithm]) -> f64 {
    (0..3)
        .map(|_| {
            let t = cpu::self_cpu();
            for b in blobs {
                let mut h = MultiHasher::new(algorithms);
                h.update(b);
                std::hint::black_box(h.finalize());
            }
            cpu::self_cpu() - t
        })
        .fold(f64::INFINITY, f64::min)
}

async fn timed<F, T>(f: F) -> (cpu::Sample, T)
where
    F: std::future::Future<Output = T>,
{
    let span = cpu::Span::start();
    let out = f.await;
    (span.stop(), out)
}

fn addr_of(b: &[u8]) -> Integrity {
    common::addr(&common::sha512_sri(b))
}

async fn s3(config: &S3Config) {
    let raw: Arc<dyn ObjectStore> = Arc::new(config.build().expect("client"));
    let tv = Store::new(S3Backend::connect(config).await.expect("connect"));
    let mut spool_config = config.clone();
    spool_config.stage_unknown = false;
    let tv_spool = Store::new(S3Backend::connect(&spool_config).await.expect("connect"));

    let put_algs = [Algorithm::Sha512, Algorithm::Sha1, Algorithm::Blake3];
    let smalls_for_digest: Vec<Bytes> = (0..64)
        .map(|i| Bytes::from(common::noise(SMALL, i)))
        .collect();
    let small_put_d = digest_secs(&smalls_for_digest, &put_algs) / 64.0;
    let small_get_d = digest_secs(&smalls_for_digest, &[Algorithm::Sha512]) / 64.0;
    let big0 = Bytes::from(common::noise(LARGE, 1));
    let large_put_d = digest_secs(std::slice::from_ref(&big0), &put_algs);
    let large_get_d = digest_secs(std::slice::from_ref(&big0), &[Algorithm::Sha512]);
    drop(big0);

    let counts = [(1usize, 200usize), (16, 1000), (64, 1000)];
    let mut rows = Vec::new();
    for (c, n) in counts {
        let target = (c == 16).then_some(0.9);
        rows.push(Row::new(
            format!("put 64 KiB x{n}, c={c}"),
            n * SMALL,
            small_put_d * n as f64,
            target,
        ));
        rows.push(Row::new(
            format!("get 64 KiB x{n}, c={c}"),
            n * SMALL,
            small_get_d * n as f64,
            target,
        ));
    }
    let large = [
        ("put 256 MiB, sha512 given", large_put_d, None),
        (
            "put 256 MiB, digest unknown (staging + copy)",
            large_put_d,
            Some(0.8),
        ),
        (
            "put 256 MiB, digest unknown (spool, then upload)",
            large_put_d,
            Some(0.8),
        ),
        ("get 256 MiB", large_get_d, Some(0.9)),
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
        let (s, r) = timed(raw_upload(&raw, &raw_big, big(0))).await;
        r.expect("raw big put");
        for row in &mut rows[base..base + 3] {
            row.raw.push(s);
        }
        let known = big(1);
        let known_addr = addr_of(&known);
        let (s, r) = timed(tv.put(chunks(&known), &PutOptions::expect(known_addr))).await;
        assert!(r.expect("put, sha512 given").stored);
        rows[base].tv.push(s);
        drop(known);
        let staged = big(2);
        let staged_addr = addr_of(&staged);
        let (s, r) = timed(tv.put(chunks(&staged), &PutOptions::default())).await;
        assert!(r.expect("put, staged").stored);
        rows[base + 1].tv.push(s);
        drop(staged);
        let spooled = big(3);
        let (s, r) = timed(tv_spool.put(chunks(&spooled), &PutOptions::default())).await;
        assert!(r.expect("put, spooled").stored);
        rows[base + 2].tv.push(s);
        drop(spooled);
        for pass in 0..2 {
            if (pass == 0) == raw_first {
                let (s, n) = timed(async {
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
                let (s, n) = timed(async {
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
    print_rows(&rows);
}

/// The bytes as a stream of 256 KiB chunks (as a file or an HTTP body arrives).
fn chunks(b: &Bytes) -> futures::stream::Iter<std::vec::IntoIter<std::io::Result<Bytes>>> {
    let v: Vec<std::io::Result<Bytes>> = b.chunks(256 * 1024).map(|c| Ok(b.slice_ref(c))).collect();
    futures::stream::iter(v)
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

fn print_rows(rows: &[Row]) {
    println!("| case | raw object_store MB/s | tarvault MB/s | tarvault/raw | target | client CPU s/GB: raw | raw + digests | tarvault | tarvault / (raw + digests) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (raw, tv) = (cpu::medians(&r.raw), cpu::medians(&r.tv));
        let gb = r.bytes as f64 / 1e9;
        let (raw_rate, tv_rate) = (
            r.bytes as f64 / raw.secs / 1e6,
            r.bytes as f64 / tv.secs / 1e6,
        );
        let ratio = tv_rate / raw_rate;
        let target = match r.target {
            Some(t) if ratio >= t => format!("≥ {t} ✓"),
            Some(t) => format!("≥ {t} ✗"),
            None => "-".into(),
        };
        let floor = (raw.own + r.digests) / gb;
        println!(
            "| {} | {raw_rate:.1} | {tv_rate:.1} | {ratio:.2}x | {target} | {:.2} | {floor:.2} | {:.2} | {:.2}x |",
            r.case,
            raw.own / gb,
            tv.own / gb,
            tv.own / gb / floor
        );
    }
    println!(
        "(medians of {ROUNDS} rounds, alternating which side goes first; the three 256 MiB puts share one raw upload per round; CPU target ≤ 1.1x)"
    );
}
