//! One 512-byte header block: its checksum and numeric fields checked, its names decoded, its type
//! flag classified, and the entry (or meta entry) it starts.

use std::borrow::Cow;

use super::fields::{check_base256, checksum_field, cstr, field, join_prefix, size_field};
use super::{Body, Entry, EntryKind, Meta, Sink, State, TarParser, Visitor, BLOCK};
use super::{MAX_META, MAX_SAFE_INTEGER};
use crate::tarball::error::TarballError;

/// A header's fields, checked and decoded before its type is looked at.
struct Fields<'b> {
    /// The size field (`None` if empty).
    size: Option<u64>,
    name: Cow<'b, str>,
    link: Cow<'b, str>,
    /// The ustar prefix (empty for old-style headers).
    prefix: Cow<'b, str>,
    typeflag: u8,
}

/// Checks a non-zero header's checksum and the numeric fields node-tar decodes (and rejects if
/// base-256 is bad), and decodes its string fields.
fn decode(b: &[u8; BLOCK]) -> Result<Fields<'_>, String> {
    let stored = checksum_field(field(b, 148, 8))?;
    let actual: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                0x20
            } else {
                u64::from(x)
            }
        })
        .sum();
    if stored != actual {
        return Err(format!(
            "header checksum {stored} does not match computed {actual}"
        ));
    }

    let ustar = field(b, 257, 8) == b"ustar\x0000";
    let star_prefix = field(b, 475, 1) != [0];
    let numeric = [
        (100, 8, true),
        (108, 8, true),
        (116, 8, true),
        (136, 12, true),
        (329, 8, ustar),
        (337, 8, ustar),
        (476, 12, ustar && !star_prefix),
        (488, 12, ustar && !star_prefix),
    ];
    for (off, len, _) in numeric.iter().filter(|n| n.2) {
        check_base256(field(b, *off, *len))?;
    }
    let size = size_field(field(b, 124, 12))?;

    let name = cstr(field(b, 0, 100))?;
    let link = cstr(field(b, 157, 100))?;
    let prefix = if !ustar {
        Cow::Borrowed("")
    } else if star_prefix {
        cstr(field(b, 345, 155))?
    } else {
        cstr(field(b, 345, 130))?
    };
    let typeflag = field(b, 156, 1).first().copied().unwrap_or(0);
    Ok(Fields {
        size,
        name,
        link,
        prefix,
        typeflag,
    })
}

/// What a type flag makes: an entry, a meta entry (`Err(Some)`), or nothing node-tar extracts
/// (`Err(None)`). `path` is the entry's path before the prefix (a directory may be written as a
/// file whose name ends in `/`).
fn classify(typeflag: u8, path: &str) -> Result<EntryKind, Option<Meta>> {
    match typeflag {
        b'0' | 0 if path.ends_with('/') => Ok(EntryKind::Directory),
        b'0' | 0 | b'7' => Ok(EntryKind::File),
        b'1' => Ok(EntryKind::HardLink),
        b'2' => Ok(EntryKind::Symlink),
        b'3' => Ok(EntryKind::CharDevice),
        b'4' => Ok(EntryKind::BlockDevice),
        b'5' => Ok(EntryKind::Directory),
        b'6' => Ok(EntryKind::Fifo),
        b'D' => Ok(EntryKind::DumpDir),
        b'x' | b'X' => Err(Some(Meta::Pax)),
        b'g' => Err(Some(Meta::GlobalPax)),
        b'L' | b'N' => Err(Some(Meta::LongPath)),
        b'K' => Err(Some(Meta::LongLink)),
        _ => Err(None),
    }
}

impl TarParser {
    /// Processes one 512-byte header block.
    pub(super) fn header<V: Visitor>(
        &mut self,
        b: &[u8; BLOCK],
        v: &mut V,
    ) -> Result<(), TarballError> {
        if b.iter().all(|&x| x == 0) {
            if self.prev_zero {
                self.state = State::End;
            }
            self.prev_zero = true;
            return Ok(());
        }
        self.prev_zero = false;

        let fields = decode(b).map_err(|e| self.bad(e))?;
        let typeflag = fields.typeflag;
        let unprefixed = self.ext.path.as_deref().unwrap_or(&fields.name);
        let kind = classify(typeflag, unprefixed);

        // node-tar's header path: prefix + '/' + (pax/GNU path or name).
        if fields.prefix.is_empty() && unprefixed.is_empty() {
            return Err(self.bad("entry has no path"));
        }
        // node-tar 7 applies pending pax/GNU overrides to entries only: a meta header, or one of
        // an unknown type, keeps its own path and size (older versions apply them to every
        // header). Where the two would read such a header differently (one reads its body by
        // the pax size, the other by its own, and takes the rest for headers), it is refused.
        if kind.is_err() {
            if fields.prefix.is_empty() && fields.name.is_empty() {
                return Err(self.bad("header has no path of its own"));
            }
            if self.ext.size.is_some_and(|s| s != fields.size.unwrap_or(0)) {
                return Err(self.bad(format!(
                    "a pax size is pending before a header of type {:?}, which node-tar 7 \
                     reads by its own size",
                    char::from(typeflag)
                )));
            }
        }
        let is_link = matches!(kind, Ok(EntryKind::HardLink | EntryKind::Symlink));
        if is_link && fields.link.is_empty() {
            return Err(self.bad("link entry without a target in its header"));
        }
        if !is_link && !matches!(typeflag, b'x' | b'g') && !fields.link.is_empty() {
            return Err(self.bad("non-link entry with a link target"));
        }

        let size = self.ext.size.or(fields.size).unwrap_or(0);
        if size > MAX_SAFE_INTEGER {
            return Err(self.bad(format!("entry size {size} is beyond 2^53")));
        }

        match kind {
            Ok(kind) => self.start_entry(kind, fields, size, v),
            Err(Some(meta)) => self.start_meta(meta, size),
            Err(None) => {
                // Unknown or unsupported type (sparse, volume label, ...):
                // node-tar skips it without extracting, so do we.
                let ext = std::mem::take(&mut self.ext);
                let path = ext
                    .path
                    .unwrap_or_else(|| join_prefix(&fields.prefix, &fields.name));
                v.warn(format!(
                    "ignored entry {:?} of unsupported type {:?}",
                    crate::tarball::paths::short(&path),
                    char::from(typeflag)
                ));
                self.start_body(size, Sink::Skip);
                Ok(())
            }
        }
    }

    /// A meta entry's body is buffered (up to node-tar's limit) for the next real entry.
    fn start_meta(&mut self, meta: Meta, size: u64) -> Result<(), TarballError> {
        // node-tar does nothing at all for an empty meta entry.
        if size > 0 {
            if size > MAX_META {
                return Err(self.bad(format!(
                    "extended header of {size} bytes exceeds {MAX_META}"
                )));
            }
            self.meta.clear();
            self.start_body(size, Sink::Meta(meta));
        }
        Ok(())
    }

    /// A real entry, with the overrides of the meta entries before it, goes to the visitor.
    fn start_entry<V: Visitor>(
        &mut self,
        kind: EntryKind,
        fields: Fields<'_>,
        size: u64,
        v: &mut V,
    ) -> Result<(), TarballError> {
        let ext = std::mem::take(&mut self.ext);
        let path = ext
            .path
            .unwrap_or_else(|| join_prefix(&fields.prefix, &fields.name));
        if path.is_empty() {
            return Err(self.bad("entry has an empty path"));
        }
        let link = ext.linkpath.unwrap_or_else(|| fields.link.into_owned());
        // node-tar: a directory has no body, whatever its header says; the
        // size it reports is 0 unless a pax record overrides it.
        let (body_len, reported) = if kind == EntryKind::Directory {
            (0, ext.size.unwrap_or(0))
        } else {
            (size, size)
        };
        self.entries_seen = true;
        let entry = Entry {
            path: &path,
            link: &link,
            kind,
            size: reported,
        };
        let body = v.entry(&entry)?;
        match body {
            Body::Capture if body_len == 0 => v.end()?,
            Body::Capture => self.start_body(body_len, Sink::Visitor),
            Body::Skip => self.start_body(body_len, Sink::Skip),
        }
        Ok(())
    }
}
