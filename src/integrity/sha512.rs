//! The sha512 (and sha384) the store hashes with, behind one type so nothing else names the
//! implementation.
//!
//! sha512 is the costliest digest of every put and verified get, and its single-core rate is the
//! ceiling of a large put (sha1, blake3 and the write hide behind it on another core). ring's
//! assembly runs it faster than the `sha2` crate's AVX2 backend: on this project's machines
//! (AVX-512, no SHA-512 instructions) 0.70 against 0.645 GB/s over 1 GiB on one core, about 8%
//! (docs/ingest.md). ring is already built for the default features' TLS, and it needs only a C
//! compiler, no cmake. The digests are the same bytes (`tests` below, and `tests/integrity.rs`
//! against the corpus's registry integrity strings).

/// A running sha512 or sha384.
#[derive(Clone)]
pub(super) struct Sha2Wide(ring::digest::Context);

impl Sha2Wide {
    /// A sha512 hasher.
    pub(super) fn sha512() -> Self {
        Sha2Wide(ring::digest::Context::new(&ring::digest::SHA512))
    }

    /// A sha384 hasher.
    pub(super) fn sha384() -> Self {
        Sha2Wide(ring::digest::Context::new(&ring::digest::SHA384))
    }

    /// Feeds bytes.
    pub(super) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest (64 bytes for sha512, 48 for sha384).
    pub(super) fn finalize(self) -> Vec<u8> {
        self.0.finish().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::Sha2Wide;
    use rand::{Rng, SeedableRng};
    use sha2::Digest as _;

    /// Same digests as the `sha2` crate for every length around the 128-byte block boundaries and
    /// for random inputs fed in random pieces.
    #[test]
    fn same_digests_as_sha2() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        let mut data = vec![0u8; 1 << 20];
        rng.fill(&mut data[..]);
        let mut lengths: Vec<usize> = (0..=300).collect();
        lengths.extend((0..64).map(|_| rng.gen_range(0..data.len())));
        lengths.push(data.len());
        for len in lengths {
            let input = &data[..len];
            let mut h512 = Sha2Wide::sha512();
            let mut h384 = Sha2Wide::sha384();
            let mut rest = input;
            while !rest.is_empty() {
                let k = rng.gen_range(1..=rest.len().min(300_000));
                h512.update(&rest[..k]);
                h384.update(&rest[..k]);
                rest = &rest[k..];
            }
            assert_eq!(
                h512.finalize(),
                sha2::Sha512::digest(input).to_vec(),
                "{len}"
            );
            assert_eq!(
                h384.finalize(),
                sha2::Sha384::digest(input).to_vec(),
                "{len}"
            );
        }
    }
}
