//! From one `_changes` row to the tarballs to move, and every outcome that is already decided by
//! reading the document alone (deleted, unpublished, orphan and missing attachments, unreadable
//! metadata).
//!
//! A version's attachment is named by the **last path segment of its `dist.tarball`**, as the
//! registry couchapp's `package` show function, npm-fullfat-registry and npm-skim-registry all do
//! — never rebuilt from name and version. Scoped packages add two wrinkles: the URL may encode
//! the scope's slash (`@scope%2fname`), and later npm clients stored the attachment under
//! `@scope/name-1.0.0.tgz` (with a slash) while the URL's last segment is `name-1.0.0.tgz`.

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use super::changes::ChangeRow;
use super::report::{OutcomeKind, Problem};
use crate::integrity::{Algorithm, Hash, Integrity};
use crate::strict_json::TWICE;

/// One version's tarball to fetch, verify and store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TarballJob {
    /// The package name (the document id).
    pub name: String,
    /// The version (its key in `versions`); empty for an orphan attachment.
    pub version: String,
    /// The tarball's file name: the last segment of `dist.tarball`, which old URLs end with.
    pub file: String,
    /// The attachment's key in the document (usually `file`).
    pub attachment: String,
    /// The document's revision as the feed showed it: the attachment is fetched at that revision,
    /// so a document deleted or changed meanwhile still yields the bytes it described.
    pub rev: Option<String>,
    /// Every digest the document offers, each with the field it came from (`dist.integrity`,
    /// `dist.shasum`, the attachment's md5; at least one). Each must hold on its own: two fields
    /// merged into one integrity would pass when either matched.
    pub checks: Vec<(String, Integrity)>,
    /// The attachment's `length`, with the field it came from.
    pub size: Option<(String, u64)>,
    /// `dist.shasum`, lower-case, to recognise versions already mapped.
    pub shasum: Option<String>,
    /// Where to fetch the tarball when the document holds no attachment for it: its
    /// `dist.tarball` (`MigrateOptions::fetch_missing`). `None`: the attachment, from CouchDB.
    pub url: Option<reqwest::Url>,
}

impl TarballJob {
    /// `name@version`, for errors and logs.
    pub fn label(&self) -> String {
        match self.version.as_str() {
            // An orphan attachment: no version names it.
            "" => format!("{} ({})", self.name, self.file),
            v => format!("{}@{v} ({})", self.name, self.file),
        }
    }

    /// Every hash of every check in one integrity: what the store must compute while the bytes go
    /// by (md5 is not among its usual digests), and the sha512 that may name a blob already
    /// stored. Not what the bytes are judged by: that is each of [`TarballJob::checks`].
    pub fn all_hashes(&self) -> Option<Integrity> {
        crate::store::all_hashes(&self.checks)
    }
}

/// What reading one document decided.
#[derive(Debug, Default)]
pub(crate) struct DocPlan {
    /// Tarballs to move, in version order.
    pub jobs: Vec<TarballJob>,
    /// Outcomes decided without fetching anything.
    pub decided: Vec<(OutcomeKind, Option<Problem>)>,
    /// Versions whose document holds no attachment for them: failures, or fetched from their
    /// `dist.tarball` with `MigrateOptions::fetch_missing`.
    pub fallbacks: Vec<super::fallback::Fallback>,
    /// Attachments no version names: listed, and stored with `MigrateOptions::keep_orphans`.
    pub orphans: Vec<super::orphans::Orphan>,
    /// The revisions that lost to this one (its `_conflicts`), each read in turn for the
    /// tarballs only it holds (`super::losing`).
    pub losing: Vec<String>,
}

impl DocPlan {
    fn decide(kind: OutcomeKind, problem: Problem) -> DocPlan {
        DocPlan {
            decided: vec![(kind, Some(problem))],
            ..DocPlan::default()
        }
    }
}

/// Plans one row of the feed.
pub(crate) fn plan(row: &ChangeRow) -> DocPlan {
    let id = row.id.as_str();
    if row.deleted {
        return DocPlan::decide(
            OutcomeKind::Deleted,
            Problem::doc(OutcomeKind::Deleted, id, "document deleted"),
        );
    }
    if id.starts_with("_design/") {
        return DocPlan::decide(
            OutcomeKind::Design,
            Problem::doc(OutcomeKind::Design, id, "design document skipped"),
        );
    }
    let unreadable = |why: &str| {
        DocPlan::decide(
            OutcomeKind::Unreadable,
            Problem::doc(OutcomeKind::Unreadable, id, why),
        )
    };
    if unaddressable(id) {
        return unreadable(
            "a document id of `.` or `..` cannot be asked for: HTTP removes it from the path",
        );
    }
    // Mapped, it could not be served: the server reads the package from the URL's path.
    if let Err(why) = crate::package_name::addressable(id) {
        return unreadable(&format!(
            "not a package name a tarball URL can carry: {why}"
        ));
    }
    let doc = match &row.doc {
        None => return unreadable("the feed carried no document body"),
        // Nothing of it is moved: we would check one of the two values, clients read the other.
        Some(Err(path)) => return unreadable(&format!("{path} {TWICE}")),
        Some(Ok(doc)) => doc,
    };
    let Some(doc) = doc.as_object() else {
        return unreadable("document is not a JSON object");
    };
    let none = Map::new();
    let attachments = match doc.get("_attachments") {
        None | Some(Value::Null) => &none,
        Some(Value::Object(m)) => m,
        Some(_) => return unreadable("_attachments is not an object"),
    };
    let versions = match doc.get("versions") {
        None | Some(Value::Null) => &none,
        Some(Value::Object(m)) => m,
        Some(_) => return unreadable("versions is not an object"),
    };
    let mut plan = DocPlan::default();
    super::losing::list(id, doc, &mut plan);
    if versions.is_empty() {
        let unpublished = doc
            .get("time")
            .and_then(Value::as_object)
            .is_some_and(|t| t.contains_key("unpublished"));
        let (kind, why) = if unpublished {
            (OutcomeKind::Unpublished, "package unpublished")
        } else {
            (OutcomeKind::Empty, "document has no versions")
        };
        plan.decided.push((kind, Some(Problem::doc(kind, id, why))));
    }
    let rev = doc.get("_rev").and_then(Value::as_str);
    let mut used = std::collections::BTreeSet::new();
    for (version, meta) in versions {
        let found = match locate(id, version, meta, attachments) {
            Ok(found) => found,
            Err(problem) => {
                plan.decided.push((problem.kind, Some(*problem)));
                continue;
            }
        };
        if found.stub.is_none() {
            let fallback = super::fallback::Fallback::new(id, version, found);
            plan.fallbacks.push(fallback);
            continue;
        }
        // Referenced even if the version is refused below: its attachment is accounted for by
        // that refusal, and counting it an orphan too would report one attachment twice.
        used.insert(found.attachment.clone());
        match plan_version(id, version, rev, found) {
            Ok(job) => plan.jobs.push(job),
            Err(problem) => plan.decided.push((problem.kind, Some(*problem))),
        }
    }
    let unused = attachments.iter().filter(|(name, _)| !used.contains(*name));
    plan.orphans = unused
        .map(|(name, stub)| super::orphans::Orphan::new(id, rev, name, stub))
        .collect();
    plan
}

/// Why a version cannot be moved (its `kind` says how it is counted).
type Refusal = Box<Problem>;

/// A version's `dist` and the attachment its `dist.tarball` names.
pub(crate) struct Located<'a> {
    pub dist: &'a Map<String, Value>,
    /// Its `dist.tarball`.
    pub tarball: &'a str,
    pub file: String,
    /// The attachment's key (`file` when the document has none).
    pub attachment: String,
    /// The attachment's stub; `None` when the document holds no attachment `dist.tarball` names
    /// (then there is no md5 or length to check against either).
    pub stub: Option<&'a Value>,
}

/// Finds the attachment a version's `dist.tarball` names (see [`Located::stub`] for one the
/// document does not hold).
fn locate<'a>(
    id: &str,
    version: &str,
    meta: &'a Value,
    attachments: &'a Map<String, Value>,
) -> Result<Located<'a>, Refusal> {
    let unreadable = |why: String| -> Refusal {
        Box::new(Problem::doc(OutcomeKind::Unreadable, id, why).with_version(version))
    };
    let dist = meta
        .get("dist")
        .and_then(Value::as_object)
        .ok_or_else(|| unreadable("version has no dist object".into()))?;
    let tarball = dist
        .get("tarball")
        .and_then(Value::as_str)
        .ok_or_else(|| unreadable("version has no dist.tarball".into()))?;
    let (file, candidates) = attachment_candidates(id, tarball)
        .ok_or_else(|| unreadable(format!("dist.tarball {tarball:?} names no file")))?;
    let Some((attachment, stub)) = candidates
        .iter()
        .find_map(|c| attachments.get(c).map(|s| (c.clone(), s)))
    else {
        return Ok(Located {
            dist,
            tarball,
            attachment: file.clone(),
            file,
            stub: None,
        });
    };
    if unaddressable(&attachment) {
        return Err(Box::new(
            Problem::doc(
                OutcomeKind::Unreadable,
                id,
                format!(
                    "attachment {attachment:?} cannot be asked for: HTTP removes it from the path"
                ),
            )
            .with_version(version)
            .with_file(&file),
        ));
    }
    Ok(Located {
        dist,
        tarball,
        file,
        attachment,
        stub: Some(stub),
    })
}

/// Whether a path segment cannot be sent: a URL's `.` and `..` segments (also percent-encoded)
/// are resolved away by every URL parser, so a request for the document or attachment so named
/// would ask for its parent instead (the database, the document).
fn unaddressable(segment: &str) -> bool {
    matches!(segment, "." | "..")
}

/// The job for a located version: every digest its document offers, each kept with its field.
pub(crate) fn plan_version(
    id: &str,
    version: &str,
    rev: Option<&str>,
    found: Located<'_>,
) -> Result<TarballJob, Refusal> {
    let Located {
        dist,
        file,
        attachment,
        stub,
        ..
    } = found;
    let unreadable = |why: String| -> Refusal {
        Box::new(
            Problem::doc(OutcomeKind::Unreadable, id, why)
                .with_version(version)
                .with_file(&file),
        )
    };
    let mut checks: Vec<(String, Integrity)> = Vec::new();
    if let Some(stub) = stub {
        checks.extend(stub_md5(&attachment, stub).map_err(unreadable)?);
    }
    let shasum = match dist.get("shasum") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let h = Hash::from_hex(Algorithm::Sha1, s)
                .map_err(|_| unreadable(format!("dist.shasum {s:?} is not a sha1 hex digest")))?;
            checks.push(("dist.shasum".into(), h.into()));
            Some(s.trim().to_ascii_lowercase())
        }
        Some(_) => return Err(unreadable("dist.shasum is not a string".into())),
    };
    match dist.get("integrity") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            let i = Integrity::parse(s)
                .map_err(|e| unreadable(format!("dist.integrity is not usable: {}", e.report())))?;
            checks.push(("dist.integrity".into(), i));
        }
        Some(_) => return Err(unreadable("dist.integrity is not a string".into())),
    }
    if checks.is_empty() {
        // Storing bytes nothing vouches for would launder them into a verified store.
        return Err(unreadable(
            "no digest to verify against (no attachment md5, dist.shasum or dist.integrity)".into(),
        ));
    }
    // Strongest first, so that bytes wrong everywhere are reported against the most trusted field.
    checks.sort_by_key(|(_, i)| std::cmp::Reverse(i.strongest()));
    let size = match stub {
        Some(stub) => stub_length(&attachment, stub).map_err(unreadable)?,
        None => None,
    };
    Ok(TarballJob {
        name: id.to_string(),
        version: version.to_string(),
        file,
        attachment,
        rev: rev.map(str::to_string),
        checks,
        size,
        shasum,
        url: None,
    })
}

/// The md5 CouchDB keeps of an attachment (its stub's `digest`), as a check named by its field;
/// `None` when there is none to hold the bytes to. CouchDB's md5 is of the bytes as stored; for an
/// attachment stored gzipped that is the gzip stream, not the tarball we are sent, so it cannot
/// be checked (npm-skim-registry distrusts it too). npm tarballs are octet-stream and never
/// stored compressed.
pub(crate) fn stub_md5(
    attachment: &str,
    stub: &Value,
) -> Result<Option<(String, Integrity)>, String> {
    if stub.get("encoding").is_some() {
        return Ok(None);
    }
    let Some(d) = stub.get("digest") else {
        return Ok(None);
    };
    let d = d.as_str().ok_or("attachment digest is not a string")?;
    let md5 = Hash::from_couch_digest(d).map_err(|why| format!("attachment digest: {why}"))?;
    Ok(Some((
        format!("_attachments[{attachment:?}].digest"),
        md5.into(),
    )))
}

/// An attachment's `length`, named by its field.
pub(crate) fn stub_length(attachment: &str, stub: &Value) -> Result<Option<(String, u64)>, String> {
    match stub.get("length") {
        None | Some(Value::Null) => Ok(None),
        Some(n) => {
            let n = n
                .as_u64()
                .ok_or_else(|| format!("attachment length {n} is not a byte count"))?;
            Ok(Some((format!("_attachments[{attachment:?}].length"), n)))
        }
    }
}

/// The tarball's file name and the attachment keys it may be stored under, most likely first:
/// the URL's last segment; what follows the last `/-/` (`@scope/name-1.0.0.tgz`); and the scope
/// joined to the last segment.
pub(crate) fn attachment_candidates(name: &str, tarball: &str) -> Option<(String, Vec<String>)> {
    let path = match reqwest::Url::parse(tarball) {
        Ok(u) => u.path().to_string(),
        // Not absolute: a relative path, perhaps. Drop any query or fragment by hand.
        Err(_) => tarball
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    let path = percent_decode_str(&path).decode_utf8_lossy().into_owned();
    let file = path
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())?
        .to_string();
    let mut candidates = vec![file.clone()];
    if let Some((_, after)) = path.rsplit_once("/-/") {
        if after != file && !after.is_empty() {
            candidates.push(after.to_string());
        }
    }
    if let Some((scope, _)) = name.split_once('/').filter(|(s, _)| s.starts_with('@')) {
        let scoped = format!("{scope}/{file}");
        if !candidates.contains(&scoped) {
            candidates.push(scoped);
        }
    }
    Some((file, candidates))
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
