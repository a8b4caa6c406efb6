//! Extracting `name` and `version` from the captured `package.json`.

use serde::Deserialize;
use serde_json::Value;

use super::error::TarballError;

/// Only the two fields we need; serde skips the rest without building it.
#[derive(Deserialize)]
struct Manifest {
    name: Option<Value>,
    version: Option<Value>,
}

/// Parses `bytes` (the body of `path`) into `(name, version)`.
///
/// A UTF-8 byte-order mark is tolerated because npm's JSON reader strips it.
/// Duplicate `name`/`version` keys are rejected: JavaScript keeps the last,
/// and guessing which one a consumer uses is how a manifest lies.
pub(crate) fn parse(path: &str, bytes: &[u8]) -> Result<(String, String), TarballError> {
    let bad = |reason: String| TarballError::BadPackageJson {
        path: path.to_owned(),
        reason,
    };
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let field = |value: Option<Value>, what: &str| match value {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(bad(format!("\"{what}\" is empty"))),
        Some(_) => Err(bad(format!("\"{what}\" is not a string"))),
        None => Err(bad(format!("no \"{what}\" field"))),
    };
    let name = field(manifest.name, "name")?;
    let version = field(manifest.version, "version")?;
    Ok((name, version))
}
