//! What a tarball server pays for its mapping (`tarvault serve --map`), held in memory (the mapping
//! parsed into a map at start-up, as every server did until 2026-12-05) or read into the SQLite
//! database beside it (`<mapping>.sqlite`, shared by every server process).
//!
//! `cargo bench --bench serve_mapping -- [--entries 1000000] [--lookups 200000]` writes a
//! mapping of `--entries` synthetic versions (random sha512s: no blob is stored, so every
//! request ends in the store's 404 after the URL is found; the same for both rows), then runs
//! each row in a fresh child process: opening the server, then `--lookups` `HEAD` requests of
//! random mapped URLs through its router, 16 in flight. Rows: the in-memory map, the database's
//! first opening (it reads the whole mapping), and an opening of the database made by the
//! previous row (what every other server process, and every restart, pays). Each row prints its
//! opening time, lookups per second and RSS. `TARVAULT_BENCH_DIR` says where the files go.

#[path = "common/rss.rs"]
mod rss;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use rand::{Rng, SeedableRng};
use tarvault::backend::memory::MemoryBackend;
use tarvault::server::Server;
use tarvault::Store;

fn arg(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    arg(args, name).map_or(default, |v| v.parse().expect(name))
}

/// Package `i`'s name (scoped for one in eight, as on npm) and its file name.
fn url(i: u64) -> (String, String) {
    let name = if i.is_multiple_of(8) {
        format!("@scope{}/package-{i}", i % 1000)
    } else {
        format!("package-{i}")
    };
    let base = name.rsplit('/').next().unwrap_or_default().to_string();
    (name, format!("{base}-1.{}.0.tgz", i % 50))
}

fn write_mapping(path: &Path, entries: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("mapping"));
    for i in 0..entries {
        let (name, file) = url(i);
        let digest: [u8; 64] = std::array::from_fn(|_| rng.gen());
        let sri = base64::engine::general_purpose::STANDARD.encode(digest);
        let line = serde_json::json!({
            "name": name, "version": format!("1.{}.0", i % 50), "file": file,
            "integrity": format!("sha512-{sri}"), "shasum": hex::encode(&digest[..20]),
            "size": 10_000 + i % 5000,
        });
        writeln!(out, "{line}").expect("write");
    }
    out.flush().expect("flush");
}

async fn child(args: &[String]) {
    let map = PathBuf::from(arg(args, "--map").expect("--map"));
    let entries = num(args, "--entries", 1_000_000);
    let lookups = num(args, "--lookups", 200_000);
    let design = arg(args, "--design").expect("--design");
    let store = Store::new(MemoryBackend::new());
    let rss0 = rss::rss_now_kib();
    let t = Instant::now();
    let server = if design == "memory" {
        let entries = tarvault::mapping::read_mapping(&map).expect("read");
        Server::with_mapping(store, entries).expect("server")
    } else {
        Server::with_mapping_file(store, &map).expect("server")
    };
    let open = t.elapsed().as_secs_f64();
    assert_eq!(server.mapped_urls() as u64, entries);
    let rss_open = rss::rss_now_kib();
    let router = server.router();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let paths: Arc<Vec<String>> = Arc::new(
        (0..lookups)
            .map(|_| {
                let (name, file) = url(rng.gen_range(0..entries));
                format!("/{name}/-/{file}")
            })
            .collect(),
    );
    let t = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|k| {
            let (router, paths) = (router.clone(), paths.clone());
            tokio::spawn(async move {
                use tower::ServiceExt;
                for p in paths.iter().skip(k).step_by(16) {
                    let req = axum::http::Request::head(p.as_str())
                        .body(axum::body::Body::empty())
                        .expect("request");
                    let r = router
                        .clone()
                        .oneshot(req)
                        .await
                        .unwrap_or_else(|e| match e {});
                    // The URL is mapped; its blob is not stored: the store's 404 after the lookup.
                    assert_eq!(r.status().as_u16(), 404);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let rate = lookups as f64 / t.elapsed().as_secs_f64();
    println!(
        "| {design} | {open:.2} s | {:.0} MiB | {rate:.0} | {:.0} MiB | {} |",
        (rss_open.saturating_sub(rss0)) as f64 / 1024.0,
        rss::rss_now_kib() as f64 / 1024.0,
        rss::peak_rss()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(child(&args));
        return;
    }
    if args.iter().any(|a| a == "--list") || args.iter().any(|a| a == "--test") {
        return; // `cargo test --benches` / `cargo bench -- --list`: nothing to run as a test.
    }
    let entries = num(&args, "--entries", 1_000_000);
    let lookups = num(&args, "--lookups", 200_000);
    let root =
        std::env::var_os("TARVAULT_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(root).expect("dir");
    let map = dir.path().join("map.jsonl");
    let t = Instant::now();
    write_mapping(&map, entries);
    let size = std::fs::metadata(&map).map_or(0, |m| m.len());
    println!(
        "mapping of {entries} versions, {:.0} MiB, written in {:.1} s; {lookups} lookups, 16 in flight",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    println!(
        "| mapping held | opening | RSS growth at opening | lookups/s | RSS after | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for design in [
        "memory",
        "database (first opening)",
        "database (opened again)",
    ] {
        let d = design.split(' ').next().unwrap_or_default().to_string();
        let exe = std::env::current_exe().expect("exe");
        let out = std::process::Command::new(exe)
            .args(["--child", "--design", &d, "--map"])
            .arg(&map)
            .args([
                "--entries",
                &entries.to_string(),
                "--lookups",
                &lookups.to_string(),
            ])
            .output()
            .expect("child");
        let text = String::from_utf8_lossy(&out.stdout).replacen(
            &format!("| {d} |"),
            &format!("| {design} |"),
            1,
        );
        print!("{text}");
        if !out.status.success() {
            println!(
                "{design}: failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let db = std::fs::metadata(dir.path().join("map.jsonl.sqlite")).map_or(0, |m| m.len());
    println!(
        "database beside the mapping: {:.0} MiB",
        db as f64 / 1048576.0
    );
}
