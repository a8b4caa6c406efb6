//! Small helpers: time formatting, percent-decoding, query strings, ids.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use md5::{Digest, Md5};

/// How far this process's clock is set off the system clock, in milliseconds
/// ([`set_clock_offset_secs`]).
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Runs the server's clock `secs` ahead of the system clock (negative: behind), process-wide: a
/// fault switch that makes every client's `Date` look that much off, as a client with a wrong
/// clock would be (`--clock-offset-secs`).
pub fn set_clock_offset_secs(secs: i64) {
    CLOCK_OFFSET_MS.store(secs.saturating_mul(1000), Ordering::Relaxed);
}

/// Milliseconds since the Unix epoch, by the server's clock.
pub fn now_ms() -> u64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    system.saturating_add_signed(CLOCK_OFFSET_MS.load(Ordering::Relaxed))
}

/// `SystemTime` for a millisecond timestamp.
pub fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

/// RFC 1123 HTTP date (`Mon, 23 Nov 2026 09:29:36 GMT`).
pub fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(system_time(ms))
}

/// Parses an HTTP date into milliseconds since the epoch (`None` when JavaScript's
/// `Date.parse` would give NaN for the usual formats).
pub fn parse_http_date(s: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

/// ISO 8601 with milliseconds, as JavaScript's `Date.prototype.toISOString`.
pub fn iso_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let millis = ms % 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS(.mmm)Z` (the listing's mtime format) into ms.
pub fn parse_iso_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut ms = 0;
    let rest = &s[19..];
    let rest = if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        let mut f = digits.clone();
        f.truncate(3);
        while f.len() < 3 {
            f.push('0');
        }
        ms = f.parse::<i64>().ok()?;
        &frac[digits.len()..]
    } else {
        rest
    };
    if rest != "Z" {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let total = ((days * 86_400 + h * 3600 + mi * 60 + se) * 1000) + ms;
    u64::try_from(total).ok()
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Percent-decodes a URL component (invalid escapes are kept literally, as
/// JavaScript's `unescape` would).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string into (name, value) pairs (`+` is a space, as in
/// node's `querystring`).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// A fresh v4 UUID string (object ids, etags, upload ids, request ids).
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Base64 MD5 of some bytes.
pub fn md5_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// The MD5 of the empty string, Manta's `ZERO_BYTE_MD5`.
pub const ZERO_BYTE_MD5: &str = "1B2M2Y8AsgTpgAmY7PhCfg==";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_roundtrip() {
        let ms = 1_795_426_176_762;
        let s = iso_time(ms);
        assert_eq!(s, "2026-11-23T09:29:36.762Z");
        assert_eq!(parse_iso_time(&s), Some(ms));
        assert_eq!(iso_time(1_369_244_383_714), "2013-05-22T17:39:43.714Z");
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(md5_b64(b""), ZERO_BYTE_MD5);
        let q = parse_query("limit=1024&marker=f%2001&x");
        assert_eq!(q[1], ("marker".into(), "f 01".into()));
        assert_eq!(q[2], ("x".into(), "".into()));
    }
}
