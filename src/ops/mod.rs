//! Whole-store operations built on the [`Store`](crate::Store) API, for any backend: [`copy`]
//! (store to store, verified and resumable) and [`gc`] (delete what a live set does not name).
//! `scrub` is [`Store::fsck`](crate::Store::fsck) over a
//! [`Throttled`](crate::backend::compose::Throttled) backend, and `repair` is
//! [`Replicated::repair`](crate::backend::compose::Replicated::repair).

pub mod copy;
pub mod gc;
