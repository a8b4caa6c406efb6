//! Header field decoders: NUL-terminated strings, the checksum, octal and base-256 numbers, each
//! refusing what node-tar would read differently.

use std::borrow::Cow;

use super::{BLOCK, MAX_SAFE_INTEGER};

/// `len` bytes at `off`, or an empty slice (never panics).
pub(super) fn field(b: &[u8; BLOCK], off: usize, len: usize) -> &[u8] {
    b.get(off..off + len).unwrap_or_default()
}

pub(super) fn join_prefix(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Decodes a NUL-terminated string field the way node-tar does
/// (`toString('utf8').replace(/\0.*/, '')`). That regex stops at a line
/// terminator, so node-tar would keep text after a NUL followed by one; such
/// fields are refused rather than reinterpreted.
pub(super) fn cstr(bytes: &[u8]) -> Result<Cow<'_, str>, String> {
    let (head, tail) = match bytes.iter().position(|&b| b == 0) {
        Some(nul) => (
            bytes.get(..nul).unwrap_or_default(),
            bytes.get(nul + 1..).unwrap_or_default(),
        ),
        None => (bytes, &[][..]),
    };
    // \n, \r, and the lead byte of U+2028/U+2029.
    if tail.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0xe2) {
        return Err("string field has a line break after its terminating NUL".into());
    }
    Ok(String::from_utf8_lossy(head))
}

/// The checksum field: octal digits that must be terminated by NUL or space
/// inside the 8-byte field (node-tar reads on into the type flag otherwise).
pub(super) fn checksum_field(f: &[u8]) -> Result<u64, String> {
    let start = f.iter().position(|&b| b != b' ').unwrap_or(f.len());
    let rest = f.get(start..).unwrap_or_default();
    let digits = rest
        .iter()
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .count();
    let terminator = rest.get(digits).copied();
    if digits == 0 || !matches!(terminator, Some(0 | b' ')) {
        return Err("malformed header checksum field".into());
    }
    octal(rest.get(..digits).unwrap_or_default())
        .ok_or_else(|| "malformed header checksum field".into())
}

/// A size field: octal (NUL/space padded) or GNU base-256. `None` if empty.
pub(super) fn size_field(f: &[u8]) -> Result<Option<u64>, String> {
    match f.first() {
        Some(&0x80) => {
            let mut value: u64 = 0;
            for &b in f.get(1..).unwrap_or_default() {
                value = value
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or("base-256 size overflows")?;
            }
            if value > MAX_SAFE_INTEGER {
                return Err("base-256 size beyond 2^53".into());
            }
            Ok(Some(value))
        }
        Some(&b) if b & 0x80 != 0 => Err("negative or malformed base-256 size".into()),
        _ => {
            let text = f.split(|&b| b == 0).next().unwrap_or_default();
            let trimmed = text.trim_ascii();
            if trimmed.is_empty() {
                return Ok(None);
            }
            octal(trimmed)
                .map(Some)
                .ok_or_else(|| "malformed octal size field".into())
        }
    }
}

/// Validates a base-256 numeric field the way node-tar's parser does (it
/// throws, skipping the header, on anything but 0x80/0xff prefixes or on
/// values outside JavaScript's safe integers). Octal garbage is harmless
/// there (it becomes `undefined`), so only base-256 is checked.
pub(super) fn check_base256(f: &[u8]) -> Result<(), String> {
    let Some(&first) = f.first() else {
        return Ok(());
    };
    if first & 0x80 == 0 {
        return Ok(());
    }
    let mut raw: u128 = 0;
    for &b in f {
        raw = (raw << 8) | u128::from(b);
    }
    let bits = 8 * f.len() as u32;
    let magnitude = match first {
        0x80 => raw & !(0x80u128 << (bits - 8)),
        0xff => (1u128 << bits) - raw,
        _ => return Err("malformed base-256 number".into()),
    };
    if magnitude > u128::from(MAX_SAFE_INTEGER) {
        return Err("base-256 number beyond 2^53".into());
    }
    Ok(())
}

fn octal(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &b| {
        if (b'0'..=b'7').contains(&b) {
            acc.checked_mul(8)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}
