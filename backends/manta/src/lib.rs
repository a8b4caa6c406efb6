//! A protocol-faithful Joyent Manta test server.
//!
//! It speaks the storage API as muskie does (HTTP Signature authentication,
//! objects, directories and their JSON-stream listings, conditional
//! requests, ranges, SnapLinks and multipart uploads, with muskie's error
//! codes) so that Manta clients — node-manta's CLI or tarvault's backend —
//! can be tested without a real Manta. Data lives on disk under a root
//! directory.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use manta_test_server::{serve, Config};
//! let cfg = Config::new("/tmp/manta-root", "testuser").pubkey_file("/tmp/home/.ssh/id_rsa.pub");
//! let server = serve(cfg).await?;
//! println!("MANTA_URL={}", server.url());
//! # Ok(()) }
//! ```

pub mod auth;
pub mod conditional;
pub mod error;
pub mod faults;
mod http;
pub mod keys;
mod routes;
mod server;
pub mod sign;
pub mod store;
pub mod util;

pub use error::ApiError;
pub use faults::Faults;
pub use server::{serve, Config, ServeError, ServerHandle};
