//! tarvault: content-addressed, verified storage for package tarballs.
//!
//! Blobs are addressed by npm's Subresource Integrity strings (`sha512-<base64>`), byte-identical
//! to what npm writes, and can also be found by npm's legacy `shasum` (sha1 hex) or by blake3.
//! Nothing is committed under an address unless its bytes hashed to it, and nothing is served
//! without being checked again on the way out.
//!
//! A [`Store`] is the API: it checks what goes in and comes out and hands the bytes to one
//! [`backend::Backend`] (one trait), implemented by the backends ([`backend::fs`],
//! [`backend::memory`], and S3, Manta and read-only HTTP behind their features) and by the
//! wrappers of [`backend::compose`] that make one backend of several. [`open`] turns a store spec
//! (`--store`) into those. [`tarball`] inspects npm package tarballs as they stream by, in the
//! same pass as hashing.
//!
//! # Layers
//!
//! The modules are layered, and a module uses only those of the layers below it, never one above
//! (so there are no import cycles, and each layer can be understood and tested without the ones
//! above it). From the bottom:
//!
//! 1. [`tarball`] (tar/gzip parsing, no other module), [`units`] (sizes, durations, rates) and
//!    `package_name` (which npm package names can be stored and served);
//! 2. the error type ([`Error`], [`ErrorKind`]);
//! 3. [`integrity`] (SRI parsing and hashing), `task` (blocking work off the runtime),
//!    `strict_json` (JSON with every repeated key refused, for the clients that read registry
//!    documents) and `host_tmp` (the private temp directory a user's processes share);
//! 4. [`backend`]: the trait, the backends and the composite wrappers;
//! 5. the store ([`Store`]);
//! 6. [`open`]: store specs and composition configuration, building backends and stores; and
//!    [`mapping`] (the npm URL mapping shared by `migrate` and `server`, and its database);
//! 7. the clients of the store: [`ops`], `migrate`, `server`, [`publish`] (and the `tarvault`
//!    binary, which uses the library only through its public API).
//!
//! `tests/layering.rs` checks this order on every `cargo test`, naming the file and line of any
//! import that goes up or sideways.

#![warn(missing_docs)]

pub mod backend;
mod error;
#[cfg(any(
    feature = "s3",
    feature = "manta",
    feature = "migrate",
    feature = "server"
))]
mod host_tmp;
pub mod integrity;
#[cfg(any(feature = "migrate", feature = "server"))]
pub mod mapping;
#[cfg(feature = "migrate")]
pub mod migrate;
pub mod open;
pub mod ops;
mod package_name;
pub mod publish;
#[cfg(feature = "server")]
pub mod server;
mod store;
mod strict_json;
pub mod tarball;
mod task;
pub mod units;

pub use error::{Error, ErrorKind, ErrorReport, Result};
pub use integrity::{Algorithm, Digests, Hash, Integrity};
pub use store::{
    file_input, BlobInfo, BlobStream, CorruptBlob, FsckOptions, FsckReport, PutOptions, PutOutcome,
    Store, Verification,
};

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
