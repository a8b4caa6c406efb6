//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[cfg(feature = "fs")]
pub mod npm;
pub mod request_proxy;
pub mod tally;
pub mod tarbuild;

use std::path::PathBuf;

use bytes::Bytes;
use serde::Deserialize;

/// Whether this run is CI's (`CI` set to anything but empty, `0` or `false`): there every server
/// and tool the tests need must be present, because `.ci/run` installs and starts them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// For a test that cannot run here because something it needs is absent (a server, a tool):
/// under CI this fails the test, naming `reason`; elsewhere it prints `skipped: <reason>` and the
/// caller returns at once, having tested nothing and said so. `reason` should name what is missing
/// and how to get it (`bash .ci/run` starts every test server).
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("{reason} (CI must run this test: see .ci/run)");
    }
    eprintln!("skipped: {reason}");
}

/// A listener on a free loopback port, and its address: where a test starts a server, or a
/// stand-in for one, that its client then connects to.
pub async fn loopback() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind a loopback port: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the listener's address: {e}"));
    (listener, addr)
}

/// Serves `app` (a [`tarvault::server::Server`], or any axum router: a stand-in for a server) on
/// the library's accept loop on a free loopback port until the test ends; its base URL
/// (`http://127.0.0.1:N`).
#[cfg(feature = "server")]
pub async fn serve(app: impl Into<axum::Router>) -> String {
    // A router now: the spawned future must not hold `app`'s type, which need not be `Send`.
    let router: axum::Router = app.into();
    let (listener, addr) = loopback().await;
    tokio::spawn(tarvault::server::serve(
        listener,
        router,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// The status code of the answer to `request`, raw bytes sent whole to `addr` (`host:port`) on a
/// connection of its own: for requests that an HTTP client library would not send as they are.
pub async fn raw_status(addr: &str, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    // `HTTP/1.x NNN`.
    let mut line = [0u8; 12];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_exact(&mut line),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to {request:?} in 10 s"))
    .unwrap_or_else(|e| panic!("read the answer to {request:?}: {e}"));
    std::str::from_utf8(&line[9..])
        .ok()
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"))
}

/// One line of the corpus manifest: real npm tarballs with the registry's own digests.
#[derive(Debug, Clone, Deserialize)]
pub struct CorpusEntry {
    pub name: String,
    pub version: String,
    pub file: String,
    pub size: u64,
    pub integrity: String,
    pub shasum: String,
    pub registry_integrity: String,
    pub registry_shasum: String,
    pub tarball_path: String,
    pub entry_count: u64,
    pub unpacked_size: u64,
}

/// The corpus directory: `$TARVAULT_CORPUS`, else `../shared/corpus` beside the checkout.
pub fn corpus_dir() -> PathBuf {
    match std::env::var_os("TARVAULT_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    }
}

/// Every corpus entry. Panics (failing the test) if the corpus is missing: it is ground truth the
/// tests depend on, and CI provides it.
pub fn corpus() -> Vec<CorpusEntry> {
    let manifest = corpus_dir().join("manifest.jsonl");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "cannot read the corpus manifest {} ({e}); set TARVAULT_CORPUS",
            manifest.display()
        )
    });
    let entries: Vec<CorpusEntry> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("manifest line"))
        .collect();
    assert!(
        entries.len() >= 50,
        "corpus looks incomplete: {} entries",
        entries.len()
    );
    entries
}

/// The bytes of a corpus tarball.
pub fn corpus_bytes(e: &CorpusEntry) -> Bytes {
    Bytes::from(std::fs::read(corpus_dir().join(&e.file)).expect("corpus tarball"))
}

/// Deterministic pseudo-random bytes (xorshift), so large test blobs need no fixtures.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A stream of `data` in chunks of `chunk` bytes.
pub fn chunked(
    data: &[u8],
    chunk: usize,
) -> futures::stream::Iter<std::vec::IntoIter<std::io::Result<Bytes>>> {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks)
}

/// `sha512-<base64>` of `data`, computed with the `sha2` and `base64` crates directly (not with
/// tarvault's own hasher), so tests compare against an independent answer.
pub fn sha512_sri(data: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(data))
    )
}

/// sha1 hex of `data`, computed independently.
pub fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(data))
}

/// The sha512 key of `data`, computed independently.
pub fn key_of(data: &[u8]) -> tarvault::backend::BlobKey {
    use sha2::Digest;
    tarvault::backend::BlobKey::new(sha2::Sha512::digest(data).into())
}

/// The digests a store records for `data` (sha512, sha1, blake3, size), computed here with the
/// reference crates rather than by tarvault.
pub fn digests_of(data: &[u8]) -> tarvault::Digests {
    use sha2::Digest as _;
    let sha512: [u8; 64] = sha2::Sha512::digest(data).into();
    let sha1: [u8; 20] = sha1::Sha1::digest(data).into();
    tarvault::Digests::from_parts(
        &sha512,
        &sha1,
        blake3::hash(data).as_bytes(),
        data.len() as u64,
    )
    .expect("digests")
}

/// Parses an address or fails the test.
pub fn addr(s: &str) -> tarvault::Integrity {
    tarvault::Integrity::parse_address(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Puts `n` blobs of noise, one at a time (the `i`th is `len + i * step` bytes of seed
/// `seed + i`); returns each with its digests.
pub async fn put_noise(
    store: &tarvault::Store,
    n: u64,
    (len, step): (usize, usize),
    seed: u64,
) -> Vec<(Vec<u8>, tarvault::Digests)> {
    let mut all = Vec::new();
    for i in 0..n {
        let data = noise(len + i as usize * step, seed + i);
        let put = store
            .put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
        all.push((data, put.digests));
    }
    all
}

/// What [`Store::list_meta`](tarvault::Store::list_meta) lists: each blob's key, size and whether
/// it has a time, sorted.
pub async fn listed_meta(store: &tarvault::Store) -> Vec<(tarvault::backend::BlobKey, u64, bool)> {
    use futures::TryStreamExt;
    let mut listed: Vec<_> = store
        .list_meta()
        .map_ok(|i| (i.key, i.size, i.modified.is_some()))
        .try_collect()
        .await
        .expect("list_meta");
    listed.sort();
    listed
}

/// The bytes `store` serves at `address`, read to the end and verified (fails the test if not).
pub async fn read_verified(store: &tarvault::Store, address: &tarvault::Integrity) -> Bytes {
    store
        .get(address)
        .await
        .unwrap_or_else(|e| panic!("get {address}: {e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("read {address}: {e}"))
}

/// gc's live set names a blob by sha1 whose marker (written by `forge(sha1 hex, body)`) names
/// another blob, as a foreign or buggy writer could leave it on S3 or Manta, where markers are
/// objects of their own. The other blob's own metadata gives it another sha1, so the marker is
/// not taken at its word: gc stops, naming the address, and deletes nothing (it took the marker's
/// blob for the live one and deleted the blob the address names). fsck rewrites the marker, and
/// the same gc then keeps that blob and deletes the other.
pub async fn gc_with_a_contradicted_marker<F: std::future::Future<Output = ()>>(
    open: &dyn Fn() -> tarvault::Store,
    forge: impl FnOnce(String, String) -> F,
) {
    use tarvault::ops::gc::{gc, GcOptions};
    let (live, other) = (noise(3000, 90), noise(4000, 91));
    let store = open();
    for data in [&live, &other] {
        store
            .put_bytes(data.clone(), &tarvault::PutOptions::default())
            .await
            .expect("put");
    }
    let (l, o) = (digests_of(&live), digests_of(&other));
    let forged = format!(
        "v1 {} {} {} {}\n",
        o.sha512_hex(),
        l.shasum(),
        o.blake3_hex(),
        o.size
    );
    forge(l.shasum(), forged).await;
    let keep = || [Ok(addr(&l.shasum()))];
    let options = GcOptions {
        grace: std::time::Duration::ZERO,
        delete: true,
    };
    let store = open();
    let err = gc(&store, keep(), &options, |_, _| {})
        .await
        .expect_err("a marker its blob contradicts");
    let report = err.report().to_string();
    assert_eq!(err.kind(), tarvault::ErrorKind::Corrupt, "{report}");
    assert!(report.contains(&addr(&l.shasum()).to_string()), "{report}");
    for data in [&live, &other] {
        let head = store.backend().head(&key_of(data)).await;
        assert!(head.expect("head").is_some(), "gc deleted a blob");
    }
    store
        .fsck(&tarvault::FsckOptions::default())
        .await
        .expect("fsck");
    let store = open();
    let report = gc(&store, keep(), &options, |_, _| {})
        .await
        .expect("gc after fsck");
    assert_eq!((report.kept_live, report.garbage), (1, 1), "{report:?}");
    for (data, kept) in [(&live, true), (&other, false)] {
        let head = store.backend().head(&key_of(data)).await.expect("head");
        assert_eq!(head.is_some(), kept, "after fsck: {} bytes", data.len());
    }
}

/// A put meets the sha1 marker of its blob (written by `forge(sha1 hex, body)`) naming another
/// blob, as a foreign or buggy writer could leave it on S3 or Manta: first one whose own metadata
/// gives it another sha1, then one that is not stored. The put has hashed its bytes, so the
/// marker is shown wrong and rewritten, whether the put stores its blob or finds it stored: the
/// blob is then served by its sha1. (Kept, the marker left the blob unfindable by its sha1.)
pub async fn a_put_with_a_contradicted_marker<F: std::future::Future<Output = ()>>(
    open: &dyn Fn() -> tarvault::Store,
    forge: impl Fn(String, String) -> F,
) {
    let (live, other) = (noise(3000, 92), noise(4000, 93));
    let put = |data: &Vec<u8>| {
        let (store, data) = (open(), data.clone());
        async move {
            store
                .put_bytes(data, &tarvault::PutOptions::default())
                .await
                .expect("put")
        }
    };
    put(&other).await;
    let (l, o) = (digests_of(&live), digests_of(&other));
    let never = digests_of(&noise(5000, 94));
    let naming = |d: &tarvault::Digests| {
        format!(
            "v1 {} {} {} {}\n",
            d.sha512_hex(),
            l.shasum(),
            d.blake3_hex(),
            d.size
        )
    };
    for (named, what) in [(&o, "a stored blob"), (&never, "a blob that is not stored")] {
        forge(l.shasum(), naming(named)).await;
        put(&live).await;
        let got = read_verified(&open(), &addr(&l.shasum())).await;
        assert!(
            got[..] == live[..],
            "after a put over a marker naming {what}"
        );
    }
}

/// Asserts `store` serves each blob by its sha1 and by its blake3, verified, with its bytes.
pub async fn assert_found_by_aliases(
    store: &tarvault::Store,
    all: &[(Vec<u8>, tarvault::Digests)],
) {
    for (data, d) in all {
        for alg in [tarvault::Algorithm::Sha1, tarvault::Algorithm::Blake3] {
            let a = addr(&d.hash(alg).to_string());
            let got = read_verified(store, &a).await;
            assert_eq!(&got[..], &data[..], "{a}");
        }
    }
}

/// A stored blob's file, made writable (the store keeps them read-only), for a test to damage.
#[cfg(feature = "fs")]
pub fn writable_blob(
    backend: &tarvault::backend::fs::FsBackend,
    key: &tarvault::backend::BlobKey,
) -> std::path::PathBuf {
    let path = backend.blob_path(key);
    let mut perms = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// Flips one byte of a stored blob's file in place (same size), as bit rot would: the last byte
/// with `at_end`, else the middle one. Returns the file's path.
#[cfg(feature = "fs")]
pub fn corrupt_blob(
    backend: &tarvault::backend::fs::FsBackend,
    key: &tarvault::backend::BlobKey,
    at_end: bool,
) -> std::path::PathBuf {
    let path = writable_blob(backend, key);
    let mut data = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let i = if at_end {
        data.len() - 1
    } else {
        data.len() / 2
    };
    data[i] ^= 0x55;
    std::fs::write(&path, &data).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// The response a server's router alone (no HTTP) gives a GET of `path`.
#[cfg(feature = "server")]
pub async fn router_get(server: &tarvault::server::Server, path: &str) -> axum::response::Response {
    use tower::ServiceExt;
    let request = axum::http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|e| panic!("request: {e}"));
    server
        .router()
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {})
}

/// Starts `tarvault --store STORE serve --listen 127.0.0.1:0 --map MAP` with `envs`; returns the
/// child and its base URL, read from the first line it prints.
pub fn serve_cli(
    store: &std::path::Path,
    map: &std::path::Path,
    envs: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let bin = option_env!("CARGO_BIN_EXE_tarvault")
        .unwrap_or_else(|| panic!("this test needs the tarvault binary (feature cli)"));
    let mut child = std::process::Command::new(bin)
        .arg("--store")
        .arg(store)
        .args(["serve", "--listen", "127.0.0.1:0", "--map"])
        .arg(map)
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("tarvault serve: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let mut line = String::new();
    let read = std::io::BufReader::new(stdout).read_line(&mut line);
    let base = read
        .ok()
        .and_then(|_| line.trim().strip_prefix("listening on "))
        .map(str::to_string);
    match base {
        Some(base) => (child, base),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tarvault serve printed {line:?}")
        }
    }
}

/// Runs `copy` from `from` into `to` once per entry of `wants`, each run complete and counting
/// the blobs it listed, copied and skipped as the entry says.
pub async fn copy_runs(from: &tarvault::Store, to: &tarvault::Store, wants: &[(u64, u64, u64)]) {
    use tarvault::ops::copy::{copy, CopyOptions};
    for (run, want) in wants.iter().enumerate() {
        let report = copy(from, to, &CopyOptions::default(), |_| {})
            .await
            .expect("copy");
        assert!(report.is_complete(), "run {run}: {report:?}");
        let got = (report.listed, report.copied, report.skipped);
        assert_eq!(got, *want, "run {run}");
    }
}
