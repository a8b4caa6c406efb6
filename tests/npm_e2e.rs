//! End to end with the real npm CLI: packuments built from the corpus manifest point `dist.tarball`
//! at `tarvault serve` (the real binary, with a mapping), and are served from a static loopback
//! server; `npm install` into a scratch project with an empty cache must install from tarvault, and
//! must fail, installing nothing, once a stored blob is corrupt.
//!
//! Needs `npm` in PATH. Without it the test prints `skipped: …`, except under CI where it fails.
#![cfg(feature = "server")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::Arc;

use serde_json::{json, Value};
use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::backend::BlobKey;
use tarvault::{Algorithm, Integrity};

use common::npm::{log, npm_available};
use common::{corpus, corpus_dir, CorpusEntry};

/// Installed and asserted on: no dependencies, or dependencies the corpus satisfies (once →
/// wrappy), scoped and unscoped, and one larger than the fs backend's read chunk (typescript).
const INSTALL: [&str; 6] = [
    "is-number@7.0.0",
    "left-pad@1.3.0",
    "ms@2.1.3",
    "@nodelib/fs.stat@3.0.0",
    "once@1.4.0",
    "typescript@5.3.3",
];
/// Corrupted, then installed: a small one (caught before the response head: a 500) and one over
/// the read chunk with the damage at its end (caught mid-body: the response is cut short).
const CORRUPT: [(&str, &str); 2] = [("inherits", "2.0.4"), ("prettier", "3.1.1")];

/// Kills a child process when dropped, so a failing test leaves no server behind.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tarball_file(e: &CorpusEntry) -> String {
    e.tarball_path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The tarball's own package.json, as the registry's version document starts from.
fn package_json(e: &CorpusEntry) -> Value {
    let file =
        std::fs::File::open(corpus_dir().join(&e.file)).unwrap_or_else(|err| panic!("{err}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().unwrap_or_else(|err| panic!("{err}")) {
        let mut entry = entry.unwrap_or_else(|err| panic!("{err}"));
        let path = entry
            .path()
            .unwrap_or_else(|err| panic!("{err}"))
            .into_owned();
        let mut parts = path.components();
        let (Some(_), Some(last), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if last.as_os_str() == "package.json" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .unwrap_or_else(|err| panic!("{err}"));
            return serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}"));
        }
    }
    panic!("{}@{} has no package.json", e.name, e.version)
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Packuments for every corpus package, keyed by name, with tarballs at `tarvault`.
fn packuments(entries: &[CorpusEntry], tarvault: &str) -> HashMap<String, String> {
    let mut by_name: BTreeMap<&str, Vec<&CorpusEntry>> = BTreeMap::new();
    for e in entries {
        by_name.entry(&e.name).or_default().push(e);
    }
    by_name
        .into_iter()
        .map(|(name, mut versions)| {
            versions.sort_by_key(|e| version_key(&e.version));
            let mut docs = serde_json::Map::new();
            for e in &versions {
                let mut doc = package_json(e);
                doc["name"] = json!(e.name);
                doc["version"] = json!(e.version);
                doc["_id"] = json!(format!("{}@{}", e.name, e.version));
                doc["dist"] = json!({
                    "tarball": format!("{tarvault}{}", e.tarball_path),
                    "integrity": e.integrity,
                    "shasum": e.shasum,
                });
                docs.insert(e.version.clone(), doc);
            }
            let latest = versions
                .last()
                .map(|e| e.version.clone())
                .unwrap_or_default();
            let packument = json!({
                "_id": name,
                "name": name,
                "dist-tags": { "latest": latest },
                "versions": docs,
            });
            (name.to_string(), packument.to_string())
        })
        .collect()
}

/// A static loopback server of packuments (`/<name>`, `/@scope%2fname`).
async fn packument_server(docs: HashMap<String, String>) -> String {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let docs = Arc::new(docs);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let docs = docs.clone();
        async move {
            let raw = uri.path().trim_start_matches('/');
            let name = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            match docs.get(name.as_ref()) {
                Some(doc) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    doc.clone(),
                )
                    .into_response(),
                None => (StatusCode::NOT_FOUND, "{\"error\":\"not found\"}").into_response(),
            }
        }
    });
    format!("{}/", common::serve(app).await)
}

/// `tarvault serve` on a free port; returns the process and its base URL.
fn start_tarvault(store: &Path, map: &Path) -> (Reaper, String) {
    let (child, base) = common::serve_cli(store, map, &[("TARVAULT_LOG", "warn")]);
    (Reaper(child), base)
}

/// `npm install` in a fresh project with a fresh cache, talking to nothing but `registry`.
fn npm_install(root: &Path, name: &str, registry: &str, packages: &[&str]) -> (PathBuf, Output) {
    let (project, mut cmd) = common::npm::install_command(root, name, registry, packages);
    let out = cmd
        .args([
            "--fetch-retries=1",
            "--fetch-retry-mintimeout=100",
            "--fetch-retry-maxtimeout=200",
            "--loglevel=http",
        ])
        .output()
        .unwrap_or_else(|e| panic!("npm: {e}"));
    (project, out)
}

fn installed_version(project: &Path, name: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(project.join("node_modules").join(name).join("package.json"))
            .ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_string)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_installs_from_tarvault_and_refuses_corrupt_blobs() {
    if !npm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    let store_dir = root.join("store");
    let entries = corpus();

    // Store every corpus tarball and write the mapping `migrate couch` would have written.
    let backend = FsBackend::open(
        &store_dir,
        FsOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let store = tarvault::Store::new(backend.clone());
    let mut map = String::new();
    for e in &entries {
        let bytes = common::corpus_bytes(e);
        store
            .put_bytes(bytes, &tarvault::PutOptions::default())
            .await
            .unwrap_or_else(|err| panic!("put {}: {err}", e.name));
        let line = tarvault::migrate::MapEntry {
            name: e.name.clone(),
            version: e.version.clone(),
            file: tarball_file(e),
            integrity: e.integrity.clone(),
            shasum: e.shasum.clone(),
            size: e.size,
        };
        map.push_str(&serde_json::to_string(&line).unwrap_or_else(|err| panic!("{err}")));
        map.push('\n');
    }
    let map_path = root.join("map.jsonl");
    std::fs::write(&map_path, map).unwrap_or_else(|e| panic!("{e}"));

    let (_tarvault, tarvault_base) = start_tarvault(&store_dir, &map_path);
    let registry = packument_server(packuments(&entries, &tarvault_base)).await;

    let (project, out) = tokio::task::spawn_blocking({
        let root = root.to_path_buf();
        let registry = registry.clone();
        move || npm_install(&root, "good", &registry, &INSTALL)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "npm install failed: {}", log(&out));
    let lock: Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("package-lock.json"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut expected: Vec<(&str, &str)> = INSTALL
        .iter()
        .map(|spec| spec.rsplit_once('@').unwrap_or((spec, "")))
        .collect();
    expected.push(("wrappy", "1.0.2"));
    for (name, version) in expected {
        assert_eq!(
            installed_version(&project, name).as_deref(),
            Some(version),
            "{name} not installed: {}",
            log(&out)
        );
        let e = entries
            .iter()
            .find(|e| e.name == name && e.version == version)
            .unwrap_or_else(|| panic!("{name}@{version} not in corpus"));
        let locked = &lock["packages"][format!("node_modules/{name}")];
        assert_eq!(
            locked["resolved"].as_str(),
            Some(format!("{tarvault_base}{}", e.tarball_path).as_str())
        );
        assert_eq!(locked["integrity"].as_str(), Some(e.integrity.as_str()));
    }

    // Corrupt stored blobs in place; npm must fail and install nothing from them.
    for (name, version) in CORRUPT {
        let e = entries
            .iter()
            .find(|e| e.name == name && e.version == version)
            .unwrap_or_else(|| panic!("{name}@{version} not in corpus"));
        let integrity = Integrity::parse(&e.integrity).unwrap_or_else(|err| panic!("{err}"));
        let key = integrity
            .get(Algorithm::Sha512)
            .and_then(BlobKey::from_hash)
            .unwrap_or_else(|| panic!("no sha512"));
        common::corrupt_blob(&backend, &key, true);

        let spec = format!("{name}@{version}");
        let (project, out) = tokio::task::spawn_blocking({
            let root = root.to_path_buf();
            let registry = registry.clone();
            move || npm_install(&root, &format!("bad-{name}"), &registry, &[spec.as_str()])
        })
        .await
        .unwrap_or_else(|err| panic!("{err}"));
        assert!(
            !out.status.success(),
            "npm must fail for corrupt {name}: {}",
            log(&out)
        );
        eprintln!(
            "npm install {name} (corrupt blob), as expected:\n{}",
            log(&out)
        );
        // npm got as far as fetching the tarball from tarvault (the packument was fine).
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{tarvault_base}{}", e.tarball_path)),
            "npm never asked tarvault for {name}: {}",
            log(&out)
        );
        assert_eq!(installed_version(&project, name), None, "{}", log(&out));
        // Not installed in npm's eyes: in neither lockfile. (npm extracts while it downloads; when
        // the body is cut short its cleanup can race the extraction and leave a partial directory
        // behind, without a package.json, which npm then ignores.)
        for lockfile in ["package-lock.json", "node_modules/.package-lock.json"] {
            let text = std::fs::read_to_string(project.join(lockfile)).unwrap_or_default();
            assert!(
                !text.contains(&format!("node_modules/{name}\"")),
                "{lockfile} lists corrupt {name}: {text}"
            );
        }
        let leftovers = files_under(&project.join("node_modules").join(name));
        if !leftovers.is_empty() {
            eprintln!("npm left a partial {name} directory after failing: {leftovers:?}");
        }
    }

    // The server saw and counted both failures (npm's own integrity check never got the chance
    // to be the one that caught them).
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .get(format!("{tarvault_base}/-/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let failures: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tarvault_integrity_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no failure counter in\n{text}"));
    assert!(
        failures >= 2,
        "integrity failures counted: {failures}\n{text}"
    );
}
