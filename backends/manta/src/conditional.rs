//! restify's `conditionalRequest()` (as muskie's object routes use it),
//! nginx-style single `Range` parsing (mako serves the bytes), and restify's
//! `req.accepts()` content negotiation.

use crate::error::ApiError;
use crate::util;

/// Outcome of the conditional checks.
#[derive(Debug, PartialEq, Eq)]
pub enum Cond {
    Proceed,
    /// GET/HEAD: answer 304.
    NotModified,
}

/// restify's etag normalisation: drop `W/`, then drop quotes only around
/// `\w*` (so a quoted UUID, with its dashes, keeps its quotes and never
/// matches).
fn normalize_etag(s: &str) -> &str {
    let s = s.strip_prefix("W/").unwrap_or(s);
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        let inner = &s[1..s.len() - 1];
        if inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return inner;
        }
    }
    s
}

fn split_list(h: &str) -> impl Iterator<Item = &str> {
    h.split(',').map(str::trim)
}

/// Runs checkIfMatch, checkIfNoneMatch, checkIfModified, checkIfUnmodified.
/// `etag` is `""` and `last_modified` `None` for a missing entry; `*` always
/// matches (even a missing object), as in restify.
pub fn check(
    method: &str,
    if_match: Option<&str>,
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    if_unmodified_since: Option<&str>,
    etag: &str,
    last_modified: Option<&str>,
) -> Result<Cond, ApiError> {
    let read = method == "GET" || method == "HEAD";
    if let Some(h) = if_match.filter(|h| !h.is_empty()) {
        if !split_list(h)
            .map(normalize_etag)
            .any(|c| c == "*" || c == etag)
        {
            return Err(ApiError::precondition_failed(format!(
                "if-match '{h}' didn't match etag '{etag}'"
            )));
        }
    }
    if let Some(h) = if_none_match.filter(|h| !h.is_empty()) {
        if split_list(h)
            .map(normalize_etag)
            .any(|c| c == "*" || c == etag)
        {
            if read {
                return Ok(Cond::NotModified);
            }
            return Err(ApiError::precondition_failed(format!(
                "if-none-match '{h}' matched etag '{etag}'"
            )));
        }
    }
    if let (Some(mtime), Some(ims)) = (last_modified, if_modified_since) {
        if let (Some(m), Some(c)) = (util::parse_http_date(mtime), util::parse_http_date(ims)) {
            if m <= c {
                if read {
                    return Ok(Cond::NotModified);
                }
                return Err(ApiError::precondition_failed(format!(
                    "object was modified at '{mtime}'; if-modified-since '{ims}'"
                )));
            }
        }
    }
    if let (Some(mtime), Some(ius)) = (last_modified, if_unmodified_since) {
        if let (Some(m), Some(c)) = (util::parse_http_date(mtime), util::parse_http_date(ius)) {
            if m > c {
                return Err(ApiError::precondition_failed(format!(
                    "object was modified at '{mtime}'; if-unmodified-since '{ius}'"
                )));
            }
        }
    }
    Ok(Cond::Proceed)
}

/// A `Range` header against an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    /// Not a `bytes=` range: serve the whole object.
    Ignore,
    /// Inclusive byte range.
    Single(u64, u64),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// nginx's single-range parsing (muskie rejects `,` before this with 501).
pub fn parse_range(h: &str, size: u64) -> RangeReq {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeReq::Ignore;
    };
    let spec = spec.trim();
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        // suffix: last n bytes
        if !digits(b) {
            return RangeReq::Unsatisfiable;
        }
        let n: u64 = b.parse().unwrap_or(u64::MAX);
        if n == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        let n = n.min(size);
        return RangeReq::Single(size - n, size - 1);
    }
    if !digits(a) || (!b.is_empty() && !digits(b)) {
        return RangeReq::Unsatisfiable;
    }
    let start: u64 = a.parse().unwrap_or(u64::MAX);
    let end: u64 = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        b.parse().unwrap_or(u64::MAX)
    };
    if start >= size || start > end {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Single(start, end.min(size - 1))
}

/// restify `req.accepts(type)`: no Accept header accepts everything.
pub fn accepts(accept: Option<&str>, ty: &str) -> bool {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return true;
    };
    let ty = ty
        .split(';')
        .next()
        .unwrap_or(ty)
        .trim()
        .to_ascii_lowercase();
    let (t, s) = ty.split_once('/').unwrap_or((ty.as_str(), ""));
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if q_zero {
            return false;
        }
        let (mt, ms) = media.split_once('/').unwrap_or((media.as_str(), ""));
        (mt == "*" && ms == "*") || (mt == t && (ms == "*" || ms == s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        let e = "10a20b81-ad84";
        let c = |im: Option<&str>, inm: Option<&str>, m: &str, etag: &str| {
            check(m, im, inm, None, None, etag, None)
        };
        assert_eq!(c(Some(e), None, "PUT", e).ok(), Some(Cond::Proceed));
        assert!(c(Some("\"10a20b81-ad84\""), None, "GET", e).is_err());
        assert_eq!(
            c(Some("\"abc\""), None, "GET", "abc").ok(),
            Some(Cond::Proceed)
        );
        assert_eq!(c(Some("*"), None, "PUT", "").ok(), Some(Cond::Proceed));
        assert_eq!(
            c(None, Some("*"), "PUT", "").map_err(|e| e.status.as_u16()),
            Err(412)
        );
        assert_eq!(c(None, Some(e), "GET", e).ok(), Some(Cond::NotModified));
        assert_eq!(
            c(None, Some("x, W/y"), "GET", "y").ok(),
            Some(Cond::NotModified)
        );
        let err = c(Some("nope"), None, "PUT", e).err().map(|e| e.message);
        assert_eq!(
            err.as_deref(),
            Some("if-match 'nope' didn't match etag '10a20b81-ad84'")
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeReq::Single(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeReq::Single(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeReq::Single(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), RangeReq::Single(0, 99));
        assert_eq!(parse_range("bytes=50-1000", 100), RangeReq::Single(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=9-3", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=x-3", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("items=0-3", 100), RangeReq::Ignore);
    }

    #[test]
    fn accept() {
        assert!(accepts(None, "text/plain"));
        assert!(accepts(Some("*/*"), "text/plain"));
        assert!(accepts(Some("application/json, */*"), "text/plain"));
        assert!(accepts(Some("text/*"), "text/plain; charset=utf-8"));
        assert!(!accepts(Some("application/json"), "text/plain"));
        assert!(!accepts(Some("text/plain;q=0"), "text/plain"));
    }
}
