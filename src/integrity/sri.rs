//! Subresource Integrity strings, parsed and printed exactly as npm's `ssri` does.
//!
//! Where ssri is lenient in ways that hide mistakes we are strict (digests must be canonical, padded
//! standard base64 of the right length for their algorithm), and where ssri-rs is too strict to read
//! real-world strings we follow npm: unknown algorithms are kept (and printed back) but never used for
//! matching, `?options` are kept but ignored when matching, and surrounding whitespace is allowed.

use std::fmt;
use std::str::FromStr;

use base64::Engine;

use super::Algorithm;
use crate::{Error, Result};

/// One digest: an algorithm and its raw bytes, plus any `?options` that followed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hash {
    algorithm: Algorithm,
    digest: Box<[u8]>,
    options: Option<Box<str>>,
}

impl Hash {
    /// A hash from raw digest bytes. Fails if the length is wrong for the algorithm.
    pub fn new(algorithm: Algorithm, digest: &[u8]) -> Result<Hash> {
        if digest.len() != algorithm.digest_len() {
            return Err(Error::invalid_integrity(
                &hex::encode(digest),
                format!(
                    "{algorithm} digest must be {} bytes, got {}",
                    algorithm.digest_len(),
                    digest.len()
                ),
            ));
        }
        Ok(Hash {
            algorithm,
            digest: digest.into(),
            options: None,
        })
    }

    /// A hash whose digest length is known to be right (it came from the hash function itself).
    pub(crate) fn new_unchecked(algorithm: Algorithm, digest: &[u8]) -> Hash {
        debug_assert_eq!(digest.len(), algorithm.digest_len());
        Hash {
            algorithm,
            digest: digest.into(),
            options: None,
        }
    }

    /// A CouchDB attachment `digest`, `md5-<base64>`: the only kind CouchDB writes (couch_doc's
    /// `to_json_attachments`) and the only kind it checks an upload against; it drops any other
    /// prefix without a word. Here another prefix, or an md5 that is not standard base64 of 16
    /// bytes, is refused (the reason is returned, for the caller to name the field): a digest
    /// that nobody checks must not pass for one that was checked.
    pub(crate) fn from_couch_digest(digest: &str) -> std::result::Result<Hash, String> {
        let Some(b64) = digest.strip_prefix("md5-") else {
            return Err(format!(
                "{digest:?} is not an md5 digest: CouchDB writes and checks only `md5-<base64>`"
            ));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| format!("{digest:?} is not base64"))?;
        Hash::new(Algorithm::Md5, &bytes).map_err(|_| format!("{digest:?} is not an md5"))
    }

    /// A hash from a hex digest (case-insensitive), e.g. an npm `shasum`.
    pub fn from_hex(algorithm: Algorithm, hex_digest: &str) -> Result<Hash> {
        let trimmed = hex_digest.trim();
        let bytes = hex::decode(trimmed)
            .map_err(|e| Error::invalid_integrity(hex_digest, format!("not hex: {e}")))?;
        Hash::new(algorithm, &bytes)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw digest bytes.
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// The digest as lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.digest)
    }

    /// The digest as standard padded base64, as in SRI strings.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.digest)
    }

    /// The `?options` suffix, without its leading `?`, if there was one.
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    /// Whether two hashes have the same algorithm and digest (options are ignored, as in ssri).
    pub fn same_digest(&self, other: &Hash) -> bool {
        self.algorithm == other.algorithm && self.digest == other.digest
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.algorithm, self.to_base64())?;
        if let Some(opts) = &self.options {
            write!(f, "?{opts}")?;
        }
        Ok(())
    }
}

/// Parses what [`Display`](fmt::Display) prints, one hash (`sha512-<base64>`, `blake3-…`),
/// as [`Integrity::parse`] reads each of its tokens. A string of several hashes, or of an
/// unknown algorithm, is an error: it is not one hash.
impl FromStr for Hash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Hash> {
        let parsed = Integrity::parse(s)?;
        match (parsed.hashes(), parsed.unknown()) {
            ([one], []) => Ok(one.clone()),
            _ => Err(Error::invalid_integrity(
                s,
                "expected one hash, and this is several",
            )),
        }
    }
}

/// Serde for a type as the SRI string its `Display` prints and its `FromStr` parses (a
/// deserialized value is checked as a parsed one is).
macro_rules! serde_as_sri_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_sri_string!(Hash);
serde_as_sri_string!(Integrity);

/// An entry whose algorithm tarvault does not know: kept verbatim so that printing round-trips.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnknownHash {
    /// The whole token, e.g. `sha3-abc?x`.
    pub token: String,
}

/// How two integrities compare, on the strongest algorithm they share (as npm's ssri `match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The strongest shared algorithm has a matching digest.
    Match(Algorithm),
    /// The strongest shared algorithm has no matching digest.
    Mismatch(Algorithm),
    /// The two share no known algorithm, so nothing can be said.
    NoCommonAlgorithm,
}

/// A parsed Subresource Integrity string: one or more hashes.
///
/// `==` (and `Hash`) compare what was parsed, options and unknown entries included, as
/// [`Display`](fmt::Display) prints it; whether two integrities name the same bytes, as npm
/// decides it, is [`Integrity::matches`]:
///
/// ```
/// use tarvault::Integrity;
/// let sha1 = "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=";
/// let sha512 = concat!(
///     "sha512-m3HSJL1i83hdltRq0+o9czGb+8KJDKra4t/3JRlnPKcjI8PZ",
///     "m6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw==",
/// );
/// let both: Integrity = format!("{sha512} {sha1}").parse()?;
/// let alone: Integrity = sha512.parse()?;
/// assert_ne!(both, alone);
/// assert!(both.matches(&alone));
/// # Ok::<(), tarvault::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Integrity {
    hashes: Vec<Hash>,
    unknown: Vec<UnknownHash>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Integrity {
    /// Parses an SRI string such as `sha512-<base64>`, or several space-separated ones.
    ///
    /// Tokens are separated by the whitespace ssri splits on (JavaScript's `\s`, Unicode spaces,
    /// line separators and the BOM among them), so that a string npm reads as two hashes is two
    /// hashes here too.
    ///
    /// Errors (never panics) on: an empty string, a token without `algo-digest` shape, a known
    /// algorithm whose digest is not canonical padded base64 or has the wrong length, and a string
    /// with no known algorithm at all.
    ///
    /// Deliberately stricter than npm's ssri, which reads these without a word (checked against
    /// ssri itself by `tests/ssri_differential.rs`): ssri keeps any digest text for an algorithm
    /// and compares it as text, so a non-canonical or wrong-length digest there never matches,
    /// and here is an error naming it; ssri drops a token that is not `[a-z0-9]+-<digest>`
    /// (`SHA512-…`, `sha512-`, a stray word), which could leave a weaker hash to decide, and here
    /// refuses the string; ssri keeps options of any characters, here they must be visible ASCII
    /// (the spec's VCHAR). And an extension: ssri drops `blake3-…` (node has no blake3), here it is
    /// a known algorithm, checked like the others.
    pub fn parse(input: &str) -> Result<Integrity> {
        let mut hashes = Vec::new();
        let mut unknown = Vec::new();
        for token in input.split(is_ssri_space).filter(|t| !t.is_empty()) {
            let Some((algo, rest)) = token.split_once('-') else {
                return Err(Error::invalid_integrity(
                    input,
                    format!("{:?} is not of the form <algorithm>-<digest>", short(token)),
                ));
            };
            if algo.is_empty()
                || !algo
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return Err(Error::invalid_integrity(
                    input,
                    format!("{:?} is not a valid algorithm name", short(algo)),
                ));
            }
            let (digest, options) = match rest.split_once('?') {
                Some((d, o)) => (d, Some(o)),
                None => (rest, None),
            };
            if options.is_some_and(|o| o.bytes().any(|b| !(0x21..=0x7e).contains(&b))) {
                return Err(Error::invalid_integrity(
                    input,
                    "options contain invalid characters",
                ));
            }
            let Some(algorithm) = Algorithm::from_name(algo) else {
                if digest.is_empty() {
                    return Err(Error::invalid_integrity(
                        input,
                        format!("empty digest for {algo}"),
                    ));
                }
                unknown.push(UnknownHash {
                    token: token.to_string(),
                });
                continue;
            };
            let bytes = B64.decode(digest).map_err(|e| {
                Error::invalid_integrity(
                    input,
                    format!(
                        "{algorithm} digest {:?} is not canonical base64: {e}",
                        short(digest)
                    ),
                )
            })?;
            if bytes.len() != algorithm.digest_len() {
                return Err(Error::invalid_integrity(
                    input,
                    format!(
                        "{algorithm} digest must be {} bytes, got {}{}",
                        algorithm.digest_len(),
                        bytes.len(),
                        hex_hint(algorithm, digest)
                    ),
                ));
            }
            hashes.push(Hash {
                algorithm,
                digest: bytes.into(),
                options: options.map(Into::into),
            });
        }
        if hashes.is_empty() {
            let reason = if unknown.is_empty() {
                "empty integrity string"
            } else {
                "no supported algorithm (known: md5, sha1, sha256, sha384, sha512, blake3)"
            };
            return Err(Error::invalid_integrity(input, reason));
        }
        group_by_algorithm(&mut hashes);
        Ok(Integrity { hashes, unknown })
    }

    /// Parses an address as the CLI and HTTP routes accept it: an integrity string, or a 40-digit
    /// hex npm `shasum` (sha1).
    pub fn parse_address(input: &str) -> Result<Integrity> {
        let t = input.trim_matches(is_ssri_space);
        if t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Integrity::from_shasum(t);
        }
        Integrity::parse(input)
    }

    /// Builds a `sha1-…` integrity from an npm `shasum` (40 hex digits).
    pub fn from_shasum(shasum: &str) -> Result<Integrity> {
        Ok(Integrity::from(Hash::from_hex(Algorithm::Sha1, shasum)?))
    }

    /// All known hashes, in the order npm's ssri keeps them: grouped by algorithm, each algorithm
    /// where it first appeared and its hashes in the order given (`sha1-a sha512-b sha1-c` holds
    /// `sha1-a sha1-c sha512-b`).
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Entries whose algorithm is unknown (kept for printing, never matched).
    pub fn unknown(&self) -> &[UnknownHash] {
        &self.unknown
    }

    /// The strongest known algorithm present.
    pub fn strongest(&self) -> Algorithm {
        // `parse` and every constructor guarantee at least one hash.
        self.hashes
            .iter()
            .map(Hash::algorithm)
            .max()
            .unwrap_or(Algorithm::Sha512)
    }

    /// The first hash of the given algorithm, if present.
    pub fn get(&self, algorithm: Algorithm) -> Option<&Hash> {
        self.hashes.iter().find(|h| h.algorithm == algorithm)
    }

    /// Every hash of the given algorithm.
    pub fn all_of(&self, algorithm: Algorithm) -> impl Iterator<Item = &Hash> {
        self.hashes.iter().filter(move |h| h.algorithm == algorithm)
    }

    /// The set of known algorithms present, without duplicates, strongest first.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = self.hashes.iter().map(Hash::algorithm).collect();
        algs.sort_unstable_by(|a, b| b.cmp(a));
        algs.dedup();
        algs
    }

    /// Compares with `other` on the strongest algorithm both contain, like ssri's `match`: only that
    /// algorithm counts (a wrong sha512 with a right sha1 is a mismatch), and any digest of it in
    /// `self` equal to any in `other` is a match.
    pub fn compare(&self, other: &Integrity) -> Comparison {
        let Some(algorithm) = self
            .algorithms()
            .into_iter()
            .find(|a| other.get(*a).is_some())
        else {
            return Comparison::NoCommonAlgorithm;
        };
        let found = self
            .all_of(algorithm)
            .any(|h| other.all_of(algorithm).any(|o| h.same_digest(o)));
        if found {
            Comparison::Match(algorithm)
        } else {
            Comparison::Mismatch(algorithm)
        }
    }

    /// Whether `other` matches on the strongest shared algorithm.
    pub fn matches(&self, other: &Integrity) -> bool {
        matches!(self.compare(other), Comparison::Match(_))
    }

    /// A copy holding only the hashes of one algorithm (or `None` if absent).
    pub fn only(&self, algorithm: Algorithm) -> Option<Integrity> {
        let hashes: Vec<Hash> = self.all_of(algorithm).cloned().collect();
        (!hashes.is_empty()).then_some(Integrity {
            hashes,
            unknown: Vec::new(),
        })
    }

    /// Adds a hash (used to build multi-hash integrities): after the last of its algorithm, or
    /// at the end (see [`hashes`](Self::hashes)).
    pub fn push(&mut self, hash: Hash) {
        match self
            .hashes
            .iter()
            .rposition(|h| h.algorithm == hash.algorithm)
        {
            Some(last) => self.hashes.insert(last + 1, hash),
            None => self.hashes.push(hash),
        }
    }
}

impl From<Hash> for Integrity {
    fn from(hash: Hash) -> Self {
        Integrity {
            hashes: vec![hash],
            unknown: Vec::new(),
        }
    }
}

/// Groups `hashes` by algorithm as npm's ssri does, keeping it an object keyed by algorithm:
/// each algorithm where it first appeared, its hashes in their order. A stable sort by that rank,
/// not a scan per hash, so that a string of many thousand hashes costs no more than its length.
fn group_by_algorithm(hashes: &mut [Hash]) {
    let mut order: Vec<Algorithm> = Vec::new();
    for h in hashes.iter() {
        if !order.contains(&h.algorithm) {
            order.push(h.algorithm);
        }
    }
    hashes.sort_by_key(|h| order.iter().position(|a| *a == h.algorithm));
}

/// Prints as npm's ssri does, which is what npm writes into a lockfile for the string (pacote's
/// `String(ssri.parse(dist.integrity))`): the hashes grouped by algorithm, as they are held (see
/// [`Integrity::hashes`]; `sha1-a sha512-b sha1-c` prints `sha1-a sha1-c sha512-b`), so that
/// what prints re-parses to the same value. Unknown entries follow, verbatim: ssri drops those
/// whose algorithm node cannot hash and keeps the others in the same grouped order, which this
/// does not mirror.
impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for h in &self.hashes {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{h}")?;
        }
        for u in &self.unknown {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(&u.token)?;
        }
        Ok(())
    }
}

impl FromStr for Integrity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Integrity::parse(s)
    }
}

/// Whether `c` is whitespace to npm's ssri, which reads `integrity.trim().split(/\s+/)`:
/// JavaScript's `\s`, ECMAScript's WhiteSpace and LineTerminator (tab, LF, VT, FF, CR, every
/// Unicode space separator, U+2028, U+2029 and the BOM, U+FEFF). Neither of Rust's splits is
/// that set: `split_ascii_whitespace` misses VT and the Unicode spaces (a packument npm installs
/// from would be refused), `split_whitespace` splits on U+0085 and not on U+FEFF.
fn is_ssri_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// What to say of a digest of the wrong length that is the hex of a digest of the right one (what
/// `sha1sum`, `b3sum`, npm's `shasum` and tarvault's own `stat` print): the integrity string it
/// stands for. Hex digits are base64 characters too, so it decoded, to the wrong length.
fn hex_hint(algorithm: Algorithm, digest: &str) -> String {
    match hex::decode(digest) {
        Ok(bytes) if bytes.len() == algorithm.digest_len() => format!(
            "; that is hex, and an integrity string's digest is base64: {algorithm}-{}",
            B64.encode(bytes)
        ),
        _ => String::new(),
    }
}

/// `s` up to its first 40 bytes, and `…` after it if it was longer (quoted as the digest it is
/// not, a bare prefix would read as the whole of it).
fn short(s: &str) -> String {
    crate::error::clipped(s, 40)
}
