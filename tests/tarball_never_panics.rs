//! The inspector must return (Ok or Err), never panic, on any input.

mod common;

use common::corpus_dir;

use std::io::Read;
use std::sync::OnceLock;

use proptest::prelude::*;
use tarvault::tarball::{Inspector, Policy};

/// The smallest corpus tarballs: (compressed, decompressed tar).
fn samples() -> &'static [(Vec<u8>, Vec<u8>)] {
    static SAMPLES: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let dir = corpus_dir().join("tarballs");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
        files
            .iter()
            .take(4)
            .map(|p| {
                let gz = std::fs::read(p).unwrap();
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut tar)
                    .unwrap();
                (gz, tar)
            })
            .collect()
    })
}

fn run(bytes: &[u8], chunk: usize) {
    let policy = Policy {
        require_package_json: false,
        ..Policy::default()
    };
    let mut inspector = Inspector::new(policy);
    for c in bytes.chunks(chunk.max(1)) {
        if inspector.update(c).is_err() {
            break;
        }
    }
    let _ = inspector.finish();
}

fn mutate(mut data: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    if data.is_empty() {
        return data;
    }
    for &(pos, byte) in edits {
        let n = data.len();
        data[pos % n] = byte;
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..600) {
        run(&bytes, chunk);
    }

    #[test]
    fn gzipped_arbitrary_tar(bytes in proptest::collection::vec(any::<u8>(), 0..8192), chunk in 1usize..4096) {
        run(&common::tarbuild::gzip(&bytes), chunk);
    }

    #[test]
    fn mutated_corpus_compressed(which in 0usize..4, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let (gz, _) = &samples()[which % samples().len()];
        let mut data = mutate(gz.clone(), &edits);
        if cut % 4 == 0 {
            data.truncate(cut % (data.len() + 1));
        }
        run(&data, 4096);
    }

    #[test]
    fn mutated_corpus_tar(which in 0usize..4, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), chunk in 1usize..8192) {
        let (_, tar) = &samples()[which % samples().len()];
        // Aim most edits at header blocks, where the parser's logic lives.
        let headers: Vec<(usize, u8)> = edits
            .iter()
            .map(|&(pos, b)| if pos % 2 == 0 { ((pos / 2 % (tar.len() / 512 + 1)) * 512 + pos % 512, b) } else { (pos, b) })
            .collect();
        run(&common::tarbuild::gzip(&mutate(tar.clone(), &headers)), chunk);
    }

    /// Mutations inside headers with the checksum fixed up afterwards, so the
    /// parser gets past the checksum and into the field logic.
    #[test]
    fn mutated_headers_with_valid_checksums(which in 0usize..4, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), chunk in 1usize..8192) {
        let (_, tar) = &samples()[which % samples().len()];
        let headers: Vec<usize> = (0..tar.len() / 512)
            .filter(|i| tar.get(i * 512 + 257..i * 512 + 262) == Some(&b"ustar"[..]))
            .collect();
        let mut data = tar.clone();
        for &(pos, byte) in &edits {
            let block = headers[pos % headers.len()];
            data[block * 512 + (pos / 7) % 512] = byte;
            let mut h: [u8; 512] = data[block * 512..block * 512 + 512].try_into().unwrap();
            common::tarbuild::set_checksum(&mut h);
            data[block * 512..block * 512 + 512].copy_from_slice(&h);
        }
        run(&common::tarbuild::gzip(&data), chunk);
    }
}
