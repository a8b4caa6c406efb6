//! The temp directory that one user's processes on this host share by name:
//! `$TMPDIR/tarvault-<uid>`.
//!
//! Some state is found by a name that every process computes alike: the fingerprint tables of
//! an upgrading remote store's old alias log (and the lock on building them), and the mapping's
//! database where none can be made beside the mapping. Kept in the temp directory itself, any
//! local user could make such a file first and every process would trust it: a mapping database
//! that sends a package's tarball URL to another package's blob, a table that hides aliases, a
//! lock held forever. So they live in a directory of this user's own, made with mode 0700 and
//! used only while it is a directory (not a symlink) that this user owns and no one else may
//! enter. The temp directory's sticky bit keeps another user from replacing it once checked.

use std::io;
use std::path::PathBuf;

/// This user's directory in the temp directory, made if missing; an error saying what is wrong
/// with it where it cannot be trusted. Blocking (a `mkdir` and a `stat`).
pub(crate) fn dir() -> io::Result<PathBuf> {
    in_temp(std::env::temp_dir())
}

#[cfg(unix)]
fn in_temp(temp: PathBuf) -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = temp.join(format!("tarvault-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not this user's private directory ({why}); remove it, or point TMPDIR \
                 elsewhere",
                dir.display()
            ),
        ))
    };
    if !meta.file_type().is_dir() {
        return refuse("not a directory".into());
    }
    if meta.uid() != uid {
        return refuse(format!("owned by uid {}, not {uid}", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return refuse(format!(
            "mode {:o}, open to other users",
            meta.mode() & 0o777
        ));
    }
    Ok(dir)
}

#[cfg(not(unix))]
fn in_temp(temp: PathBuf) -> io::Result<PathBuf> {
    let dir = temp.join("tarvault");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn ours(temp: &std::path::Path) -> PathBuf {
        // SAFETY: as above.
        temp.join(format!("tarvault-{}", unsafe { libc::geteuid() }))
    }

    #[test]
    fn the_directory_is_made_private_and_used_again() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = in_temp(temp.path().to_path_buf()).expect("made");
        assert_eq!(dir, ours(temp.path()));
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(in_temp(temp.path().to_path_buf()).expect("again"), dir);
    }

    /// A name another user (or anyone) could have made first is refused, not trusted: a
    /// directory others may enter, a symlink to elsewhere, a file.
    #[test]
    fn a_directory_open_to_others_or_a_link_is_refused() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = ours(temp.path());
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let Err(e) = in_temp(temp.path().to_path_buf()) else {
            panic!("a directory open to all was used");
        };
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("mode 777"), "{e}");
        std::fs::remove_dir(&dir).expect("rmdir");

        let elsewhere = temp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::os::unix::fs::symlink(&elsewhere, &dir).expect("symlink");
        let Err(e) = in_temp(temp.path().to_path_buf()) else {
            panic!("a symlink was followed");
        };
        assert!(e.to_string().contains("not a directory"), "{e}");
        std::fs::remove_file(&dir).expect("unlink");

        std::fs::write(&dir, b"").expect("file");
        assert!(
            in_temp(temp.path().to_path_buf()).is_err(),
            "a file was used"
        );
    }
}
