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

/// The cores this process may use, asked of the system once: on Linux the standard library reads
/// the cgroup's CPU quota files on every call, which a batch put would otherwise do per batch.
pub(crate) fn cores() -> Option<usize> {
    static CORES: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().ok().map(|n| n.get()))
}
