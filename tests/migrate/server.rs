//! Finding the CouchDB-compatible test server: `$COUCH_URL` (set by `.ci/run`), or else one
//! pouchdb-server per test process started with `backends/couch/start.sh`. A test that cannot get
//! a server prints `skipped: <why>` and returns (under CI it fails): it never passes silently
//! without having migrated anything.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The server's base URL, without a trailing slash; `None` when there is no server and none could
/// be started: then the test fails under CI, and elsewhere prints `skipped: …` and returns.
pub fn couch_url() -> Option<String> {
    match server() {
        Ok((url, _)) => Some(url.clone()),
        Err(reason) => {
            crate::common::skip_or_fail(reason);
            None
        }
    }
}

/// The server's process id when it is known (`$COUCH_PID`, or the server this process started):
/// the benchmark reads its CPU time.
#[allow(dead_code)] // used by the migrate benchmark only
pub fn couch_pid() -> Option<u32> {
    server().as_ref().ok().and_then(|s| s.1)
}

/// The server, or why there is none (computed once per test process).
fn server() -> &'static Result<(String, Option<u32>), String> {
    static SERVER: OnceLock<Result<(String, Option<u32>), String>> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("COUCH_URL") {
            if !url.trim().is_empty() {
                let pid = std::env::var("COUCH_PID")
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
                return Ok((url.trim().trim_end_matches('/').to_string(), pid));
            }
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("backends/couch/start.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--watch")
            .arg(std::process::id().to_string())
            .output()
            .map_err(|e| {
                format!(
                    "COUCH_URL is not set and {} cannot run: {e}",
                    script.display()
                )
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_string)
        };
        let pid = value("COUCH_PID=").and_then(|p| p.parse().ok());
        match (out.status.success(), value("COUCH_URL=")) {
            (true, Some(url)) => Ok((url, pid)),
            _ => Err(format!(
                "COUCH_URL is not set and {} could not start pouchdb-server (it needs node and \
                 npm; `bash .ci/run` starts it, or set COUCH_URL to a CouchDB-compatible \
                 server); it said: {}",
                script.display(),
                [stdout.trim(), String::from_utf8_lossy(&out.stderr).trim()]
                    .join(" ")
                    .trim()
                    .replace('\n', " | ")
            )),
        }
    })
}
