//! `npm install` of 50 small packages through the example registry (`examples/npm_registry`)
//! against the same packuments and tarballs served by a static file server (an axum app reading
//! files from disk), each with a clean npm cache, alternating, median of `ROUNDS` (default 3).
//! Target: the registry's install time ≤ 1.25× the static server's (≥ 0.8× its speed).
//!
//! Run: `cargo bench --bench registry_install` (needs npm in PATH).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../examples/npm_registry/registry.rs"]
mod registry;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tarvault::server::ServeOptions;
use tarvault::Store;

const PACKAGES: usize = 50;
const TOKEN: &str = "bench-token";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let npm_ok = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !npm_ok {
        println!("skipped: npm is not in PATH");
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path();

    // The registry, with 50 packages published through its HTTP API.
    let store_dir = root.join("store");
    let store = Store::open_fs(&store_dir).expect("store");
    let packuments = registry::packuments_beside(&store_dir);
    let reg = registry::Registry::new(store.clone(), packuments.clone(), Some(TOKEN.into()))
        .expect("registry");
    let reg_addr = rt.block_on(async {
        let (listener, addr) = common::loopback().await;
        tokio::spawn(registry::serve(
            listener,
            reg,
            ServeOptions::default(),
            std::future::pending(),
        ));
        addr.to_string()
    });
    let names: Vec<String> = (0..PACKAGES).map(|i| format!("bench-pkg-{i}")).collect();
    for name in &names {
        let doc = publish_doc(name, &reg_addr);
        let path = format!("/{name}");
        let (status, body) = common::npm::http(&reg_addr, "PUT", &path, Some(TOKEN), &doc);
        assert_eq!(status, 201, "publish {name}: {body}");
    }

    // The same files for a static server: packuments at `<name>/index.json` (their tarball URLs
    // pointing at it), tarballs at `<name>/-/<file>`.
    let files = root.join("static");
    let static_addr = rt.block_on(listen(static_files(files.clone())));
    for name in &names {
        let text = std::fs::read_to_string(packuments.join(format!("{name}.json"))).expect("doc");
        let doc: Value =
            serde_json::from_str(&text.replace(&reg_addr, &static_addr)).expect("json");
        let dir = files.join(name);
        std::fs::create_dir_all(dir.join("-")).expect("mkdir");
        std::fs::write(dir.join("index.json"), doc.to_string()).expect("write");
        let sri = doc["versions"]["1.0.0"]["dist"]["integrity"]
            .as_str()
            .expect("integrity");
        let tgz = rt
            .block_on(async {
                store
                    .get(&tarvault::Integrity::parse(sri)?)
                    .await?
                    .bytes()
                    .await
            })
            .expect("tarball");
        std::fs::write(dir.join("-").join(format!("{name}-1.0.0.tgz")), tgz).expect("write");
    }

    println!("npm install of {PACKAGES} small packages, clean cache each time, median of {rounds}");
    let (mut t_reg, mut t_static) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        t_static.push(install(
            root,
            &format!("static-{round}"),
            &static_addr,
            &names,
        ));
        t_reg.push(install(
            root,
            &format!("registry-{round}"),
            &reg_addr,
            &names,
        ));
    }
    let (r, s) = (median(t_reg), median(t_static));
    println!("  static file server   {:>7.2} s", s.as_secs_f64());
    println!(
        "  example registry     {:>7.2} s  ({:.2}× the static server's speed; target ≥ 0.8×)",
        r.as_secs_f64(),
        s.as_secs_f64() / r.as_secs_f64()
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn listen(app: axum::Router) -> String {
    let (listener, addr) = common::loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

/// A static file server: `GET /<path>` is the file `dir/<path>`, or `dir/<path>/index.json`.
fn static_files(dir: PathBuf) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let dir = dir.clone();
        async move {
            let rel = percent_encoding::percent_decode_str(uri.path().trim_start_matches('/'))
                .decode_utf8_lossy()
                .into_owned();
            if rel.contains("..") {
                return StatusCode::BAD_REQUEST.into_response();
            }
            let path = dir.join(&rel);
            let (path, kind) = if path.is_dir() {
                (path.join("index.json"), "application/json")
            } else {
                (path, "application/octet-stream")
            };
            match tokio::fs::read(&path).await {
                Ok(bytes) => ([(header::CONTENT_TYPE, kind)], bytes).into_response(),
                Err(_) => StatusCode::NOT_FOUND.into_response(),
            }
        }
    })
}

/// A small package tarball's publish document, as npm would send it.
fn publish_doc(name: &str, addr: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let files = [
        (
            "package/package.json",
            json!({"name": name, "version": "1.0.0", "main": "index.js"}).to_string(),
        ),
        (
            "package/index.js",
            format!("module.exports = {name:?};\n{}", "// padding\n".repeat(200)),
        ),
    ];
    for (path, text) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, text.as_bytes()).expect("tar");
    }
    let raw = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).expect("gzip");
    let tgz = gz.finish().expect("gzip");
    let sri = {
        use sha2::Digest;
        let d = sha2::Sha512::digest(&tgz);
        format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(d)
        )
    };
    common::npm::publish_doc(name, "1.0.0", &tgz, &sri, &format!("http://{addr}/"))
}

/// `npm install` of every package into a fresh project with a fresh cache; its wall time.
fn install(root: &Path, name: &str, addr: &str, packages: &[String]) -> Duration {
    let registry = format!("http://{addr}/");
    let (_, mut cmd) = common::npm::install_command(root, name, &registry, packages);
    let started = Instant::now();
    let out = cmd.output().expect("npm");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "npm install ({name}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}
