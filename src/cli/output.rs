//! What the CLI prints: one JSON object per line, or a terse text line.

use std::io::Write;

use serde::Serialize;
use tarvault::backend::{Misplaced, Sample};
use tarvault::tarball::Report;
use tarvault::{CorruptBlob, Digests, Error};

/// `println!` through [`print_line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::print_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

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

/// `put --json`'s line for a file that was not stored (beside the error on stderr), so that a
/// reader of the lines has one per file, in the order given: the error's kind in words (`not
/// found`, `integrity mismatch`, `rejected`, `I/O error`...) and the whole report.
#[derive(Serialize)]
pub(crate) struct FailedPutLine<'a> {
    pub file: &'a str,
    pub error: String,
    pub reason: String,
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

/// Prints a value as one JSON line.
pub(crate) fn json_line<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("tarvault: error: cannot print JSON: {e}"),
    }
}

/// The line that ends a report's list of `sample`'s items when some were counted but not kept
/// (`... and 12345 more`), if any were.
pub(crate) fn and_more<T>(sample: &Sample<T>) -> Option<String> {
    let more = sample.omitted();
    (more > 0).then(|| format!("... and {more} more"))
}

/// `fsck`'s and `scrub`'s line for each corrupt blob the report kept, and how many more there were.
pub(crate) fn corrupt_lines(corrupt: &Sample<CorruptBlob>) {
    for c in corrupt {
        outln!(
            "corrupt {} found {}{}",
            c.address,
            c.found,
            if c.quarantined { " (quarantined)" } else { "" }
        );
    }
    if let Some(more) = and_more(corrupt) {
        outln!("{more} corrupt");
    }
}

/// `fsck`'s and `scrub`'s lines for the misplaced blob files found (each makes the report unclean,
/// exit 4), and how many were moved back to their place.
pub(crate) fn misplaced_lines(misplaced: &Misplaced) {
    let files = &misplaced.files;
    for m in files {
        outln!("misplaced {} {}: {}", m.address, m.path, m.note);
    }
    if let Some(more) = and_more(files) {
        outln!("{more} misplaced");
    }
    if !files.is_empty() {
        outln!(
            "misplaced blob files: {} found, {} moved back to their place",
            files.total(),
            misplaced.restored
        );
    }
}

/// Prints one line to stdout, as `println!` would, except when stdout cannot be written: a reader
/// that went away (`tarvault ls | head`) ends the process the way a closed pipe ends `cat`, quietly
/// and with the status a shell reports for SIGPIPE (141), instead of `println!`'s panic; any other
/// failure (a full disk behind a redirection) is reported before exiting. Exiting here is safe
/// mid-operation: a put cut short leaves what a kill leaves, committed blobs and stray temp files.
/// While a [`Held`] is alive the line is kept for it to write with the others.
pub(crate) fn print_line(args: std::fmt::Arguments<'_>) {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lines) = held.as_mut() {
        // Writing to a Vec cannot fail.
        let _ = lines.write_fmt(args);
        lines.push(b'\n');
        return;
    }
    drop(held);
    write_out(|out| out.write_fmt(args).and_then(|()| out.write_all(b"\n")));
}

/// Writes to stdout and flushes, exiting as [`print_line`] describes if that fails.
fn write_out(write: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = write(&mut out).and_then(|()| out.flush()) {
        let e = stdout_failed(e);
        eprintln!("tarvault: error: {}", e.report());
        std::process::exit(i32::from(super::exit::OTHER));
    }
}

/// Lines printed while a [`Held`] is alive.
static HELD: std::sync::Mutex<Option<Vec<u8>>> = std::sync::Mutex::new(None);

/// Keeps the lines printed from now on and writes them to stdout in one write when dropped (or
/// when [`release`](Held::release)d early, before an error goes to stderr, to keep the order):
/// a batch `put` prints the results that are ready together, not with a write (and a wake-up
/// of whoever reads the pipe) per file.
pub(crate) struct Held(());

impl Held {
    pub(crate) fn start() -> Held {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.get_or_insert_with(Vec::new);
        Held(())
    }

    /// Writes what is held so far; lines printed afterwards are held again.
    pub(crate) fn release(&self) {
        let lines = {
            let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
            held.as_mut().map(std::mem::take).unwrap_or_default()
        };
        if !lines.is_empty() {
            write_out(|out| out.write_all(&lines));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
        *HELD.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// What a failed write to stdout becomes, for commands that write it themselves (`get`'s bytes,
/// `ls`'s buffered lines): a reader that went away (`tarvault get X | head -c 100`) ends the
/// process quietly with 141, as in [`print_line`]; any other failure is an error that names
/// stdout (it is an output failure, never a put's "reading … failed").
pub(crate) fn stdout_failed(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(SIGPIPE_STATUS);
    }
    Error::Io {
        op: "write to",
        path: "stdout".into(),
        source: e,
    }
}

/// What a shell reports for a process killed by SIGPIPE (128 + 13).
const SIGPIPE_STATUS: i32 = 141;

/// A spinner on standard error showing the time, a message and the bytes moved and their rate,
/// for a long `copy` or `migrate`: only where standard error is a `terminal`, so that logs and
/// pipes get the periodic progress lines instead.
pub(crate) fn byte_spinner(terminal: bool) -> Option<indicatif::ProgressBar> {
    terminal.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {msg} {binary_bytes} ({binary_bytes_per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        bar.set_style(style);
        bar
    })
}
