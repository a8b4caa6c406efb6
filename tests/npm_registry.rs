//! The example registry (`examples/npm_registry`) end to end with the real npm CLI: three packages
//! published (one scoped, one in two versions), installed from a clean cache in another directory;
//! a republish refused (409); a publish whose attachment lies refused with nothing stored;
//! anonymous and malformed publishes refused; a corrupt stored blob makes `npm install` fail.
//!
//! Needs `npm` in PATH. Without it the test prints `skipped: …`, except under CI where it fails.

#[path = "../examples/npm_registry/registry.rs"]
mod registry;

mod common;

use common::npm::{http, log, npm_available, npm_command, publish_doc};

use std::path::{Path, PathBuf};
use std::process::Output;

use futures::TryStreamExt;
use serde_json::{json, Value};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::BlobKey;
use tarvault::server::ServeOptions;
use tarvault::{Algorithm, Integrity, Store};
use tokio::io::AsyncReadExt;

const TOKEN: &str = "test-token-123";

/// Runs npm in `dir` against the registry only, with a scratch cache and npmrc.
fn npm(root: &Path, dir: &Path, cache: &str, registry: &str, args: &[&str]) -> Output {
    npm_command()
        .args(args)
        .arg(format!("--registry={registry}"))
        .arg(format!("--cache={}", root.join(cache).display()))
        .arg(format!("--userconfig={}", root.join("npmrc").display()))
        .args([
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--no-update-notifier",
            "--fetch-retries=0",
        ])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("npm: {e}"))
}

/// A package directory with a manifest and an `index.js` that says who it is.
fn package(root: &Path, name: &str, version: &str, deps: Value) -> PathBuf {
    let dir = root.join("src").join(name.replace('/', "+")).join(version);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let manifest = json!({
        "name": name, "version": version, "main": "index.js", "license": "MIT",
        "dependencies": deps,
    });
    std::fs::write(dir.join("package.json"), manifest.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("index.js"), index_js(name, version)).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn index_js(name: &str, version: &str) -> String {
    format!("module.exports = {:?};\n", format!("{name}@{version}"))
}

/// A PUT through [`http`], off the runtime's threads.
async fn put(addr: &str, path: &str, auth: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let (addr, path, auth) = (addr.to_string(), path.to_string(), auth.map(str::to_string));
    tokio::task::spawn_blocking(move || http(&addr, "PUT", &path, auth.as_deref(), &body))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn packument(dir: &Path, file: &str) -> Value {
    let bytes = std::fs::read(dir.join(format!("{file}.json"))).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
}

async fn blob_count(store: &Store) -> usize {
    store
        .list()
        .try_collect::<Vec<_>>()
        .await
        .map_or(0, |v| v.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_publishes_to_and_installs_from_the_example_registry() {
    if !npm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    let store_dir = root.join("store");
    let backend = FsBackend::open(
        &store_dir,
        FsOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::new(backend.clone());
    let packuments = registry::packuments_beside(&store_dir);
    let reg = registry::Registry::new(store.clone(), packuments.clone(), Some(TOKEN.into()))
        .unwrap_or_else(|e| panic!("{e}"));
    let (listener, addr) = common::loopback().await;
    let addr = addr.to_string();
    tokio::spawn(registry::serve(
        listener,
        reg,
        ServeOptions::default(),
        std::future::pending(),
    ));
    let registry = format!("http://{addr}/");
    std::fs::write(
        root.join("npmrc"),
        format!("//{addr}/:_authToken={TOKEN}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let run = |dir: PathBuf, cache: &'static str, args: Vec<String>| {
        let root = root.to_path_buf();
        let registry = registry.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                npm(&root, &dir, cache, &registry, &args)
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let publish = |pkg: PathBuf| {
        run(
            pkg,
            "publish-cache",
            vec!["publish".into(), "--access=public".into()],
        )
    };

    // Publish: alpha twice (1.0.0, then 1.1.0), a scoped package, and one depending on alpha.
    let published = [
        ("alpha", "1.0.0", json!({})),
        ("alpha", "1.1.0", json!({})),
        ("@tv/beta", "2.0.0", json!({})),
        ("gamma", "0.1.0", json!({"alpha": "^1.0.0"})),
    ];
    for (name, version, deps) in &published {
        let out = publish(package(root, name, version, deps.clone())).await;
        assert!(
            out.status.success(),
            "publish {name}@{version}: {}",
            log(&out)
        );
    }
    assert_eq!(blob_count(&store).await, 4);

    // Republishing a version is refused: npm 11 checks the packument first and refuses itself,
    // and the registry answers a republish that gets through with a 409.
    let out = publish(package(root, "alpha", "1.0.0", json!({}))).await;
    assert!(!out.status.success(), "republish must fail: {}", log(&out));
    assert!(log(&out).contains("previously published"), "{}", log(&out));
    let alpha = packument(&packuments, "alpha");
    let sri = alpha["versions"]["1.0.0"]["dist"]["integrity"]
        .as_str()
        .unwrap_or_default();
    let tgz = store
        .get(&Integrity::parse(sri).unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = publish_doc("alpha", "1.0.0", &tgz, sri, &registry);
    let (status, text) = put(&addr, "/alpha", Some(TOKEN), again).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("already published"), "{text}");

    // npm view sees both versions and the latest tag.
    let out = run(
        root.to_path_buf(),
        "view-cache",
        vec!["view".into(), "alpha".into(), "--json".into()],
    )
    .await;
    assert!(out.status.success(), "{}", log(&out));
    let view: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", log(&out)));
    assert_eq!(view["versions"], json!(["1.0.0", "1.1.0"]));
    assert_eq!(view["dist-tags"]["latest"], "1.1.0");

    // Install in another directory with a clean cache.
    let project = common::npm::project(root, "project");
    let out = run(
        project.clone(),
        "install-cache",
        vec!["install".into(), "@tv/beta".into(), "gamma".into()],
    )
    .await;
    assert!(out.status.success(), "npm install: {}", log(&out));
    for (name, version) in [
        ("alpha", "1.1.0"),
        ("@tv/beta", "2.0.0"),
        ("gamma", "0.1.0"),
    ] {
        let installed = project.join("node_modules").join(name);
        let js = std::fs::read_to_string(installed.join("index.js"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(js, index_js(name, version));
    }
    let lock: Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("package-lock.json"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for name in ["alpha", "@tv/beta", "gamma"] {
        let entry = &lock["packages"][format!("node_modules/{name}")];
        let integrity = entry["integrity"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {entry}"));
        let resolved = entry["resolved"].as_str().unwrap_or_default();
        assert!(
            resolved.starts_with(&registry),
            "{name} resolved at {resolved}"
        );
        // The lockfile's integrity is the stored blob's, and the blob reads back verified.
        let bytes = store
            .get(&Integrity::parse(integrity).unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(common::sha512_sri(&bytes), integrity, "{name}");
    }

    // A publish whose attachment does not match dist.integrity: 400, nothing stored.
    let before = blob_count(&store).await;
    let mut tar = common::tarbuild::Tar::new();
    tar.dir("package/").package_json("liar", "1.0.0");
    let tgz = common::tarbuild::gzip(&tar.finish());
    let liar = publish_doc(
        "liar",
        "1.0.0",
        &tgz,
        &common::sha512_sri(b"other"),
        &registry,
    );
    let (status, text) = put(&addr, "/liar", Some(TOKEN), liar.clone()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("dist.integrity"), "{text}");
    // Anonymous, and malformed: refused too.
    let (status, _) = put(&addr, "/liar", None, liar).await;
    assert_eq!(status, 401);
    let cut = br#"{"name":"liar","_attachments":{"#.to_vec();
    let (status, text) = put(&addr, "/liar", Some(TOKEN), cut).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("ends early"), "{text}");
    assert_eq!(
        blob_count(&store).await,
        before,
        "refused publishes store nothing"
    );
    assert!(!packuments.join("liar.json").exists());

    // A corrupt stored blob: npm install must fail and install nothing of it.
    let beta = packument(&packuments, "@tv%2fbeta");
    let integrity = Integrity::parse(
        beta["versions"]["2.0.0"]["dist"]["integrity"]
            .as_str()
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let key = integrity
        .get(Algorithm::Sha512)
        .and_then(BlobKey::from_hash)
        .unwrap_or_else(|| panic!("no sha512"));
    common::corrupt_blob(&backend, &key, true);
    let bad = common::npm::project(root, "bad");
    let out = run(
        bad.clone(),
        "bad-cache",
        vec!["install".into(), "@tv/beta".into()],
    )
    .await;
    assert!(
        !out.status.success(),
        "npm must fail on a corrupt blob: {}",
        log(&out)
    );
    assert!(!bad.join("node_modules/@tv/beta/index.js").exists());
}

/// The registry is served on the library's accept loop: a connection that sends nothing is closed
/// after the header timeout (under `axum::serve` it stayed open for good), a request still gets
/// its answer, an HTTP/1.1 one without `Host` is refused on the registry's own routes as on the
/// library's, and shutdown makes the server return. No npm needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_registry_bounds_its_connections_and_shuts_down() {
    use std::time::Duration;
    use tokio::time::timeout;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store_dir = dir.path().join("store");
    let store = Store::open_fs(&store_dir).unwrap_or_else(|e| panic!("{e}"));
    let reg = registry::Registry::new(store, registry::packuments_beside(&store_dir), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let (listener, addr) = common::loopback().await;
    let options = ServeOptions {
        header_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(registry::serve(listener, reg, options, async move {
        let _ = stopped.await;
    }));

    let mut silent = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let addr = addr.to_string();
    let health = "GET /-/health HTTP/1.1\r\nHost: registry\r\n\r\n";
    assert_eq!(common::raw_status(&addr, health).await, 200);
    // The accept loop's Host rule holds for the registry's own routes too.
    for path in ["/alpha", "/-/health"] {
        let request = format!("GET {path} HTTP/1.1\r\n\r\n");
        assert_eq!(common::raw_status(&addr, &request).await, 400, "{path}");
    }
    let mut buf = [0u8; 64];
    match timeout(Duration::from_secs(10), silent.read(&mut buf)).await {
        Err(_) => panic!("a connection that sent nothing was still open after 10 s"),
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("the server sent {n} bytes unasked"),
    }

    let _ = stop.send(());
    timeout(Duration::from_secs(5), served)
        .await
        .unwrap_or_else(|_| panic!("the registry did not stop"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("serve: {e}"));
}

/// Packages named like the library's blob routes (`sha1`, `blake3`, `sha512`) keep their own
/// URLs: their packuments and tarballs are the registry's, while `/<algorithm>/<digest>` (one
/// segment) is the library's blob route for each of the three algorithms. No npm needed.
#[tokio::test]
async fn packages_named_like_blob_routes_and_every_blob_route_are_served() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store_dir = dir.path().join("store");
    let store = Store::open_fs(&store_dir).unwrap_or_else(|e| panic!("{e}"));
    let reg = registry::Registry::new(
        store,
        registry::packuments_beside(&store_dir),
        Some(TOKEN.into()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (listener, addr) = common::loopback().await;
    tokio::spawn(registry::serve(
        listener,
        reg,
        ServeOptions::default(),
        std::future::pending(),
    ));
    let addr = addr.to_string();
    let registry = format!("http://{addr}/");
    let get = |path: String| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || http(&addr, "GET", &path, None, b""))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    for name in ["sha1", "blake3", "sha512"] {
        let mut tar = common::tarbuild::Tar::new();
        tar.dir("package/").package_json(name, "1.0.0");
        let tgz = common::tarbuild::gzip(&tar.finish());
        let mut hasher = tarvault::integrity::MultiHasher::standard();
        hasher.update(&tgz);
        let digests = hasher
            .finalize()
            .digests()
            .unwrap_or_else(|e| panic!("{e}"));
        let sri = digests.integrity().to_string();
        let doc = publish_doc(name, "1.0.0", &tgz, &sri, &registry);
        let (status, text) = put(&addr, &format!("/{name}"), Some(TOKEN), doc).await;
        assert_eq!(status, 201, "publish {name}: {text}");

        let (status, text) = get(format!("/{name}")).await;
        assert_eq!(status, 200, "packument of {name}: {text}");
        assert!(text.contains(&sri), "packument of {name}: {text}");
        // The tarball's bytes are no text: its status alone, by a HEAD.
        for path in [
            format!("/{name}/-/{name}-1.0.0.tgz"),
            format!("/sha512/{}", digests.sha512_hex()),
            format!("/sha1/{}", digests.shasum()),
            format!("/blake3/{}", digests.blake3_hex()),
        ] {
            let head = format!("HEAD {path} HTTP/1.1\r\nHost: registry\r\n\r\n");
            assert_eq!(common::raw_status(&addr, &head).await, 200, "{path}");
        }
    }
}
