//! `leastconn proxy --slow-start`: a backend that comes back is eased in,
//! the real binary in front of real HTTP backends that hold every request
//! until the test lets them go, so that the counts stand still while the
//! test looks at where each new request went.
//!
//! Without slow start, least connections sends a returning backend (0
//! connections) every new request until it has caught up with the others;
//! with it, the backend starts at 5% of its weight, and its share of the
//! next requests grows as its ramp does.

mod common;

use common::proxy::{get, within, Answer, Backend, Behaviour, Gate, Health, Proxy, Stats};
use tokio::task::JoinHandle;

/// Backends `a`, `b`, `c` whose other requests than `GET /health` wait for
/// `gate`; `b`'s `/health` answers as the `Health` returned says.
async fn backends(gate: &Gate) -> (Vec<Backend>, Health) {
    let b_health = Health::new(200);
    let mut backends = Vec::new();
    for (name, health) in [
        ("a", Health::new(200)),
        ("b", b_health.clone()),
        ("c", Health::new(200)),
    ] {
        let behaviour = Behaviour::checked("/health", &health, Behaviour::Gated(gate.clone()));
        backends.push(Backend::start(name, behaviour).await);
    }
    (backends, b_health)
}

/// Sends `n` requests one after another, each held by its backend, waiting
/// for each to be counted before the next; which backend each went to.
async fn held(proxy: &Proxy, n: usize, requests: &mut Vec<JoinHandle<Answer>>) -> Vec<String> {
    let mut went = Vec::with_capacity(n);
    for _ in 0..n {
        let before = proxy.stats().await;
        let total = before.sum("requests");
        requests.push(tokio::spawn(get(proxy.address, "/")));
        let after = proxy
            .stats_when("the request counted", |s| s.sum("requests") == total + 1)
            .await;
        let names = after.0["backends"].as_array().expect("backends").iter();
        let name = names
            .filter_map(|b| b["name"].as_str())
            .find(|name| after.requests(name) == before.requests(name) + 1)
            .expect("one backend's requests grew by one");
        went.push(name.to_owned());
    }
    went
}

fn ramp(stats: &Stats, name: &str) -> u64 {
    stats.backend(name)["ramp"].as_u64().unwrap_or(100)
}

/// A proxy over `a`, `b`, `c` right after `b` came back.
struct Comeback {
    /// Where the 8 requests after `b`'s return went.
    next: Vec<String>,
    /// `b`'s ramp after those 8.
    ramp_after: u64,
    proxy: Proxy,
    gate: Gate,
    requests: Vec<JoinHandle<Answer>>,
    _backends: Vec<Backend>,
}

/// Brings `b` back while `a` and `c` hold 4 requests each, and sends 8
/// more.
async fn comeback(slow_start: Option<&str>) -> Comeback {
    let gate = Gate::new();
    let (backends, b_health) = backends(&gate).await;
    // Only b is checked, and not so often that a busy machine fails its
    // checks: a check failed by chance would start its slow start anew.
    let specs: Vec<String> = backends
        .iter()
        .map(|b| match b.name.as_str() {
            "b" => b.spec_with("health-check=on"),
            _ => b.spec(),
        })
        .collect();
    let mut flags = vec![
        "--health-interval",
        "100ms",
        "--health-timeout",
        "90ms",
        "--health-fall",
        "2",
        "--health-rise",
        "1",
        "--tie-break",
        "round-robin",
    ];
    if let Some(over) = slow_start {
        flags.extend(["--slow-start", over]);
    }
    let proxy = Proxy::start(&specs, &flags);
    proxy
        .stats_when("b checked", |s| {
            s.healthy("b") && s.check("b", "passes") >= 1
        })
        .await;
    b_health.set(500);
    proxy.stats_when("b out", |s| !s.healthy("b")).await;
    let mut requests = Vec::new();
    let first = held(&proxy, 8, &mut requests).await;
    assert_eq!(first.iter().filter(|n| *n == "b").count(), 0, "{first:?}");
    let stats = proxy.stats().await;
    assert_eq!(
        (stats.active("a"), stats.active("c")),
        (4, 4),
        "{}",
        stats.0
    );
    b_health.set(200);
    proxy.stats_when("b back", |s| s.healthy("b")).await;
    let next = held(&proxy, 8, &mut requests).await;
    let ramp_after = ramp(&proxy.stats().await, "b");
    Comeback {
        next,
        ramp_after,
        proxy,
        gate,
        requests,
        _backends: backends,
    }
}

/// Lets every held request go and checks each was answered by its backend
/// and every count is back to 0.
async fn release(proxy: &Proxy, gate: &Gate, requests: Vec<JoinHandle<Answer>>) {
    gate.open();
    for request in requests {
        let answer = within("a held request", request).await.expect("no panic");
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let stats = proxy
        .stats_when("every request done", |s| s.sum("active") == 0)
        .await;
    assert_eq!(stats.sum("completed"), stats.sum("requests"), "{}", stats.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_slow_start_a_returning_backend_takes_every_request_until_it_catches_up() {
    let Comeback {
        next,
        ramp_after,
        proxy,
        gate,
        requests,
        _backends,
    } = comeback(None).await;
    // b at 0 against 4 and 4: the next 4 are b's, then the three rotate.
    assert_eq!(next[..4], ["b", "b", "b", "b"], "{next:?}");
    assert_eq!(next.iter().filter(|n| *n == "b").count(), 5, "{next:?}");
    assert_eq!(ramp_after, 100);
    release(&proxy, &gate, requests).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_slow_start_a_returning_backend_gets_a_share_that_grows_with_its_ramp() {
    // 20 steps of 5% over 6s: 5% for the first 316ms, 10% for the next.
    let Comeback {
        next,
        ramp_after,
        proxy,
        gate,
        mut requests,
        _backends,
    } = comeback(Some("6s")).await;
    assert!(
        ramp_after <= 10,
        "the 8 requests took so long that b's ramp reached {ramp_after}%"
    );
    // At 10% or less, b's 1 connection weighs as 10 or more: more than a's
    // and c's 4 to 8. b has the first (0 is least at any ramp), and then
    // none.
    assert_eq!(next[0], "b", "{next:?}");
    assert_eq!(next.iter().filter(|n| *n == "b").count(), 1, "{next:?}");
    // Halfway up (a: 8 or 9, c: 8 or 9, b: 1), b's 1 weighs as 2 or less:
    // the next requests are b's until its load passes the others'.
    let stats = proxy
        .stats_when("b at half its weight or more", |s| ramp(s, "b") >= 50)
        .await;
    let half = ramp(&stats, "b");
    assert!(half < 100, "b's ramp is already full: {}", stats.0);
    let later = held(&proxy, 4, &mut requests).await;
    let b_later = later.iter().filter(|n| *n == "b").count();
    assert!(b_later >= 3, "at {half}% b got {b_later} of 4: {later:?}");
    // The ramp ends at 100%, and /stats no longer lists it.
    let stats = proxy
        .stats_when("the slow start over", |s| ramp(s, "b") == 100)
        .await;
    assert!(stats.backend("b").get("ramp").is_none(), "{}", stats.0);
    assert!(proxy
        .log()
        .iter()
        .any(|line| line.contains("slow start: from 5% of its weight to all of it over 6s")));
    release(&proxy, &gate, requests).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_or_undrained_at_run_time_starts_slowly_too() {
    let gate = Gate::new();
    let a = Backend::start("a", Behaviour::Gated(gate.clone())).await;
    let b = Backend::start("b", Behaviour::Gated(gate.clone())).await;
    let proxy = Proxy::start(&[a.spec()], &["--slow-start", "6s"]);
    let mut requests = Vec::new();
    assert_eq!(held(&proxy, 4, &mut requests).await, ["a"; 4]);
    let added = proxy
        .message(&format!(
            r#"{{"type":"add_backend","msg_id":1,"backend":"b","address":"{}"}}"#,
            b.address
        ))
        .await;
    assert_eq!(added["type"], "add_backend_ok", "{added}");
    // Added at 5%, in the step that added it: b's first connection
    // weighs as 20, more than a's 4 to 7.
    let next = held(&proxy, 4, &mut requests).await;
    let ramp_after = ramp(&proxy.stats().await, "b");
    assert!(ramp_after <= 10, "b's ramp reached {ramp_after}%");
    assert_eq!(next, ["b", "a", "a", "a"]);
    // Drained, then given its weight back: a starts slowly again.
    for weight in [0, 1] {
        let set = proxy
            .message(&format!(
                r#"{{"type":"set_backend","msg_id":2,"backend":"a","weight":{weight}}}"#
            ))
            .await;
        assert_eq!(set["type"], "set_backend_ok", "{set}");
    }
    let stats = proxy.stats().await;
    assert!(ramp(&stats, "a") <= 10, "{}", stats.0);
    assert_eq!(stats.get("a", "weight"), 1, "{}", stats.0);
    release(&proxy, &gate, requests).await;
}
