//! Helpers of the tests that drive the real npm CLI (`npm_e2e.rs`, `npm_registry.rs`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::json;

/// Whether npm runs here; if not, skips (or fails under CI) with the reason.
pub fn npm_available() -> bool {
    let ok = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        super::skip_or_fail(
            "npm is not in PATH (install node and npm; `bash .ci/run` installs them)",
        );
    }
    ok
}

/// An npm command that talks to loopback only: no proxy from the environment.
pub fn npm_command() -> Command {
    let mut cmd = Command::new("npm");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "npm_config_proxy",
        "npm_config_https_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1").stdin(Stdio::null());
    cmd
}

/// A command's status and output, for assertion messages.
pub fn log(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An empty private project `dir/name` for `npm install`.
pub fn project(dir: &Path, name: &str) -> PathBuf {
    let project = dir.join(name);
    std::fs::create_dir_all(&project).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        project.join("package.json"),
        format!("{{\"name\":\"{name}\",\"version\":\"1.0.0\",\"private\":true}}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    project
}

/// `npm install PACKAGES` in a fresh project `root/name` (returned) with a fresh cache and an
/// empty user config, so that it talks to nothing but `registry`. Callers add their own flags.
pub fn install_command(
    root: &Path,
    name: &str,
    registry: &str,
    packages: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
) -> (PathBuf, Command) {
    let project = project(root, name);
    let npmrc = root.join("empty-npmrc");
    std::fs::write(&npmrc, "").unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = npm_command();
    cmd.arg("install")
        .args(packages)
        .arg(format!("--registry={registry}"))
        .arg(format!(
            "--cache={}",
            root.join(format!("{name}-cache")).display()
        ))
        .arg(format!("--userconfig={}", npmrc.display()))
        .args([
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--no-update-notifier",
        ])
        .current_dir(&project);
    (project, cmd)
}

/// One raw HTTP/1.1 request; returns the status and the body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    // The server may answer before reading everything (a refusal): a failed write is fine.
    let _ = s.write_all(body);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A publish document as npm sends it, with `integrity` as its claim.
pub fn publish_doc(
    name: &str,
    version: &str,
    tgz: &[u8],
    integrity: &str,
    registry: &str,
) -> Vec<u8> {
    let file = format!("{name}-{version}.tgz");
    json!({
        "_id": name, "name": name, "dist-tags": {"latest": version},
        "versions": {version: {"name": name, "version": version,
            "dist": {"integrity": integrity, "tarball": format!("{registry}{name}/-/{file}")}}},
        "_attachments": {file: {"content_type": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(tgz), "length": tgz.len()}},
    })
    .to_string()
    .into_bytes()
}
