//! Push-mode tar parser: a 512-byte-block state machine that turns a stream
//! of decompressed bytes into entry headers plus (optionally) body bytes.
//!
//! The parser's job is to see exactly the entries that npm's `tar` package
//! (node-tar, used by npm and pacote to unpack) would see, so that what we
//! validate is what gets extracted. Wherever node-tar would silently skip a
//! header and resynchronise differently from us (bad checksum, missing path,
//! a link without a target, a malformed number or pax record), we fail with
//! [`TarballError::BadTar`] instead: a parser differential is how a hostile
//! tarball smuggles an entry past an inspector.
//!
//! Supported: ustar name + prefix (with node-tar's 130/155-byte prefix rule),
//! GNU long names `L`/`N` and long link names `K`, pax `x`/`X` (local) and
//! `g` (global) records for `path`/`linkpath`/`size`, octal and base-256
//! numbers, padding, and the two-zero-block end marker (anything after it is
//! ignored, as node-tar does).

use std::borrow::Cow;

use super::error::TarballError;

const BLOCK: usize = 512;
/// node-tar's `maxMetaEntrySize`: pax and GNU long-name bodies are buffered,
/// so they are capped.
const MAX_META: u64 = 1 << 20;
/// JavaScript's `Number.MAX_SAFE_INTEGER`: node-tar rejects larger numbers.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// What kind of object an entry creates when extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// Regular (`0`, NUL) or contiguous (`7`) file.
    File,
    /// Hard link (`1`); its target is archive-relative.
    HardLink,
    /// Symbolic link (`2`); its target is relative to the link's directory.
    Symlink,
    /// Character device (`3`).
    CharDevice,
    /// Block device (`4`).
    BlockDevice,
    /// Directory (`5`, or `0` with a trailing slash, as old tars wrote them).
    Directory,
    /// FIFO (`6`).
    Fifo,
    /// GNU dump directory (`D`): a directory whose body lists its contents.
    DumpDir,
}

/// One entry as node-tar would emit it.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) path: &'a str,
    /// Effective link target (pax/GNU long link name, else the header field).
    pub(crate) link: &'a str,
    pub(crate) kind: EntryKind,
    /// The size npm reports for the entry (directories: 0).
    pub(crate) size: u64,
}

/// What the visitor wants done with an entry's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// Discard it.
    Skip,
    /// Pass it to [`Visitor::data`], then call [`Visitor::end`].
    Capture,
}

/// Receives entries from the [`TarParser`].
pub(crate) trait Visitor {
    /// Called for each entry header; may reject the entry.
    fn entry(&mut self, entry: &Entry<'_>) -> Result<Body, TarballError>;
    /// Body bytes of a captured entry, in order.
    fn data(&mut self, chunk: &[u8]) -> Result<(), TarballError>;
    /// End of a captured entry's body.
    fn end(&mut self) -> Result<(), TarballError>;
    /// Something odd but harmless.
    fn warn(&mut self, message: String);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Pax,
    GlobalPax,
    LongPath,
    LongLink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Skip,
    Visitor,
    Meta(Meta),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Body { data: u64, pad: u64, sink: Sink },
    End,
}

/// Overrides from pax `x` records and GNU `L`/`K` entries, applied to the
/// next real entry. Like node-tar, they accumulate across consecutive meta
/// entries and reset after a real one.
#[derive(Debug, Default)]
struct Ext {
    path: Option<String>,
    linkpath: Option<String>,
    size: Option<u64>,
}

/// The push-mode tar state machine.
pub(crate) struct TarParser {
    state: State,
    block: [u8; BLOCK],
    block_len: usize,
    /// Decompressed bytes consumed so far.
    offset: u64,
    /// Offset of the header being processed, for error messages.
    header_offset: u64,
    prev_zero: bool,
    ext: Ext,
    meta: Vec<u8>,
    entries_seen: bool,
}

impl TarParser {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Header,
            block: [0; BLOCK],
            block_len: 0,
            offset: 0,
            header_offset: 0,
            prev_zero: false,
            ext: Ext::default(),
            meta: Vec::new(),
            entries_seen: false,
        }
    }

    /// Whether the end-of-archive marker has been seen.
    pub(crate) fn ended(&self) -> bool {
        self.state == State::End
    }

    /// Feeds decompressed tar bytes.
    pub(crate) fn feed<V: Visitor>(
        &mut self,
        mut data: &[u8],
        v: &mut V,
    ) -> Result<(), TarballError> {
        while !data.is_empty() {
            match self.state {
                State::End => return Ok(()),
                State::Header => {
                    if self.block_len == 0 {
                        if let Some(block) = data.first_chunk::<BLOCK>() {
                            self.header_offset = self.offset;
                            self.offset += BLOCK as u64;
                            data = data.get(BLOCK..).unwrap_or_default();
                            self.header(block, v)?;
                            continue;
                        }
                    }
                    let n = (BLOCK - self.block_len).min(data.len());
                    if let (Some(dst), Some(src)) = (
                        self.block.get_mut(self.block_len..self.block_len + n),
                        data.get(..n),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    self.block_len += n;
                    self.offset += n as u64;
                    data = data.get(n..).unwrap_or_default();
                    if self.block_len == BLOCK {
                        self.block_len = 0;
                        self.header_offset = self.offset - BLOCK as u64;
                        let block = self.block;
                        self.header(&block, v)?;
                    }
                }
                State::Body {
                    data: left,
                    pad,
                    sink,
                } => {
                    if left > 0 {
                        let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                        let chunk = data.get(..n).unwrap_or_default();
                        data = data.get(n..).unwrap_or_default();
                        self.offset += n as u64;
                        let left = left - n as u64;
                        self.state = State::Body {
                            data: left,
                            pad,
                            sink,
                        };
                        match sink {
                            Sink::Skip => {}
                            Sink::Visitor => v.data(chunk)?,
                            Sink::Meta(_) => self.meta.extend_from_slice(chunk),
                        }
                        if left == 0 {
                            self.body_done(sink, v)?;
                        }
                    } else {
                        let n = usize::try_from(pad).unwrap_or(usize::MAX).min(data.len());
                        data = data.get(n..).unwrap_or_default();
                        self.offset += n as u64;
                        let pad = pad - n as u64;
                        self.state = if pad == 0 {
                            State::Header
                        } else {
                            State::Body { data: 0, pad, sink }
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that the archive is complete.
    pub(crate) fn finish(&self) -> Result<(), TarballError> {
        match self.state {
            State::End => Ok(()),
            State::Header if self.block_len > 0 => Err(TarballError::Truncated(format!(
                "tar header at byte {} cut short",
                self.offset - self.block_len as u64
            ))),
            State::Header if !self.entries_seen && self.offset == 0 => {
                Err(TarballError::Truncated("no tar data".into()))
            }
            State::Header => Err(TarballError::Truncated(format!(
                "tar stream ends at byte {} without the end-of-archive marker",
                self.offset
            ))),
            State::Body { data, .. } => Err(TarballError::Truncated(format!(
                "entry at byte {} cut short ({} body bytes missing)",
                self.header_offset, data
            ))),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> TarballError {
        TarballError::bad_tar(self.header_offset, reason)
    }

    fn body_done<V: Visitor>(&mut self, sink: Sink, v: &mut V) -> Result<(), TarballError> {
        match sink {
            Sink::Skip => Ok(()),
            Sink::Visitor => v.end(),
            Sink::Meta(kind) => {
                let meta = std::mem::take(&mut self.meta);
                let result = self.apply_meta(kind, &meta, v);
                // Keep the allocation for the next meta entry.
                self.meta = meta;
                self.meta.clear();
                result
            }
        }
    }

    fn apply_meta<V: Visitor>(
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

    fn with_offset(&self, reason: String) -> TarballError {
        self.bad(reason)
    }

    /// Processes one 512-byte header block.
    fn header<V: Visitor>(&mut self, b: &[u8; BLOCK], v: &mut V) -> Result<(), TarballError> {
        if b.iter().all(|&x| x == 0) {
            if self.prev_zero {
                self.state = State::End;
            }
            self.prev_zero = true;
            return Ok(());
        }
        self.prev_zero = false;

        let stored = checksum_field(field(b, 148, 8)).map_err(|e| self.bad(e))?;
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
            return Err(self.bad(format!(
                "header checksum {stored} does not match computed {actual}"
            )));
        }

        // Numeric fields node-tar decodes (and rejects if base-256 is bad).
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
            check_base256(field(b, *off, *len)).map_err(|e| self.bad(e))?;
        }
        let raw_size = size_field(field(b, 124, 12)).map_err(|e| self.bad(e))?;

        let name = cstr(field(b, 0, 100)).map_err(|e| self.bad(e))?;
        let raw_link = cstr(field(b, 157, 100)).map_err(|e| self.bad(e))?;
        let prefix = if !ustar {
            Cow::Borrowed("")
        } else if star_prefix {
            cstr(field(b, 345, 155)).map_err(|e| self.bad(e))?
        } else {
            cstr(field(b, 345, 130)).map_err(|e| self.bad(e))?
        };

        let typeflag = field(b, 156, 1).first().copied().unwrap_or(0);
        let unprefixed = self.ext.path.as_deref().unwrap_or(&name);
        let kind = match typeflag {
            b'0' | 0 if unprefixed.ends_with('/') => Ok(EntryKind::Directory),
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
        };

        // node-tar's header path: prefix + '/' + (pax/GNU path or name).
        let header_path_empty = prefix.is_empty() && unprefixed.is_empty();
        if header_path_empty {
            return Err(self.bad("entry has no path"));
        }
        let is_link = matches!(kind, Ok(EntryKind::HardLink | EntryKind::Symlink));
        if is_link && raw_link.is_empty() {
            return Err(self.bad("link entry without a target in its header"));
        }
        if !is_link && !matches!(typeflag, b'x' | b'g') && !raw_link.is_empty() {
            return Err(self.bad("non-link entry with a link target"));
        }

        let size = self.ext.size.or(raw_size).unwrap_or(0);
        if size > MAX_SAFE_INTEGER {
            return Err(self.bad(format!("entry size {size} is beyond 2^53")));
        }

        let kind = match kind {
            Ok(kind) => kind,
            Err(Some(meta)) => {
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
                return Ok(());
            }
            Err(None) => {
                // Unknown or unsupported type (sparse, volume label, ...):
                // node-tar skips it without extracting, so do we.
                let ext = std::mem::take(&mut self.ext);
                let path = ext.path.unwrap_or_else(|| join_prefix(&prefix, &name));
                v.warn(format!(
                    "ignored entry {:?} of unsupported type {:?}",
                    super::paths::short(&path),
                    char::from(typeflag)
                ));
                self.start_body(size, Sink::Skip);
                return Ok(());
            }
        };

        let ext = std::mem::take(&mut self.ext);
        let path = ext.path.unwrap_or_else(|| join_prefix(&prefix, &name));
        if path.is_empty() {
            return Err(self.bad("entry has an empty path"));
        }
        let link = ext.linkpath.unwrap_or_else(|| raw_link.into_owned());
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

    fn start_body(&mut self, len: u64, sink: Sink) {
        if len == 0 {
            self.state = State::Header;
            return;
        }
        let pad = (BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64;
        self.state = State::Body {
            data: len,
            pad,
            sink,
        };
    }
}

/// `len` bytes at `off`, or an empty slice (never panics).
fn field(b: &[u8; BLOCK], off: usize, len: usize) -> &[u8] {
    b.get(off..off + len).unwrap_or_default()
}

fn join_prefix(prefix: &str, name: &str) -> String {
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
fn cstr(bytes: &[u8]) -> Result<Cow<'_, str>, String> {
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
fn checksum_field(f: &[u8]) -> Result<u64, String> {
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
fn size_field(f: &[u8]) -> Result<Option<u64>, String> {
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
fn check_base256(f: &[u8]) -> Result<(), String> {
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
