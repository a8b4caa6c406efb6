//! The blob commands: put, get, has, stat, ls, rm, fsck.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use tarvault::{Error, FsckOptions, Integrity, PutOptions, PutOutcome, Store};
use tokio::io::AsyncWriteExt;

use super::exit;
use super::output::{
    corrupt_lines, json_line, misplaced_lines, outln, stdout_failed, FailedPutLine, Held, PutLine,
};

/// Read size for standard input.
const READ_CAPACITY: usize = 256 * 1024;

/// Results of a batch `put` printed with one write, at most.
const RESULTS_AT_ONCE: usize = 1024;

fn address(text: &str) -> Result<Integrity, Error> {
    Integrity::parse_address(text)
}

/// A "not found" names the address as it was typed: the library names the parsed address, in
/// which a 40-hex shasum has become `sha1-<base64>`, which no one matches by eye to what they typed.
fn as_typed(text: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::NotFound { .. } => not_found(text),
        other => other,
    }
}

/// "Not found", naming the address as it was typed.
fn not_found(text: &str) -> Error {
    Error::NotFound {
        address: text.trim().to_string(),
    }
}

pub(crate) async fn put(
    store: &Store,
    expect: Option<&str>,
    json: bool,
    tarball: bool,
    files: &[PathBuf],
) -> Result<u8, Error> {
    // Standard input can be read once: a second `-` would find it at its end and store an empty
    // blob, so it is refused before anything is stored.
    if files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        return Err(Error::InvalidInput(
            "`-` (standard input) may be given only once".into(),
        ));
    }
    let expected = expect.map(address).transpose()?;
    let options_for = move |name: &str| PutOptions {
        expected: expected.clone(),
        label: Some(name.to_string()),
        inspect: tarball.then(tarvault::tarball::Policy::default),
        ..PutOptions::default()
    };
    let mut status = exit::OK;
    let mut report = |name: &str, result: Result<PutOutcome, Error>| match result {
        Ok(out) => {
            if json {
                json_line(&PutLine::new(
                    name,
                    &out.digests,
                    out.stored,
                    out.report.as_ref(),
                ));
            } else {
                let package = out
                    .report
                    .as_ref()
                    .map(|r| format!(" {}@{}", r.name, r.version))
                    .unwrap_or_default();
                outln!(
                    "{} {} {} {}{package}",
                    out.digests.integrity(),
                    if out.stored { "stored" } else { "present" },
                    out.digests.size,
                    name
                );
            }
        }
        Err(e) => {
            if json {
                json_line(&FailedPutLine {
                    file: name,
                    error: e.kind().to_string(),
                    reason: e.report().to_string(),
                });
            }
            eprintln!("tarvault: error: {}", e.report());
            if status == exit::OK {
                status = super::exit_status(&e);
            }
        }
    };
    let single = files.len() == 1 || files.iter().any(|f| f.as_os_str() == "-");
    if single {
        for f in files {
            let name = f.display().to_string();
            let result = if f.as_os_str() == "-" {
                let stdin =
                    tokio_util::io::ReaderStream::with_capacity(tokio::io::stdin(), READ_CAPACITY);
                store.put(stdin, &options_for("standard input")).await
            } else {
                store.put_file(f, &options_for(&name)).await
            };
            report(&name, result);
        }
        return Ok(status);
    }
    // One stream of inputs, opened as the batch gets to them (never more than a few open at
    // once), committed group by group while later ones are ingested; results in input order.
    let owned: Vec<PathBuf> = files.to_vec(); // the batch outlives this borrow
    let inputs = owned.into_iter().map(move |f| {
        let options = options_for(&f.display().to_string());
        (tarvault::file_input(f), options)
    });
    // The results that are ready together (a committed group's) are printed with one write.
    let mut results = store
        .put_stream(futures::stream::iter(inputs))
        .ready_chunks(RESULTS_AT_ONCE);
    let mut names = files.iter().map(|f| f.display().to_string());
    while let Some(ready) = results.next().await {
        let held = Held::start();
        for result in ready {
            if result.is_err() {
                // Before the error goes to stderr, the lines of the files before it.
                held.release();
            }
            if let Some(name) = names.next() {
                report(&name, result);
            }
        }
    }
    Ok(status)
}

pub(crate) async fn get(store: &Store, text: &str, output: Option<&Path>) -> Result<u8, Error> {
    let addr = address(text)?;
    let mut stream = store.get(&addr).await.map_err(as_typed(text))?;
    // `-o -` is standard output, as `-` is standard input for `put`.
    match output.filter(|p| p.as_os_str() != "-") {
        None => {
            let mut out = tokio::io::stdout();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?).await.map_err(stdout_failed)?;
            }
            out.flush().await.map_err(stdout_failed)?;
        }
        Some(path) => write_verified_file(&mut stream, path).await?,
    }
    Ok(exit::OK)
}

/// Writes to a temp file beside `path` and renames it into place only once every byte verified.
/// A path that exists and is not a regular file (`/dev/null`, a FIFO, a terminal) is written
/// directly: renaming over it would replace the device with a file.
///
/// The file ends up with the mode a plain create or overwrite would leave, not the temp file's
/// private 0600: a new file gets 0666 less the umask, a replaced file keeps its permission bits.
/// A symbolic link is written through, as `>` or `cp` would: the file it names is replaced (or
/// made), and the link stays.
async fn write_verified_file(stream: &mut tarvault::BlobStream, path: &Path) -> Result<(), Error> {
    let path = &through_links(path);
    let existing = std::fs::metadata(path).ok();
    if existing.as_ref().is_some_and(|m| !m.is_file()) {
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .map_err(|e| io_error("open", path, e))?;
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?)
                .await
                .map_err(|e| io_error("write", path, e))?;
        }
        return out.flush().await.map_err(|e| io_error("write", path, e));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tarvault-get-");
    // The mode given at creation is filtered by the umask, as any create's is.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder
        .tempfile_in(dir)
        .map_err(|e| match std::fs::metadata(dir) {
            // A directory that is not there: named by the file asked for, not by the temp file's
            // random name, which tempfile's error adds to it.
            Err(missing) => io_error("create", path, missing),
            Ok(_) => io_error("create temp in", dir, e),
        })?;
    let (file, tmp_path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    while let Some(chunk) = stream.next().await {
        // On error `tmp_path` is dropped, which deletes the temp file.
        let chunk = chunk?;
        file.write_all(&chunk)
            .await
            .map_err(|e| io_error("write", path, e))?;
    }
    file.flush().await.map_err(|e| io_error("write", path, e))?;
    // Set-id bits are not carried over: the kernel clears them when a file's bytes change.
    #[cfg(unix)]
    if let Some(old) = existing {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(old.permissions().mode() & 0o777);
        file.set_permissions(mode)
            .await
            .map_err(|e| io_error("set permissions of", path, e))?;
    }
    // Its bytes reach the disk before its name does: after a crash the file is either not there
    // or whole, never the empty or partial file a rename ahead of the data could leave.
    file.sync_all()
        .await
        .map_err(|e| io_error("sync", path, e))?;
    drop(file);
    tmp_path
        .persist(path)
        .map_err(|e| io_error("rename to", path, e.error))?;
    Ok(())
}

/// The path `path` names once its symbolic links are followed (at most 40, as the kernel
/// follows): the file a write through it would reach, whether or not it exists yet. A path that
/// is not a link, or one that cannot be read, is itself.
fn through_links(path: &Path) -> PathBuf {
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            break;
        }
        let Ok(target) = std::fs::read_link(&at) else {
            break;
        };
        // A relative target is relative to the link's own directory.
        at = match at.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    at
}

/// An output file's failure: an I/O error naming the file (not a put's "reading … failed").
fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source: e,
    }
}

pub(crate) async fn has(store: &Store, text: &str) -> Result<u8, Error> {
    let addr = address(text)?;
    if store.contains(&addr).await? {
        Ok(exit::OK)
    } else {
        eprintln!("tarvault: {}", not_found(text));
        Ok(exit::NOT_FOUND)
    }
}

pub(crate) async fn stat(store: &Store, text: &str, json: bool) -> Result<u8, Error> {
    let info = store.stat(&address(text)?).await.map_err(as_typed(text))?;
    if json {
        json_line(&info);
    } else {
        outln!("integrity {}", info.integrity());
        if let Some(d) = &info.digests {
            outln!("shasum    {}", d.shasum());
            outln!("blake3    {}", d.blake3_hex());
        }
        outln!("size      {}", info.size);
    }
    Ok(exit::OK)
}

/// Lines go through one buffer (stdout is line-buffered: a write per blob would cost more than
/// finding the blob).
pub(crate) async fn ls(store: &Store, json: bool) -> Result<u8, Error> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    // The plain form prints no digests: from an object store's listing alone, no `HEAD` each.
    let mut all = if json {
        store.list_info()
    } else {
        store.list_meta()
    };
    while let Some(info) = all.next().await {
        let info = info?;
        if json {
            // serde_json hands an I/O failure back as the io::Error it was (a BrokenPipe stays one).
            serde_json::to_writer(&mut out, &info).map_err(|e| stdout_failed(e.into()))?;
            out.write_all(b"\n").map_err(stdout_failed)?;
        } else {
            writeln!(out, "{} {}", info.integrity(), info.size).map_err(stdout_failed)?;
        }
    }
    out.flush().map_err(stdout_failed)?;
    Ok(exit::OK)
}

pub(crate) async fn rm(store: &Store, text: &str) -> Result<u8, Error> {
    let addr = address(text)?;
    if store.delete(&addr).await.map_err(as_typed(text))? {
        Ok(exit::OK)
    } else {
        Err(not_found(text))
    }
}

pub(crate) async fn fsck(
    store: &Store,
    json: bool,
    quarantine: bool,
    dangling_aliases: tarvault::backend::Dangling,
) -> Result<u8, Error> {
    let report = store
        .fsck(&FsckOptions {
            quarantine,
            dangling_aliases,
            ..FsckOptions::default()
        })
        .await?;
    if json {
        json_line(&report);
    } else {
        corrupt_lines(&report.corrupt);
        misplaced_lines(&report.misplaced);
        outln!(
            "checked {} blobs ({} bytes): {} ok, {} corrupt; {} temp files removed",
            report.checked,
            report.bytes,
            report.ok,
            report.corrupt.total(),
            report.temp_removed
        );
        let ix = &report.index;
        if ix.added + ix.corrected + ix.removed > 0 {
            outln!(
                "index repaired: {} blobs without an entry added, {} wrong entries corrected, {} entries without a blob removed",
                ix.added, ix.corrected, ix.removed
            );
        }
        if ix.listed > 0 {
            outln!(
                "index listed: {} entries, {} naming a missing blob ({} removed), {} unreadable (kept), {} too recent to check",
                ix.listed, ix.dangling, ix.removed, ix.unreadable, ix.recent
            );
        }
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::MISMATCH
    })
}
