//! Attachments no version's `dist.tarball` names. No packument leads a client to one, so none is
//! mapped; each is listed, and with `MigrateOptions::keep_orphans` stored too, verified against
//! what CouchDB keeps of it (its md5 and length), so that retiring CouchDB loses none of the
//! bytes it held. A losing revision's orphans are handled alike (`losing.rs`), once each: one
//! whose bytes the winner holds too is not listed again.

use serde_json::Value;

use super::losing;
use super::planner::{stub_length, stub_md5, TarballJob};
use super::report::{OutcomeKind, Problem};
use super::transfer::{self, Context};
use crate::Error;

/// One orphan attachment: its line, and the job that would store it (or why there is none).
#[derive(Debug)]
pub(crate) struct Orphan {
    problem: Problem,
    job: Result<TarballJob, String>,
}

impl Orphan {
    /// The orphan attachment `name` of document `id` at revision `rev`, as its stub describes it.
    pub(crate) fn new(id: &str, rev: Option<&str>, name: &str, stub: &Value) -> Orphan {
        let problem = Problem::doc(
            OutcomeKind::Orphan,
            id,
            "attachment not referenced by any version's dist.tarball",
        )
        .with_file(name);
        let job = match (stub_md5(name, stub), stub_length(name, stub)) {
            (Err(why), _) | (_, Err(why)) => Err(why),
            // Storing bytes nothing vouches for would launder them into a verified store.
            (Ok(None), _) => Err("CouchDB keeps no md5 of it (or one of its gzip bytes) to \
                 verify it against"
                .into()),
            (Ok(Some(md5)), Ok(size)) => Ok(TarballJob {
                name: id.to_string(),
                version: String::new(),
                file: name.to_string(),
                attachment: name.to_string(),
                rev: rev.map(str::to_string),
                checks: vec![md5],
                size,
                shasum: None,
                url: None,
            }),
        };
        Orphan { problem, job }
    }

    /// The orphan of the losing revision `rev` of a conflicted document: its line says so.
    pub(crate) fn of_losing(mut self, rev: &str) -> Orphan {
        self.problem.detail = format!(
            "attachment of conflicting revision {rev} (which lost to the revision served) not \
             referenced by any of its versions' dist.tarball"
        );
        self
    }

    /// What tells this attachment's bytes from others' (see [`losing::Vouched`]): the digests
    /// its job checks them against, or where it has none to check, its name.
    pub(crate) fn keys(&self) -> Vec<String> {
        match &self.job {
            Ok(job) => losing::digests(job),
            Err(_) => vec![format!("attachment {:?}", self.problem.file)],
        }
    }

    /// Its line as it is, the attachment left where it is.
    pub(crate) fn listed(self) -> Problem {
        self.problem
    }

    /// Fetches and stores the attachment, verified, not mapped: its line then says where it is
    /// stored (with the `integrity` a keep file takes) or why it is not. `Err` as for
    /// [`transfer::transfer`].
    pub(crate) async fn keep(self, ctx: &Context) -> Result<Problem, Error> {
        let Orphan { mut problem, job } = self;
        let job = match job {
            Ok(job) => job,
            Err(why) => {
                problem.detail = format!("{}; not stored: {why}", problem.detail);
                return Ok(problem);
            }
        };
        // An orphan has no shasum to find in the mapping: never "already mapped".
        transfer::note_unmapped(&mut problem, transfer::transfer(ctx, job).await?);
        Ok(problem)
    }
}
