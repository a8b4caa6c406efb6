//! What a migration did: a count for every outcome, and a line for everything that was not a plain
//! success. Nothing a migration meets goes uncounted: an operator must be able to account for every
//! document and every attachment of the old registry.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::mapping::JsonLines;
use crate::{Error, Result};

/// The outcome of one item (a tarball, an attachment, or a whole document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A version's tarball was verified and stored as new bytes.
    Migrated,
    /// A version's tarball was verified; the store already held the same bytes (another version
    /// with identical bytes, an earlier import, or a run killed after storing it).
    AlreadyPresent,
    /// The version was already in the mapping with the same shasum (an incremental or `--follow`
    /// run meeting a document again): not fetched again.
    AlreadyMapped,
    /// **Failure.** The bytes disagree with a digest the document offers (CouchDB's md5, `shasum`,
    /// `integrity`) or with the attachment's length. Nothing was stored under any address.
    DigestMismatch,
    /// **Failure.** A version's `dist.tarball` names no attachment of the document (and, with
    /// [`MigrateOptions::fetch_missing`](super::MigrateOptions::fetch_missing), the URL answered
    /// 404), or the server answered 404 for it.
    AttachmentMissing,
    /// **Failure.** A document or version that cannot be understood as npm package metadata.
    Unreadable,
    /// **Failure.** A version already mapped to other bytes came back with different ones.
    Conflict,
    /// **Failure** (with inspection). The tarball breaks the tarball policy (hostile paths, bomb
    /// ratios, no package.json, …). Nothing was stored.
    Rejected,
    /// **Failure** (with inspection). The tarball's package.json names another package or
    /// version. Not mapped (its bytes, verified, may stay in the store, unreferenced).
    PackageMismatch,
    /// An attachment no version's `dist.tarball` refers to. Not mapped: no packument can lead a
    /// client to it (npm-skim-registry deletes these). Left in CouchDB unless
    /// [`MigrateOptions::keep_orphans`](super::MigrateOptions::keep_orphans) stores it, verified
    /// against CouchDB's md5.
    Orphan,
    /// A conflicting revision of a document (one of its `_conflicts`: two replicas each took a
    /// write), which lost to the revision CouchDB serves. Its versions are not mapped: the
    /// registry serves only the winning revision, so no packument leads a client to them. But
    /// they are still in the database, so each losing revision is listed, to be resolved before
    /// CouchDB is retired, and the tarballs only it holds are stored ([`LosingTarball`]).
    ///
    /// [`LosingTarball`]: OutcomeKind::LosingTarball
    LosingRevision,
    /// A tarball only a losing revision holds (no version of the winner has the same bytes):
    /// fetched at that revision and verified against that revision's own digests, then stored
    /// but not mapped, so that retiring CouchDB loses none of its bytes. Its line names the
    /// revision and the integrity it is stored under, or why it could not be stored (a mismatch,
    /// a missing attachment). Not a failure, whichever: nothing served leads to it.
    LosingTarball,
    /// An unpublished package (`time.unpublished`, no versions): nothing to serve.
    Unpublished,
    /// A deleted document (`"deleted": true` in `_changes`).
    Deleted,
    /// A version's attachment that went away while the run was reading it: the document was
    /// deleted or changed after the feed showed it, and the revision read is no longer kept
    /// (compacted). Not a failure: the feed shows the document again further on, and that later
    /// revision is what the registry serves.
    Gone,
    /// A document with neither versions nor an unpublish record (a package created but never
    /// published).
    Empty,
    /// A design document (`_design/…`, the registry couchapp), skipped.
    Design,
}

impl OutcomeKind {
    /// Whether this outcome makes a migration fail (non-zero exit): something the old registry
    /// served, or claims to have, did not make it into the store verified.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            OutcomeKind::DigestMismatch
                | OutcomeKind::AttachmentMissing
                | OutcomeKind::Unreadable
                | OutcomeKind::Conflict
                | OutcomeKind::Rejected
                | OutcomeKind::PackageMismatch
        )
    }

    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            OutcomeKind::Migrated => "migrated",
            OutcomeKind::AlreadyPresent => "already_present",
            OutcomeKind::AlreadyMapped => "already_mapped",
            OutcomeKind::DigestMismatch => "digest_mismatch",
            OutcomeKind::AttachmentMissing => "attachment_missing",
            OutcomeKind::Unreadable => "unreadable",
            OutcomeKind::Conflict => "conflict",
            OutcomeKind::Rejected => "rejected",
            OutcomeKind::PackageMismatch => "package_mismatch",
            OutcomeKind::Orphan => "orphan",
            OutcomeKind::LosingRevision => "losing_revision",
            OutcomeKind::LosingTarball => "losing_tarball",
            OutcomeKind::Unpublished => "unpublished",
            OutcomeKind::Deleted => "deleted",
            OutcomeKind::Gone => "gone",
            OutcomeKind::Empty => "empty",
            OutcomeKind::Design => "design",
        }
    }
}

/// How many of each outcome, plus documents and verified bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// `_changes` rows handled (every document, whatever became of it). In a migration's
    /// cumulative [`Report`], a row read again that brought nothing new (every version already
    /// mapped, every problem already in the problems file) is not counted again.
    pub documents: u64,
    /// See [`OutcomeKind::Migrated`].
    pub migrated: u64,
    /// See [`OutcomeKind::AlreadyPresent`].
    pub already_present: u64,
    /// See [`OutcomeKind::AlreadyMapped`].
    pub already_mapped: u64,
    /// See [`OutcomeKind::DigestMismatch`].
    pub digest_mismatch: u64,
    /// See [`OutcomeKind::AttachmentMissing`].
    pub attachment_missing: u64,
    /// See [`OutcomeKind::Unreadable`].
    pub unreadable: u64,
    /// See [`OutcomeKind::Conflict`].
    pub conflict: u64,
    /// See [`OutcomeKind::Rejected`].
    #[serde(default)]
    pub rejected: u64,
    /// See [`OutcomeKind::PackageMismatch`].
    #[serde(default)]
    pub package_mismatch: u64,
    /// See [`OutcomeKind::Orphan`].
    pub orphan: u64,
    /// See [`OutcomeKind::LosingRevision`].
    #[serde(default)]
    pub losing_revision: u64,
    /// See [`OutcomeKind::LosingTarball`].
    #[serde(default)]
    pub losing_tarball: u64,
    /// See [`OutcomeKind::Unpublished`].
    pub unpublished: u64,
    /// See [`OutcomeKind::Deleted`].
    pub deleted: u64,
    /// See [`OutcomeKind::Gone`].
    #[serde(default)]
    pub gone: u64,
    /// See [`OutcomeKind::Empty`].
    pub empty: u64,
    /// See [`OutcomeKind::Design`].
    pub design: u64,
    /// Bytes of tarballs verified (migrated or already present).
    pub bytes: u64,
}

impl Counts {
    /// Counts one outcome.
    pub fn add(&mut self, kind: OutcomeKind) {
        *self.slot(kind) += 1;
    }

    /// Uncounts one outcome counted before (a problem found already recorded).
    pub(crate) fn forget(&mut self, kind: OutcomeKind) {
        let slot = self.slot(kind);
        *slot = slot.saturating_sub(1);
    }

    fn slot(&mut self, kind: OutcomeKind) -> &mut u64 {
        match kind {
            OutcomeKind::Migrated => &mut self.migrated,
            OutcomeKind::AlreadyPresent => &mut self.already_present,
            OutcomeKind::AlreadyMapped => &mut self.already_mapped,
            OutcomeKind::DigestMismatch => &mut self.digest_mismatch,
            OutcomeKind::AttachmentMissing => &mut self.attachment_missing,
            OutcomeKind::Unreadable => &mut self.unreadable,
            OutcomeKind::Conflict => &mut self.conflict,
            OutcomeKind::Rejected => &mut self.rejected,
            OutcomeKind::PackageMismatch => &mut self.package_mismatch,
            OutcomeKind::Orphan => &mut self.orphan,
            OutcomeKind::LosingRevision => &mut self.losing_revision,
            OutcomeKind::LosingTarball => &mut self.losing_tarball,
            OutcomeKind::Unpublished => &mut self.unpublished,
            OutcomeKind::Deleted => &mut self.deleted,
            OutcomeKind::Gone => &mut self.gone,
            OutcomeKind::Empty => &mut self.empty,
            OutcomeKind::Design => &mut self.design,
        }
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &Counts) {
        self.documents += other.documents;
        self.migrated += other.migrated;
        self.already_present += other.already_present;
        self.already_mapped += other.already_mapped;
        self.digest_mismatch += other.digest_mismatch;
        self.attachment_missing += other.attachment_missing;
        self.unreadable += other.unreadable;
        self.conflict += other.conflict;
        self.rejected += other.rejected;
        self.package_mismatch += other.package_mismatch;
        self.orphan += other.orphan;
        self.losing_revision += other.losing_revision;
        self.losing_tarball += other.losing_tarball;
        self.unpublished += other.unpublished;
        self.deleted += other.deleted;
        self.gone += other.gone;
        self.empty += other.empty;
        self.design += other.design;
        self.bytes += other.bytes;
    }

    /// Outcomes that make the migration fail.
    pub fn failures(&self) -> u64 {
        self.digest_mismatch
            + self.attachment_missing
            + self.unreadable
            + self.conflict
            + self.rejected
            + self.package_mismatch
    }

    /// Tarballs now in the store and in the mapping.
    pub fn tarballs_ok(&self) -> u64 {
        self.migrated + self.already_present + self.already_mapped
    }
}

/// One item that was not a plain success, with what is known about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What happened.
    pub kind: OutcomeKind,
    /// The document id (the package name).
    pub id: String,
    /// The version, for version-level outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The attachment (tarball file name), where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Human-readable detail.
    pub detail: String,
    /// For mismatches: the digest the document offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// For mismatches: the digest of the bytes the server sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// For a tarball stored but not mapped ([`OutcomeKind::LosingTarball`], a kept
    /// [`OutcomeKind::Orphan`]): the integrity it is stored under. Named as in the mapping, so that such a line is a line of a keep file
    /// (`tarvault gc --keep`) as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
}

impl Problem {
    /// A problem about a whole document.
    pub fn doc(kind: OutcomeKind, id: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            id: id.to_string(),
            version: None,
            file: None,
            detail: detail.into(),
            expected: None,
            actual: None,
            integrity: None,
        }
    }

    /// The same problem about one version.
    pub fn with_version(mut self, version: &str) -> Problem {
        self.version = Some(version.to_string());
        self
    }

    /// The same problem about one attachment.
    pub fn with_file(mut self, file: &str) -> Problem {
        self.file = Some(file.to_string());
        self
    }

    /// One line for humans: `kind id@version (file): detail [expected …, found …]`.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}", self.kind.name(), self.id);
        if let Some(v) = &self.version {
            s.push('@');
            s.push_str(v);
        }
        if let Some(f) = &self.file {
            s.push_str(&format!(" ({f})"));
        }
        s.push_str(": ");
        s.push_str(&self.detail);
        if let (Some(e), Some(a)) = (&self.expected, &self.actual) {
            s.push_str(&format!(": expected {e}, found {a}"));
        }
        s
    }
}

/// How many problems a [`Report`] keeps in memory: the first ones, in feed order. A registry of
/// tens of millions of documents can have millions of problems (deleted packages, orphan
/// attachments), and holding them all would make a migration's memory, and what a summary prints,
/// grow with the registry. Every problem is in the problems file
/// ([`MigrateOptions::problems`](super::MigrateOptions::problems)); the report keeps enough to
/// show in a summary, and counts the rest.
pub const KEPT_PROBLEMS: usize = 1_000;

/// Counts and problems. A migration's report is cumulative across resumed runs: the state file
/// carries the counts for the documents already checkpointed, and the problems file their problems.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// How many of each outcome.
    pub counts: Counts,
    /// The first [`KEPT_PROBLEMS`] outcomes other than migrated / already present / already
    /// mapped, in feed order. All of them, in the same order, are in the problems file (read it
    /// with [`read_problems`]).
    pub problems: Vec<Problem>,
    /// How many problems there were, kept in [`problems`](Self::problems) or not.
    #[serde(default)]
    pub problems_total: u64,
}

impl Report {
    /// Records an outcome (and its problem, if it has one: kept while fewer than
    /// [`KEPT_PROBLEMS`] are, counted in any case).
    pub fn record(&mut self, kind: OutcomeKind, problem: Option<Problem>) {
        self.counts.add(kind);
        if let Some(p) = problem {
            self.keep(p);
        }
    }

    /// Counts a problem whose outcome is already counted, keeping it while there is room.
    pub(crate) fn keep(&mut self, problem: Problem) {
        self.problems_total += 1;
        if self.problems.len() < KEPT_PROBLEMS {
            self.problems.push(problem);
        }
    }

    /// Whether nothing failed.
    pub fn is_success(&self) -> bool {
        self.counts.failures() == 0
    }
}

/// Reads a problems file back, one problem at a time, in the order written (feed order): memory
/// holds one line, however many problems there are. Fails on a line that is not a problem, naming
/// it. A file whose migration was killed may end with lines past its last checkpoint (the state
/// file's `problems_len`), the last of them possibly cut short (an error): the next run cuts them
/// off and writes them again.
pub fn read_problems(path: &Path) -> Result<impl Iterator<Item = Result<Problem>>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    Ok(JsonLines::new(
        BufReader::new(file),
        path,
        "problems file",
        "a problem",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_the_documented_ones() {
        let mut c = Counts::default();
        for k in [
            OutcomeKind::Migrated,
            OutcomeKind::AlreadyPresent,
            OutcomeKind::AlreadyMapped,
            OutcomeKind::Orphan,
            OutcomeKind::LosingRevision,
            OutcomeKind::LosingTarball,
            OutcomeKind::Unpublished,
            OutcomeKind::Deleted,
            OutcomeKind::Gone,
            OutcomeKind::Empty,
            OutcomeKind::Design,
        ] {
            assert!(!k.is_failure(), "{k:?}");
            c.add(k);
        }
        assert_eq!(c.failures(), 0);
        for k in [
            OutcomeKind::DigestMismatch,
            OutcomeKind::AttachmentMissing,
            OutcomeKind::Unreadable,
            OutcomeKind::Conflict,
            OutcomeKind::Rejected,
            OutcomeKind::PackageMismatch,
        ] {
            assert!(k.is_failure(), "{k:?}");
            c.add(k);
        }
        assert_eq!(c.failures(), 6);
        assert_eq!(c.tarballs_ok(), 3);
    }

    #[test]
    fn problem_line_names_both_digests() {
        let mut p = Problem::doc(OutcomeKind::DigestMismatch, "@a/b", "bytes differ")
            .with_version("1.0.0")
            .with_file("b-1.0.0.tgz");
        p.expected = Some("sha1-AAAA".into());
        p.actual = Some("sha1-BBBB".into());
        assert_eq!(
            p.line(),
            "digest_mismatch @a/b@1.0.0 (b-1.0.0.tgz): bytes differ: expected sha1-AAAA, found sha1-BBBB"
        );
    }

    #[test]
    fn a_report_keeps_the_first_problems_and_counts_them_all() {
        let mut r = Report::default();
        let n = KEPT_PROBLEMS + 5;
        for i in 0..n {
            let p = Problem::doc(OutcomeKind::Deleted, &format!("p{i}"), "document deleted");
            r.record(OutcomeKind::Deleted, Some(p));
        }
        r.record(OutcomeKind::Migrated, None);
        assert_eq!(r.counts.deleted, n as u64);
        assert_eq!(r.problems_total, n as u64);
        assert_eq!(r.problems.len(), KEPT_PROBLEMS);
        assert_eq!(
            r.problems[KEPT_PROBLEMS - 1].id,
            format!("p{}", KEPT_PROBLEMS - 1)
        );
    }
}
