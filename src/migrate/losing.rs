//! The tarballs only a losing revision of a conflicted document holds. Two replicas that each
//! took a publish leave the document in conflict: CouchDB serves one revision and keeps the other
//! as a leaf, attachments and all. The registry never serves the loser, so nothing of it is
//! mapped, but its tarballs are bytes no other copy may hold: retiring CouchDB must not drop
//! them. Each losing revision is read once (`GET /db/<id>?rev=`), planned as a feed's document
//! is, and every tarball no version of the winner has is fetched at that revision, verified
//! against that revision's own digests, and stored.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::changes::{ChangeRow, Seq};
use super::planner::{self, DocPlan, TarballJob};
use super::report::{OutcomeKind, Problem};
use super::transfer::{self, Context, Transferred};
use crate::{strict_json, Error};

/// Lists each of the document's `_conflicts` (asked for with `conflicts=true`): revisions that
/// lost to the one the feed sent. Only the winner is mapped, as only it is served; a losing
/// revision may hold versions and attachments the winner lacks (each replica took another
/// publish): without this line nothing would say they were left out of the mapping, and each is
/// kept in `plan.losing` so that its own tarballs are stored ([`tarballs`]).
pub(crate) fn list(id: &str, doc: &Map<String, Value>, plan: &mut DocPlan) {
    let Some(Value::Array(revs)) = doc.get("_conflicts") else {
        return;
    };
    for rev in revs {
        let Some(rev) = rev.as_str() else {
            let why = format!("_conflicts holds {rev}, not a revision");
            let kind = OutcomeKind::Unreadable;
            plan.decided.push((kind, Some(Problem::doc(kind, id, why))));
            continue;
        };
        let kind = OutcomeKind::LosingRevision;
        // Not naming the winner: the line stays the same when the winner moves on (a publish),
        // so the problems file lists each losing revision once.
        let why = format!(
            "conflicting revision {rev} lost to the revision served: its versions are not \
             mapped; the tarballs only it holds are stored (losing_tarball)"
        );
        plan.decided.push((kind, Some(Problem::doc(kind, id, why))));
        plan.losing.push(rev.to_string());
    }
}

/// The bytes of a document already in the store, each digest its document vouches for them by
/// as `algorithm-hex`: the winner's tarballs stored or mapped before, then what each losing
/// revision stored (a branch of many revisions holds the same tarballs). A losing revision's
/// tarball with any of them is not fetched again. Only what verified counts: a winner's version
/// whose bytes disagree with its digests vouches for nothing. Beside them, the orphan
/// attachments already listed ([`Orphan::keys`](super::orphans::Orphan::keys)), so that one
/// every revision holds has one line.
#[derive(Debug, Default)]
pub(crate) struct Vouched {
    stored: HashSet<String>,
    orphans: HashSet<String>,
}

impl Vouched {
    fn holds(&self, job: &TarballJob) -> bool {
        job_digests(job).any(|d| self.stored.contains(&d))
    }

    /// Adds a stored tarball's [`digests`].
    pub(crate) fn add(&mut self, digests: Vec<String>) {
        self.stored.extend(digests);
    }

    /// Notes an orphan attachment's [`keys`](super::orphans::Orphan::keys); false if its bytes
    /// were stored or listed already (then it needs no line of its own).
    pub(crate) fn first_orphan(&mut self, keys: &[String]) -> bool {
        let seen = keys
            .iter()
            .any(|k| self.stored.contains(k) || self.orphans.contains(k));
        self.note_orphan(keys);
        !seen
    }

    /// Notes an orphan attachment listed already (the winning revision's), so that a losing
    /// revision's orphan with the same bytes gets no line of its own.
    pub(crate) fn note_orphan(&mut self, keys: &[String]) {
        self.orphans.extend(keys.iter().cloned());
    }
}

/// Every digest `job` checks its bytes against, as `algorithm-hex`.
pub(crate) fn digests(job: &TarballJob) -> Vec<String> {
    job_digests(job).collect()
}

fn job_digests(job: &TarballJob) -> impl Iterator<Item = String> + '_ {
    job.checks
        .iter()
        .flat_map(|(_, i)| i.hashes())
        .map(|h| format!("{}-{}", h.algorithm().name(), h.to_hex()))
}

/// Reads the losing revision `rev` of document `id` and stores the tarballs only it holds (those
/// `vouched` does not hold, which gains those stored): one [`OutcomeKind::LosingTarball`] line
/// each, saying where it is stored or why it is not. Its orphan attachments that no other
/// revision holds are listed too ([`OutcomeKind::Orphan`]), and stored with `keep_orphans`, as
/// the winner's are: retiring CouchDB must not drop them either. `Err` as for
/// [`transfer::transfer`]: the server or the store failing after retries.
pub(crate) async fn tarballs(
    ctx: &Context,
    id: &str,
    rev: &str,
    vouched: &mut Vouched,
) -> Result<Vec<Problem>, Error> {
    let line = |detail: String| Problem::doc(OutcomeKind::LosingTarball, id, detail);
    let Some(body) = transfer::retried(id, || ctx.client.document_at(id, rev)).await? else {
        // Resolved meanwhile (a leaf that is deleted still answers, with `_deleted`), or purged.
        tracing::info!(id, rev, "losing revision no longer there (404)");
        return Ok(Vec::new());
    };
    let doc = match strict_json::parse(&body, None, "document", None) {
        Ok(doc) => doc,
        Err(e) => {
            let why = format!("conflicting revision {rev} cannot be read: {}", e.report());
            return Ok(vec![line(why)]);
        }
    };
    let row = ChangeRow {
        // Not used: a revision's plan does not depend on where the feed is.
        seq: Seq(Value::Null),
        id: id.to_string(),
        deleted: doc.get("_deleted").and_then(Value::as_bool) == Some(true),
        doc: Some(Ok(doc)),
    };
    let plan = planner::plan(&row);
    drop(row);
    let mut lines = Vec::new();
    for job in plan.jobs {
        if vouched.holds(&job) {
            continue;
        }
        let its = digests(&job);
        let mut p = line(format!("held only by conflicting revision {rev}"))
            .with_version(&job.version)
            .with_file(&job.file);
        let mut outcome = transfer::transfer(ctx, job).await?;
        if let Transferred::Recorded(OutcomeKind::Gone | OutcomeKind::AttachmentMissing, q) =
            &mut outcome
        {
            // A 404 at a revision just read: `transfer` would go on to compare it with the
            // document's current revision, the winner, which says nothing of the loser's (and
            // would name the winner, making a new line each time the winner moves on).
            q.detail = "the server has no such attachment at that revision (404)".into();
        }
        // Mapped already with the same shasum: those bytes are in the store.
        if !transfer::note_unmapped(&mut p, outcome) {
            continue;
        }
        if p.integrity.is_some() {
            vouched.add(its);
        }
        lines.push(p);
    }
    for orphan in plan.orphans {
        let keys = orphan.keys();
        if !vouched.first_orphan(&keys) {
            continue;
        }
        let orphan = orphan.of_losing(rev);
        let p = match ctx.keep_orphans {
            true => orphan.keep(ctx).await?,
            false => orphan.listed(),
        };
        if p.integrity.is_some() {
            vouched.add(keys);
        }
        lines.push(p);
    }
    Ok(lines)
}
