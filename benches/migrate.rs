//! `cargo bench --bench migrate`: migration throughput against a plain sequential fetch of the same
//! attachments from the same server, in the same run. The server is `$COUCH_URL` or a
//! pouchdb-server started by `backends/couch/start.sh` (in memory), seeded with the corpus.
//!
//! The plain fetch is the floor a naive migrator cannot beat: one GET after another, bodies read
//! and dropped. The migrator also hashes (md5, sha1, sha512, blake3), checks every digest and
//! writes each tarball durably into a filesystem store (fsync on), so it only wins by overlapping
//! those with the server's latency.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/netem.rs"]
mod netem;
#[path = "../tests/migrate/seed.rs"]
mod seed;
#[path = "../tests/migrate/server.rs"]
mod server;

use std::time::{Duration, Instant};

use tarvault::migrate::{CouchSource, MigrateOptions, Migration};
use tarvault::Store;

/// Alternating rounds of the plain fetch and the migrator; each side is judged by its best round.
const ROUNDS: usize = 5;

struct Row {
    what: String,
    secs: f64,
    bytes: u64,
    tarballs: u64,
    /// CPU seconds this process (the migrator or the plain fetch) spent, all threads.
    client_cpu: f64,
    /// CPU seconds the server spent meanwhile, when its process is known.
    server_cpu: Option<f64>,
}

/// CPU seconds used so far: this process (user + system, all threads), and the server's.
#[derive(Clone, Copy)]
struct Cpu {
    client: f64,
    server: Option<f64>,
}

impl Cpu {
    fn now() -> Cpu {
        Cpu {
            client: cpu::self_cpu(),
            server: server::couch_pid().and_then(cpu::process_cpu),
        }
    }

    /// The CPU spent since `self`: this process's, and the server's when known.
    fn spent(self) -> (f64, Option<f64>) {
        let now = Cpu::now();
        let server = match (self.server, now.server) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        (now.client - self.client, server)
    }
}

fn main() {
    if netem::run_if_child() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let Some(url) = server::couch_url() else {
        return;
    };
    let couch = seed::Couch::new(&url);
    let db = seed::db_name("bench");
    couch.create_db(&db).await;
    let packages = seed::corpus_packages();
    let mut jobs = Vec::new();
    for (name, versions) in &packages {
        couch
            .put_doc(&db, name, &seed::fullfat(name, versions, &[]))
            .await;
        for v in versions {
            jobs.push((name.clone(), v.attachment.clone()));
        }
    }
    let empty = seed::db_name("bench_empty");
    couch.create_db(&empty).await;
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        rows.push(plain_fetch(&url, &db, &jobs, round, 1).await);
        rows.push(migrate(&url, &db, 8, true).await);
    }
    rows.push(migrate(&url, &db, 1, true).await);
    rows.push(migrate(&url, &db, 8, false).await);
    rows.push(plain_fetch(&url, &db, &jobs, 0, 8).await);
    let mut fixed = migrate(&url, &empty, 8, true).await;
    fixed.what = "migrate an empty database (fixed cost)".into();
    rows.push(fixed);

    let adapters = reqwest::get(&url)
        .await
        .expect("GET /")
        .json::<serde_json::Value>()
        .await
        .map(|v| v["pouchdb-adapters"].to_string())
        .unwrap_or_else(|_| "?".into());
    println!(
        "\nmigrate: {} tarballs, {:.1} MiB, server {url} (adapters {adapters}), one run, {} cores",
        jobs.len(),
        rows[0].bytes as f64 / 1048576.0,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("\n### the server on this machine (loopback)\n");
    table(&rows);

    // The same server behind the network emulator (1 ms round trip, 1 Gbit/s each way, in its
    // own process; `TARVAULT_NET_RTT_US` and `TARVAULT_NET_MBIT` change them): what a migration
    // from a CouchDB on another machine sees. The plain fetch pays the round trip once per
    // tarball; the migrator overlaps it.
    let net = netem::Netem::from_env();
    let upstream = url.trim_start_matches("http://").trim_end_matches('/');
    let hop = netem::Child::start(&std::env::current_exe().expect("exe"), upstream, net);
    let far = hop.endpoint();
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        rows.push(plain_fetch(&far, &db, &jobs, round, 1).await);
        rows.push(migrate(&far, &db, 8, true).await);
    }
    println!(
        "\n### behind the network emulator: {:.1} ms round trip, {:.0} Mbit/s (benches/common/netem.rs)\n",
        2.0 * net.one_way.as_secs_f64() * 1e3,
        net.bytes_per_sec * 8.0 / 1e6
    );
    table(&rows);
}

/// Prints the rows, and the migrator at concurrency 8 against the best plain sequential fetch.
fn table(rows: &[Row]) {
    let plain = rows
        .iter()
        .filter(|r| r.what.starts_with("plain sequential"))
        .map(|r| r.secs)
        .fold(f64::INFINITY, f64::min);
    let server_cpu = |r: &Row| r.server_cpu.map_or("?".to_string(), |c| format!("{c:.2}"));
    println!(
        "| run | seconds | MiB/s | tarballs/s | time vs best plain fetch | client CPU s | server CPU s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} | {:.1} | {:.0} | {:.2}x | {:.2} | {} |",
            r.what,
            r.secs,
            r.bytes as f64 / 1048576.0 / r.secs,
            r.tarballs as f64 / r.secs,
            r.secs / plain,
            r.client_cpu,
            server_cpu(r)
        );
    }
    let eight: Vec<&Row> = rows
        .iter()
        .filter(|r| r.what.contains("concurrency 8, fsync on"))
        .collect();
    let best8 = eight.iter().map(|r| r.secs).fold(f64::INFINITY, f64::min);
    println!(
        "\nmigrator at concurrency 8 (fsync on) vs plain sequential fetch: {:.2}x the time ({})",
        best8 / plain,
        if best8 < plain {
            "faster"
        } else {
            "NOT faster"
        }
    );
    // The least time the migrator's work can take here: the server's CPU on its own, or the CPU
    // both sides need spread over every core, whichever is more. Above the plain fetch's time,
    // no pipeline on this machine can win; the store is then not what bounds it.
    let cores = cpu::cores();
    let least = |f: fn(&Row) -> f64| eight.iter().map(|r| f(r)).fold(f64::INFINITY, f64::min);
    let client = least(|r| r.client_cpu);
    if let Some(server) = eight.iter().filter_map(|r| r.server_cpu).reduce(f64::min) {
        let floor = server.max((server + client) / cores);
        println!(
            "CPU per migration (least of the rounds): migrator {client:.2} s, server {server:.2} s; \
             on {cores} cores no schedule takes less than {floor:.2} s = {:.2}x the plain fetch",
            floor / plain
        );
    }
}

/// GETs on keep-alive connections, bodies read whole and dropped: one after another (the
/// baseline), or `parallel` at a time (what the server can serve at most, for reference).
async fn plain_fetch(
    url: &str,
    db: &str,
    jobs: &[(String, String)],
    round: usize,
    parallel: usize,
) -> Row {
    use futures::StreamExt;
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let base = reqwest::Url::parse(url).expect("url");
    let cpu = Cpu::now();
    let t = Instant::now();
    let sizes: Vec<u64> = futures::stream::iter(jobs)
        .map(|(id, att)| {
            let mut u = base.clone();
            u.path_segments_mut()
                .expect("path")
                .pop_if_empty()
                .extend([db, id, att]);
            let http = http.clone();
            async move {
                let body = http
                    .get(u)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .expect("GET attachment")
                    .bytes()
                    .await
                    .expect("body");
                body.len() as u64
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let secs = t.elapsed().as_secs_f64();
    let (client_cpu, server_cpu) = cpu.spent();
    let bytes = sizes.iter().sum();
    Row {
        what: if parallel == 1 {
            format!("plain sequential fetch #{}", round + 1)
        } else {
            format!("plain fetch, {parallel} in parallel (reference)")
        },
        secs,
        bytes,
        tarballs: jobs.len() as u64,
        client_cpu,
        server_cpu,
    }
}

async fn migrate(url: &str, db: &str, concurrency: usize, fsync: bool) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = format!("file://{}/store?fsync={fsync}", dir.path().display());
    let store = Store::open(&spec).await.expect("store");
    let source = CouchSource::parse(&format!("{url}/{db}")).expect("source");
    let mut opts = MigrateOptions::new(dir.path().join("state.json"), dir.path().join("map.jsonl"));
    opts.concurrency = concurrency;
    let cpu = Cpu::now();
    let t = Instant::now();
    let summary = Migration::new(source, store, opts)
        .expect("migration")
        .run()
        .await
        .expect("run");
    let secs = t.elapsed().as_secs_f64();
    let (client_cpu, server_cpu) = cpu.spent();
    assert!(summary.report.is_success(), "{:?}", summary.report.problems);
    Row {
        what: format!(
            "migrate, concurrency {concurrency}, fsync {}",
            if fsync { "on" } else { "off" }
        ),
        secs,
        bytes: summary.run.bytes,
        tarballs: summary.run.tarballs_ok(),
        client_cpu,
        server_cpu,
    }
}
