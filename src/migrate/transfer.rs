//! One tarball: stream the attachment from CouchDB straight into [`Store::put`], checking every
//! digest the document offers, each on its own, with retries for what may be transient.

use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use super::changes::backoff;
use super::couch::{CouchClient, FetchError};
use super::mapping::{MapEntry, MappedIndex};
use super::planner::TarballJob;
use super::progress::Progress;
use super::report::{OutcomeKind, Problem};
use crate::store::{Expectations, LateExpectations};
use crate::{Error, PutOptions, Store};

/// Downloads of one tarball before its failure is taken as the server's real answer.
const ATTEMPTS: u32 = 4;

/// What the workers share.
pub(crate) struct Context {
    pub client: CouchClient,
    pub store: Store,
    /// Bounds tarballs in flight: the back-pressure on both the server and the store.
    pub permits: Arc<Semaphore>,
    pub mapped: MappedIndex,
    pub progress: Arc<Progress>,
    /// Inspect tarballs under this policy (`--inspect`).
    pub inspect: Option<crate::tarball::Policy>,
    /// Store orphan attachments too (`--keep-orphans`).
    pub keep_orphans: bool,
    /// Fetch versions without an attachment from their `dist.tarball` (`--fetch-missing`).
    pub fetch_missing: bool,
}

/// How one tarball ended, short of a run-stopping error.
#[derive(Debug)]
pub(crate) enum Transferred {
    /// Verified and in the store (`Migrated` or `AlreadyPresent`), with its mapping entry.
    Stored(OutcomeKind, MapEntry),
    /// Already in the mapping with the same shasum; not fetched.
    AlreadyMapped,
    /// An outcome with its problem line: a failure (mismatch, missing), or an attachment gone
    /// meanwhile.
    Recorded(OutcomeKind, Problem),
}

/// Moves one tarball. `Err` is for what must stop the run without checkpointing past this
/// document (the server or the store failing, after retries), so that a re-run tries it again;
/// everything that is the document's own fault is an outcome.
pub(crate) async fn transfer(ctx: &Context, job: TarballJob) -> Result<Transferred, Error> {
    if already_mapped(ctx, &job) {
        return Ok(Transferred::AlreadyMapped);
    }
    let _permit = ctx
        .permits
        .acquire()
        .await
        .map_err(|_| Error::InvalidInput("migration shut down".into()))?;
    // CouchDB's own record of the attachment's size (its stub's `length`; a tarball fetched from
    // its `dist.tarball` has none): on a store without trusted records of sizes (S3, Manta), an
    // object at the tarball's sha512 is taken, or replaced, by its size before the bytes are read,
    // not held until they are to compare sizes; and bytes past it are not read on.
    let size = job.size.as_ref().filter(|_| job.url.is_none());
    let options = PutOptions {
        // Only so that every algorithm is computed (md5 too) and a stored sha512 is recognised:
        // the bytes are judged by `checks`, below, each field on its own.
        expected: job.all_hashes(),
        expected_size: size.map(|(_, n)| *n),
        label: Some(job.label()),
        // Inspection runs in the same pass, on its own thread, and a rejected tarball is never
        // committed.
        // An orphan names no version to expect.
        expect_package: (ctx.inspect.is_some() && !job.version.is_empty())
            .then(|| (job.name.clone(), job.version.clone())),
        inspect: ctx.inspect.clone(),
        ..PutOptions::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let retry = |e: &Error| {
            tracing::warn!(tarball = %job.label(), attempt, error = %e.report(), "download failed; retrying");
        };
        let fetched = match &job.url {
            Some(url) => ctx.client.elsewhere(url.clone()).await,
            None => {
                ctx.client
                    .attachment(&job.name, &job.attachment, job.rev.as_deref())
                    .await
            }
        };
        let resp = match fetched {
            Ok(Some(resp)) => resp,
            Ok(None) if job.url.is_some() => {
                let kind = OutcomeKind::AttachmentMissing;
                let detail = "no attachment, and its dist.tarball answers 404";
                return Ok(Transferred::Recorded(kind, problem(&job, kind, detail)));
            }
            // Another host's refusal (401, 403, 410…) is this version's failure, not the run's:
            // it is not the source failing.
            Err(FetchError::Fatal(e)) if job.url.is_some() => {
                let kind = OutcomeKind::AttachmentMissing;
                let detail = format!("no attachment, and its dist.tarball: {}", e.report());
                return Ok(Transferred::Recorded(kind, problem(&job, kind, &detail)));
            }
            Ok(None) => return missing(ctx, &job).await,
            Err(FetchError::Transient(e)) if attempt < ATTEMPTS => {
                retry(&e);
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(e) => return Err(e.into_error()),
        };
        let progress = ctx.progress.clone();
        let body = resp
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url()))
            .inspect_ok(move |chunk| progress.bytes(chunk.len() as u64));
        // Known before the download, but given as the store's named checks so that a mismatch
        // says which field of the document was wrong.
        let checks = Expectations {
            checks: job.checks.clone(),
            size: job.size.clone(),
            package: None,
        };
        let checks = LateExpectations {
            expectations: futures::future::ready(Ok(checks)).boxed(),
            // Every algorithm the checks name is in `options.expected` already.
            compute: Vec::new(),
            // A size mismatch, even one found before the body ends, names the stub's `length`.
            size_field: size.map(|(field, _)| field.clone()),
        };
        match ctx
            .store
            .put_late(body.boxed(), &options, Some(checks))
            .await
        {
            Ok(put) => {
                ctx.progress.tarball_done();
                let kind = if put.stored {
                    OutcomeKind::Migrated
                } else {
                    OutcomeKind::AlreadyPresent
                };
                tracing::debug!(tarball = %job.label(), outcome = kind.name(), "verified");
                return Ok(Transferred::Stored(
                    kind,
                    MapEntry {
                        name: job.name,
                        version: job.version,
                        file: job.file,
                        integrity: put.digests.integrity().to_string(),
                        shasum: put.digests.shasum(),
                        size: put.digests.size,
                    },
                ));
            }
            Err(Error::IntegrityMismatch {
                what,
                expected,
                actual,
            }) => {
                let mut p = problem(
                    &job,
                    OutcomeKind::DigestMismatch,
                    &format!("bytes do not match {what}; nothing stored"),
                );
                p.expected = Some(expected);
                p.actual = Some(actual);
                return Ok(Transferred::Recorded(OutcomeKind::DigestMismatch, p));
            }
            Err(Error::PackageMismatch {
                expected, actual, ..
            }) => {
                let mut p = problem(
                    &job,
                    OutcomeKind::PackageMismatch,
                    "the tarball's package.json names another package or version; not stored",
                );
                p.expected = Some(expected);
                p.actual = Some(actual);
                return Ok(Transferred::Recorded(OutcomeKind::PackageMismatch, p));
            }
            Err(e) if e.kind() == crate::ErrorKind::Rejected => {
                let reason = match &e {
                    Error::Tarball { source, .. } => crate::ErrorReport::new(source).to_string(),
                    Error::Rejected { reason, .. } => reason.clone(),
                    other => other.report().to_string(),
                };
                let p = problem(
                    &job,
                    OutcomeKind::Rejected,
                    &format!("tarball rejected by the inspection policy, not stored: {reason}"),
                );
                return Ok(Transferred::Recorded(OutcomeKind::Rejected, p));
            }
            // The body broke off mid-way: nothing was stored; fetch it again.
            Err(e @ Error::Input { .. }) if attempt < ATTEMPTS => {
                retry(&e);
                tokio::time::sleep(backoff(attempt)).await;
            }
            // A delete (a gc in another process) removed the blob this put found stored before
            // the put could mark it recent: nothing is stored, and a put again writes it anew.
            Err(e) if e.kind() == crate::ErrorKind::Conflict && attempt < ATTEMPTS => {
                tracing::info!(tarball = %job.label(), attempt, error = %e.report(), "overtaken by a delete; putting it again");
            }
            // Named, since the run ends on it: which tarball, from where, after how many tries.
            Err(Error::Input { source, .. }) => {
                return Err(Error::Backend {
                    backend: ctx.client.source().to_string(),
                    message: format!(
                        "downloading {}: the body broke off {ATTEMPTS} times",
                        job.label()
                    ),
                    source: Some(Box::new(source)),
                })
            }
            Err(e) => return Err(e),
        }
    }
}

/// The attachment is 404. At the revision the feed showed, that means the revision is no longer
/// kept: the document was deleted or changed since (and compacted), and the feed shows it again
/// further on, so it is noted, not failed. A document still at that revision, or one read without
/// a revision, really lacks it.
async fn missing(ctx: &Context, job: &TarballJob) -> Result<Transferred, Error> {
    let missing = |detail: &str| {
        let kind = OutcomeKind::AttachmentMissing;
        Ok(Transferred::Recorded(kind, problem(job, kind, detail)))
    };
    let Some(rev) = job.rev.as_deref() else {
        return missing("the server has no such attachment (404)");
    };
    let now = retried(&job.name, || ctx.client.current_rev(&job.name)).await?;
    let detail = match now {
        // The revision is not named: a problem is recorded once by its line, and the same broken
        // version met again at a later revision (the document changed otherwise) is the same
        // problem, not a second one.
        Some(now) if now == rev => {
            tracing::info!(tarball = %job.label(), rev, "404 at the revision that lists it");
            return missing(
                "the server has no such attachment (404) at the revision that lists it",
            );
        }
        Some(now) => format!("the document changed to revision {now} after {rev} was read"),
        None => format!("the document was deleted after revision {rev} was read"),
    };
    let kind = OutcomeKind::Gone;
    let detail = format!("{detail}, and {rev} is no longer kept: not migrated");
    tracing::info!(tarball = %job.label(), "{detail}");
    Ok(Transferred::Recorded(kind, problem(job, kind, &detail)))
}

/// A request about the document `id`, asked again (after a backoff) while it fails in a way that
/// may pass, up to [`ATTEMPTS`] times in all.
pub(crate) async fn retried<T, F, Fut>(id: &str, mut request: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, FetchError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request().await {
            Ok(answer) => return Ok(answer),
            Err(FetchError::Transient(e)) if attempt < ATTEMPTS => {
                tracing::warn!(id, attempt, error = %e.report(), "document GET failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e.into_error()),
        }
    }
}

/// Writes into `line` what became of a tarball stored but never mapped (a losing revision's, a
/// kept orphan): where it is stored and its `integrity` (so that the line is a keep-file line,
/// see `Problem::integrity`), or why it is not stored. `false` for a tarball already mapped: its
/// bytes are stored under the version that maps them, and `line` is left as it was.
pub(crate) fn note_unmapped(line: &mut Problem, outcome: Transferred) -> bool {
    match outcome {
        Transferred::AlreadyMapped => return false,
        Transferred::Stored(_, entry) => {
            line.detail = format!(
                "{}: verified and stored as {}, not mapped",
                line.detail, entry.integrity
            );
            line.integrity = Some(entry.integrity);
        }
        Transferred::Recorded(_, p) => {
            line.detail = format!("{}; not stored: {}", line.detail, p.detail);
            (line.expected, line.actual) = (p.expected, p.actual);
        }
    }
    true
}

fn problem(job: &TarballJob, kind: OutcomeKind, detail: &str) -> Problem {
    Problem::doc(kind, &job.name, detail)
        .with_version(&job.version)
        .with_file(&job.file)
}

/// Whether the mapping already has this version with the document's shasum and file name.
fn already_mapped(ctx: &Context, job: &TarballJob) -> bool {
    let Some(shasum) = &job.shasum else {
        return false;
    };
    match ctx.mapped.get(&job.name, &job.version) {
        Ok(e) => e.is_some_and(|e| &e.shasum == shasum && e.file == job.file),
        Err(e) => {
            // Fetched again, as if unmapped; the mapping keeps its first entry either way.
            tracing::warn!(error = %e.report(), name = %job.name, version = %job.version, "cannot tell whether a version is mapped");
            false
        }
    }
}
