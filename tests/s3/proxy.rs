//! A fault-injecting TCP proxy on 127.0.0.1 in front of a test server: it passes traffic through,
//! answers `503` instead, or resets connections after some bytes of an upload. Each accepted
//! connection takes the next fault from a script; connections are counted, so tests can check
//! that retries stay bounded.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::request_proxy::read_head;

/// What to do with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Read the request head, answer `503 Service Unavailable` and close.
    Unavailable,
    /// Forward, but reset the connection (RST) once this many request bytes went upstream.
    ResetAfter(usize),
    /// Forward, holding each piece of a request for this long first: a server on another
    /// machine, as far as round trips go.
    Delay(std::time::Duration),
}

pub struct Proxy {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    script: Arc<Mutex<(Vec<Fault>, Fault)>>,
    /// Bumped by [`Proxy::cut`]: every connection open at that moment is closed.
    cuts: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`): the first connections get `first` in order, every
    /// later one gets `then`.
    pub async fn start(upstream: String, first: Vec<Fault>, then: Fault) -> Proxy {
        let (listener, addr) = crate::common::loopback().await;
        let port = addr.port();
        let connections = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new((first, then)));
        let cuts = tokio::sync::watch::channel(0u64).0;
        let (c, s, k) = (connections.clone(), script.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let fault = {
                    let mut g = s.lock().expect("lock");
                    if g.0.is_empty() {
                        g.1
                    } else {
                        g.0.remove(0)
                    }
                };
                let upstream = upstream.clone();
                let mut cut = k.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(client, &upstream, fault) => {}
                        // Dropping the sockets closes both sides, mid-exchange or idle.
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            connections,
            script,
            cuts,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// From now on every connection gets `fault`.
    pub fn set(&self, fault: Fault) {
        let mut g = self.script.lock().expect("lock");
        g.0.clear();
        g.1 = fault;
    }

    /// From now on every connection gets `fault`, and every connection open now is closed (a
    /// client's pooled connections too): a server that goes bad mid-run.
    pub fn cut(&self, fault: Fault) {
        self.set(fault);
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(deprecated)]
async fn serve(mut client: TcpStream, upstream: &str, fault: Fault) -> std::io::Result<()> {
    match fault {
        Fault::Unavailable => {
            if read_head(&mut client).await?.is_none() {
                return Ok(());
            }
            let mut buf = [0u8; 8192];
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>";
            let resp = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(resp.as_bytes()).await?;
            client.shutdown().await?;
            // Drain what the client still sends so it reads our answer rather than a reset.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
                while client.read(&mut buf).await.unwrap_or(0) > 0 {}
            })
            .await;
            Ok(())
        }
        Fault::Pass | Fault::ResetAfter(_) | Fault::Delay(_) => {
            let server = TcpStream::connect(upstream).await?;
            // Relay each piece as it comes: Nagle's algorithm against delayed ACKs would add tens
            // of milliseconds per exchange that no real network has.
            client.set_nodelay(true)?;
            server.set_nodelay(true)?;
            let limit = match fault {
                Fault::ResetAfter(n) => Some(n),
                _ => None,
            };
            let delay = match fault {
                Fault::Delay(d) => Some(d),
                _ => None,
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let reset = {
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = cr.read(&mut buf).await?;
                        if n == 0 {
                            sw.shutdown().await?;
                            // Keep relaying the response until the server is done.
                            std::future::pending::<()>().await;
                        }
                        if let Some(d) = delay {
                            tokio::time::sleep(d).await;
                        }
                        if let Some(l) = limit {
                            if sent + n >= l {
                                sw.write_all(&buf[..l - sent]).await?;
                                return Ok::<bool, std::io::Error>(true);
                            }
                        }
                        sw.write_all(&buf[..n]).await?;
                        sent += n;
                    }
                };
                let down = async {
                    tokio::io::copy(&mut sr, &mut cw).await?;
                    cw.shutdown().await
                };
                tokio::select! {
                    r = up => r?,
                    r = down => { r?; false }
                }
            };
            if reset {
                // SO_LINGER 0 (deprecated in tokio because a non-zero linger blocks on drop;
                // zero does not), then close: both peers see a connection reset, mid-request.
                let client = cr
                    .reunite(cw)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let server = sr
                    .reunite(sw)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                client.set_linger(Some(std::time::Duration::ZERO))?;
                server.set_linger(Some(std::time::Duration::ZERO))?;
            }
            Ok(())
        }
    }
}
