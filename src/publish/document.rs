//! What the publish document says about its tarball: which version an attachment belongs to, and
//! the digests and size its bytes must have.

use serde_json::{Map, Value};

use crate::integrity::{Hash, Integrity};
use crate::store::Expectations;
use crate::{Error, Result};

/// The version an attachment is the tarball of, and what its bytes must match.
#[derive(Debug, Clone)]
pub(super) struct Expected {
    pub(super) version: String,
    pub(super) checks: Vec<(String, Integrity)>,
}

/// The document's package name (`name`, which must equal `_id` when that is given), one npm
/// would take and the server can serve (see `crate::package_name::publishable`).
pub(super) fn package_name(doc: &Map<String, Value>) -> Result<String> {
    let name = doc
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::document("name", "missing, or not a string"))?;
    crate::package_name::publishable(name).map_err(|why| Error::document("name", why))?;
    if let Some(id) = doc.get("_id") {
        if id.as_str() != Some(name) {
            return Err(Error::document("_id", "must equal `name`"));
        }
    }
    Ok(name.to_string())
}

/// The path segment after the last `/` of a URL (what CouchDB registries name attachments by).
fn basename(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// Finds the one version of `versions` whose tarball `file` is: npm names the attachment
/// `<name>-<version>.tgz` (with the scope, `@scope/name-1.0.0.tgz`), older clients the last
/// segment of `dist.tarball`.
pub(super) fn expected_for(name: &str, versions: &Value, file: &str) -> Result<Expected> {
    let at = format!("_attachments[{file:?}]");
    let versions = versions
        .as_object()
        .ok_or_else(|| Error::document("versions", "must be an object"))?;
    let matching: Vec<(&String, &Value)> = versions
        .iter()
        .filter(|(v, manifest)| {
            file == format!("{name}-{v}.tgz")
                || manifest
                    .pointer("/dist/tarball")
                    .and_then(Value::as_str)
                    .is_some_and(|t| basename(t) == file)
        })
        .collect();
    let (version, manifest) = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::document(
                at,
                "no version in `versions` has this tarball",
            ))
        }
        _ => return Err(Error::document(at, "several versions claim this tarball")),
    };
    let here = format!("versions[{version:?}]");
    if manifest.get("version").and_then(Value::as_str) != Some(version.as_str()) {
        return Err(Error::document(&here, "its `version` must equal its key"));
    }
    if manifest.get("name").and_then(Value::as_str) != Some(name) {
        return Err(Error::document(
            &here,
            "its `name` must equal the package's",
        ));
    }
    let dist = manifest
        .get("dist")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::document(format!("{here}.dist"), "missing, or not an object"))?;
    let mut checks = Vec::new();
    // `integrity` (SRI) and `shasum` (sha1 hex): each is checked when given.
    let parsers: [(&str, ParseDigest); 2] = [
        ("integrity", Integrity::parse),
        ("shasum", Integrity::from_shasum),
    ];
    for (key, parse) in parsers {
        if let Some(value) = dist.get(key) {
            let field = format!("{here}.dist.{key}");
            let text = value
                .as_str()
                .ok_or_else(|| Error::document(&field, "not a string"))?;
            let integrity = parse(text).map_err(|e| Error::document(&field, e.to_string()))?;
            checks.push((field, integrity));
        }
    }
    if checks.is_empty() {
        return Err(Error::document(
            format!("{here}.dist"),
            "has neither `integrity` nor `shasum`: the tarball could not be verified",
        ));
    }
    Ok(Expected {
        version: version.clone(),
        checks,
    })
}

/// Parses one `dist` field's text.
type ParseDigest = fn(&str) -> Result<Integrity>;

/// What the store must check once the attachment's bytes have gone by: the version's digests, and
/// the attachment's own `length` and `digest` (md5) when it gives them.
pub(super) fn expectations(
    name: &str,
    file: &str,
    expected: &Expected,
    (length, digest): (Option<u64>, Option<Hash>),
    inspect: bool,
) -> Expectations {
    let mut checks = expected.checks.clone();
    if let Some(md5) = digest {
        checks.push((format!("_attachments[{file:?}].digest"), md5.into()));
    }
    Expectations {
        checks,
        size: length.map(|n| (format!("_attachments[{file:?}].length"), n)),
        package: inspect.then(|| (name.to_string(), expected.version.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attachments_are_matched_by_npm_name_or_tarball_basename() {
        let versions = json!({
            "1.0.0": {"name": "@s/p", "version": "1.0.0",
                      "dist": {"shasum": "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
                               "tarball": "http://r/@s/p/-/p-1.0.0.tgz"}},
            "2.0.0": {"name": "@s/p", "version": "2.0.0", "dist": {}},
        });
        let e = expected_for("@s/p", &versions, "@s/p-1.0.0.tgz").expect("npm's name");
        assert_eq!(e.version, "1.0.0");
        assert_eq!(e.checks.len(), 1);
        let e = expected_for("@s/p", &versions, "p-1.0.0.tgz").expect("the URL's basename");
        assert_eq!(e.version, "1.0.0");
        let err = expected_for("@s/p", &versions, "p-9.tgz").expect_err("no version");
        assert!(err.to_string().contains("no version"), "{err}");
        let err = expected_for("@s/p", &versions, "@s/p-2.0.0.tgz").expect_err("no digests");
        assert!(err.to_string().contains("neither"), "{err}");
    }
}
