//! Blocking work (file I/O, hashing large buffers) run off the async runtime, with one meaning for
//! a task that dies: [`Error::Task`], an I/O-kind error that keeps the join error (the panic or
//! cancellation) as its source instead of a string.

use crate::{Error, Result};

/// Runs `f` on tokio's blocking pool and returns its result.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(Error::Task)?
}
