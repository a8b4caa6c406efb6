//! The alias index of a filesystem store: which sha512 blob has a given sha1 or blake3 digest.
//!
//! It is an append-only log of fixed-shape lines, one per committed blob:
//!
//! ```text
//! v1 <sha512 hex> <sha1 hex> <blake3 hex> <size>
//! ```
//!
//! Appends are single `write`s to an `O_APPEND` file, so concurrent writers (threads or processes)
//! never interleave. A crash can leave a torn last line; the parser looks for the last `v1 ` in each
//! line, so a torn line costs only itself. The log is a cache of what the blobs themselves say, so it
//! is loaded lazily (a store used only by sha512 never pays for it) and `fsck` rebuilds it from
//! scratch by re-hashing every blob.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::alias_map::{line, parse_line, AliasMap};
use crate::backend::BlobKey;
use crate::integrity::{Digests, Hash};

#[derive(Default)]
struct State {
    /// Bytes of the log already parsed into the maps (`None`: not loaded yet).
    loaded_to: Option<u64>,
    /// Partial last line carried over between refreshes.
    carry: Vec<u8>,
    map: AliasMap,
    appender: Option<File>,
    /// When the log was last read, to re-read it at most every [`REFRESH_EVERY`] for records
    /// that are missing (other processes append to it).
    refreshed_at: Option<Instant>,
}

/// How often a missing record may send a reader back to the log for lines that other processes
/// appended since (a lookup by sha1 or blake3 always does).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

impl State {
    fn refresh_due(&self) -> bool {
        self.refreshed_at
            .is_none_or(|t| t.elapsed() >= REFRESH_EVERY)
    }
}

pub(crate) struct AliasIndex {
    path: PathBuf,
    state: Mutex<State>,
}

impl AliasIndex {
    pub(crate) fn new(path: PathBuf) -> Self {
        AliasIndex {
            path,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records digests of committed blobs; with `sync`, they are durable on return.
    pub(crate) fn append(&self, all: &[Digests], sync: bool) -> io::Result<()> {
        if all.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(all.len() * 250);
        for d in all {
            text.push_str(&line(d));
        }
        let mut state = self.lock();
        if state.appender.is_none() {
            state.appender = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        if let Some(f) = state.appender.as_mut() {
            f.write_all(text.as_bytes())?;
            if sync {
                f.sync_data()?;
            }
        }
        // Keep the maps current without re-reading what we just wrote; other processes' lines are
        // picked up by the next refresh.
        if state.loaded_to.is_some() {
            for d in all {
                state.map.insert(d);
            }
        }
        Ok(())
    }

    /// The blob with this sha1 or blake3 digest, if the log knows it.
    pub(crate) fn resolve(&self, hash: &Hash) -> io::Result<Option<BlobKey>> {
        let mut state = self.lock();
        if let Some(k) = state.map.lookup(hash) {
            return Ok(Some(k));
        }
        // Unknown here: maybe another process committed it since we last read the log.
        self.refresh(&mut state)?;
        Ok(state.map.lookup(hash))
    }

    /// The digests recorded for a blob, without touching the disk. `None` when that takes the log:
    /// it was never loaded, or it has no record of the blob and may have one by now (another
    /// process committed the blob since it was last read).
    pub(crate) fn digests_if_loaded(&self, key: &BlobKey) -> Option<Option<Digests>> {
        let state = self.lock();
        state.loaded_to?;
        match state.map.digests(key) {
            Some(d) => Some(Some(d)),
            None if state.refresh_due() => None,
            None => Some(None),
        }
    }

    /// The digests recorded for a blob, reading the log's new lines if it has none yet (at most
    /// every [`REFRESH_EVERY`]).
    pub(crate) fn digests(&self, key: &BlobKey) -> io::Result<Option<Digests>> {
        let mut state = self.lock();
        if state.loaded_to.is_none() || (state.map.digests(key).is_none() && state.refresh_due()) {
            self.refresh(&mut state)?;
        }
        Ok(state.map.digests(key))
    }

    /// Replaces the log atomically with exactly these entries.
    pub(crate) fn rebuild(&self, all: &[Digests], sync: bool) -> io::Result<()> {
        let mut state = self.lock();
        let tmp = self
            .path
            .with_extension(format!("rebuild.{}", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            let mut text = String::with_capacity(all.len() * 250);
            for d in all {
                text.push_str(&line(d));
            }
            f.write_all(text.as_bytes())?;
            if sync {
                f.sync_all()?;
            }
        }
        std::fs::rename(&tmp, &self.path)?;
        if sync {
            if let Some(dir) = self.path.parent() {
                super::durable::sync_dir(dir)?;
            }
        }
        *state = State::default();
        self.refresh(&mut state)
    }

    /// Reads whatever the log gained since the last read.
    fn refresh(&self, state: &mut State) -> io::Result<()> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                state.loaded_to = Some(0);
                state.refreshed_at = Some(Instant::now());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let from = state.loaded_to.unwrap_or(0);
        let len = f.metadata()?.len();
        if len < from {
            // Rebuilt by someone else: start over.
            let appender = state.appender.take();
            *state = State {
                appender,
                ..State::default()
            };
            return self.refresh(state);
        }
        f.seek(SeekFrom::Start(from))?;
        let mut buf = std::mem::take(&mut state.carry);
        f.take(len - from).read_to_end(&mut buf)?;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let (done, rest) = buf.split_at(complete);
        for raw in done.split(|b| *b == b'\n') {
            if let Some(d) = parse_line(raw) {
                state.map.insert(&d);
            }
        }
        state.carry = rest.to_vec();
        state.loaded_to = Some(len);
        state.refreshed_at = Some(Instant::now());
        Ok(())
    }
}
