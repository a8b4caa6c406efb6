//! The hash algorithms tarvault knows, their digest lengths and their order of strength.

use std::fmt;
use std::str::FromStr;

/// A hash algorithm that may appear in an integrity string.
///
/// The order of the variants is the order of preference when several are offered, weakest first,
/// as npm's `ssri` picks them: md5 < sha1 < sha256 < blake3 < sha384 < sha512. sha512 stays the
/// strongest because it is what npm writes and what tarvault uses as the primary address; blake3 is
/// our extension (fast, used for secondary lookups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// MD5: only for checking CouchDB attachment digests, never an address.
    Md5,
    /// SHA-1: npm's legacy `shasum`.
    Sha1,
    /// SHA-256.
    Sha256,
    /// BLAKE3 (256-bit output): tarvault's extension.
    Blake3,
    /// SHA-384.
    Sha384,
    /// SHA-512: npm's `integrity`, and tarvault's primary address.
    Sha512,
}

impl Algorithm {
    /// Every known algorithm, weakest first.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Blake3,
        Algorithm::Sha384,
        Algorithm::Sha512,
    ];

    /// Whether hashing bytes with `algorithms` costs less on the thread that has them, whatever
    /// their size, than the hand-off to another thread and back: blake3 alone (or nothing) hashes
    /// at several GB/s.
    pub(crate) fn hashed_inline(algorithms: &[Algorithm]) -> bool {
        algorithms.iter().all(|a| *a == Algorithm::Blake3)
    }

    /// The name used in SRI strings (`sha512`, `blake3`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Blake3 => "blake3",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 | Algorithm::Blake3 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    /// Looks an algorithm up by its exact (lower-case) SRI name, as npm's ssri does.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        // An algorithm's name is no integrity string: say what was asked and what is known.
        Algorithm::from_name(s).ok_or_else(|| {
            let known: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
            crate::Error::InvalidInput(format!(
                "unknown hash algorithm {:?} (known: {})",
                crate::error::clipped(s, 200),
                known.join(", ")
            ))
        })
    }
}
