//! Finding the CouchDB-compatible test server: `$COUCH_URL` (set by `.ci/run`), or else one
//! pouchdb-server per test process started with `backends/couch/start.sh`. A test that cannot get
//! a server fails, loudly: it never passes without having migrated anything.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The server's base URL, without a trailing slash.
pub fn couch_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("COUCH_URL") {
            if !url.trim().is_empty() {
                return url.trim().trim_end_matches('/').to_string();
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
        let url = stdout
            .lines()
            .find_map(|l| l.strip_prefix("COUCH_URL="))
            .map(str::to_string);
        match (out.status.success(), url) {
            (true, Some(url)) => url,
            _ => panic!(
                "COUCH_URL is not set and {} could not start pouchdb-server (it needs node and \
                 npm).\nSet COUCH_URL to a CouchDB-compatible server to run these tests.\n\
                 stdout:\n{stdout}\nstderr:\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    })
    .clone()
}
