//! Composed-store benchmarks, printed as a table (same-run comparisons only: the machine is shared).
//!
//! - small-blob put throughput (the corpus tarballs): one fs store, against `Replicated` over three
//!   fs stores (quorum 2, and quorum 3);
//! - verified reads of the same blobs: one fs store, `Replicated` (first replica answers), a
//!   `Cached` tier (memory over fs) on a miss and on a hit.
//!
//! Run: `cargo bench --bench compose` (`TARVAULT_CORPUS` for the corpus, `TARVAULT_BENCH_DIR` for
//! where the stores go).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tarvault::backend::compose::{Cached, CachedOptions, Replicated, ReplicatedOptions};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::memory::MemoryBackend;
use tarvault::backend::Backend;
use tarvault::{Integrity, PutOptions, Store};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work =
        tempfile::tempdir_in(std::env::var("TARVAULT_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("bench dir");
    rt.block_on(run(work.path()));
}

fn corpus() -> Vec<Bytes> {
    let dir = PathBuf::from(
        std::env::var("TARVAULT_CORPUS").unwrap_or_else(|_| "../shared/corpus".into()),
    );
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("tarballs")).expect("corpus dir") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "tgz") {
            out.push(Bytes::from(std::fs::read(&p).expect("tarball")));
        }
    }
    out.sort();
    out
}

fn fs(dir: &Path, name: &str, fsync: bool) -> Arc<dyn Backend> {
    Arc::new(
        FsBackend::open(
            dir.join(name),
            FsOptions {
                fsync,
                ..Default::default()
            },
        )
        .expect("fs"),
    )
}

struct Row {
    what: String,
    blobs: usize,
    bytes: usize,
    secs: f64,
}

async fn put_all(store: &Store, blobs: &[Bytes]) -> f64 {
    // Flush what earlier rows left dirty, so an fsync-on row does not pay for it.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let t = Instant::now();
    for b in blobs {
        store
            .put_bytes(b.clone(), &PutOptions::default())
            .await
            .expect("put");
    }
    t.elapsed().as_secs_f64()
}

async fn get_all(store: &Store, addrs: &[Integrity]) -> f64 {
    let t = Instant::now();
    for a in addrs {
        store
            .get(a)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("verified");
    }
    t.elapsed().as_secs_f64()
}

async fn run(dir: &Path) {
    let blobs = corpus();
    let bytes: usize = blobs.iter().map(Bytes::len).sum();
    let n = blobs.len();
    let mut rows = Vec::new();
    let mut row = |what: &str, secs: f64| {
        rows.push(Row {
            what: what.into(),
            blobs: n,
            bytes,
            secs,
        })
    };
    for fsync in [false, true] {
        let tag = if fsync { "fsync on" } else { "fsync off" };
        let single = Store::from_arc(fs(dir, &format!("single-{fsync}"), fsync));
        row(
            &format!("put, one fs store ({tag})"),
            put_all(&single, &blobs).await,
        );
        for quorum in [2, 3] {
            let reps = (0..3)
                .map(|i| fs(dir, &format!("rep{quorum}-{i}-{fsync}"), fsync))
                .collect();
            let rep = Store::new(
                Replicated::new(
                    reps,
                    ReplicatedOptions {
                        write_quorum: Some(quorum),
                        ..ReplicatedOptions::default()
                    },
                )
                .expect("replicated"),
            );
            row(
                &format!("put, replicated x3 quorum {quorum} ({tag})"),
                put_all(&rep, &blobs).await,
            );
        }
    }
    // Reads (fsync does not matter).
    let single_b = fs(dir, "single-false", false);
    let single = Store::from_arc(single_b.clone());
    let addrs: Vec<Integrity> = {
        let mem = Store::memory();
        let mut v = Vec::new();
        for b in &blobs {
            v.push(
                mem.put_bytes(b.clone(), &PutOptions::default())
                    .await
                    .expect("hash")
                    .digests
                    .integrity(),
            );
        }
        v
    };
    row("get, one fs store", get_all(&single, &addrs).await);
    let rep = Store::new(
        Replicated::new(
            (0..3)
                .map(|i| fs(dir, &format!("rep2-{i}-false"), false))
                .collect(),
            ReplicatedOptions::default(),
        )
        .expect("replicated"),
    );
    row("get, replicated x3", get_all(&rep, &addrs).await);
    let cached = Store::new(
        Cached::new(
            Arc::new(MemoryBackend::new()),
            single_b.clone(),
            CachedOptions::default(),
        )
        .await
        .expect("cached"),
    );
    row(
        "get, cached (memory over fs), miss",
        get_all(&cached, &addrs).await,
    );
    row(
        "get, cached (memory over fs), hit",
        get_all(&cached, &addrs).await,
    );

    println!("| operation | blobs | MiB | seconds | blobs/s | MiB/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let mib = r.bytes as f64 / (1024.0 * 1024.0);
        println!(
            "| {} | {} | {:.1} | {:.3} | {:.0} | {:.1} |",
            r.what,
            r.blobs,
            mib,
            r.secs,
            r.blobs as f64 / r.secs,
            mib / r.secs
        );
    }
}
