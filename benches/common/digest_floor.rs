//! What verification costs a remote backend's transfer, measured on the spot: the rate at which one
//! thread computes the digests a put or get must compute, and the ratio to a raw transfer that
//! this cost allows when it cannot overlap the transfer (as on a small machine whose other core is
//! busy running the server).
#![allow(dead_code)]

use std::time::Instant;

use tarvault::integrity::{Algorithm, MultiHasher};

/// MB/s of computing `algorithms` over `blobs` (each blob on its own, as a put would) on one thread;
/// the best of three passes.
pub fn digest_rate(blobs: &[&[u8]], algorithms: &[Algorithm]) -> f64 {
    let bytes: usize = blobs.iter().map(|b| b.len()).sum();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for b in blobs {
            let mut h = MultiHasher::new(algorithms);
            h.update(b);
            std::hint::black_box(h.finalize());
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    bytes as f64 / best / 1e6
}

/// The tarvault/raw ratio left when digesting at `digest` MB/s adds to a raw transfer at `raw` MB/s.
pub fn serial_ceiling(raw: f64, digest: f64) -> f64 {
    1.0 / (1.0 + raw / digest)
}
