//! Streaming inspection of npm package tarballs (`.tgz`).
//!
//! A registry has to vet an upload *while* it streams in: holding a whole
//! tarball in memory (or on disk before knowing it is sane) is exactly what a
//! decompression bomb or a 100k-entry archive exploits. [`Inspector`] is
//! push-based: feed it the compressed bytes as they arrive, in chunks of any
//! size, and it decompresses, walks the tar headers and enforces the
//! [`Policy`] on the fly, keeping only `package.json` (bounded) in memory.
//!
//! The [`Report`]'s `entry_count` and `unpacked_size` equal the registry's
//! `dist.fileCount` and `dist.unpackedSize`, which npm computes by listing
//! the tarball with node-tar and counting every entry it emits (regular
//! files, directories, links; not pax/GNU meta headers) and summing their
//! sizes (a directory counts as 0; links as their header size, normally 0).
//!
//! Top-level folder: npm strips the first path segment of *every* entry. The
//! report's `root` is the first segment of the first entry (usually
//! `package`, but old packages used e.g. `node-foo/`). A tarball with several
//! top-level folders is accepted with a warning, since npm unpacks all of them
//! into the same directory: so `package.json` is the last
//! `<any top-level folder>/package.json`, the one that overwrites the others
//! on extraction and that npm installs (`evil/package.json` after
//! `package/package.json` makes the package `evil`).
//!
//! ```no_run
//! # use tarvault::tarball::{Inspector, Policy};
//! # fn chunks() -> Vec<Vec<u8>> { vec![] }
//! let mut inspector = Inspector::new(Policy::default());
//! for chunk in chunks() {
//!     inspector.update(&chunk)?;
//! }
//! let report = inspector.finish()?;
//! println!("{}@{}: {} files", report.name, report.version, report.entry_count);
//! # Ok::<(), tarvault::tarball::TarballError>(())
//! ```

// Hostile input must never crash the server: enforce it mechanically.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod error;
mod gzip;
mod package_json;
mod paths;
mod policy;
mod tar;

use std::io::Read;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

pub use error::{TarballError, TarballErrorKind};
pub use policy::{Policy, RATIO_GRACE_BYTES};

use gzip::GzipDecoder;
use paths::LinkTracker;
use tar::{Body, Entry, EntryKind, TarParser, Visitor};

/// At most this many warnings are kept, so a hostile tarball cannot grow
/// the report without bound.
const MAX_WARNINGS: usize = 100;

/// What the inspector learned about an accepted tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `name` from the last `<top-level folder>/package.json`, the one npm extracts (empty if
    /// absent and not required).
    pub name: String,
    /// `version` from that same `package.json` (empty if absent and not required).
    pub version: String,
    /// The top-level folder, usually `package`.
    pub root: String,
    /// Entries as npm counts them (`dist.fileCount`).
    pub entry_count: u64,
    /// Sum of entry sizes as npm counts them (`dist.unpackedSize`).
    pub unpacked_size: u64,
    /// Oddities that did not warrant rejection.
    pub warnings: Vec<String>,
}

/// Push-based tarball inspector. See the [module docs](self).
pub struct Inspector {
    policy: Policy,
    gzip: GzipDecoder,
    tar: TarParser,
    collector: Collector,
    /// The first error, returned again by later calls: after a failure the
    /// decoder state is meaningless.
    failed: Option<TarballError>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("policy", &self.policy)
            .field("entry_count", &self.collector.entry_count)
            .field("unpacked_size", &self.collector.unpacked_size)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// A fresh inspector enforcing `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            collector: Collector::new(policy.clone()),
            policy,
            gzip: GzipDecoder::new(),
            tar: TarParser::new(),
            failed: None,
        }
    }

    /// Feeds the next chunk of compressed bytes. Returns an error as soon as
    /// the data is known to be unacceptable; the caller should then stop
    /// reading the upload.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), TarballError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let Self {
            policy,
            gzip,
            tar,
            collector,
            ..
        } = self;
        let result = gzip.feed(chunk, &mut |data, consumed, produced| {
            policy.check_ratio(consumed, produced)?;
            tar.feed(data, collector)
        });
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// Ends the input: checks that the gzip and tar streams are complete and
    /// that `package.json` was usable, and returns the report.
    pub fn finish(mut self) -> Result<Report, TarballError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        self.gzip.finish()?;
        self.tar.finish()?;
        let garbage = self.gzip.trailing_garbage();
        if garbage > 0 {
            self.collector.warn(format!(
                "{garbage} bytes of non-gzip data after the compressed stream ignored"
            ));
        }
        self.collector.report()
    }

    /// Whether the tar end-of-archive marker has been seen (later bytes are
    /// only decompressed to verify the gzip checksum).
    pub fn tar_complete(&self) -> bool {
        self.tar.ended()
    }
}

/// Inspects a whole tarball from a blocking reader.
pub fn inspect_reader<R: Read>(mut reader: R, policy: Policy) -> Result<Report, TarballError> {
    let mut inspector = Inspector::new(policy);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        inspector.update(buf.get(..n).unwrap_or_default())?;
    }
    inspector.finish()
}

/// Inspects a tarball arriving as a byte stream (e.g. an HTTP body).
///
/// Each chunk is processed inline on the calling task; decompression runs at
/// hundreds of MB/s, so per-chunk latency stays small for network-sized
/// chunks. Stops reading at the first error.
pub async fn inspect_stream<S>(mut stream: S, policy: Policy) -> Result<Report, TarballError>
where
    S: Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    let mut inspector = Inspector::new(policy);
    while let Some(chunk) = stream.next().await {
        inspector.update(&chunk?)?;
    }
    inspector.finish()
}

/// The outcome of parsing a `package.json` entry.
type Manifest = Result<(String, String), TarballError>;

/// Counts entries, applies the per-entry rules and captures `package.json`.
struct Collector {
    policy: Policy,
    entry_count: u64,
    unpacked_size: u64,
    root: Option<String>,
    warned_roots: bool,
    links: LinkTracker,
    /// Body of the `package.json` being captured, with its path.
    capturing: Option<(String, Vec<u8>)>,
    /// The last `package.json` seen (node-tar overwrites, so the last wins).
    manifest: Option<Manifest>,
    warnings: Vec<String>,
    dropped_warnings: u64,
}

impl Collector {
    fn new(policy: Policy) -> Self {
        Self {
            policy,
            entry_count: 0,
            unpacked_size: 0,
            root: None,
            warned_roots: false,
            links: LinkTracker::default(),
            capturing: None,
            manifest: None,
            warnings: Vec::new(),
            dropped_warnings: 0,
        }
    }

    fn package_json_path(&self) -> String {
        format!("{}/package.json", self.root.as_deref().unwrap_or("package"))
    }

    /// A problem with package.json: fatal if required, else a warning.
    fn manifest_problem(&mut self, err: TarballError) -> Result<(), TarballError> {
        if self.policy.require_package_json {
            Err(err)
        } else {
            self.warn(err.to_string());
            Ok(())
        }
    }

    fn report(mut self) -> Result<Report, TarballError> {
        let (name, version) = match self.manifest.take() {
            Some(Ok(pair)) => pair,
            Some(Err(err)) => {
                self.manifest_problem(err)?;
                Default::default()
            }
            None => {
                let path = self.package_json_path();
                self.manifest_problem(TarballError::MissingPackageJson { path })?;
                Default::default()
            }
        };
        if self.dropped_warnings > 0 {
            self.warnings
                .push(format!("{} more warnings not shown", self.dropped_warnings));
        }
        Ok(Report {
            name,
            version,
            root: self.root.unwrap_or_default(),
            entry_count: self.entry_count,
            unpacked_size: self.unpacked_size,
            warnings: self.warnings,
        })
    }
}

impl Visitor for Collector {
    fn entry(&mut self, entry: &Entry<'_>) -> Result<Body, TarballError> {
        paths::check_entry_path(entry.path)?;
        let special = match entry.kind {
            EntryKind::CharDevice => Some("character device"),
            EntryKind::BlockDevice => Some("block device"),
            EntryKind::Fifo => Some("FIFO"),
            _ => None,
        };
        if let Some(file_type) = special {
            return Err(TarballError::SpecialFile {
                path: entry.path.to_owned(),
                file_type,
            });
        }
        self.entry_count += 1;
        self.policy.check_entries(self.entry_count, entry.path)?;
        self.unpacked_size = self.unpacked_size.saturating_add(entry.size);
        self.policy.check_size(self.unpacked_size, entry.path)?;

        let first = paths::first_segment(entry.path);
        match &self.root {
            None => self.root = Some(first.to_owned()),
            Some(root) if root != first && !self.warned_roots => {
                let msg = format!(
                    "several top-level folders ({:?}, {:?}, ...); npm merges them",
                    paths::short(root),
                    paths::short(first)
                );
                self.warned_roots = true;
                self.warn(msg);
            }
            Some(_) => {}
        }
        self.links.check(entry)?;

        // Any top-level folder, not only the first: npm strips the first segment of every
        // entry, so each `<folder>/package.json` lands on the same file and the last one wins.
        let below_name = {
            let mut below = paths::below_root(entry.path);
            below.next().filter(|_| below.next().is_none())
        };
        let is_manifest = below_name == Some("package.json");
        // On a case-insensitive file system (macOS, Windows) `PACKAGE.JSON` is the same file as
        // `package.json`, and the last one unpacked is what npm reads; on Linux it is another
        // file. Which manifest is installed would depend on the platform, so it is a problem with
        // package.json (fatal when one is required), compared as the link tracker compares paths.
        if let Some(name) =
            below_name.filter(|n| !is_manifest && n.to_lowercase() == "package.json")
        {
            self.manifest_problem(TarballError::BadPackageJson {
                path: entry.path.to_owned(),
                reason: format!(
                    "{:?} differs from \"package.json\" only in case: on macOS and Windows it \
                     replaces it",
                    paths::short(name)
                ),
            })?;
        }
        if !is_manifest {
            return Ok(Body::Skip);
        }
        match entry.kind {
            EntryKind::File => {}
            EntryKind::Directory | EntryKind::DumpDir => return Ok(Body::Skip),
            _ => {
                self.warn(format!(
                    "{:?} is a link, not a file; ignored",
                    paths::short(entry.path)
                ));
                return Ok(Body::Skip);
            }
        }
        if entry.size > self.policy.max_package_json_size {
            let err = TarballError::BadPackageJson {
                path: entry.path.to_owned(),
                reason: format!(
                    "{} bytes, over the limit of {}",
                    entry.size, self.policy.max_package_json_size
                ),
            };
            if self.policy.require_package_json {
                return Err(err);
            }
            // Reported (as a warning) by `report`, unless a later one wins.
            self.manifest = Some(Err(err));
            return Ok(Body::Skip);
        }
        if self.manifest.is_some() {
            self.warn(format!(
                "duplicate {:?}; the last one wins",
                paths::short(entry.path)
            ));
        }
        let capacity = usize::try_from(entry.size).unwrap_or(0);
        self.capturing = Some((entry.path.to_owned(), Vec::with_capacity(capacity)));
        Ok(Body::Capture)
    }

    fn data(&mut self, chunk: &[u8]) -> Result<(), TarballError> {
        if let Some((_, buf)) = &mut self.capturing {
            buf.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), TarballError> {
        let Some((path, buf)) = self.capturing.take() else {
            return Ok(());
        };
        let parsed = package_json::parse(&path, &buf);
        if let Err(err) = &parsed {
            if self.policy.require_package_json {
                return Err(err.clone());
            }
        }
        self.manifest = Some(parsed);
        Ok(())
    }

    fn warn(&mut self, message: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(message);
        } else {
            self.dropped_warnings += 1;
        }
    }
}
