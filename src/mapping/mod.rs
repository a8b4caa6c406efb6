//! The npm tarball mapping: one JSON line per package version, `{name, version, file, integrity,
//! shasum, size}`, tying npm's tarball URLs (`/<name>/-/<file>`) to store addresses.
//!
//! `tarvault migrate couch --map` writes it (`tarvault::migrate` appends to it with
//! crash-safe checkpoints) and `tarvault serve --map` reads it (`tarvault::server` answers
//! the old URLs from it). It lives here, below both, so that either feature builds without the
//! other.

#[cfg(any(feature = "server", feature = "migrate"))]
mod cut;
#[cfg(any(feature = "server", feature = "migrate"))]
pub(crate) mod db;
#[cfg(any(feature = "server", feature = "migrate"))]
mod read;

#[cfg(feature = "server")]
pub(crate) use read::sha512_of;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One line of the mapping file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MapEntry {
    /// The package name (`@scope/name` for scoped packages).
    pub name: String,
    /// The version.
    pub version: String,
    /// The tarball's file name, as the old URLs end (`/<name>/-/<file>`).
    pub file: String,
    /// npm's `sha512-…` integrity of the bytes: the store address.
    pub integrity: String,
    /// npm's sha1 `shasum`.
    pub shasum: String,
    /// Size in bytes.
    pub size: u64,
}

/// Reads a whole mapping file (what `tarvault serve --map` loads). Fails on a line that does not
/// parse, or that is longer than 64 KiB (read no further), naming it: a mapping is written by
/// tarvault and checkpointed, so a bad line means the file was damaged or is not a mapping, and
/// serving from part of it would hide that.
pub fn read_mapping(path: &Path) -> Result<Vec<MapEntry>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    parse_lines(BufReader::new(file), path)
}

pub(crate) fn parse_lines(reader: impl BufRead, path: &Path) -> Result<Vec<MapEntry>> {
    JsonLines::new(reader, path, "mapping", "a mapping entry")
        .max_line(LINE_MAX)
        .collect()
}

/// The longest line a mapping may hold: an entry is a few hundred bytes (npm caps a name at 214),
/// so a longer line is not one (a damaged file, or one that is not a mapping), and is not read
/// into memory whatever its length.
pub(crate) const LINE_MAX: u64 = 64 << 10;

/// Reads a file of JSON lines one value at a time (the mapping; the migration's problems file),
/// so that a file of any length is read in the memory of one line. Blank lines are skipped; a
/// line that does not parse, or a read that fails, is an error naming the file and line, after
/// which nothing more is read.
pub(crate) struct JsonLines<T, R> {
    reader: R,
    path: PathBuf,
    /// What the file is and what each line should be, for errors ("mapping", "a mapping entry").
    file: &'static str,
    item: &'static str,
    line: usize,
    buf: String,
    /// The longest line read (its `\n` included); a longer one is an error, read no further.
    max_line: Option<u64>,
    failed: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned, R: BufRead> JsonLines<T, R> {
    /// Reads `reader`, the contents of `path` (`file` and `item` name them in errors).
    pub(crate) fn new(
        reader: R,
        path: &Path,
        file: &'static str,
        item: &'static str,
    ) -> JsonLines<T, R> {
        JsonLines {
            reader,
            path: path.to_path_buf(),
            file,
            item,
            line: 0,
            buf: String::new(),
            max_line: None,
            failed: false,
            _item: PhantomData,
        }
    }

    /// Refuses a line longer than `bytes` (its `\n` included) rather than read it whole.
    pub(crate) fn max_line(mut self, bytes: u64) -> Self {
        self.max_line = Some(bytes);
        self
    }
}

impl<T: DeserializeOwned, R: BufRead> Iterator for JsonLines<T, R> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        while !self.failed {
            self.buf.clear();
            self.line += 1;
            let read = match self.max_line {
                Some(max) => {
                    std::io::Read::take(&mut self.reader, max + 1).read_line(&mut self.buf)
                }
                None => self.reader.read_line(&mut self.buf),
            };
            match read {
                Ok(0) => return None,
                Ok(n) if self.max_line.is_some_and(|max| n as u64 > max) => {
                    self.failed = true;
                    return Some(Err(Error::Config(format!(
                        "{} {} line {} is longer than {} bytes: not {}",
                        self.file,
                        self.path.display(),
                        self.line,
                        self.max_line.unwrap_or_default(),
                        self.item
                    ))));
                }
                Ok(_) if self.buf.trim().is_empty() => continue,
                Ok(_) => {
                    let parsed = serde_json::from_str(&self.buf).map_err(|e| {
                        let what = format!(
                            "{} {} line {} is not {}",
                            self.file,
                            self.path.display(),
                            self.line,
                            self.item
                        );
                        Error::config(what, e)
                    });
                    self.failed = parsed.is_err();
                    return Some(parsed);
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(Error::io("read", &self.path, e)));
                }
            }
        }
        None
    }
}
