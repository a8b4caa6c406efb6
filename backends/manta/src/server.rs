//! Listener, per-request wrapper (fault injection, muskie's common response
//! headers) and the in-process handle used by tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Account;
use crate::faults::{Faults, Rng, Truncated};
use crate::http::{error_response, Body, Failure};
use crate::keys::{parse_openssh_public, read_public_key_file, AccountKey};
use crate::store::Store;
use crate::{routes, util};

/// Server configuration (the CLI flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Where objects and metadata live.
    pub root: PathBuf,
    /// The account login (`MANTA_USER`).
    pub user: String,
    /// OpenSSH public key files of the account.
    pub pubkey_files: Vec<PathBuf>,
    /// OpenSSH public key lines of the account (in addition to the files).
    pub pubkeys: Vec<String>,
    pub faults: Faults,
    /// Seed for the fault-injection dice (random when `None`).
    pub fault_seed: Option<u64>,
    /// SnapLinks as in Manta v1 (`true`, the default) or refused as Manta v2
    /// does (403 `SnaplinksDisabledError`).
    pub snaplinks: bool,
}

impl Config {
    /// A config listening on `127.0.0.1:0` with no keys and no faults.
    pub fn new(root: impl Into<PathBuf>, user: impl Into<String>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            root: root.into(),
            user: user.into(),
            pubkey_files: Vec::new(),
            pubkeys: Vec::new(),
            faults: Faults::default(),
            fault_seed: None,
            snaplinks: true,
        }
    }

    pub fn pubkey_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pubkey_files.push(path.into());
        self
    }

    pub fn pubkey(mut self, line: impl Into<String>) -> Self {
        self.pubkeys.push(line.into());
        self
    }

    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid account name {0:?}")]
    Account(String),
    #[error("public key: {0}")]
    Key(String),
    #[error("no public keys given (--pubkey)")]
    NoKeys,
    #[error("storage root {0}: {1}")]
    Root(PathBuf, std::io::Error),
    #[error("bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Shared server state.
#[derive(Debug)]
pub struct State {
    pub account: Account,
    pub snaplinks: bool,
    pub store: Store,
    pub faults: Mutex<Faults>,
    rng: Mutex<Rng>,
}

/// A running server. Dropping it (or calling [`ServerHandle::shutdown`])
/// stops accepting connections.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address (the real port when listening on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, what `MANTA_URL` should be.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The account login.
    pub fn user(&self) -> &str {
        &self.state.account.login
    }

    /// Changes the fault switches of the running server.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.state.faults.lock() {
            *f = faults;
        }
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn valid_login(l: &str) -> bool {
    let mut chars = l.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && l.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_-.@%".contains(c))
}

/// Starts the server; returns once it is listening.
pub async fn serve(config: Config) -> Result<ServerHandle, ServeError> {
    if !valid_login(&config.user) {
        return Err(ServeError::Account(config.user));
    }
    let mut keys: HashMap<String, AccountKey> = HashMap::new();
    for f in &config.pubkey_files {
        for k in read_public_key_file(f).map_err(ServeError::Key)? {
            keys.insert(k.fingerprint.clone(), k);
        }
    }
    for line in &config.pubkeys {
        let k = parse_openssh_public(line).map_err(|e| ServeError::Key(e.to_string()))?;
        keys.insert(k.fingerprint.clone(), k);
    }
    if keys.is_empty() {
        return Err(ServeError::NoKeys);
    }
    let store = Store::open(&config.root, &config.user)
        .map_err(|e| ServeError::Root(config.root.clone(), e))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    let state = Arc::new(State {
        account: Account {
            login: config.user.clone(),
            keys,
        },
        snaplinks: config.snaplinks,
        store,
        faults: Mutex::new(config.faults.clone()),
        rng: Mutex::new(Rng::new(config.fault_seed)),
    });
    let (stop, mut stopped) = watch::channel(false);
    let st = state.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _peer)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let st = st.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| handle(st.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        }
    });
    tracing::info!(%addr, user = %state.account.login, "manta test server listening");
    Ok(ServerHandle {
        addr,
        state,
        stop,
        task: Some(task),
    })
}

/// The connection is closed without an answer (fault injection).
#[derive(Debug)]
pub struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(util::new_uuid);
    let is_head = req.method() == hyper::Method::HEAD;
    let decision = {
        let faults = state.faults.lock().map(|f| f.clone()).unwrap_or_default();
        let mut rng = state.rng.lock().unwrap_or_else(|e| e.into_inner());
        faults.decide(&mut rng)
    };
    if let Some(d) = decision.delay {
        tokio::time::sleep(d).await;
    }
    let method = req.method().clone();
    let uri = req.uri().clone();
    let result = match decision.fail {
        Some(e) => Err(Failure::Api(e)),
        None => routes::dispatch(state.clone(), req, decision.drop).await,
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(Failure::Drop) => return Err(Dropped),
        Err(Failure::Api(e)) => {
            tracing::debug!(%method, %uri, status = e.status.as_u16(), code = e.code, "error");
            error_response(&e)
        }
    };
    if decision.drop {
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if is_head || len == 0 {
            return Err(Dropped);
        }
        let (parts, body) = resp.into_parts();
        resp = Response::from_parts(
            parts,
            http_body_util::BodyExt::boxed_unsync(Truncated::new(body, len / 2)),
        );
    }
    if is_head {
        // Keep the headers (Content-Length included), send no body.
        let (parts, _) = resp.into_parts();
        resp = Response::from_parts(parts, crate::http::empty());
    }
    let h = resp.headers_mut();
    let set = |h: &mut hyper::HeaderMap, k: &'static str, v: String| {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(h, "date", util::http_date(util::now_ms()));
    set(h, "server", "Manta".to_string());
    set(h, "x-request-id", request_id);
    set(
        h,
        "x-response-time",
        start.elapsed().as_millis().to_string(),
    );
    set(h, "x-server-name", "manta-test-server".to_string());
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), "request");
    Ok(resp)
}
