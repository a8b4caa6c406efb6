//! Hostile tarballs: one row per rule, each asserting the exact error kind.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::tarbuild::*;
use flate2::write::GzEncoder;
use flate2::Compression;
use tarvault::tarball::{Inspector, Policy, Report, TarballError, TarballErrorKind as K};

fn inspect(bytes: &[u8], policy: &Policy, chunk: usize) -> Result<Report, TarballError> {
    let mut inspector = Inspector::new(policy.clone());
    for c in bytes.chunks(chunk.max(1)) {
        inspector.update(c)?;
    }
    inspector.finish()
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    policy: Policy,
    want: K,
}

fn case(name: &'static str, bytes: Vec<u8>, want: K) -> Case {
    Case {
        name,
        bytes,
        policy: Policy::default(),
        want,
    }
}

fn cases() -> Vec<Case> {
    let valid = package_with(|t| {
        t.file("package/index.js", &[b'x'; 3000]);
    });
    let mut cases = vec![
        // Paths.
        case(
            "dot-dot traversal",
            package_with(|t| {
                t.file("package/../../evil.js", b"x");
            }),
            K::PathTraversal,
        ),
        case(
            "absolute path",
            package_with(|t| {
                t.file("/etc/evil", b"x");
            }),
            K::PathTraversal,
        ),
        case(
            "backslash path",
            package_with(|t| {
                t.file("package\\..\\evil", b"x");
            }),
            K::PathTraversal,
        ),
        case(
            "drive letter",
            package_with(|t| {
                t.file("C:/evil", b"x");
            }),
            K::PathTraversal,
        ),
        case(
            "drive letter after strip",
            package_with(|t| {
                t.file("package/C:evil", b"x");
            }),
            K::PathTraversal,
        ),
        case(
            "pax path traversal",
            package_with(|t| {
                t.pax(&[("path", "package/../../evil")], false)
                    .file("package/innocent", b"x");
            }),
            K::PathTraversal,
        ),
        case(
            "GNU long name traversal",
            package_with(|t| {
                t.gnu_long(b'L', &format!("package/{}/../../../evil", "a".repeat(120)))
                    .file("package/short", b"x");
            }),
            K::PathTraversal,
        ),
        // Links.
        case(
            "symlink escaping root",
            package_with(|t| {
                t.symlink("package/lib/link", "../../../etc/passwd");
            }),
            K::LinkEscape,
        ),
        case(
            "absolute symlink",
            package_with(|t| {
                t.symlink("package/link", "/etc/passwd");
            }),
            K::LinkEscape,
        ),
        case(
            "hard link escaping",
            package_with(|t| {
                t.hardlink("package/hl", "package/../../etc/passwd");
            }),
            K::LinkEscape,
        ),
        case(
            "hard link to other root",
            package_with(|t| {
                t.hardlink("package/hl", "etc/passwd");
            }),
            K::LinkEscape,
        ),
        case(
            "entry through symlink",
            package_with(|t| {
                t.symlink("package/up", ".").file("package/up/x", b"x");
            }),
            K::LinkEscape,
        ),
        // npm strips every top-level folder, so `other/up` is the same place as `package/up`.
        case(
            "entry through symlink of another top-level folder",
            package_with(|t| {
                t.symlink("package/up", ".").file("other/up/x", b"x");
            }),
            K::LinkEscape,
        ),
        case(
            "symlink escaping through a symlink of another top-level folder",
            package_with(|t| {
                t.symlink("package/a/b", "..")
                    .symlink("other/a/b/c", "../../etc");
            }),
            K::LinkEscape,
        ),
        case(
            "symlink chain",
            package_with(|t| {
                t.symlink("package/a", ".").symlink("package/b", "a/..");
            }),
            K::LinkEscape,
        ),
        case(
            "pax linkpath escaping",
            package_with(|t| {
                t.pax(&[("linkpath", "../../../../etc")], false)
                    .symlink("package/l", "ok");
            }),
            K::LinkEscape,
        ),
        // A pax size pending when a GNU long name comes: node-tar 7 (npm 10's) reads the long
        // name's body by its own header (one block), older ones by the pax size (two), so the
        // second block is a header to one (a symlink out of the package) and a name to the other.
        case(
            "pax size before a GNU long name",
            package_with(|t| {
                let mut body = b"package/x\0".to_vec();
                body.resize(BLOCK, 0);
                body.extend_from_slice(&header("package/s", b'2', 0, "../../../../etc/passwd"));
                t.pax(&[("size", "1024")], false)
                    .raw(header("././@LongLink", b'L', 10, ""), &body)
                    .file("package/real.js", b"")
                    .raw([0; BLOCK], &[0; 2 * BLOCK]);
            }),
            K::BadTar,
        ),
        // After the gzip stream, Node's zlib (so npm's install) ignores bytes that start with a
        // zero byte, and fails on any others: "incorrect header check", "unexpected end of file".
        case(
            "bytes after the gzip stream",
            {
                let mut bytes = package_with(|_| {});
                bytes.extend_from_slice(b"not gzip");
                bytes
            },
            K::BadGzip,
        ),
        case(
            "a gzip member header cut short after the stream",
            {
                let mut bytes = package_with(|_| {});
                bytes.extend_from_slice(&[0x1f, 0x8b, 8]);
                bytes
            },
            K::Truncated,
        ),
        // On macOS and Windows this file replaces package/package.json when unpacked.
        case(
            "package.json in another case",
            package_with(|t| {
                t.file(
                    "package/PACKAGE.JSON",
                    br#"{"name":"evil","version":"6.6.6"}"#,
                );
            }),
            K::BadPackageJson,
        ),
        // Special files.
        case(
            "char device",
            package_with(|t| {
                t.entry("package/null", b'3', b"", "");
            }),
            K::SpecialFile,
        ),
        case(
            "block device",
            package_with(|t| {
                t.entry("package/sda", b'4', b"", "");
            }),
            K::SpecialFile,
        ),
        case(
            "fifo",
            package_with(|t| {
                t.entry("package/pipe", b'6', b"", "");
            }),
            K::SpecialFile,
        ),
        // Gzip.
        case(
            "not gzip",
            Tar::new().package_json("a", "1").finish(),
            K::BadGzip,
        ),
        case(
            "corrupted deflate data",
            {
                let mut b = valid.clone();
                b[10] = 0x07; // BFINAL=1, BTYPE=11 (reserved)
                b
            },
            K::BadGzip,
        ),
        case(
            "bad CRC",
            {
                let mut b = valid.clone();
                let n = b.len();
                b[n - 8] ^= 1;
                b
            },
            K::GzipChecksum,
        ),
        case(
            "bad ISIZE",
            {
                let mut b = valid.clone();
                let n = b.len();
                b[n - 4] ^= 1;
                b
            },
            K::GzipChecksum,
        ),
        case(
            "truncated gzip",
            valid[..valid.len() - 20].to_vec(),
            K::Truncated,
        ),
        case("empty input", Vec::new(), K::Truncated),
        // Tar.
        case(
            "truncated tar entry",
            {
                let mut t = Tar::new();
                t.package_json("a", "1")
                    .file("package/big.js", &[b'y'; 5000]);
                gzip(&t.buf[..t.buf.len() - 2000])
            },
            K::Truncated,
        ),
        case(
            "missing end-of-archive",
            {
                let mut t = Tar::new();
                t.package_json("a", "1");
                gzip(&t.buf)
            },
            K::Truncated,
        ),
        case(
            "bad tar header checksum",
            {
                let mut h = header("package/index.js", b'0', 1, "");
                h[148] = b'7';
                let mut t = Tar::new();
                t.package_json("a", "1").raw(h, b"x");
                gzip(&t.finish())
            },
            K::BadTar,
        ),
        case(
            "link target on a regular file",
            package_with(|t| {
                t.entry("package/f", b'0', b"x", "elsewhere");
            }),
            K::BadTar,
        ),
        case(
            "unsupported pax key",
            package_with(|t| {
                t.pax(&[("remain", "0")], false).file("package/f", b"x");
            }),
            K::BadTar,
        ),
        case(
            "global pax linkpath",
            package_with(|t| {
                t.pax(&[("linkpath", "x")], true);
            }),
            K::BadTar,
        ),
        case(
            "malformed octal size",
            {
                let mut h = header("package/f", b'0', 1, "");
                h[124..136].copy_from_slice(b"00000000x01\0");
                set_checksum(&mut h);
                let mut t = Tar::new();
                t.package_json("a", "1").raw(h, b"x");
                gzip(&t.finish())
            },
            K::BadTar,
        ),
        case(
            "bad base-256 mtime",
            {
                let mut h = header("package/f", b'0', 1, "");
                h[136] = 0x81;
                set_checksum(&mut h);
                let mut t = Tar::new();
                t.package_json("a", "1").raw(h, b"x");
                gzip(&t.finish())
            },
            K::BadTar,
        ),
        // package.json.
        case(
            "missing package.json",
            gzip(
                Tar::new()
                    .file("package/index.js", b"x")
                    .finish()
                    .as_slice(),
            ),
            K::MissingPackageJson,
        ),
        case(
            "invalid JSON package.json",
            gzip(
                &Tar::new()
                    .file("package/package.json", b"{\"name\": \"a\",")
                    .finish(),
            ),
            K::BadPackageJson,
        ),
        case(
            "package.json without version",
            gzip(
                &Tar::new()
                    .file("package/package.json", br#"{"name":"a"}"#)
                    .finish(),
            ),
            K::BadPackageJson,
        ),
        case(
            "package.json with numeric version",
            gzip(
                &Tar::new()
                    .file("package/package.json", br#"{"name":"a","version":1}"#)
                    .finish(),
            ),
            K::BadPackageJson,
        ),
    ];
    cases.push(Case {
        name: "too many entries",
        bytes: package_with(|t| {
            for i in 0..5 {
                t.file(&format!("package/{i}.js"), b"x");
            }
        }),
        policy: Policy {
            max_entries: 4,
            ..Policy::default()
        },
        want: K::TooManyEntries,
    });
    cases.push(Case {
        name: "too large",
        bytes: package_with(|t| {
            t.file("package/big.bin", &[7u8; 2000]);
        }),
        policy: Policy {
            max_unpacked_size: 1000,
            ..Policy::default()
        },
        want: K::TooLarge,
    });
    cases.push(Case {
        name: "package.json too large",
        bytes: gzip(
            &Tar::new()
                .file("package/package.json", &[b' '; 2000])
                .finish(),
        ),
        policy: Policy {
            max_package_json_size: 1000,
            ..Policy::default()
        },
        want: K::BadPackageJson,
    });
    cases
}

#[test]
fn hostile_tarballs_are_rejected_with_the_right_kind() {
    let mut failures = Vec::new();
    for case in cases() {
        for chunk in [usize::MAX, 7] {
            match inspect(&case.bytes, &case.policy, chunk) {
                Err(e) if e.kind() == case.want => {}
                Err(e) => failures.push(format!(
                    "{} ({chunk}): want {:?}, got {:?}: {e}",
                    case.name,
                    case.want,
                    e.kind()
                )),
                Ok(r) => failures.push(format!(
                    "{} ({chunk}): want {:?}, accepted {r:?}",
                    case.name, case.want
                )),
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A path or link target too long to accept (pax records carry up to 1 MiB) is named in the
/// error by its first bytes, not whole: one header must not make a megabyte error line.
#[test]
fn an_overlong_path_is_named_by_its_start() {
    let long = format!("package/{}", "p".repeat(512 * 1024));
    let cases = [
        (
            "path",
            package_with(|t| {
                t.pax(&[("path", &long)], false).file("package/x", b"x");
            }),
        ),
        (
            "link target",
            package_with(|t| {
                t.pax(&[("linkpath", &long)], false)
                    .symlink("package/l", "x");
            }),
        ),
    ];
    let mut whole = Vec::new();
    for (name, bytes) in cases {
        let e = inspect(&bytes, &Policy::default(), usize::MAX).expect_err("refused");
        let text = e.to_string();
        if text.len() > 2048 || !(text.contains("package/ppp") && text.contains('…')) {
            whole.push(format!("{name}: {:?}, {} bytes", e.kind(), text.len()));
        }
    }
    assert!(whole.is_empty(), "{whole:?}");
}

/// Streams the gzip of a header plus 4 GiB of zeros, compressing on the fly,
/// and returns the error and how much compressed data it took.
fn stream_bomb(tar_header: Option<[u8; BLOCK]>, policy: Policy) -> (TarballError, u64) {
    const TOTAL: u64 = 4 << 30;
    let mut inspector = Inspector::new(policy);
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    if let Some(h) = tar_header {
        enc.write_all(&h).unwrap();
    }
    let zeros = vec![0u8; 1 << 20];
    let mut fed = 0u64;
    let mut written = 0u64;
    while written < TOTAL {
        enc.write_all(&zeros).unwrap();
        written += zeros.len() as u64;
        let out = std::mem::take(enc.get_mut());
        fed += out.len() as u64;
        if let Err(e) = inspector.update(&out) {
            return (e, fed);
        }
    }
    let out = enc.finish().unwrap();
    fed += out.len() as u64;
    match inspector
        .update(&out)
        .and_then(|_| inspector.finish().map(|_| ()))
    {
        Err(e) => (e, fed),
        Ok(()) => panic!("4 GiB bomb accepted"),
    }
}

#[test]
fn four_gib_bomb_is_stopped_early() {
    let file = header("package/bomb.bin", b'0', 4 << 30, "");
    let cases = [
        (
            "file header, default policy",
            Some(file),
            Policy::default(),
            K::TooLarge,
        ),
        (
            "file header, no size limit",
            Some(file),
            Policy {
                max_unpacked_size: u64::MAX,
                ..Policy::default()
            },
            K::CompressionRatio,
        ),
        ("bare zeros", None, Policy::default(), K::CompressionRatio),
    ];
    for (name, h, policy, want) in cases {
        let start = Instant::now();
        let (err, fed) = stream_bomb(h, policy);
        let elapsed = start.elapsed();
        assert_eq!(err.kind(), want, "{name}: {err}");
        eprintln!("{name}: {err} after {fed} compressed bytes in {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{name}: took {elapsed:?}");
        assert!(fed < 64 << 20, "{name}: needed {fed} compressed bytes");
    }
}

#[test]
fn missing_package_json_can_be_tolerated() {
    let bytes = gzip(&Tar::new().file("package/index.js", b"x").finish());
    let policy = Policy {
        require_package_json: false,
        ..Policy::default()
    };
    let report = inspect(&bytes, &policy, usize::MAX).unwrap();
    assert_eq!((report.name.as_str(), report.version.as_str()), ("", ""));
    assert_eq!(report.entry_count, 1);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);

    let bad = gzip(&Tar::new().file("package/package.json", b"nope").finish());
    let report = inspect(&bad, &policy, usize::MAX).unwrap();
    assert!(
        report.warnings[0].contains("package.json"),
        "{:?}",
        report.warnings
    );
}

#[test]
fn errors_are_sticky() {
    let mut inspector = Inspector::new(Policy::default());
    let first = inspector.update(b"not a gzip stream").unwrap_err();
    let again = inspector.update(b"more").unwrap_err();
    assert_eq!(first.kind(), again.kind());
    assert_eq!(inspector.finish().unwrap_err().kind(), K::BadGzip);
}

/// Every hostile tarball, put into a real filesystem store with inspection on: rejected with the
/// exact rule, and nothing stored: no blob, no alias, no temp file.
#[test]
fn hostile_tarballs_store_nothing() {
    use tarvault::{ErrorKind, PutOptions, Store};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path().join("store")).unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let options = PutOptions {
            inspect: Some(case.policy.clone()),
            ..PutOptions::default()
        }
        .label(case.name);
        let chunks = futures::stream::iter(
            case.bytes
                .chunks(4096)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        match rt.block_on(store.put(chunks, &options)) {
            Err(e) if e.kind() == ErrorKind::Rejected && e.tarball_kind() == Some(case.want) => {
                assert!(
                    e.to_string().contains(case.name),
                    "error names the input: {e}"
                );
            }
            other => failures.push(format!(
                "{}: want {:?}, got {other:?}",
                case.name, case.want
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    let listed: Vec<_> = rt
        .block_on(futures::TryStreamExt::try_collect::<Vec<_>>(store.list()))
        .unwrap();
    assert!(
        listed.is_empty(),
        "rejected tarballs were stored: {listed:?}"
    );
    let temps = std::fs::read_dir(dir.path().join("store/tmp"))
        .unwrap()
        .count();
    assert_eq!(temps, 0, "temp files left behind");
    // A valid tarball through the same path is accepted, with its report.
    let ok = rt
        .block_on(store.put_bytes(package_with(|_| {}), &PutOptions::default().tarball()))
        .unwrap();
    assert!(ok.stored);
    assert!(ok.report.is_some());
}

/// A 4 GiB-of-zeros bomb streamed into a store (compressed on the fly, never held in memory) is
/// refused after a few KB of input, and nothing is stored.
#[test]
fn bomb_into_store_is_refused_early() {
    use tarvault::{ErrorKind, PutOptions, Store};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path().join("store")).unwrap();
    let fed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = fed.clone();
    let mut enc = Some(GzEncoder::new(Vec::new(), Compression::default()));
    let mut written = 0u64;
    let zeros = vec![0u8; 1 << 20];
    let bomb = futures::stream::poll_fn(move |_| {
        let Some(e) = enc.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let out = if written < 4 << 30 {
            e.write_all(&zeros).unwrap();
            written += zeros.len() as u64;
            std::mem::take(e.get_mut())
        } else {
            enc.take().unwrap().finish().unwrap()
        };
        counter.fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
        std::task::Poll::Ready(Some(Ok(bytes::Bytes::from(out))))
    });
    let start = Instant::now();
    let err = rt
        .block_on(store.put(
            Box::pin(bomb),
            &PutOptions::default().tarball().label("bomb.tgz"),
        ))
        .expect_err("bomb refused");
    let elapsed = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.tarball_kind(), Some(K::CompressionRatio), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let fed = fed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        fed < 64 << 20,
        "read {fed} compressed bytes before refusing"
    );
    let listed: Vec<_> = rt
        .block_on(futures::TryStreamExt::try_collect::<Vec<_>>(store.list()))
        .unwrap();
    assert!(listed.is_empty());
}

/// A tarball that is well formed but names another package than it was put as is refused before
/// commit, and one that names the right package (old `v`-prefixed versions included) is stored.
#[tokio::test]
async fn put_refuses_a_tarball_of_another_package() {
    use tarvault::{ErrorKind, PutOptions, Store};
    let entry = common::corpus().into_iter().next().expect("corpus");
    let bytes = common::corpus_bytes(&entry);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path().join("store")).unwrap();
    let options = |name: &str, version: &str| PutOptions {
        expect_package: Some((name.to_string(), version.to_string())),
        ..PutOptions::default().tarball()
    };
    let err = store
        .put_bytes(bytes.clone(), &options("impostor", &entry.version))
        .await
        .expect_err("another package");
    assert_eq!(err.kind(), ErrorKind::Rejected);
    match &err {
        tarvault::Error::PackageMismatch {
            expected, actual, ..
        } => {
            assert_eq!(*expected, format!("impostor@{}", entry.version));
            assert_eq!(*actual, format!("{}@{}", entry.name, entry.version));
        }
        other => panic!("expected PackageMismatch, got {other:?}"),
    }
    let address = common::addr(&entry.integrity);
    assert!(!store.contains(&address).await.unwrap(), "nothing stored");
    let wrong_version = store
        .put_bytes(bytes.clone(), &options(&entry.name, "0.0.0-not-it"))
        .await
        .expect_err("another version");
    assert_eq!(wrong_version.kind(), ErrorKind::Rejected);
    assert!(!store.contains(&address).await.unwrap(), "nothing stored");
    let out = store
        .put_bytes(bytes, &options(&entry.name, &format!("v{}", entry.version)))
        .await
        .expect("right package");
    assert!(out.stored);
    assert!(store.contains(&address).await.unwrap());
}

/// npm extracts with `strip: 1`, so a `package.json` under a second top-level folder lands on
/// the first one's: `evil/package.json` after `package/package.json` makes the package evil@6.6.6
/// (pacote's manifest says so). The report names that package, with a warning, and a put expecting
/// demo@1.0.0 refuses the tarball.
#[tokio::test]
async fn a_package_json_in_a_second_top_level_folder_is_what_npm_sees() {
    use tarvault::{Error, ErrorKind, PutOptions, Store};
    let mut tar = Tar::new();
    tar.dir("package/")
        .package_json("demo", "1.0.0")
        .file("evil/package.json", br#"{"name":"evil","version":"6.6.6"}"#);
    let bytes = gzip(&tar.finish());
    let r = inspect(&bytes, &Policy::default(), 512).expect("accepted, with warnings");
    assert_eq!(
        (r.name.as_str(), r.version.as_str(), r.root.as_str()),
        ("evil", "6.6.6", "package")
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("duplicate")),
        "{:?}",
        r.warnings
    );

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path().join("store")).unwrap();
    let options = PutOptions {
        expect_package: Some(("demo".to_string(), "1.0.0".to_string())),
        ..PutOptions::default().tarball()
    };
    let err = store
        .put_bytes(bytes.clone(), &options)
        .await
        .expect_err("npm would install evil@6.6.6");
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert!(
        matches!(&err, Error::PackageMismatch { actual, .. } if actual == "evil@6.6.6"),
        "{err:?}"
    );
    let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list())
        .await
        .unwrap();
    assert!(listed.is_empty());
}
