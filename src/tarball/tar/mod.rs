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

use super::error::TarballError;

mod fields;
mod header;
mod pax;

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

    fn with_offset(&self, reason: String) -> TarballError {
        self.bad(reason)
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
