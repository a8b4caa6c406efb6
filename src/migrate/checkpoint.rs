//! Resuming: the state file, and the tracker that decides how far it may advance.
//!
//! Documents finish out of order (several are in flight), but the checkpoint is a single `since`
//! value, so it may only move past a document once every document before it in the feed is done
//! too. [`Tracker`] holds finished documents until the prefix before them completes; the
//! driver's journal ([`super::journal`]) then appends their mapping lines and problem lines and
//! folds their counts into the report, in feed order, and periodically makes both files durable
//! and saves [`State`] (sequence, both files' lengths, cumulative counts) atomically: temp file,
//! fsync, rename, fsync of the directory. A kill at any moment leaves either the old state or the
//! new one, each consistent with a prefix of the mapping and of the problems file.
//!
//! The state file's size does not grow with the migration: its problems live in the problems
//! file, not here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::changes::Seq;
use super::report::{Counts, Problem};
use crate::{Error, Result};

/// The state file's format version: problems in the problems file, their count and its length here.
const FORMAT: u32 = 2;
/// The format before the problems file, whose report held every problem. Still resumed: its
/// problems are moved into the problems file once.
const FORMAT_INLINE_PROBLEMS: u32 = 1;

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
    /// The cumulative counts for the documents up to `since`.
    pub counts: Counts,
    /// How many problems the problems file holds up to `since`.
    pub problems_total: u64,
    /// The problems file's length at that position.
    pub problems_len: u64,
    /// Whether a run has reached the end of the feed (a later run picks up new changes only).
    #[serde(default)]
    pub caught_up: bool,
}

/// Just the format, to know how to read the rest.
#[derive(Deserialize)]
struct Format {
    format: u32,
}

/// A state file of [`FORMAT_INLINE_PROBLEMS`].
#[derive(Deserialize)]
struct InlineState {
    source: String,
    since: Option<Seq>,
    map_len: u64,
    report: InlineReport,
    #[serde(default)]
    caught_up: bool,
}

#[derive(Deserialize)]
struct InlineReport {
    counts: Counts,
    problems: Vec<Problem>,
}

impl State {
    /// A fresh state for `source`.
    pub(crate) fn new(source: String, since: Option<Seq>) -> State {
        State {
            format: FORMAT,
            source,
            since,
            map_len: 0,
            counts: Counts::default(),
            problems_total: 0,
            problems_len: 0,
            caught_up: false,
        }
    }

    /// Reads the state file, if there is one. A state file of the format before the problems file
    /// (its problems inline) reads as one whose problems are counted in `problems_total` but not
    /// yet in the problems file (`problems_len` 0): the next run moves them there.
    pub fn load(path: &Path) -> Result<Option<State>> {
        Ok(State::load_with_inline(path)?.map(|(mut state, inline)| {
            state.problems_total += inline.len() as u64;
            state
        }))
    }

    /// Reads the state file, if there is one, with the problems an old state file holds inline
    /// (counted in neither `problems_total` nor `problems_len`).
    pub(crate) fn load_with_inline(path: &Path) -> Result<Option<(State, Vec<Problem>)>> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let parse_err = |e: serde_json::Error| {
            Error::Config(format!(
                "state file {} is not a tarvault migration state: {e}",
                path.display()
            ))
        };
        match serde_json::from_slice::<Format>(&text)
            .map_err(parse_err)?
            .format
        {
            FORMAT => Ok(Some((
                serde_json::from_slice(&text).map_err(parse_err)?,
                Vec::new(),
            ))),
            FORMAT_INLINE_PROBLEMS => {
                let old: InlineState = serde_json::from_slice(&text).map_err(parse_err)?;
                let mut state = State::new(old.source, old.since);
                state.map_len = old.map_len;
                state.counts = old.report.counts;
                state.caught_up = old.caught_up;
                Ok(Some((state, old.report.problems)))
            }
            other => Err(Error::Config(format!(
                "state file {} has format {other}, this tarvault reads {FORMAT_INLINE_PROBLEMS} \
                 and {FORMAT}",
                path.display()
            ))),
        }
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
