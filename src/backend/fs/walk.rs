//! The walk over every blob file: `sha512/xx/yy/<hex>`, on one blocking thread, streamed.

use std::path::{Path, PathBuf};

use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::backend::BlobKey;
use crate::{Error, Result};

/// Items the walker hands over at once. One channel send per item cost a thread wake-up per blob,
/// more than finding and stat'ing the blob; a batch keeps the consumer busy between wake-ups.
const BATCH: usize = 512;
/// Batches the walker may run ahead of its consumer (memory stays at a few thousand items).
const AHEAD: usize = 4;

/// Walks `root` (`xx/yy/<hex>`) on a blocking thread, yielding what `each` makes of every
/// well-formed key (`None`: skip it). Only files at the place their name gives them are blobs:
/// a file in another shard, or named in uppercase, cannot be read, deleted or indexed by its key,
/// so listing it would offer a blob that `get` cannot find (fsck puts such files back, see
/// `misplaced.rs`). The walker starts on first poll, so this may be called
/// outside a runtime; it stays at most a few batches ahead of its consumer.
pub(super) fn walk<T, F>(root: PathBuf, each: F) -> BoxStream<'static, Result<T>>
where
    T: Send + 'static,
    F: Fn(BlobKey, &std::fs::DirEntry) -> Option<Result<T>> + Send + 'static,
{
    walk_dirs(root, move |files, out| {
        out.extend(files.iter().filter_map(|(key, entry)| each(*key, entry)));
    })
}

/// Like [`walk`], a leaf directory at a time: `each_dir` gets the well-formed keys of one
/// directory (blobs sharing their first two bytes) and pushes its items, so that it can look up
/// what it needs for the whole directory at once.
pub(super) fn walk_dirs<T, F>(root: PathBuf, each_dir: F) -> BoxStream<'static, Result<T>>
where
    T: Send + 'static,
    F: Fn(&[(BlobKey, std::fs::DirEntry)], &mut Vec<Result<T>>) + Send + 'static,
{
    stream::once(async move {
        let (tx, rx) = mpsc::channel::<Vec<Result<T>>>(AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut batch = Batch {
                tx,
                items: Vec::with_capacity(BATCH),
            };
            if walk_blobs(&root, &mut batch, each_dir) {
                batch.flush();
            }
        });
        stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|items| (stream::iter(items), rx))
        })
        .flatten()
    })
    .flatten()
    .boxed()
}

/// The walker's side of the channel: items collected until a batch is full.
struct Batch<T> {
    tx: mpsc::Sender<Vec<Result<T>>>,
    items: Vec<Result<T>>,
}

impl<T> Batch<T> {
    /// Sends the batch once it is full; false once the consumer has gone (the walk stops).
    fn ship_if_full(&mut self) -> bool {
        self.items.len() < BATCH || self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.items.is_empty() {
            return true;
        }
        let items = std::mem::replace(&mut self.items, Vec::with_capacity(BATCH));
        self.tx.blocking_send(items).is_ok()
    }
}

/// Returns false if the consumer went away.
fn walk_blobs<T, F>(root: &Path, out: &mut Batch<T>, each_dir: F) -> bool
where
    F: Fn(&[(BlobKey, std::fs::DirEntry)], &mut Vec<Result<T>>),
{
    let read = |dir: &Path, out: &mut Batch<T>| -> Option<Vec<std::fs::DirEntry>> {
        match std::fs::read_dir(dir) {
            Ok(rd) => Some(rd.flatten().collect()),
            Err(e) => {
                out.items.push(Err(Error::io("read directory", dir, e)));
                None
            }
        }
    };
    let Some(level1) = read(root, out) else {
        return true;
    };
    let mut files = Vec::new();
    for (a, a_name) in level1.iter().filter_map(shard) {
        let Some(level2) = read(&a.path(), out) else {
            continue;
        };
        for (b, b_name) in level2.iter().filter_map(shard) {
            let Some(entries) = read(&b.path(), out) else {
                continue;
            };
            files.clear();
            files.extend(entries.into_iter().filter_map(|f| {
                let name = f.file_name();
                let name = name.to_str()?;
                let placed = is_blob_name(name) && name[..2] == a_name && name[2..4] == b_name;
                Some((BlobKey::from_hex(name).ok().filter(|_| placed)?, f))
            }));
            each_dir(&files, &mut out.items);
            if !out.ship_if_full() {
                return false;
            }
        }
    }
    true
}

/// A shard directory (`ab`, two lowercase hex digits) and its name.
fn shard(e: &std::fs::DirEntry) -> Option<(&std::fs::DirEntry, String)> {
    let name = e.file_name().into_string().ok()?;
    let hex = name.len() == 2 && name.bytes().all(is_lower_hex);
    (hex && e.file_type().is_ok_and(|t| t.is_dir())).then_some((e, name))
}

/// Whether `name` is a blob file's name: a sha512 digest in lowercase hex.
pub(super) fn is_blob_name(name: &str) -> bool {
    name.len() == 128 && name.bytes().all(is_lower_hex)
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}
