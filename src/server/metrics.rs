//! Counters for `/-/metrics`, in the Prometheus text exposition format. Hand-written on atomics:
//! every label set is known up front (a handful of routes times a handful of statuses), so the hot
//! path is a few relaxed atomic adds, with no registry, lock or allocation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::http::StatusCode;

use super::routes::Route;

/// The statuses the server answers with; anything else is counted as `other`.
const STATUSES: [u16; 10] = [200, 206, 304, 400, 404, 405, 412, 416, 500, 503];
const OTHER_STATUS: usize = STATUSES.len();
const ROUTES: usize = Route::ALL.len();

/// Upper bounds of the latency buckets, in microseconds (and as Prometheus prints them, seconds).
const BUCKETS_US: [u64; 13] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];
const BUCKET_LABELS: [&str; 13] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "1", "5",
];

/// The server's counters. Shared by every request (behind an `Arc` in the server).
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len() + 1]; ROUTES],
    body_bytes: AtomicU64,
    not_modified: AtomicU64,
    integrity_failures: AtomicU64,
    /// Cumulative is computed when printing; each slot counts its own bucket (last: +Inf).
    latency: [AtomicU64; BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            body_bytes: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            integrity_failures: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts a response (when its head is ready) and how long it took to get there.
    pub(crate) fn response(&self, route: Route, status: StatusCode, elapsed: Duration) {
        let code = status.as_u16();
        let slot = STATUSES
            .iter()
            .position(|s| *s == code)
            .unwrap_or(OTHER_STATUS);
        self.requests[route.index()][slot].fetch_add(1, Relaxed);
        if status == StatusCode::NOT_MODIFIED {
            self.not_modified.fetch_add(1, Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    /// Counts body bytes handed to the connection.
    pub(crate) fn bytes(&self, n: u64) {
        self.body_bytes.fetch_add(n, Relaxed);
    }

    /// Counts a blob whose bytes did not verify while being served.
    pub(crate) fn integrity_failure(&self) {
        self.integrity_failures.fetch_add(1, Relaxed);
    }

    /// Responses so far with this route label and status.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let Some(r) = Route::ALL.iter().find(|r| r.label() == route) else {
            return 0;
        };
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(OTHER_STATUS);
        self.requests[r.index()][slot].load(Relaxed)
    }

    /// Body bytes sent so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Relaxed)
    }

    /// 304 responses so far.
    pub fn not_modified(&self) -> u64 {
        self.not_modified.load(Relaxed)
    }

    /// Blobs found corrupt while being served.
    pub fn integrity_failures(&self) -> u64 {
        self.integrity_failures.load(Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP tarvault_http_requests_total HTTP responses by route and status.\n\
             # TYPE tarvault_http_requests_total counter\n",
        );
        for route in Route::ALL {
            for (slot, counter) in self.requests[route.index()].iter().enumerate() {
                let n = counter.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(slot)
                    .map_or_else(|| "other".to_string(), u16::to_string);
                let _ = writeln!(
                    out,
                    "tarvault_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    route.label()
                );
            }
        }
        // The held bytes are the process's: what stalled downloads and cache fills hold.
        let held = crate::backend::budget::held();
        let series = [
            (
                "tarvault_http_body_bytes_total",
                "counter",
                "Blob bytes sent in response bodies.",
                self.body_bytes(),
            ),
            (
                "tarvault_http_not_modified_total",
                "counter",
                "304 Not Modified responses (If-None-Match revalidations).",
                self.not_modified(),
            ),
            (
                "tarvault_integrity_failures_total",
                "counter",
                "Blobs whose stored bytes failed verification while being served.",
                self.integrity_failures(),
            ),
            (
                "tarvault_http_send_timeouts_total",
                "counter",
                "Connections closed because a response waited on its client past the send timeout (serve --send-timeout), in this process.",
                super::progress::send_timeouts(),
            ),
            (
                "tarvault_held_memory_bytes",
                "gauge",
                "Bytes of blobs held in memory whole once checked (served from memory, cache fills).",
                held.used(),
            ),
            (
                "tarvault_held_memory_limit_bytes",
                "gauge",
                "The process's limit on held bytes (serve --held-memory); past it blobs are read twice or held in temporary files.",
                held.limit(),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        out.push_str(
            "# HELP tarvault_http_response_seconds Time from request to response head.\n\
             # TYPE tarvault_http_response_seconds histogram\n",
        );
        let mut cumulative = 0;
        for (i, label) in BUCKET_LABELS.iter().enumerate() {
            cumulative += self.latency[i].load(Relaxed);
            let _ = writeln!(
                out,
                "tarvault_http_response_seconds_bucket{{le=\"{label}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[BUCKETS_US.len()].load(Relaxed);
        let sum = self.latency_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = write!(
            out,
            "tarvault_http_response_seconds_bucket{{le=\"+Inf\"}} {cumulative}\n\
             tarvault_http_response_seconds_sum {sum}\n\
             tarvault_http_response_seconds_count {cumulative}\n"
        );
        out
    }
}
