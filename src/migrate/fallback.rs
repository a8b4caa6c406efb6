//! Versions whose document holds no attachment for them (a skim registry, an attachment lost).
//! Each is a failure (`attachment_missing`) unless `MigrateOptions::fetch_missing` asks for
//! npm-fullfat-registry's fallback: the tarball is fetched from the version's own `dist.tarball`
//! URL, verified against its `dist.shasum` and `dist.integrity` (there is no CouchDB md5 to hold
//! it to), and mapped like any other. The source's credentials are never sent there: the URL
//! may name any host.

use serde_json::Value;

use super::planner::{attachment_candidates, plan_version, Located, TarballJob};
use super::report::Problem;

/// What stands for a stub that is not there: no md5, no length.
static NO_STUB: Value = Value::Null;

/// A version without its attachment: its problem, and the job that would fetch it from its
/// `dist.tarball` (or why there is none).
#[derive(Debug)]
pub(crate) struct Fallback {
    problem: Problem,
    job: Result<TarballJob, String>,
}

impl Fallback {
    /// Version `version` of document `id`, whose `meta` names an attachment the document lacks
    /// (`problem` says so).
    pub(crate) fn new(id: &str, version: &str, meta: &Value, problem: Problem) -> Fallback {
        let job = job(id, version, meta);
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

fn job(id: &str, version: &str, meta: &Value) -> Result<TarballJob, String> {
    let dist = meta
        .get("dist")
        .and_then(Value::as_object)
        .ok_or("no dist object")?;
    let tarball = dist
        .get("tarball")
        .and_then(Value::as_str)
        .ok_or("no dist.tarball")?;
    let url = reqwest::Url::parse(tarball).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("not an http or https URL".into());
    }
    let (file, _) = attachment_candidates(id, tarball).ok_or("it names no file")?;
    let found = Located {
        dist,
        attachment: file.clone(),
        file,
        stub: &NO_STUB,
    };
    let mut job = plan_version(id, version, None, found).map_err(|p| p.detail)?;
    job.url = Some(url);
    Ok(job)
}
