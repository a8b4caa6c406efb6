//! A streaming base64 decoder: text arrives in pieces of any length (wherever the HTTP body was
//! cut), bytes leave in blocks, and nothing but a partial quad is ever held back.
//!
//! Strict like `Buffer.toString('base64')` writes it: the standard alphabet, canonical `=`
//! padding on the last quad only, no whitespace. Anything else is an error naming the offset.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{Bytes, BytesMut};

/// Decoded bytes are handed on in blocks of about this size.
pub(super) const BLOCK: usize = 128 * 1024;

/// Decodes one base64 text fed in pieces.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    /// Characters of a quad not complete yet.
    pending: [u8; 4],
    pending_len: usize,
    /// Decoded bytes not handed on yet.
    out: BytesMut,
    /// Characters consumed so far (for error offsets).
    seen: u64,
    /// Bytes decoded so far, handed on or not.
    decoded: u64,
    /// A padded quad was decoded: the text must end here.
    padded: bool,
}

impl Decoder {
    /// Decodes `text`; the caller takes [`Decoder::take`] when it wants the bytes.
    pub(super) fn feed(&mut self, mut text: &[u8]) -> Result<(), String> {
        if text.is_empty() {
            return Ok(());
        }
        if self.padded {
            return Err(format!("data after the padding at character {}", self.seen));
        }
        // Complete a quad left over from the last piece first.
        if self.pending_len > 0 {
            let need = (4 - self.pending_len).min(text.len());
            self.pending[self.pending_len..self.pending_len + need].copy_from_slice(&text[..need]);
            self.pending_len += need;
            text = &text[need..];
            if self.pending_len < 4 {
                return Ok(());
            }
            let quad = self.pending;
            self.pending_len = 0;
            self.decode(&quad)?;
            if !text.is_empty() && self.padded {
                return Err(format!("data after the padding at character {}", self.seen));
            }
        }
        let whole = text.len() / 4 * 4;
        self.decode(&text[..whole])?;
        let rest = &text[whole..];
        if !rest.is_empty() && self.padded {
            return Err(format!("data after the padding at character {}", self.seen));
        }
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
        Ok(())
    }

    /// Decodes whole quads into `out`.
    fn decode(&mut self, quads: &[u8]) -> Result<(), String> {
        if quads.is_empty() {
            return Ok(());
        }
        let start = self.out.len();
        self.out.resize(start + quads.len() / 4 * 3, 0);
        match STANDARD.decode_slice(quads, &mut self.out[start..]) {
            Ok(n) => {
                self.out.truncate(start + n);
                self.decoded += n as u64;
                self.padded = quads.last() == Some(&b'=');
                self.seen += quads.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.out.truncate(start);
                Err(format!("{e} (in the quads from character {})", self.seen))
            }
        }
    }

    /// How many decoded bytes are waiting.
    pub(super) fn ready(&self) -> usize {
        self.out.len()
    }

    /// How many bytes the text has decoded to so far, handed on or not.
    pub(super) fn decoded(&self) -> u64 {
        self.decoded
    }

    /// The decoded bytes so far.
    pub(super) fn take(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    /// Ends the text: a partial quad left over means it was cut or padded wrongly.
    pub(super) fn finish(&mut self) -> Result<Bytes, String> {
        if self.pending_len != 0 {
            return Err(format!(
                "the text ends inside a quad ({} characters, not a multiple of 4)",
                self.seen + self.pending_len as u64
            ));
        }
        Ok(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(text: &[u8], piece: usize) -> Result<Vec<u8>, String> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for p in text.chunks(piece.max(1)) {
            d.feed(p)?;
            out.extend_from_slice(&d.take());
        }
        out.extend_from_slice(&d.finish()?);
        Ok(out)
    }

    #[test]
    fn any_piece_size_decodes_the_same() {
        for len in [0usize, 1, 2, 3, 4, 5, 100, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let text = STANDARD.encode(&data);
            for piece in [1, 2, 3, 5, 7, 64, 4096] {
                assert_eq!(
                    decode_in_pieces(text.as_bytes(), piece).as_deref(),
                    Ok(&data[..]),
                    "len {len} piece {piece}"
                );
            }
        }
    }

    #[test]
    fn bad_text_is_refused() {
        for bad in [
            &b"QQ="[..],   // short quad
            b"QQ==QUJD",   // padding in the middle
            b"QU JD",      // whitespace
            b"QUJ*",       // not the alphabet
            b"QR==",       // non-canonical trailing bits
            b"QUJDRA==QQ", // more after padding
            b"Q===",       // too much padding
            b"QUJD-_==",   // url-safe alphabet
        ] {
            for piece in [1, 3, 4, 64] {
                assert!(
                    decode_in_pieces(bad, piece).is_err(),
                    "{:?} piece {piece}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }
}
