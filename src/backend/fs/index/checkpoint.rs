//! Keeping the write-ahead log bounded while other processes read without pause.
//!
//! SQLite starts its WAL over only when a writer begins after a checkpoint that copied every frame
//! back into the database. The automatic checkpoint after a commit is passive: it copies frames up
//! to the oldest snapshot a reader still holds and gives up on the rest. With a `serve` per core
//! answering lookups, some process is nearly always inside a lookup that began before the commit,
//! so those checkpoints can fall short commit after commit while puts go on, and the WAL grew past
//! its 32 MiB target for as long as that lasted: to 169 MiB with three processes reading in a loop
//! and 768k records put (docs/index.md, "The WAL under constant reads"). The file never shrank.
//!
//! So a writer whose commit leaves the `-wal` file past [`WAL_BOUND`] runs a `RESTART` checkpoint,
//! which waits (briefly) for the readers of older snapshots to finish instead of giving up, and
//! then for every reader to have left the WAL, so that the next commit starts it over.
//! `journal_size_limit` ([`WAL_KEEP`]) then truncates the file when it is started over, which also
//! keeps its size a measure of what it holds.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// What `journal_size_limit` keeps of the `-wal` file when it starts over: a little above the
/// 32 Ki frames (of 1 KiB pages and their 24-byte headers) at which the automatic checkpoint runs,
/// so that a WAL cycling normally is reused in place, not truncated and grown again every time.
pub(super) const WAL_KEEP: i64 = 40 << 20;

/// The `-wal` file size past which a writer forces a checkpoint: half again the automatic one's.
const WAL_BOUND: u64 = 48 << 20;

/// How long the forced checkpoint waits for readers (and another process's write transaction).
/// It holds the write lock meanwhile, so puts elsewhere wait too; a lookup takes microseconds.
const WAIT: Duration = Duration::from_millis(500);

/// After a forced checkpoint that could not finish (a reader holding a transaction open for long:
/// a `sqlite3` shell, a stopped process; or readers slowed by a loaded machine past [`WAIT`]),
/// commits do not try again before this, or before the WAL has doubled since, so that a stuck
/// reader costs [`WAIT`] once per 10 s or per doubling (a few times in all), not every commit,
/// while a reader that was only slow holds the WAL to twice its size at most.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The forced checkpoints of one writing connection.
#[derive(Debug, Default)]
pub(super) struct Forced {
    /// When the last one fell short, and the WAL's size then.
    failed: Option<(Instant, u64)>,
}

impl Forced {
    /// Whether a WAL of `size` bytes is to be checkpointed now: past [`WAL_BOUND`], and, after
    /// one that fell short, [`RETRY_AFTER`] later or at twice the size it had then.
    fn due(&self, size: u64) -> bool {
        let wait = |(at, had): (Instant, u64)| at.elapsed() < RETRY_AFTER && size < had * 2;
        size > WAL_BOUND && !self.failed.is_some_and(wait)
    }

    /// After a commit through `conn` (the database at `db`): if the WAL is past [`WAL_BOUND`],
    /// checkpoints it with `RESTART`, waiting up to [`WAIT`]. The commit is done whatever happens
    /// here, so a checkpoint that fails is logged, not returned: the next one will try again.
    pub(super) fn after_commit(&mut self, conn: &Connection, db: &Path, busy_timeout: Duration) {
        let wal = super::sibling(db, "-wal");
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
                tracing::warn!(index = %db.display(), wal_bytes = size, frames, ?waited, "WAL past its bound and a reader held it: will try again");
            }
            Err(e) => {
                self.failed = Some((Instant::now(), size));
                tracing::warn!(index = %db.display(), wal_bytes = size, error = %e, "WAL past its bound and the checkpoint failed");
            }
        }
    }
}

/// How often the forced checkpoint looks again while it waits. SQLite's own busy timeout sleeps
/// up to 100 ms between looks, and a reader that ends one short transaction and begins the next
/// at once is free of the WAL only for moments, which such looks mostly miss.
const POLL: Duration = Duration::from_millis(1);

/// The busy handler of a forced checkpoint: looks again every [`POLL`], for [`WAIT`] in all.
fn poll(attempts: i32) -> bool {
    let limit = WAIT.as_millis() / POLL.as_millis().max(1);
    if u128::try_from(attempts).unwrap_or(u128::MAX) >= limit {
        return false;
    }
    std::thread::sleep(POLL);
    true
}

/// Runs `PRAGMA wal_checkpoint(RESTART)` waiting at most [`WAIT`] (about: [`poll`] counts its
/// looks), then puts the connection's busy timeout back. Returns whether it fell short, and the
/// frames the WAL held.
fn restart(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<(bool, i64)> {
    conn.busy_handler(Some(poll))?;
    let out = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
        Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?))
    });
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
