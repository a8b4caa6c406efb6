//! The tarball inspector must never panic or hang on any input, whatever the chunking; and feeding
//! the same bytes in different chunk sizes must give the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tarvault::tarball::{Inspector, Policy};

fn run(data: &[u8], chunk: usize) -> Result<tarvault::tarball::Report, String> {
    // The ratio rule is checked at zlib's output boundaries, which depend on chunking; keep it out
    // of the equivalence check (the size cap still bounds the work per input).
    let policy = Policy {
        max_unpacked_size: 64 << 20,
        max_compression_ratio: u64::MAX,
        ..Policy::default()
    };
    let mut inspector = Inspector::new(policy);
    for c in data.chunks(chunk.max(1)) {
        inspector
            .update(c)
            .map_err(|e| e.kind().as_str().to_string())?;
    }
    inspector
        .finish()
        .map_err(|e| e.kind().as_str().to_string())
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk size, so odd boundaries get explored too.
    let (chunk, body) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c) + 1, rest),
        None => (1, data),
    };
    let whole = run(body, usize::MAX);
    let chunked = run(body, chunk);
    if let (Ok(a), Ok(b)) = (&whole, &chunked) {
        assert_eq!(a, b, "chunking changed the report");
    }
    assert_eq!(
        whole.is_ok(),
        chunked.is_ok(),
        "chunking changed the verdict"
    );
});
