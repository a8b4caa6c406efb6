//! What the realistic-network benchmarks share (`benches/network.rs` for S3, `benches/manta.rs`
//! for Manta): a row of raw and tarvault samples, the digest floor a verified store must compute,
//! timing with the client's CPU, and the table that compares the two sides.

use bytes::Bytes;
use tarvault::integrity::{Algorithm, MultiHasher};
use tarvault::Integrity;

use crate::{common, cpu};

/// Raw and tarvault samples of one case.
pub struct Row {
    pub case: String,
    pub bytes: usize,
    pub raw: Vec<cpu::Sample>,
    pub tv: Vec<cpu::Sample>,
    /// CPU seconds of the digests a verified store must compute over these bytes (one thread).
    pub digests: f64,
    pub target: Option<f64>,
}

impl Row {
    pub fn new(case: impl Into<String>, bytes: usize, digests: f64, target: Option<f64>) -> Row {
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
pub fn digest_secs(blobs: &[Bytes], algorithms: &[Algorithm]) -> f64 {
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

pub async fn timed<F, T>(f: F) -> (cpu::Sample, T)
where
    F: std::future::Future<Output = T>,
{
    let span = cpu::Span::start();
    let out = f.await;
    (span.stop(), out)
}

/// [`timed`], after writing every dirty page of the machine to disk. The servers here keep
/// their objects on this machine's one disk: a 256 MiB put leaves as much (twice that for a
/// staged put: its staging object and the copy) to be written back, and without this the next
/// row's operation pays for the previous one's writeback, whichever side it measures.
pub async fn timed_settled<F, T>(f: F) -> (cpu::Sample, T)
where
    F: std::future::Future<Output = T>,
{
    // SAFETY: sync(2) takes no arguments and cannot fail.
    tokio::task::spawn_blocking(|| unsafe { libc::sync() })
        .await
        .expect("sync");
    timed(f).await
}

pub fn addr_of(b: &[u8]) -> Integrity {
    common::addr(&common::sha512_sri(b))
}

/// The bytes as a stream of 256 KiB chunks (as a file or an HTTP body arrives).
pub fn chunks(b: &Bytes) -> futures::stream::Iter<std::vec::IntoIter<std::io::Result<Bytes>>> {
    let v: Vec<std::io::Result<Bytes>> = b.chunks(256 * 1024).map(|c| Ok(b.slice_ref(c))).collect();
    futures::stream::iter(v)
}

/// CPU seconds (one thread) of the digests a verified store computes for one small blob and one
/// large one: put (`put_algs`) and get (sha512).
pub struct Floors {
    pub small_put: f64,
    pub small_get: f64,
    pub large_put: f64,
    pub large_get: f64,
}

impl Floors {
    /// Measures the floors over blobs of `small` and `large` bytes (64 small ones, averaged).
    pub fn measure(small: usize, large: usize, put_algs: &[Algorithm]) -> Floors {
        let smalls: Vec<Bytes> = (0..64)
            .map(|i| Bytes::from(common::noise(small, i)))
            .collect();
        let small_put = digest_secs(&smalls, put_algs) / 64.0;
        let small_get = digest_secs(&smalls, &[Algorithm::Sha512]) / 64.0;
        drop(smalls);
        let big = [Bytes::from(common::noise(large, 1))];
        Floors {
            small_put,
            small_get,
            large_put: digest_secs(&big, put_algs),
            large_get: digest_secs(&big, &[Algorithm::Sha512]),
        }
    }
}

/// The small puts and gets of `small` bytes at concurrency 1, 16 and 64 (how many objects each),
/// with the ≥ 0.9x target at 16: the first rows of both benchmarks, in this order.
pub const SMALL_CASES: [(usize, usize); 3] = [(1, 200), (16, 1000), (64, 1000)];

/// Empty rows for [`SMALL_CASES`], a put and a get each.
pub fn small_rows(small: usize, floors: &Floors) -> Vec<Row> {
    let kib = small / 1024;
    let mut rows = Vec::new();
    for (c, n) in SMALL_CASES {
        let target = (c == 16).then_some(0.9);
        rows.push(Row::new(
            format!("put {kib} KiB x{n}, c={c}"),
            n * small,
            floors.small_put * n as f64,
            target,
        ));
        rows.push(Row::new(
            format!("get {kib} KiB x{n}, c={c}"),
            n * small,
            floors.small_get * n as f64,
            target,
        ));
    }
    rows
}

/// Prints the rows, the raw side named `raw` ("raw object_store", "plain HTTP"), then `footnote`,
/// then what the machine as a whole spent on each row (see [`cpu::cells`]).
pub fn print_rows(rows: &[Row], raw: &str, footnote: &str) {
    println!("| case | {raw} MB/s | tarvault MB/s | tarvault/raw | target | client CPU s/GB: raw | raw + digests | tarvault | tarvault / (raw + digests) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (raw_s, tv) = (cpu::medians(&r.raw), cpu::medians(&r.tv));
        let gb = r.bytes as f64 / 1e9;
        let (raw_rate, tv_rate) = (
            r.bytes as f64 / raw_s.secs / 1e6,
            r.bytes as f64 / tv.secs / 1e6,
        );
        let ratio = tv_rate / raw_rate;
        let target = match r.target {
            Some(t) if ratio >= t => format!("≥ {t} ✓"),
            Some(t) => format!("≥ {t} ✗"),
            None => "-".into(),
        };
        let floor = (raw_s.own + r.digests) / gb;
        println!(
            "| {} | {raw_rate:.1} | {tv_rate:.1} | {ratio:.2}x | {target} | {:.2} | {floor:.2} | {:.2} | {:.2}x |",
            r.case,
            raw_s.own / gb,
            tv.own / gb,
            tv.own / gb / floor
        );
    }
    println!("{footnote}");
    println!();
    // What the whole machine spent (client, proxy, server, kernel): where the raw run keeps both
    // cores busy, tarvault can go only as fast as its CPU per byte allows.
    println!("| case | tarvault/raw | {} |", cpu::HEADER);
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let (raw_s, tv) = (cpu::medians(&r.raw), cpu::medians(&r.tv));
        println!(
            "| {} | {:.2}x | {} |",
            r.case,
            raw_s.secs / tv.secs,
            cpu::cells(raw_s, tv)
        );
    }
}
