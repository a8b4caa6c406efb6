//! Keeping a write-ahead log bounded while other processes read without pause: the fs index,
//! the cache tier's ledger and a mapping's database, each written by one process while others
//! (a `serve` per core) read it.
//!
//! SQLite starts its WAL over only when a writer begins after a checkpoint that copied every frame
//! back into the database. The automatic checkpoint after a commit is passive: it copies frames up
//! to the oldest snapshot a reader still holds and gives up on the rest. With a `serve` per core
//! answering lookups, some process is nearly always inside a lookup that began before the commit,
//! so those checkpoints can fall short commit after commit while writes go on, and the WAL grew
//! past its target for as long as that lasted: the index's to 169 MiB with three processes reading
//! in a loop and 768k records put (docs/index.md, "The WAL under constant reads"). The file never
//! shrank.
//!
//! So a writer whose commit leaves the `-wal` file past its bound ([`WAL_BOUND`] by default) runs a
//! `RESTART` checkpoint, which waits (briefly) for the readers of older snapshots to finish instead
//! of giving up, and then for every reader to have left the WAL, so that the next commit starts it
//! over. `journal_size_limit` ([`WAL_KEEP`]) then truncates the file when it is started over, which
//! also keeps its size a measure of what it holds.

// The fs index uses all of it; a mapping's database (migrate, server), in a test build, its own
// bound and limit.
#![cfg_attr(not(feature = "fs"), allow(dead_code))]

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// What `journal_size_limit` keeps of the `-wal` file when it starts over: a little above the
/// 32 Ki frames (of 1 KiB pages and their 24-byte headers) at which the automatic checkpoint runs,
/// so that a WAL cycling normally is reused in place, not truncated and grown again every time.
pub(crate) const WAL_KEEP: i64 = 40 << 20;

/// The `-wal` file size past which a writer forces a checkpoint: half again the index's automatic
/// one's.
pub(crate) const WAL_BOUND: u64 = 48 << 20;

/// How long the forced checkpoint waits for readers (and another process's write transaction).
/// It holds the write lock meanwhile, so puts elsewhere wait too; a lookup takes microseconds.
const WAIT: Duration = Duration::from_millis(500);

/// After a forced checkpoint that could not finish (a reader holding a transaction open for long:
/// a `sqlite3` shell, a stopped process; or readers slowed by a loaded machine past [`WAIT`]),
/// commits do not try again before this, or before the WAL has doubled since, so that a stuck
/// reader costs the writers [`WAIT`] once per 10 s or per doubling for as long as it is stuck,
/// not every commit, while readers that were only slow let the WAL double (once per try that
/// falls short) before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The forced checkpoints of one writing connection.
#[derive(Debug)]
pub(crate) struct Forced {
    /// The `-wal` file size past which one is forced.
    bound: u64,
    /// When the last one fell short, and the WAL's size then.
    failed: Option<(Instant, u64)>,
}

impl Default for Forced {
    fn default() -> Self {
        Forced::past(WAL_BOUND)
    }
}

impl Forced {
    /// Checkpoints forced once the `-wal` file is past `bound` bytes.
    pub(crate) fn past(bound: u64) -> Self {
        Forced {
            bound,
            failed: None,
        }
    }

    /// Whether a WAL of `size` bytes is to be checkpointed now: past the bound, and, after
    /// one that fell short, [`RETRY_AFTER`] later or at twice the size it had then.
    fn due(&self, size: u64) -> bool {
        let wait = |(at, had): (Instant, u64)| at.elapsed() < RETRY_AFTER && size < had * 2;
        size > self.bound && !self.failed.is_some_and(wait)
    }

    /// After a commit through `conn` (the database at `db`): if the WAL is past the bound,
    /// checkpoints it with `RESTART`, waiting up to [`WAIT`]. The commit is done whatever happens
    /// here, so a checkpoint that fails is logged, not returned: the next one will try again.
    pub(crate) fn after_commit(&mut self, conn: &Connection, db: &Path, busy_timeout: Duration) {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let Ok(size) = std::fs::metadata(&wal).map(|m| m.len()) else {
            return;
        };
        if !self.due(size) {
            return;
        }
        let started = Instant::now();
        let result = restart(conn, busy_timeout);
        let waited = started.elapsed();
        match result {
            Ok((false, frames)) => {
                self.failed = None;
                tracing::debug!(index = %db.display(), wal_bytes = size, frames, ?waited, "WAL past its bound: checkpointed, to start over");
            }
            Ok((true, frames)) => {
                self.failed = Some((Instant::now(), size));
                tracing::warn!(index = %db.display(), wal_bytes = size, frames, ?waited, "WAL past its bound and the checkpoint could not finish (a reader, or another connection's checkpoint or write): will try again");
            }
            Err(e) => {
                self.failed = Some((Instant::now(), size));
                tracing::warn!(index = %db.display(), wal_bytes = size, error = %e, "WAL past its bound and the checkpoint failed");
            }
        }
    }
}

/// How long one attempt of a forced checkpoint waits for a lock before it gives up and the next
/// attempt begins (until [`WAIT`] has passed). SQLite's checkpoint reads each reader slot's
/// snapshot once and then waits for that slot's lock; a reader that ends one short transaction
/// and begins the next at once takes the slot again within microseconds, now at the current
/// frame, which no longer holds the checkpoint back, but the waiting attempt does not see that.
/// A new attempt reads the slots afresh. (With one attempt waiting the whole 500 ms, a forced
/// checkpoint beside two readers taking turns holding a snapshot fell short every first time.)
const ATTEMPT: Duration = Duration::from_millis(20);

/// Runs `PRAGMA wal_checkpoint(RESTART)` in attempts of [`ATTEMPT`] until one finishes or
/// [`WAIT`] has passed, then puts the connection's busy timeout back. Returns whether it fell
/// short, and the frames the WAL held. "Fell short" also covers another connection's checkpoint
/// running at the time (SQLite then answers busy at once) and another process's write lock.
fn restart(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<(bool, i64)> {
    conn.busy_timeout(ATTEMPT)?;
    let started = Instant::now();
    let out = loop {
        let attempt = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?))
        });
        match attempt {
            Ok((true, _)) if started.elapsed() < WAIT => std::thread::sleep(ATTEMPT / 20),
            other => break other,
        }
    };
    let reset = conn.busy_timeout(busy_timeout);
    let out = out?;
    reset?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_that_fell_short_is_tried_again_later_or_at_twice_the_size() {
        let mut forced = Forced::default();
        assert!(!forced.due(WAL_BOUND));
        assert!(forced.due(WAL_BOUND + 1));
        forced.failed = Some((Instant::now(), 50 << 20));
        assert!(!forced.due(60 << 20));
        assert!(!forced.due((100 << 20) - 1));
        assert!(forced.due(100 << 20));
        let Some(long_ago) = Instant::now().checked_sub(RETRY_AFTER) else {
            return; // a clock this young cannot say
        };
        forced.failed = Some((long_ago, 50 << 20));
        assert!(forced.due(60 << 20));
        assert!(!forced.due(WAL_BOUND));
    }
}
