//! `GET /metrics` on the admin listener: the pool in Prometheus' text
//! exposition format 0.0.4.
//!
//! Per backend (labels `backend` and `address`):
//! `leastconn_backend_active_requests`, `leastconn_backend_requests_total`
//! (the engine's picks), `leastconn_backend_failures_total`,
//! `leastconn_backend_healthy` (1 in the pool, 0 out),
//! `leastconn_backend_weight` and `leastconn_backend_response_seconds`, a
//! histogram of the durations leases record for relayed responses (from
//! the request's arrival to the end of its response body; a tunnel's life
//! is no response time, and is left out). For the pool:
//! `leastconn_queue_length`, `leastconn_rejected_requests_total` (503s for
//! want of a backend) and `leastconn_retries_total` (requests tried again
//! on another backend).
//!
//! The engine's numbers are read in one `pool.read` per scrape. The
//! histograms live in each backend's [`Upstream`], as relaxed atomics
//! that a request bumps without a lock or an allocation; the text is
//! written by hand, which takes less than a registry crate would bring.

use super::body::Reply;
use super::upstream::Upstream;
use super::State;
use hyper::{Response, StatusCode};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The histogram's upper bounds, in microseconds and as `le` shows them;
/// the `+Inf` bucket follows.
const BOUNDS: [(u64, &str); 11] = [
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
];

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Response times of one backend: how many fell in each bucket (not
/// cumulative; the last is above every bound) and their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Counts one response time.
    pub fn observe(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS.partition_point(|&(bound, _)| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// What it holds now. The count is the buckets' sum, so that `+Inf`
    /// always equals `_count`, even while requests record.
    fn snapshot(&self) -> Counts {
        Counts {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's numbers at one scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    buckets: [u64; BOUNDS.len() + 1],
    sum_micros: u64,
}

/// One backend at one scrape.
struct Row {
    /// `backend="…",address="…"`, escaped.
    labels: String,
    active: u64,
    requests: u64,
    failures: u64,
    healthy: bool,
    weight: u64,
    times: Counts,
}

/// The pool's own numbers at one scrape.
struct Totals {
    queued: u64,
    rejected: u64,
    retries: u64,
}

/// The answer to `GET /metrics`.
pub fn response(state: &State) -> Response<Reply> {
    Reply::response(StatusCode::OK, CONTENT_TYPE, render(state))
}

/// Reads everything, then writes it outside the pool's lock.
fn render(state: &State) -> String {
    let (rows, rejected) = state.pool.read(|pool| {
        let rows: Vec<Row> = pool
            .iter()
            .map(|(name, backend)| {
                let upstream: &Arc<Upstream> = backend.payload();
                let stats = backend.stats();
                Row {
                    labels: labels(name, &upstream.address.to_string()),
                    active: backend.active(),
                    requests: stats.requests,
                    failures: stats.failed,
                    healthy: backend.healthy(),
                    weight: backend.weight(),
                    times: upstream.response_times.snapshot(),
                }
            })
            .collect();
        (rows, pool.rejected())
    });
    let totals = Totals {
        queued: u64::try_from(state.queued.load(Ordering::Relaxed)).unwrap_or(u64::MAX),
        rejected,
        retries: state.retries.load(Ordering::Relaxed),
    };
    exposition(&rows, &totals)
}

/// The whole text, one family after another.
fn exposition(rows: &[Row], totals: &Totals) -> String {
    let mut out = String::with_capacity(1024 + rows.len() * 1536);
    // A family's name, type, help text and value.
    type PerBackend = (&'static str, &'static str, &'static str, fn(&Row) -> u64);
    let per_backend: [PerBackend; 5] = [
        (
            "leastconn_backend_active_requests",
            "gauge",
            "Requests in flight on the backend.",
            |row| row.active,
        ),
        (
            "leastconn_backend_requests_total",
            "counter",
            "Requests the engine sent to the backend.",
            |row| row.requests,
        ),
        (
            "leastconn_backend_failures_total",
            "counter",
            "Requests that failed on the backend (connection errors, timeouts, 5xx when they count).",
            |row| row.failures,
        ),
        (
            "leastconn_backend_healthy",
            "gauge",
            "1 while the backend is in the pool, 0 while it is out.",
            |row| row.healthy.into(),
        ),
        (
            "leastconn_backend_weight",
            "gauge",
            "The backend's weight.",
            |row| row.weight,
        ),
    ];
    for (name, kind, help, value) in per_backend {
        family(&mut out, name, kind, help);
        for row in rows {
            let _ = writeln!(out, "{name}{{{}}} {}", row.labels, value(row));
        }
    }
    let name = "leastconn_backend_response_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Time from a request's arrival to the end of its relayed response body.",
    );
    for row in rows {
        histogram(&mut out, name, &row.labels, &row.times);
    }
    let pool: [(&str, &str, &str, u64); 3] = [
        (
            "leastconn_queue_length",
            "gauge",
            "Requests waiting for a backend with room.",
            totals.queued,
        ),
        (
            "leastconn_rejected_requests_total",
            "counter",
            "Requests answered 503 for want of a backend.",
            totals.rejected,
        ),
        (
            "leastconn_retries_total",
            "counter",
            "Requests tried again on another backend.",
            totals.retries,
        ),
    ];
    for (name, kind, help, value) in pool {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// A family's `# HELP` and `# TYPE` lines; `help` is written as given, so
/// it holds no backslash or line break.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One backend's `_bucket` lines, cumulative, then `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, labels: &str, counts: &Counts) {
    let mut below = 0u64;
    let les = BOUNDS.iter().map(|&(_, le)| le).chain(["+Inf"]);
    for (le, n) in les.zip(counts.buckets) {
        below += n;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {below}");
    }
    let sum = counts.sum_micros as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {below}");
}

/// A backend's labels, `backend="NAME",address="HOST:PORT"`.
fn labels(name: &str, address: &str) -> String {
    let mut out = String::with_capacity(name.len() + address.len() + 24);
    out.push_str("backend=\"");
    escape_label(name, &mut out);
    out.push_str("\",address=\"");
    escape_label(address, &mut out);
    out.push('"');
    out
}

/// A label value as the format wants it: backslash, double quote and line
/// feed escaped.
fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        escape_label(value, &mut out);
        out
    }

    #[test]
    fn label_values_escape_backslash_quote_and_line_feed_only() {
        assert_eq!(escaped("api-1"), "api-1");
        assert_eq!(escaped(r#"a"b"#), r#"a\"b"#);
        assert_eq!(escaped(r"a\b"), r"a\\b");
        assert_eq!(escaped("a\nb"), r"a\nb");
        assert_eq!(escaped("\\\"\n"), r#"\\\"\n"#);
        // Tabs, carriage returns and non-ASCII pass as they are.
        assert_eq!(escaped("t\tr\ré"), "t\tr\ré");
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn labels_name_the_backend_then_its_address() {
        assert_eq!(
            labels("say \"hi\"\\", "127.0.0.1:9001"),
            r#"backend="say \"hi\"\\",address="127.0.0.1:9001""#
        );
    }

    #[test]
    fn a_time_on_a_bound_falls_in_that_bucket_and_past_the_last_in_inf() {
        let times = Histogram::default();
        times.observe(Duration::from_micros(5_000));
        times.observe(Duration::from_micros(5_001));
        times.observe(Duration::ZERO);
        times.observe(Duration::from_secs(11));
        times.observe(Duration::from_secs(u64::MAX));
        let counts = times.snapshot();
        let mut expected = [0; BOUNDS.len() + 1];
        expected[0] = 2;
        expected[1] = 1;
        expected[BOUNDS.len()] = 2;
        assert_eq!(counts.buckets, expected);
    }

    #[test]
    fn a_histogram_is_written_cumulative_with_inf_equal_to_count() {
        let times = Histogram::default();
        for ms in [1, 7, 7, 300, 20_000] {
            times.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        histogram(&mut out, "t", "backend=\"a\"", &times.snapshot());
        let expected = "\
t_bucket{backend=\"a\",le=\"0.005\"} 1
t_bucket{backend=\"a\",le=\"0.01\"} 3
t_bucket{backend=\"a\",le=\"0.025\"} 3
t_bucket{backend=\"a\",le=\"0.05\"} 3
t_bucket{backend=\"a\",le=\"0.1\"} 3
t_bucket{backend=\"a\",le=\"0.25\"} 3
t_bucket{backend=\"a\",le=\"0.5\"} 4
t_bucket{backend=\"a\",le=\"1\"} 4
t_bucket{backend=\"a\",le=\"2.5\"} 4
t_bucket{backend=\"a\",le=\"5\"} 4
t_bucket{backend=\"a\",le=\"10\"} 4
t_bucket{backend=\"a\",le=\"+Inf\"} 5
t_sum{backend=\"a\"} 20.315
t_count{backend=\"a\"} 5
";
        assert_eq!(out, expected);
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let row = Row {
            labels: labels("a", "127.0.0.1:1"),
            active: 2,
            requests: 7,
            failures: 1,
            healthy: false,
            weight: 3,
            times: Counts::default(),
        };
        let totals = Totals {
            queued: 4,
            rejected: 5,
            retries: 6,
        };
        let text = exposition(&[row], &totals);
        let lines: Vec<&str> = text.lines().collect();
        let at = |line: &str| lines.iter().position(|l| *l == line);
        for (sample, family) in [
            (
                "leastconn_backend_active_requests{backend=\"a\",address=\"127.0.0.1:1\"} 2",
                "leastconn_backend_active_requests",
            ),
            (
                "leastconn_backend_healthy{backend=\"a\",address=\"127.0.0.1:1\"} 0",
                "leastconn_backend_healthy",
            ),
            ("leastconn_queue_length 4", "leastconn_queue_length"),
            (
                "leastconn_rejected_requests_total 5",
                "leastconn_rejected_requests_total",
            ),
            ("leastconn_retries_total 6", "leastconn_retries_total"),
        ] {
            let sample = at(sample).unwrap_or_else(|| panic!("{sample} in {text}"));
            let type_line = lines
                .iter()
                .position(|l| l.starts_with(&format!("# TYPE {family} ")))
                .unwrap_or_else(|| panic!("TYPE of {family}"));
            let help_line = lines
                .iter()
                .position(|l| l.starts_with(&format!("# HELP {family} ")))
                .unwrap_or_else(|| panic!("HELP of {family}"));
            assert!(help_line < type_line && type_line < sample, "{text}");
        }
    }
}
