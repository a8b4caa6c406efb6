//! Migrating an npm registry out of CouchDB: every version's tarball, streamed from its attachment
//! into a [`Store`], verified against every digest its document offers, resumable after a crash,
//! with a mapping a registry server can serve the old tarball URLs from.
//!
//! Embedders need [`Migration`], [`MigrateOptions`] and [`CouchSource`], and read the outcome from
//! [`Summary`], [`Report`] and [`Progress`]. The pieces inside, each a client of the one before
//! (private; their types that show in this API are re-exported here):
//! - `couch`: the HTTP client (credentials kept out of everything printed);
//! - `changes`: the `_changes` feed in batches, then `longpoll` when following, each document
//!   read with its repeated keys named (`crate::strict_json`);
//! - `planner`: one document → the tarballs to move and the outcomes decided by reading it;
//! - `transfer`: one tarball → [`Store::put`], every digest field checked on its own, retried when
//!   transient;
//! - `checkpoint`: the state file and the in-order tracker; `journal`: advancing the state with
//!   the mapping and the problems file; `lines`: appending JSON lines cut back to a checkpoint on
//!   resume; `lock`: one run at a time on a state file, mapping and problems file; `recorded`:
//!   which problems the problems file holds, so none is written twice; `mapping`: the lines of
//!   [`MapEntry`] (read back with `tarvault::mapping::read_mapping`);
//! - `report`: the counts, the first problems, and every [`Problem`] in the problems file (read
//!   back with [`read_problems`]); `progress`: live counters for a front end.
//!
//! ```no_run
//! # async fn demo() -> tarvault::Result<()> {
//! use tarvault::migrate::{CouchSource, MigrateOptions, Migration};
//! use tarvault::Store;
//!
//! let source = CouchSource::parse("http://127.0.0.1:5984/registry")?;
//! let store = Store::open("/var/lib/tarvault").await?;
//! let options = MigrateOptions::new("migrate-state.json", "migrate-map.jsonl");
//! let summary = Migration::new(source, store, options)?.run().await?;
//! println!("{} migrated, {} failed", summary.report.counts.migrated, summary.report.counts.failures());
//! # Ok(()) }
//! ```

mod changes;
mod checkpoint;
mod couch;
mod fallback;
mod journal;
mod lines;
mod lock;
mod losing;
mod mapping;
mod orphans;
mod planner;
mod progress;
mod recorded;
mod report;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use changes::{ChangeRow, Seq};
pub use checkpoint::State;
pub use couch::{CouchClient, CouchSource, DEFAULT_MAX_BODY};
pub use mapping::MapEntry;
pub use progress::{Progress, ProgressSnapshot};
pub use report::{read_problems, Counts, OutcomeKind, Problem, Report, KEPT_PROBLEMS};

use changes::Fed;
use checkpoint::Tracker;
use journal::Journal;
use transfer::{Context, Transferred};

use crate::task::blocking;
use crate::{Error, Result, Store};

/// How to run a migration.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Tarballs in flight at once (downloads and puts). Documents in flight: twice this.
    pub concurrency: usize,
    /// The state file (created if missing).
    pub state: PathBuf,
    /// The mapping file (JSON lines; created if missing, appended to, cut back on resume).
    pub map: PathBuf,
    /// The problems file: every [`Problem`], one JSON line each, in feed order (created if
    /// missing, appended to, cut back on resume like the mapping; started afresh with a new
    /// state file). The report in memory keeps only the first [`KEPT_PROBLEMS`]. Default: the
    /// state file's path with `.problems.jsonl` added.
    pub problems: PathBuf,
    /// Start from this feed position instead of the state's (or the beginning). `now` is resolved
    /// to the position it stands for (`update_seq`, or the feed's first `last_seq`) before it is
    /// checkpointed. A position before the checkpoint re-checks the documents after it: they are
    /// read again and counted in [`Summary::run`], but what the mapping and the problems file
    /// already hold is neither written nor counted in the report again.
    pub since: Option<Seq>,
    /// Keep following the feed (`longpoll`) after catching up, until stopped.
    pub follow: bool,
    /// `_changes` rows per request: fewer for a while when a page of this many is over
    /// [`max_body`](MigrateOptions::max_body) (halved until it fits, then doubled back).
    pub batch: usize,
    /// Save the state at least this often while documents complete...
    pub checkpoint_interval: Duration,
    /// ...and after this many documents.
    pub checkpoint_docs: u64,
    /// Inspect each tarball under this policy while it streams in ([`crate::tarball`]): a
    /// tarball the policy rejects is not stored, and one whose package.json names another
    /// package or version is not mapped. Both are failures.
    pub inspect: Option<crate::tarball::Policy>,
    /// Fetch a version whose document holds no attachment for it from its `dist.tarball` (http
    /// or https, without the source's credentials), verified against `dist.shasum` and
    /// `dist.integrity`, and map it: npm-fullfat-registry's fallback, for a skim registry.
    /// Off by default: such a version is a failure (`attachment_missing`).
    pub fetch_missing: bool,
    /// Store orphan attachments too (those no version's `dist.tarball` names), verified against
    /// CouchDB's md5 and length, not mapped: their problem lines name the `integrity` each is
    /// stored under. Off by default: no packument leads a client to one.
    pub keep_orphans: bool,
    /// The most bytes a JSON answer from CouchDB (a `_changes` page with its `batch` documents, a
    /// document) may hold, so that no answer is read into memory whatever its size. A `_changes`
    /// page over it is asked again for half as many documents, down to one; a single document
    /// over it (or any other answer) fails the run with an error naming the request and, for the
    /// feed, the position. Default: [`DEFAULT_MAX_BODY`] (256 MiB).
    pub max_body: u64,
}

impl MigrateOptions {
    /// Defaults: concurrency 8, batches of 100 rows, a checkpoint every second or 500 documents.
    pub fn new(state: impl Into<PathBuf>, map: impl Into<PathBuf>) -> MigrateOptions {
        let state = state.into();
        MigrateOptions {
            concurrency: 8,
            problems: problems_beside(&state),
            state,
            map: map.into(),
            since: None,
            follow: false,
            batch: 100,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_docs: 500,
            inspect: None,
            keep_orphans: false,
            fetch_missing: false,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// The default problems file of the state file `state`: `<state>.problems.jsonl`, beside it.
fn problems_beside(state: &Path) -> PathBuf {
    suffixed(state, ".problems.jsonl")
}

/// `path` with `suffix` added to its file name: the files a state file keeps beside it.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Everything since the migration began, across resumed runs (the first problems; all of them
    /// are in [`MigrateOptions::problems`]).
    pub report: Report,
    /// This run alone.
    pub run: Counts,
    /// The checkpoint: every document up to here is done.
    pub since: Option<Seq>,
    /// Whether the run reached the end of the feed (always false with `follow` until stopped).
    pub caught_up: bool,
    /// Whether the run was stopped (signal, [`Stopper::stop`]) before the end.
    pub interrupted: bool,
    /// How long the run took.
    pub elapsed: Duration,
}

/// Stops a running migration gracefully: no new documents are started, those in flight finish,
/// the state is saved.
#[derive(Debug, Clone)]
pub struct Stopper(CancellationToken);

impl Stopper {
    /// Asks the migration to stop.
    pub fn stop(&self) {
        self.0.cancel();
    }
}

/// A migration from one CouchDB database into one store.
pub struct Migration {
    client: CouchClient,
    store: Store,
    options: MigrateOptions,
    progress: Arc<Progress>,
    stop: CancellationToken,
}

/// One finished document, waiting for the documents before it.
#[derive(Debug, Default)]
struct DocDone {
    /// Outcomes other than stored tarballs.
    counts: Counts,
    /// Their problems, in the order met (all of them: one document's, bounded by its size).
    problems: Vec<Problem>,
    /// Verified tarballs; counted when their mapping lines are written.
    stored: Vec<(OutcomeKind, MapEntry)>,
}

impl DocDone {
    fn record(&mut self, kind: OutcomeKind, problem: Option<Problem>) {
        self.counts.add(kind);
        self.problems.extend(problem);
    }
}

impl Migration {
    /// Prepares a migration (nothing is read or written yet).
    pub fn new(source: CouchSource, store: Store, options: MigrateOptions) -> Result<Migration> {
        if options.concurrency == 0 || options.batch == 0 {
            return Err(Error::InvalidInput(
                "concurrency and batch must be at least 1".into(),
            ));
        }
        Ok(Migration {
            client: CouchClient::new(source)?.with_max_body(options.max_body),
            store,
            options,
            progress: Arc::new(Progress::default()),
            stop: CancellationToken::new(),
        })
    }

    /// Live counters for a progress display.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// A handle that stops the run gracefully (for SIGINT/SIGTERM).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Runs until the feed is exhausted (or, with `follow`, until stopped). `Err` means the run
    /// stopped on something it could not get past (the server or the store failing after retries,
    /// a state file for another source, a mapping with lines but no state file): everything before
    /// it is checkpointed, and a re-run resumes there.
    pub async fn run(&self) -> Result<Summary> {
        let started = Instant::now();
        let opts = &self.options;
        let source = self.client.source();
        let info = self.client.db_info().await?;
        self.progress.set_docs_total(info.doc_count.unwrap_or(0));
        // Before the state is read or anything written: a second run on these files would cut
        // them back and append between the first's lines, or checkpoint over the first's state
        // (see `lock`). Held until `run` returns.
        let (state_lock, map_path, problems_path) = (
            lock::beside(&opts.state),
            opts.map.clone(),
            opts.problems.clone(),
        );
        let _held = blocking(move || {
            lock::hold(&[
                (&state_lock, "state file's lock"),
                (&map_path, "mapping"),
                (&problems_path, "problems file"),
            ])
        })
        .await?;
        let identity = source.identity();
        let (state, inline) = match State::load_with_inline(&opts.state)? {
            Some((s, _)) if s.source != identity => {
                return Err(Error::Config(format!(
                    "state file {} belongs to a migration from {}, not {source}",
                    opts.state.display(),
                    s.source
                )))
            }
            Some((s, inline)) => {
                tracing::info!(since = ?s.since, "resuming from the state file");
                (s, inline)
            }
            None => {
                // The state file exists before the mapping gets its first line, so a mapping with
                // lines always has a state saying how many of them count. One with lines and no
                // state is another migration's (or its state was lost): starting here would cut
                // it to nothing. (A problems file is this migration's report: a new migration
                // starts it afresh.)
                let map_path = opts.map.clone();
                blocking(move || refuse_orphan_mapping(&map_path)).await?;
                let s = State::new(identity, None);
                s.save(&opts.state)?;
                (s, Vec::new())
            }
        };
        let journal_opts = opts.clone();
        let mut journal = blocking(move || Journal::open(state, inline, &journal_opts)).await?;
        let state = journal.state_mut();
        // Where the feed starts. `now` is resolved first when the server says where that is;
        // otherwise the feed is asked for `now` and its first `last_seq` becomes the checkpoint.
        let mut feed_since = state.since.clone();
        if let Some(since) = &opts.since {
            feed_since = Some(since.clone());
            if !since.is_now() {
                state.since = Some(since.clone());
            } else if let Some(end) = info.update_seq.clone() {
                tracing::info!(since = %end, "--since now: the feed's end");
                state.since = Some(end.clone());
                feed_since = Some(end);
            }
        }
        state.caught_up = false;
        tracing::info!(source = %source, since = ?state.since, "migrating");

        let ctx = Arc::new(Context {
            client: self.client.clone(),
            store: self.store.clone(),
            permits: Arc::new(Semaphore::new(opts.concurrency)),
            mapped: journal.mapped(),
            progress: self.progress.clone(),
            inspect: opts.inspect.clone(),
            keep_orphans: opts.keep_orphans,
            fetch_missing: opts.fetch_missing,
        });
        let feed_stop = self.stop.child_token();
        let mut rx = changes::spawn_feed(
            self.client.clone(),
            changes::FeedOptions {
                since: feed_since,
                batch: opts.batch,
                follow: opts.follow,
            },
            feed_stop.clone(),
        );
        let max_docs = opts.concurrency.saturating_mul(2).max(2);
        // Finished documents held behind a slow one: bounded too, so memory stays bounded.
        let max_pending = max_docs.saturating_mul(64).max(1024);
        let mut tracker: Tracker<DocDone> = Tracker::default();
        let mut in_flight: FuturesUnordered<JoinHandle<(u64, Result<DocDone>)>> =
            FuturesUnordered::new();
        let mut run = Counts::default();
        let mut fatal: Option<Error> = None;
        let mut feed_done = false;
        let mut caught_up = false;
        let mut last_save = Instant::now();
        let mut unsaved: u64 = 0;

        loop {
            if feed_done && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(joined) = in_flight.next(), if !in_flight.is_empty() => {
                    // A task that panicked is a fault here (exit 1), not a bad argument.
                    let (index, result) = joined
                        .map_err(Error::Task)
                        .unwrap_or_else(|e| (u64::MAX, Err(e)));
                    match result {
                        Ok(done) => {
                            for (seq, done) in tracker.finish(index, done) {
                                let counts = journal.commit(seq, done)?;
                                run.merge(&counts);
                                unsaved += 1;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e.report(), "stopping: a document could not be finished");
                            fatal.get_or_insert(e);
                            feed_stop.cancel();
                            feed_done = true;
                        }
                    }
                    if unsaved >= opts.checkpoint_docs {
                        journal = save(journal).await?;
                        last_save = Instant::now();
                        unsaved = 0;
                    }
                }
                // Finished documents are saved within the interval even if nothing else finishes
                // (a slow tarball ahead of them, an idle `--follow`).
                _ = tokio::time::sleep_until((last_save + opts.checkpoint_interval).into()),
                    if unsaved > 0 => {
                    journal = save(journal).await?;
                    last_save = Instant::now();
                    unsaved = 0;
                }
                _ = self.stop.cancelled(), if !feed_done => {
                    tracing::info!("stop requested: finishing documents in flight");
                    feed_done = true;
                }
                item = rx.recv(), if !feed_done
                    && in_flight.len() < max_docs
                    && tracker.in_flight() < max_pending => match item {
                    None => {
                        feed_done = true;
                        caught_up = !self.stop.is_cancelled() && fatal.is_none();
                    }
                    Some(Err(e)) => {
                        fatal.get_or_insert(e);
                        feed_done = true;
                    }
                    Some(Ok(Fed::Row(row))) => {
                        let index = tracker.admit(row.seq.clone());
                        let ctx = ctx.clone();
                        in_flight.push(tokio::spawn(async move {
                            (index, process_doc(&ctx, row).await)
                        }));
                    }
                    // A position with nothing to do: passed (and saved) once the documents
                    // before it are, like a document.
                    Some(Ok(Fed::Reached(seq))) => {
                        let index = tracker.admit(seq);
                        for (seq, done) in tracker.finish(index, DocDone::default()) {
                            let counts = journal.commit(seq, done)?;
                            run.merge(&counts);
                            unsaved += 1;
                        }
                    }
                },
            }
        }
        if caught_up && tracker.in_flight() == 0 {
            journal.state_mut().caught_up = true;
        }
        let (state, report) = save(journal).await?.finish();
        if let Some(e) = fatal {
            return Err(e);
        }
        Ok(Summary {
            report,
            run,
            since: state.since,
            caught_up: state.caught_up,
            interrupted: self.stop.is_cancelled(),
            elapsed: started.elapsed(),
        })
    }
}

/// Reads one document's plan and moves its tarballs (each waiting for a permit).
async fn process_doc(ctx: &Context, row: ChangeRow) -> Result<DocDone> {
    let plan = planner::plan(&row);
    let row_id = row.id.clone();
    // A packument can be large; only the plan is needed while tarballs download.
    drop(row);
    let mut done = DocDone::default();
    done.counts.documents = 1;
    for (kind, problem) in plan.decided {
        done.record(kind, problem);
    }
    let mut jobs = plan.jobs;
    for fallback in plan.fallbacks {
        match fallback.resolve(ctx.fetch_missing) {
            Ok(job) => jobs.push(job),
            Err(problem) => done.record(problem.kind, Some(*problem)),
        }
    }
    let mut vouched = losing::Vouched::default();
    let digests: Vec<_> = jobs.iter().map(losing::digests).collect();
    let results =
        futures::future::join_all(jobs.into_iter().map(|job| transfer::transfer(ctx, job))).await;
    for (r, digests) in results.into_iter().zip(digests) {
        match r? {
            Transferred::Stored(kind, entry) => {
                vouched.add(digests);
                done.stored.push((kind, entry))
            }
            Transferred::AlreadyMapped => {
                vouched.add(digests);
                done.record(OutcomeKind::AlreadyMapped, None)
            }
            Transferred::Recorded(kind, problem) => done.record(kind, Some(problem)),
        }
    }
    let orphans = plan.orphans.into_iter().map(|o| {
        let keys = o.keys();
        vouched.note_orphan(&keys);
        async move {
            let problem = match ctx.keep_orphans {
                true => o.keep(ctx).await?,
                false => o.listed(),
            };
            Ok::<_, Error>((problem, keys))
        }
    });
    let orphans: Vec<_> = orphans.collect();
    for outcome in futures::future::join_all(orphans).await {
        let (problem, keys) = outcome?;
        if problem.integrity.is_some() {
            vouched.add(keys);
        }
        done.record(OutcomeKind::Orphan, Some(problem));
    }
    // After the winner's, so that a tarball both revisions hold is fetched once; conflicts are
    // rare, and one at a time is enough.
    for rev in &plan.losing {
        for problem in losing::tarballs(ctx, &row_id, rev, &mut vouched).await? {
            done.record(problem.kind, Some(problem));
        }
    }
    ctx.progress.doc_done(done.counts.failures());
    Ok(done)
}

/// Fails, touching nothing, if `map` has lines although there is no state file: see [`Migration::run`].
fn refuse_orphan_mapping(map: &Path) -> Result<()> {
    let len = match std::fs::metadata(map) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("stat", map, e)),
    };
    if len == 0 {
        return Ok(());
    }
    Err(Error::Config(format!(
        "mapping {} already has {len} bytes but there is no state file saying how many of them \
         count: it belongs to an earlier migration. Resume that one with its --state, or move the \
         mapping away (or pass another --map) to start a new one",
        map.display()
    )))
}

/// Checkpoints the journal ([`Journal::save`]) off the runtime.
async fn save(mut journal: Journal) -> Result<Journal> {
    blocking(move || {
        journal.save()?;
        Ok(journal)
    })
    .await
}
