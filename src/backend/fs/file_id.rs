//! Which file a name or a descriptor is, whatever names it has now: its (device, inode).
//!
//! A name can be given to another file between two steps (a rename over it): a quarantine checks
//! that the file it moved is the one it hashed, and an index a process holds open checks that the
//! file at its path is still the one it opened (`fsck` may have set it aside).

use std::fs::Metadata;

/// The (device, inode) of the file `meta` describes.
#[cfg(unix)]
pub(super) fn of(meta: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

/// Elsewhere files are not told apart: the checks that compare them pass as if nothing changed.
#[cfg(not(unix))]
pub(super) fn of(_meta: &Metadata) -> Option<(u64, u64)> {
    None
}
