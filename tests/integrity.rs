//! Integrity strings: byte-compatible with npm's ssri on the real corpus, strict where it matters,
//! and never panicking on any input.

mod common;

use proptest::prelude::*;
use tarvault::integrity::{Comparison, MultiHasher};
use tarvault::{Algorithm, Digests, ErrorKind, Hash, Integrity};

use common::{corpus, corpus_bytes};

#[test]
fn corpus_integrity_is_byte_identical_to_the_registry() {
    for e in corpus() {
        let data = corpus_bytes(&e);
        assert_eq!(data.len() as u64, e.size, "{}", e.file);
        let mut h = MultiHasher::standard();
        // Odd chunking must not matter.
        for c in data.chunks(4093) {
            h.update(c);
        }
        let d: Digests = h.finalize().digests().expect("digests");
        assert_eq!(
            d.integrity().to_string(),
            e.registry_integrity,
            "{}",
            e.file
        );
        assert_eq!(d.shasum(), e.registry_shasum, "{}", e.file);
        // Parsing the registry's string and printing it again is the identity.
        let parsed = Integrity::parse(&e.registry_integrity).expect("parse");
        assert_eq!(parsed.to_string(), e.registry_integrity);
        assert!(parsed.matches(&d.integrity()));
        // The legacy shasum builds an integrity that matches the full digests on sha1.
        let legacy = Integrity::from_shasum(&e.registry_shasum).expect("shasum");
        assert_eq!(
            legacy.compare(&d.full_integrity()),
            Comparison::Match(Algorithm::Sha1)
        );
    }
}

/// One hash prints as its SRI token and parses back from it, by `FromStr` and by serde (a
/// service keeps a blob's blake3 or sha1 as a `Hash` in its own records); a string of several
/// hashes, or of an algorithm tarvault does not know, is not one hash.
#[test]
fn a_hash_parses_from_what_it_prints() {
    for e in corpus().into_iter().take(10) {
        let mut d = MultiHasher::standard();
        d.update(&corpus_bytes(&e));
        let d: Digests = d.finalize().digests().expect("digests");
        for algorithm in Digests::ALGORITHMS {
            let hash = d.hash(algorithm);
            let printed = hash.to_string();
            assert_eq!(printed.parse::<Hash>().expect("parse"), hash, "{printed}");
            let json = serde_json::to_string(&hash).expect("serialize");
            assert_eq!(json, format!("{printed:?}"));
            assert_eq!(
                serde_json::from_str::<Hash>(&json).expect("deserialize"),
                hash
            );
        }
        let sha512: Hash = e.registry_integrity.parse().expect("registry integrity");
        assert_eq!(sha512.to_string(), e.registry_integrity);
    }
    for (bad, says) in [
        (format!("{HELLO_SHA512} {HELLO_SHA1}"), "several"),
        ("sha3-abc".into(), "no supported algorithm"),
        (format!("{HELLO_SHA512} sha3-abc"), "several"),
        ("".into(), ""),
    ] {
        let err = bad.parse::<Hash>().expect_err(&bad);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
}

/// An algorithm parses from its SRI name alone; anything else is refused as an unknown algorithm
/// (not as an integrity string, which it was never asked to be), naming the ones known.
#[test]
fn an_algorithm_parses_from_its_name() {
    for algorithm in Algorithm::ALL {
        assert_eq!(
            algorithm.name().parse::<Algorithm>().expect("parse"),
            algorithm
        );
    }
    let long = "x".repeat(1000);
    for bad in ["nope", "SHA512", "sha512-", "", long.as_str()] {
        let err = bad.parse::<Algorithm>().expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        let says = err.to_string();
        assert!(says.contains("unknown hash algorithm"), "{says}");
        assert!(!says.contains("integrity"), "{says}");
        assert!(
            says.contains("md5, sha1, sha256, blake3, sha384, sha512"),
            "{says}"
        );
        assert!(
            says.len() < 400,
            "the input is quoted clipped: {} bytes",
            says.len()
        );
    }
}

const HELLO_SHA512: &str =
    "sha512-m3HSJL1i83hdltRq0+o9czGb+8KJDKra4t/3JRlnPKcjI8PZm6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw==";
const HELLO_SHA1: &str = "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=";

#[test]
fn ssri_compatible_parsing() {
    // Multi-hash, whitespace around and between, options kept and printed back.
    let i =
        Integrity::parse(&format!("  {HELLO_SHA512}?foo?bar \t {HELLO_SHA1}\n")).expect("parse");
    assert_eq!(i.hashes().len(), 2);
    assert_eq!(i.strongest(), Algorithm::Sha512);
    assert_eq!(
        i.to_string(),
        format!("{HELLO_SHA512}?foo?bar {HELLO_SHA1}")
    );
    assert_eq!(
        i.get(Algorithm::Sha512).and_then(|h| h.options()),
        Some("foo?bar")
    );
    // Options are ignored when matching.
    assert!(i.matches(&Integrity::parse(HELLO_SHA512).expect("plain")));
    // Unknown algorithms are kept (and printed) but never used for matching.
    let u =
        Integrity::parse(&format!("{HELLO_SHA1} sha3-abc whirlpool-xyz?o")).expect("unknown kept");
    assert_eq!(u.unknown().len(), 2);
    assert_eq!(
        u.to_string(),
        format!("{HELLO_SHA1} sha3-abc whirlpool-xyz?o")
    );
    assert_eq!(u.compare(&i), Comparison::Match(Algorithm::Sha1));
    // Printed as ssri prints (and npm writes into a lockfile): grouped by algorithm, in the order
    // each algorithm first appears; unknown entries last.
    let other_sha1 = format!("sha1-{}=", "A".repeat(27));
    let mixed = Integrity::parse(&format!(
        "{HELLO_SHA1} sha3-abc {HELLO_SHA512}?x {other_sha1} {HELLO_SHA512}"
    ))
    .expect("parse");
    assert_eq!(
        mixed.to_string(),
        format!("{HELLO_SHA1} {other_sha1} {HELLO_SHA512}?x {HELLO_SHA512} sha3-abc")
    );
    // Held so too, so that what prints re-parses to the same value (the fuzz target's round
    // trip), and a hash pushed goes after the last of its algorithm.
    assert_eq!(mixed.hashes()[1].to_string(), other_sha1);
    assert_eq!(mixed.hashes()[2].to_string(), format!("{HELLO_SHA512}?x"));
    assert_eq!(
        Integrity::parse(&mixed.to_string()).expect("re-parse"),
        mixed
    );
    let mut pushed = Integrity::parse(&format!("{HELLO_SHA1} {HELLO_SHA512}")).expect("parse");
    pushed.push(Integrity::parse(&other_sha1).expect("parse").hashes()[0].clone());
    assert_eq!(
        pushed.to_string(),
        format!("{HELLO_SHA1} {other_sha1} {HELLO_SHA512}")
    );
    assert_eq!(
        Integrity::parse(&pushed.to_string()).expect("re-parse"),
        pushed
    );
    // Whitespace is what ssri trims and splits on, JavaScript's `\s`: vertical tab, no-break and
    // other Unicode spaces, line and paragraph separators, BOM. Not U+0085 or U+200B.
    for space in [
        "\u{b}", "\u{a0}", "\u{2007}", "\u{2028}", "\u{3000}", "\u{feff}",
    ] {
        let spaced = format!("{space}{HELLO_SHA512}{space}{HELLO_SHA1}{space}");
        let i = Integrity::parse(&spaced).unwrap_or_else(|e| panic!("{spaced:?}: {e}"));
        assert_eq!(
            i.to_string(),
            format!("{HELLO_SHA512} {HELLO_SHA1}"),
            "{spaced:?}"
        );
    }
    for not_space in ["\u{85}", "\u{200b}"] {
        let joined = format!("{HELLO_SHA512}{not_space}{HELLO_SHA1}");
        assert!(Integrity::parse(&joined).is_err(), "{joined:?}");
    }
    // blake3 is ours.
    let b =
        Integrity::parse("blake3-6wDqlL0M6MYULCAuKYWvFpSo0UfsoRJjU8T2UYLRJfU=").expect("blake3");
    assert_eq!(b.strongest(), Algorithm::Blake3);
}

#[test]
fn matching_uses_the_strongest_shared_algorithm() {
    let full = Integrity::parse(&format!("{HELLO_SHA512} {HELLO_SHA1}")).expect("parse");
    let sha1_only = Integrity::parse(HELLO_SHA1).expect("parse");
    // The intersection is used in both directions (ssri-rs gets this asymmetric).
    assert_eq!(sha1_only.compare(&full), Comparison::Match(Algorithm::Sha1));
    assert_eq!(full.compare(&sha1_only), Comparison::Match(Algorithm::Sha1));
    // A wrong sha512 with a right sha1 is a mismatch: only the strongest counts.
    let wrong512 =
        Integrity::parse(&format!("sha512-{} {HELLO_SHA1}", "A".repeat(86) + "==")).expect("parse");
    assert_eq!(
        wrong512.compare(&full),
        Comparison::Mismatch(Algorithm::Sha512)
    );
    // Nothing shared: no verdict.
    let s256 =
        Integrity::parse("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").expect("parse");
    assert_eq!(s256.compare(&sha1_only), Comparison::NoCommonAlgorithm);
    // Several digests of one algorithm: any match counts.
    let two =
        Integrity::parse(&format!("sha1-{} {HELLO_SHA1}", "A".repeat(27) + "=")).expect("parse");
    assert!(two.matches(&full));
}

#[test]
fn malformed_integrity_is_a_typed_error() {
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        ("sha512", "form"),
        ("sha512-", "64 bytes"),
        ("SHA512-m3HSJL1i83hdltRq0+o9czGb+8KJDKra4t/3JRlnPKcjI8PZm6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw==", "algorithm name"),
        // Unpadded, URL-safe, wrong length, non-canonical trailing bits.
        ("sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00", "base64"),
        ("sha512-m3HSJL1i83hdltRq0-o9czGb-8KJDKra4t_3JRlnPKcjI8PZm6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw==", "base64"),
        ("sha512-qvTGHdzF6KLavt4PO0gs2a6pQ00=", "64 bytes"),
        ("sha1-qvTGHdzF6KLavt4PO0gs2a6pQ01=", "base64"),
        ("sha3-abc md4-xyz", "no supported algorithm"),
        ("sha1-!!!!", "base64"),
        ("-abc", "algorithm name"),
        ("sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=?\u{7f}", "options"),
    ];
    for (input, why) in cases {
        let err = Integrity::parse(input).expect_err(input);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{input}");
        assert!(err.to_string().contains(why), "{input:?}: {err}");
    }
    // Addresses: 40 hex is a shasum, other hex lengths are not.
    assert!(Integrity::parse_address("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d").is_ok());
    assert!(Integrity::parse_address("AAF4C61DDCC5E8A2DABEDE0F3B482CD9AEA9434D").is_ok());
    assert!(Integrity::parse_address("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434").is_err());
    assert!(Integrity::from_shasum("zz").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics(s in "\\PC{0,200}") {
        let _ = Integrity::parse(&s);
        let _ = Integrity::parse_address(&s);
    }

    #[test]
    fn parse_never_panics_on_near_misses(
        alg in prop::sample::select(vec!["sha1", "sha256", "sha384", "sha512", "blake3", "md5", "x"]),
        body in "[A-Za-z0-9+/=?_-]{0,100}",
        extra in "[ \t]{0,3}",
    ) {
        let _ = Integrity::parse(&format!("{extra}{alg}-{body}{extra}"));
    }

    #[test]
    fn format_parse_round_trip(data in prop::collection::vec(any::<u8>(), 0..2048), opt in "[a-z0-9]{0,8}") {
        let mut h = MultiHasher::new(&Algorithm::ALL);
        h.update(&data);
        let set = h.finalize();
        let i = set.integrity().expect("hashes");
        let text = i.to_string();
        let back = Integrity::parse(&text).expect("own output parses");
        prop_assert_eq!(&back, &i);
        prop_assert_eq!(back.to_string(), text);
        prop_assert!(back.matches(&i));
        // With options appended to the strongest, still matches.
        let with_opt = Integrity::parse(&format!("{}?{opt}", set.get(Algorithm::Sha512).expect("sha512"))).expect("opts");
        prop_assert!(with_opt.matches(&i));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The store's sha512 and sha384 (ring's) are byte-identical to the `sha2` crate's on any
    /// input, however it is cut into pieces.
    #[test]
    fn sha512_and_sha384_match_the_sha2_crate(
        data in prop::collection::vec(any::<u8>(), 0..5000),
        cut in 1usize..700,
    ) {
        use sha2::Digest as _;
        let mut h = MultiHasher::new(&[Algorithm::Sha512, Algorithm::Sha384]);
        for piece in data.chunks(cut) {
            h.update(piece);
        }
        let set = h.finalize();
        let digest = |a: Algorithm| set.get(a).map(|h| h.digest().to_vec()).unwrap_or_default();
        prop_assert_eq!(digest(Algorithm::Sha512), sha2::Sha512::digest(&data).to_vec());
        prop_assert_eq!(digest(Algorithm::Sha384), sha2::Sha384::digest(&data).to_vec());
    }
}

/// An address with several hashes names what its strongest algorithm names, for reads, `contains`
/// and deletes as for a put that expects it: a blake3 naming no stored blob does not fall back to
/// a sha1 beside it, and an address whose strongest hash is one the store cannot look up (sha256)
/// is refused rather than resolved by a weaker one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_hash_address_is_looked_up_by_its_strongest_hash_only() {
    use tarvault::{PutOptions, Store};
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = Store::open_fs(dir.path().join("s")).expect("open");
    for store in [Store::memory(), fs] {
        let stored = common::noise(5000, 1);
        let other = common::noise(5000, 2);
        let put = store
            .put_bytes(stored.clone(), &PutOptions::default())
            .await
            .expect("put");
        let other = {
            let mut h = MultiHasher::standard();
            h.update(&other);
            h.finalize().digests().expect("digests")
        };
        let sha1 = put.digests.hash(Algorithm::Sha1);
        let blake3 = put.digests.hash(Algorithm::Blake3);
        let mixed = |strong: tarvault::integrity::Hash, weak: &tarvault::integrity::Hash| {
            Integrity::parse(&format!("{strong} {weak}")).expect("address")
        };
        for address in [
            mixed(other.hash(Algorithm::Blake3), &sha1),
            mixed(other.hash(Algorithm::Sha512), &blake3),
        ] {
            let put = store
                .put_bytes(stored.clone(), &PutOptions::expect(address.clone()))
                .await
                .expect_err("the strongest hash decides");
            assert_eq!(put.kind(), ErrorKind::IntegrityMismatch, "{address}");
            assert!(
                !store.contains(&address).await.expect("contains"),
                "{address}"
            );
            let got = store.get(&address).await.map(|_| ());
            assert_eq!(
                got.map_err(|e| e.kind()),
                Err(ErrorKind::NotFound),
                "{address}"
            );
            assert!(!store.delete(&address).await.expect("delete"), "{address}");
        }
        // The strongest hash names the stored blob: found, whatever weaker hash is beside it.
        let right = mixed(blake3.clone(), &other.hash(Algorithm::Sha1));
        assert_eq!(
            &store
                .get(&right)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("read")[..],
            &stored[..]
        );
        let sha256 = Integrity::parse(&format!(
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= {sha1}"
        ))
        .expect("address");
        let err = store
            .contains(&sha256)
            .await
            .expect_err("sha256 cannot be looked up");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(store
            .contains(&Integrity::from(sha1))
            .await
            .expect("contains"));
    }
}

/// The streams of a batch, cut into pieces of `piece` bytes (0: one piece).
fn batch_inputs(
    blobs: &[Vec<u8>],
    piece: usize,
) -> Vec<(
    futures::stream::Iter<std::vec::IntoIter<std::io::Result<bytes::Bytes>>>,
    tarvault::PutOptions,
)> {
    blobs
        .iter()
        .map(|b| {
            let chunks: Vec<std::io::Result<bytes::Bytes>> = if piece == 0 || b.is_empty() {
                vec![Ok(bytes::Bytes::from(b.clone()))]
            } else {
                b.chunks(piece)
                    .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                    .collect()
            };
            (
                futures::stream::iter(chunks),
                tarvault::PutOptions::default(),
            )
        })
        .collect()
}

/// A batch hashes the sha512 of its small blobs together (eight at a time where the CPU has
/// AVX-512): every blob of the corpus and of lengths around the block, padding and hand-over
/// boundaries, whole or in odd pieces, gets the same integrity as the registry's and as one
/// `MultiHasher` pass, and a blob expecting the wrong digest is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_hashes_like_npm_whatever_the_mix_of_sizes() {
    use sha2::Digest as _;
    let mut blobs: Vec<Vec<u8>> = corpus().iter().map(|e| corpus_bytes(e).to_vec()).collect();
    let registry: Vec<String> = corpus()
        .iter()
        .map(|e| e.registry_integrity.clone())
        .collect();
    let lengths = [0usize, 1, 111, 112, 127, 128, 129, 239, 240, 256, 20 << 10]
        .into_iter()
        .chain([
            (256 << 10) - 1,
            256 << 10,
            (256 << 10) + 1,
            1 << 20,
            3 << 20,
        ]);
    for (i, len) in lengths.enumerate() {
        blobs.push((0..len).map(|j| (j * 31 + i * 7 + j / 251) as u8).collect());
    }
    for piece in [0, 4093] {
        let store = tarvault::Store::new(tarvault::backend::memory::MemoryBackend::new());
        let results = store.put_batch(batch_inputs(&blobs, piece)).await;
        assert_eq!(results.len(), blobs.len());
        for (i, (blob, r)) in blobs.iter().zip(results).enumerate() {
            let out = r.unwrap_or_else(|e| panic!("blob {i}: {e}"));
            let mut h = MultiHasher::standard();
            h.update(blob);
            let want = h.finalize().digests().expect("digests");
            assert_eq!(
                out.digests,
                want,
                "blob {i}, {} bytes, pieces of {piece}",
                blob.len()
            );
            assert_eq!(
                out.digests.sha512_hex(),
                hex::encode(sha2::Sha512::digest(blob))
            );
            if let Some(reg) = registry.get(i) {
                assert_eq!(out.digests.integrity().to_string(), *reg, "corpus blob {i}");
            }
        }
    }
    // Wrong expectations, in a batch with good ones: only those are refused.
    let store = tarvault::Store::new(tarvault::backend::memory::MemoryBackend::new());
    let mut inputs = batch_inputs(&blobs[..20], 0);
    for (k, (_, options)) in inputs.iter_mut().enumerate() {
        let other = &blobs[(k + 1) % 20];
        let mut h = MultiHasher::standard();
        h.update(if k % 2 == 0 { other } else { &blobs[k] });
        let digests = h.finalize().digests().expect("digests");
        *options = tarvault::PutOptions::expect(digests.integrity());
    }
    for (k, r) in store.put_batch(inputs).await.into_iter().enumerate() {
        match r {
            Ok(_) => assert!(k % 2 == 1, "blob {k} was stored under a wrong expectation"),
            Err(e) => {
                assert!(k % 2 == 0, "blob {k}: {e}");
                assert_eq!(e.kind(), ErrorKind::IntegrityMismatch, "{e}");
            }
        }
    }
}
