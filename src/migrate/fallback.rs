//! Versions whose document holds no attachment for them (a skim registry, an attachment lost).
//! Each is a failure (`attachment_missing`) unless `MigrateOptions::fetch_missing` asks for
//! npm-fullfat-registry's fallback: the tarball is fetched from the version's own `dist.tarball`
//! URL, verified against its `dist.shasum` and `dist.integrity` (there is no CouchDB md5 to hold
//! it to), and mapped like any other. The source's credentials are never sent there: the URL
//! may name any host.

use super::planner::{plan_version, Located, TarballJob};
use super::report::{OutcomeKind, Problem};

/// A version without its attachment: its problem, and the job that would fetch it from its
/// `dist.tarball` (or why there is none).
#[derive(Debug)]
pub(crate) struct Fallback {
    problem: Problem,
    job: Result<TarballJob, String>,
}

impl Fallback {
    /// Version `version` of document `id`, found without the attachment its `dist.tarball`
    /// names.
    pub(crate) fn new(id: &str, version: &str, found: Located<'_>) -> Fallback {
        let kind = OutcomeKind::AttachmentMissing;
        let why = format!("no attachment named by dist.tarball {}", found.tarball);
        let problem = Problem::doc(kind, id, why)
            .with_version(version)
            .with_file(&found.file);
        let job = job(id, version, found);
        Fallback { problem, job }
    }

    /// The job that fetches the tarball from its `dist.tarball` when `fetch` is asked for and
    /// there is one; otherwise the version's problem, saying why it is not fetched.
    pub(crate) fn resolve(self, fetch: bool) -> Result<TarballJob, Box<Problem>> {
        match (fetch, self.job) {
            (false, _) => Err(Box::new(self.problem)),
            (true, Ok(job)) => Ok(job),
            (true, Err(why)) => {
                let mut problem = self.problem;
                problem.detail = format!("{}; not fetched from it: {why}", problem.detail);
                Err(Box::new(problem))
            }
        }
    }
}

fn job(id: &str, version: &str, found: Located<'_>) -> Result<TarballJob, String> {
    let url = reqwest::Url::parse(found.tarball).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("not an http or https URL".into());
    }
    let mut job = plan_version(id, version, None, found).map_err(|p| p.detail)?;
    job.url = Some(url);
    Ok(job)
}
