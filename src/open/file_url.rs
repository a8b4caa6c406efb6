//! `file:` store URLs, read as URLs (RFC 8089) rather than as a prefix glued to a path: the path
//! is percent-decoded (`my%20store` is `my store`, as any URL library writes it), the host is
//! empty or `localhost` (any other names another machine, which a local store cannot reach), the
//! short form `file:/dir` is the same as `file:///dir`, and the path must be absolute. Without
//! these rules `file://localhost/dir` became `./localhost/dir`, `file:/dir` a directory named
//! `file:`, and `file://` the working directory itself.

use std::path::PathBuf;

use crate::{Error, Result};

/// The directory a `file:` URL names and its query (`fsync=false&…`, without the `?`).
pub(super) fn parse(spec: &str) -> Result<(PathBuf, &str)> {
    let bad = |why: &str| Error::Config(format!("store URL {spec:?}: {why}"));
    let rest = spec
        .strip_prefix("file:")
        .ok_or_else(|| bad("not a file: URL"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let (host, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
                return Err(bad(&format!(
                    "host {host:?} is not this machine (write file:///path or file://localhost/path)"
                )));
            }
            path
        }
        None => rest,
    };
    if path.is_empty() {
        return Err(bad("names no directory"));
    }
    if !path.starts_with('/') {
        return Err(bad(
            "the path must be absolute (give a relative directory as a plain path)",
        ));
    }
    Ok((decode(path).map_err(bad)?, query))
}

/// Percent-decodes a URL path into a filesystem path (any bytes on Unix; UTF-8 elsewhere).
fn decode(path: &str) -> std::result::Result<PathBuf, &'static str> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("a truncated %-escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "a malformed %-escape")?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| "a malformed %-escape")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err("a NUL byte in the path");
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(out)))
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(out)
            .map(PathBuf::from)
            .map_err(|_| "a path that is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn ok(spec: &str) -> (String, String) {
        match parse(spec) {
            Ok((path, query)) => (path.display().to_string(), query.to_string()),
            Err(e) => panic!("{spec}: {e}"),
        }
    }

    #[test]
    fn file_urls_are_parsed_as_urls() {
        assert_eq!(ok("file:///d/s"), ("/d/s".into(), "".into()));
        assert_eq!(
            ok("file:///d/my%20store"),
            ("/d/my store".into(), "".into())
        );
        assert_eq!(ok("file:///d/a%2fb%25"), ("/d/a/b%".into(), "".into()));
        assert_eq!(
            ok("file://localhost/d/s?fsync=false"),
            ("/d/s".into(), "fsync=false".into())
        );
        assert_eq!(ok("file://LOCALHOST/d"), ("/d".into(), "".into()));
        assert_eq!(
            ok("file:/d/s?fsync=false"),
            ("/d/s".into(), "fsync=false".into())
        );
        assert_eq!(ok("file:///"), ("/".into(), "".into()));
    }

    #[test]
    fn file_urls_that_name_no_local_absolute_path_are_config_errors() {
        for spec in [
            "file://",
            "file:",
            "file://?fsync=false",
            "file://localhost",
            "file://example.com/d",
            "file://host",
            "file:relative/dir",
            "file:./d",
            "file:///d/%zz",
            "file:///d/%2",
            "file:///d/%00",
        ] {
            let kind = parse(spec).err().map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::Config), "{spec}");
        }
    }
}
