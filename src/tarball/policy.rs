//! Resource limits applied while a tarball streams through the inspector.
//!
//! Path, link and special-file rules are not configurable: they protect
//! whoever later extracts the tarball, so there is no legitimate reason for a
//! registry to turn them off. Only the resource limits, which depend on what a
//! deployment is willing to pay for, are knobs.

use serde::{Deserialize, Serialize};

use super::error::TarballError;

/// Decompressed bytes that are always allowed before the compression-ratio
/// rule applies. Tiny tarballs (a 100-byte gzip of a 1 KiB file with a few
/// padding blocks) legitimately have ratios far above any sane bomb threshold;
/// a bomb, by contrast, is only dangerous once it has produced a lot of output.
pub const RATIO_GRACE_BYTES: u64 = 1 << 20;

/// What the inspector accepts. `Policy::default()` enables every rule with
/// limits generous enough for every package on the public registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Maximum number of entries (files, directories, links), counted as npm
    /// counts `dist.fileCount`.
    pub max_entries: u64,
    /// Maximum sum of entry sizes (npm's `dist.unpackedSize`).
    pub max_unpacked_size: u64,
    /// Maximum ratio of decompressed tar bytes to compressed bytes consumed,
    /// checked continuously (after [`RATIO_GRACE_BYTES`]) so a bomb stops
    /// after about a megabyte instead of after gigabytes.
    pub max_compression_ratio: u64,
    /// Largest `package.json` kept in memory for parsing. It is the only
    /// content the inspector buffers, so this bounds its memory.
    pub max_package_json_size: u64,
    /// Whether a missing or unusable `package.json` is an error. When false,
    /// the report comes back with empty name/version and a warning, so a
    /// registry that stores arbitrary tarballs can still get counts.
    pub require_package_json: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_unpacked_size: 1 << 30,
            max_compression_ratio: 200,
            max_package_json_size: 1 << 20,
            require_package_json: true,
        }
    }
}

impl Policy {
    /// No resource limits (safety rules still apply) and `package.json`
    /// optional: for trusted input, tests and tooling.
    pub fn unlimited() -> Self {
        Self {
            max_entries: u64::MAX,
            max_unpacked_size: u64::MAX,
            max_compression_ratio: u64::MAX,
            max_package_json_size: 1 << 20,
            require_package_json: false,
        }
    }

    /// Rejects a stream whose output outgrew its input by more than the
    /// configured ratio.
    pub(crate) fn check_ratio(
        &self,
        compressed: u64,
        decompressed: u64,
    ) -> Result<(), TarballError> {
        if decompressed > RATIO_GRACE_BYTES
            && decompressed > compressed.saturating_mul(self.max_compression_ratio)
        {
            return Err(TarballError::CompressionRatio {
                compressed,
                decompressed,
                limit: self.max_compression_ratio,
            });
        }
        Ok(())
    }

    /// Rejects the entry that takes the count over the limit.
    pub(crate) fn check_entries(&self, count: u64, path: &str) -> Result<(), TarballError> {
        if count > self.max_entries {
            return Err(TarballError::TooManyEntries {
                path: path.to_owned(),
                count,
                limit: self.max_entries,
            });
        }
        Ok(())
    }

    /// Rejects the entry that takes the unpacked size over the limit; checked
    /// on the header, before any of its body is decompressed.
    pub(crate) fn check_size(&self, size: u64, path: &str) -> Result<(), TarballError> {
        if size > self.max_unpacked_size {
            return Err(TarballError::TooLarge {
                path: path.to_owned(),
                size,
                limit: self.max_unpacked_size,
            });
        }
        Ok(())
    }
}
