//! Test servers for the S3 backend: each is described by an env file written by
//! `backends/s3/start-*.sh` (`AWS_ENDPOINT_URL`, keys, bucket, …), named by an environment variable:
//! `TARVAULT_S3S_ENV` (s3s-fs) and `TARVAULT_CEPH_ENV` (Ceph RGW). One `cargo test` run thus
//! tests both servers. Without the variable a test prints `skipped: …` and passes, unless `CI` is
//! set, in which case it fails: CI must run against both ([`crate::common::skip_or_fail`]).
#![allow(dead_code)]

pub mod claims;
pub mod counting;
pub mod faults;
pub mod gate;
pub mod listing;
pub mod markers;
pub mod prefix;
pub mod proxy;
pub mod staging;

use std::collections::HashMap;
use std::sync::Arc;

use object_store::ObjectStore;
use tarvault::backend::s3::{S3Backend, S3Config};

/// One running server.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: &'static str,
    /// The environment variable naming its env file (a child process finds it again by it).
    pub env: String,
    pub vars: HashMap<String, String>,
}

impl Server {
    /// The server named by `var`, or `None` (after a note) when it is not configured outside CI.
    pub fn from_env(var: &str, name: &'static str) -> Option<Server> {
        let Ok(file) = std::env::var(var) else {
            crate::common::skip_or_fail(&format!(
                "{var} is not set, so there is no {name} server to test against (`bash .ci/run` \
                 starts one with backends/s3/start-*.sh and sets {var} to its env file)"
            ));
            return None;
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{var}={file}: cannot read the env file: {e}"));
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(Server {
            name,
            env: var.to_string(),
            vars,
        })
    }

    pub fn var(&self, k: &str) -> String {
        self.vars
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{}: env file lacks {k}", self.name))
    }

    pub fn endpoint(&self) -> String {
        self.var("AWS_ENDPOINT_URL")
    }

    pub fn bucket(&self) -> String {
        self.var("TARVAULT_S3_BUCKET")
    }

    /// A config for a fresh, unique prefix in the test bucket.
    pub fn config(&self, prefix: &str) -> S3Config {
        let mut c = S3Config::new(self.bucket(), prefix);
        c.endpoint = Some(self.endpoint());
        c.allow_http = Some(true);
        c.region = Some(self.var("AWS_REGION"));
        c.credentials = Some((
            self.var("AWS_ACCESS_KEY_ID"),
            self.var("AWS_SECRET_ACCESS_KEY"),
        ));
        c
    }

    /// A unique prefix, so that tests running at once never see each other's blobs.
    pub fn fresh_prefix(tag: &str) -> String {
        use rand::Rng;
        format!("t-{tag}-{:08x}", rand::thread_rng().gen::<u32>())
    }

    pub async fn backend(&self, tag: &str) -> S3Backend {
        S3Backend::connect(&self.config(&Self::fresh_prefix(tag)))
            .await
            .unwrap_or_else(|e| panic!("{}: connect: {e}", self.name))
    }

    /// A raw object_store client on the same bucket (to plant bytes, or as a baseline).
    pub fn raw(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.config("").build().expect("client"))
    }
}
