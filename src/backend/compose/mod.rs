//! Backends made of backends: each wrapper here implements [`Backend`](super::Backend) over other
//! backends, so it can be given to a [`Store`](crate::Store), nested in another wrapper, or run
//! through the conformance suite like any plain backend.
//!
//! - [`Replicated`]: N replicas, writes acknowledged at a quorum, verified reads with fallback and
//!   read-repair, and [`Replicated::repair`] to bring every replica to the same set.
//! - [`Cached`]: a bounded, LRU-evicted local tier in front of a remote store, filled on read
//!   (verified) with one fetch per blob however many readers miss at once.
//! - [`Throttled`]: reads paced to a byte or blob rate (for `scrub` and `copy` in production).
//!
//! Both verify the bytes they read from a member *inside* the wrapper, before handing them on: the
//! store's own verification happens above the wrapper and could only report a bad replica, not
//! choose another one.

mod cached;
mod fan_out;
mod replicated;
mod throttled;
pub mod verify;

/// The rate a [`Throttled`] backend paces reads to (parsed in [`crate::units`]).
pub use crate::units::Rate;
pub use cached::{CacheStats, Cached, CachedOptions};
pub use replicated::{RepairReport, Replicated, ReplicatedOptions};
pub use throttled::Throttled;
