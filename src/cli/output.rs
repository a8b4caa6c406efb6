//! What the CLI prints: one JSON object per line, or a terse text line.

use serde::Serialize;
use tarvault::tarball::Report;
use tarvault::{BlobInfo, Digests};

/// A put result line.
#[derive(Serialize)]
pub(crate) struct PutLine<'a> {
    pub file: &'a str,
    pub integrity: String,
    pub shasum: String,
    pub blake3: String,
    pub size: u64,
    pub stored: bool,
    /// What inspection found (with `--tarball`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<&'a Report>,
}

impl<'a> PutLine<'a> {
    pub(crate) fn new(
        file: &'a str,
        d: &Digests,
        stored: bool,
        package: Option<&'a Report>,
    ) -> Self {
        PutLine {
            file,
            integrity: d.integrity().to_string(),
            shasum: d.shasum(),
            blake3: d.blake3_hex(),
            size: d.size,
            stored,
            package,
        }
    }
}

/// A blob description for `stat` and `ls`.
#[derive(Serialize)]
pub(crate) struct BlobLine {
    pub integrity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shasum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
}

impl From<&BlobInfo> for BlobLine {
    fn from(b: &BlobInfo) -> Self {
        BlobLine {
            integrity: b.integrity().to_string(),
            shasum: b.digests.map(|d| d.shasum()),
            blake3: b.digests.map(|d| d.blake3_hex()),
            size: b.size,
            modified: b
                .modified
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        }
    }
}

/// Prints a value as one JSON line.
pub(crate) fn json_line<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("tarvault: error: cannot print JSON: {e}"),
    }
}
