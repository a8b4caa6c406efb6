//! Extended headers: pax `x`/`g` records and GNU long names, parsed strictly and applied to the
//! next entry as node-tar would.

use super::fields::cstr;
use super::{Meta, TarParser, Visitor, MAX_SAFE_INTEGER};
use crate::tarball::error::TarballError;

impl TarParser {
    /// Applies a meta entry's body (pax records or a GNU long name) to the next real entry.
    pub(super) fn apply_meta<V: Visitor>(
        &mut self,
        kind: Meta,
        body: &[u8],
        v: &mut V,
    ) -> Result<(), TarballError> {
        match kind {
            Meta::LongPath => {
                self.ext.path = Some(cstr(body).map_err(|e| self.bad(e))?.into_owned());
            }
            Meta::LongLink => {
                self.ext.linkpath = Some(cstr(body).map_err(|e| self.bad(e))?.into_owned());
            }
            Meta::Pax => {
                parse_pax(body, |key, value| {
                    match key {
                        "path" => self.ext.path = Some(pax_path(value)?),
                        "linkpath" => self.ext.linkpath = Some(pax_path(value)?),
                        "size" => self.ext.size = Some(pax_size(value)?),
                        _ => {}
                    }
                    Ok(())
                })
                .map_err(|e| self.with_offset(e))?;
            }
            Meta::GlobalPax => {
                let mut ignored_path = false;
                parse_pax(body, |key, _value| match key {
                    // node-tar ignores a global path, but applies a global
                    // size and linkpath inconsistently (header vs entry), so
                    // those are refused rather than guessed.
                    "path" => {
                        ignored_path = true;
                        Ok(())
                    }
                    "linkpath" | "size" => Err(format!("global pax header sets {key:?}")),
                    _ => Ok(()),
                })
                .map_err(|e| self.with_offset(e))?;
                if ignored_path {
                    v.warn("global pax header sets \"path\"; ignored".into());
                }
            }
        }
        Ok(())
    }
}

/// Pax keys node-tar may see. node-tar copies every pax key onto its header
/// and entry objects (`Object.assign`), so an unexpected key such as `type`,
/// `remain` or `__proto__` changes how it parses. Standard keys and dotted
/// vendor keys (`SCHILY.xattr.*`, `LIBARCHIVE.*`) cannot collide; any other
/// bare key is refused.
const PAX_KEYS: &[&str] = &[
    "path",
    "linkpath",
    "size",
    "mtime",
    "atime",
    "ctime",
    "uid",
    "gid",
    "uname",
    "gname",
    "charset",
    "comment",
    "hdrcharset",
];

/// Parses pax records (`"<len> <key>=<value>\n"`) strictly, calling `f` for
/// each. Anything node-tar's naive line-based parser would read differently
/// (leading zeros, embedded newlines, missing `=`) is an error.
fn parse_pax<F>(mut body: &[u8], mut f: F) -> Result<(), String>
where
    F: FnMut(&str, &str) -> Result<(), String>,
{
    while !body.is_empty() {
        if body.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
        let len_text = body.get(..digits).unwrap_or_default();
        if digits == 0 || (digits > 1 && len_text.first() == Some(&b'0')) {
            return Err("malformed pax record length".into());
        }
        let len = std::str::from_utf8(len_text)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or("malformed pax record length")?;
        let record = body.get(..len).ok_or("pax record longer than its header")?;
        let rest = record
            .get(digits..)
            .and_then(|r| r.strip_prefix(b" "))
            .and_then(|r| r.strip_suffix(b"\n"))
            .ok_or("malformed pax record")?;
        if rest.contains(&b'\n') {
            return Err("pax record contains a newline".into());
        }
        let eq = rest
            .iter()
            .position(|&b| b == b'=')
            .ok_or("pax record without '='")?;
        let key = std::str::from_utf8(rest.get(..eq).unwrap_or_default())
            .map_err(|_| "pax key is not UTF-8")?;
        let value = String::from_utf8_lossy(rest.get(eq + 1..).unwrap_or_default());
        if key.is_empty() || !(key.contains('.') || PAX_KEYS.contains(&key)) {
            return Err(format!("unsupported pax key {key:?}"));
        }
        f(key, &value)?;
        body = body.get(len..).unwrap_or_default();
    }
    Ok(())
}

/// A pax path value. node-tar turns an all-digit value into a number, which
/// breaks its path handling; refuse those.
fn pax_path(value: &str) -> Result<String, String> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("numeric pax path {value:?}"));
    }
    Ok(value.to_owned())
}

fn pax_size(value: &str) -> Result<u64, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("malformed pax size {value:?}"));
    }
    value
        .parse::<u64>()
        .ok()
        .filter(|&n| n <= MAX_SAFE_INTEGER)
        .ok_or_else(|| format!("pax size {value:?} beyond 2^53"))
}
