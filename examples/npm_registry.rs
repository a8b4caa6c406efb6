//! A small npm registry built on tarvault: `npm publish`, `npm install` and `npm view` against a
//! verified, content-addressed tarball store. A proof that a registry can embed the library (its
//! HTTP handler and its publish ingest), not a registry product: one token, no users, no
//! unpublish, packuments as JSON files.
//!
//! ```text
//! cargo run --release --example npm_registry -- --store DIR --listen ADDR [--token TOKEN]
//! ```
//!
//! The token may also come from `$TARVAULT_REGISTRY_TOKEN`; without one, every publish is refused
//! (401). Packuments are kept in `DIR.packuments/` beside the store. Point npm at it with
//! `--registry http://ADDR/` and `//ADDR/:_authToken=TOKEN` in an npmrc.

#[path = "npm_registry/registry.rs"]
mod registry;

use std::path::PathBuf;

use registry::Registry;
use tarvault::server::ServeOptions;

const USAGE: &str = "usage: npm_registry --store DIR --listen ADDR [--token TOKEN]";

struct Args {
    store: PathBuf,
    listen: String,
    token: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut store = None;
    let mut listen = None;
    let mut token = std::env::var("TARVAULT_REGISTRY_TOKEN").ok();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--store" => store = Some(PathBuf::from(value()?)),
            "--listen" => listen = Some(value()?),
            "--token" => token = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        store: store.ok_or(USAGE)?,
        listen: listen.ok_or(USAGE)?,
        token,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TARVAULT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match args() {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if args.token.as_deref().is_none_or(str::is_empty) {
        tracing::warn!("no --token or TARVAULT_REGISTRY_TOKEN: every publish will be refused");
    }
    // As `tarvault serve` does: a soft open-file limit of 1024 would cap 4096 connections at 512.
    tarvault::server::raise_open_file_limit();
    let store = tarvault::Store::open_fs(&args.store)?;
    let reg = Registry::new(store, registry::packuments_beside(&args.store), args.token)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // The first line of stdout is the address, for scripts and tests that listen on port 0.
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // `tarvault serve`'s bounds: a 30 s header timeout, a 60 s idle timeout, 4096 connections.
    registry::serve(listener, reg, ServeOptions::default(), shutdown).await?;
    Ok(())
}
