//! Counters and histograms for `GET /metrics` (Prometheus text format 0.0.4).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: warm invokes are tens of
/// milliseconds, cold boots under TCG one to a few seconds.
const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, help: &str, header: bool) {
        if header {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        }
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {n}");
    }
}

#[derive(Default)]
pub struct Metrics {
    pub sandbox_start: Histogram,
    pub invoke_warm: Histogram,
    pub invoke_cold: Histogram,
    /// Pool misses served by a VM restored from a snapshot.
    pub invoke_snapshot: Histogram,
    pub pool_hits: AtomicU64,
    pub pool_misses: AtomicU64,
    pub requests: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    /// Connections refused with 503 at a connection cap.
    pub shed_connections: AtomicU64,
}

impl Metrics {
    /// `states`: sandboxes per state; `pool_ready`: warm VMs waiting right now.
    pub fn render(&self, states: &[(&str, u64)], pool_ready: u64) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP skiffd_sandboxes Sandboxes by state.\n# TYPE skiffd_sandboxes gauge"
        );
        for (s, n) in states {
            let _ = writeln!(o, "skiffd_sandboxes{{state=\"{s}\"}} {n}");
        }
        self.sandbox_start.render(
            &mut o,
            "skiffd_sandbox_start_seconds",
            "",
            "Sandbox start: request to the main process running (VM boot included).",
            true,
        );
        self.invoke_warm.render(
            &mut o,
            "skiffd_invoke_seconds",
            "pool=\"hit\"",
            "POST /v1/invoke latency: request to output and exit status.",
            true,
        );
        self.invoke_cold
            .render(&mut o, "skiffd_invoke_seconds", "pool=\"miss\"", "", false);
        self.invoke_snapshot.render(
            &mut o,
            "skiffd_invoke_seconds",
            "pool=\"snapshot\"",
            "",
            false,
        );
        let counter = |o: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut o,
            "skiffd_pool_hits_total",
            "Invocations served by a warm VM.",
            &self.pool_hits,
        );
        counter(
            &mut o,
            "skiffd_pool_misses_total",
            "Invocations that had to cold-boot.",
            &self.pool_misses,
        );
        counter(
            &mut o,
            "skiffd_requests_total",
            "HTTP requests.",
            &self.requests,
        );
        counter(
            &mut o,
            "skiffd_client_errors_total",
            "Requests answered 4xx.",
            &self.client_errors,
        );
        counter(
            &mut o,
            "skiffd_server_errors_total",
            "Requests answered 5xx.",
            &self.server_errors,
        );
        counter(
            &mut o,
            "skiffd_shed_connections_total",
            "Connections answered 503 at a connection cap.",
            &self.shed_connections,
        );
        let _ = writeln!(
            o,
            "# HELP skiffd_pool_ready Warm VMs waiting at agent ready.\n# TYPE skiffd_pool_ready gauge\nskiffd_pool_ready {pool_ready}"
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(2));
        let mut s = String::new();
        h.render(&mut s, "x", "", "help", true);
        assert!(s.contains("x_bucket{le=\"0.025\"} 1"), "{s}");
        assert!(s.contains("x_bucket{le=\"2.5\"} 2"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 2"), "{s}");
        assert!(s.contains("x_count 2"), "{s}");
    }
}
