//! The process's open-file limit (`RLIMIT_NOFILE`), read and raised in one place:
//! [`super::serve_with`] fits its connection cap under the limit, and a program raises the limit
//! before it serves (`tarvault serve` does).

/// Raises the soft open-file limit to the hard one, as Go programs do at start, and returns the
/// soft limit then in force (`None`: unlimited, or not known on this system). The soft default is
/// often 1024, which would lower [`ServeOptions::max_connections`](super::ServeOptions) to 512,
/// while the hard limit is what the administrator allowed. The limit is the whole process's, so
/// the library never raises it on its own: a program that serves calls this first. A failure
/// leaves the limit, and so the cap, lower (the server warns when it lowers the cap).
pub fn raise_open_file_limit() -> Option<u64> {
    soft_limit(true)
}

/// The soft open-file limit (`None`: unlimited, or not known on this system).
pub(super) fn open_file_limit() -> Option<u64> {
    soft_limit(false)
}

/// The soft open-file limit, first raised to the hard limit if `raise` and the hard limit is
/// finite (the kernel refuses an unlimited soft limit on open files).
#[cfg(unix)]
fn soft_limit(raise: bool) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if raise && limit.rlim_cur < limit.rlim_max && limit.rlim_max != libc::RLIM_INFINITY {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` through a valid pointer and writes nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            let error = std::io::Error::last_os_error();
            tracing::debug!(soft = limit.rlim_cur, %error, "open-file limit not raised");
        }
    }
    // `rlim_t` is u64 here but not on every unix.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(soft)
}

#[cfg(not(unix))]
fn soft_limit(_raise: bool) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_leaves_the_soft_limit_where_it_reads_and_no_lower() {
        let before = open_file_limit();
        let raised = raise_open_file_limit();
        assert_eq!(open_file_limit(), raised);
        if let (Some(before), Some(raised)) = (before, raised) {
            assert!(raised >= before, "{raised} < {before}");
        }
    }
}
