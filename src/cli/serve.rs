//! `tarvault serve`: the tarball server on a socket until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tarvault::server::{self, ServeOptions, Server};
use tarvault::{Error, Store};

use super::exit;
use super::output::outln;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed on standard output).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4873")]
    listen: SocketAddr,
    /// The JSON-lines mapping written by `tarvault migrate couch --map`: also serve npm's tarball
    /// URLs (/<name>/-/<file>).
    #[arg(long, value_name = "FILE")]
    map: Option<PathBuf>,
    /// Seconds a request header may take to arrive (also the longest an idle HTTP/1.1
    /// keep-alive connection waits for its next request): a connection that sends nothing, half
    /// a header or a byte at a time is closed after it.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a connection may stay open with no new request before it is closed (gracefully:
    /// a response in flight finishes); what closes idle HTTP/2 connections.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds a response may wait on a client that takes less than 4 KiB of it before the
    /// connection is closed (what nginx calls `send_timeout`): frees what a download that stopped
    /// being read holds. A slow client that keeps reading is never cut off.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    send_timeout: u64,
    /// Connections open at once; further ones wait in the listen backlog until one closes.
    /// Lowered to half the open-file limit, which `serve` first raises to its hard limit.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Memory for blobs held whole once checked (`10MiB`, `1GiB`, `0`): the blobs of 8-64 MiB
    /// that are verified before their response's head and then sent from memory, and the copies
    /// a cache tier or replicas check before serving. Past it such blobs are read twice, or
    /// copies held in temporary files, instead; it bounds what stalled downloads of them can
    /// hold.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = tarvault::units::parse_size)]
    held_memory: u64,
    /// Blobs up to this size are read and verified whole before their response's head, so that
    /// a corrupt one gets a 500 and no cache sees a byte of it; a larger one streams verified as
    /// it goes, its body cut short if it turns out corrupt. The fs store only (from a remote
    /// store the head would wait for the whole download).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = tarvault::units::parse_size)]
    verify_before_head: u64,
}

pub(crate) async fn run(store: Store, args: ServeArgs) -> Result<u8, Error> {
    let server = match &args.map {
        Some(path) => Server::with_mapping_file(store, path)?,
        None => Server::new(store),
    };
    server.verify_before_head(args.verify_before_head);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    // One line a script (or a test) can read to learn the port.
    outln!("listening on http://{local}");
    tracing::info!(addr = %local, mapped = server.mapped_urls(), "serving");
    // The soft open-file limit is often 1024, which would lower `--max-connections` to 512.
    server::raise_open_file_limit();
    tarvault::backend::compose::verify::set_held_in_memory(args.held_memory);
    super::trim_memory_periodically();
    let options = ServeOptions {
        header_timeout: Duration::from_secs(args.header_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        send_timeout: Duration::from_secs(args.send_timeout),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
    };
    server::serve_with(listener, server, options, shutdown_signal())
        .await
        .map_err(|e| Error::Config(format!("server on {local} failed: {e}")))?;
    Ok(exit::OK)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_defaults_are_the_library_s() {
        let parsed = tarvault::units::parse_size("256MiB").ok();
        assert_eq!(
            parsed,
            Some(tarvault::backend::compose::verify::HELD_IN_MEMORY)
        );
        let parsed = tarvault::units::parse_size("64MiB").ok();
        assert_eq!(parsed, Some(tarvault::server::VERIFIED_BEFORE_HEAD));
    }
}
