//! A request-aware fault proxy on 127.0.0.1 in front of a test server (S3 or Manta): each
//! connection's first request line is matched against rules; a matching connection gets the
//! rule's fault, every other one is passed through. Unlike `tests/s3/proxy.rs` (faults by
//! connection order), this picks out one kind of request whatever else the client sends, e.g. the
//! blob PUT among a put's marker PUTs.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Relay the response head and this many body bytes, then stall with the socket left open:
    /// a server that hangs mid-body.
    StallBody(usize),
    /// Relay the request, then close the client's connection as soon as the server starts
    /// answering: the request took effect, its answer is lost.
    DropResponse,
    /// Answer with these bytes (a whole HTTP response) instead of the server, which never sees
    /// the request: an answer the server would not give (a refusal it stopped making, say).
    Answer(&'static str),
}

struct Rule {
    needle: String,
    fault: Fault,
    /// Connections left to fault; `None`: every matching one.
    left: Option<usize>,
}

pub struct Proxy {
    port: u16,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// The first request line of every connection so far.
    seen: Arc<Mutex<Vec<String>>>,
    /// Answers passed through say `Connection: close`, so that each request comes on a
    /// connection of its own (rules look at a connection's first request only).
    close: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`) with no rules yet.
    pub async fn start(upstream: String) -> Proxy {
        let (listener, addr) = super::loopback().await;
        let port = addr.port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::new(Mutex::new(Vec::new()));
        let r = rules.clone();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s = seen.clone();
        let close = Arc::new(AtomicBool::new(false));
        let c = close.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let rules = r.clone();
                let seen = s.clone();
                let close = c.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, rules, seen, close).await;
                });
            }
        });
        Proxy {
            port,
            rules,
            seen,
            close,
            task,
        }
    }

    /// From now on, every answer passed through carries `Connection: close`: the client opens a
    /// connection per request, and every request is one a rule can pick out.
    pub fn one_request_per_connection(&self) {
        self.close.store(true, Ordering::Relaxed);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next connection whose first request line contains `needle` gets `fault` (once).
    pub fn once(&self, needle: &str, fault: Fault) {
        self.add(needle, fault, Some(1));
    }

    /// Every connection whose first request line contains `needle` gets `fault`.
    pub fn always(&self, needle: &str, fault: Fault) {
        self.add(needle, fault, None);
    }

    /// The first request line of every connection so far (with
    /// [`one_request_per_connection`](Self::one_request_per_connection), of every request).
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }

    /// Rules not used up yet: a test asserts a `once` fault was dealt where it meant it to be.
    pub fn rules_left(&self) -> usize {
        self.rules.lock().expect("lock").len()
    }

    fn add(&self, needle: &str, fault: Fault, left: Option<usize>) {
        self.rules.lock().expect("lock").push(Rule {
            needle: needle.to_string(),
            fault,
            left,
        });
    }
}

/// Reads from `sock` until the end of a request's head (`\r\n\r\n`): the bytes read, which may
/// run past the head into the body; `None` if the connection ended first.
pub async fn read_head(sock: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(head))
}

/// `host:port` of an `http://host:port[/]` URL.
pub fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<String>>>,
    close: bool,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut client).await? else {
        return Ok(());
    };
    let end = head.iter().position(|b| *b == b'\r').unwrap_or(0);
    let line = String::from_utf8_lossy(&head[..end]).to_string();
    seen.lock().expect("lock").push(line.clone());
    let fault = {
        let mut g = rules.lock().expect("lock");
        match g.iter().position(|r| line.contains(r.needle.as_str())) {
            Some(i) => {
                let fault = g[i].fault;
                match &mut g[i].left {
                    Some(1) => {
                        g.remove(i);
                    }
                    Some(n) => *n -= 1,
                    None => {}
                }
                Some(fault)
            }
            None => None,
        }
    };
    if let Some(Fault::Answer(answer)) = fault {
        client.write_all(answer.as_bytes()).await?;
        return client.shutdown().await;
    }
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    server.write_all(&head).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
        std::future::pending::<()>().await;
    };
    let down = async move {
        match fault {
            None => {
                if close {
                    let _ = relay_head_closing(&mut sr, &mut cw).await;
                }
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            }
            // Answered above, without the server.
            Some(Fault::Answer(_)) => {}
            Some(Fault::DropResponse) => {
                // Returning drops both halves of both sockets once the server answers: the
                // client sees the connection close before any byte of the response.
                let mut b = [0u8; 1];
                let _ = sr.read(&mut b).await;
            }
            Some(Fault::StallBody(n)) => {
                let mut got: Vec<u8> = Vec::new();
                let mut b = vec![0u8; 64 * 1024];
                let limit = loop {
                    if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        if got.len() >= p + 4 + n {
                            break p + 4 + n;
                        }
                    }
                    let k = sr.read(&mut b).await.unwrap_or(0);
                    if k == 0 {
                        break got.len();
                    }
                    got.extend_from_slice(&b[..k]);
                };
                let _ = cw.write_all(&got[..limit]).await;
                let _ = cw.flush().await;
                // Stall, keeping both sockets open until the client gives up on them.
                std::future::pending::<()>().await;
                drop((sr, cw));
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    Ok(())
}

/// Relays the response head with `Connection: close` added (and any body bytes read with it).
async fn relay_head_closing(
    sr: &mut tokio::net::tcp::OwnedReadHalf,
    cw: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut got: Vec<u8> = Vec::new();
    let mut b = vec![0u8; 64 * 1024];
    let end = loop {
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let k = sr.read(&mut b).await?;
        if k == 0 {
            return cw.write_all(&got).await;
        }
        got.extend_from_slice(&b[..k]);
    };
    // After the status line and headers, before the blank line.
    let mut out = got[..end + 2].to_vec();
    out.extend_from_slice(b"connection: close\r\n");
    out.extend_from_slice(&got[end + 2..]);
    cw.write_all(&out).await
}
