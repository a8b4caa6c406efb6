//! The one error type of the library, with an [`ErrorKind`] a caller can match on.
//!
//! Every variant carries enough context to be printed (with its causes, by [`Error::report`]) as
//! one line that names the address and what was expected versus what was found: integrity errors
//! that do not say which blob they are about are the most common complaint about npm's cache (see
//! the project notes).
//!
//! An error states its cause once: a variant's `Display` says what failed at its own layer, and
//! the underlying error is returned by [`std::error::Error::source`], not repeated in the text.
//! That is what chain printers (`anyhow`'s `{:#}`, `eyre`, a loop over `source()`) expect; an
//! error that did both would be printed with its cause twice. [`Error::report`] prints the whole
//! chain on one line for a caller that prints with `{}`.

use std::path::PathBuf;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely: the part of an [`Error`] that programs branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A malformed integrity string, address, range or option.
    InvalidInput,
    /// The address is not stored.
    NotFound,
    /// Bytes offered to `put` do not match the integrity the caller expected.
    IntegrityMismatch,
    /// Bytes read back from a backend do not match their address.
    Corrupt,
    /// The input was rejected by policy (for example a hostile tarball).
    Rejected,
    /// A local I/O error (disk full, permission denied, ...).
    Io,
    /// A remote backend failed or answered something unexpected.
    Backend,
    /// The store could not be configured (bad URL, missing credentials, unknown scheme).
    Config,
    /// A filesystem store's index could not be used (corrupt, unreadable, disk full); the message
    /// names the file, and `tarvault fsck` rebuilds the index from the blobs.
    Index,
    /// The input is larger than a configured limit (an HTTP server answers 413).
    TooLarge,
    /// Another process's operation on the same blob (a delete) overtook this one, which did
    /// nothing: doing it again succeeds.
    Conflict,
    /// The backend cannot answer this kind of request at all (a write or a listing through an
    /// `http://` mirror, which is read-only and has no listing): not "refused" nor "absent".
    Unsupported,
}

/// The kind's name in words (`not found`, `integrity mismatch`), for logs and messages.
impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::NotFound => "not found",
            ErrorKind::IntegrityMismatch => "integrity mismatch",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Io => "I/O error",
            ErrorKind::Backend => "backend error",
            ErrorKind::Config => "configuration error",
            ErrorKind::Index => "index error",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unsupported => "unsupported",
        })
    }
}

/// An error from tarvault. Match on [`Error::kind`] for control flow; print
/// [`Error::report`] for humans.
///
/// `Display` says what failed at this layer only (`read /srv/a.tgz`, `rejected a.tgz`) and
/// [`source`](std::error::Error::source) gives the cause (the [`std::io::Error`], the
/// [`TarballError`](crate::tarball::TarballError), ...), never both: a chain printer (`anyhow`'s
/// `{:#}`, `eyre`, a loop over `source()`) would otherwise show the cause twice, as in `read foo:
/// Is a directory (os error 21): Is a directory (os error 21)`. Keeping the cause as a source
/// also lets a caller downcast it (an `io::ErrorKind`, a tarball rule). [`Error::report`] prints
/// the message and its causes joined by `: `, for callers that print with `{}`:
///
/// ```
/// # #[cfg(feature = "memory")]
/// # async fn demo() {
/// let store = tarvault::Store::memory();
/// let dir = std::env::temp_dir();
/// let e = store
///     .put_file(&dir, &tarvault::PutOptions::default())
///     .await
///     .unwrap_err();
/// // `read /tmp`, then the cause: `read /tmp: Is a directory (os error 21)`
/// eprintln!("error: {}", e.report());
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a valid integrity string or address.
    #[error("invalid integrity {input:?}: {reason}")]
    InvalidIntegrity {
        /// The offending text (truncated if very long).
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// Some other argument was out of range or malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Nothing is stored under the address.
    #[error("not found: {address}")]
    NotFound {
        /// The address that was looked up, as the caller gave it.
        address: String,
    },
    /// The bytes given to `put` hashed to something other than what the caller expected.
    /// Nothing was stored.
    #[error("integrity mismatch for {what}: expected {expected}, found {actual}")]
    IntegrityMismatch {
        /// What the bytes were (a file name, "input stream", ...).
        what: String,
        /// The expected digest (an SRI string, or a size).
        expected: String,
        /// The digest of the bytes actually seen, in the same algorithm.
        actual: String,
    },
    /// The bytes stored under an address do not hash to it.
    #[error("corrupt blob {address} in {backend}: expected {expected}, found {actual}")]
    Corrupt {
        /// The address of the corrupt blob.
        address: String,
        /// The backend whose copy it is ([`Backend::describe`](crate::backend::Backend::describe)):
        /// behind a cache tier or among replicas, the one to repair.
        backend: String,
        /// What it should hash to.
        expected: String,
        /// What the stored bytes hash to (or what was wrong with them).
        actual: String,
    },
    /// The input was refused by a policy.
    #[error("rejected {what}: {reason}")]
    Rejected {
        /// What was refused.
        what: String,
        /// Why.
        reason: String,
    },
    /// A tarball's `package.json` names another package or version than the one it was put as
    /// ([`PutOptions::expect_package`](crate::PutOptions::expect_package)). Nothing was stored.
    #[error("rejected {what}: the tarball is {actual}, expected {expected}")]
    PackageMismatch {
        /// What was refused.
        what: String,
        /// `name@version` it was put as.
        expected: String,
        /// `name@version` its package.json names.
        actual: String,
    },
    /// A tarball was refused by the inspection policy (hostile, malformed, or not a package).
    /// Nothing was stored. [`Error::tarball_kind`] says which rule.
    #[error("rejected {what}")]
    Tarball {
        /// What was refused (a file name, "input stream", ...).
        what: String,
        /// The rule it broke.
        #[source]
        source: crate::tarball::TarballError,
    },
    /// A local filesystem operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// The operation (`create`, `write`, `rename`, ...).
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A local filesystem operation that moves a file from one path to another failed: both
    /// paths are named, as either may be the one at fault (a missing or unwritable directory).
    #[error("{op} {} to {}", from.display(), to.display())]
    IoMove {
        /// The operation (`move`, `link`, ...).
        op: &'static str,
        /// The path of the file moved.
        from: PathBuf,
        /// Where it was moved to.
        to: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The stream of bytes given to `put` (or to another operation that reads a stream) failed
    /// before its end; nothing was stored.
    #[error("reading {what} failed")]
    Input {
        /// What was being read: the put's [`label`](crate::PutOptions::label) (a file name, a
        /// tarball's `name@version`), `input stream` for a put without one.
        what: String,
        /// The stream's own error.
        #[source]
        source: std::io::Error,
    },
    /// A backend failed. `message` says what was being done, not the source's text.
    #[error("backend {backend}: {message}")]
    Backend {
        /// Which backend (`s3://bucket`, `fs:/path`, ...).
        backend: String,
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A filesystem store's sha1/blake3 index failed: `path` is the database file and `message`
    /// says what was being done and, where it helps, how to repair it (not the source's text).
    #[error("index {}: {message}", path.display())]
    Index {
        /// The index database file.
        path: PathBuf,
        /// What failed, and the repair where there is one.
        message: String,
        /// The database's own error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A document (npm's publish body) is malformed or inconsistent: `at` says where in it (a
    /// JSON path such as `versions["1.0.0"].dist.integrity`, or `body`). Nothing was stored.
    #[error("bad document at {at}: {reason}")]
    Document {
        /// Where in the document.
        at: String,
        /// What is wrong there.
        reason: String,
    },
    /// The input exceeded a limit; nothing was stored.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The store could not be opened as configured.
    #[error("configuration: {0}")]
    Config(String),
    /// The store could not be opened as configured, because of an underlying error kept as the
    /// source (a configuration file that does not parse, a size that is not one).
    #[error("configuration: {message}")]
    ConfigInvalid {
        /// What was being read (a file, a setting).
        message: String,
        /// Why it was refused.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A task of the library's own (file I/O, hashing, a migration's document) panicked or was
    /// cancelled before it finished.
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A size, duration or rate given as an argument did not parse (the source says which).
    #[error("invalid input")]
    Quantity(#[from] crate::units::ParseQuantityError),
    /// A put that found its blob stored, and so wrote nothing while it verified the bytes, found
    /// the blob gone at its end: deleted (by `rm`, gc or another host) while the put ran. Nothing
    /// is stored; putting the same bytes again stores them.
    #[error("{address} was deleted while a put of it ran: nothing is stored; put it again")]
    DeletedDuringPut {
        /// The blob's address.
        address: String,
    },
    /// A replicated write was committed by fewer replicas than its write quorum. The copies that
    /// were committed have been removed again, so the blob is not stored.
    #[error("quorum not reached on {backend}: {committed} of the {needed} replicas needed committed ({failures})")]
    QuorumNotReached {
        /// The replicated backend.
        backend: String,
        /// The write quorum.
        needed: usize,
        /// How many replicas committed before the write was rolled back.
        committed: usize,
        /// Why the others failed, one `replica: error` per failure.
        failures: String,
    },
    /// The backend cannot do what was asked of it, whatever is stored: an `http://` store cannot
    /// list its blobs. Kept apart from [`Error::NotFound`] and [`Error::Rejected`] so that a
    /// caller does not take "cannot" for "absent" or for "refused by a policy".
    #[error("{backend} cannot {what}: {reason}")]
    Unsupported {
        /// Which backend.
        backend: String,
        /// What was asked (`list its blobs`).
        what: String,
        /// Why it cannot, and what it can do instead.
        reason: String,
    },
    /// One failure reported to every caller that waited on the same operation (the readers that
    /// joined one cache fill): the original error, which gives the kind, the message and the
    /// source chain.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

impl Error {
    /// The error and its causes on one line, for people: what [`std::error::Error::source`]
    /// chains together, joined by `: ` (`read /srv/a: Is a directory (os error 21)`). A program
    /// that prints errors with `{}` shows this, since the error's own text leaves its cause to
    /// `source()`.
    pub fn report(&self) -> ErrorReport<'_> {
        ErrorReport::new(self)
    }

    /// The coarse category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidIntegrity { .. }
            | Error::InvalidInput(_)
            | Error::Quantity(_)
            | Error::Document { .. } => ErrorKind::InvalidInput,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::IntegrityMismatch { .. } => ErrorKind::IntegrityMismatch,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Rejected { .. } | Error::Tarball { .. } | Error::PackageMismatch { .. } => {
                ErrorKind::Rejected
            }
            Error::Io { .. } | Error::IoMove { .. } | Error::Input { .. } | Error::Task(_) => {
                ErrorKind::Io
            }
            Error::Backend { .. } | Error::QuorumNotReached { .. } => ErrorKind::Backend,
            Error::Config(_) | Error::ConfigInvalid { .. } => ErrorKind::Config,
            Error::Index { .. } => ErrorKind::Index,
            Error::DeletedDuringPut { .. } => ErrorKind::Conflict,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Shared(e) => e.kind(),
        }
    }

    /// For a rejected tarball, the rule it broke.
    pub fn tarball_kind(&self) -> Option<crate::tarball::TarballErrorKind> {
        match self {
            Error::Tarball { source, .. } => Some(source.kind()),
            Error::Shared(e) => e.tarball_kind(),
            _ => None,
        }
    }

    /// The error an operation shared by several callers ended with, for one of them: the error
    /// itself if no other caller holds it, otherwise an [`Error::Shared`] of it.
    pub(crate) fn shared(e: std::sync::Arc<Error>) -> Self {
        std::sync::Arc::try_unwrap(e).unwrap_or_else(Error::Shared)
    }

    /// Builds an [`Error::IoMove`] for `op` of `from` to `to`.
    #[cfg(feature = "fs")]
    pub(crate) fn io_move(
        op: &'static str,
        from: impl Into<PathBuf>,
        to: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::IoMove {
            op,
            from: from.into(),
            to: to.into(),
            source,
        }
    }

    /// Builds an [`Error::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::ConfigInvalid`]: `message` says what was being read, `source` why it
    /// was refused.
    pub(crate) fn config(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::ConfigInvalid {
            message: message.into(),
            source: source.into(),
        }
    }

    /// Builds an [`Error::Backend`] without a source.
    pub fn backend(backend: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Backend {
            backend: backend.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Builds an [`Error::Document`].
    pub(crate) fn document(at: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Document {
            at: at.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_integrity(input: &str, reason: impl Into<String>) -> Self {
        Error::InvalidIntegrity {
            input: clipped(input, 200),
            reason: reason.into(),
        }
    }

    /// Converts this error into an [`std::io::Error`], keeping it as the inner error so that
    /// [`Error::from_io`] can recover it on the other side of an `AsyncRead`.
    pub fn into_io(self) -> std::io::Error {
        let kind = match self.kind() {
            ErrorKind::NotFound => std::io::ErrorKind::NotFound,
            ErrorKind::InvalidInput => std::io::ErrorKind::InvalidInput,
            ErrorKind::Unsupported => std::io::ErrorKind::Unsupported,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, self)
    }

    /// Recovers a tarvault error wrapped by [`Error::into_io`], or wraps a plain I/O error as
    /// the failure of an `input stream` ([`Error::Input`]).
    pub fn from_io(err: std::io::Error) -> Self {
        Error::from_io_reading(err, "input stream")
    }

    /// As [`Error::from_io`], naming `what` was being read when the error is a plain I/O error:
    /// an error a stream carried across an `AsyncRead` already says what it is about.
    pub(crate) fn from_io_reading(err: std::io::Error, what: &str) -> Self {
        if err.get_ref().is_some_and(|e| e.is::<Error>()) {
            if let Some(inner) = err.into_inner() {
                if let Ok(e) = inner.downcast::<Error>() {
                    return *e;
                }
                // Unreachable in practice: `is` said it was ours.
                return Error::InvalidInput("unrecognised wrapped error".into());
            }
            return Error::InvalidInput("unrecognised wrapped error".into());
        }
        Error::Input {
            what: what.to_string(),
            source: err,
        }
    }
}

/// Whether SQLite says a database file is damaged, or is not a database at all.
#[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
pub(crate) fn sqlite_says_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

#[cfg(any(feature = "fs", feature = "server", feature = "migrate"))]
impl Error {
    /// Whether this is an [`Error::Index`] whose database file is damaged (or is not a database):
    /// decided by SQLite's own error code, kept as the source, not by the message's wording.
    pub(crate) fn is_corrupt_db(&self) -> bool {
        self.sqlite_error().is_some_and(sqlite_says_corrupt)
    }

    /// Whether this is an [`Error::Index`] because another connection held the database's lock
    /// for longer than the busy timeout: a wait that ran out, not a database that cannot be had.
    #[cfg(any(feature = "server", feature = "migrate"))]
    pub(crate) fn is_busy_db(&self) -> bool {
        self.sqlite_error().is_some_and(|e| {
            matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            )
        })
    }

    /// The SQLite error an [`Error::Index`] keeps as its source, if that is what it keeps.
    fn sqlite_error(&self) -> Option<&rusqlite::Error> {
        match self {
            Error::Index {
                source: Some(source),
                ..
            } => source.downcast_ref::<rusqlite::Error>(),
            _ => None,
        }
    }
}

/// An error and its chain of causes, printed on one line joined by `: `: see [`Error::report`].
///
/// Errors from other crates do not all keep to the rule [`Error`] keeps, so a cause is left out
/// when the line already contains its text (a link that repeats its source) or when its text
/// only adds a prefix to the link before it (rusqlite's `file is not a database` over `Error
/// code 26: file is not a database`): each is said once.
#[derive(Debug, Clone, Copy)]
pub struct ErrorReport<'a>(&'a (dyn std::error::Error + 'static));

impl<'a> ErrorReport<'a> {
    /// The report of any error, for chains that do not start at an [`Error`] (an
    /// [`std::io::Error`] wrapping one, a backend's own error type).
    pub fn new(error: &'a (dyn std::error::Error + 'static)) -> Self {
        ErrorReport(error)
    }
}

impl std::fmt::Display for ErrorReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = self.0.to_string();
        let mut last = line.clone();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            let said = text.is_empty()
                || line.contains(&text)
                || (!last.is_empty() && text.ends_with(&last));
            if !said {
                line.push_str(": ");
                line.push_str(&text);
            }
            last = text;
            cause = e.source();
        }
        f.write_str(&line)
    }
}

/// `s` up to its first `max` bytes (at a character boundary), and `…` after it if it was longer:
/// how an error quotes what it was given without quoting all of it (a caller's 100 KB is not the
/// message).
pub(crate) fn clipped(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}
