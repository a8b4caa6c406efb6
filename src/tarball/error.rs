//! The inspector's error type.
//!
//! Every rejection is a [`TarballError`] variant that carries enough context
//! (entry path, offset, limit) to explain itself in a log line, plus a
//! [`TarballErrorKind`] so callers (an HTTP layer mapping to status codes, a
//! registry deciding what it tolerates) can `match` without string parsing.

use std::io;
use std::sync::Arc;

use serde::Serialize;

/// Why a tarball was rejected.
///
/// The error is `Clone` (I/O errors are shared behind an [`Arc`]) so that an
/// [`Inspector`](super::Inspector) that already failed can keep returning the
/// original error when it is fed more data.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TarballError {
    /// An entry path that would be written outside the extraction directory,
    /// or that means different things on different platforms.
    #[error("unsafe entry path {path:?}: {reason}")]
    PathTraversal {
        /// The entry path as stored in the archive (one longer than the 4096 bytes accepted:
        /// its first 256 bytes and `…`).
        path: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A symbolic or hard link whose target resolves outside the package root.
    #[error("link {path:?} -> {target:?} escapes the package root: {reason}")]
    LinkEscape {
        /// The link entry's path.
        path: String,
        /// The link target as stored in the archive (one longer than the 4096 bytes accepted:
        /// its first 256 bytes and `…`).
        target: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A device node or FIFO: never legitimate in a package.
    #[error("entry {path:?} is a {file_type}, which packages may not contain")]
    SpecialFile {
        /// The entry path.
        path: String,
        /// "character device", "block device" or "FIFO".
        file_type: &'static str,
    },
    /// More entries than [`Policy::max_entries`](super::Policy::max_entries).
    #[error("too many entries: {path:?} is entry {count}, over the limit of {limit}")]
    TooManyEntries {
        /// The first entry over the limit.
        path: String,
        /// Its ordinal.
        count: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Unpacked size over [`Policy::max_unpacked_size`](super::Policy::max_unpacked_size).
    #[error("unpacked size reaches {size} bytes at {path:?}, over the limit of {limit}")]
    TooLarge {
        /// The entry that crossed the limit.
        path: String,
        /// Unpacked size including that entry.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Decompressed/compressed ratio over
    /// [`Policy::max_compression_ratio`](super::Policy::max_compression_ratio): a
    /// decompression bomb, stopped while streaming.
    #[error(
        "compression ratio over {limit}:1 ({decompressed} bytes from {compressed} compressed bytes)"
    )]
    CompressionRatio {
        /// Compressed bytes consumed so far.
        compressed: u64,
        /// Decompressed bytes produced so far.
        decompressed: u64,
        /// The configured ratio.
        limit: u64,
    },
    /// Not gzip, or a malformed gzip header or deflate stream.
    #[error("malformed gzip: {0}")]
    BadGzip(String),
    /// The gzip trailer's CRC-32 or ISIZE does not match the data.
    #[error("gzip checksum mismatch: {0}")]
    GzipChecksum(String),
    /// The gzip stream, a tar header or entry, or the end-of-archive marker is
    /// cut short.
    #[error("truncated tarball: {0}")]
    Truncated(String),
    /// A malformed tar header (bad checksum, bad number, bad pax record, ...),
    /// or a header that npm's tar would read differently from us.
    #[error("malformed tar at byte {offset}: {reason}")]
    BadTar {
        /// Offset of the offending header in the decompressed tar stream.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// No regular file `<root>/package.json`.
    #[error("no package.json at {path:?}")]
    MissingPackageJson {
        /// Where it was looked for.
        path: String,
    },
    /// `package.json` is too large, not JSON, or lacks a string name/version.
    #[error("bad package.json {path:?}: {reason}")]
    BadPackageJson {
        /// The package.json entry path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the input failed (only from the reader/stream helpers).
    #[error("I/O error while reading the tarball")]
    Io(#[source] Arc<io::Error>),
}

/// A `Copy` discriminant of [`TarballError`] for matching and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TarballErrorKind {
    /// See [`TarballError::PathTraversal`].
    PathTraversal,
    /// See [`TarballError::LinkEscape`].
    LinkEscape,
    /// See [`TarballError::SpecialFile`].
    SpecialFile,
    /// See [`TarballError::TooManyEntries`].
    TooManyEntries,
    /// See [`TarballError::TooLarge`].
    TooLarge,
    /// See [`TarballError::CompressionRatio`].
    CompressionRatio,
    /// See [`TarballError::BadGzip`].
    BadGzip,
    /// See [`TarballError::GzipChecksum`].
    GzipChecksum,
    /// See [`TarballError::Truncated`].
    Truncated,
    /// See [`TarballError::BadTar`].
    BadTar,
    /// See [`TarballError::MissingPackageJson`].
    MissingPackageJson,
    /// See [`TarballError::BadPackageJson`].
    BadPackageJson,
    /// See [`TarballError::Io`].
    Io,
}

impl TarballError {
    /// The error's kind, for callers that branch on the cause.
    pub fn kind(&self) -> TarballErrorKind {
        match self {
            Self::PathTraversal { .. } => TarballErrorKind::PathTraversal,
            Self::LinkEscape { .. } => TarballErrorKind::LinkEscape,
            Self::SpecialFile { .. } => TarballErrorKind::SpecialFile,
            Self::TooManyEntries { .. } => TarballErrorKind::TooManyEntries,
            Self::TooLarge { .. } => TarballErrorKind::TooLarge,
            Self::CompressionRatio { .. } => TarballErrorKind::CompressionRatio,
            Self::BadGzip(_) => TarballErrorKind::BadGzip,
            Self::GzipChecksum(_) => TarballErrorKind::GzipChecksum,
            Self::Truncated(_) => TarballErrorKind::Truncated,
            Self::BadTar { .. } => TarballErrorKind::BadTar,
            Self::MissingPackageJson { .. } => TarballErrorKind::MissingPackageJson,
            Self::BadPackageJson { .. } => TarballErrorKind::BadPackageJson,
            Self::Io(_) => TarballErrorKind::Io,
        }
    }

    /// Shorthand for [`TarballError::BadTar`].
    pub(crate) fn bad_tar(offset: u64, reason: impl Into<String>) -> Self {
        Self::BadTar {
            offset,
            reason: reason.into(),
        }
    }
}

impl From<io::Error> for TarballError {
    fn from(err: io::Error) -> Self {
        Self::Io(Arc::new(err))
    }
}

impl TarballErrorKind {
    /// A stable snake_case name (same as the serde form), for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PathTraversal => "path_traversal",
            Self::LinkEscape => "link_escape",
            Self::SpecialFile => "special_file",
            Self::TooManyEntries => "too_many_entries",
            Self::TooLarge => "too_large",
            Self::CompressionRatio => "compression_ratio",
            Self::BadGzip => "bad_gzip",
            Self::GzipChecksum => "gzip_checksum",
            Self::Truncated => "truncated",
            Self::BadTar => "bad_tar",
            Self::MissingPackageJson => "missing_package_json",
            Self::BadPackageJson => "bad_package_json",
            Self::Io => "io",
        }
    }
}

impl std::fmt::Display for TarballErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
