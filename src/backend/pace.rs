//! Pacing to a rate: each caller reserves the next free slot, so concurrent callers share it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Paces units (bytes or blobs) to a rate: each caller reserves the next free slot.
#[derive(Debug)]
pub(crate) struct Pacer {
    per_second: f64,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer of `per_second` units a second.
    pub(crate) fn new(per_second: f64) -> Pacer {
        Pacer {
            // A zero or negative rate would never let anything through: one unit a million seconds.
            per_second: per_second.max(1e-6),
            next: Mutex::new(None),
        }
    }

    /// Waits for the next free slot for `units`.
    pub(crate) async fn take(&self, units: u64) {
        let wait_until = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = next.filter(|n| *n > now).unwrap_or(now);
            *next = Some(start + Duration::from_secs_f64(units as f64 / self.per_second));
            start
        };
        tokio::time::sleep_until(wait_until).await;
    }
}
