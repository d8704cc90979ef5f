//! `leastconn proxy`, the real binary, in front of real HTTP backends
//! served by the test process: which backend each request goes to, what
//! happens when backends fail, hang or are full, bodies of a gigabyte,
//! what a proxy must do to headers, shutdown, and the config file.

mod common;

use common::proxy::{
    full_pool, get, raw, read, read_head, read_response, send, status_of, within, Backend,
    Behaviour, Client, Close, Gate, Generated, Proxy, WAIT,
};
use common::{peak_kib, Running};
use hyper::Request;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GIB: u64 = 1 << 30;

/// The names in the bodies of `n` sequential `GET /` answers, each 200.
async fn sequence(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut client = Client::connect(proxy.address).await;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let answer = client.get("/").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        names.push(answer.text().to_owned());
    }
    names
}

fn counts(names: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    counts
}

/// `n` `GET /` requests at once, each on its connection, answered in the
/// background.
fn spawn_gets(proxy: &Proxy, n: usize) -> Vec<tokio::task::JoinHandle<common::proxy::Answer>> {
    (0..n)
        .map(|_| tokio::spawn(get(proxy.address, "/")))
        .collect()
}

async fn all_ok(tasks: Vec<tokio::task::JoinHandle<common::proxy::Answer>>) -> Vec<String> {
    let mut names = Vec::new();
    for task in tasks {
        let answer = within("a held request", task).await.expect("no panic");
        assert_eq!(answer.status, 200, "{}", answer.text());
        names.push(answer.text().to_owned());
    }
    names
}

// 1. Least connections.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gets_few_requests_and_no_count_leaks() {
    const CLIENTS: usize = 8;
    const EACH: usize = 25;
    const TOTAL: usize = CLIENTS * EACH;
    let slow = Backend::start("slow", Behaviour::Slow(Duration::from_millis(200))).await;
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let proxy = Proxy::start(&[slow.spec(), a.spec(), b.spec()], &[]);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let address = proxy.address;
            tokio::spawn(async move {
                let mut client = Client::connect(address).await;
                let mut names = Vec::new();
                for _ in 0..EACH {
                    let answer = client.get("/").await;
                    assert_eq!(answer.status, 200, "{}", answer.text());
                    names.push(answer.text().to_owned());
                }
                names
            })
        })
        .collect();
    let mut names = Vec::new();
    for client in clients {
        names.extend(within("a client", client).await.expect("no panic"));
    }
    let took = started.elapsed();
    let counts = counts(&names);
    eprintln!("{TOTAL} requests in {took:?}: {counts:?}");
    let served = |name: &str| counts.get(name).copied().unwrap_or(0);
    assert_eq!(served("slow") + served("a") + served("b"), TOTAL);
    // The slow backend is chosen only when its count is no higher than
    // both fast ones' (ties rotate). Its k-th request at once needs both
    // fast ones holding k - 1 at the pick: 3(k - 1) + 1 <= CLIENTS, so
    // k <= 3, each held at least 200 ms: at most 3 per 200 ms of the run.
    // And a small share: the fast ones answer in about a millisecond.
    let slow_most = 3 * (took.as_millis() as usize / 200 + 1);
    assert!(
        served("slow") <= slow_most,
        "the slow backend got {} in {took:?}",
        served("slow")
    );
    assert!(
        served("slow") * 5 < TOTAL,
        "the slow backend got {} of {TOTAL}",
        served("slow")
    );
    // Every request was counted once and every count given back.
    let stats = proxy.stats().await;
    for backend in [&slow, &a, &b] {
        let name = backend.name.as_str();
        assert_eq!(stats.active(name), 0, "{}", stats.0);
        assert_eq!(stats.requests(name) as usize, served(name), "{}", stats.0);
        assert_eq!(backend.answered(), served(name));
    }
    assert_eq!(stats.sum("requests") as usize, TOTAL);
    assert_eq!(stats.sum("completed") as usize, TOTAL);
    assert_eq!(stats.sum("failed"), 0);
}

// 2. Ties, weights, drained and limited backends, each algorithm.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_rotate_by_default_and_go_to_the_first_with_lowest_index() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let c = Backend::start("c", Behaviour::Fast).await;
    let specs = [a.spec(), b.spec(), c.spec()];

    let proxy = Proxy::start(&specs, &[]);
    assert_eq!(
        sequence(&proxy, 9).await,
        ["a", "b", "c", "a", "b", "c", "a", "b", "c"]
    );
    assert_eq!(proxy.stats().await.0["tie_break"], "round-robin");

    let proxy = Proxy::start(&specs, &["--tie-break", "lowest-index"]);
    assert_eq!(sequence(&proxy, 6).await, ["a"; 6]);
    let stats = proxy.stats().await;
    assert_eq!(stats.0["tie_break"], "lowest-index");
    assert_eq!(
        (
            stats.requests("a"),
            stats.requests("b"),
            stats.requests("c")
        ),
        (6, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_weight_holds_twice_the_requests_and_weight_zero_none() {
    let gate = Gate::new();
    let heavy = Backend::start("heavy", Behaviour::Gated(gate.clone())).await;
    let light = Backend::start("light", Behaviour::Gated(gate.clone())).await;
    let drained = Backend::start("drained", Behaviour::Fast).await;
    let proxy = Proxy::start(
        &[
            heavy.spec_with("weight=2"),
            light.spec(),
            drained.spec_with("weight=0"),
        ],
        &[],
    );
    let held = spawn_gets(&proxy, 6);
    let stats = proxy
        .stats_when("6 requests held", |s| s.sum("active") == 6)
        .await;
    // Each pick evens out active ÷ weight, and none ends while held.
    assert_eq!(
        (
            stats.active("heavy"),
            stats.active("light"),
            stats.active("drained")
        ),
        (4, 2, 0),
        "{}",
        stats.0
    );
    gate.open();
    let names = all_ok(held).await;
    let counts = counts(&names);
    assert_eq!(counts.get("heavy"), Some(&4));
    assert_eq!(counts.get("light"), Some(&2));
    assert_eq!(drained.arrived(), 0);
    let stats = proxy.stats_when("all done", |s| s.sum("active") == 0).await;
    assert_eq!(stats.requests("drained"), 0);
    assert_eq!(stats.get("drained", "weight"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_with_max_1_never_holds_more_than_one() {
    let gate = Gate::new();
    let limited = Backend::start("limited", Behaviour::Gated(gate.clone())).await;
    let open = Backend::start("open", Behaviour::Gated(gate.clone())).await;
    let proxy = Proxy::start(&[limited.spec_with("max=1"), open.spec()], &[]);
    let held = spawn_gets(&proxy, 5);
    let stats = proxy
        .stats_when("5 requests held", |s| s.sum("active") == 5)
        .await;
    assert_eq!(stats.active("limited"), 1, "{}", stats.0);
    assert_eq!(stats.active("open"), 4, "{}", stats.0);
    assert_eq!(stats.get("limited", "max_connections"), 1);
    gate.open();
    all_ok(held).await;
    let stats = proxy.stats_when("all done", |s| s.sum("active") == 0).await;
    assert_eq!(stats.requests("limited"), 1);
    assert_eq!(stats.requests("open"), 4);
    assert_eq!(stats.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_serves_and_never_picks_a_drained_backend() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let c = Backend::start("c", Behaviour::Fast).await;
    let drained = Backend::start("drained", Behaviour::Fast).await;
    let specs = [a.spec(), drained.spec_with("weight=0"), b.spec(), c.spec()];
    for algorithm in ["round-robin", "random", "power-of-two-choices"] {
        let proxy = Proxy::start(&specs, &["--algorithm", algorithm, "--seed", "7"]);
        let names = sequence(&proxy, 30).await;
        let counts = counts(&names);
        eprintln!("{algorithm}: {counts:?}");
        assert_eq!(counts.get("drained"), None, "{algorithm}");
        assert_eq!(counts.values().sum::<usize>(), 30);
        if algorithm == "round-robin" {
            assert_eq!(names[..6], ["a", "b", "c", "a", "b", "c"]);
            assert_eq!(counts.values().collect::<Vec<_>>(), [&10, &10, &10]);
        } else if algorithm == "random" {
            // Seeded, so the same every run: each backend gets some.
            assert_eq!(counts.len(), 3, "{algorithm}: {counts:?}");
        }
        let stats = proxy.stats().await;
        assert_eq!(stats.0["algorithm"], algorithm);
        assert_eq!(stats.requests("drained"), 0);
        assert_eq!(stats.sum("requests"), 30);
        assert_eq!(stats.sum("active"), 0);
    }
    assert_eq!(drained.arrived(), 0);
}

// 3. Failures.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backend_is_retried_elsewhere_and_taken_out() {
    let refused = Backend::refusing("refused").await;
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let proxy = Proxy::start(&[refused.spec(), a.spec(), b.spec()], &[]);
    // The first request is tried on `refused` first (every count is 0 and
    // ties rotate from the first), then on another.
    let names = sequence(&proxy, 20).await;
    let counts = counts(&names);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    let stats = proxy.stats().await;
    assert_eq!(stats.requests("refused"), 1, "{}", stats.0);
    assert_eq!(stats.get("refused", "failed"), 1, "{}", stats.0);
    assert!(!stats.healthy("refused"), "{}", stats.0);
    assert_eq!(stats.requests("a") + stats.requests("b"), 20);
    assert_eq!(stats.sum("active"), 0);
    assert_eq!(stats.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_refuses_every_connection_gives_502_naming_each() {
    let r1 = Backend::refusing("r1").await;
    let r2 = Backend::refusing("r2").await;
    let r3 = Backend::refusing("r3").await;
    let proxy = Proxy::start(&[r1.spec(), r2.spec(), r3.spec()], &[]);
    let answer = get(proxy.address, "/").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    for r in [&r1, &r2, &r3] {
        let named = format!("backend {} ({})", r.name, r.address);
        assert!(answer.text().contains(&named), "{named}: {}", answer.text());
    }
    assert!(
        answer.text().contains("no more retries"),
        "{}",
        answer.text()
    );
    // All three are now out, for --fail-timeout (10 s by default).
    let answer = get(proxy.address, "/").await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.header("retry-after"), Some("10"));
    assert!(
        answer.text().contains("all 3 backends are down"),
        "{}",
        answer.text()
    );
    let stats = proxy.stats().await;
    assert_eq!(stats.sum("requests"), 3);
    assert_eq!(stats.sum("failed"), 3);
    assert_eq!(stats.rejected(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_every_backend_drained_gives_503_with_retry_after() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let proxy = Proxy::start(&[a.spec_with("weight=0"), b.spec_with("weight=0")], &[]);
    let answer = get(proxy.address, "/").await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.header("retry-after"), Some("10"));
    assert!(
        answer
            .text()
            .contains("all 2 backends are drained (weight 0)"),
        "{}",
        answer.text()
    );
    assert_eq!(a.arrived() + b.arrived(), 0);
    let stats = proxy.stats().await;
    assert_eq!(stats.rejected(), 1);
    assert_eq!(stats.sum("requests"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_queues_a_request_until_room_is_made() {
    let (gate, only, proxy, first) = full_pool(&[]).await;
    let mut second = tokio::spawn(get(proxy.address, "/"));
    // Nothing shows a queued request; that it is still unanswered after a
    // while, and never reached the backend, shows that it waits.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut second)
            .await
            .is_err(),
        "the second request was answered while the backend was full"
    );
    assert_eq!(only.arrived(), 1);
    assert_eq!(proxy.stats().await.active("only"), 1);
    gate.open();
    let names = all_ok(vec![first, second]).await;
    assert_eq!(names, ["only", "only"]);
    assert_eq!(only.arrived(), 2);
    let stats = proxy.stats().await;
    assert_eq!(stats.requests("only"), 2);
    assert_eq!(stats.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_drains_one_at_a_time_through_a_backend_with_max_1() {
    const N: usize = 40;
    let only = Backend::start("only", Behaviour::Slow(Duration::from_millis(5))).await;
    let proxy = Proxy::start(&[only.spec_with("max=1")], &[]);
    let started = Instant::now();
    let names = all_ok(spawn_gets(&proxy, N)).await;
    let took = started.elapsed();
    assert_eq!(names, vec!["only"; N]);
    // One at a time: at least N × 5 ms.
    assert!(took >= Duration::from_millis(5 * N as u64), "{took:?}");
    let stats = proxy.stats().await;
    assert_eq!(stats.requests("only"), N as u64);
    assert_eq!(stats.rejected(), 0);
    assert_eq!(stats.active("only"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_without_a_queue_or_past_the_queue_timeout_gives_503() {
    for (flags, why, least, most) in [
        (
            ["--queue", "0"],
            "every backend is at its connection limit and 0 requests are already waiting",
            Duration::ZERO,
            Duration::from_secs(2),
        ),
        (
            ["--queue-timeout", "200ms"],
            "every backend stayed at its connection limit for 200ms",
            Duration::from_millis(200),
            Duration::from_secs(3),
        ),
    ] {
        let (gate, only, proxy, first) = full_pool(&flags).await;
        let started = Instant::now();
        let answer = get(proxy.address, "/").await;
        let took = started.elapsed();
        assert_eq!(answer.status, 503, "{flags:?}: {}", answer.text());
        assert_eq!(answer.header("retry-after"), Some("1"), "{flags:?}");
        assert!(answer.text().contains(why), "{flags:?}: {}", answer.text());
        assert!(least <= took && took < most, "{flags:?}: {took:?}");
        gate.open();
        assert_eq!(all_ok(vec![first]).await, ["only"]);
        let stats = proxy.stats().await;
        assert_eq!(stats.rejected(), 1);
        assert_eq!(stats.requests("only"), 1);
        assert_eq!(only.arrived(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_hangs_gives_504_after_the_response_timeout() {
    let hung = Backend::start("hung", Behaviour::Hang).await;
    let proxy = Proxy::start(&[hung.spec()], &["--response-timeout", "500ms"]);
    let started = Instant::now();
    let answer = get(proxy.address, "/").await;
    let took = started.elapsed();
    eprintln!("504 after {took:?}");
    assert_eq!(answer.status, 504, "{}", answer.text());
    assert!(
        answer.text().contains(&format!(
            "backend hung ({}) sent no response header",
            hung.address
        )),
        "{}",
        answer.text()
    );
    assert!(
        Duration::from_millis(500) <= took && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(hung.arrived(), 1);
    let stats = proxy.stats().await;
    assert_eq!(stats.active("hung"), 0);
    assert_eq!(stats.get("hung", "failed"), 1);
    assert!(!stats.healthy("hung"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_on_5xx_a_backend_answering_500_is_taken_out() {
    let bad = Backend::start("bad", Behaviour::Error).await;
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let proxy = Proxy::start(&[bad.spec(), a.spec(), b.spec()], &["--fail-on-5xx"]);
    let mut client = Client::connect(proxy.address).await;
    let mut statuses = BTreeMap::<u16, usize>::new();
    for _ in 0..50 {
        *statuses.entry(client.get("/").await.status).or_default() += 1;
    }
    // The first request goes to `bad` (ties rotate from the first); its
    // 500 is relayed (a response is never retried) and takes it out.
    assert_eq!(statuses, BTreeMap::from([(200, 49), (500, 1)]));
    assert_eq!(bad.arrived(), 1);
    let stats = proxy.stats().await;
    assert_eq!(stats.get("bad", "failed"), 1);
    assert!(!stats.healthy("bad"));
    assert_eq!(stats.requests("a") + stats.requests("b"), 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fail_on_5xx_a_backend_answering_500_stays_in_and_draws_requests() {
    let bad = Backend::start("bad", Behaviour::Error).await;
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let specs = [bad.spec(), a.spec(), b.spec()];
    let proxy = Proxy::start(&specs, &[]);
    let mut client = Client::connect(proxy.address).await;
    let mut statuses = BTreeMap::<u16, usize>::new();
    for _ in 0..51 {
        *statuses.entry(client.get("/").await.status).or_default() += 1;
    }
    // One at a time every count is 0 and ties rotate: `bad` gets its third.
    assert_eq!(statuses, BTreeMap::from([(200, 34), (500, 17)]));
    let stats = proxy.stats().await;
    assert_eq!(stats.get("bad", "failed"), 0);
    assert!(stats.healthy("bad"));
    drop(proxy);

    // Under concurrent load it answers at once and so looks least loaded:
    // it draws more than its third while the others hold requests.
    let gate = Gate::new();
    let held_a = Backend::start("a", Behaviour::Gated(gate.clone())).await;
    let held_b = Backend::start("b", Behaviour::Gated(gate.clone())).await;
    // `bad` last, so that the two held requests go to a and b.
    let proxy = Proxy::start(&[held_a.spec(), held_b.spec(), bad.spec()], &[]);
    let held = spawn_gets(&proxy, 2);
    proxy
        .stats_when("a and b each hold one", |s| {
            s.active("a") == 1 && s.active("b") == 1
        })
        .await;
    let mut statuses = BTreeMap::<u16, usize>::new();
    let mut client = Client::connect(proxy.address).await;
    for _ in 0..20 {
        *statuses.entry(client.get("/").await.status).or_default() += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(500, 20)]));
    gate.open();
    all_ok(held).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_kept_alive_connections_is_no_failure() {
    for when in [
        Close::AfterAnswer,
        Close::OnNextRequest,
        Close::ResetOnNextRequest,
    ] {
        let closing = Backend::closing("closing", when).await;
        let proxy = Proxy::start(&[closing.spec()], &[]);
        // One at a time, so that each request finds the last one's
        // connection idle, closed or about to be.
        let names = sequence(&proxy, 20).await;
        assert_eq!(names, vec!["closing"; 20]);
        let stats = proxy.stats().await;
        assert_eq!(stats.get("closing", "failed"), 0, "{}", stats.0);
        assert!(stats.healthy("closing"));
        assert_eq!(stats.requests("closing"), 20);
        assert_eq!(closing.answered(), 20);
    }
}

// 4. Client disconnects and upgrades.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backend_connections_close_after_the_backend_idle_timeout() {
    let a = Backend::start("a", Behaviour::Slow(Duration::from_millis(20))).await;
    let proxy = Proxy::start(&[a.spec()], &["--backend-idle-timeout", "300ms"]);
    let fds = proxy.open_fds();
    // 8 at once: 8 connections to the backend, kept alive once answered.
    assert_eq!(all_ok(spawn_gets(&proxy, 8)).await, ["a"; 8]);
    let open = proxy.open_fds();
    assert!(open >= fds + 8, "{open} descriptors open, {fds} before");
    let stats = proxy.settles(fds).await;
    assert_eq!(stats.requests("a"), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_response_gives_its_count_back() {
    let streaming = Backend::start(
        "streaming",
        Behaviour::Stream {
            len: GIB,
            pause: Some(Duration::from_millis(2)),
        },
    )
    .await;
    let proxy = Proxy::start(&[streaming.spec()], &[]);
    let mut stream = TcpStream::connect(proxy.address).await.expect("connect");
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: test.example\r\n\r\n")
        .await
        .expect("sent");
    let (head, mut body) = read_head(&mut stream).await;
    assert_eq!(status_of(&head), 200, "{head}");
    let mut buf = vec![0; 64 * 1024];
    while body.len() < 256 * 1024 {
        let n = within("body bytes", stream.read(&mut buf))
            .await
            .expect("read");
        assert!(n > 0, "the body ended early");
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(proxy.stats().await.active("streaming"), 1);
    drop(stream);
    let started = Instant::now();
    let stats = proxy
        .stats_when("the count given back", |s| s.active("streaming") == 0)
        .await;
    eprintln!(
        "count given back {:?} after the client left",
        started.elapsed()
    );
    // The client leaving is no failure of the backend's.
    assert_eq!(stats.get("streaming", "completed"), 1);
    assert_eq!(stats.get("streaming", "failed"), 0);
    assert_eq!(stats.requests("streaming"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_tunnels_both_ways_and_holds_its_count_while_open() {
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let proxy = Proxy::start(&[echo.spec()], &[]);
    let mut stream = TcpStream::connect(proxy.address).await.expect("connect");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: test.example\r\n\
              Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .expect("sent");
    let (head, early) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(early.is_empty());
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} in {head}"))
    };
    assert_eq!(header("upgrade"), "websocket");
    assert!(header("connection").eq_ignore_ascii_case("upgrade"));
    let seen = echo.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert_eq!(proxy.stats().await.active("echo"), 1);
    // Small and large messages, each echoed whole.
    for message in [b"ping".to_vec(), vec![b'w'; 200 * 1024]] {
        let (mut from, mut to) = stream.split();
        let mut back = vec![0; message.len()];
        let (sent, read) = within("the echo", async {
            tokio::join!(to.write_all(&message), from.read_exact(&mut back))
        })
        .await;
        sent.expect("sent");
        read.expect("echoed");
        assert!(back == message, "the echo differs");
        assert_eq!(proxy.stats().await.active("echo"), 1);
    }
    drop(stream);
    let stats = proxy
        .stats_when("the tunnel's count given back", |s| s.active("echo") == 0)
        .await;
    assert_eq!(stats.get("echo", "completed"), 1);
    assert_eq!(stats.get("echo", "failed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_after_the_idle_timeout_and_gives_its_count_back() {
    let echo = Backend::start("echo", Behaviour::Echo).await;
    let proxy = Proxy::start(&[echo.spec()], &["--idle-timeout", "300ms"]);
    let mut stream = TcpStream::connect(proxy.address).await.expect("connect");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: test.example\r\n\
              Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .expect("sent");
    let (head, _) = read_head(&mut stream).await;
    assert_eq!(status_of(&head), 101, "{head}");
    let opened = Instant::now();
    proxy
        .stats_when("the tunnel's count given back", |s| s.active("echo") == 0)
        .await;
    let took = opened.elapsed();
    assert!(
        Duration::from_millis(300) <= took && took < Duration::from_secs(3),
        "{took:?}"
    );
    let mut buf = [0u8; 16];
    let n = within("the end of the tunnel", stream.read(&mut buf))
        .await
        .expect("read");
    assert_eq!(n, 0, "the proxy closed the client's side");
}

// 5. Big bodies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_each_way_in_bounded_memory() {
    let download = Backend::start(
        "download",
        Behaviour::Stream {
            len: GIB,
            pause: None,
        },
    )
    .await;
    let upload = Backend::start("upload", Behaviour::Upload).await;
    let proxy = Proxy::start(&[download.spec()], &[]);
    let started = Instant::now();
    let response = send(
        proxy.address,
        Request::get("/big")
            .header("host", "test.example")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], GIB.to_string());
    let mut body = response.into_body();
    let mut length: u64 = 0;
    // Counted as it comes, never held.
    let counting = async {
        use http_body_util::BodyExt;
        while let Some(frame) = body.frame().await {
            length += frame
                .expect("a frame")
                .data_ref()
                .map_or(0, |d| d.len() as u64);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), counting)
        .await
        .expect("the download within 60 s");
    let down = started.elapsed();
    assert_eq!(length, GIB);
    let after_download = peak_kib(proxy.pid());
    drop(proxy);

    let proxy = Proxy::start(&[upload.spec()], &[]);
    let started = Instant::now();
    let request = Request::post("/up")
        .header("host", "test.example")
        .body(Generated::new(GIB, None))
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), async {
        read(send(proxy.address, request).await).await
    })
    .await
    .expect("the upload within 60 s");
    let up = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), GIB.to_string());
    assert_eq!(
        upload.received()[0].header("content-length"),
        Some(GIB.to_string().as_str())
    );
    let after_upload = peak_kib(proxy.pid());
    eprintln!(
        "1 GiB down in {down:?} (peak {after_download} KiB), up in {up:?} (peak {after_upload} KiB)"
    );
    for peak in [after_download, after_upload] {
        assert!(peak < 64 * 1024, "the proxy peaked at {peak} KiB");
    }
    let stats = proxy.stats().await;
    assert_eq!(stats.active("upload"), 0);
    assert_eq!(stats.get("upload", "completed"), 1);
}

// 6. What a proxy must do with HTTP.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_request_framing_gets_400_and_never_reaches_a_backend() {
    let only = Backend::start("only", Behaviour::Upload).await;
    let proxy = Proxy::start(&[only.spec()], &[]);
    for request in [
        &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
           0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
           0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello!",
    ] {
        let answer = raw(proxy.address, request).await;
        assert_eq!(
            answer.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(request),
            answer.head
        );
    }
    assert_eq!(only.arrived(), 0);
    assert_eq!(proxy.stats().await.requests("only"), 0);
    // The same body, framed one way, goes through.
    let answer = raw(
        proxy.address,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.body, b"5");
    assert_eq!(only.arrived(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_lengths_are_refused_in_a_pipeline_and_in_a_head_over_16_kib() {
    let only = Backend::start("only", Behaviour::Upload).await;
    let proxy = Proxy::start(&[only.spec()], &[]);
    // Sent at once: the second request's line is the first's, without
    // Content-Length.
    let mut stream = TcpStream::connect(proxy.address).await.expect("connect");
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              0\r\n\r\n\
              POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await
        .expect("sent");
    let answer = read_response(&mut stream).await;
    assert_eq!(answer.status, 400, "{}", answer.head);
    // Content-Length first, then more than 16 KiB of other headers.
    let padding = "p".repeat(17 * 1024);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Padding: {padding}\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    let answer = raw(proxy.address, request.as_bytes()).await;
    assert_eq!(answer.status, 400, "{}", answer.head);
    assert_eq!(only.arrived(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_requests_pass_whatever_came_before_and_whatever_their_bodies_hold() {
    let only = Backend::start("only", Behaviour::Upload).await;
    let proxy = Proxy::start(&[only.spec()], &[]);
    let mut stream = TcpStream::connect(proxy.address).await.expect("connect");
    // One connection: a request with Content-Length, then chunked ones with
    // the same request line, the last carrying a request head in its body.
    let inner = "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n";
    let chunked = |body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    };
    let requests = [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
        chunked("hello"),
        chunked("world!"),
        chunked(inner),
    ];
    for (request, length) in requests.iter().zip([5, 5, 6, inner.len()]) {
        stream.write_all(request.as_bytes()).await.expect("sent");
        let answer = read_response(&mut stream).await;
        assert_eq!(answer.status, 200, "{request:?}: {}", answer.head);
        assert_eq!(answer.body, length.to_string().as_bytes());
    }
    assert_eq!(only.arrived(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_dropped_and_the_forwarding_headers_added() {
    let only = Backend::start("only", Behaviour::Fast).await;
    let proxy = Proxy::start(&[only.spec()], &[]);
    let answer = raw(
        proxy.address,
        b"GET /h?q=1 HTTP/1.1\r\nHost: shop.example\r\n\
          Connection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
          TE: trailers\r\nProxy-Authorization: Basic c2VjcmV0\r\nAccept: */*\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let answer = raw(
        proxy.address,
        b"GET /again HTTP/1.1\r\nHost: shop.example\r\n\
          X-Forwarded-For: 10.0.0.1\r\nVia: 1.0 edge\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let seen = only.received();
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(first.uri, "/h?q=1");
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            !first.headers.contains_key(gone),
            "{gone} reached the backend: {:?}",
            first.headers
        );
    }
    assert_eq!(first.header("host"), Some("shop.example"));
    assert_eq!(first.header("accept"), Some("*/*"));
    assert_eq!(first.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(first.header("x-forwarded-proto"), Some("http"));
    assert_eq!(first.header("via"), Some("1.1 leastconn"));
    let second = &seen[1];
    assert_eq!(
        second.header("x-forwarded-for"),
        Some("10.0.0.1, 127.0.0.1")
    );
    assert_eq!(second.header("via"), Some("1.0 edge, 1.1 leastconn"));
    assert_eq!(second.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_request_goes_to_a_configured_backend() {
    let only = Backend::start("only", Behaviour::Fast).await;
    let proxy = Proxy::start(&[only.spec()], &[]);
    let answer = raw(
        proxy.address,
        b"GET http://other.example/x?y=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.body, b"only");
    // No path, and a chunked body: its head is still found and checked.
    let answer = raw(
        proxy.address,
        b"POST http://other.example HTTP/1.1\r\nHost: other.example\r\n\
          Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let seen = only.received();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri, "/x?y=1");
    assert_eq!(seen[0].header("host"), Some("other.example"));
    assert_eq!(
        (seen[1].method.as_str(), seen[1].uri.as_str()),
        ("POST", "/")
    );
}

// 7. Graceful shutdown.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let slow = Backend::start("slow", Behaviour::Slow(Duration::from_secs(1))).await;
    let mut proxy = Proxy::start(&[slow.spec()], &["--grace", "5s"]);
    let in_flight = tokio::spawn(get(proxy.address, "/"));
    proxy
        .stats_when("the request in flight", |s| s.active("slow") == 1)
        .await;
    let signalled = Instant::now();
    proxy.terminate();
    // The listener closes as soon as the signal is handled; until then a
    // connection may be accepted, or reset as the listener closes under it.
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(proxy.address).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connecting failed otherwise: {e}"),
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = within("the request in flight", in_flight)
        .await
        .expect("no panic");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "slow");
    assert_eq!(proxy.exit(Duration::from_secs(5)).await, Some(0));
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
    assert_eq!(slow.answered(), 1);
}

#[test]
fn sigterm_as_soon_as_the_proxy_says_it_listens_stops_it_gracefully() {
    // The moment right after the line is when a script sends it; tried a
    // few times, as the moment varies.
    for _ in 0..20 {
        let child = Command::new(common::BIN)
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "a=127.0.0.1:9",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut proxy = Running { child };
        // A shell already waiting to send SIGTERM, told by the thread that
        // reads the line, so that the signal follows the line within
        // microseconds, not the milliseconds starting `kill` takes.
        let killer = Command::new("sh")
            .args(["-c", &format!("read go && kill -TERM {}", proxy.child.id())])
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let mut killer = Running { child: killer };
        let mut go = killer.child.stdin.take().expect("piped stdin");
        let mut stderr = proxy.child.stderr.take().expect("piped stderr");
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0; 256];
            let mut told = false;
            // Ends when the proxy exits (or is killed at the test's end).
            while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut buf) {
                seen.extend_from_slice(&buf[..n]);
                if !told && seen.starts_with(b"listening on ") && seen.contains(&b'\n') {
                    told = go.write_all(b"go\n").is_ok();
                }
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        assert_eq!(killer.wait(WAIT), Some(0), "kill -TERM failed");
        let status = proxy.wait(WAIT);
        let log = reader.join().expect("the reader");
        assert_eq!(status, Some(0), "not a graceful stop; it wrote {log:?}");
    }
}

// 8. The config file.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_is_read_and_flags_override_it() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let c = Backend::start("c", Behaviour::Fast).await;
    let dir = common::tempdir("proxy-config");
    let file = dir.join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ntie-break = \"lowest-index\"\n\n\
             [[backend]]\nname = \"a\"\naddress = \"{}\"\n\n\
             [[backend]]\nname = \"b\"\naddress = \"{}\"\nweight = 3\n",
            a.address, b.address
        ),
    )
    .expect("written");
    let config = file.to_str().expect("a UTF-8 path").to_owned();
    let args = |extra: &[&str]| -> Vec<String> {
        ["proxy", "--config", &config]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };

    let proxy = Proxy::start_with(&args(&[]));
    assert_eq!(sequence(&proxy, 4).await, ["a"; 4]);
    let stats = proxy.stats().await;
    assert_eq!(stats.0["tie_break"], "lowest-index");
    assert_eq!(stats.get("b", "weight"), 3);

    let proxy = Proxy::start_with(&args(&["--tie-break", "round-robin"]));
    // a then b while both are idle; ties rotate.
    assert_eq!(sequence(&proxy, 4).await, ["a", "b", "a", "b"]);
    assert_eq!(proxy.stats().await.0["tie_break"], "round-robin");

    // Backends given as flags replace the file's list.
    let proxy = Proxy::start_with(&args(&["--backend", &c.spec()]));
    assert_eq!(sequence(&proxy, 3).await, ["c"; 3]);
    let stats = proxy.stats().await;
    assert_eq!(stats.0["backends"].as_array().map(Vec::len), Some(1));
    assert_eq!(a.arrived() + c.arrived(), 4 + 2 + 3);
    let _ = std::fs::remove_dir_all(&dir);
}
