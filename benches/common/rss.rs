//! Peak memory of one measured operation, run in a child process of the bench binary itself (a
//! fresh process, so nothing measured before inflates its high-water mark). Linux only (`/proc`).
#![allow(dead_code)]

/// Runs this bench binary as `--child ARGS…` and returns what it printed (its peak RSS).
pub fn child_rss(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(exe)
        .arg("--child")
        .args(args)
        .output()
        .expect("child");
    if !out.status.success() {
        return format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// This process's peak RSS (`VmHWM`, e.g. `9344 kB`), or `n/a`.
pub fn peak_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "n/a".into())
}

/// This process's resident set now, in KiB (`VmRSS`), or 0.
pub fn rss_now_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
