//! Argument parsing, the runtime, and the mapping from errors to exit statuses.

mod blobs;
mod compose;
mod inspect;
#[cfg(feature = "migrate")]
mod migrate;
mod output;
#[cfg(feature = "server")]
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tarvault::{Error, ErrorKind, Store};

/// Exit statuses, as documented in the README.
pub(crate) mod exit {
    pub const OK: u8 = 0;
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const MISMATCH: u8 = 4;
    pub const REJECTED: u8 = 5;
    /// `migrate` finished, but some documents or tarballs failed (listed in its summary).
    #[cfg(feature = "migrate")]
    pub const INCOMPLETE: u8 = 6;
    /// `migrate` was stopped by a signal before the end of the feed (it resumes from its state).
    #[cfg(feature = "migrate")]
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser, Debug)]
#[command(
    name = "tarvault",
    version,
    about = "Content-addressed, verified storage for package tarballs"
)]
struct Cli {
    /// Where the store is: a directory, file:///dir[?fsync=false], memory:, s3://bucket/prefix,
    /// manta://..., http://host:port (read-only), or a configuration (config:FILE[#NAME], a .toml
    /// or .json file, inline JSON) (default: $TARVAULT_STORE, else ./tarvault-store).
    #[arg(long, global = true, env = "TARVAULT_STORE")]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store files (or `-` for standard input), verified; prints their digests.
    Put {
        /// Fail (and store nothing) unless the bytes match this integrity (or 40-hex shasum); with
        /// several files, each is held to it, and those that match are stored.
        #[arg(long, value_name = "INTEGRITY")]
        expect: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Inspect each file as an npm package tarball while storing it; refuse (exit 5) a hostile
        /// or malformed one.
        #[arg(long)]
        tarball: bool,
        /// Files to store; `-` is standard input. Several files are committed as one durable batch.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Inspect an npm package tarball (no store needed): name, version, entries, unpacked size, and
    /// a verdict. Exit 5 when it is rejected.
    Inspect {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// The .tgz file (`-` for standard input).
        file: PathBuf,
    },
    /// Write a blob's verified bytes to standard output or to a file.
    Get {
        /// An integrity string or a 40-hex npm shasum.
        address: String,
        /// Write here instead (`-`: standard output); the file only appears if every byte
        /// verified.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Exit 0 if the blob is stored, 3 if not.
    Has {
        /// An integrity string or a 40-hex npm shasum.
        address: String,
    },
    /// Show a blob's digests and size.
    Stat {
        /// An integrity string or a 40-hex npm shasum.
        address: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// List stored blobs.
    Ls {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Delete a blob.
    Rm {
        /// An integrity string or a 40-hex npm shasum.
        address: String,
    },
    /// Re-hash every blob; report corrupt ones and misplaced blob files (exit 4), sweep dead
    /// uploads, and repair the alias index (merging).
    Fsck {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Move corrupt blobs to quarantine.
        #[arg(long)]
        quarantine: bool,
        /// Index entries whose blob is gone (S3/Manta alias markers, found by listing them):
        /// remove them, only report them, or skip the listing.
        #[arg(long, value_enum, default_value_t = DanglingArg::Remove, value_name = "WHAT")]
        dangling_aliases: DanglingArg,
    },
    /// Copy every blob from one store to another, verified; skips blobs the target has, so running
    /// it again resumes an interrupted copy. Exit 1 if any blob failed.
    Copy(compose::CopyArgs),
    /// fsck at a rate limit, for stores in production: re-hash every blob, report corrupt ones
    /// (exit 4).
    Scrub(compose::ScrubArgs),
    /// Delete blobs not in a live set and older than a grace period (a dry run unless --delete).
    Gc(compose::GcArgs),
    /// Bring every replica of a replicated store to the same set of blobs.
    Repair(compose::RepairArgs),
    /// Move tarballs from another registry into the store (exit 6 if any failed).
    #[cfg(feature = "migrate")]
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Serve verified tarballs over HTTP (/sha512/<hex>, /sha1/<hex>, /blake3/<hex>, npm URLs
    /// with --map).
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
}

/// Parses arguments, runs the command, and turns errors into one line and an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tarvault: error: cannot start runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let result = runtime.block_on(run(cli));
    runtime.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // The whole chain: an error's own text leaves its cause to `source()`.
            eprintln!("tarvault: error: {}", e.report());
            ExitCode::from(exit_status(&e))
        }
    }
}

/// How long the process waits, once its command has returned, for blocking work still running
/// before it exits. Dropping the runtime would wait for it however long it takes: a mapping
/// catch-up that a server's miss started and stopped waiting for (`server::names`) may be waiting
/// for another process's write lock, for up to two minutes, and held `serve`'s exit after a
/// shutdown signal as long. Work cut short here is left as a crash leaves it, which every store
/// write is made to survive (atomic commits; an SQLite transaction not committed is rolled back).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Fixes glibc malloc's thresholds for the blob-sized buffers a store reads and writes (mostly
/// 64 KiB to a few MiB). Left dynamic, glibc serves them from fresh `mmap`s or trims them back to
/// the kernel, so each read pays page faults and page zeroing for a buffer it is about to overwrite;
/// measured on `serve`, that was a fifth of the CPU. Kept in heap arenas, freed buffers are reused.
/// Memory stays bounded by what is in flight. (A library embedder chooses its own allocator.)
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        }
    }
}

/// How often a long-running command (`serve`) gives the memory its allocator holds free back to
/// the kernel.
#[cfg(feature = "server")]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Gives freed heap memory back to the kernel every [`TRIM_EVERY`], for as long as the runtime
/// runs. [`tune_allocator`]'s trim threshold keeps up to 128 MiB free in each malloc arena so a
/// batch's buffers are reused; a server after a burst of slow downloads (each holding a few MiB of
/// read-ahead, on several arenas) kept gigabytes that way once they had all ended. A trim costs
/// the requests after it a few page faults, twice a minute.
#[cfg(feature = "server")]
pub(crate) fn trim_memory_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            // SAFETY: malloc_trim only returns free memory to the kernel; it is thread-safe.
            let trimmed = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            tracing::trace!(released = ?trimmed.map(|r| r != 0), "heap trimmed");
        }
    });
}

/// What is logged unless `TARVAULT_LOG` says otherwise: errors, and the warnings of replicated
/// and cached stores, which say that a command succeeded without part of the store (a replica
/// down and left out of a listing, a corrupt copy read past): quiet, a `fsck` or `copy` of a
/// replicated store would exit 0 without a word about the replica it never listed.
const DEFAULT_LOG: &str = "error,tarvault::backend::compose=warn";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TARVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The exit status for an error.
pub(crate) fn exit_status(e: &Error) -> u8 {
    match e.kind() {
        // A request the store cannot take (a write, a delete or a listing through an `http://`
        // mirror) is a question that store cannot be asked, as a `sha256-` address is one no
        // store can: not "absent".
        ErrorKind::InvalidInput | ErrorKind::Config | ErrorKind::Unsupported => exit::USAGE,
        ErrorKind::NotFound => exit::NOT_FOUND,
        ErrorKind::IntegrityMismatch | ErrorKind::Corrupt => exit::MISMATCH,
        ErrorKind::Rejected => exit::REJECTED,
        _ => exit::OTHER,
    }
}

/// `spec`, the store named by `--store` or `TARVAULT_STORE` (else `tarvault-store`), where a
/// command opens it. One set but empty (most likely a `TARVAULT_STORE=` meant to clear it) is
/// refused saying where it came from, which the store's own "empty store location" cannot. So is
/// one starting with `~/`: a shell expands `~` only unquoted at the start of a word, so that
/// `TARVAULT_STORE=~/store` in an environment file or `--store="~/store"` would make a
/// directory named `~` under the current one (which a later `rm -rf ~` meant for it would
/// not take well).
pub(crate) fn store_spec(spec: &str) -> Result<&str, Error> {
    if spec.trim().is_empty() {
        return Err(Error::Config(
            "the store is empty (--store \"\", or TARVAULT_STORE set to nothing): name one, or \
             give neither for ./tarvault-store"
                .into(),
        ));
    }
    expanded(spec, "--store or TARVAULT_STORE")
}

/// `spec` unless it starts with a `~` no shell expanded (see [`store_spec`]); `named_by` says
/// where it came from. Bash leaves `--to=~/x` as it is, as it does a quoted `"~/x"`.
pub(crate) fn expanded<'a>(spec: &'a str, named_by: &str) -> Result<&'a str, Error> {
    if spec == "~" || spec.starts_with("~/") {
        return Err(Error::Config(format!(
            "the store {spec:?} ({named_by}) starts with a `~` no shell expanded: write $HOME or \
             the full path (or ./~ for a directory named `~`)"
        )));
    }
    Ok(spec)
}

/// The store a command names explicitly by `flag` (`copy --from`, `migrate --to`), else the
/// main one (`--store`, `TARVAULT_STORE`), checked by [`store_spec`].
pub(crate) fn store_or<'a>(
    explicit: Option<&'a str>,
    flag: &str,
    main: &'a str,
) -> Result<&'a str, Error> {
    match explicit {
        Some(spec) => expanded(spec, flag),
        None => store_spec(main),
    }
}

async fn run(cli: Cli) -> Result<u8, Error> {
    if let Command::Inspect { json, file } = &cli.command {
        return inspect::run(file, *json).await;
    }
    let spec = cli.store.unwrap_or_else(|| "tarvault-store".to_string());
    #[cfg(feature = "migrate")]
    let command = match cli.command {
        // Opens its own store (`--to` overrides `--store`).
        Command::Migrate(m) => return migrate::run(m, spec).await,
        other => other,
    };
    #[cfg(not(feature = "migrate"))]
    let command = cli.command;
    let command = match command {
        // These open their own stores.
        Command::Copy(args) => return compose::copy(args, &spec).await,
        Command::Repair(args) => return compose::repair(args, &spec).await,
        other => other,
    };
    // Only a put (and a server, which others may be about to fill) makes a store where none is:
    // a command that reads refuses a mistyped path instead of answering from a new, empty store.
    let spec = store_spec(&spec)?;
    let store = match &command {
        Command::Put { .. } => Store::open(spec).await?,
        #[cfg(feature = "server")]
        Command::Serve(_) => Store::open(spec).await?,
        _ => Store::open_existing(spec).await?,
    };
    match command {
        Command::Put {
            expect,
            json,
            tarball,
            files,
        } => blobs::put(&store, expect.as_deref(), json, tarball, &files).await,
        Command::Inspect { .. } => Ok(exit::USAGE),
        Command::Get { address, output } => blobs::get(&store, &address, output.as_deref()).await,
        Command::Has { address } => blobs::has(&store, &address).await,
        Command::Stat { address, json } => blobs::stat(&store, &address, json).await,
        Command::Ls { json } => blobs::ls(&store, json).await,
        Command::Rm { address } => blobs::rm(&store, &address).await,
        Command::Fsck {
            json,
            quarantine,
            dangling_aliases,
        } => blobs::fsck(&store, json, quarantine, dangling_aliases.into()).await,
        Command::Scrub(args) => compose::scrub(&store, args).await,
        Command::Gc(args) => compose::gc(&store, args).await,
        Command::Copy(_) | Command::Repair(_) => Err(Error::InvalidInput("unreachable".into())),
        #[cfg(feature = "migrate")]
        Command::Migrate(_) => Err(Error::InvalidInput("unreachable: migrate".into())),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(store, args).await,
    }
}

/// `--dangling-aliases`: what fsck and scrub do with index entries whose blob is gone.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum DanglingArg {
    /// Remove them.
    Remove,
    /// Report them (`dangling` in the report) and keep them.
    Report,
    /// Do not list the index for them.
    Skip,
}

impl From<DanglingArg> for tarvault::backend::Dangling {
    fn from(d: DanglingArg) -> Self {
        match d {
            DanglingArg::Remove => Self::Remove,
            DanglingArg::Report => Self::Report,
            DanglingArg::Skip => Self::Skip,
        }
    }
}
