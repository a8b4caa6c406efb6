//! Integrity: Subresource Integrity strings compatible with npm's `ssri`, and one-pass hashing.

mod algorithm;
mod digests;
mod hasher;
mod sha512;
mod sri;

pub use algorithm::Algorithm;
pub use digests::{Digests, DigestsJson};
pub use hasher::{DigestSet, MultiHasher, StreamHasher, PIPELINE_THRESHOLD};
pub use sri::{Comparison, Hash, Integrity, UnknownHash};
