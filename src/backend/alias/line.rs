//! The text form of one alias record, shared by the alias logs (the fs index's older log file,
//! the remote backends' segments and markers): `v1 <sha512 hex> <sha1 hex> <blake3 hex> <size>\n`.

use crate::integrity::Digests;

/// One record's line.
pub(crate) fn line(d: &Digests) -> String {
    format!(
        "v1 {} {} {} {}\n",
        d.sha512_hex(),
        d.shasum(),
        d.blake3_hex(),
        d.size
    )
}

/// Parses one record line. It looks for the last `v1 `, so a torn line glued to the next costs only
/// itself; anything malformed is `None`.
pub(crate) fn parse_line(raw: &[u8]) -> Option<Digests> {
    let text = std::str::from_utf8(raw).ok()?;
    let start = text.rfind("v1 ")?;
    let mut fields = text[start + 3..].split(' ');
    let sha512 = hex::decode(fields.next()?).ok()?;
    let sha1 = hex::decode(fields.next()?).ok()?;
    let blake3 = hex::decode(fields.next()?).ok()?;
    let size = fields.next()?.trim().parse().ok()?;
    if fields.next().is_some() {
        return None;
    }
    Digests::from_parts(&sha512, &sha1, &blake3, size).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_lines_cost_only_themselves() {
        let d =
            Digests::from_parts(&[1; 64], &[2; 20], &[3; 32], 7).unwrap_or_else(|e| panic!("{e}"));
        let good = line(&d);
        let torn = &good[..50];
        let glued = format!("{torn}{good}");
        assert_eq!(parse_line(glued.trim_end().as_bytes()), Some(d));
        assert_eq!(parse_line(torn.as_bytes()), None);
    }
}
