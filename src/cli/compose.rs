//! The whole-store commands: copy, scrub, gc, repair.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tarvault::backend::compose::{Rate, Throttled};
use tarvault::open::{is_config_spec, open_typed, Opened};
use tarvault::ops::copy::{CopyEvent, CopyOptions};
use tarvault::ops::gc::{keep_lines, GcOptions};
use tarvault::units::parse_duration;
use tarvault::{Error, FsckOptions, Store};

use super::exit;
use super::output::{and_more, corrupt_lines, json_line, misplaced_lines, outln};

/// `tarvault copy`.
#[derive(Args, Debug)]
pub(crate) struct CopyArgs {
    /// The source store (default: --store).
    #[arg(long, value_name = "STORE")]
    from: Option<String>,
    /// The target store.
    #[arg(long, value_name = "STORE")]
    to: String,
    /// Blobs copied at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    concurrency: usize,
    /// Ask a remote target about each blob instead of listing it once first (for a few blobs
    /// copied into a large store).
    #[arg(long)]
    no_list_target: bool,
    /// Pace reads from the source: bytes per second (`50MB/s`) or blobs per second (`200blobs/s`).
    #[arg(long, value_name = "RATE")]
    rate: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `tarvault scrub`.
#[derive(Args, Debug)]
pub(crate) struct ScrubArgs {
    /// Read at most this fast: bytes per second (`20MB/s`) or blobs per second (`100blobs/s`).
    /// Without it, as fast as `fsck`.
    #[arg(long, value_name = "RATE")]
    rate: Option<String>,
    /// Move corrupt blobs to quarantine.
    #[arg(long)]
    quarantine: bool,
    /// Blobs checked at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    concurrency: usize,
    /// Index entries whose blob is gone (S3/Manta alias markers, listed and checked at the
    /// same rate as the reads): remove them, only report them, or skip the listing.
    #[arg(long, value_enum, default_value_t = super::DanglingArg::Remove, value_name = "WHAT")]
    dangling_aliases: super::DanglingArg,
    /// As JSON.
    #[arg(long)]
    json: bool,
}

/// `tarvault gc`.
#[derive(Args, Debug)]
pub(crate) struct GcArgs {
    /// The live set: a migration mapping (JSON lines with `integrity`) or one address per line.
    #[arg(long, value_name = "FILE")]
    keep: PathBuf,
    /// Never delete a blob younger than this (`30m`, `24h`, `7d`; a number needs its unit).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    grace: String,
    /// Delete. Without it, gc only lists what it would delete.
    #[arg(long)]
    delete: bool,
    /// As JSON lines: one `{"garbage", "size", "deleted"}` object per garbage blob, then the
    /// summary.
    #[arg(long)]
    json: bool,
}

/// `tarvault repair`.
#[derive(Args, Debug)]
pub(crate) struct RepairArgs {
    /// Also re-hash every copy and replace corrupt ones (reads everything).
    #[arg(long)]
    verify: bool,
    /// Blobs repaired at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    concurrency: usize,
    /// As JSON.
    #[arg(long)]
    json: bool,
}

fn rate(text: Option<&str>) -> Result<Option<Rate>, Error> {
    Ok(text.map(str::parse::<Rate>).transpose()?)
}

fn throttle(store: &Store, rate: Option<Rate>) -> Store {
    match rate {
        Some(r) => Store::from_arc(Arc::new(Throttled::new(store.backend().clone(), r))),
        None => store.clone(),
    }
}

pub(crate) async fn copy(args: CopyArgs, default_from: &str) -> Result<u8, Error> {
    let pace = rate(args.rate.as_deref())?;
    let from_spec = super::store_or(args.from.as_deref(), "copy --from", default_from)?;
    let from = throttle(&Store::open_existing(from_spec).await?, pace);
    let to = Store::open(super::expanded(&args.to, "copy --to")?).await?;
    let terminal = std::io::stderr().is_terminal();
    let bar = super::output::byte_spinner(terminal);
    if let Some(bar) = &bar {
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    let started = Instant::now();
    let mut last_line = Instant::now();
    let (mut copied, mut skipped, mut failed, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let report = tarvault::ops::copy::copy(
        &from,
        &to,
        &CopyOptions {
            concurrency: args.concurrency,
            list_target: !args.no_list_target,
        },
        |event| {
            match event {
                CopyEvent::Copied { size, .. } => {
                    copied += 1;
                    bytes += size;
                }
                CopyEvent::Skipped { .. } => skipped += 1,
                CopyEvent::Failed { key, error } => {
                    failed += 1;
                    let what = key
                        .map(|k| k.to_string())
                        .unwrap_or_else(|| "listing".into());
                    let line = format!("tarvault: copy: failed {what}: {}", error.report());
                    match &bar {
                        Some(b) => b.println(line),
                        None => eprintln!("{line}"),
                    }
                }
            }
            let status = format!("{copied} copied, {skipped} already there, {failed} failed,");
            match &bar {
                Some(b) => {
                    b.set_message(status);
                    b.set_position(bytes);
                }
                None => {
                    if last_line.elapsed() >= Duration::from_secs(2) {
                        last_line = Instant::now();
                        eprintln!("tarvault: copy: {status} {bytes} bytes");
                    }
                }
            }
        },
    )
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        json_line(&report);
    } else {
        outln!(
            "copied {} blobs ({} bytes), {} already there, {} failed, in {secs:.1}s",
            report.copied,
            report.bytes,
            report.skipped,
            report.failed.total()
        );
    }
    Ok(if report.is_complete() {
        exit::OK
    } else {
        exit::OTHER
    })
}

pub(crate) async fn scrub(store: &Store, args: ScrubArgs) -> Result<u8, Error> {
    let store = throttle(store, rate(args.rate.as_deref())?);
    let started = Instant::now();
    let report = store
        .fsck(&FsckOptions {
            quarantine: args.quarantine,
            concurrency: args.concurrency,
            dangling_aliases: args.dangling_aliases.into(),
            ..FsckOptions::default()
        })
        .await?;
    if args.json {
        json_line(&report);
    } else {
        corrupt_lines(&report.corrupt);
        misplaced_lines(&report.misplaced);
        outln!(
            "scrubbed {} blobs ({} bytes) in {:.1}s: {} ok, {} corrupt",
            report.checked,
            report.bytes,
            started.elapsed().as_secs_f64(),
            report.ok,
            report.corrupt.total()
        );
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::MISMATCH
    })
}

/// `--grace`: a duration with its unit. A bare number other than 0 is refused, though
/// [`parse_duration`] reads it as seconds: beside a default of `24h`, `--grace 24` reads as 24
/// hours, and as 24 seconds it lets `--delete` take every blob older than that.
fn grace(text: &str) -> Result<Duration, Error> {
    let grace = parse_duration(text)?;
    if !grace.is_zero() && text.trim().parse::<f64>().is_ok() {
        let n = text.trim();
        return Err(Error::InvalidInput(format!(
            "--grace {n:?} has no unit: write {n}h, {n}d, {n}m or {n}s"
        )));
    }
    Ok(grace)
}

pub(crate) async fn gc(store: &Store, args: GcArgs) -> Result<u8, Error> {
    let keep = keep_lines(&args.keep)?;
    let options = GcOptions {
        grace: grace(&args.grace)?,
        delete: args.delete,
    };
    let verb = if args.delete {
        "deleted"
    } else {
        "would delete"
    };
    let report = tarvault::ops::gc::gc(store, keep, &options, |key, size| {
        if args.json {
            let line = serde_json::json!({
                "garbage": key.to_string(),
                "size": size,
                "deleted": args.delete,
            });
            json_line(&line);
        } else {
            outln!("{verb} {key} {size}");
        }
    })
    .await?;
    if args.json {
        json_line(&report);
    } else {
        eprintln!(
            "gc: {} blobs: {} live, {} recent (< {}), {} of unknown age, {} live but not indexed (run fsck) kept; {verb} {} ({} bytes){}",
            report.listed,
            report.kept_live,
            report.kept_recent,
            args.grace,
            report.kept_unknown_age,
            report.kept_unindexed,
            report.garbage,
            report.garbage_bytes,
            if args.delete {
                format!(
                    "; {} already gone (deleted by another process since the listing)",
                    report.gone
                )
            } else {
                "; dry run, pass --delete to delete".into()
            }
        );
        for f in &report.failed {
            eprintln!("tarvault: gc: delete failed: {f}");
        }
        if let Some(more) = and_more(&report.failed) {
            eprintln!("tarvault: gc: {more} failed deletes");
        }
    }
    Ok(if report.failed.is_empty() {
        exit::OK
    } else {
        exit::OTHER
    })
}

pub(crate) async fn repair(args: RepairArgs, spec: &str) -> Result<u8, Error> {
    let typed = if is_config_spec(spec) {
        Some(open_typed(spec).await?)
    } else {
        None
    };
    // The spec is not repeated: a URL may hold a password (`http://user:pw@host`).
    let Some(Opened::Replicated(replicated)) = typed else {
        return Err(Error::Config(
            "repair needs a replicated store: --store must name a `replicated` configuration"
                .into(),
        ));
    };
    let report = replicated.repair(args.verify, args.concurrency).await?;
    if args.json {
        json_line(&report);
    } else {
        for u in &report.unrecoverable {
            outln!("unrecoverable {u}");
        }
        if let Some(more) = and_more(&report.unrecoverable) {
            outln!("{more} unrecoverable");
        }
        for f in &report.failed {
            outln!("failed {f}");
        }
        if let Some(more) = and_more(&report.failed) {
            outln!("{more} failed");
        }
        outln!(
            "repair: {} blobs over {} replicas: {} copies written, {} corrupt copies replaced, {} unrecoverable, {} failed",
            report.blobs,
            replicated.replicas().len(),
            report.copied,
            report.replaced,
            report.unrecoverable.total(),
            report.failed.total()
        );
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::OTHER
    })
}
