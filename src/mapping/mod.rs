//! The npm tarball mapping: one JSON line per package version, `{name, version, file, integrity,
//! shasum, size}`, tying npm's tarball URLs (`/<name>/-/<file>`) to store addresses.
//!
//! `tarvault migrate couch --map` writes it (`tarvault::migrate` appends to it with
//! crash-safe checkpoints) and `tarvault serve --map` reads it (`tarvault::server` answers
//! the old URLs from it). It lives here, below both, so that either feature builds without the
//! other.

#[cfg(any(feature = "server", feature = "migrate"))]
pub(crate) mod db;
#[cfg(any(feature = "server", feature = "migrate"))]
mod read;

#[cfg(feature = "server")]
pub(crate) use read::sha512_of;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

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
/// parse, naming it: a mapping is written by tarvault and checkpointed, so a bad line means the
/// file was damaged or is not a mapping, and serving from part of it would hide that.
pub fn read_mapping(path: &Path) -> Result<Vec<MapEntry>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    parse_lines(BufReader::new(file), path)
}

pub(crate) fn parse_lines(reader: impl BufRead, path: &Path) -> Result<Vec<MapEntry>> {
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: MapEntry = serde_json::from_str(&line).map_err(|e| {
            let what = format!(
                "mapping {} line {} is not a mapping entry",
                path.display(),
                n + 1
            );
            Error::config(what, e)
        })?;
        out.push(entry);
    }
    Ok(out)
}
