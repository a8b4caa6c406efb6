//! Finding the CouchDB-compatible test server: `$COUCH_URL` (set by `.ci/run`), or else one
//! pouchdb-server per test process started with `backends/couch/start.sh`. A test that cannot get
//! a server fails, loudly: it never passes without having migrated anything.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The server's base URL, without a trailing slash.
pub fn couch_url() -> String {
    server().0.clone()
}

/// The server's process id when it is known (`$COUCH_PID`, or the server this process started):
/// the benchmark reads its CPU time.
#[allow(dead_code)] // used by the migrate benchmark only
pub fn couch_pid() -> Option<u32> {
    server().1
}

fn server() -> &'static (String, Option<u32>) {
    static SERVER: OnceLock<(String, Option<u32>)> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("COUCH_URL") {
            if !url.trim().is_empty() {
                let pid = std::env::var("COUCH_PID")
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
                return (url.trim().trim_end_matches('/').to_string(), pid);
            }
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("backends/couch/start.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--watch")
            .arg(std::process::id().to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_string)
        };
        let pid = value("COUCH_PID=").and_then(|p| p.parse().ok());
        match (out.status.success(), value("COUCH_URL=")) {
            (true, Some(url)) => (url, pid),
            _ => panic!(
                "COUCH_URL is not set and {} could not start pouchdb-server (it needs node and \
                 npm).\nSet COUCH_URL to a CouchDB-compatible server to run these tests.\n\
                 stdout:\n{stdout}\nstderr:\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    })
}
