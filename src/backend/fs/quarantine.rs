//! Taking a blob found corrupt out of service: its file moves to
//! `quarantine/<hex>.<secs>.<pid>.<n>`, where its bytes are kept for study, and its record goes.

use std::fs::File;
use std::io::Read;

use super::{durable, file_id, FsInner};
use crate::backend::BlobKey;
use crate::integrity::{Algorithm, MultiHasher};
use crate::{Error, Result};

impl FsInner {
    /// Quarantines `key`'s file unless the copy now at its address verifies. The verdict of
    /// corrupt was given on a copy read a while before (fsck's scan, a cache tier's read); a put
    /// of the right bytes may since have written its verified copy over the damaged one (see
    /// `publish_one`) and reported it stored, and moving that copy away would lose a blob whose
    /// put succeeded. So the file is hashed first, through the descriptor it is then identified
    /// by: a file that verifies stays, and a file moved that is not the one hashed (replaced
    /// between the two) goes back. A file that cannot be read is quarantined, as before.
    pub(super) fn quarantine_blob(&self, key: &BlobKey) -> Result<bool> {
        let from = self.layout.blob(key);
        let checked = match File::open(&from) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(blob = %from.display(), error = %e, "cannot open a corrupt blob to check it again; quarantining it");
                None
            }
        };
        let hashed = match checked {
            Some(mut file) => match hashes_to(&mut file, key) {
                Ok(true) => {
                    tracing::info!(blob = %from.display(), "the copy at the address verifies (repaired since it was found corrupt): not quarantined");
                    return Ok(false);
                }
                Ok(false) => identity(&file),
                Err(e) => {
                    tracing::warn!(blob = %from.display(), error = %e, "cannot read a corrupt blob again; quarantining it");
                    identity(&file)
                }
            },
            None => None,
        };
        let to = self.layout.new_quarantine(key);
        let moved = match std::fs::rename(&from, &to) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io_move("quarantine", &from, &to, e)),
        };
        if moved && hashed.is_some() && identity_at(&to) != hashed {
            // Put in place between the check and the move: a put's verified copy.
            if durable::rename_noclobber(&to, &from)
                .map_err(|e| Error::io_move("restore", &to, &from, e))?
            {
                tracing::info!(blob = %from.display(), "a copy put in place while it was checked went back: not quarantined");
                return Ok(false);
            }
        }
        self.forget(key)?;
        Ok(moved)
    }
}

/// Whether the file's bytes hash to `key`.
pub(super) fn hashes_to(file: &mut File, key: &BlobKey) -> std::io::Result<bool> {
    let mut hasher = MultiHasher::new(&[Algorithm::Sha512]);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .get(Algorithm::Sha512)
        .is_some_and(|h| h.digest() == key.as_bytes()))
}

/// Which file `file` is (see [`file_id`]).
fn identity(file: &File) -> Option<(u64, u64)> {
    file.metadata().ok().as_ref().and_then(file_id::of)
}

/// Which file is at `path` itself (a symlink is not followed).
fn identity_at(path: &std::path::Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .as_ref()
        .and_then(file_id::of)
}
