//! Every error the public API gives states each cause once: a link's text does not repeat its
//! `source()`'s text (a chain printer such as anyhow's `{:#}` would print it twice), the cause
//! stays reachable by downcasting, and `Error::report` prints each link of the chain once.

use std::error::Error as StdError;
use std::sync::Arc;

use bytes::Bytes;
use tarvault::tarball::{inspect_stream, Policy, TarballError, TarballErrorKind};
use tarvault::{Error, ErrorKind, ErrorReport, PutOptions, Store};

/// The chain from `e` down, as the texts of its links.
fn links(e: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push(c.to_string());
        cause = c.source();
    }
    out
}

/// No link contains its source's text, and the report shows every link's text exactly once.
/// Returns the report.
fn assert_each_cause_once(e: &(dyn StdError + 'static)) -> String {
    let texts = links(e);
    assert!(texts.len() > 1, "{texts:?}: expected a source");
    for pair in texts.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]),
            "{:?} repeats its source {:?}",
            pair[0],
            pair[1]
        );
    }
    let report = ErrorReport::new(e).to_string();
    for text in &texts {
        assert_eq!(
            report.matches(text.as_str()).count(),
            1,
            "{text:?} in {report:?}"
        );
    }
    assert_eq!(report, texts.join(": "));
    report
}

/// The first [`std::io::Error`] in the chain below `e`.
fn io_cause<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a std::io::Error> {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = c.source();
    }
    None
}

/// The error of a `put_file` of a directory (which opens, and fails on its first read).
async fn put_a_directory(dir: &std::path::Path) -> Error {
    Store::memory()
        .put_file(dir, &PutOptions::default())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn put_file_of_a_directory_names_the_path_and_keeps_the_io_error_as_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = put_a_directory(dir.path()).await;
    assert_eq!(err.kind(), ErrorKind::Io, "{}", err.report());
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let report = assert_each_cause_once(&err);
    assert!(report.contains(&*dir.path().to_string_lossy()), "{report}");
    let io = io_cause(&err).expect("io source");
    assert_eq!(io.raw_os_error(), Some(libc::EISDIR), "{report}");
}

#[tokio::test]
async fn put_file_of_a_missing_path_is_not_found_underneath() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.tgz");
    let err = Store::memory()
        .put_file(&missing, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let report = assert_each_cause_once(&err);
    assert!(report.contains("missing.tgz"), "{report}");
    let io = io_cause(&err).expect("io source");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound, "{report}");
}

#[tokio::test]
async fn a_rejected_tarball_keeps_the_rule_as_source() {
    let err = Store::memory()
        .put_bytes(
            Bytes::from_static(b"not a gzip stream at all"),
            &PutOptions::default().tarball().label("bad.tgz"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.tarball_kind(), Some(TarballErrorKind::BadGzip));
    assert_eq!(err.to_string(), "rejected bad.tgz");
    let report = assert_each_cause_once(&err);
    let rule = err.source().expect("source");
    assert!(rule.downcast_ref::<TarballError>().is_some(), "{report}");
    assert!(
        report.starts_with("rejected bad.tgz: malformed gzip"),
        "{report}"
    );
}

#[tokio::test]
async fn a_failing_input_stream_keeps_its_error_as_source() {
    let input = futures::stream::iter([
        Ok(Bytes::from_static(b"some bytes")),
        Err(std::io::Error::other("the upstream hung up")),
    ]);
    let err = Store::memory()
        .put(input, &PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");
    let report = assert_each_cause_once(&err);
    assert_eq!(report, "reading input stream failed: the upstream hung up");
}

/// A put that has a label names it when its stream fails: among a batch's or a migration's
/// many puts, "reading input failed" would not say which one.
#[tokio::test]
async fn a_failing_input_stream_is_named_by_the_puts_label() {
    let input = futures::stream::iter([
        Ok(Bytes::from_static(b"some bytes")),
        Err(std::io::Error::other("the upstream hung up")),
    ]);
    let err = Store::memory()
        .put(input, &PutOptions::default().label("left-pad@1.3.0"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    match &err {
        Error::Input { what, source } => {
            assert_eq!(what, "left-pad@1.3.0");
            assert_eq!(source.to_string(), "the upstream hung up");
        }
        other => panic!("not an input error: {other:?}"),
    }
    let report = assert_each_cause_once(&err);
    assert_eq!(
        report,
        "reading left-pad@1.3.0 failed: the upstream hung up"
    );
}

#[tokio::test]
async fn a_configuration_file_that_does_not_parse_is_named_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("store.toml");
    std::fs::write(&file, "type = [unclosed\n").expect("write");
    let err = Store::open(&format!("config:{}", file.display()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{}", err.report());
    assert!(matches!(err, Error::ConfigInvalid { .. }), "{err:?}");
    let report = assert_each_cause_once(&err);
    assert!(report.contains(&*file.to_string_lossy()), "{report}");

    let missing = dir.path().join("missing.toml");
    let err = Store::open(&format!("config:{}", missing.display()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{}", err.report());
    assert_each_cause_once(&err);
    let io = io_cause(&err).expect("io source");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn a_tarball_that_cannot_be_read_keeps_the_io_error_as_source() {
    let input = futures::stream::iter([Err::<Bytes, _>(std::io::Error::other("disk gone"))]);
    let err = inspect_stream(input, Policy::default()).await.unwrap_err();
    assert_eq!(err.kind(), TarballErrorKind::Io);
    let report = assert_each_cause_once(&err);
    assert_eq!(report, "I/O error while reading the tarball: disk gone");
}

#[tokio::test]
async fn a_panicked_task_and_a_size_that_does_not_parse() {
    let join = tokio::spawn(async { panic!("hashing thread fell over") })
        .await
        .unwrap_err();
    let err = Error::Task(join);
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_each_cause_once(&err);

    let err = Error::from(tarvault::units::parse_size("12 parsecs").unwrap_err());
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let report = assert_each_cause_once(&err);
    assert!(
        report.starts_with("invalid input: bad size \"12 parsecs\""),
        "{report}"
    );
}

/// A shared error prints, chains and classifies as the error it shares; wrapped in an
/// `io::Error` (as through an `AsyncRead`), the chain still says the cause once.
#[tokio::test]
async fn shared_and_io_wrapped_errors_say_the_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = put_a_directory(dir.path()).await;
    let alone = original.report().to_string();
    let shared = Error::Shared(Arc::new(original));
    assert_eq!(shared.kind(), ErrorKind::Io);
    assert_eq!(assert_each_cause_once(&shared), alone);

    let wrapped = shared.into_io();
    assert_eq!(ErrorReport::new(&wrapped).to_string(), alone);
    let back = Error::from_io(wrapped);
    assert_eq!(back.report().to_string(), alone);
}

/// An error of another crate: its text, and its source.
#[derive(Debug)]
struct Link(&'static str, Option<Box<Link>>);

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for Link {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.1.as_deref().map(|l| l as &(dyn StdError + 'static))
    }
}

/// Links from other crates that do not keep the rule are not printed twice by the report: one
/// that repeats its source, and a source that only puts a prefix on the link above it (as
/// rusqlite's error code does), which says nothing new.
#[test]
fn the_report_leaves_out_a_cause_already_said() {
    let repeats = Link("request failed: reset", Some(Box::new(Link("reset", None))));
    let err = Error::Backend {
        backend: "s3://b".into(),
        message: "get x".into(),
        source: Some(Box::new(repeats)),
    };
    assert_eq!(
        err.report().to_string(),
        "backend s3://b: get x: request failed: reset"
    );

    let coded = Link("Error code 26: file is not a database", None);
    let err = Error::Index {
        path: "i.sqlite".into(),
        message: "open".into(),
        source: Some(Box::new(Link(
            "file is not a database",
            Some(Box::new(coded)),
        ))),
    };
    assert_eq!(
        err.report().to_string(),
        "index i.sqlite: open: file is not a database"
    );
}
