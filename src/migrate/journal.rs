//! The journal: the state and the two files whose lengths it records, the mapping and the
//! problems file, advanced together.
//!
//! Documents are committed in feed order (their mapping and problem lines appended, their counts
//! added); a checkpoint makes both files durable, then saves the [`State`] that records their
//! lengths, so a kill at any moment leaves a state that vouches only for lines on disk. A resumed
//! run cuts both files back to those lengths ([`LineLog`]) and redoes the documents after `since`,
//! so each line is written once. The report in memory keeps the counts and only the first
//! [`KEPT_PROBLEMS`] problems: neither memory nor a checkpoint grows with the migration.
//!
//! A document met again (`--since` set back, a feed that rewinds, a changed document) is counted
//! in the run, but the report, like the files, takes only what is new: a problem the problems
//! file holds already ([`Recorded`]) is neither written nor counted again, and a document that
//! brings nothing new (every version already mapped, every problem already recorded) adds nothing
//! to the report, not even itself. So the report's counts of each problem kind are the problems
//! file's lines of that kind, however often the feed is read.

use std::path::PathBuf;

use super::changes::Seq;
use super::checkpoint::State;
use super::lines::{encode, LineLog};
use super::mapping::{Appended, MappedIndex, MappingWriter};
use super::recorded::Recorded;
use super::report::{read_problems, Counts, OutcomeKind, Problem, Report, KEPT_PROBLEMS};
use super::{DocDone, MigrateOptions};
use crate::Result;

/// The state and the two files whose lengths it records, advanced together: documents are
/// committed in feed order (their mapping and problem lines appended, their counts added), and
/// [`save`](Self::save) makes both files durable before the state that vouches for them.
pub(crate) struct Journal {
    state: State,
    path: PathBuf,
    /// The state's counts as committed so far, with the first problems.
    report: Report,
    map: MappingWriter,
    problems: LineLog,
    /// Which problems `problems` holds.
    recorded: Recorded,
}

impl Journal {
    /// Opens the mapping and the problems file, each cut back to the length `state` records, and
    /// reads back the first problems for the report. The problems of an old state file (`inline`)
    /// are written into the problems file and checkpointed at once, so they move only once.
    pub(crate) fn open(state: State, inline: Vec<Problem>, opts: &MigrateOptions) -> Result<Self> {
        let map = MappingWriter::open(&opts.map, state.map_len)?;
        let problems = LineLog::open(&opts.problems, state.problems_len, "problems file")?;
        let recorded = Recorded::open(&opts.problems, state.problems_len)?;
        let kept = read_problems(&opts.problems)?
            .take(KEPT_PROBLEMS)
            .collect::<Result<Vec<_>>>()?;
        let report = Report {
            counts: state.counts,
            problems: kept,
            problems_total: state.problems_total,
        };
        let mut journal = Journal {
            state,
            path: opts.state.clone(),
            report,
            map,
            problems,
            recorded,
        };
        if !inline.is_empty() {
            tracing::info!(
                problems = inline.len(),
                file = %opts.problems.display(),
                "moving the state file's problems into the problems file"
            );
            // All of them, as the old report counted them; their keys are taken for later runs.
            for p in inline {
                let (line, _) = journal.recorded_line(&p)?;
                journal.problem(line, p)?;
            }
            journal.save()?;
        }
        Ok(journal)
    }

    /// The state as of the last commit.
    pub(crate) fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// The shared index of mapped versions.
    pub(crate) fn mapped(&self) -> MappedIndex {
        self.map.index()
    }

    /// `p`'s line, and whether the problems file lacks it (its key is then taken as the line
    /// the caller appends next). One encoding for both, so the key is the written line's.
    fn recorded_line(&mut self, p: &Problem) -> Result<(Vec<u8>, bool)> {
        let line = encode(p, "problem")?;
        let new = self.recorded.is_new(&line, self.problems.len())?;
        Ok((line, new))
    }

    /// Appends `p`'s `line` to the problems file and keeps `p` for the report.
    fn problem(&mut self, line: Vec<u8>, p: Problem) -> Result<()> {
        self.problems.append_line(line)?;
        self.report.keep(p);
        Ok(())
    }

    /// Writes a finished document's new mapping lines and problem lines and adds what is new to
    /// the report's counts (see the module documentation): the state now covers it (once saved).
    /// Returns its counts, new or not, for the run's.
    pub(crate) fn commit(&mut self, seq: Seq, done: DocDone) -> Result<Counts> {
        let (mut counts, mut problems) = (done.counts, done.problems);
        // Whether it wrote a line; whether it met something already recorded.
        let (mut new, mut again) = (false, counts.already_mapped > 0);
        for (kind, entry) in done.stored {
            let size = entry.size;
            match self.map.append(entry.clone())? {
                Appended::Written => {
                    new = true;
                    counts.add(kind);
                    counts.bytes += size;
                }
                Appended::Duplicate => {
                    again = true;
                    counts.add(OutcomeKind::AlreadyMapped)
                }
                Appended::Conflict(old) => {
                    let mut p = Problem::doc(
                        OutcomeKind::Conflict,
                        &entry.name,
                        "version already mapped to other bytes; mapping left as it was",
                    )
                    .with_version(&entry.version)
                    .with_file(&entry.file);
                    p.expected = Some(old.integrity);
                    p.actual = Some(entry.integrity);
                    counts.add(OutcomeKind::Conflict);
                    problems.push(p);
                }
            }
        }
        let mut added = counts;
        for p in problems {
            let (line, is_new) = self.recorded_line(&p)?;
            if is_new {
                new = true;
                self.problem(line, p)?;
            } else {
                again = true;
                added.forget(p.kind);
            }
        }
        if new || !again {
            self.report.counts.merge(&added);
        }
        self.state.since = Some(seq);
        Ok(counts)
    }

    /// Makes the mapping and the problems file durable, then records their lengths and the
    /// counts in the state file: in that order, so the state never vouches for lines that are
    /// not on disk. Blocking.
    pub(crate) fn save(&mut self) -> Result<()> {
        self.state.map_len = self.map.sync()?;
        self.state.problems_len = self.problems.sync()?;
        self.state.counts = self.report.counts;
        self.state.problems_total = self.report.problems_total;
        self.state.save(&self.path)?;
        // After the state: the databases are derived from the files and may lag them.
        self.map.index_synced()?;
        self.recorded.synced(self.state.problems_len)?;
        tracing::debug!(
            since = ?self.state.since,
            map_len = self.state.map_len,
            problems_len = self.state.problems_len,
            "checkpoint"
        );
        Ok(())
    }

    /// The state and the report as of the last commit.
    pub(crate) fn finish(self) -> (State, Report) {
        (self.state, self.report)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use super::*;
    use serde_json::json;

    fn ok<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A document with one problem per id.
    fn doc(ids: &[String]) -> DocDone {
        let mut done = DocDone::default();
        done.counts.documents = 1;
        for id in ids {
            let p = Problem::doc(OutcomeKind::Deleted, id, "document deleted");
            done.record(OutcomeKind::Deleted, Some(p));
        }
        done
    }

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("p{i}")).collect()
    }

    fn file_ids(path: &Path) -> Vec<String> {
        ok(ok(read_problems(path)).map(|p| p.map(|p| p.id)).collect())
    }

    fn options(dir: &Path) -> MigrateOptions {
        MigrateOptions::new(dir.join("state.json"), dir.join("map.jsonl"))
    }

    fn reopen(opts: &MigrateOptions) -> Journal {
        let (state, inline) = ok(State::load_with_inline(&opts.state)).unwrap_or_else(|| {
            panic!("no state");
        });
        ok(Journal::open(state, inline, opts))
    }

    #[test]
    fn lines_after_the_checkpoint_are_cut_off_and_written_once_when_redone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let opts = options(dir.path());
        assert!(opts.problems.ends_with("state.json.problems.jsonl"));
        let state = State::new("http://h/db".into(), None);
        ok(state.save(&opts.state));
        let mut j = ok(Journal::open(state, Vec::new(), &opts));
        ok(j.commit(Seq(json!(1)), doc(&ids(0..3))));
        ok(j.save());
        // More commits, flushed to the file by a second save's sync but never recorded in the
        // state: what a kill between the two leaves (plus half a line).
        ok(j.commit(Seq(json!(2)), doc(&ids(3..5))));
        ok(j.problems.sync());
        drop(j);
        let mut f = ok(std::fs::OpenOptions::new()
            .append(true)
            .open(&opts.problems));
        ok(f.write_all(b"{\"kind\":\"del"));
        drop(f);
        let text = ok(std::fs::read_to_string(&opts.problems));
        assert_eq!(text.lines().count(), 6, "the lines are there: {text}");

        let mut j = reopen(&opts);
        assert_eq!(file_ids(&opts.problems), ids(0..3), "cut back");
        assert_eq!(j.report.problems_total, 3);
        ok(j.commit(Seq(json!(2)), doc(&ids(3..5))));
        ok(j.commit(Seq(json!(3)), doc(&ids(5..6))));
        ok(j.save());
        let (state, report) = j.finish();
        assert_eq!(file_ids(&opts.problems), ids(0..6), "each once, in order");
        assert_eq!(state.problems_total, 6);
        assert_eq!(state.counts.deleted, 6);
        assert_eq!(report.problems.len(), 6);
        let len = std::fs::metadata(&opts.problems).map(|m| m.len()).ok();
        assert_eq!(len, Some(state.problems_len));

        // A problems file shorter than the state says is refused, like a short mapping.
        ok(std::fs::write(&opts.problems, b""));
        let (state, inline) = ok(State::load_with_inline(&opts.state)).unwrap_or_else(|| {
            panic!("no state");
        });
        let err = Journal::open(state, inline, &opts).err();
        assert_eq!(
            err.map(|e| e.kind()),
            Some(crate::ErrorKind::Config),
            "shorter than the checkpoint"
        );
    }

    #[test]
    fn a_problem_met_again_is_neither_written_nor_counted_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let opts = options(dir.path());
        let state = State::new("http://h/db".into(), None);
        let mut j = ok(Journal::open(state, Vec::new(), &opts));
        ok(j.commit(Seq(json!(1)), doc(&ids(0..3))));
        // Met again before the checkpoint, and after it (by a resumed run), beside new ones.
        ok(j.commit(Seq(json!(2)), doc(&ids(1..2))));
        ok(j.save());
        drop(j);
        let mut j = reopen(&opts);
        let run = ok(j.commit(Seq(json!(3)), doc(&ids(2..5))));
        assert_eq!(
            (run.documents, run.deleted),
            (1, 3),
            "the run counts what it met"
        );
        ok(j.save());
        let (state, report) = j.finish();
        assert_eq!(file_ids(&opts.problems), ids(0..5), "each once");
        assert_eq!(report.problems_total, 5);
        // The document that brought nothing new is not counted; the one with new problems is.
        assert_eq!((state.counts.documents, state.counts.deleted), (2, 5));
    }

    #[test]
    fn the_state_does_not_grow_with_problems_and_the_report_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let opts = options(dir.path());
        let state = State::new("http://h/db".into(), None);
        let mut j = ok(Journal::open(state, Vec::new(), &opts));
        ok(j.commit(Seq(json!(1)), doc(&ids(0..10))));
        ok(j.save());
        let small = std::fs::metadata(&opts.state).map(|m| m.len()).ok();
        let n = KEPT_PROBLEMS * 3;
        ok(j.commit(Seq(json!(2)), doc(&ids(10..n))));
        ok(j.save());
        let large = std::fs::metadata(&opts.state).map(|m| m.len()).ok();
        let (small, large) = (small.unwrap_or(0), large.unwrap_or(u64::MAX));
        // Only the digits of the numbers may grow.
        assert!(large <= small + 32, "{small} -> {large} bytes");
        let (_, report) = j.finish();
        assert_eq!(report.problems_total, n as u64);
        assert_eq!(report.problems.len(), KEPT_PROBLEMS);
        assert_eq!(file_ids(&opts.problems), ids(0..n));

        // Resumed: the report's first problems are read back from the file.
        let j = reopen(&opts);
        assert_eq!(j.report, report);
    }

    #[test]
    fn an_old_state_s_inline_problems_move_into_the_file_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let opts = options(dir.path());
        let problems: Vec<Problem> = ids(0..4)
            .iter()
            .map(|id| Problem::doc(OutcomeKind::Deleted, id, "document deleted"))
            .collect();
        let old = json!({
            "format": 1, "source": "http://h/db", "since": 4, "map_len": 0,
            "report": {"counts": {"documents": 4, "migrated": 0, "already_present": 0,
                "already_mapped": 0, "digest_mismatch": 0, "attachment_missing": 0,
                "unreadable": 0, "conflict": 0, "orphan": 0, "unpublished": 0, "deleted": 4,
                "empty": 0, "design": 0, "bytes": 0}, "problems": problems},
            "caught_up": true
        });
        ok(std::fs::write(&opts.state, old.to_string()));
        let loaded = ok(State::load(&opts.state)).unwrap_or_else(|| panic!("no state"));
        assert_eq!((loaded.problems_total, loaded.problems_len), (4, 0));
        // Lines a first resume wrote before it was killed, ahead of its first checkpoint.
        ok(std::fs::write(
            &opts.problems,
            b"{\"kind\":\"deleted\",\"id\":\"p0\"",
        ));

        let mut j = reopen(&opts);
        assert_eq!(file_ids(&opts.problems), ids(0..4));
        let saved = ok(State::load(&opts.state)).unwrap_or_else(|| panic!("no state"));
        assert_eq!(saved.format, 2);
        assert_eq!(saved.problems_total, 4);
        assert_eq!(saved.since, Some(Seq(json!(4))));
        let text = ok(std::fs::read_to_string(&opts.state));
        assert!(!text.contains("\"report\""), "{text}");
        ok(j.commit(Seq(json!(5)), doc(&ids(4..5))));
        ok(j.save());
        drop(j);
        let j = reopen(&opts);
        assert_eq!(file_ids(&opts.problems), ids(0..5), "moved once");
        assert_eq!(j.report.counts.deleted, 5);
        assert_eq!(j.report.problems_total, 5);

        ok(std::fs::write(&opts.state, br#"{"format": 9}"#));
        let err = State::load(&opts.state).err().map(|e| e.kind());
        assert_eq!(err, Some(crate::ErrorKind::Config), "an unknown format");
    }
}
