//! The proxy's admin listener beyond `/stats`: `GET /metrics`, read with a
//! strict parser of Prometheus' text format 0.0.4 and checked against
//! `/stats` and the backends after a known load, and `GET /`, the
//! dashboard. The real binary, in front of backends served by the test on
//! 127.0.0.1.

mod common;

use bytes::Bytes;
use common::proxy::{
    full_pool, get, read, send, within, Backend, Behaviour, Client, Close, Proxy, WAIT,
};
use http_body_util::Empty;
use hyper::Request;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

// The families the tests look at.
const ACTIVE: &str = "leastconn_backend_active_requests";
const REQUESTS: &str = "leastconn_backend_requests_total";
const FAILURES: &str = "leastconn_backend_failures_total";
const HEALTHY: &str = "leastconn_backend_healthy";
const WEIGHT: &str = "leastconn_backend_weight";
const QUEUED: &str = "leastconn_queue_length";
const REJECTED: &str = "leastconn_rejected_requests_total";
const RETRIES: &str = "leastconn_retries_total";
/// The response-time histogram's count and sum.
const COUNT: &str = "leastconn_backend_response_seconds_count";
const SUM: &str = "leastconn_backend_response_seconds_sum";

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every family `/metrics` has, with its type, in order.
const FAMILIES: [(&str, &str); 9] = [
    ("leastconn_backend_active_requests", "gauge"),
    ("leastconn_backend_requests_total", "counter"),
    ("leastconn_backend_failures_total", "counter"),
    ("leastconn_backend_healthy", "gauge"),
    ("leastconn_backend_weight", "gauge"),
    ("leastconn_backend_response_seconds", "histogram"),
    ("leastconn_queue_length", "gauge"),
    ("leastconn_rejected_requests_total", "counter"),
    ("leastconn_retries_total", "counter"),
];

// A strict reader of the text format.

type Labels = BTreeMap<String, String>;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

#[derive(Debug)]
struct Family {
    name: String,
    kind: String,
    samples: Vec<Sample>,
}

/// A whole exposition, its families in order.
#[derive(Debug)]
struct Metrics {
    families: Vec<Family>,
}

/// Parses `text`, failing the test on anything the format does not allow:
/// a sample before its family's `# HELP` and `# TYPE`, a family twice, a
/// sample of another family, a bad name, label or value, a histogram whose
/// buckets are not cumulative up to `+Inf` equal to `_count`.
fn parse(text: &str) -> Metrics {
    assert!(text.ends_with('\n'), "the text ends with a line feed");
    let mut families: Vec<Family> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((at, line)) = lines.next() {
        let at = at + 1;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("line {at}: HELP without a text: {line}"));
            check_name(name, at);
            assert!(!help.is_empty(), "line {at}: an empty HELP");
            assert!(
                families.iter().all(|f| f.name != name),
                "line {at}: family {name} a second time"
            );
            let (_, type_line) = lines
                .next()
                .unwrap_or_else(|| panic!("line {at}: HELP of {name} without TYPE after it"));
            let kind = type_line
                .strip_prefix(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("line {}: not the TYPE of {name}: {type_line}", at + 1));
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "line {}: type {kind}",
                at + 1
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} without _total");
            }
            families.push(Family {
                name: name.to_owned(),
                kind: kind.to_owned(),
                samples: Vec::new(),
            });
            continue;
        }
        assert!(!line.starts_with('#'), "line {at}: a stray comment: {line}");
        let sample = parse_sample(line, at);
        let family = families
            .last_mut()
            .unwrap_or_else(|| panic!("line {at}: a sample before any HELP and TYPE"));
        let suffixes: &[&str] = if family.kind == "histogram" {
            &["_bucket", "_sum", "_count"]
        } else {
            &[""]
        };
        assert!(
            suffixes
                .iter()
                .any(|s| sample.name == format!("{}{s}", family.name)),
            "line {at}: {} is not of family {}",
            sample.name,
            family.name
        );
        if family.kind == "counter" || family.kind == "gauge" {
            assert!(
                family.samples.iter().all(|s| s.labels != sample.labels),
                "line {at}: the same labels twice in {}",
                family.name
            );
        }
        family.samples.push(sample);
    }
    for family in &families {
        if family.kind == "histogram" {
            check_histogram(family);
        } else if family.kind == "counter" {
            assert!(family.samples.iter().all(|s| s.value >= 0.0), "{family:?}");
        }
    }
    Metrics { families }
}

fn check_name(name: &str, at: usize) {
    let mut chars = name.chars();
    let first = chars.next().unwrap_or_else(|| panic!("line {at}: no name"));
    assert!(
        (first.is_ascii_alphabetic() || first == '_' || first == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "line {at}: bad name {name:?}"
    );
}

/// `name{labels} value` (no timestamp: the proxy writes none).
fn parse_sample(line: &str, at: usize) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("line {at}: no value: {line}"));
    let name = &line[..name_end];
    check_name(name, at);
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let end = loop {
            let (start, _) = chars
                .clone()
                .next()
                .unwrap_or_else(|| panic!("line {at}: labels not closed"));
            let eq = inner[start..]
                .find('=')
                .unwrap_or_else(|| panic!("line {at}: a label without ="));
            let label = &inner[start..start + eq];
            check_name(label, at);
            assert!(
                !label.starts_with("__"),
                "line {at}: reserved label {label}"
            );
            // Past `label="`.
            for _ in 0..eq + 1 {
                chars.next();
            }
            assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "line {at}: quote");
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("line {at}: bad escape \\{other:?}"),
                    },
                    Some('\n') | None => panic!("line {at}: a label value not closed"),
                    Some(c) => value.push(c),
                }
            }
            assert!(
                labels.insert(label.to_owned(), value).is_none(),
                "line {at}: label {label} twice"
            );
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => break i,
                other => panic!("line {at}: after a label value: {other:?}"),
            }
        };
        rest = &inner[end + 1..];
    }
    let text = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("line {at}: no space before the value: {line}"));
    let value = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .unwrap_or_else(|| panic!("line {at}: bad value {text:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Per label set: buckets in increasing `le` up to `+Inf`, cumulative
/// counts that never decrease, `+Inf` equal to `_count`, one `_sum`.
fn check_histogram(family: &Family) {
    /// One label set's lines: buckets as (bound, count), sums, counts.
    #[derive(Default)]
    struct Series {
        buckets: Vec<(f64, f64)>,
        sums: Vec<f64>,
        counts: Vec<f64>,
    }
    let mut series: BTreeMap<Labels, Series> = BTreeMap::new();
    for sample in &family.samples {
        let mut labels = sample.labels.clone();
        let le = labels.remove("le");
        let entry = series.entry(labels).or_default();
        if sample.name.ends_with("_bucket") {
            let le = le.unwrap_or_else(|| panic!("a bucket without le: {sample:?}"));
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le is a number")
            };
            assert!(
                entry.sums.is_empty() && entry.counts.is_empty(),
                "a bucket after _sum or _count: {sample:?}"
            );
            entry.buckets.push((bound, sample.value));
        } else {
            assert_eq!(le, None, "le outside a bucket: {sample:?}");
            if sample.name.ends_with("_sum") {
                entry.sums.push(sample.value);
            } else {
                entry.counts.push(sample.value);
            }
        }
    }
    assert!(!series.is_empty(), "{} has no series", family.name);
    for (
        labels,
        Series {
            buckets,
            sums,
            counts,
        },
    ) in series
    {
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{labels:?}: buckets {buckets:?}"
        );
        let last = buckets.last().expect("buckets");
        assert_eq!(last.0, f64::INFINITY, "{labels:?}: the last bucket is +Inf");
        assert_eq!(sums.len(), 1, "{labels:?}: one _sum");
        assert_eq!(counts, [last.1], "{labels:?}: _count is the +Inf bucket");
        assert!(sums[0] >= 0.0);
    }
}

impl Metrics {
    fn family(&self, name: &str) -> &Family {
        self.families
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    /// The value of sample `name` with exactly `labels`, as a whole number.
    fn count(&self, name: &str, labels: &Labels) -> u64 {
        let sample = self
            .families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == *labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?}"));
        assert_eq!(sample.value.fract(), 0.0, "{name}{labels:?}");
        sample.value as u64
    }

    /// A backend's sample of family `name` (`_count` and `_sum` included).
    fn of(&self, name: &str, backend: &Backend) -> u64 {
        self.count(name, &labels(backend))
    }

    /// A pool-wide sample.
    fn pool(&self, name: &str) -> u64 {
        self.count(name, &Labels::new())
    }

    /// Asserts the value of each of `expected`'s families for `backend`.
    fn assert_backend(&self, backend: &Backend, expected: &[(&str, u64)]) {
        for &(name, value) in expected {
            assert_eq!(self.of(name, backend), value, "{name} of {}", backend.name);
        }
    }

    /// Asserts the value of each of `expected`'s pool-wide families.
    fn assert_pool(&self, expected: &[(&str, u64)]) {
        for &(name, value) in expected {
            assert_eq!(self.pool(name), value, "{name}");
        }
    }

    /// The backends' label sets, in the order of the first family.
    fn backends(&self) -> Vec<Labels> {
        let family = self.family(FAMILIES[0].0);
        family.samples.iter().map(|s| s.labels.clone()).collect()
    }
}

fn labels(backend: &Backend) -> Labels {
    Labels::from([
        ("backend".to_owned(), backend.name.clone()),
        ("address".to_owned(), backend.address.to_string()),
    ])
}

/// `GET /metrics`, parsed, after checking its status, type and families.
async fn metrics(proxy: &Proxy) -> Metrics {
    let answer = get(proxy.admin, "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some(CONTENT_TYPE));
    let metrics = parse(answer.text());
    let families: Vec<(&str, &str)> = metrics
        .families
        .iter()
        .map(|f| (f.name.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(families, FAMILIES);
    metrics
}

/// Polls `/metrics` until `done` holds, for at most [`WAIT`].
async fn metrics_when(proxy: &Proxy, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = metrics(proxy).await;
        if done(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` sequential `GET /` on one connection; each answer's status.
async fn statuses(proxy: &Proxy, n: usize) -> Vec<u16> {
    let mut client = Client::connect(proxy.address).await;
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(client.get("/").await.status);
    }
    statuses
}

/// Every per-backend number of `/metrics` against `/stats`, and the
/// histogram's count against the responses the backend gave.
async fn agree_with_stats(proxy: &Proxy, metrics: &Metrics, backends: &[&Backend]) {
    let stats = proxy.stats().await;
    for backend in backends {
        let name = backend.name.as_str();
        assert_eq!(metrics.of(ACTIVE, backend), stats.active(name));
        assert_eq!(metrics.of(REQUESTS, backend), stats.requests(name));
        assert_eq!(metrics.of(FAILURES, backend), stats.get(name, "failed"));
        assert_eq!(metrics.of(HEALTHY, backend), u64::from(stats.healthy(name)));
        assert_eq!(metrics.of(WEIGHT, backend), stats.get(name, "weight"));
        assert_eq!(
            metrics.of(COUNT, backend),
            backend.answered() as u64,
            "{name}"
        );
    }
    assert_eq!(metrics.pool(REJECTED), stats.rejected());
    let mut listed = metrics.backends();
    listed.sort();
    let mut expected: Vec<Labels> = backends.iter().map(|b| labels(b)).collect();
    expected.sort();
    assert_eq!(listed, expected, "every backend, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_load_are_exact_and_agree_with_stats() {
    let refused = Backend::refusing("refused").await;
    let a = Backend::start("a", Behaviour::Fast).await;
    // A name with every character a label value escapes but the line feed
    // (which no flag can carry).
    let odd = Backend::start(r#"say "hi" \ b"#, Behaviour::Fast).await;
    let proxy = Proxy::start(&[refused.spec(), a.spec(), odd.spec_with("weight=2")], &[]);
    let before = metrics(&proxy).await;
    for backend in [&refused, &a, &odd] {
        before.assert_backend(backend, &[(REQUESTS, 0), (HEALTHY, 1), (COUNT, 0)]);
    }
    // The first request is tried on `refused` first (every count is 0 and
    // ties rotate from the first), then on another; `refused` is then out.
    assert_eq!(statuses(&proxy, 30).await, vec![200; 30]);
    proxy
        .stats_when("every count given back", |s| s.sum("active") == 0)
        .await;
    let after = metrics(&proxy).await;
    agree_with_stats(&proxy, &after, &[&refused, &a, &odd]).await;
    after.assert_backend(
        &refused,
        &[(REQUESTS, 1), (FAILURES, 1), (HEALTHY, 0), (COUNT, 0)],
    );
    let (on_a, on_odd) = (a.answered() as u64, odd.answered() as u64);
    assert_eq!(on_a + on_odd, 30);
    for (backend, answered, weight) in [(&a, on_a, 1), (&odd, on_odd, 2)] {
        after.assert_backend(
            backend,
            &[
                (REQUESTS, answered),
                (FAILURES, 0),
                (HEALTHY, 1),
                (ACTIVE, 0),
                (COUNT, answered),
                (WEIGHT, weight),
            ],
        );
    }
    after.assert_pool(&[(RETRIES, 1), (REJECTED, 0), (QUEUED, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_counts_one_failure_and_one_retry() {
    // It closes each connection after its answer, so that the proxy
    // connects anew for each request and finds nothing listening once it
    // stops.
    let mut stopping = Backend::closing("stopping", Close::AfterAnswer).await;
    let a = Backend::start("a", Behaviour::Fast).await;
    let proxy = Proxy::start(&[stopping.spec(), a.spec()], &[]);
    assert_eq!(statuses(&proxy, 4).await, vec![200; 4]);
    assert_eq!((stopping.answered(), a.answered()), (2, 2));
    stopping.stop_listening().await;
    // The next request is tried on `stopping` (ties rotate), refused, and
    // retried on `a`; `stopping` is then out (--max-fails 1).
    assert_eq!(statuses(&proxy, 4).await, vec![200; 4]);
    proxy
        .stats_when("every count given back", |s| s.sum("active") == 0)
        .await;
    let metrics = metrics(&proxy).await;
    agree_with_stats(&proxy, &metrics, &[&stopping, &a]).await;
    metrics.assert_backend(
        &stopping,
        &[(REQUESTS, 3), (FAILURES, 1), (HEALTHY, 0), (COUNT, 2)],
    );
    metrics.assert_backend(&a, &[(REQUESTS, 6), (FAILURES, 0), (COUNT, 6)]);
    metrics.assert_pool(&[(RETRIES, 1), (REJECTED, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_refusing_everything_counts_failures_retries_and_rejections() {
    let r1 = Backend::refusing("r1").await;
    let r2 = Backend::refusing("r2").await;
    let proxy = Proxy::start(&[r1.spec(), r2.spec()], &[]);
    // Tried on r1, retried on r2, then no backend is left: 502 (no
    // rejection: the engine had backends to give). Both are out now: each
    // next request is a 503 and a rejection.
    assert_eq!(statuses(&proxy, 3).await, [502, 503, 503]);
    let metrics = metrics(&proxy).await;
    agree_with_stats(&proxy, &metrics, &[&r1, &r2]).await;
    for r in [&r1, &r2] {
        metrics.assert_backend(
            r,
            &[
                (REQUESTS, 1),
                (FAILURES, 1),
                (HEALTHY, 0),
                (ACTIVE, 0),
                (COUNT, 0),
                (SUM, 0),
            ],
        );
    }
    metrics.assert_pool(&[(RETRIES, 1), (REJECTED, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_and_active_gauges_show_a_full_backend_and_its_waiting_request() {
    let (gate, only, proxy, first) = full_pool(&[]).await;
    let second = tokio::spawn(get(proxy.address, "/"));
    let held = metrics_when(&proxy, "the second request queued", |m| m.pool(QUEUED) == 1).await;
    held.assert_backend(&only, &[(ACTIVE, 1), (REQUESTS, 1), (COUNT, 0)]);
    gate.open();
    for task in [first, second] {
        let answer = within("a held request", task).await.expect("no panic");
        assert_eq!((answer.status, answer.text()), (200, "only"));
    }
    proxy
        .stats_when("every count given back", |s| s.active("only") == 0)
        .await;
    let after = metrics(&proxy).await;
    agree_with_stats(&proxy, &after, &[&only]).await;
    assert_eq!(after.pool(QUEUED), 0);
    after.assert_backend(&only, &[(REQUESTS, 2), (COUNT, 2)]);
    after.assert_pool(&[(REJECTED, 0), (RETRIES, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_one_page_that_reads_stats() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let proxy = Proxy::start(&[a.spec()], &[]);
    let page = get(proxy.admin, "/").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.starts_with("<!doctype html>"), "{html:.100}");
    assert!(html.contains("fetch(\"/stats\""), "it reads /stats");
    assert!(html.contains("setInterval(refresh, 1000)"), "every second");
    for header in [
        "<th>Backend</th>",
        "<th>Address</th>",
        "<th>Active</th>",
        "<th>Share of requests</th>",
        "<th>Health</th>",
        "<th>Weight</th>",
        "<th>Mean latency</th>",
    ] {
        assert!(html.contains(header), "{header}");
    }
    assert!(html.contains("id=\"rejected\""), "the pool's rejections");
    // Self-contained: nothing fetched from elsewhere.
    for external in ["http://", "https://", "src=", "<link"] {
        assert!(!html.contains(external), "{external} in the page");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_get_404_naming_each_path_and_other_methods_405() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let proxy = Proxy::start(&[a.spec()], &[]);
    for path in ["/nope", "/metrics/", "/stats/x", "/index.html"] {
        let answer = get(proxy.admin, path).await;
        assert_eq!(
            (answer.status, answer.text()),
            (
                404,
                r#"{"error":"not found: GET /, GET /stats, GET /metrics, POST /messages"}"#
            ),
            "{path}"
        );
        assert_eq!(answer.header("content-type"), Some("application/json"));
    }
    for (method, path, allowed) in [
        ("PUT", "/metrics", "GET /metrics"),
        ("DELETE", "/metrics", "GET /metrics"),
        ("DELETE", "/", "GET /"),
        ("PUT", "/stats", "GET /stats"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin.test")
            .body(Empty::<Bytes>::new())
            .expect("a request");
        let answer = read(send(proxy.admin, request).await).await;
        assert_eq!(
            (answer.status, answer.text()),
            (405, format!(r#"{{"error":"{allowed}"}}"#).as_str()),
            "{method} {path}"
        );
    }
    // The listener still answers: nothing above was taken for a backend's.
    assert_eq!(a.arrived(), 0);
    assert_eq!(metrics(&proxy).await.pool(REJECTED), 0);
}
