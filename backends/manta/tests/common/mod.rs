//! Shared helpers: scratch keys made with `ssh-keygen`, an in-process server
//! and a minimal HTTP/1.1 client that signs requests like node-manta.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use manta_test_server::sign::Signer;
use manta_test_server::{serve, Config, ServerHandle};
use tokio::net::TcpStream;

pub const USER: &str = "testuser";

/// For a test that cannot run because a tool it needs is absent: under CI (`CI` set to anything
/// but empty, `0` or `false`) this fails the test, naming `reason`; elsewhere it prints
/// `skipped: <reason>` and the caller returns. (The same rule as tarvault's `tests/common`.)
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")) {
        panic!("{reason} (CI must run this test: see .ci/run)");
    }
    eprintln!("skipped: {reason}");
}

/// A scratch HOME with `.ssh/id_rsa` (and optionally `id_ecdsa`).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home/.ssh")).expect("mkdir .ssh");
        std::fs::create_dir_all(dir.path().join("root")).expect("mkdir root");
        Scratch { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs `ssh-keygen` for a new key `name` (e.g. `id_rsa`) in `.ssh`.
    pub fn keygen(&self, name: &str, args: &[&str]) -> PathBuf {
        let path = self.home().join(".ssh").join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .args(args)
            .output()
            .expect("ssh-keygen must be installed (openssh-client)");
        assert!(out.status.success(), "ssh-keygen failed: {out:?}");
        path
    }

    pub fn rsa(&self) -> PathBuf {
        self.keygen("id_rsa", &["-t", "rsa", "-b", "2048"])
    }

    pub fn ecdsa(&self) -> PathBuf {
        self.keygen("id_ecdsa", &["-t", "ecdsa", "-b", "256"])
    }
}

/// `<key>.pub`.
pub fn pub_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Starts a server for `USER` trusting the given private keys' public halves.
pub async fn start(root: &Path, keys: &[&Path]) -> ServerHandle {
    let mut cfg = Config::new(root, USER);
    for k in keys {
        cfg = cfg.pubkey_file(pub_path(k));
    }
    serve(cfg).await.expect("server starts")
}

/// A fully read response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The muskie error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_string()
    }
}

/// What to send as the request body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// Sent with `Transfer-Encoding: chunked`.
    Chunked(Vec<Vec<u8>>),
}

/// A client for one server, signing with `signer` unless told otherwise.
pub struct Client {
    pub addr: std::net::SocketAddr,
    pub signer: Option<Signer>,
}

impl Client {
    pub fn new(server: &ServerHandle, key: &Path) -> Client {
        Client {
            addr: server.addr(),
            signer: Some(Signer::from_file(key, USER).expect("signer")),
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Resp, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if let Some(s) = &self.signer {
            if !has("authorization") {
                let (date, authz) = s.sign_now();
                if !has("date") {
                    b = b.header("date", date);
                }
                b = b.header("authorization", authz);
            }
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body: manta_body::Body = match body {
            Body::Empty => manta_body::full(Vec::new()),
            Body::Bytes(v) => manta_body::full(v),
            Body::Chunked(chunks) => manta_body::chunked(chunks),
        };
        let req = b.body(body).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Resp {
        self.send(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn mkdir(&self, path: &str) -> Resp {
        let r = self
            .req(
                "PUT",
                path,
                &[("content-type", "application/json; type=directory")],
                Body::Empty,
            )
            .await;
        assert_eq!(r.status, 204, "mkdir {path}: {}", r.text());
        r
    }

    pub async fn put(&self, path: &str, data: &[u8]) -> Resp {
        let r = self
            .req(
                "PUT",
                path,
                &[("content-type", "application/octet-stream")],
                Body::Bytes(data.to_vec()),
            )
            .await;
        assert_eq!(r.status, 204, "put {path}: {}", r.text());
        r
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], Body::Empty).await
    }
}

/// Request bodies for the test client.
pub mod manta_body {
    use super::*;
    use http_body_util::combinators::UnsyncBoxBody;

    pub type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

    pub fn full(v: Vec<u8>) -> Body {
        Full::new(Bytes::from(v)).boxed_unsync()
    }

    pub fn chunked(chunks: Vec<Vec<u8>>) -> Body {
        let s = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c)))),
        );
        StreamBody::new(s).boxed_unsync()
    }
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
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

/// Base64 MD5.
pub fn md5_b64(data: &[u8]) -> String {
    manta_test_server::util::md5_b64(data)
}
