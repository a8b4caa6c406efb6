//! Shared helpers for the Manta tests: where the test server is, scratch keys made with
//! `ssh-keygen`, and private test-server processes (for fault injection).
//!
//! The server comes from the environment `.ci/run` (via `backends/manta/start.sh`) exports:
//! `MANTA_URL`, `MANTA_USER`, `MANTA_KEY_MATERIAL`, `MANTA_KEY_ID` (a running shared server) and
//! `MANTA_TEST_SERVER_BIN` (the binary, for tests that need a server of their own). Without them a
//! locally built `backends/target/debug/manta-test-server` is used; with neither, tests fail under
//! `CI` and print `skipped: …` otherwise ([`no_server`]).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tarvault::backend::manta::{MantaBackend, MantaConfig};

pub const USER: &str = "testuser";

/// Says there is no Manta test server for `what`: the test fails under CI, and elsewhere prints
/// `skipped: …` and its caller returns.
pub fn no_server(what: &str) {
    crate::common::skip_or_fail(&format!(
        "{what}: no Manta test server (MANTA_URL, MANTA_USER and MANTA_KEY_MATERIAL are not set, \
         and there is no manta-test-server binary at MANTA_TEST_SERVER_BIN or \
         backends/target/debug/manta-test-server; `bash .ci/run` starts one with \
         backends/manta/start.sh)"
    ));
}

/// The test-server binary, if there is one.
pub fn server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MANTA_TEST_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let local =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("backends/target/debug/manta-test-server");
    local.is_file().then_some(local)
}

/// A scratch HOME with `.ssh/` keys made by `ssh-keygen`.
pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".ssh")).expect("mkdir .ssh");
        Keys { dir }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `ssh-keygen` for a new key `name` in `.ssh`; `args` pick the type.
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
}

/// `<key>.pub`.
pub fn pub_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// The MD5 fingerprint as `ssh-keygen -l -E md5` prints it, without `MD5:`.
pub fn md5_fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "md5", "-f"])
        .arg(pub_path(key))
        .output()
        .expect("ssh-keygen");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|f| f.strip_prefix("MD5:"))
        .expect("fingerprint")
        .to_string()
}

/// A test server process of our own, stopped when dropped.
pub struct ServerProcess {
    child: Child,
    pub url: String,
    pub root: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `bin` for `USER` with the given public keys and extra flags (fault switches).
    pub fn spawn(bin: &Path, pubkeys: &[PathBuf], extra: &[&str]) -> ServerProcess {
        let root = tempfile::tempdir().expect("tempdir");
        let port_file = root.path().join("port");
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--root")
            .arg(root.path().join("data"))
            .arg("--user")
            .arg(USER)
            .arg("--port-file")
            .arg(&port_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for k in pubkeys {
            cmd.arg("--pubkey").arg(k);
        }
        let mut child = cmd.spawn().expect("start manta-test-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                if let Ok(p) = p.trim().parse::<u16>() {
                    break p;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("manta-test-server exited: {status}");
            }
            assert!(Instant::now() < deadline, "manta-test-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        ServerProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            root,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where to reach a Manta server with which key.
pub struct Target {
    pub url: String,
    pub user: String,
    pub key: PathBuf,
    /// A HOME whose `.ssh/id_rsa` is `key` (for node-manta), when known.
    pub home: Option<PathBuf>,
    /// Keeps a private server (and its keys) alive.
    _own: Option<(ServerProcess, Keys)>,
}

impl Target {
    /// The shared server from the environment, or a private one from the binary; `None` (the
    /// test returns) when there is neither, see [`no_server`].
    pub fn get(what: &str) -> Option<Target> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(url), Some(user), Some(key)) = (
            var("MANTA_URL"),
            var("MANTA_USER"),
            var("MANTA_KEY_MATERIAL"),
        ) {
            return Some(Target {
                url,
                user,
                key: PathBuf::from(key),
                home: var("MANTA_TEST_HOME").map(PathBuf::from),
                _own: None,
            });
        }
        Self::private(what, &[])
    }

    /// A private server (with fault flags), with a fresh RSA key; `None` (the test returns) when
    /// there is no test-server binary, see [`no_server`].
    pub fn private(what: &str, extra: &[&str]) -> Option<Target> {
        let Some(bin) = server_bin() else {
            no_server(what);
            return None;
        };
        let keys = Keys::new();
        let key = keys.rsa();
        let server = ServerProcess::spawn(&bin, &[pub_path(&key)], extra);
        Some(Target {
            url: server.url.clone(),
            user: USER.into(),
            home: Some(keys.home().to_path_buf()),
            key,
            _own: Some((server, keys)),
        })
    }

    /// A configuration for a fresh, unique store directory under `/stor`.
    pub fn config(&self, prefix: &str) -> MantaConfig {
        let root = format!("/{}/stor/{prefix}-{}", self.user, unique());
        let mut c = MantaConfig::from_store_url(&format!(
            "manta:///stor/x?url={}&user={}&key={}",
            self.url,
            self.user,
            self.key.display()
        ))
        .expect("config");
        c.root = root;
        c.key_id = None;
        c
    }

    pub fn backend(&self, prefix: &str) -> MantaBackend {
        MantaBackend::new(self.config(prefix)).expect("backend")
    }
}

/// A process-unique name part.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A stand-in for a Manta server on a loopback port, for answers no real one gives: each
/// request's target (path and query) goes to `answer`, whose reply (status line, headers and
/// body) is written as it is before the connection is closed.
pub async fn stand_in(answer: fn(&str) -> String) -> String {
    stand_in_with(answer, false).await
}

/// A [`stand_in`] that leaves each connection open once its reply is written (for a minute): a
/// server whose body goes on after what it sent, as far as the client can tell.
pub async fn stand_in_held(answer: fn(&str) -> String) -> String {
    stand_in_with(answer, true).await
}

async fn stand_in_with(answer: fn(&str) -> String, hold: bool) -> String {
    use tokio::io::AsyncWriteExt;
    let (listener, at) = crate::common::loopback().await;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(Some(head)) = crate::common::request_proxy::read_head(&mut sock).await
                else {
                    return;
                };
                let head = String::from_utf8_lossy(&head).to_string();
                let reply = answer(head.split(' ').nth(1).unwrap_or(""));
                let _ = sock.write_all(reply.as_bytes()).await;
                if hold {
                    let _ = sock.flush().await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{at}")
}

/// A backend on a [`stand_in`] at `url`, signing with a fresh key (kept alive by the `Keys`).
pub fn stand_in_backend(url: &str) -> (MantaBackend, Keys) {
    let keys = Keys::new();
    let key = keys.rsa();
    let cfg = MantaConfig::from_store_url(&format!(
        "manta:///stor/x?url={url}&user={USER}&key={}",
        key.display()
    ))
    .expect("config");
    (MantaBackend::new(cfg).expect("backend"), keys)
}

/// A `200` reply with a JSON-stream (directory listing) body.
pub fn listing(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-json-stream; type=directory\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A `404` reply as muskie words it.
pub fn not_found() -> String {
    let body = "{\"code\":\"ResourceNotFound\",\"message\":\"not found\"}";
    format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}
