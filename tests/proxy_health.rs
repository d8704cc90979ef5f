//! `leastconn proxy`'s active health checks, the real binary in front of
//! real HTTP backends whose health path the test switches: when a backend
//! goes out and comes back, which statuses pass, timeouts and refused
//! connections, checks and passive failures together, per-backend
//! settings, requests in flight, the settings' errors, and the README's
//! example.
//!
//! Checks run every few tens of milliseconds here; every wait is bounded
//! by [`WAIT`].

mod common;

use common::proxy::{
    get, logged, within, Backend, Behaviour, Client, Gate, Health, Proxy, Stats, WAIT,
};
use std::collections::BTreeMap;

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

/// A backend whose `/health` answers as `health` says, and whose other
/// paths answer 200 with its name.
async fn checked(name: &str, health: &Health) -> Backend {
    Backend::start(name, Behaviour::checked("/health", health, Behaviour::Fast)).await
}

fn healthy_and(stats: &Stats, name: &str, passes: u64) -> bool {
    stats.healthy(name) && stats.check(name, "passes") >= passes
}

const CHECKS: [&str; 7] = [
    "--health-check",
    "--health-interval",
    "25ms",
    "--health-fall",
    "3",
    "--health-rise",
    "2",
];

// 1. Out after `fall` failures, back after `rise` passes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_goes_out_after_exactly_fall_failed_checks_and_back_after_rise() {
    let (ha, hb, hc) = (Health::new(200), Health::new(200), Health::new(200));
    let a = checked("a", &ha).await;
    let b = checked("b", &hb).await;
    let c = checked("c", &hc).await;
    let proxy = Proxy::start(&[a.spec(), b.spec(), c.spec()], &CHECKS);
    let mut log = Vec::new();
    let stats = proxy
        .stats_when("every backend checked", |s| {
            ["a", "b", "c"].iter().all(|n| healthy_and(s, n, 1))
        })
        .await;
    for name in ["a", "b", "c"] {
        assert!(stats.down(name).is_empty(), "{}", stats.0);
        // Checks are not requests: the engine counts none of them.
        assert_eq!(stats.requests(name), 0, "{}", stats.0);
    }
    assert_eq!(
        stats.backend("c")["check"]["last"],
        "GET /health answered 200"
    );
    let check = c.received().into_iter().find(|r| r.uri == "/health");
    let check = check.expect("a check");
    assert_eq!(check.method, "GET");
    assert_eq!(check.header("host"), Some(c.address.to_string().as_str()));

    // One failure fewer than `fall`, then passes: it stays in.
    let before = c.arrivals("/health");
    hc.then_back(2, 500);
    proxy
        .stats_when("two failed checks, then two passes", |s| {
            c.arrivals("/health") >= before + 4 && s.check("c", "passes") >= 2
        })
        .await;
    let stats = proxy.stats().await;
    assert!(stats.healthy("c"), "{}", stats.0);
    log.extend(proxy.log());
    assert!(
        !log.iter().any(|line| line.contains("out of the pool")),
        "{log:#?}"
    );

    // `fall` failures: out, and the reason says so.
    hc.set(500);
    let stats = proxy.stats_when("c out", |s| !s.healthy("c")).await;
    let why = "health check: 3 consecutive failures, last: GET /health answered 500";
    assert_eq!(stats.down("c"), [why]);
    assert!(stats.check("c", "failures") >= 3, "{}", stats.0);
    assert_eq!(stats.check("c", "passes"), 0, "{}", stats.0);
    let line = logged(&proxy, &mut log, &["out of the pool: ", why]).await;
    assert!(
        line.contains("WARN") && line.contains("backend=c"),
        "{line}"
    );

    // No new request goes to it; the others get them all.
    let names = sequence(&proxy, 30).await;
    assert_eq!(counts(&names), BTreeMap::from([("a", 15), ("b", 15)]));
    assert_eq!(c.arrivals("/"), 0);

    // `rise` passes: back, and it gets its share again.
    hc.set(200);
    let stats = proxy.stats_when("c back", |s| s.healthy("c")).await;
    assert!(stats.down("c").is_empty(), "{}", stats.0);
    let back = "back in the pool: health check: 2 consecutive passes, \
                last: GET /health answered 200";
    let line = logged(&proxy, &mut log, &[back]).await;
    assert!(
        line.contains("INFO") && line.contains("backend=c"),
        "{line}"
    );
    let names = sequence(&proxy, 30).await;
    assert_eq!(
        counts(&names),
        BTreeMap::from([("a", 10), ("b", 10), ("c", 10)])
    );
    let outs = log.iter().filter(|l| l.contains("out of the pool")).count();
    assert_eq!(outs, 1, "{log:#?}");
}

// 2. Which statuses pass.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthy_statuses_are_200_to_399_unless_given() {
    let p = checked("p", &Health::new(301)).await;
    let q = checked("q", &Health::new(302)).await;
    let r = checked("r", &Health::new(400)).await;
    let specs = [p.spec(), q.spec(), r.spec()];
    let fast = [
        "--health-check",
        "--health-interval",
        "25ms",
        "--health-fall",
        "1",
    ];

    let mut flags = fast.to_vec();
    flags.extend(["--health-status", "200-299,301"]);
    let proxy = Proxy::start(&specs, &flags);
    let stats = proxy
        .stats_when("q and r out, p passing", |s| {
            !s.healthy("q") && !s.healthy("r") && healthy_and(s, "p", 3)
        })
        .await;
    assert!(stats.down("p").is_empty(), "{}", stats.0);
    let failed = |status| {
        format!("health check: 1 consecutive failure, last: GET /health answered {status}")
    };
    assert_eq!(stats.down("q"), [failed(302)]);
    assert_eq!(stats.down("r"), [failed(400)]);
    drop(proxy);

    let proxy = Proxy::start(&specs, &fast);
    let stats = proxy
        .stats_when("r out, p and q passing", |s| {
            !s.healthy("r") && healthy_and(s, "p", 3) && healthy_and(s, "q", 3)
        })
        .await;
    assert_eq!(stats.down("r"), [failed(400)]);
    assert!(stats.down("q").is_empty(), "{}", stats.0);
    assert_eq!(
        stats.backend("q")["check"]["last"],
        "GET /health answered 302"
    );
}

// 3. No answer, no connection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_without_an_answer_in_time_or_without_a_connection_fails() {
    let hang = Health::new(Health::HANG);
    let slow = checked("slow", &hang).await;
    let fine = Health::new(200);
    let mut gone = checked("gone", &fine).await;
    let ok = checked("ok", &Health::new(200)).await;
    let flags = [
        "--health-check",
        "--health-interval",
        "60ms",
        "--health-timeout",
        "30ms",
        "--health-fall",
        "2",
    ];
    let proxy = Proxy::start(&[slow.spec(), gone.spec(), ok.spec()], &flags);
    let stats = proxy
        .stats_when("slow out, gone checked", |s| {
            !s.healthy("slow") && healthy_and(s, "gone", 1)
        })
        .await;
    assert_eq!(
        stats.down("slow"),
        ["health check: 2 consecutive failures, last: GET /health: no answer within 30ms"]
    );

    gone.stop_listening().await;
    let stats = proxy.stats_when("gone out", |s| !s.healthy("gone")).await;
    assert_eq!(
        stats.down("gone"),
        ["health check: 2 consecutive failures, \
          last: GET /health: the connection failed: Connection refused (os error 111)"]
    );

    gone.listen_again(Behaviour::checked("/health", &fine, Behaviour::Fast))
        .await;
    hang.set(200);
    let stats = proxy
        .stats_when("both back", |s| s.healthy("gone") && s.healthy("slow"))
        .await;
    for name in ["slow", "gone", "ok"] {
        assert!(stats.down(name).is_empty(), "{}", stats.0);
    }
    assert!(healthy_and(&stats, "ok", 2), "{}", stats.0);
}

// 4. Checks and passive failures together.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_out_for_two_reasons_lists_both_and_is_back_only_when_both_clear() {
    let hx = Health::new(200);
    let x = Backend::start("x", Behaviour::checked("/health", &hx, Behaviour::Error)).await;
    let y = checked("y", &Health::new(200)).await;
    let flags = [
        "--tie-break",
        "lowest-index",
        "--fail-on-5xx",
        "--max-fails",
        "1",
        "--fail-timeout",
        "1s",
        "--health-check",
        "--health-interval",
        "25ms",
        "--health-fall",
        "2",
        "--health-rise",
        "2",
    ];
    let proxy = Proxy::start(&[x.spec(), y.spec()], &flags);
    let mut log = Vec::new();
    proxy
        .stats_when("x checked", |s| healthy_and(s, "x", 1))
        .await;
    let passive = "passive: 1 failure within 1s";
    let check = "health check: 2 consecutive failures, last: GET /health answered 500";

    // A failed request, then failed checks; the failure's time runs out
    // first, and it stays out until its checks pass.
    let answer = get(proxy.address, "/").await;
    assert_eq!((answer.status, answer.text()), (500, "x"));
    // Counted as the relayed body ends, just after the client has it.
    let stats = proxy.stats_when("x out", |s| !s.healthy("x")).await;
    assert_eq!(stats.down("x"), [passive]);
    hx.set(500);
    let stats = proxy
        .stats_when("both reasons", |s| s.down("x").len() == 2)
        .await;
    assert_eq!(stats.down("x"), [check, passive]);
    let also = format!("out for another reason too: {check}");
    logged(&proxy, &mut log, &["backend=x", &also]).await;
    let stats = proxy
        .stats_when("the passive reason over", |s| s.down("x").len() == 1)
        .await;
    assert_eq!(stats.down("x"), [check]);
    assert!(!stats.healthy("x"), "{}", stats.0);
    assert_eq!(sequence(&proxy, 3).await, ["y", "y", "y"]);
    hx.set(200);
    let stats = proxy.stats_when("x back", |s| s.healthy("x")).await;
    assert!(stats.down("x").is_empty(), "{}", stats.0);
    logged(
        &proxy,
        &mut log,
        &[
            "backend=x",
            "back in the pool: health check: 2 consecutive passes",
        ],
    )
    .await;

    // The other way round: its checks pass again first, and it stays out
    // until the failure's time runs out.
    let answer = get(proxy.address, "/").await;
    assert_eq!((answer.status, answer.text()), (500, "x"));
    let stats = proxy.stats_when("x out", |s| !s.healthy("x")).await;
    assert_eq!(stats.down("x"), [passive]);
    hx.set(500);
    let stats = proxy
        .stats_when("both reasons", |s| s.down("x").len() == 2)
        .await;
    assert_eq!(stats.down("x"), [check, passive]);
    hx.set(200);
    let stats = proxy
        .stats_when("the checks pass", |s| s.down("x").len() == 1)
        .await;
    assert_eq!(stats.down("x"), [passive]);
    assert!(!stats.healthy("x"), "{}", stats.0);
    let still = format!("; still out: {passive}");
    logged(
        &proxy,
        &mut log,
        &["backend=x", "health check: 2 consecutive passes", &still],
    )
    .await;
    let stats = proxy.stats_when("x back", |s| s.healthy("x")).await;
    assert!(stats.down("x").is_empty(), "{}", stats.0);
    logged(
        &proxy,
        &mut log,
        &["backend=x", "back in the pool: passive: 1s out, over"],
    )
    .await;
    // Out twice, back twice, each logged once.
    let outs: Vec<_> = log
        .iter()
        .filter(|l| l.contains("out of the pool: "))
        .collect();
    assert_eq!(outs.len(), 2, "{log:#?}");
    assert!(outs.iter().all(|l| l.contains(passive)), "{outs:#?}");
    assert_eq!(x.arrivals("/"), 2);
}

// 5. A backend's own settings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_overrides_the_pools_checks_in_the_file_and_on_the_command_line() {
    let (ok, failing) = (Health::new(200), Health::new(500));
    let ready = Behaviour::checked("/health", &failing, Behaviour::Fast);
    let p = Backend::start("p", Behaviour::checked("/ready", &ok, ready)).await;
    let q = checked("q", &failing).await;
    let r = checked("r", &failing).await;
    let dir = common::tempdir("proxy-health-override");
    let file = dir.join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             health-check = true\nhealth-interval = \"25ms\"\nhealth-fall = 2\n\n\
             [[backend]]\nname = \"p\"\naddress = \"{}\"\nhealth-path = \"/ready\"\n\n\
             [[backend]]\nname = \"q\"\naddress = \"{}\"\nhealth-check = false\n\n\
             [[backend]]\nname = \"r\"\naddress = \"{}\"\nhealth-fall = 4\n",
            p.address, q.address, r.address
        ),
    )
    .expect("written");
    let config = file.to_str().expect("a UTF-8 path").to_owned();
    let from_file = Proxy::start_with(&["proxy".into(), "--config".into(), config]);
    let flags = [
        "--health-check",
        "--health-interval",
        "25ms",
        "--health-fall",
        "2",
    ];
    let from_flags = Proxy::start(
        &[
            p.spec_with("health-path=/ready"),
            q.spec_with("health-check=off"),
            r.spec_with("health-fall=4"),
        ],
        &flags,
    );
    for proxy in [&from_file, &from_flags] {
        let stats = proxy
            .stats_when("r out, p checked", |s| {
                !s.healthy("r") && healthy_and(s, "p", 2)
            })
            .await;
        assert_eq!(
            stats.down("r"),
            ["health check: 4 consecutive failures, last: GET /health answered 500"]
        );
        assert_eq!(
            stats.backend("p")["check"]["last"],
            "GET /ready answered 200"
        );
        // Not checked: no "check", and in.
        assert!(stats.healthy("q"), "{}", stats.0);
        assert!(stats.down("q").is_empty(), "{}", stats.0);
        assert_eq!(stats.backend("q").get("check"), None, "{}", stats.0);
    }
    assert_eq!(p.arrivals("/health"), 0);
    assert!(p.arrivals("/ready") >= 4);
    assert_eq!(q.arrivals("/health"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

// 6. Requests in flight.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_on_a_backend_taken_out_finishes() {
    let gate = Gate::new();
    let hg = Health::new(200);
    let g = Backend::start(
        "g",
        Behaviour::checked("/health", &hg, Behaviour::Gated(gate.clone())),
    )
    .await;
    let f = checked("f", &Health::new(200)).await;
    let mut flags = vec!["--tie-break", "lowest-index"];
    flags.extend(CHECKS);
    let proxy = Proxy::start(&[g.spec(), f.spec()], &flags);
    proxy
        .stats_when("g checked", |s| healthy_and(s, "g", 1))
        .await;
    let held = tokio::spawn(get(proxy.address, "/"));
    proxy
        .stats_when("a request held on g", |s| s.active("g") == 1)
        .await;
    hg.set(500);
    proxy.stats_when("g out", |s| !s.healthy("g")).await;
    assert_eq!(sequence(&proxy, 5).await, ["f"; 5]);
    gate.open();
    let answer = within("the held request", held).await.expect("no panic");
    assert_eq!((answer.status, answer.text()), (200, "g"));
    let stats = proxy
        .stats_when("g's request done", |s| s.active("g") == 0)
        .await;
    assert_eq!(stats.get("g", "completed"), 1, "{}", stats.0);
    assert_eq!(stats.get("g", "failed"), 0, "{}", stats.0);
    assert!(!stats.healthy("g"), "{}", stats.0);
    assert_eq!(g.arrivals("/"), 1);
}

// 7. Stopping.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_in_progress_never_hold_up_a_stop() {
    let slow = checked("slow", &Health::new(Health::HANG)).await;
    let fine = checked("fine", &Health::new(200)).await;
    let flags = [
        "--health-check",
        "--health-interval",
        "2s",
        "--health-timeout",
        "1s",
    ];
    let mut proxy = Proxy::start(&[slow.spec(), fine.spec()], &flags);
    proxy
        .stats_when("a check on each", |_| {
            slow.arrivals("/health") == 1 && fine.arrivals("/health") == 1
        })
        .await;
    proxy.terminate();
    // The grace period is 30 s: the stop waits for nothing.
    assert_eq!(proxy.exit(WAIT).await, Some(0));
    let mut log = Vec::new();
    logged(&proxy, &mut log, &["all requests finished"]).await;
}

// 8. The settings' errors, as the binary gives them.

#[test]
fn health_settings_are_checked_before_the_proxy_starts() {
    let dir = common::tempdir("proxy-health-errors");
    let file = dir.join("proxy.toml");
    std::fs::write(
        &file,
        "health-check = true\n\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:9\"\n\
         health-timeout = \"3s\"\n",
    )
    .expect("written");
    let config = file.to_str().expect("a UTF-8 path");
    let a = "a=127.0.0.1:9";
    let cases: [(&[&str], &str); 10] = [
        (
            &["--backend", a, "--health-check", "--health-rise", "0"],
            "proxy: --health-rise must be at least 1",
        ),
        (
            &["--backend", a, "--health-check", "--health-fall", "0"],
            "proxy: --health-fall must be at least 1",
        ),
        (
            &[
                "--backend",
                a,
                "--health-interval",
                "1s",
                "--health-timeout",
                "1s",
            ],
            "proxy: --health-timeout (1s) must be shorter than --health-interval (1s): \
             a check ends before the next begins",
        ),
        (
            &["--backend", a, "--health-check", "--health-path", "health"],
            "proxy: --health-path \"health\": a path begins with /",
        ),
        (
            &["--backend", a, "--health-path", "/ready"],
            "proxy: --health-path is given but no backend is checked: add --health-check",
        ),
        (
            &["--backend", a, "--health-status", "600"],
            "--health-status: \"600\" is not a status: give codes from 100 to 599, \
             or ranges as 200-299, separated by commas",
        ),
        (
            &["--backend", a, "--health-status", "200,300-200"],
            "--health-status: \"200,300-200\": the range 300-200 runs backwards; write 200-300",
        ),
        (
            &["--backend", "a=127.0.0.1:9,health-fall=0", "--health-check"],
            "proxy: --backend a: health-fall must be at least 1",
        ),
        (
            &["--backend", "a=127.0.0.1:9,health-path=/ready"],
            "proxy: --backend a: health-path is given but its checks are off: \
             add health-check=on",
        ),
        (
            &["--config", config],
            "proxy: --backend a: health-timeout (3s) must be shorter than health-interval \
             (2s): a check ends before the next begins",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["proxy"];
        all.extend(args);
        let output = common::run(&all, b"");
        assert_eq!(output.status, Some(2), "{args:?}: {}", output.stderr);
        assert_eq!(output.stderr, format!("leastconn: {message}\n"), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// 9. The README's example.

/// The README's TOML example of health checks.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the README");
    let start = readme
        .find("```toml\n# Health checks")
        .expect("the README's health-check example");
    let body = &readme[start + "```toml\n".len()..];
    body[..body.find("```").expect("the example's end")].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_health_check_example_runs_as_it_says() {
    let example = readme_example();
    let ok = Health::new(200);
    let failing = Health::new(500);
    // api-1 answers /health; api-2 only /ready; batch is never checked.
    let api1 = checked("api-1", &ok).await;
    let api2 = Backend::start(
        "api-2",
        Behaviour::checked(
            "/ready",
            &ok,
            Behaviour::checked("/health", &failing, Behaviour::Fast),
        ),
    )
    .await;
    let batch = checked("batch", &failing).await;
    let mut text = example.clone();
    for (documented, backend) in [
        ("127.0.0.1:9001", &api1),
        ("127.0.0.1:9002", &api2),
        ("127.0.0.1:9003", &batch),
    ] {
        assert!(text.contains(documented), "{documented} in {example}");
        text = text.replace(documented, &backend.address.to_string());
    }
    for port in ["127.0.0.1:8080", "127.0.0.1:8081"] {
        assert!(text.contains(port), "{port} in {example}");
        text = text.replace(port, "127.0.0.1:0");
    }
    let dir = common::tempdir("proxy-health-readme");
    let file = dir.join("health.toml");
    std::fs::write(&file, text).expect("written");
    let config = file.to_str().expect("a UTF-8 path").to_owned();
    // Its checks as written, but faster.
    let args: Vec<String> = [
        "proxy",
        "--config",
        &config,
        "--health-interval",
        "25ms",
        "--health-timeout",
        "10ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proxy = Proxy::start_with(&args);
    let stats = proxy
        .stats_when("both checked backends passing", |s| {
            healthy_and(s, "api-1", 2) && healthy_and(s, "api-2", 2)
        })
        .await;
    assert_eq!(stats.backend("batch").get("check"), None, "{}", stats.0);
    assert!(stats.healthy("batch"), "{}", stats.0);
    assert_eq!(
        stats.backend("api-2")["check"]["last"],
        "GET /ready answered 200"
    );
    assert_eq!(api2.arrivals("/health"), 0);
    assert_eq!(batch.arrivals("/health"), 0);
    // api-2 goes out at its first failure (its health-fall), api-1 at its
    // third.
    ok.set(503);
    let stats = proxy
        .stats_when("both out", |s| !s.healthy("api-1") && !s.healthy("api-2"))
        .await;
    let failed = |n: &str, path: &str| format!("health check: {n}, last: GET {path} answered 503");
    assert_eq!(
        stats.down("api-1"),
        [failed("3 consecutive failures", "/health")]
    );
    assert_eq!(
        stats.down("api-2"),
        [failed("1 consecutive failure", "/ready")]
    );
    assert_eq!(sequence(&proxy, 4).await, ["batch"; 4]);
    let _ = std::fs::remove_dir_all(&dir);
}
