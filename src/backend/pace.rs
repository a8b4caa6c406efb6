//! Pacing to a rate: each caller reserves the next free slot, so concurrent callers share it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::units::CENTURY;

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
            // A slot too long for a `Duration` or an `Instant` (a tiny rate and a huge blob) is
            // a century, "never" for a pacer, not a panic.
            let slot = Duration::try_from_secs_f64(units as f64 / self.per_second)
                .map_or(CENTURY, |d| d.min(CENTURY));
            *next = Some(start.checked_add(slot).unwrap_or(start));
            start
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot no `Duration` holds (u64::MAX bytes at a millionth of a unit a second) is a long
    /// wait for the next caller, not a panic.
    #[tokio::test(start_paused = true)]
    async fn a_slot_past_any_duration_is_a_long_wait() {
        let pacer = Pacer::new(0.0);
        pacer.take(u64::MAX).await;
        let next = tokio::time::timeout(Duration::from_secs(3600), pacer.take(1)).await;
        assert!(next.is_err(), "the next slot came within the hour");
    }

    #[tokio::test(start_paused = true)]
    async fn units_are_paced_to_the_rate() {
        let pacer = Pacer::new(100.0);
        let start = Instant::now();
        for _ in 0..3 {
            pacer.take(50).await;
        }
        // 50 units at once, then two more slots of half a second each.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
