//! Blob files outside the place their name gives them (`sha512/00/00/<hex of another shard>`, an
//! uppercase name): moved by hand, or restored from a backup into the wrong directory. The walk
//! does not list them (nothing could read them by their key), so fsck looks for them here and puts
//! back each one whose bytes verify; bytes are never deleted.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use super::durable;
use super::walk::is_blob_name;
use super::FsInner;
use crate::backend::{BlobKey, MisplacedBlob};
use crate::{Error, Result};

impl FsInner {
    /// Finds every misplaced blob file and moves those whose bytes match their name to their
    /// place, unless a file is there already (create-only: a copy in place is kept, and so is
    /// the misplaced one). Files whose bytes do not match are left where they are, reported.
    pub(super) fn restore_misplaced(&self) -> Result<Vec<MisplacedBlob>> {
        let blobs = self.layout.blobs();
        let mut found = Vec::new();
        for path in misplaced_files(&blobs)? {
            let Some(key) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| BlobKey::from_hex(&n.to_ascii_lowercase()).ok())
            else {
                continue;
            };
            let (restored, note) = self.put_back(&path, &key, &blobs)?;
            tracing::warn!(file = %path.display(), blob = %key, restored, note, "misplaced blob file");
            found.push(MisplacedBlob {
                path: path.display().to_string(),
                address: key.to_string(),
                restored,
                note,
            });
        }
        Ok(found)
    }

    /// Moves one misplaced file to its place if its bytes verify; what happened, and why.
    fn put_back(&self, path: &Path, key: &BlobKey, blobs: &Path) -> Result<(bool, String)> {
        if !hashes_to(path, key).map_err(|e| Error::io("read", path, e))? {
            return Ok((
                false,
                "left in place: its bytes do not match its name".into(),
            ));
        }
        let target = self.layout.blob(key);
        let dir = target.parent().unwrap_or(blobs).to_path_buf();
        durable::create_dirs(&dir, blobs, self.fsync)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        if !durable::rename_noclobber(path, &target).map_err(|e| Error::io("move", path, e))? {
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

/// Files at `sha512/*/*/` named like a blob (any case) but not at their place.
fn misplaced_files(blobs: &Path) -> Result<Vec<PathBuf>> {
    let entries = |dir: &Path| -> Result<Vec<std::fs::DirEntry>> {
        match std::fs::read_dir(dir) {
            Ok(rd) => Ok(rd.flatten().collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("read directory", dir, e)),
        }
    };
    let is_dir = |e: &std::fs::DirEntry| e.file_type().is_ok_and(|t| t.is_dir());
    let mut out = Vec::new();
    for a in entries(blobs)?.into_iter().filter(is_dir) {
        for b in entries(&a.path())?.into_iter().filter(is_dir) {
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
                    out.push(f.path());
                }
            }
        }
    }
    Ok(out)
}

/// Whether the file's bytes hash to `key`.
fn hashes_to(path: &Path, key: &BlobKey) -> std::io::Result<bool> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize()[..] == key.as_bytes()[..])
}
