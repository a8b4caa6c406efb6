//! `tarvault serve`: the tarball server on a socket until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tarvault::server::{self, Server};
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
}

pub(crate) async fn run(store: Store, args: ServeArgs) -> Result<u8, Error> {
    let server = match &args.map {
        Some(path) => Server::with_mapping_file(store, path)?,
        None => Server::new(store),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    // One line a script (or a test) can read to learn the port.
    outln!("listening on http://{local}");
    tracing::info!(addr = %local, mapped = server.mapped_urls(), "serving");
    server::serve(listener, server, shutdown_signal())
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
