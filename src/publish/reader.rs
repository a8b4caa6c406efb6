//! The incremental JSON scanner under [`super::ingest`]: a cursor over the request body's chunks
//! that reads the document's structure a byte at a time and copies or streams values out.
//!
//! Why not serde_json: it parses a value only once the whole value is in memory, and the value
//! that matters here is one string of hundreds of megabytes (the base64 tarball). This scanner
//! only finds value boundaries (strings, escapes, nesting); the parts it keeps are parsed and
//! validated by serde_json afterwards, so it never has to be a full JSON parser itself.

use std::io;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::{Error, Result};

/// A cursor over a stream of body chunks.
pub(super) struct Reader<S> {
    stream: S,
    chunk: Bytes,
    pos: usize,
    /// Bytes consumed before `chunk`.
    offset: u64,
    ended: bool,
}

fn cut_short(offset: u64) -> Error {
    Error::document("body", format!("the body ends early, after {offset} bytes"))
}

impl<S> Reader<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    pub(super) fn new(stream: S) -> Self {
        Reader {
            stream,
            chunk: Bytes::new(),
            pos: 0,
            offset: 0,
            ended: false,
        }
    }

    /// Bytes consumed so far.
    pub(super) fn offset(&self) -> u64 {
        self.offset + self.pos as u64
    }

    /// Makes sure some unread bytes are at hand; `false` at the end of the body.
    async fn fill(&mut self) -> Result<bool> {
        while self.pos >= self.chunk.len() {
            if self.ended {
                return Ok(false);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.offset += self.chunk.len() as u64;
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(Error::from_io_reading(e, "the request body")),
                None => self.ended = true,
            }
        }
        Ok(true)
    }

    /// The unread part of the current chunk (empty only at the end of the body).
    pub(super) async fn available(&mut self) -> Result<&[u8]> {
        self.fill().await?;
        Ok(&self.chunk[self.pos..])
    }

    /// Marks `n` bytes of [`Reader::available`] as read.
    pub(super) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.chunk.len());
    }

    /// The next byte, without consuming it; an error at the end of the body.
    pub(super) async fn peek(&mut self) -> Result<u8> {
        if !self.fill().await? {
            return Err(cut_short(self.offset()));
        }
        Ok(self.chunk[self.pos])
    }

    /// The next byte after any whitespace, without consuming it.
    pub(super) async fn peek_token(&mut self) -> Result<u8> {
        loop {
            let b = self.peek().await?;
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Ok(b);
            }
            self.pos += 1;
        }
    }

    /// Reads one JSON escape, its `\` already consumed: the byte of the ASCII character it
    /// stands for (`\/`, `\n`, `\u002B`), or why it stands for none (`\u00e9`, a surrogate,
    /// `\x`), for a string that may hold ASCII only and is too long to copy aside and hand
    /// serde_json (an attachment's base64).
    pub(super) async fn escape(&mut self) -> Result<std::result::Result<u8, String>> {
        let b = self.peek().await?;
        self.pos += 1;
        let simple = match b {
            b'"' | b'\\' | b'/' => b,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut unit = 0u32;
                let mut text = String::from("\\u");
                for _ in 0..4 {
                    let h = self.peek().await?;
                    let Some(digit) = (h as char).to_digit(16) else {
                        return Ok(Err("`\\u` not followed by four hex digits".into()));
                    };
                    self.pos += 1;
                    text.push(h as char);
                    unit = unit * 16 + digit;
                }
                return Ok(u8::try_from(unit)
                    .ok()
                    .filter(u8::is_ascii)
                    .ok_or_else(|| format!("`{text}` stands for a character outside ASCII")));
            }
            other => {
                let why = format!("`\\{}` is not a JSON escape", other.escape_ascii());
                return Ok(Err(why));
            }
        };
        Ok(Ok(simple))
    }

    /// Consumes the next token, which must be `want`.
    pub(super) async fn expect(&mut self, want: u8, at: &str) -> Result<()> {
        let b = self.peek_token().await?;
        if b != want {
            return Err(self.unexpected(b, at, &format!("`{}`", want as char)));
        }
        self.pos += 1;
        Ok(())
    }

    /// After a member: `true` if another follows (a `,` was read), `false` at `close`.
    pub(super) async fn next_member(&mut self, close: u8, at: &str) -> Result<bool> {
        match self.peek_token().await? {
            b',' => {
                self.pos += 1;
                Ok(true)
            }
            b if b == close => {
                self.pos += 1;
                Ok(false)
            }
            b => Err(self.unexpected(b, at, &format!("`,` or `{}`", close as char))),
        }
    }

    /// The error for an unexpected byte.
    pub(super) fn unexpected(&self, got: u8, at: &str, wanted: &str) -> Error {
        let got = if got.is_ascii_graphic() {
            format!("`{}`", got as char)
        } else {
            format!("byte 0x{got:02x}")
        };
        Error::document(
            at,
            format!("expected {wanted}, found {got} at byte {}", self.offset()),
        )
    }

    /// Only whitespace may follow the document.
    pub(super) async fn end(&mut self) -> Result<()> {
        loop {
            if !self.fill().await? {
                return Ok(());
            }
            let b = self.chunk[self.pos];
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Err(self.unexpected(b, "body", "the end of the body"));
            }
            self.pos += 1;
        }
    }

    /// Copies the raw text of the next value (of any type) onto `out`, which may grow to `limit`
    /// bytes at most; `what` names the value in a [`Error::TooLarge`].
    pub(super) async fn copy_value(
        &mut self,
        out: &mut Vec<u8>,
        limit: usize,
        what: &str,
    ) -> Result<()> {
        self.peek_token().await?;
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            if !self.fill().await? {
                return Err(cut_short(self.offset()));
            }
            let rest = &self.chunk[self.pos..];
            let mut taken = 0;
            let mut done = false;
            for &b in rest {
                if in_string {
                    taken += 1;
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        done = depth == 0;
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' if depth == 0 => done = true,
                        b'}' | b']' => {
                            depth -= 1;
                            done = depth == 0;
                            taken += 1;
                            if done {
                                break;
                            }
                            continue;
                        }
                        b',' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => done = true,
                        _ => {}
                    }
                    if done {
                        break;
                    }
                    taken += 1;
                }
                if done {
                    break;
                }
            }
            if out.len() + taken > limit {
                return Err(Error::TooLarge {
                    what: what.to_string(),
                    limit: limit as u64,
                });
            }
            out.extend_from_slice(&rest[..taken]);
            self.pos += taken;
            if done {
                return Ok(());
            }
        }
    }

    /// The next value, which must be a string of at most `limit` bytes of JSON text, decoded.
    pub(super) async fn string(&mut self, limit: usize, at: &str) -> Result<String> {
        let b = self.peek_token().await?;
        if b != b'"' {
            return Err(self.unexpected(b, at, "a string"));
        }
        let mut raw = Vec::new();
        self.copy_value(&mut raw, limit, at).await?;
        serde_json::from_slice(&raw).map_err(|e| Error::document(at, format!("bad string: {e}")))
    }

    /// The next value parsed as JSON, from at most `limit` bytes of text.
    pub(super) async fn value<T: serde::de::DeserializeOwned>(
        &mut self,
        limit: usize,
        at: &str,
    ) -> Result<T> {
        let mut raw = Vec::new();
        self.copy_value(&mut raw, limit, at).await?;
        serde_json::from_slice(&raw).map_err(|e| Error::document(at, e.to_string()))
    }
}
