//! Resuming: the state file, and the tracker that decides how far it may advance.
//!
//! Documents finish out of order (several are in flight), but the checkpoint is a single `since`
//! value, so it may only move past a document once every document before it in the feed is done
//! too. [`Tracker`] holds finished documents until the prefix before them completes; the driver
//! then writes their mapping lines and folds their outcomes into the report, in feed order, and
//! periodically saves [`State`] (sequence, mapping length, cumulative report) atomically: temp
//! file, fsync, rename, fsync of the directory. A kill at any moment leaves either the old state
//! or the new one, each consistent with a prefix of the mapping.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::changes::Seq;
use super::report::Report;
use crate::{Error, Result};

/// The state file's format version.
const FORMAT: u32 = 1;

/// What a migration remembers between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version of this file.
    pub format: u32,
    /// The source database's URL without credentials: a state file resumes only its own source.
    pub source: String,
    /// The feed position every document up to which is fully done (`None`: the beginning).
    pub since: Option<Seq>,
    /// The mapping file's length at that position.
    pub map_len: u64,
    /// The cumulative report for the documents up to `since`.
    pub report: Report,
    /// Whether a run has reached the end of the feed (a later run picks up new changes only).
    #[serde(default)]
    pub caught_up: bool,
}

impl State {
    /// A fresh state for `source`.
    pub(crate) fn new(source: String, since: Option<Seq>) -> State {
        State {
            format: FORMAT,
            source,
            since,
            map_len: 0,
            report: Report::default(),
            caught_up: false,
        }
    }

    /// Reads the state file, if there is one.
    pub fn load(path: &Path) -> Result<Option<State>> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let state: State = serde_json::from_slice(&text).map_err(|e| {
            Error::Config(format!(
                "state file {} is not a tarvault migration state: {e}",
                path.display()
            ))
        })?;
        if state.format != FORMAT {
            return Err(Error::Config(format!(
                "state file {} has format {}, this tarvault reads {FORMAT}",
                path.display(),
                state.format
            )));
        }
        Ok(Some(state))
    }

    /// Replaces the state file atomically and durably.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let dir = parent_dir(path);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tarvault-state-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io("create temp in", &dir, e))?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::InvalidInput(format!("cannot encode state: {e}")))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.write_all(b"\n"))
            .map_err(|e| Error::io("write", tmp.path().to_path_buf(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("fsync", tmp.path().to_path_buf(), e))?;
        tmp.persist(path)
            .map_err(|e| Error::io("rename to", path, e.error))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync", &dir, e))?;
        Ok(())
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Documents in flight, in feed order, until the prefix before them is done.
#[derive(Debug)]
pub(crate) struct Tracker<T> {
    next: u64,
    slots: BTreeMap<u64, (Seq, Option<T>)>,
}

impl<T> Default for Tracker<T> {
    fn default() -> Self {
        Tracker {
            next: 0,
            slots: BTreeMap::new(),
        }
    }
}

impl<T> Tracker<T> {
    /// Registers the next row of the feed; returns its position.
    pub(crate) fn admit(&mut self, seq: Seq) -> u64 {
        let i = self.next;
        self.next += 1;
        self.slots.insert(i, (seq, None));
        i
    }

    /// Records that the document at `index` is done, and returns every document now at the front
    /// of the line, done, in feed order: those the checkpoint may pass.
    pub(crate) fn finish(&mut self, index: u64, result: T) -> Vec<(Seq, T)> {
        if let Some(slot) = self.slots.get_mut(&index) {
            slot.1 = Some(result);
        }
        let mut ready = Vec::new();
        while let Some(entry) = self.slots.first_entry() {
            if entry.get().1.is_none() {
                break;
            }
            let (seq, result) = entry.remove();
            if let Some(r) = result {
                ready.push((seq, r));
            }
        }
        ready
    }

    /// Documents admitted but not yet passed.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checkpoint_passes_only_a_done_prefix() {
        let mut t = Tracker::default();
        let a = t.admit(Seq(json!(10)));
        let b = t.admit(Seq(json!(11)));
        let c = t.admit(Seq(json!("12-x")));
        assert!(t.finish(c, "c").is_empty());
        assert!(t.finish(b, "b").is_empty());
        let ready = t.finish(a, "a");
        let seqs: Vec<String> = ready.iter().map(|(s, _)| s.to_query()).collect();
        assert_eq!(seqs, ["10", "11", "12-x"]);
        assert_eq!(
            ready.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn state_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("state.json");
        assert!(State::load(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        let mut s = State::new("http://h/db".into(), Some(Seq(json!("3-abc"))));
        s.map_len = 42;
        s.save(&path).unwrap_or_else(|e| panic!("{e}"));
        s.map_len = 43;
        s.save(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = State::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, Some(s));
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1);
        std::fs::write(&path, b"{not json").unwrap_or_else(|e| panic!("{e}"));
        let err = State::load(&path)
            .err()
            .unwrap_or_else(|| panic!("garbage"));
        assert_eq!(err.kind(), crate::ErrorKind::Config);
    }
}
