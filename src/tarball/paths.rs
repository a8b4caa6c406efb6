//! Path and link safety rules.
//!
//! npm (pacote → node-tar) extracts with `strip: 1`: the first path segment
//! of every entry (and of every hard-link target) is dropped and the rest is
//! written under the package directory. These rules make sure nothing a
//! tarball contains can end up outside that directory on any platform,
//! whatever order the entries come in.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use super::error::TarballError;
use super::tar::{Entry, EntryKind};

/// Longest path accepted. Linux's PATH_MAX; nothing longer can be extracted
/// anyway, and it bounds what the link tracker hashes.
const MAX_PATH: usize = 4096;

/// Cap on path prefixes the link tracker remembers, so that a tarball of
/// 100k deeply nested links cannot make it grow without bound.
const MAX_TRACKED: usize = 1_000_000;

/// `path` cut to a length fit for a warning (paths can be up to 1 MiB long
/// in pax records, and warnings are kept in the report).
pub(crate) fn short(path: &str) -> &str {
    const MAX: usize = 256;
    if path.len() <= MAX {
        return path;
    }
    let mut end = MAX;
    while !path.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    path.get(..end).unwrap_or_default()
}

/// `text` (a path or a link target) as an error keeps it: whole up to [`MAX_PATH`], the longest
/// accepted; past it (a pax record's may be up to 1 MiB, refused for that) its first bytes, as
/// [`short`] cuts them, and `…`, so that one hostile header does not make a megabyte error line.
fn as_kept(text: &str) -> String {
    if text.len() > MAX_PATH {
        format!("{}…", short(text))
    } else {
        text.to_owned()
    }
}

/// First path segment: the top-level folder npm strips.
pub(crate) fn first_segment(path: &str) -> &str {
    path.split('/').next().unwrap_or_default()
}

/// Segments below the top-level folder, without empty and `.` segments
/// (which node-tar's path resolution collapses).
pub(crate) fn below_root(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .skip(1)
        .filter(|c| !c.is_empty() && *c != ".")
}

/// `C:`-style drive prefix: makes a path absolute (or drive-relative) on
/// Windows even without a leading separator.
fn has_drive(segment: &str) -> bool {
    let b = segment.as_bytes();
    matches!(b, [letter, b':', ..] if letter.is_ascii_alphabetic())
}

/// Why a path (entry or link target) is unsafe, if it is. Drive letters are
/// checked in the first two segments: those are the ones that can become a
/// path root before or after npm strips the top-level folder.
fn unsafe_reason(path: &str) -> Option<&'static str> {
    if path.len() > MAX_PATH {
        Some("longer than 4096 bytes")
    } else if path.contains('\0') {
        Some("contains a NUL byte")
    } else if path.contains('\\') {
        Some("contains a backslash (a separator on Windows)")
    } else if path.starts_with('/') {
        Some("is absolute")
    } else if path.split('/').any(|c| c == "..") {
        Some("contains a '..' component")
    } else if path.split('/').take(2).any(has_drive) {
        Some("starts with a Windows drive letter")
    } else {
        None
    }
}

/// Rejects entry paths that could be written outside the package directory.
pub(crate) fn check_entry_path(path: &str) -> Result<(), TarballError> {
    match unsafe_reason(path) {
        Some(reason) => Err(TarballError::PathTraversal {
            path: as_kept(path),
            reason,
        }),
        None => Ok(()),
    }
}

/// Tracks symlinks so that no entry or link is resolved *through* one.
///
/// Checking each link target lexically is not enough: with `a -> .` and
/// `a/b/l -> ../..`, `l` looks like it points at the package root but really
/// points at its parent. So, in any order: no entry may live under a
/// symlink, and no link target may pass through a symlink. Paths are compared
/// below their top-level folder (npm strips it from every entry, so `a/x` and
/// `b/x` are one place), case-insensitively (macOS and Windows file systems
/// are), as 64-bit hashes to keep memory small; a collision can only cause a
/// false rejection.
#[derive(Debug, Default)]
pub(crate) struct LinkTracker {
    /// Symlink paths.
    symlinks: HashSet<u64>,
    /// Directories that some link target passes through.
    through: HashSet<u64>,
}

fn key<'a>(segments: impl Iterator<Item = &'a str>) -> u64 {
    let mut h = DefaultHasher::new();
    for s in segments {
        s.to_lowercase().hash(&mut h);
    }
    h.finish()
}

impl LinkTracker {
    /// Applies the link rules to one entry.
    pub(crate) fn check(&mut self, entry: &Entry<'_>) -> Result<(), TarballError> {
        let is_link = matches!(entry.kind, EntryKind::Symlink | EntryKind::HardLink);
        if self.symlinks.is_empty() && !is_link {
            // The common case: no symlinks yet, nothing to resolve.
            return Ok(());
        }
        let segments: Vec<&str> = below_root(entry.path).collect();
        if !self.symlinks.is_empty() {
            // The root itself, then each parent directory below it.
            for depth in 0..segments.len() {
                let prefix = segments.get(..depth).unwrap_or_default();
                if self.symlinks.contains(&key(prefix.iter().copied())) {
                    return Err(escape(entry, "entry is inside a symlinked directory"));
                }
            }
        }
        match entry.kind {
            EntryKind::Symlink => self.symlink(entry, &segments),
            EntryKind::HardLink => self.hard_link(entry),
            _ => Ok(()),
        }
    }

    fn remember(&mut self, set: Set, k: u64) -> Result<(), TarballError> {
        if self.symlinks.len() + self.through.len() >= MAX_TRACKED {
            return Err(TarballError::TooManyEntries {
                path: String::from("(link tracking)"),
                count: MAX_TRACKED as u64,
                limit: MAX_TRACKED as u64,
            });
        }
        match set {
            Set::Symlinks => self.symlinks.insert(k),
            Set::Through => self.through.insert(k),
        };
        Ok(())
    }

    fn symlink(&mut self, entry: &Entry<'_>, segments: &[&str]) -> Result<(), TarballError> {
        let target = entry.link;
        if target.is_empty() {
            return Err(escape(entry, "empty symlink target"));
        }
        if let Some(reason) = unsafe_target(target) {
            return Err(escape(entry, reason));
        }
        let Some((_, parent)) = segments.split_last() else {
            return Err(escape(entry, "symlink replaces the package root"));
        };
        let mut stack: Vec<&str> = parent.to_vec();
        let parts: Vec<&str> = target
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        for (i, part) in parts.iter().enumerate() {
            if *part == ".." {
                if stack.pop().is_none() {
                    return Err(escape(
                        entry,
                        "symlink target resolves above the package root",
                    ));
                }
                continue;
            }
            stack.push(part);
            if i + 1 < parts.len() {
                let k = key(stack.iter().copied());
                if self.symlinks.contains(&k) {
                    return Err(escape(
                        entry,
                        "symlink target passes through another symlink",
                    ));
                }
                self.remember(Set::Through, k)?;
            }
        }
        let own = key(segments.iter().copied());
        if self.through.contains(&own) {
            return Err(escape(
                entry,
                "an earlier link target passes through this symlink",
            ));
        }
        self.remember(Set::Symlinks, own)
    }

    /// Hard-link targets are archive-relative and get the same `strip: 1`
    /// as entry paths, so they must name something below the link's own
    /// top-level folder, without `..` (node-tar strips before resolving).
    fn hard_link(&mut self, entry: &Entry<'_>) -> Result<(), TarballError> {
        let target = entry.link;
        if let Some(reason) = unsafe_target(target) {
            return Err(escape(entry, reason));
        }
        if target.split('/').any(|c| c == "..") {
            return Err(escape(entry, "hard link target contains '..'"));
        }
        let root = first_segment(target);
        if root != first_segment(entry.path) {
            return Err(escape(
                entry,
                "hard link target is outside the package root",
            ));
        }
        let segments: Vec<&str> = below_root(target).collect();
        if segments.is_empty() {
            return Err(escape(entry, "hard link target is the package root"));
        }
        for depth in 0..segments.len() {
            let k = key(segments.get(..depth).unwrap_or_default().iter().copied());
            if self.symlinks.contains(&k) {
                return Err(escape(entry, "hard link target passes through a symlink"));
            }
            self.remember(Set::Through, k)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Set {
    Symlinks,
    Through,
}

fn unsafe_target(target: &str) -> Option<&'static str> {
    if target.is_empty() {
        Some("empty link target")
    } else if target.starts_with('/') {
        Some("absolute link target")
    } else if target.contains('\\') {
        Some("link target contains a backslash")
    } else if target.contains('\0') {
        Some("link target contains a NUL byte")
    } else if target.len() > MAX_PATH {
        Some("link target longer than 4096 bytes")
    } else if target.split('/').take(2).any(has_drive) {
        Some("link target starts with a Windows drive letter")
    } else {
        None
    }
}

fn escape(entry: &Entry<'_>, reason: &'static str) -> TarballError {
    TarballError::LinkEscape {
        path: as_kept(entry.path),
        target: as_kept(entry.link),
        reason,
    }
}
