//! The server's counters, answered by `GET /metrics` in the Prometheus text
//! format (version 0.0.4), written by hand:
//!
//! * `idx_softmax_requests_total{endpoint,status}`: requests answered, by
//!   endpoint (the route's pattern, `unmatched` for an unknown path) and
//!   status code;
//! * `idx_softmax_request_errors_total{endpoint}`: those answered with a
//!   status of 400 or more;
//! * `idx_softmax_request_duration_seconds{endpoint}`: a histogram of the
//!   time from the request's head to its answer;
//! * `idx_softmax_batch_rows`: a histogram of the rows of each forward pass
//!   (the samples of every request batched into it);
//! * `idx_softmax_batch_requests`: a histogram of the requests batched into
//!   each forward pass;
//! * `idx_softmax_queue_full_total`: requests refused (503) because the
//!   queue was full;
//! * gauges: `idx_softmax_requests_in_flight` (received, not yet
//!   answered), `idx_softmax_requests_arriving` (inference requests being
//!   read, parsed or decoded, not yet queued), `idx_softmax_queue_depth`
//!   (queued for a forward pass) and `idx_softmax_forward_rows` (rows of
//!   the forward pass under way, 0 when idle).
//!
//! A request whose client goes away before it is answered counts with the
//! status 499.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Upper bounds of the batch histograms' buckets.
pub const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A cumulative histogram over fixed buckets.
#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations `<=` each bound (not cumulative yet).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of `name`, with
    /// `labels` (`key="value"` pairs, comma-separated, or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// One endpoint's requests.
#[derive(Debug)]
struct Endpoint {
    /// status → count.
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Debug)]
struct Batches {
    rows: Histogram,
    requests: Histogram,
}

/// The gauges' values at the time of a scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub in_flight: usize,
    pub arriving: usize,
    pub queued: usize,
    pub running: usize,
}

/// The server's counters; see the module documentation.
#[derive(Debug)]
pub struct Metrics {
    /// endpoint → its requests.
    requests: Mutex<BTreeMap<String, Endpoint>>,
    batches: Mutex<Batches>,
    queue_full: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            batches: Mutex::new(Batches {
                rows: Histogram::new(&BATCH_BUCKETS),
                requests: Histogram::new(&BATCH_BUCKETS),
            }),
            queue_full: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts a request to `endpoint` answered with `status` after
    /// `latency`.
    pub fn request(&self, endpoint: &str, status: u16, latency: Duration) {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if !r.contains_key(endpoint) {
            let e = Endpoint {
                by_status: BTreeMap::new(),
                latency: Histogram::new(&LATENCY_BUCKETS),
            };
            r.insert(endpoint.to_owned(), e);
        }
        if let Some(e) = r.get_mut(endpoint) {
            *e.by_status.entry(status).or_default() += 1;
            e.latency.observe(latency.as_secs_f64());
        }
    }

    /// Counts a forward pass of `rows` rows from `requests` requests.
    pub fn batch(&self, rows: usize, requests: usize) {
        let mut b = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        b.rows.observe(rows as f64);
        b.requests.observe(requests as f64);
    }

    /// Counts a request refused because the queue was full.
    pub fn queue_full(&self) {
        self.queue_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything, in the Prometheus text format, with the gauges' values.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        {
            let r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            out += "# HELP idx_softmax_requests_total HTTP requests answered, by endpoint and status.\n";
            out += "# TYPE idx_softmax_requests_total counter\n";
            for (endpoint, e) in r.iter() {
                for (status, n) in &e.by_status {
                    let _ = writeln!(
                        out,
                        "idx_softmax_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
                    );
                }
            }
            out += "# HELP idx_softmax_request_errors_total HTTP requests answered with a status of 400 or more, by endpoint.\n";
            out += "# TYPE idx_softmax_request_errors_total counter\n";
            for (endpoint, e) in r.iter() {
                let n: u64 = e.by_status.range(400..).map(|(_, n)| n).sum();
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "idx_softmax_request_errors_total{{endpoint=\"{endpoint}\"}} {n}"
                    );
                }
            }
            out += "# HELP idx_softmax_request_duration_seconds Time from a request's head to its answer, by endpoint.\n";
            out += "# TYPE idx_softmax_request_duration_seconds histogram\n";
            for (endpoint, e) in r.iter() {
                e.latency.render(
                    &mut out,
                    "idx_softmax_request_duration_seconds",
                    &format!("endpoint=\"{endpoint}\""),
                );
            }
        }
        {
            let b = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            out += "# HELP idx_softmax_batch_rows Rows (samples) per forward pass.\n";
            out += "# TYPE idx_softmax_batch_rows histogram\n";
            b.rows.render(&mut out, "idx_softmax_batch_rows", "");
            out += "# HELP idx_softmax_batch_requests Requests batched into each forward pass.\n";
            out += "# TYPE idx_softmax_batch_requests histogram\n";
            b.requests
                .render(&mut out, "idx_softmax_batch_requests", "");
        }
        out += "# HELP idx_softmax_queue_full_total Requests refused with 503 because the queue was full.\n";
        out += "# TYPE idx_softmax_queue_full_total counter\n";
        let _ = writeln!(
            out,
            "idx_softmax_queue_full_total {}",
            self.queue_full.load(Ordering::Relaxed)
        );
        for (name, help, value) in [
            (
                "idx_softmax_requests_in_flight",
                "HTTP requests received and not yet answered.",
                gauges.in_flight,
            ),
            (
                "idx_softmax_requests_arriving",
                "Inference requests being read, parsed or decoded, not yet queued.",
                gauges.arriving,
            ),
            (
                "idx_softmax_queue_depth",
                "Inference requests queued for a forward pass.",
                gauges.queued,
            ),
            (
                "idx_softmax_forward_rows",
                "Rows of the forward pass under way (0: idle).",
                gauges.running,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let m = Metrics::default();
        m.request("/v2", 200, Duration::from_micros(300));
        m.request("/v2", 200, Duration::from_millis(30));
        m.request("unmatched", 404, Duration::from_micros(50));
        m.batch(3, 2);
        m.queue_full();
        let t = m.render(Gauges {
            in_flight: 2,
            arriving: 1,
            queued: 3,
            running: 4,
        });
        assert!(t.contains("idx_softmax_requests_total{endpoint=\"/v2\",status=\"200\"} 2\n"));
        assert!(t.contains("idx_softmax_request_errors_total{endpoint=\"unmatched\"} 1\n"));
        assert!(t.contains(
            "idx_softmax_request_duration_seconds_bucket{endpoint=\"/v2\",le=\"0.0005\"} 1\n"
        ));
        assert!(t.contains(
            "idx_softmax_request_duration_seconds_bucket{endpoint=\"/v2\",le=\"+Inf\"} 2\n"
        ));
        assert!(t.contains("idx_softmax_request_duration_seconds_count{endpoint=\"/v2\"} 2\n"));
        assert!(t.contains("idx_softmax_batch_rows_bucket{le=\"2\"} 0\n"));
        assert!(t.contains("idx_softmax_batch_rows_bucket{le=\"4\"} 1\n"));
        assert!(t.contains("idx_softmax_batch_rows_sum 3\n"));
        assert!(t.contains("idx_softmax_batch_requests_count 1\n"));
        assert!(t.contains("idx_softmax_queue_full_total 1\n"));
        assert!(t.contains("idx_softmax_requests_in_flight 2\n"));
        assert!(t.contains("idx_softmax_requests_arriving 1\n"));
        assert!(t.contains("idx_softmax_queue_depth 3\n"));
        assert!(t.contains("idx_softmax_forward_rows 4\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
