//! `leastconn proxy --record FILE.in`: every decision of the engine under
//! real, concurrent load, written as the node's messages with the proxy's
//! answers beside them; replayed through the node by `leastconn replay`,
//! which must find exactly the same picks and counts. The run has
//! concurrent clients, retries, passive failures, failed checks, slow
//! starts and an operator's changes through the admin API.

mod common;

use common::proxy::{get, Backend, Behaviour, Health, Proxy, Stats, WAIT};
use common::{run, tempdir};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The bodies of a JSON-lines file.
fn bodies(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("the record is there");
    text.lines()
        .map(|line| {
            let message: Value = serde_json::from_str(line).expect("each line is JSON");
            message["body"].clone()
        })
        .collect()
}

fn of_type<'a>(bodies: &'a [Value], kind: &str) -> Vec<&'a Value> {
    bodies.iter().filter(|b| b["type"] == kind).collect()
}

/// `leastconn replay PATH`: its exit status and standard output.
fn replay(path: &Path) -> (Option<i32>, String) {
    let out = run(&["replay", path.to_str().expect("a UTF-8 path")], b"");
    (out.status, out.stdout_text().to_owned())
}

/// Concurrent requests, a backend that refuses (retries with `exclude`,
/// passive take-outs), one whose checks fail for a while, and slow starts:
/// the node, fed the record, makes every one of the proxy's decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_replays_a_record_of_concurrent_load_failures_and_changes_exactly() {
    let dir = tempdir("proxy-record");
    let record = dir.join("run.in");
    let fast = Backend::start("fast", Behaviour::Fast).await;
    let slow = Backend::start("slow", Behaviour::Slow(Duration::from_millis(5))).await;
    let refusing = Backend::refusing("refusing").await;
    let flapping_health = Health::new(200);
    let flapping = Backend::start(
        "flapping",
        Behaviour::checked("/health", &flapping_health, Behaviour::Fast),
    )
    .await;
    let specs = [
        fast.spec(),
        slow.spec_with("weight=2"),
        refusing.spec(),
        flapping.spec_with("health-check=on,health-interval=20ms,health-fall=1,health-rise=1"),
    ];
    let record_flag = record.to_str().expect("a UTF-8 path");
    let mut proxy = Proxy::start(
        &specs,
        &[
            "--record",
            record_flag,
            "--slow-start",
            "200ms",
            "--max-fails",
            "1",
            "--fail-timeout",
            "50ms",
        ],
    );
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let address = proxy.address;
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..40 {
                    statuses.push(get(address, "/").await.status);
                    if i == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                statuses
            })
        })
        .collect();
    // Out and back while the load runs.
    tokio::time::sleep(Duration::from_millis(60)).await;
    flapping_health.set(500);
    proxy
        .stats_when("flapping out", |s| !s.healthy("flapping"))
        .await;
    flapping_health.set(200);
    // An operator's changes while the load runs: another backend, and a
    // new weight.
    let extra = Backend::start("extra", Behaviour::Fast).await;
    let added = proxy
        .message(&format!(
            r#"{{"type":"add_backend","msg_id":1,"backend":"extra","address":"{}"}}"#,
            extra.address
        ))
        .await;
    assert_eq!(added["type"], "add_backend_ok", "{added}");
    let set = proxy
        .message(r#"{"type":"set_backend","msg_id":2,"backend":"slow","weight":1}"#)
        .await;
    assert_eq!(set["type"], "set_backend_ok", "{set}");
    let mut answered = 0;
    for client in clients {
        let statuses = tokio::time::timeout(WAIT, client)
            .await
            .expect("the clients finish")
            .expect("no panic");
        // Every request had a backend to go to.
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
        answered += statuses.len();
    }
    assert_eq!(answered, 320);
    let stats: Stats = proxy
        .stats_when("every request done and every slow start over", |s| {
            let ramping = |name| s.backend(name).get("ramp").is_some();
            s.sum("active") == 0 && !ramping("flapping") && !ramping("refusing")
        })
        .await;
    let removed = proxy
        .message(r#"{"type":"remove_backend","msg_id":3,"backend":"extra"}"#)
        .await;
    assert_eq!(removed["type"], "remove_backend_ok", "{removed}");
    proxy.terminate();
    assert_eq!(proxy.exit(WAIT).await, Some(0));

    let (status, out) = replay(&record);
    assert_eq!(status, Some(0), "{out}");
    assert_eq!(out.lines().last(), Some("1 passed, 0 failed"), "{out}");

    let input = bodies(&record);
    let output = bodies(&dir.join("run.out"));
    assert_eq!(input.len(), output.len());
    assert_eq!(input[0]["type"], "init");
    assert_eq!(
        input[0]["backends"],
        serde_json::json!([
            {"name": "fast", "weight": 1, "max_connections": null},
            {"name": "slow", "weight": 2, "max_connections": null},
            {"name": "refusing", "weight": 1, "max_connections": null},
            {"name": "flapping", "weight": 1, "max_connections": null},
        ])
    );
    assert_eq!(input[0]["tie_break"], "round-robin");
    // One pick for each request the engine counted, one completion for
    // each pick: the same numbers /stats gave.
    let picks = of_type(&input, "http_request");
    let completions = of_type(&input, "request_complete");
    assert_eq!(picks.len() as u64, stats.sum("requests"), "{}", stats.0);
    assert_eq!(completions.len(), picks.len());
    let failed = completions.iter().filter(|c| c["ok"] == false).count();
    assert_eq!(failed as u64, stats.sum("failed"), "{}", stats.0);
    // Each request the refusing backend failed went on elsewhere, with it
    // excluded.
    let retried = picks.iter().filter(|p| p["exclude"].is_array()).count();
    assert_eq!(retried as u64, stats.get("refusing", "requests"));
    assert!(retried >= 1, "the refusing backend was never picked");
    assert!(picks
        .iter()
        .filter(|p| p["exclude"].is_array())
        .all(|p| p["exclude"] == serde_json::json!(["refusing"])));
    // Taken out, brought back at 5%, stepped to 100%.
    let changes = of_type(&input, "set_backend");
    let change = |name: &str, field: &str, value: Value| {
        changes
            .iter()
            .any(|c| c["backend"] == name && c[field] == value)
    };
    assert!(change("flapping", "healthy", false.into()));
    assert!(change("flapping", "healthy", true.into()));
    assert!(change("refusing", "healthy", false.into()));
    assert!(change("flapping", "ramp", 5.into()));
    assert!(change("flapping", "ramp", 100.into()));
    // The operator's changes, as the node's messages.
    let extra_address = extra.address.to_string();
    let adds = of_type(&input, "add_backend");
    assert_eq!(adds.len(), 1);
    assert_eq!(adds[0]["backend"], "extra");
    assert_eq!(adds[0]["address"], extra_address.as_str());
    assert!(change("slow", "weight", 1.into()));
    let removes = of_type(&input, "remove_backend");
    assert_eq!(removes.len(), 1);
    assert_eq!(removes[0]["backend"], "extra");
    // Every count the record ends with is 0.
    for name in ["fast", "slow", "refusing", "flapping"] {
        let last = output
            .iter()
            .rev()
            .find_map(|reply| reply["active_connections"][name].as_u64());
        assert_eq!(last, Some(0), "{name}");
    }

    // A record that says another backend was picked fails the replay.
    let picked = output
        .iter()
        .position(|r| r["backend"] == "fast" && r["type"] == "http_response")
        .expect("fast was picked");
    let lines: Vec<String> = std::fs::read_to_string(dir.join("run.out"))
        .expect("the record is there")
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i == picked {
                line.replace("\"backend\":\"fast\"", "\"backend\":\"slow\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(dir.join("run.out"), lines.join("\n")).expect("written");
    let (status, out) = replay(&record);
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains(".body.backend"), "{out}");
    assert_eq!(out.lines().last(), Some("0 passed, 1 failed"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_record_whose_name_does_not_end_in_in_is_a_usage_error() {
    let out = run(
        &[
            "proxy",
            "--backend",
            "127.0.0.1:9",
            "--record",
            "/tmp/decisions.jsonl",
        ],
        b"",
    );
    assert_eq!(out.status, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--record /tmp/decisions.jsonl: the name must end in .in"),
        "{}",
        out.stderr
    );
}
