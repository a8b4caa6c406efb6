//! Integrity: Subresource Integrity strings compatible with npm's `ssri`, and one-pass hashing.

mod algorithm;
mod digests;
mod hasher;
mod padded;
mod sha1_lanes;
mod sha512;
mod sha512_lanes;
mod sha512_pool;
mod sri;

pub use algorithm::Algorithm;
pub use digests::{Digests, DigestsJson};
pub use hasher::{DigestSet, MultiHasher, StreamHasher, PIPELINE_THRESHOLD};
#[doc(hidden)]
pub use sha1_lanes::sha1_each;
#[doc(hidden)]
pub use sha512_lanes::sha512_each;
#[doc(hidden)]
pub use sha512_pool::set_batch_sha512_lanes;
pub(crate) use sha512_pool::Ticket as Sha512Ticket;
pub use sri::{Comparison, Hash, Integrity, UnknownHash};
