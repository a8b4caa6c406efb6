//! Blob files outside the place their name gives them (`sha512/00/00/<hex of another shard>`, an
//! uppercase name): moved by hand, or restored from a backup into the wrong directory. The walk
//! does not list them (nothing could read them by their key), so fsck looks for them here and puts
//! back each one whose bytes verify; bytes are never deleted.

use std::path::{Path, PathBuf};

use super::durable;
use super::walk::is_blob_name;
use super::FsInner;
use crate::backend::{BlobKey, Misplaced, MisplacedBlob};
use crate::{Error, Result};

impl FsInner {
    /// Finds every misplaced blob file and moves those whose bytes match their name to their
    /// place, unless a file is there already (create-only: a copy in place is kept, and so is
    /// the misplaced one). Files whose bytes do not match are left where they are, reported.
    /// Each file is dealt with as the walk finds it and logged; the report counts them all and
    /// keeps the first (a store whose files were all moved has tens of millions).
    pub(super) fn restore_misplaced(&self) -> Result<Misplaced> {
        let blobs = self.layout.blobs();
        let mut found = Misplaced::default();
        for_each_misplaced(&blobs, |path| {
            let Some(key) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| BlobKey::from_hex(&n.to_ascii_lowercase()).ok())
            else {
                return Ok(());
            };
            let (restored, note) = self.put_back(&path, &key, &blobs)?;
            tracing::warn!(file = %path.display(), blob = %key, restored, note, "misplaced blob file");
            found.push(MisplacedBlob {
                path: path.display().to_string(),
                address: key.to_string(),
                restored,
                note,
            });
            Ok(())
        })?;
        Ok(found)
    }

    /// Moves one misplaced file to its place if its bytes verify; what happened, and why.
    fn put_back(&self, path: &Path, key: &BlobKey, blobs: &Path) -> Result<(bool, String)> {
        let hashed =
            std::fs::File::open(path).and_then(|mut f| super::quarantine::hashes_to(&mut f, key));
        if !hashed.map_err(|e| Error::io("read", path, e))? {
            return Ok((
                false,
                "left in place: its bytes do not match its name".into(),
            ));
        }
        let target = self.layout.blob(key);
        let dir = target.parent().unwrap_or(blobs).to_path_buf();
        durable::create_dirs(&dir, blobs, self.fsync)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        if !durable::rename_noclobber(path, &target)
            .map_err(|e| Error::io_move("move", path, &target, e))?
        {
            return Ok((false, format!("kept: {} exists", target.display())));
        }
        if self.fsync {
            for d in [Some(dir.as_path()), path.parent()].into_iter().flatten() {
                durable::sync_dir(d).map_err(|e| Error::io("fsync directory", d, e))?;
            }
        }
        Ok((true, format!("moved to {}", target.display())))
    }
}

/// Calls `each` with every file at `sha512/*/*/` named like a blob (any case) but not at its place,
/// as the walk finds it: nothing is collected. A file `each` moves to its place may be met again
/// in a directory not walked yet, where it is at its place and passed over.
fn for_each_misplaced(blobs: &Path, mut each: impl FnMut(PathBuf) -> Result<()>) -> Result<()> {
    let is_dir = |e: &std::fs::DirEntry| e.file_type().is_ok_and(|t| t.is_dir());
    for a in entries(blobs)?.filter(is_dir) {
        for b in entries(&a.path())?.filter(is_dir) {
            let shard = format!(
                "{}{}",
                a.file_name().to_string_lossy(),
                b.file_name().to_string_lossy()
            );
            for f in entries(&b.path())? {
                let name = f.file_name();
                let Some(name) = name.to_str() else { continue };
                let blob_like = name.len() == 128 && name.bytes().all(|c| c.is_ascii_hexdigit());
                let placed = is_blob_name(name) && name[..4] == shard;
                if blob_like && !placed && f.file_type().is_ok_and(|t| t.is_file()) {
                    each(f.path())?;
                }
            }
        }
    }
    Ok(())
}

/// The entries of `dir`, read as they are iterated (none if it does not exist; entries that
/// cannot be read are passed over).
fn entries(dir: &Path) -> Result<impl Iterator<Item = std::fs::DirEntry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(rd) => Some(rd),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    Ok(read.into_iter().flatten().flatten())
}
