//! `manta-test-server`: run the Manta test server from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use manta_test_server::{serve, Config, Faults};

/// A protocol-faithful Joyent Manta (muskie) test server.
#[derive(Debug, Parser)]
#[command(name = "manta-test-server", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory holding the objects and their metadata.
    #[arg(long)]
    root: PathBuf,
    /// The account login (MANTA_USER).
    #[arg(long)]
    user: String,
    /// OpenSSH public key file of the account (repeatable).
    #[arg(long = "pubkey", required = true)]
    pubkeys: Vec<PathBuf>,
    /// Write the bound port to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Fraction of requests answered 503 (ServiceUnavailable or ThrottledError).
    #[arg(long, default_value_t = 0.0)]
    fail_503_rate: f64,
    /// Delay every request by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// Fraction of requests whose connection is dropped mid-request/mid-body.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Seed for the fault-injection dice (reproducible runs).
    #[arg(long)]
    fault_seed: Option<u64>,
    /// Refuse SnapLinks as Manta v2 does (403 SnaplinksDisabledError).
    #[arg(long)]
    disable_snaplinks: bool,
    /// Run the server's clock this many seconds ahead of the system clock (negative: behind):
    /// beyond 300, every signed request is refused as muskie refuses a client with a wrong clock.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset_secs: i64,
}

fn rate(name: &str, v: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("--{name} must be between 0 and 1"))
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let cli = Cli::parse();
    manta_test_server::util::set_clock_offset_secs(cli.clock_offset_secs);
    let faults = match (
        rate("fail-503-rate", cli.fail_503_rate),
        rate("drop-rate", cli.drop_rate),
    ) {
        (Ok(f), Ok(d)) => Faults {
            fail_503_rate: f,
            slow_ms: cli.slow_ms,
            drop_rate: d,
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("manta-test-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut cfg = Config::new(cli.root, cli.user).faults(faults);
    cfg.listen = cli.listen;
    cfg.pubkey_files = cli.pubkeys;
    cfg.fault_seed = cli.fault_seed;
    cfg.snaplinks = !cli.disable_snaplinks;
    let server = match serve(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("manta-test-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(pf) = cli.port_file {
        // Written (atomically) before the "listening" line is printed.
        let tmp = pf.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{}\n", server.addr().port()))
            .and_then(|()| std::fs::rename(&tmp, &pf));
        if let Err(e) = written {
            eprintln!("manta-test-server: {}: {e}", pf.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    println!("listening on {}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}
