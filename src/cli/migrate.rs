//! `tarvault migrate couch`: the library's [`Migration`] with a progress display, signal handling
//! and a summary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;
use tarvault::migrate::{
    CouchSource, Counts, MigrateOptions, Migration, Progress, Report, Seq, Summary,
};
use tarvault::{Error, Store};

use super::exit;
use super::output::outln;

#[derive(Subcommand, Debug)]
pub(crate) enum MigrateCommand {
    /// Move every tarball out of an npm registry in CouchDB, verified and resumable.
    Couch(CouchArgs),
}

#[derive(Args, Debug)]
pub(crate) struct CouchArgs {
    /// The registry database: http[s]://[user:password@]host:port/db. Credentials may also come
    /// from COUCH_USER / COUCH_PASSWORD; they are never printed.
    #[arg(long, value_name = "URL/DB")]
    from: String,
    /// The store to fill (default: --store, $TARVAULT_STORE, ./tarvault-store).
    #[arg(long, value_name = "STORE")]
    to: Option<String>,
    /// Tarballs in flight at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    concurrency: usize,
    /// Where progress is checkpointed; a re-run resumes from it.
    #[arg(
        long,
        default_value = "tarvault-migrate-state.json",
        value_name = "FILE"
    )]
    state: PathBuf,
    /// The mapping written for `tarvault serve --map` (JSON lines).
    #[arg(
        long,
        default_value = "tarvault-migrate-map.jsonl",
        value_name = "FILE"
    )]
    map: PathBuf,
    /// Every problem (everything but a success), one JSON line each, in feed order; the summary
    /// shows the first ones. Default: the state file's name with `.problems.jsonl` added.
    #[arg(long, value_name = "FILE")]
    problems: Option<PathBuf>,
    /// Start at this _changes sequence (integer or opaque string) instead of the checkpoint;
    /// `now` starts at the current end of the feed (saved as the sequence it stands for).
    #[arg(long, value_name = "SEQ")]
    since: Option<String>,
    /// After catching up, keep following the feed until SIGINT/SIGTERM.
    #[arg(long)]
    follow: bool,
    /// _changes rows per request.
    #[arg(long, default_value_t = 100, value_name = "N")]
    batch: usize,
    /// Checkpoint after this many documents (and at least every second).
    #[arg(long, default_value_t = 500, value_name = "N")]
    checkpoint_docs: u64,
    /// Inspect each tarball as it streams in (strict policy): a hostile one is not stored, one
    /// whose package.json names another package or version is not mapped.
    #[arg(long)]
    inspect: bool,
    /// Store orphan attachments too (no version names them), verified against CouchDB's md5 and
    /// length, not mapped; their problem lines name the integrity each is stored under.
    #[arg(long)]
    keep_orphans: bool,
    /// Fetch a version whose document holds no attachment for it from its dist.tarball (http or
    /// https, without the source's credentials), verified against dist.shasum/integrity.
    #[arg(long)]
    fetch_missing: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(command: MigrateCommand, store_spec: String) -> Result<u8, Error> {
    let MigrateCommand::Couch(args) = command;
    let source = CouchSource::parse(&args.from)?;
    let to = super::store_or(args.to.as_deref(), "migrate --to", &store_spec)?;
    let store = Store::open(to).await?;
    let mut options = MigrateOptions::new(&args.state, &args.map);
    options.concurrency = args.concurrency;
    options.since = args.since.as_deref().map(Seq::from_arg);
    options.follow = args.follow;
    options.batch = args.batch;
    options.checkpoint_docs = args.checkpoint_docs.max(1);
    options.inspect = args.inspect.then(tarvault::tarball::Policy::default);
    options.keep_orphans = args.keep_orphans;
    options.fetch_missing = args.fetch_missing;
    if let Some(problems) = &args.problems {
        options.problems = problems.clone();
    }
    let problems_file = options.problems.clone();
    let shown_source = source.to_string();
    let migration = Migration::new(source, store, options)?;
    let stopper = migration.stopper();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("tarvault: stopping after the documents in flight (signal again to abort)");
        stopper.stop();
        wait_for_signal().await;
        // The state on disk is always consistent: dying here loses only work in flight.
        std::process::exit(130);
    });
    let display = ProgressDisplay::start(migration.progress());
    let result = migration.run().await;
    display.finish().await;
    let summary = result?;
    if args.json {
        let json = JsonSummary::new(&shown_source, &args, &problems_file, &summary);
        super::output::json_line(&json);
    } else {
        print_summary(&shown_source, &args, &problems_file, &summary);
    }
    Ok(if !summary.report.is_success() {
        exit::INCOMPLETE
    } else if summary.interrupted && !args.follow {
        exit::INTERRUPTED
    } else {
        exit::OK
    })
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A progress bar on a terminal; a plain line every ten seconds otherwise (logs, CI).
struct ProgressDisplay {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl ProgressDisplay {
    fn start(progress: Arc<Progress>) -> ProgressDisplay {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let bar = super::output::byte_spinner(terminal);
            let tick = if terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(tick) => {}
                }
                let s = progress.snapshot();
                let docs = if s.docs_total > 0 {
                    format!("{}/~{} docs", s.docs, s.docs_total)
                } else {
                    format!("{} docs", s.docs)
                };
                match &bar {
                    Some(bar) => {
                        bar.set_message(format!(
                            "{docs}, {} tarballs, {} failed,",
                            s.tarballs, s.failures
                        ));
                        bar.set_position(s.bytes);
                        bar.tick();
                    }
                    None => {
                        let secs = started.elapsed().as_secs_f64().max(0.001);
                        eprintln!(
                            "tarvault: migrate: {docs}, {} tarballs, {} failed, {:.1} MiB ({:.1} MiB/s)",
                            s.tarballs,
                            s.failures,
                            mib(s.bytes),
                            mib(s.bytes) / secs
                        );
                    }
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        ProgressDisplay { task, stop }
    }

    async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn count_lines(c: &Counts) -> Vec<(&'static str, u64)> {
    vec![
        ("documents", c.documents),
        ("migrated", c.migrated),
        ("already present", c.already_present),
        ("already mapped", c.already_mapped),
        ("digest mismatch", c.digest_mismatch),
        ("attachment missing", c.attachment_missing),
        ("unreadable", c.unreadable),
        ("conflict", c.conflict),
        ("rejected", c.rejected),
        ("package mismatch", c.package_mismatch),
        ("orphan attachments", c.orphan),
        ("losing revisions", c.losing_revision),
        ("losing tarballs", c.losing_tarball),
        ("unpublished", c.unpublished),
        ("deleted", c.deleted),
        ("gone meanwhile", c.gone),
        ("empty", c.empty),
        ("design docs", c.design),
    ]
}

fn print_summary(source: &str, args: &CouchArgs, problems: &Path, s: &Summary) {
    let c = &s.report.counts;
    let how = if s.interrupted {
        "stopped"
    } else if s.caught_up {
        "caught up"
    } else {
        "done"
    };
    outln!(
        "migrate couch {source}: {how} in {:.1}s; this run: {} documents, {} tarballs, {:.1} MiB",
        s.elapsed.as_secs_f64(),
        s.run.documents,
        s.run.tarballs_ok(),
        mib(s.run.bytes)
    );
    outln!("since the migration began:");
    for (name, n) in count_lines(c) {
        outln!("  {name:<20}{n:>10}");
    }
    outln!("  {:<20}{:>10.1}", "MiB verified", mib(c.bytes));
    print_problems(&s.report, problems);
    outln!(
        "state {} (since {}), mapping {}, problems {}",
        args.state.display(),
        s.since
            .as_ref()
            .map_or("start".to_string(), |q| q.to_string()),
        args.map.display(),
        problems.display()
    );
    outln!(
        "{}",
        if s.report.is_success() {
            "result: ok"
        } else {
            "result: FAILED (see failures above)"
        }
    );
}

/// The problems the report kept, failures first, and where the rest are.
fn print_problems(report: &Report, file: &Path) {
    let (total, kept) = (report.problems_total, report.problems.len() as u64);
    if total == 0 {
        return;
    }
    if kept < total {
        outln!(
            "problems: {total}, all in {}; the first {kept} of them:",
            file.display()
        );
    }
    let failures_total = report.counts.failures();
    for (failures, heading, of_total) in [
        (true, "failures", failures_total),
        (
            false,
            "not migrated, not failures",
            total.saturating_sub(failures_total),
        ),
    ] {
        let listed: Vec<_> = report
            .problems
            .iter()
            .filter(|p| p.kind.is_failure() == failures)
            .collect();
        if listed.is_empty() {
            continue;
        }
        if listed.len() as u64 == of_total {
            outln!("{heading} ({of_total}):");
        } else {
            outln!("{heading} ({} of {of_total}):", listed.len());
        }
        for p in listed {
            outln!("  {}", p.line());
        }
    }
}

/// The `--json` summary.
#[derive(Serialize)]
struct JsonSummary<'a> {
    source: &'a str,
    state: String,
    map: String,
    problems_file: String,
    ok: bool,
    caught_up: bool,
    interrupted: bool,
    since: Option<&'a Seq>,
    elapsed_secs: f64,
    run: &'a Counts,
    report: &'a Report,
}

impl<'a> JsonSummary<'a> {
    fn new(source: &'a str, args: &CouchArgs, problems: &Path, s: &'a Summary) -> Self {
        JsonSummary {
            source,
            state: args.state.display().to_string(),
            map: args.map.display().to_string(),
            problems_file: problems.display().to_string(),
            ok: s.report.is_success(),
            caught_up: s.caught_up,
            interrupted: s.interrupted,
            since: s.since.as_ref(),
            elapsed_secs: s.elapsed.as_secs_f64(),
            run: &s.run,
            report: &s.report,
        }
    }
}
