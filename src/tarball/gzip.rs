//! Push-mode gzip decoding (RFC 1952) on top of `flate2::Decompress`.
//!
//! flate2's own gzip types are pull-based (`read::GzDecoder`) or hide the
//! distinction between a corrupt deflate stream and a bad checksum. Parsing
//! the 10-byte header and 8-byte trailer here keeps the inflate loop push
//! based (bytes arrive from the network in arbitrary chunks) and lets each
//! failure map to its own [`TarballError`] kind.
//!
//! Like Node's zlib (which npm uses), concatenated gzip members are decoded
//! as one stream. After a complete member, bytes that start with a zero byte
//! (padding) are ignored with a warning; any others must start another
//! member, as Node's zlib requires: it fails on them ("incorrect header
//! check", "unexpected end of file"), and so does an `npm install` of the
//! tarball.

use flate2::{Crc, Decompress, FlushDecompress, Status};

use super::error::TarballError;

/// Size of the inflate output buffer. 64 KiB keeps the per-call overhead low
/// while staying in L2 for the CRC and tar passes that follow.
const OUT_BUF_SIZE: usize = 64 * 1024;

const FTEXT: u8 = 1;
const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;
const FRESERVED: u8 = !(FTEXT | FHCRC | FEXTRA | FNAME | FCOMMENT);

/// Where we are inside a member header.
#[derive(Debug, Clone, Copy)]
enum HeaderStep {
    /// The fixed 10 bytes: magic, method, flags, mtime, xfl, os.
    Fixed,
    /// The 2-byte FEXTRA length.
    ExtraLen,
    /// Skipping FEXTRA payload; the count is what is left.
    Extra(usize),
    /// Skipping the zero-terminated file name.
    Name,
    /// Skipping the zero-terminated comment.
    Comment,
    /// The 2-byte header CRC.
    HeaderCrc,
}

#[derive(Debug)]
enum State {
    /// Parsing a member header. `optional` is set between members: bytes that
    /// start with a zero byte are trailing garbage, not an error.
    Header { step: HeaderStep, optional: bool },
    /// Inflating member data.
    Deflate,
    /// Collecting the 8-byte trailer.
    Trailer,
    /// Ignoring everything after the last member.
    Garbage,
}

/// Incremental gzip decoder that pushes decompressed bytes into a sink.
pub(crate) struct GzipDecoder {
    state: State,
    flags: u8,
    /// Small fixed-size buffer for header fields and the trailer.
    small: [u8; 10],
    small_len: usize,
    /// CRC of the header bytes, for FHCRC.
    header_crc: Crc,
    inflate: Decompress,
    /// CRC and length of the current member's output.
    crc: Crc,
    member_out: u64,
    out: Box<[u8]>,
    /// Compressed bytes consumed so far (headers, deflate data, trailers).
    consumed: u64,
    /// Decompressed bytes produced so far.
    produced: u64,
    members: u64,
    garbage: u64,
}

impl GzipDecoder {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Header {
                step: HeaderStep::Fixed,
                optional: false,
            },
            flags: 0,
            small: [0; 10],
            small_len: 0,
            header_crc: Crc::new(),
            inflate: Decompress::new(false),
            crc: Crc::new(),
            member_out: 0,
            out: vec![0u8; OUT_BUF_SIZE].into_boxed_slice(),
            consumed: 0,
            produced: 0,
            members: 0,
            garbage: 0,
        }
    }

    /// Bytes of non-gzip data ignored after the last member.
    pub(crate) fn trailing_garbage(&self) -> u64 {
        self.garbage
    }

    /// Decodes `input`, calling `sink(data, compressed_consumed, decompressed_total)`
    /// for every batch of output. The sink's error aborts decoding.
    pub(crate) fn feed<F>(&mut self, mut input: &[u8], sink: &mut F) -> Result<(), TarballError>
    where
        F: FnMut(&[u8], u64, u64) -> Result<(), TarballError>,
    {
        while !input.is_empty() {
            let used = match self.state {
                State::Header { step, optional } => self.header(input, step, optional)?,
                State::Deflate => self.deflate(input, sink)?,
                State::Trailer => self.trailer(input)?,
                State::Garbage => {
                    self.garbage = self.garbage.saturating_add(input.len() as u64);
                    input.len()
                }
            };
            self.consumed = self.consumed.saturating_add(used as u64);
            input = input.get(used..).unwrap_or_default();
        }
        Ok(())
    }

    /// Checks that the input ended on a member boundary.
    pub(crate) fn finish(&self) -> Result<(), TarballError> {
        match self.state {
            State::Header { optional: true, .. } if self.small_len == 0 => Ok(()),
            State::Garbage => Ok(()),
            State::Header { .. } if self.members == 0 && self.consumed == 0 => {
                Err(TarballError::Truncated("empty input".into()))
            }
            State::Header { .. } => Err(TarballError::Truncated("gzip header cut short".into())),
            State::Deflate => Err(TarballError::Truncated(format!(
                "compressed data ends after {} bytes without the end of the deflate stream",
                self.consumed
            ))),
            State::Trailer => Err(TarballError::Truncated("gzip trailer cut short".into())),
        }
    }

    /// Appends up to `want` bytes of `input` to `small`; returns bytes used.
    fn fill_small(&mut self, input: &[u8], want: usize) -> usize {
        let need = want.saturating_sub(self.small_len);
        let n = need.min(input.len());
        if let (Some(dst), Some(src)) = (
            self.small.get_mut(self.small_len..self.small_len + n),
            input.get(..n),
        ) {
            dst.copy_from_slice(src);
            self.small_len += n;
            n
        } else {
            0
        }
    }

    fn header(
        &mut self,
        input: &[u8],
        step: HeaderStep,
        optional: bool,
    ) -> Result<usize, TarballError> {
        let (used, next) = match step {
            HeaderStep::Fixed => {
                let used = self.fill_small(input, 10);
                // Check the magic as soon as it is visible, so that garbage
                // between members is recognised without waiting for 10 bytes.
                let magic_ok = self
                    .small
                    .iter()
                    .take(self.small_len.min(2))
                    .zip([0x1f, 0x8b])
                    .all(|(a, b)| *a == b);
                if !magic_ok {
                    if optional && self.small.first() == Some(&0) {
                        // Count what we buffered plus this call's bytes as garbage.
                        self.garbage = self.garbage.saturating_add(self.small_len as u64);
                        self.small_len = 0;
                        self.state = State::Garbage;
                        return Ok(used);
                    }
                    return Err(TarballError::BadGzip(if optional {
                        "bytes after the gzip stream that are neither another member nor \
                         zero padding"
                            .into()
                    } else {
                        "not gzip data (bad magic bytes)".into()
                    }));
                }
                if self.small_len < 10 {
                    self.header_crc
                        .update(input.get(..used).unwrap_or_default());
                    return Ok(used);
                }
                self.header_crc
                    .update(input.get(..used).unwrap_or_default());
                let [_, _, method, flags, ..] = self.small;
                if method != 8 {
                    return Err(TarballError::BadGzip(format!(
                        "unsupported compression method {method}"
                    )));
                }
                if flags & FRESERVED != 0 {
                    return Err(TarballError::BadGzip(format!(
                        "reserved header flag bits set ({flags:#04x})"
                    )));
                }
                self.flags = flags;
                self.small_len = 0;
                (used, self.after(HeaderStep::Fixed))
            }
            HeaderStep::ExtraLen => {
                let used = self.fill_small(input, 2);
                self.header_crc
                    .update(input.get(..used).unwrap_or_default());
                if self.small_len < 2 {
                    return Ok(used);
                }
                let [lo, hi, ..] = self.small;
                self.small_len = 0;
                let len = usize::from(u16::from_le_bytes([lo, hi]));
                (used, Some(HeaderStep::Extra(len)))
            }
            HeaderStep::Extra(left) => {
                let n = left.min(input.len());
                self.header_crc.update(input.get(..n).unwrap_or_default());
                if n < left {
                    (n, Some(HeaderStep::Extra(left - n)))
                } else {
                    (n, self.after(HeaderStep::Extra(0)))
                }
            }
            HeaderStep::Name | HeaderStep::Comment => match input.iter().position(|&b| b == 0) {
                Some(nul) => {
                    self.header_crc
                        .update(input.get(..=nul).unwrap_or_default());
                    (nul + 1, self.after(step))
                }
                None => {
                    self.header_crc.update(input);
                    (input.len(), Some(step))
                }
            },
            HeaderStep::HeaderCrc => {
                let used = self.fill_small(input, 2);
                if self.small_len < 2 {
                    return Ok(used);
                }
                let [lo, hi, ..] = self.small;
                self.small_len = 0;
                let stored = u16::from_le_bytes([lo, hi]);
                let actual = (self.header_crc.sum() & 0xffff) as u16;
                if stored != actual {
                    return Err(TarballError::GzipChecksum(format!(
                        "header CRC16 {stored:#06x} != computed {actual:#06x}"
                    )));
                }
                (used, None)
            }
        };
        match next {
            Some(step) => {
                self.state = State::Header {
                    step,
                    optional: false,
                }
            }
            None => {
                self.inflate.reset(false);
                self.crc.reset();
                self.member_out = 0;
                self.state = State::Deflate;
            }
        }
        Ok(used)
    }

    /// The header step after `done`, given the member's flags; `None` when the
    /// header is complete.
    fn after(&self, done: HeaderStep) -> Option<HeaderStep> {
        let order = [
            (FEXTRA, HeaderStep::ExtraLen),
            (FNAME, HeaderStep::Name),
            (FCOMMENT, HeaderStep::Comment),
            (FHCRC, HeaderStep::HeaderCrc),
        ];
        let start = match done {
            HeaderStep::Fixed => 0,
            HeaderStep::ExtraLen | HeaderStep::Extra(_) => 1,
            HeaderStep::Name => 2,
            HeaderStep::Comment => 3,
            HeaderStep::HeaderCrc => 4,
        };
        order
            .iter()
            .skip(start)
            .find(|(flag, _)| self.flags & flag != 0)
            .map(|(_, step)| *step)
    }

    fn deflate<F>(&mut self, input: &[u8], sink: &mut F) -> Result<usize, TarballError>
    where
        F: FnMut(&[u8], u64, u64) -> Result<(), TarballError>,
    {
        let mut rest = input;
        let mut made_any = false;
        loop {
            let in_before = self.inflate.total_in();
            let out_before = self.inflate.total_out();
            let status = self
                .inflate
                .decompress(rest, &mut self.out, FlushDecompress::None)
                .map_err(|e| TarballError::BadGzip(format!("corrupt deflate data: {e}")))?;
            let used = usize::try_from(self.inflate.total_in() - in_before).unwrap_or(usize::MAX);
            let made = usize::try_from(self.inflate.total_out() - out_before).unwrap_or(0);
            rest = rest.get(used..).unwrap_or_default();
            if made > 0 {
                made_any = true;
                let data = self.out.get(..made).unwrap_or_default();
                self.crc.update(data);
                self.member_out = self.member_out.wrapping_add(made as u64);
                self.produced = self.produced.saturating_add(made as u64);
                let consumed = self
                    .consumed
                    .saturating_add((input.len() - rest.len()) as u64);
                sink(data, consumed, self.produced)?;
            }
            match status {
                Status::StreamEnd => {
                    self.state = State::Trailer;
                    self.small_len = 0;
                    break;
                }
                Status::Ok | Status::BufError => {
                    // Stop when the input is exhausted and inflate had room
                    // to spare (so nothing is pending), or when it made no
                    // progress at all (it needs more input).
                    let drained = rest.is_empty() && made < self.out.len();
                    if drained || (used == 0 && made == 0) {
                        break;
                    }
                }
            }
        }
        if rest.len() == input.len() && !made_any && matches!(self.state, State::Deflate) {
            // Defensive: a stalled inflate would otherwise spin forever.
            return Err(TarballError::BadGzip(
                "deflate stream made no progress".into(),
            ));
        }
        Ok(input.len() - rest.len())
    }

    fn trailer(&mut self, input: &[u8]) -> Result<usize, TarballError> {
        // The trailer is 8 bytes; `small` is 10, reuse it.
        let used = self.fill_small(input, 8);
        if self.small_len < 8 {
            return Ok(used);
        }
        let [c0, c1, c2, c3, s0, s1, s2, s3, ..] = self.small;
        self.small_len = 0;
        let stored_crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let stored_size = u32::from_le_bytes([s0, s1, s2, s3]);
        let crc = self.crc.sum();
        if stored_crc != crc {
            return Err(TarballError::GzipChecksum(format!(
                "CRC32 {stored_crc:#010x} != computed {crc:#010x}"
            )));
        }
        // ISIZE is the uncompressed length modulo 2^32.
        let size = (self.member_out & 0xffff_ffff) as u32;
        if stored_size != size {
            return Err(TarballError::GzipChecksum(format!(
                "ISIZE {stored_size} != actual length {size} (mod 2^32)"
            )));
        }
        self.members += 1;
        self.header_crc.reset();
        self.state = State::Header {
            step: HeaderStep::Fixed,
            optional: true,
        };
        Ok(used)
    }
}
