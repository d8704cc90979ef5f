//! The bad-input table (docs/bad-input.md), the classes too large or too
//! odd for a fixture file: each through the real binary, checking the
//! error the user gets, that later messages are still served, and that
//! memory stays within the documented bound.
//!
//! The smaller classes are fixtures under `fixtures/framing/` and
//! `fixtures/errors/`.

mod common;

use common::{peak_kib, Running, BIN, TIMEOUT};
use serde_json::Value;
use std::io::Write;
use std::process::{ChildStdin, Command};

const MIB: usize = 1024 * 1024;

/// A message whose reply proves that everything sent before it was read.
const SENTINEL: &[u8] =
    b"\n{\"src\":\"probe\",\"dest\":\"lb\",\"body\":{\"type\":\"stats\",\"msg_id\":424242}}\n";

struct Outcome {
    replies: Vec<Value>,
    stderr: String,
    status: Option<i32>,
    /// The node's peak resident memory once the sentinel was answered.
    peak_kib: u64,
}

/// Runs the node, lets `feed` write its input, then sends the sentinel,
/// waits for its reply, reads the peak memory, and closes the input.
fn run(args: &[&str], feed: impl FnOnce(&mut ChildStdin)) -> Outcome {
    let mut node = Running::start(args);
    let mut stdin = node.child.stdin.take().unwrap();
    let lines = common::lines(node.child.stdout.take().unwrap());
    let stderr = common::read_all(node.child.stderr.take().unwrap());
    feed(&mut stdin);
    stdin.write_all(SENTINEL).unwrap();
    stdin.flush().unwrap();
    let mut replies = Vec::new();
    loop {
        let line = lines
            .recv_timeout(TIMEOUT)
            .expect("the sentinel is answered");
        let reply: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:.200}"));
        let sentinel = reply["body"]["in_reply_to"] == 424242;
        replies.push(reply);
        if sentinel {
            break;
        }
    }
    let peak_kib = peak_kib(node.child.id());
    eprintln!("peak resident memory: {peak_kib} KiB");
    drop(stdin);
    let status = node.wait(TIMEOUT);
    replies.extend(lines.iter().map(|line| {
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:.200}"))
    }));
    Outcome {
        replies,
        stderr: String::from_utf8(stderr.join().unwrap()).expect("stderr is UTF-8"),
        status,
        peak_kib,
    }
}

fn line(body: &str) -> Vec<u8> {
    format!("{{\"src\":\"c\",\"dest\":\"lb\",\"body\":{body}}}\n").into_bytes()
}

/// The replies other than the sentinel's.
fn answers(outcome: &Outcome) -> Vec<&Value> {
    outcome
        .replies
        .iter()
        .filter(|r| r["body"]["in_reply_to"] != 424242)
        .collect()
}

#[test]
fn a_million_backends_in_one_init() {
    let mut init =
        String::from(r#"{"src":"c","dest":"lb","body":{"type":"init","msg_id":1,"backends":["#);
    for i in 0..1_000_000 {
        if i > 0 {
            init.push(',');
        }
        init.push_str(&format!("\"b{i}\""));
    }
    init.push_str("]}}\n");
    let out = run(&[], |stdin| {
        stdin.write_all(init.as_bytes()).unwrap();
        stdin
            .write_all(&line(r#"{"type":"http_request","msg_id":2}"#))
            .unwrap();
    });
    let replies = answers(&out);
    assert_eq!(replies[0]["body"]["type"], "init_ok");
    assert_eq!(replies[1]["body"]["backend"], "b0");
    let counts = replies[1]["body"]["active_connections"]
        .as_object()
        .unwrap();
    assert_eq!(counts.len(), 1_000_000);
    assert_eq!(counts["b0"], 1);
    assert_eq!(out.status, Some(0));
    assert_eq!(out.stderr, "");
    // A 10 MB message, a million-backend pool and a 15 MB reply.
    assert!(out.peak_kib < 400 * 1024, "peak {} KiB", out.peak_kib);
}

#[test]
fn a_100_mib_line_is_skipped_without_being_held() {
    let out = run(&[], |stdin| {
        stdin
            .write_all(&line(r#"{"type":"init","msg_id":1,"backends":["a"]}"#))
            .unwrap();
        stdin
            .write_all(br#"{"src":"c","dest":"lb","body":{"type":"init","msg_id":2,"backends":[""#)
            .unwrap();
        let chunk = vec![b'x'; MIB];
        for _ in 0..100 {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.write_all(b"\"]}}\n").unwrap();
        stdin
            .write_all(&line(r#"{"type":"http_request","msg_id":3}"#))
            .unwrap();
    });
    let replies = answers(&out);
    assert_eq!(replies.len(), 2);
    assert_eq!(
        replies[1]["body"]["backend"], "a",
        "later messages are served"
    );
    assert!(
        out.stderr.contains(
            "line 2, column 1: message is larger than the limit of 67108864 bytes; skipped"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // At most the limit is held, never the whole line.
    assert!(out.peak_kib < 80 * 1024, "peak {} KiB", out.peak_kib);
}

#[test]
fn an_object_that_never_ends_keeps_memory_flat() {
    let out = run(&["--max-message-size", "1M"], |stdin| {
        stdin
            .write_all(&line(r#"{"type":"init","msg_id":1,"backends":["a"]}"#))
            .unwrap();
        // An open string, then an open array nested ever deeper: 64 MiB.
        stdin.write_all(br#"{"src":"c","body":{"x":""#).unwrap();
        let chunk = vec![b'y'; MIB];
        for _ in 0..32 {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.write_all(br#"","z":"#).unwrap();
        let chunk = vec![b'['; MIB];
        for _ in 0..32 {
            stdin.write_all(&chunk).unwrap();
        }
    });
    assert_eq!(answers(&out).len(), 1);
    assert!(
        out.stderr.contains(
            "line 2, column 1: message is larger than the limit of 1048576 bytes; skipped"
        ),
        "{}",
        out.stderr
    );
    assert!(out.peak_kib < 24 * 1024, "peak {} KiB", out.peak_kib);
    assert_eq!(out.status, Some(0));
}

#[test]
fn nesting_100000_levels_deep_does_not_overflow_the_stack() {
    let depth = 100_000;
    let deep_array = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let out = run(&[], |stdin| {
        let init =
            format!(r#"{{"type":"init","msg_id":1,"backends":["a"],"extra":{deep_object}}}"#);
        stdin.write_all(&line(&init)).unwrap();
        let bad = format!(r#"{{"type":"init","msg_id":2,"backends":[{deep_array}]}}"#);
        stdin.write_all(&line(&bad)).unwrap();
        let src = format!(r#"{{"src":{deep_array},"dest":"lb","body":{{}}}}"#);
        stdin.write_all(src.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin
            .write_all(&line(r#"{"type":"http_request","msg_id":3}"#))
            .unwrap();
    });
    let replies = answers(&out);
    assert_eq!(replies.len(), 3);
    assert_eq!(
        replies[0]["body"]["type"], "init_ok",
        "deep ignored fields are fine"
    );
    assert_eq!(replies[1]["body"]["code"], 12);
    assert_eq!(replies[2]["body"]["backend"], "a");
    assert!(
        out.stderr
            .contains("line 3, column 1: not a message: \"src\" must be a string, found an array"),
        "{}",
        out.stderr
    );
    assert_eq!(out.status, Some(0));
}

#[test]
fn a_number_with_10000_digits() {
    let digits = "9".repeat(10_000);
    let out = run(&[], |stdin| {
        let ignored = format!(r#"{{"type":"init","msg_id":1,"backends":["a"],"n":{digits}}}"#);
        stdin.write_all(&line(&ignored)).unwrap();
        let count = format!(
            r#"{{"type":"http_request","msg_id":2,"active_connections":{{"a":{digits}}}}}"#
        );
        stdin.write_all(&line(&count)).unwrap();
        let id = format!(r#"{{"type":"http_request","msg_id":{digits}}}"#);
        stdin.write_all(&line(&id)).unwrap();
        stdin
            .write_all(&line(r#"{"type":"http_request","msg_id":4}"#))
            .unwrap();
    });
    let replies = answers(&out);
    assert_eq!(replies.len(), 4);
    assert_eq!(replies[0]["body"]["type"], "init_ok");
    assert_eq!(replies[1]["body"]["code"], 12);
    assert!(replies[1]["body"]["text"]
        .as_str()
        .unwrap()
        .ends_with("but 9999999999999999999999999999999999999999… (10000 bytes) is too large"));
    assert_eq!(replies[2]["body"]["code"], 12);
    assert_eq!(replies[2]["body"].get("in_reply_to"), None);
    assert_eq!(replies[3]["body"]["active_connections"]["a"], 1);
}

#[test]
fn standard_output_closed_early_is_quiet_and_exits_0() {
    // `leastconn < big-input | head -1`, through a real shell pipeline.
    let dir = std::env::temp_dir().join(format!("leastconn-head-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("big.in");
    let mut data = line(r#"{"type":"init","msg_id":1,"backends":["a","b"]}"#);
    for i in 0..200_000 {
        data.extend(line(&format!(
            r#"{{"type":"http_request","msg_id":{}}}"#,
            i + 2
        )));
    }
    std::fs::write(&input, data).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "timeout 60 \"{BIN}\" < \"{}\" | head -1; echo \"node exit ${{PIPESTATUS[0]}}\"",
            input.display()
        ))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout:.300}");
    assert!(lines[0].starts_with("{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"init_ok\""));
    assert_eq!(lines[1], "node exit 0");
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "",
        "no panic text, no error"
    );
}

#[test]
fn standard_input_closed_or_an_empty_pipe() {
    for script in [
        format!("timeout 60 \"{BIN}\" <&-"),
        format!("true | timeout 60 \"{BIN}\""),
    ] {
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{script}");
        assert!(out.stdout.is_empty(), "{script}");
        assert!(
            out.stderr.is_empty(),
            "{script}: {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
