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
//!
//! Built from code, members are `Arc<dyn Backend>`s: a backend of this crate (`FsBackend::open`),
//! the backend of a store ([`Store::backend`](crate::Store::backend)), any spec opened by
//! [`open_backend`](crate::open::open_backend), or another wrapper. A configuration file
//! describes the same ([`open::config`](crate::open::config)).
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//!
//! use tarvault::backend::compose::{Cached, CachedOptions, Replicated, ReplicatedOptions};
//! use tarvault::backend::{memory::MemoryBackend, Backend};
//! use tarvault::{PutOptions, Store};
//!
//! let a: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
//! let b: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
//! let options = ReplicatedOptions { write_quorum: Some(2), ..ReplicatedOptions::default() };
//! let replicated = Replicated::new(vec![a.clone(), b], options)?;
//! // A cache tier in front of the replicas: puts go to them, reads fill it.
//! let tier: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
//! let cached = Cached::new(tier, Arc::new(replicated), CachedOptions { capacity: 64 << 20 }).await?;
//! let store = Store::new(cached.clone());
//!
//! let put = store.put_bytes(&b"hello"[..], &PutOptions::default()).await?;
//! assert!(Store::from_arc(a).contains(&put.digests.integrity()).await?);
//! for _ in 0..2 {
//!     assert_eq!(&store.get(&put.digests.integrity()).await?.bytes().await?[..], b"hello");
//! }
//! assert_eq!((cached.stats().fetches, cached.stats().hits), (1, 1));
//! # Ok::<(), tarvault::Error>(())
//! # }).unwrap();
//! ```

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
