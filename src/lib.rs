//! tarvault: content-addressed, verified storage for package tarballs.
//!
//! Blobs are addressed by npm's Subresource Integrity strings (`sha512-<base64>`), byte-identical to
//! what npm writes, and can also be found by npm's legacy `shasum` (sha1 hex) or by blake3. Nothing is
//! committed under an address unless its bytes hashed to it, and nothing is served without being
//! checked again on the way out.
//!
//! The layers, from the bottom: [`integrity`] (parsing and hashing) → [`Store`] (the API) →
//! [`backend::Backend`] (one trait) → the backends ([`backend::fs`], [`backend::memory`]).
//! [`tarball`] inspects npm package tarballs as they stream by, in the same pass as hashing.

#![warn(missing_docs)]

pub mod backend;
mod error;
pub mod integrity;
#[cfg(feature = "migrate")]
pub mod migrate;
pub mod ops;
pub mod publish;
#[cfg(feature = "server")]
pub mod server;
mod store;
pub mod tarball;

pub use error::{Error, ErrorKind, Result};
pub use integrity::{Algorithm, Digests, Hash, Integrity};
pub use store::{
    BlobInfo, BlobStream, CorruptBlob, FsckOptions, FsckReport, PutOptions, PutOutcome, Store,
    Verification,
};

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
