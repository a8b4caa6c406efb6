//! The sha1 and blake3 alias index of the stores that keep it beside their blobs: what finds a
//! blob's sha512 key from npm's `shasum` or a blake3 digest without reading any blob.
//!
//! The remote stores (S3, Manta) keep one small marker object per alias ([`marker`], with its
//! bounded lookup cache [`cache`], the fsck sweep `marker`'s `sweep` and the request counts of
//! [`probe`]). Stores written by earlier versions keep a log of segment objects instead ([`log`]),
//! read during the upgrade without holding its records ([`legacy`], [`legacy_table`],
//! [`legacy_shared`]). The record line format ([`line`](mod@line)) is shared with the filesystem
//! store's old alias log, and the in-memory map ([`map`]) with the memory backend. The filesystem
//! store's own index is SQLite (`backend/fs/index/`). docs/remote-index.md says why, with
//! measurements.

#[cfg(any(feature = "s3", feature = "manta"))]
pub(super) mod cache;
#[cfg(any(feature = "s3", feature = "manta"))]
mod legacy;
#[cfg(any(feature = "s3", feature = "manta"))]
mod legacy_shared;
#[cfg(any(feature = "s3", feature = "manta"))]
mod legacy_table;
#[cfg(any(feature = "fs", feature = "s3", feature = "manta"))]
pub(super) mod line;
#[cfg(any(feature = "s3", feature = "manta"))]
pub(super) mod log;
#[cfg(any(feature = "memory", feature = "s3", feature = "manta"))]
pub(super) mod map;
#[cfg(any(feature = "s3", feature = "manta"))]
pub(super) mod marker;
#[cfg(any(feature = "s3", feature = "manta"))]
pub(super) mod probe;
