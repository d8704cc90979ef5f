//! The binary as users run it: interactively, in pipelines, with bad
//! arguments.

mod common;

use common::{Running, BIN, TIMEOUT};
use serde_json::Value;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

#[test]
fn an_interactive_client_gets_each_reply_before_sending_the_next() {
    let mut node = Running::start(&[]);
    let mut stdin = node.child.stdin.take().unwrap();
    // A missing flush shows as a timeout, not a hang.
    let rx = common::lines(node.child.stdout.take().unwrap());
    let requests = [
        r#"{"src":"c","dest":"lb","body":{"type":"init","msg_id":1,"backends":["a","b"]}}"#,
        r#"{"src":"c","dest":"lb","body":{"type":"http_request","msg_id":2}}"#,
        r#"{"src":"c","dest":"lb","body":{"type":"http_request","msg_id":3}}"#,
        r#"{"src":"c","dest":"lb","body":{"type":"request_complete","msg_id":4,"backend":"a"}}"#,
    ];
    for (i, request) in requests.iter().enumerate() {
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no reply to message {} while stdin stays open", i + 1));
        let reply: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(reply["body"]["in_reply_to"], i + 1, "{line}");
    }
    drop(stdin);
    assert_eq!(node.wait(TIMEOUT), Some(0));
}

fn run_with_input(input: &[u8], args: &[&str]) -> (String, String, Option<i32>) {
    let out = common::run(args, input);
    (out.stdout_text().to_owned(), out.stderr, out.status)
}

#[test]
fn a_reply_to_a_message_without_msg_id_has_no_in_reply_to() {
    let (out, _, status) = run_with_input(
        br#"{"src":"c","dest":"lb","body":{"type":"http_request","active_connections":{"a":0}}}"#,
        &[],
    );
    assert_eq!(status, Some(0));
    assert_eq!(
        out,
        "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"http_response\",\"status\":200,\"backend\":\"a\",\"active_connections\":{\"a\":1}}}\n"
    );
}

#[test]
fn without_explain_a_reply_is_unchanged_by_the_full_balancer() {
    let plain = br#"{"src":"c","dest":"lb","body":{"type":"init","msg_id":1,"backends":["a",{"name":"b","weight":2}],"tie_break":"round-robin","seed":9}}
{"src":"c","dest":"lb","body":{"type":"http_request","msg_id":2,"explain":false}}
{"src":"c","dest":"lb","body":{"type":"http_request","msg_id":3}}
"#;
    let (out, err, status) = run_with_input(plain, &[]);
    assert_eq!((err.as_str(), status), ("", Some(0)));
    assert_eq!(
        out,
        concat!(
            "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"init_ok\",\"in_reply_to\":1}}\n",
            "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"http_response\",\"in_reply_to\":2,\"status\":200,\"backend\":\"a\",\"active_connections\":{\"a\":1,\"b\":0}}}\n",
            "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"http_response\",\"in_reply_to\":3,\"status\":200,\"backend\":\"b\",\"active_connections\":{\"a\":1,\"b\":1}}}\n",
        )
    );
}

#[test]
fn an_error_reply_is_exactly_the_maelstrom_shape() {
    let (out, err, status) = run_with_input(
        br#"{"src":"c","dest":"lb","body":{"type":"request_complete","msg_id":3,"backend":"x"}}"#,
        &[],
    );
    assert_eq!(status, Some(0));
    assert_eq!(err, "");
    assert_eq!(
        out,
        "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"error\",\"in_reply_to\":3,\"code\":20,\"text\":\"backend \\\"x\\\" is not in the pool\"}}\n"
    );
}

#[test]
fn empty_input_ends_at_once_and_quietly() {
    let (out, err, status) = run_with_input(b"", &[]);
    assert_eq!((out.as_str(), err.as_str(), status), ("", "", Some(0)));
}

#[test]
fn a_closed_stdout_ends_the_node_quietly_with_status_0() {
    let mut node = Running::start(&[]);
    let mut stdin = node.child.stdin.take().unwrap();
    let mut stdout = node.child.stdout.take().unwrap();
    let mut stderr = node.child.stderr.take().unwrap();
    let request = b"{\"src\":\"c\",\"dest\":\"lb\",\"body\":{\"type\":\"http_request\",\"msg_id\":1,\"active_connections\":{\"a\":0}}}\n";
    stdin.write_all(request).unwrap();
    stdin.flush().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout); // like `| head -1`
                  // Keep sending: the node must notice the closed pipe and stop.
    let writer = std::thread::spawn(move || {
        for _ in 0..200_000 {
            if stdin.write_all(request).is_err() {
                break;
            }
        }
    });
    let status = node.wait(TIMEOUT);
    let _ = writer.join();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(status, Some(0), "stderr: {err}");
    assert_eq!(err, "", "no panic text or error on a closed stdout");
}

#[test]
fn help_and_version_exit_0_and_bad_arguments_exit_2() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(
        text.contains("USAGE:") && text.contains("--max-message-size"),
        "{text}"
    );
    let version = Command::new(BIN).arg("-V").output().unwrap();
    assert!(String::from_utf8(version.stdout)
        .unwrap()
        .starts_with("leastconn 0."));
    let bad = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(err.contains("unknown argument \"--frobnicate\""), "{err}");
}

#[test]
fn each_command_prints_its_own_help() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let replay = help(&["replay", "--help"]);
    assert!(
        replay.contains("leastconn replay")
            && replay.contains("--bin")
            && replay.contains("--timeout"),
        "{replay}"
    );
    // Not the top-level help: the node's flags are not replay's.
    assert!(!replay.contains("--max-message-size"), "{replay}");
    assert_ne!(replay, help(&["--help"]));
    let simulate = help(&["simulate", "-h"]);
    assert!(
        simulate.contains("--backends") && !simulate.contains("--bin"),
        "{simulate}"
    );
    let version = help(&["simulate", "--version"]);
    assert_eq!(
        version,
        format!("leastconn {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn replay_reports_failures_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("leastconn-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = r#"{"src":"c","dest":"lb","body":{"type":"http_request","msg_id":1,"active_connections":{"a":1,"b":0}}}"#;
    std::fs::write(dir.join("good.in"), input).unwrap();
    std::fs::write(dir.join("good.out"), r#"{"body":{"backend":"b"}}"#).unwrap();
    std::fs::write(dir.join("bad.in"), input).unwrap();
    std::fs::write(dir.join("bad.out"), r#"{"body":{"backend":"a"}}"#).unwrap();
    let out = Command::new(BIN).arg("replay").arg(&dir).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL") && text.contains(".body.backend is \"b\", expected \"a\""),
        "{text}"
    );
    assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
}
