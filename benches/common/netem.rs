//! A userspace network emulator: a TCP proxy on 127.0.0.1 that adds a one-way delay in each
//! direction and caps each direction's bandwidth, so a loopback server looks like one across a
//! real network (this machine has no `tc`/`netem`).
//!
//! Every chunk read from one side is given a delivery time: the link is modelled as one
//! serialisation queue per direction, shared by all connections (a chunk starts when the link is
//! free and takes `len / rate` on it), and the chunk arrives `delay` after it left the link. A
//! writer thread sleeps until then (`std::thread::sleep`: nanosleep, tens of µs of slack, where
//! tokio's timer rounds to whole milliseconds). The delay is a timestamp per chunk, not a sleep
//! in the reading path, so throughput is not serialised by it: a window of chunks is in flight at
//! once, as on a real link. At most [`QUEUE`] chunks wait per connection and direction (the
//! router's buffer); a full queue stops the reader, which is TCP backpressure to the sender.
//!
//! It runs in its own process (the benchmark starts itself with `--netem`), so its CPU is not
//! counted as the client's.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes read at most at a time (a read returns what has arrived, so small messages are not held
/// back; 64 KiB is 0.5 ms on a 1 Gbit/s link, like a NIC's segmentation offload).
const CHUNK: usize = 64 * 1024;
/// Chunks waiting per connection and direction (512 KiB: 4 ms at 1 Gbit/s).
const QUEUE: usize = 8;

/// One direction of the emulated link.
struct Link {
    /// When the link finishes sending what it was given so far.
    free_at: Mutex<Instant>,
    /// Seconds per byte (0: no cap).
    secs_per_byte: f64,
    delay: Duration,
}

impl Link {
    fn new(delay: Duration, bytes_per_sec: f64) -> Arc<Link> {
        Arc::new(Link {
            free_at: Mutex::new(Instant::now()),
            secs_per_byte: if bytes_per_sec > 0.0 {
                1.0 / bytes_per_sec
            } else {
                0.0
            },
            delay,
        })
    }

    /// When `len` bytes handed over now arrive at the other end.
    fn schedule(&self, len: usize) -> Instant {
        let now = Instant::now();
        let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*free).max(now);
        let done = start + Duration::from_secs_f64(len as f64 * self.secs_per_byte);
        *free = done;
        done + self.delay
    }
}

/// Emulation parameters: one-way delay and bandwidth cap per direction.
#[derive(Debug, Clone, Copy)]
pub struct Netem {
    pub one_way: Duration,
    /// Bytes per second each way; 0 = unlimited.
    pub bytes_per_sec: f64,
}

impl Netem {
    /// 1 ms round trip, 1 Gbit/s each way.
    pub const LAN: Netem = Netem {
        one_way: Duration::from_micros(500),
        bytes_per_sec: 125e6,
    };

    /// [`LAN`](Netem::LAN), with the round trip (`TARVAULT_NET_RTT_US`) and the rate
    /// (`TARVAULT_NET_MBIT`) changed where those are set: every benchmark behind the emulator
    /// takes the same two variables.
    pub fn from_env() -> Netem {
        let mut n = Netem::LAN;
        if let Some(rtt) = std::env::var("TARVAULT_NET_RTT_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            n.one_way = Duration::from_micros(rtt / 2);
        }
        if let Some(mbit) = std::env::var("TARVAULT_NET_MBIT")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
        {
            n.bytes_per_sec = mbit * 1e6 / 8.0;
        }
        n
    }

    pub fn to_args(self) -> [String; 2] {
        [
            self.one_way.as_micros().to_string(),
            format!("{}", self.bytes_per_sec as u64),
        ]
    }

    pub fn from_args(us: &str, rate: &str) -> Netem {
        Netem {
            one_way: Duration::from_micros(us.parse().expect("delay µs")),
            bytes_per_sec: rate.parse().expect("bytes/s"),
        }
    }
}

/// Serves the proxy on `listener` to `upstream` (`host:port`) forever.
pub fn serve(listener: TcpListener, upstream: String, net: Netem) {
    let up = Link::new(net.one_way, net.bytes_per_sec);
    let down = Link::new(net.one_way, net.bytes_per_sec);
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(&upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        pump(client, server, up.clone());
        pump(s2, c2, down.clone());
    }
}

/// Copies `from` to `to` through `link`: a reader thread stamps chunks, a writer thread delivers
/// them on time.
fn pump(mut from: TcpStream, mut to: TcpStream, link: Arc<Link>) {
    let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(QUEUE);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; CHUNK];
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.send((link.schedule(n), buf)).is_err() {
                    break;
                }
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((at, buf)) = rx.recv() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if to.write_all(&buf).is_err() {
                break;
            }
        }
        // The sender closed (or the other side failed): pass the close on.
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A proxy running in a child process, stopped on drop.
pub struct Child {
    pub port: u16,
    process: std::process::Child,
}

impl Child {
    /// Starts `exe --netem UPSTREAM DELAY_US BYTES_PER_SEC`, which must call [`child_main`].
    pub fn start(exe: &std::path::Path, upstream: &str, net: Netem) -> Child {
        use std::io::BufRead;
        let [us, rate] = net.to_args();
        let mut process = std::process::Command::new(exe)
            .args(["--netem", upstream, &us, &rate])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the netem proxy");
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("proxy port");
        let port = line.trim().parse().expect("proxy port");
        Child { port, process }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// CPU seconds the proxy process has used.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// For a benchmark's `main`: when this process was started as a proxy by [`Child::start`], serve
/// (until killed) and return true.
pub fn run_if_child() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--netem") {
        return false;
    }
    child_main(&args[2..]);
    true
}

/// The body of the proxy process: `args` = `[UPSTREAM, DELAY_US, BYTES_PER_SEC]`. Prints the
/// port, then serves until killed.
fn child_main(args: &[String]) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("addr").port());
    let _ = std::io::stdout().flush();
    serve(
        listener,
        args[0].clone(),
        Netem::from_args(&args[1], &args[2]),
    );
}

/// Checks what the proxy adds, against a local echo/sink server: the median round trip of
/// 1-byte ping-pongs and the rate of a 64 MiB one-way transfer. Returns (RTT µs, MB/s) through
/// the proxy at `endpoint_port` to the server it was started for (see [`calibration_server`]).
pub fn measure(port: u16) -> (f64, f64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut rtts = Vec::new();
    let mut b = [0u8; 1];
    for _ in 0..200 {
        let t = Instant::now();
        s.write_all(b"p").expect("ping");
        s.read_exact(&mut b).expect("pong");
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    let rtt = rtts[rtts.len() / 2];
    // Bulk: switch the server to sink mode with 'b', send 64 MiB, wait for its 1-byte ack.
    let total = 64usize << 20;
    s.write_all(b"b").expect("bulk");
    let block = vec![7u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..64 {
        s.write_all(&block).expect("send");
    }
    s.read_exact(&mut b).expect("ack");
    let rate = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    (rtt, rate)
}

/// A loopback server for [`measure`]: echoes single bytes; after a `b` it swallows 64 MiB and
/// answers one byte. Returns its port.
pub fn calibration_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() {
                    if b[0] == b'b' {
                        let mut left = 64usize << 20;
                        let mut buf = vec![0u8; 1 << 16];
                        while left > 0 {
                            match s.read(&mut buf[..left.min(1 << 16)]) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => left -= n,
                            }
                        }
                    }
                    if s.write_all(&b).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}
