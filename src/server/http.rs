//! The HTTP semantics of a blob response: the strong `ETag`, `If-Match`, `If-None-Match`, `Range`
//! and `If-Range`, and the headers every blob response carries. Blobs are content-addressed, so a
//! representation never changes: the ETag is the integrity itself and the response may be cached
//! forever (`immutable`).

use axum::http::header::{self, HeaderMap, HeaderValue};
use base64::Engine as _;

use crate::backend::BlobKey;

/// `Cache-Control` of every blob response: the bytes under an address can never change.
pub(crate) const CACHE_CONTROL: HeaderValue =
    HeaderValue::from_static("public, max-age=31536000, immutable");
/// Error responses must not be cached as if they were the blob.
pub(crate) const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
pub(crate) const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
pub(crate) const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
pub(crate) const BYTES: HeaderValue = HeaderValue::from_static("bytes");
pub(crate) const ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD");

/// The strong entity tag of a blob: its npm integrity string, quoted (`"sha512-…"`).
pub(crate) fn etag(key: &BlobKey) -> HeaderValue {
    // `"sha512-` + 88 base64 characters + `"`.
    let mut text = String::with_capacity(97);
    text.push_str("\"sha512-");
    base64::engine::general_purpose::STANDARD.encode_string(key.as_bytes(), &mut text);
    text.push('"');
    // Only ASCII letters, digits, `+/=-` and quotes: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether `If-Match` in `headers` fails for `etag` (RFC 9110 §13.1.1): it passes for `*` or for
/// an entity tag that matches by strong comparison, so a weak tag never passes. Several header lines
/// count as one list. Without `If-Match` nothing fails.
pub(crate) fn if_match_fails(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    has_if_match(headers) && !list_matches(headers, header::IF_MATCH, etag, Compare::Strong)
}

/// Whether any `If-Match` header is present.
pub(crate) fn has_if_match(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_MATCH)
}

/// Whether `If-None-Match` in `headers` matches `etag` (RFC 9110 §13.1.2: weak comparison, a
/// comma-separated list, or `*` for any current representation). Several header lines count as one
/// list.
pub(crate) fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    list_matches(headers, header::IF_NONE_MATCH, etag, Compare::Weak)
}

/// Whether any `If-None-Match` header is present.
pub(crate) fn has_none_match(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_NONE_MATCH)
}

/// How two entity tags are compared (RFC 9110 §8.8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// Both strong and the same opaque tag (`If-Match`, `If-Range`).
    Strong,
    /// The same opaque tag, weak or not (`If-None-Match`).
    Weak,
}

/// An entity tag (RFC 9110 §8.8.3): whether it is weak (`W/`), and its opaque tag without quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

impl EntityTag<'_> {
    fn matches(self, other: EntityTag<'_>, compare: Compare) -> bool {
        let strong_enough = compare == Compare::Weak || !(self.weak || other.weak);
        strong_enough && self.opaque == other.opaque
    }
}

/// Whether a header holding `*` or a list of entity tags (`If-Match`, `If-None-Match`) matches
/// `etag`. A line that is `*` alone matches any; every other line is read as a list.
fn list_matches(
    headers: &HeaderMap,
    name: header::HeaderName,
    etag: &HeaderValue,
    compare: Compare,
) -> bool {
    let Some(ours) = single_tag(etag.as_bytes()) else {
        return false;
    };
    headers.get_all(name).iter().any(|line| {
        line.as_bytes().trim_ascii() == b"*"
            || entity_tags(line.as_bytes()).any(|tag| tag.matches(ours, compare))
    })
}

/// The entity tag that is the whole of `text` (but for whitespace), if it is one.
fn single_tag(text: &[u8]) -> Option<EntityTag<'_>> {
    match entity_tag(text.trim_ascii()) {
        Some((tag, [])) => Some(tag),
        _ => None,
    }
}

/// The members of an entity-tag list (`#entity-tag`: commas, optional whitespace, and empty
/// members allowed), in order, up to the first malformed one. A malformed member never matches,
/// and nothing after it is trusted either: an entity tag may hold commas, so once the quoting is
/// lost there is no telling where the next member starts.
fn entity_tags(list: &[u8]) -> impl Iterator<Item = EntityTag<'_>> {
    let mut rest = Some(list);
    std::iter::from_fn(move || {
        // `take` leaves `None` behind, so a malformed member (or the end) ends the list for good.
        let mut text = rest.take()?.trim_ascii_start();
        while let Some(after) = text.strip_prefix(b",") {
            text = after.trim_ascii_start();
        }
        let (tag, after) = entity_tag(text)?;
        let after = after.trim_ascii_start();
        if !(after.is_empty() || after.starts_with(b",")) {
            return None;
        }
        rest = Some(after);
        Some(tag)
    })
}

/// The entity tag at the start of `text` and what follows it: `W/` (optional), a DQUOTE, any
/// `etagc` (`%x21 / %x23-7E / obs-text`: no quote, space or control), a DQUOTE.
fn entity_tag(text: &[u8]) -> Option<(EntityTag<'_>, &[u8])> {
    let (weak, quoted) = match text.strip_prefix(b"W/") {
        Some(after) => (true, after),
        None => (false, text),
    };
    let inner = quoted.strip_prefix(b"\"")?;
    let end = inner.iter().position(|b| *b == b'"')?;
    let opaque = &inner[..end];
    let etagc = |b: &u8| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80;
    if !opaque.iter().all(etagc) {
        return None;
    }
    Some((EntityTag { weak, opaque }, &inner[end + 1..]))
}

/// What a `Range` header asks of a blob of a known size.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeAsk {
    /// No usable range (absent, multiple ranges, another unit, a failed `If-Range`, or syntax we
    /// ignore as RFC 9110 allows): send the whole blob.
    Full,
    /// One satisfiable range, `start..end` (end exclusive).
    Part(u64, u64),
    /// A well-formed range that misses the blob entirely (416).
    Unsatisfiable,
}

/// Interprets `Range` (and `If-Range`) against a blob of `size` bytes with entity tag `etag`.
pub(crate) fn range(headers: &HeaderMap, size: u64, etag: &HeaderValue) -> RangeAsk {
    // Neither field is a list: given twice, the request says two things, and the range is
    // ignored as a list of ranges is (the first line alone would be one reading of several).
    let mut ranges = headers.get_all(header::RANGE).iter();
    let (Some(value), None) = (ranges.next(), ranges.next()) else {
        return RangeAsk::Full;
    };
    let mut if_ranges = headers.get_all(header::IF_RANGE).iter();
    if let Some(if_range) = if_ranges.next() {
        // Only a strong ETag match lets the range through (RFC 9110 §13.1.5); a date, a weak tag or
        // anything that is not one entity tag never matches.
        let matches = match (single_tag(if_range.as_bytes()), single_tag(etag.as_bytes())) {
            (Some(theirs), Some(ours)) => theirs.matches(ours, Compare::Strong),
            _ => false,
        } && if_ranges.next().is_none();
        if !matches {
            return RangeAsk::Full;
        }
    }
    // The unit is case-insensitive (RFC 9110 §14.1).
    let Some(spec) = value.to_str().ok().map(str::trim).and_then(|v| {
        v.get(..6)
            .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
            .map(|_| &v[6..])
    }) else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        // Multiple ranges would need multipart/byteranges; a full 200 is allowed and simpler.
        return RangeAsk::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    // Digits only; a number past u64 is as good as u64::MAX (a last position or a suffix that
    // long covers the blob).
    let parse = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse().unwrap_or(u64::MAX))
    };
    if first.is_empty() {
        // A suffix: the last N bytes.
        return match parse(last) {
            Some(0) => RangeAsk::Unsatisfiable,
            // Satisfiable (RFC 9110 §14.1.1), but no `Content-Range` can name a part of
            // nothing: the whole, empty, blob.
            Some(_) if size == 0 => RangeAsk::Full,
            Some(n) => RangeAsk::Part(size.saturating_sub(n), size),
            None => RangeAsk::Full,
        };
    }
    let Some(start) = parse(first) else {
        return RangeAsk::Full;
    };
    let end = if last.is_empty() {
        size
    } else {
        match parse(last) {
            Some(l) if l >= start => l.saturating_add(1).min(size),
            _ => return RangeAsk::Full,
        }
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn if_none_match() {
        let tag = HeaderValue::from_static("\"sha512-abc=\"");
        assert!(none_match(
            &headers(&[("if-none-match", "\"sha512-abc=\"")]),
            &tag
        ));
        assert!(none_match(
            &headers(&[("if-none-match", "W/\"sha512-abc=\"")]),
            &tag
        ));
        assert!(none_match(
            &headers(&[("if-none-match", "\"x\", \"sha512-abc=\"")]),
            &tag
        ));
        assert!(none_match(&headers(&[("if-none-match", "*")]), &tag));
        assert!(none_match(
            &headers(&[
                ("if-none-match", "\"x\""),
                ("if-none-match", "\"sha512-abc=\"")
            ]),
            &tag
        ));
        assert!(!none_match(
            &headers(&[("if-none-match", "\"sha512-abd=\"")]),
            &tag
        ));
        assert!(!none_match(&headers(&[]), &tag));
        // One entity tag may hold commas; unquoted or otherwise malformed members never match,
        // nor does anything after them.
        for list in [
            "\"v1,sha512-abc=,gz\"",
            "sha512-abc=",
            "W/sha512-abc=",
            "\"sha512-abc=",
            "\"sha512-abc=\"x",
            "\"sha 512\", \"sha512-abc=\"",
            "junk, \"sha512-abc=\"",
            "*, \"x\"",
            "",
        ] {
            assert!(
                !none_match(&headers(&[("if-none-match", list)]), &tag),
                "{list}"
            );
        }
        assert!(none_match(
            &headers(&[("if-none-match", " ,\"x\" ,, W/\"sha512-abc=\" ,")]),
            &tag
        ));
        let etag = etag(&BlobKey::new([0; 64]));
        assert_eq!(etag.len(), 97);
        assert!(etag.to_str().is_ok_and(|s| s.starts_with("\"sha512-AAAA")));
    }

    #[test]
    fn if_match() {
        let tag = HeaderValue::from_static("\"sha512-abc=\"");
        let fails = |pairs: &[(&'static str, &'static str)]| if_match_fails(&headers(pairs), &tag);
        assert!(!fails(&[]));
        assert!(!fails(&[("if-match", "*")]));
        assert!(!fails(&[("if-match", "\"sha512-abc=\"")]));
        assert!(!fails(&[("if-match", "\"x\", \"sha512-abc=\"")]));
        assert!(!fails(&[
            ("if-match", "\"x\""),
            ("if-match", "\"sha512-abc=\"")
        ]));
        assert!(fails(&[("if-match", "W/\"sha512-abc=\"")]));
        assert!(fails(&[("if-match", "\"sha512-abd=\"")]));
        assert!(fails(&[("if-match", "sha512-abc=")]));
        assert!(fails(&[("if-match", "\"v1,sha512-abc=,gz\"")]));
        assert!(fails(&[("if-match", "")]));
    }

    #[test]
    fn ranges() {
        let tag = HeaderValue::from_static("\"t\"");
        let r = |v: &'static str| range(&headers(&[("range", v)]), 100, &tag);
        assert_eq!(range(&headers(&[]), 100, &tag), RangeAsk::Full);
        assert_eq!(r("bytes=0-9"), RangeAsk::Part(0, 10));
        assert_eq!(r("bytes=90-"), RangeAsk::Part(90, 100));
        assert_eq!(r("bytes=90-1000"), RangeAsk::Part(90, 100));
        assert_eq!(r("bytes=-10"), RangeAsk::Part(90, 100));
        assert_eq!(r("bytes=-1000"), RangeAsk::Part(0, 100));
        assert_eq!(r("bytes=100-"), RangeAsk::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeAsk::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), RangeAsk::Full);
        assert_eq!(r("items=0-1"), RangeAsk::Full);
        assert_eq!(r("bytes=5-1"), RangeAsk::Full);
        assert_eq!(r("bytes=x-1"), RangeAsk::Full);
        // The unit in any case; positions past u64 cover the blob.
        assert_eq!(r("Bytes=0-9"), RangeAsk::Part(0, 10));
        assert_eq!(r("BYTES=-10"), RangeAsk::Part(90, 100));
        assert_eq!(r("bytes"), RangeAsk::Full);
        assert_eq!(r("bytes=0-99999999999999999999999"), RangeAsk::Part(0, 100));
        assert_eq!(r("bytes=-99999999999999999999999"), RangeAsk::Part(0, 100));
        assert_eq!(r("bytes=99999999999999999999999-"), RangeAsk::Unsatisfiable);
        // A suffix of an empty blob: the whole (empty) blob, not a 416.
        let empty = |v: &'static str| range(&headers(&[("range", v)]), 0, &tag);
        assert_eq!(empty("bytes=-5"), RangeAsk::Full);
        assert_eq!(empty("bytes=0-"), RangeAsk::Unsatisfiable);
        let if_range = |v: &'static str| {
            range(
                &headers(&[("range", "bytes=0-0"), ("if-range", v)]),
                100,
                &tag,
            )
        };
        assert_eq!(if_range("\"t\""), RangeAsk::Part(0, 1));
        assert_eq!(if_range("\"u\""), RangeAsk::Full);
        assert_eq!(if_range(" \"t\" "), RangeAsk::Part(0, 1));
        assert_eq!(if_range("W/\"t\""), RangeAsk::Full);
        assert_eq!(if_range("\"t\", \"t\""), RangeAsk::Full);
        assert_eq!(if_range("t"), RangeAsk::Full);
        assert_eq!(if_range("Tue, 01 Jan 2030 00:00:00 GMT"), RangeAsk::Full);
        // Either field twice: the whole blob.
        let twice = |pairs| range(&headers(pairs), 100, &tag);
        assert_eq!(
            twice(&[("range", "bytes=0-0"), ("range", "bytes=5-9")]),
            RangeAsk::Full
        );
        assert_eq!(
            twice(&[
                ("range", "bytes=0-0"),
                ("if-range", "\"t\""),
                ("if-range", "\"t\"")
            ]),
            RangeAsk::Full
        );
    }
}
