//! `leastconn proxy`'s admin API (`POST /messages`, the node's own
//! messages) and its reload on SIGHUP, the real binary in front of real
//! HTTP backends on 127.0.0.1: the exact reply lines, where new requests
//! go after each change, requests in flight through every change, drained
//! removals, a reload that keeps counts, a broken config, and the README's
//! example.
//!
//! Every wait is bounded by [`WAIT`]; every proxy is stopped when its
//! handle drops.

mod common;

use common::proxy::{
    get, logged, post_to, within, Answer, Backend, Behaviour, Client, Gate, Health, Proxy, Stats,
    WAIT,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Posts `lines` (messages, one a line) to `/messages`; the reply lines,
/// after checking that the answer is 200.
async fn post(proxy: &Proxy, lines: &[&str]) -> Vec<String> {
    let answer = post_to(proxy.admin, "/messages", lines.join("\n")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.text().lines().map(str::to_owned).collect()
}

/// A message from `ops` to `lb` with this body.
fn msg(body: &str) -> String {
    format!(r#"{{"src":"ops","dest":"lb","body":{body}}}"#)
}

/// A reply from `lb` to `ops` with this body.
fn reply(body: &str) -> String {
    format!(r#"{{"src":"lb","dest":"ops","body":{body}}}"#)
}

/// Posts one message; its one reply line.
async fn ask(proxy: &Proxy, message: &str) -> String {
    let mut lines = post(proxy, &[message]).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.remove(0)
}

/// Two backends that hold requests (see [`holding`]), `a` and `b`, their
/// gates, and a proxy over them, with `extra` flags, breaking ties by
/// lowest index.
async fn pair(extra: &[&str]) -> (Backend, Backend, Gate, Gate, Proxy) {
    let (gate_a, gate_b) = (Gate::new(), Gate::new());
    let a = holding("a", &gate_a).await;
    let b = holding("b", &gate_b).await;
    let mut flags = vec!["--tie-break", "lowest-index"];
    flags.extend(extra);
    let proxy = Proxy::start(&[a.spec(), b.spec()], &flags);
    (a, b, gate_a, gate_b, proxy)
}

/// Holds a request on `a` and then one on `b`: equally loaded, `a` goes
/// first by the tie-break. The held requests.
async fn held_on_both(
    proxy: &Proxy,
    a: &Backend,
    b: &Backend,
) -> (JoinHandle<Answer>, JoinHandle<Answer>) {
    let held_a = hold(proxy, "a", 1).await;
    let held_b = hold(proxy, "b", 1).await;
    assert_eq!(fast_pick(proxy, &[a, b]).await, "a");
    (held_a, held_b)
}

/// Sends SIGHUP to the proxy.
fn hang_up(proxy: &Proxy) {
    let status = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -HUP failed");
}

/// A backend whose `/fast` answers 200 (empty) at once and whose other
/// paths answer with its name once `gate` opens: requests held on it, and
/// requests that show where they went by its arrivals.
async fn holding(name: &str, gate: &Gate) -> Backend {
    let fast = Health::new(200);
    Backend::start(
        name,
        Behaviour::checked("/fast", &fast, Behaviour::Gated(gate.clone())),
    )
    .await
}

/// Sends `GET /fast` once, sequentially, and says which of `backends` it
/// reached (by their arrivals).
async fn fast_pick(proxy: &Proxy, backends: &[&Backend]) -> String {
    let before: Vec<usize> = backends.iter().map(|b| b.arrivals("/fast")).collect();
    let answer = get(proxy.address, "/fast").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let reached: Vec<&str> = backends
        .iter()
        .zip(before)
        .filter(|(b, n)| b.arrivals("/fast") > *n)
        .map(|(b, _)| b.name.as_str())
        .collect();
    assert_eq!(reached.len(), 1, "reached {reached:?}");
    reached[0].to_owned()
}

/// Starts `GET /held` on a task of its own; waits until `name` counts it.
async fn hold(proxy: &Proxy, name: &str, active: u64) -> JoinHandle<Answer> {
    let address = proxy.address;
    let held = tokio::spawn(async move { get(address, "/held").await });
    proxy
        .stats_when("the held request counted", |s| s.active(name) == active)
        .await;
    held
}

#[tokio::test]
async fn the_readme_example_adds_a_backend_that_new_requests_reach() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let curl = readme
        .lines()
        .find_map(|l| l.strip_prefix("curl -s http://127.0.0.1:8081/messages -d '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("the README's curl example");
    let answer = readme
        .lines()
        .find(|l| l.starts_with(r#"{"src":"lb","dest":"ops","body":{"type":"add_backend_ok""#))
        .expect("the README's reply");
    let (one, two, three) = (
        Backend::start("api-1", Behaviour::Fast).await,
        Backend::start("api-2", Behaviour::Fast).await,
        Backend::start("api-3", Behaviour::Fast).await,
    );
    let proxy = Proxy::start(&[one.spec(), two.spec()], &[]);
    let message = curl.replace("127.0.0.1:9003", &three.address.to_string());
    assert_eq!(post(&proxy, &[&message]).await, [answer]);
    // Sequential requests: every count 0, the tie-break rotates over all
    // three.
    let mut client = Client::connect(proxy.address).await;
    let mut names = Vec::new();
    for _ in 0..6 {
        let answer = client.get("/").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        names.push(answer.text().to_owned());
    }
    names.sort();
    assert_eq!(
        names,
        ["api-1", "api-1", "api-2", "api-2", "api-3", "api-3"]
    );
    assert_eq!(three.arrived(), 2);
    let stats = proxy.stats().await;
    assert_eq!(stats.backend("api-3")["address"], three.address.to_string());
    assert_eq!(stats.get("api-3", "weight"), 2);
}

#[tokio::test]
async fn every_reply_and_error_is_the_nodes_line() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let proxy = Proxy::start(&[a.spec()], &[]);
    let address = a.address.to_string();
    let supported = |kind: &str| {
        format!(
            r#"{{"type":"error","in_reply_to":{{}},"code":10,"text":"{kind} is not supported by the proxy: its pool is set by its config, and its requests are real HTTP requests"}}"#
        )
    };
    let lines = [
        msg(r#"{"type":"stats","msg_id":1}"#),
        msg(r#"{"type":"add_backend","msg_id":2,"backend":"b"}"#),
        msg(r#"{"type":"add_backend","msg_id":3,"backend":"b","address":"nowhere"}"#),
        msg(&format!(
            r#"{{"type":"add_backend","msg_id":4,"backend":"a","address":"{address}"}}"#
        )),
        msg(
            r#"{"type":"add_backend","msg_id":5,"backend":"b","address":"127.0.0.1:1","colour":1}"#,
        ),
        msg(r#"{"type":"remove_backend","msg_id":6,"backend":"zz"}"#),
        msg(r#"{"type":"set_backend","msg_id":7,"backend":"zz","weight":2}"#),
        msg(r#"{"type":"set_backend","msg_id":8,"backend":"a","weight":-1}"#),
        msg(r#"{"type":"init","msg_id":9,"backends":["x"]}"#),
        msg(r#"{"type":"http_request","msg_id":10}"#),
        msg(r#"{"type":"request_complete","msg_id":11,"backend":"a"}"#),
        msg(r#"{"type":"frobnicate","msg_id":12}"#),
        "not json".to_owned(),
        r#"{"src":"ops","dest":"lb"}"#.to_owned(),
        msg(r#"{"type":"set_backend","msg_id":13,"backend":"a","max_connections":5}"#),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let stats = r#"{"type":"stats_ok","in_reply_to":1,"algorithm":"least-connections","tie_break":"round-robin","rejected":0,"backends":[{"name":"a","active":0,"weight":1,"healthy":true,"max_connections":null,"requests":0,"completed":0,"failed":0,"mean_duration_ms":null}]}"#;
    let expected = [
        reply(stats),
        reply(
            r#"{"type":"error","in_reply_to":2,"code":12,"text":"add_backend needs \"address\" here: the HOST:PORT the proxy connects to"}"#,
        ),
        reply(
            r#"{"type":"error","in_reply_to":3,"code":12,"text":"\"address\" \"nowhere\" is not a HOST:PORT that resolves"}"#,
        ),
        reply(
            r#"{"type":"error","in_reply_to":4,"code":21,"text":"backend \"a\" is already in the pool"}"#,
        ),
        reply(
            r#"{"type":"error","in_reply_to":5,"code":12,"text":"add_backend has an unknown field \"colour\"; a backend has \"backend\" (its name), \"weight\", \"max_connections\" and \"address\""}"#,
        ),
        reply(
            r#"{"type":"error","in_reply_to":6,"code":20,"text":"backend \"zz\" is not in the pool"}"#,
        ),
        reply(
            r#"{"type":"error","in_reply_to":7,"code":20,"text":"backend \"zz\" is not in the pool"}"#,
        ),
        reply(
            r#"{"type":"error","in_reply_to":8,"code":12,"text":"weight must be a whole number from 0 to 18446744073709551615, but -1 is negative"}"#,
        ),
        reply(&supported("init").replace("{}", "9")),
        reply(&supported("http_request").replace("{}", "10")),
        reply(&supported("request_complete").replace("{}", "11")),
        reply(
            r#"{"type":"error","in_reply_to":12,"code":10,"text":"unknown message type \"frobnicate\"; this node answers init, http_request, request_complete, add_backend, remove_backend, set_backend, stats"}"#,
        ),
        r#"{"skipped":"line 13, column 1: invalid JSON: `not` is not a JSON value; skipped to the end of line 13"}"#.to_owned(),
        r#"{"skipped":"line 14, column 1: not a message: the envelope has no \"body\""}"#
            .to_owned(),
        reply(
            r#"{"type":"set_backend_ok","in_reply_to":13,"backend":"a","active_connections":{"a":0}}"#,
        ),
    ];
    assert_eq!(post(&proxy, &lines).await, expected);
    // Nothing refused changed the pool; the last line did.
    let stats = proxy.stats().await;
    assert_eq!(names(&stats), ["a"]);
    assert_eq!(stats.backend("a")["max_connections"], 5);
    // A message that is not UTF-8, between two that are answered.
    let mut body = msg(r#"{"type":"stats","msg_id":1}"#).into_bytes();
    body.extend_from_slice(b"\n{\"src\":\"ops\",\"dest\":\"lb\",\"body\":{\"type\":\"\xff\"}}\n");
    body.extend_from_slice(msg(r#"{"type":"set_backend","msg_id":2,"backend":"a"}"#).as_bytes());
    let answer = post_to(proxy.admin, "/messages", body).await;
    assert_eq!(answer.status, 200);
    let lines: Vec<&str> = answer.text().lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[1],
        r#"{"skipped":"line 2, column 1: not valid UTF-8: byte 0xFF at line 1, column 42 of this message"}"#
    );
    assert_eq!(
        lines[2],
        reply(
            r#"{"type":"set_backend_ok","in_reply_to":2,"backend":"a","active_connections":{"a":0}}"#
        )
    );
    // Too large, the wrong method, the wrong path.
    let large = post_to(proxy.admin, "/messages", vec![b' '; (1 << 20) + 1]).await;
    assert_eq!(
        (large.status, large.text()),
        (413, "{\"error\":\"the body is over 1048576 bytes\"}\n")
    );
    let got = get(proxy.admin, "/messages").await;
    assert_eq!(
        (got.status, got.text()),
        (405, "{\"error\":\"POST /messages\"}")
    );
    let posted = post_to(proxy.admin, "/stats", "").await;
    assert_eq!(
        (posted.status, posted.text()),
        (405, "{\"error\":\"GET /stats\"}")
    );
}

#[tokio::test]
async fn a_backend_marked_down_gets_no_new_request_and_its_request_in_flight_completes() {
    let (a, b, gate_a, gate_b, proxy) = pair(&[]).await;
    let (held_a, held_b) = held_on_both(&proxy, &a, &b).await;
    let down = msg(r#"{"type":"set_backend","msg_id":1,"backend":"a","healthy":false}"#);
    assert_eq!(
        ask(&proxy, &down).await,
        reply(
            r#"{"type":"set_backend_ok","in_reply_to":1,"backend":"a","active_connections":{"a":1,"b":1}}"#
        )
    );
    let stats = proxy.stats().await;
    assert!(!stats.healthy("a"));
    assert_eq!(stats.down("a"), ["marked down by an operator"]);
    for _ in 0..3 {
        assert_eq!(fast_pick(&proxy, &[&a, &b]).await, "b");
    }
    gate_a.open();
    let answer = within("the held request", held_a).await.expect("joined");
    assert_eq!((answer.status, answer.text()), (200, "a"));
    let up = msg(r#"{"type":"set_backend","msg_id":2,"backend":"a","healthy":true}"#);
    assert_eq!(
        ask(&proxy, &up).await,
        reply(
            r#"{"type":"set_backend_ok","in_reply_to":2,"backend":"a","active_connections":{"a":0,"b":1}}"#
        )
    );
    let stats = proxy.stats().await;
    assert!(stats.healthy("a"));
    assert_eq!(stats.down("a"), Vec::<String>::new());
    assert_eq!(fast_pick(&proxy, &[&a, &b]).await, "a");
    gate_b.open();
    let answer = within("the held request", held_b).await.expect("joined");
    assert_eq!((answer.status, answer.text()), (200, "b"));
}

/// Polls the proxy's open descriptors until there are `n`, for at most
/// [`WAIT`].
async fn fds_become(proxy: &Proxy, n: usize, what: &str) {
    let deadline = Instant::now() + WAIT;
    while proxy.open_fds() != n {
        assert!(
            Instant::now() < deadline,
            "{what}: {} descriptors open, not {n}",
            proxy.open_fds()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_removed_backend_keeps_no_connection_open() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let proxy = Proxy::start(&[a.spec(), b.spec()], &[]);
    let fds = proxy.open_fds();
    // One after the other: one kept-alive connection to each backend.
    for _ in 0..4 {
        assert_eq!(get(proxy.address, "/").await.status, 200);
    }
    fds_become(&proxy, fds + 2, "a connection kept to each").await;
    assert_eq!(
        ask(
            &proxy,
            &msg(r#"{"type":"remove_backend","msg_id":1,"backend":"b"}"#)
        )
        .await,
        reply(
            r#"{"type":"remove_backend_ok","in_reply_to":1,"backend":"b","active_connections":{"a":0}}"#
        )
    );
    // b's is closed with its removal; a's is kept.
    fds_become(&proxy, fds + 1, "b's connection closed").await;
}

#[tokio::test]
async fn remove_backend_answers_once_its_request_in_flight_has_completed() {
    let (a, b, gate_a, gate_b, proxy) = pair(&[]).await;
    let held = hold(&proxy, "a", 1).await;
    let admin = proxy.admin;
    let remove = tokio::spawn(async move {
        let message = msg(r#"{"type":"remove_backend","msg_id":1,"backend":"a"}"#);
        post_to(admin, "/messages", message).await
    });
    // Drained at once: weight 0, still counted; new requests go to b.
    let stats = proxy
        .stats_when("a drained", |s| s.get("a", "weight") == 0)
        .await;
    assert_eq!(stats.active("a"), 1);
    for _ in 0..3 {
        assert_eq!(fast_pick(&proxy, &[&a, &b]).await, "b");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!remove.is_finished(), "answered with a request in flight");
    assert!(!held.is_finished());
    // Draining, it takes no change: a weight would bring requests back.
    assert_eq!(
        ask(
            &proxy,
            &msg(r#"{"type":"set_backend","msg_id":2,"backend":"a","weight":1}"#)
        )
        .await,
        reply(
            r#"{"type":"error","in_reply_to":2,"code":22,"text":"backend \"a\" is being removed: it drains until its requests in flight end, and takes no change meanwhile"}"#
        )
    );
    assert_eq!(proxy.stats().await.get("a", "weight"), 0);
    assert_eq!(fast_pick(&proxy, &[&a, &b]).await, "b");
    gate_a.open();
    let answer = within("the held request", held).await.expect("joined");
    assert_eq!((answer.status, answer.text()), (200, "a"));
    let removed = within("the removal", remove).await.expect("joined");
    assert_eq!(removed.status, 200);
    assert_eq!(
        removed.text(),
        reply(
            r#"{"type":"remove_backend_ok","in_reply_to":1,"backend":"a","active_connections":{"b":0}}"#
        ) + "\n"
    );
    assert_eq!(names(&proxy.stats().await), ["b"]);
    gate_b.open();
}

#[tokio::test]
async fn reweighting_moves_the_picks_as_least_connections_predicts() {
    let (a, b, gate_a, gate_b, proxy) = pair(&[]).await;
    // 1/1 and 1/1: tied, a first.
    let (held_a, held_b) = held_on_both(&proxy, &a, &b).await;
    // Loads after each change: a 1/1 against b 1/2, then a 1/4 against
    // b 1/2; the less loaded takes the next requests.
    for (msg_id, backend, weight) in [(1, "b", 2), (2, "a", 4)] {
        let set = format!(
            r#"{{"type":"set_backend","msg_id":{msg_id},"backend":"{backend}","weight":{weight}}}"#
        );
        let ok = format!(
            r#"{{"type":"set_backend_ok","in_reply_to":{msg_id},"backend":"{backend}","active_connections":{{"a":1,"b":1}}}}"#
        );
        assert_eq!(ask(&proxy, &msg(&set)).await, reply(&ok));
        for _ in 0..2 {
            assert_eq!(fast_pick(&proxy, &[&a, &b]).await, backend);
        }
    }
    // In-flight counts went through every change.
    let stats = proxy.stats().await;
    assert_eq!((stats.active("a"), stats.active("b")), (1, 1));
    assert_eq!((stats.requests("a"), stats.requests("b")), (4, 3));
    gate_a.open();
    gate_b.open();
    for (held, name) in [(held_a, "a"), (held_b, "b")] {
        let answer = within("a held request", held).await.expect("joined");
        assert_eq!((answer.status, answer.text()), (200, name));
    }
}

/// `leastconn proxy` with `file` as its config, listening on ports of
/// its own.
fn with_config(file: &Path) -> Proxy {
    let args = ["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    let config = ["--config".to_owned(), file.display().to_string()];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).chain(config).collect();
    Proxy::start_with(&args)
}

/// The backends' names, in pool order.
fn names(stats: &Stats) -> Vec<&str> {
    let backends = stats.0["backends"].as_array().expect("backends");
    backends
        .iter()
        .map(|b| b["name"].as_str().expect("a name"))
        .collect()
}

/// A config file's text: the given backends (`NAME=ADDRESS,weight=W`)
/// and any more lines before them.
fn config(top: &str, backends: &[(&str, SocketAddr, u64)]) -> String {
    let mut text = format!("{top}\n");
    for (name, address, weight) in backends {
        text.push_str(&format!(
            "[[backend]]\nname = \"{name}\"\naddress = \"{address}\"\nweight = {weight}\n\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_reload_adds_removes_and_reweights_and_counts_go_on() {
    let gate = Gate::new();
    let a = holding("a", &gate).await;
    let b = Backend::start("b", Behaviour::Fast).await;
    let c = Backend::start("c", Behaviour::Fast).await;
    let dir = common::tempdir("proxy-reload");
    let file = dir.join("proxy.toml");
    let tie = "tie-break = \"lowest-index\"";
    std::fs::write(
        &file,
        config(tie, &[("a", a.address, 1), ("b", b.address, 1)]),
    )
    .expect("written");
    let proxy = with_config(&file);
    let held = hold(&proxy, "a", 1).await;
    // The flags still win (the file's listen is not used), and threads
    // is read at start only.
    let top = format!("{tie}\nlisten = \"127.0.0.1:1\"\nthreads = 1");
    std::fs::write(
        &file,
        config(&top, &[("a", a.address, 3), ("c", c.address, 1)]),
    )
    .expect("rewritten");
    hang_up(&proxy);
    let stats = proxy
        .stats_when("b gone, c in", |s| names(s) == ["a", "c"])
        .await;
    assert_eq!((stats.active("a"), stats.get("a", "weight")), (1, 3));
    assert_eq!(stats.requests("a"), 1);
    assert_eq!((stats.active("c"), stats.get("c", "weight")), (0, 1));
    assert_eq!(stats.backend("c")["address"], c.address.to_string());
    let mut seen = Vec::new();
    let path = file.display().to_string();
    logged(
        &proxy,
        &mut seen,
        &[
            "reload of",
            &path,
            "added c; removing b; changed a (weight 1 to 3)",
        ],
    )
    .await;
    logged(
        &proxy,
        &mut seen,
        &["threads changed but cannot change at run time"],
    )
    .await;
    assert!(
        !seen.iter().any(|l| l.contains("listen")),
        "the flag's listen wins: {seen:#?}"
    );
    // 1/3 against 0/1: c.
    let answer = get(proxy.address, "/").await;
    assert_eq!((answer.status, answer.text()), (200, "c"));
    gate.open();
    let answer = within("the held request", held).await.expect("joined");
    assert_eq!((answer.status, answer.text()), (200, "a"));
    proxy
        .stats_when("a's request ended", |s| s.active("a") == 0)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_broken_config_on_reload_changes_nothing() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let dir = common::tempdir("proxy-reload-broken");
    let file = dir.join("proxy.toml");
    std::fs::write(&file, config("", &[("a", a.address, 2)])).expect("written");
    let mut proxy = with_config(&file);
    let mut before = proxy.stats().await.0;
    let mut seen = Vec::new();
    // Not TOML, then TOML that does not check.
    for (text, why) in [
        ("[[backend]\n", "TOML parse error at line 1, column 10; invalid table header; expected `.`, `]]`"),
        ("[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nweight = 1\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:2\"\n", "\"a\" is named twice"),
    ] {
        std::fs::write(&file, text).expect("rewritten");
        hang_up(&proxy);
        logged(&proxy, &mut seen, &["reload of", "failed, nothing changed", why]).await;
        assert_eq!(proxy.running.child.try_wait().expect("try_wait"), None);
        assert_eq!(proxy.stats().await.0, before);
        let answer = get(proxy.address, "/").await;
        assert_eq!((answer.status, answer.text()), (200, "a"));
        before = proxy.stats().await.0;
    }
    assert_eq!(before["backends"][0]["weight"], 2);
    proxy.terminate();
    assert_eq!(proxy.exit(WAIT).await, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_config_sighup_reloads_nothing_and_the_proxy_runs_on() {
    let a = Backend::start("a", Behaviour::Fast).await;
    let mut proxy = Proxy::start(&[a.spec()], &[]);
    hang_up(&proxy);
    let mut seen = Vec::new();
    logged(
        &proxy,
        &mut seen,
        &["SIGHUP: started without --config, there is nothing to reload"],
    )
    .await;
    let answer = get(proxy.address, "/").await;
    assert_eq!((answer.status, answer.text()), (200, "a"));
    proxy.terminate();
    assert_eq!(proxy.exit(WAIT).await, Some(0));
}

#[tokio::test]
async fn a_removal_past_the_grace_period_removes_the_backend_and_its_request_still_completes() {
    let (a, b, gate_a, gate_b, proxy) = pair(&["--grace", "300ms"]).await;
    let held = hold(&proxy, "a", 1).await;
    let started = Instant::now();
    let remove = msg(r#"{"type":"remove_backend","msg_id":1,"backend":"a"}"#);
    assert_eq!(
        ask(&proxy, &remove).await,
        reply(
            r#"{"type":"remove_backend_ok","in_reply_to":1,"backend":"a","active_connections":{"b":0}}"#
        )
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!held.is_finished());
    let mut seen = Vec::new();
    logged(
        &proxy,
        &mut seen,
        &["1 requests still in flight after --grace 300ms: removed all the same"],
    )
    .await;
    gate_a.open();
    let answer = within("the held request", held).await.expect("joined");
    assert_eq!((answer.status, answer.text()), (200, "a"));
    // Its end counted nowhere: b's count is its own.
    let stats = proxy.stats().await;
    assert_eq!(names(&stats), ["b"]);
    assert_eq!(stats.active("b"), 0);
    assert_eq!(fast_pick(&proxy, &[&a, &b]).await, "b");
    gate_b.open();
}

#[tokio::test]
async fn a_backend_added_at_run_time_is_checked_as_the_pool_says() {
    let (ok, failing) = (Health::new(200), Health::new(500));
    let a = Backend::start("a", Behaviour::checked("/health", &ok, Behaviour::Fast)).await;
    let c = Backend::start(
        "c",
        Behaviour::checked("/health", &failing, Behaviour::Fast),
    )
    .await;
    let proxy = Proxy::start(
        &[a.spec()],
        &["--health-interval", "50ms", "--health-fall", "1"],
    );
    let add = msg(&format!(
        r#"{{"type":"add_backend","msg_id":1,"backend":"c","address":"{}","max_connections":3}}"#,
        c.address
    ));
    assert_eq!(
        ask(&proxy, &add).await,
        reply(
            r#"{"type":"add_backend_ok","in_reply_to":1,"backend":"c","active_connections":{"a":0,"c":0}}"#
        )
    );
    let stats = proxy.stats_when("c out", |s| !s.healthy("c")).await;
    assert_eq!(
        stats.down("c"),
        ["health check: 1 consecutive failure, last: GET /health answered 500"]
    );
    assert_eq!(stats.backend("c")["max_connections"], 3);
    assert!(c.arrivals("/health") >= 1);
    assert!(stats.healthy("a"));
}

#[tokio::test]
async fn a_reload_moves_an_address_after_draining_and_restarts_changed_checks() {
    let gate = Gate::new();
    let old = holding("old", &gate).await;
    let new = Backend::start("new", Behaviour::Fast).await;
    let failing = Health::new(500);
    let b = Backend::start(
        "b",
        Behaviour::checked("/health", &failing, Behaviour::Fast),
    )
    .await;
    let dir = common::tempdir("proxy-reload-moves");
    let file = dir.join("proxy.toml");
    let tie = "tie-break = \"lowest-index\"";
    let b_checked = format!(
        "[[backend]]\nname = \"b\"\naddress = \"{}\"\nhealth-check = true\nhealth-interval = \"50ms\"\nhealth-fall = 1\n",
        b.address
    );
    std::fs::write(
        &file,
        config(tie, &[("a", old.address, 1), ("b", b.address, 1)]),
    )
    .expect("written");
    let proxy = with_config(&file);
    let held = hold(&proxy, "a", 1).await;
    // a moves to another address; b's checks come on.
    let text = config(tie, &[("a", new.address, 1)]) + &b_checked;
    std::fs::write(&file, text).expect("rewritten");
    hang_up(&proxy);
    let mut seen = Vec::new();
    logged(
        &proxy,
        &mut seen,
        &["reload of", "changed b (checks); new address for a"],
    )
    .await;
    // The old a drains: weight 0, its request still counted.
    let stats = proxy
        .stats_when("old a drained, b checked out", |s| {
            s.get("a", "weight") == 0 && !s.healthy("b")
        })
        .await;
    assert_eq!(stats.active("a"), 1);
    assert_eq!(stats.backend("a")["address"], old.address.to_string());
    assert_eq!(
        stats.down("b"),
        ["health check: 1 consecutive failure, last: GET /health answered 500"]
    );
    gate.open();
    let answer = within("the held request", held).await.expect("joined");
    assert_eq!((answer.status, answer.text()), (200, "old"));
    let stats = proxy
        .stats_when("a at its new address", |s| {
            s.backend("a")["address"] == new.address.to_string()
        })
        .await;
    assert_eq!((stats.active("a"), stats.get("a", "weight")), (0, 1));
    let answer = get(proxy.address, "/").await;
    assert_eq!((answer.status, answer.text()), (200, "new"));
    // b's checks off again: back in, and no checks shown.
    let text = config(tie, &[("a", new.address, 1), ("b", b.address, 1)]);
    std::fs::write(&file, text).expect("rewritten");
    hang_up(&proxy);
    logged(&proxy, &mut seen, &["reload of", "changed b (checks)"]).await;
    let stats = proxy.stats_when("b back", |s| s.healthy("b")).await;
    assert_eq!(stats.down("b"), Vec::<String>::new());
    assert_eq!(stats.backend("b").get("check"), None);
    let _ = std::fs::remove_dir_all(&dir);
}
