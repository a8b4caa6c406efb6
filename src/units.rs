//! Sizes, durations and rates written by people: `20GiB`, `24h`, `50MB/s`.
//!
//! One parser with one table per quantity, so that a configuration file, a command-line flag and a
//! read rate agree on what `M` means: K/M/G/T are powers of 1000, Ki/Mi/Gi/Ti powers of 1024, for
//! sizes and rates alike. This module sits at the bottom of the crate (it uses nothing else in it),
//! so every layer can use it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Which kind of quantity a text was meant to be, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quantity {
    /// A size in bytes (`512MiB`, `20GB`, `4096`).
    Size,
    /// A duration (`90s`, `15m`, `24h`, `7d`, `2w`).
    Duration,
    /// A read rate (`50MB/s`, `200blobs/s`).
    Rate,
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantity::Size => "size",
            Quantity::Duration => "duration",
            Quantity::Rate => "rate",
        })
    }
}

/// A text that is not a [`Quantity`] of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {quantity} {text:?} (e.g. {})", example(*quantity))]
pub struct ParseQuantityError {
    /// What the text should have been.
    pub quantity: Quantity,
    /// The text, as given.
    pub text: String,
}

fn example(quantity: Quantity) -> &'static str {
    match quantity {
        Quantity::Size => "512MiB, 20GB",
        Quantity::Duration => "30m, 24h, 7d",
        Quantity::Rate => "50MB/s or 200blobs/s",
    }
}

/// Byte multiples, longest suffix first so that `ki` is not read as `k` followed by junk.
/// A century: what a wait or timeout too long for an `Instant` (a `Duration` of billions of
/// years, a tiny rate) is taken as, "never" for anything that runs, instead of a panic.
pub(crate) const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);

const SIZE_UNITS: &[(&str, f64)] = &[
    ("ki", 1024.0),
    ("mi", 1024.0 * 1024.0),
    ("gi", 1024.0 * 1024.0 * 1024.0),
    ("ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("k", 1e3),
    ("m", 1e6),
    ("g", 1e9),
    ("t", 1e12),
    ("", 1.0),
];

/// Seconds per duration unit; a bare number is seconds.
const DURATION_UNITS: &[(&str, f64)] = &[
    ("min", 60.0),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
    ("d", 86400.0),
    ("w", 7.0 * 86400.0),
    ("", 1.0),
];

/// The one parser: a number followed by one of `units` (matched on the lower-cased, space-free
/// text), scaled, and required to be finite and not negative.
fn scaled(norm: &str, units: &[(&str, f64)]) -> Option<f64> {
    units.iter().find_map(|(suffix, scale)| {
        let digits = norm.strip_suffix(suffix)?;
        // `f64::from_str` accepts `inf` and `NaN`; a quantity is digits and a point only.
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        let value = digits.parse::<f64>().ok()? * scale;
        (value.is_finite() && value >= 0.0).then_some(value)
    })
}

fn normalise(text: &str) -> String {
    text.trim().to_ascii_lowercase().replace(' ', "")
}

fn bytes(norm: &str) -> Option<f64> {
    scaled(norm.strip_suffix('b').unwrap_or(norm), SIZE_UNITS)
}

/// Parses a size: `10GiB`, `500MB`, `4096` (the `B` is optional). One past what a `u64` holds (16
/// EiB) is refused like any bad size, not taken as `u64::MAX`.
pub fn parse_size(text: &str) -> Result<u64, ParseQuantityError> {
    bytes(&normalise(text))
        // `u64::MAX as f64` rounds up to 2^64, which no u64 holds.
        .filter(|&b| b < u64::MAX as f64)
        .map(|b| b as u64)
        .ok_or_else(|| error(Quantity::Size, text))
}

/// Parses a duration: `90s`, `15m` (or `15min`), `24h`, `7d`, `2w`, or plain seconds. One past
/// what a `Duration` holds (some 584 billion years) is refused like any bad duration.
pub fn parse_duration(text: &str) -> Result<Duration, ParseQuantityError> {
    scaled(&normalise(text), DURATION_UNITS)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| error(Quantity::Duration, text))
}

/// A read rate (what [`Throttled`](crate::backend::compose::Throttled) paces reads to).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Bytes per second.
    Bytes(f64),
    /// Blobs per second.
    Blobs(f64),
}

/// Parses a rate: `50MB/s`, `2MiB/s`, `1048576` (bytes per second, sizes as in [`parse_size`],
/// `/s` optional), or `200blobs/s`. A rate of zero is refused: it would never finish.
pub fn parse_rate(text: &str) -> Result<Rate, ParseQuantityError> {
    let norm = normalise(text);
    let norm = norm.strip_suffix("/s").unwrap_or(&norm);
    let rate = match norm
        .strip_suffix("blobs")
        .or_else(|| norm.strip_suffix("blob"))
    {
        Some(n) => scaled(n, &[("", 1.0)]).map(Rate::Blobs),
        None => bytes(norm).map(Rate::Bytes),
    };
    match rate {
        Some(Rate::Bytes(n) | Rate::Blobs(n)) if n > 0.0 => rate,
        _ => None,
    }
    .ok_or_else(|| error(Quantity::Rate, text))
}

impl FromStr for Rate {
    type Err = ParseQuantityError;

    /// See [`parse_rate`].
    fn from_str(text: &str) -> Result<Rate, ParseQuantityError> {
        parse_rate(text)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Bytes(b) => write!(f, "{b} bytes/s"),
            Rate::Blobs(b) => write!(f, "{b} blobs/s"),
        }
    }
}

fn error(quantity: Quantity, text: &str) -> ParseQuantityError {
    ParseQuantityError {
        quantity,
        text: text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GiB").ok(), Some(10 << 30));
        assert_eq!(parse_size("500MB").ok(), Some(500_000_000));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert_eq!(parse_size("1.5 KiB").ok(), Some(1536));
        assert_eq!(parse_size("2t").ok(), Some(2_000_000_000_000));
        assert_eq!(parse_size("16000000TiB").ok(), Some(16_000_000 << 40));
        for bad in [
            "lots",
            "",
            "-1",
            "inf",
            "GiB",
            "1x",
            "17000000TiB",
            "18446744073709551616",
        ] {
            let err = parse_size(bad).err();
            assert_eq!(err.map(|e| e.quantity), Some(Quantity::Size), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m").ok(), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("15min").ok(), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h").ok(), Some(Duration::from_secs(86400)));
        assert_eq!(
            parse_duration("2w").ok(),
            Some(Duration::from_secs(1_209_600))
        );
        assert_eq!(
            parse_duration("0.5s").ok(),
            Some(Duration::from_millis(500))
        );
        for bad in ["soon", "5y", "-1s", "", "NaN", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50MB/s").ok(), Some(Rate::Bytes(50e6)));
        assert_eq!(parse_rate("2MiB/s").ok(), Some(Rate::Bytes(2097152.0)));
        assert_eq!(parse_rate("1000").ok(), Some(Rate::Bytes(1000.0)));
        assert_eq!(parse_rate("200blobs/s").ok(), Some(Rate::Blobs(200.0)));
        assert_eq!(parse_rate("5 blobs/s").ok(), Some(Rate::Blobs(5.0)));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("0blobs/s").is_err());
        assert_eq!("5 blobs/s".parse::<Rate>().ok(), Some(Rate::Blobs(5.0)));
    }
}
