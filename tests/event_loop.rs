//! Whole-program properties, through the real event loop in-process (over
//! byte buffers, so thousands of cases run in seconds): whatever the input,
//! the loop never panics, every line it writes is a valid reply envelope,
//! and every well-formed message with a `msg_id` gets exactly one reply
//! carrying it.

use leastconn::event_loop::{run, Options};
use leastconn::message;
use leastconn::protocol;
use leastconn::protocol::fields::{Fields, Precise};
use proptest::prelude::*;
use serde_json::Value;

mod common;

use common::Pieces;

fn run_raw(input: impl std::io::Read, max_message_size: usize) -> (Vec<u8>, Vec<u8>) {
    run_with(input, max_message_size, true)
}

/// Runs the loop, with or without the one-pass read.
fn run_with(
    input: impl std::io::Read,
    max_message_size: usize,
    one_pass: bool,
) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let options = Options {
        max_message_size,
        one_pass,
    };
    run(input, &mut out, &mut err, &options).expect("in-memory I/O cannot fail");
    (out, err)
}

fn run_bytes(input: &[u8]) -> (Vec<Value>, String) {
    let (out, err) = run_raw(input, Options::default().max_message_size);
    let text = String::from_utf8(out).expect("replies are UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "output ends mid-line"
    );
    let replies = text
        .lines()
        .map(|line| {
            let reply: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            check_envelope(&reply, line);
            reply
        })
        .collect();
    (
        replies,
        String::from_utf8(err).expect("diagnostics are UTF-8"),
    )
}

fn check_envelope(reply: &Value, line: &str) {
    assert!(reply["src"].is_string(), "{line}");
    assert!(reply["dest"].is_string(), "{line}");
    assert!(reply["body"]["type"].is_string(), "{line}");
    assert_eq!(reply.as_object().map(|o| o.len()), Some(3), "{line}");
}

/// An object's keys in order, repeats included (`Value` would hide them).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

fn once(keys: &[String], key: &str) -> bool {
    keys.iter().filter(|k| *k == key).count() == 1
}

/// The `msg_id` of a line that is, by itself, a well-formed message: an
/// envelope naming `src`, `dest` and `body` once each (a repeated address
/// is ambiguous, so such input is not a message), with a body naming one
/// integer `msg_id`.
fn well_formed_id(line: &[u8]) -> Option<i128> {
    let Keys(keys) = serde_json::from_slice(line).ok()?;
    if !["src", "dest", "body"].iter().all(|k| once(&keys, k)) {
        return None;
    }
    let v: Value = serde_json::from_slice(line).ok()?;
    let body = v.get("body")?;
    let Keys(body_keys) = serde_json::from_value(body.clone()).ok()?;
    if !(v.get("src")?.is_string() && v.get("dest")?.is_string() && once(&body_keys, "msg_id")) {
        return None;
    }
    let id = body.get("msg_id")?;
    id.as_u64()
        .map(i128::from)
        .or_else(|| id.as_i64().map(i128::from))
}

/// Every integer given as a `"msg_id"` anywhere in the input.
fn msg_ids_in(input: &[u8]) -> impl Iterator<Item = i128> + '_ {
    const KEY: &[u8] = b"\"msg_id\"";
    (0..input.len()).filter_map(move |i| {
        let rest = input[i..].strip_prefix(KEY)?;
        let rest = rest
            .trim_ascii_start()
            .strip_prefix(b":")?
            .trim_ascii_start();
        let (negative, rest) = match rest.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let value: i128 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        Some(if negative { -value } else { value })
    })
}

/// Checks the reply property for input made of lines: a line that is a
/// well-formed message is answered if the line before it (ignoring blank
/// lines) is itself a complete JSON value, since only then is it certain
/// that it does not sit inside an earlier, broken message.
fn check_replies(input: &[u8], replies: &[Value]) {
    let ids_answered: Vec<i128> = replies
        .iter()
        .filter_map(|r| r["body"].get("in_reply_to"))
        .filter_map(|id| id.as_i64().map(i128::from).or(id.as_u64().map(i128::from)))
        .collect();
    let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let mut previous_complete = true;
    for line in &lines {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        if previous_complete {
            if let Some(id) = well_formed_id(trimmed) {
                let answered = ids_answered.iter().filter(|&&a| a == id).count();
                // At most one reply per `"msg_id": id` anywhere in the input
                // (damage may have joined several messages on one line).
                let sent = msg_ids_in(input).filter(|&m| m == id).count();
                assert!(
                    answered >= 1 && answered <= sent,
                    "msg_id {id}: {answered} replies for {sent} message(s); line {}",
                    String::from_utf8_lossy(line)
                );
            }
        }
        previous_complete = serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_ok();
    }
}

/// A value that one-pass and precise parses both accept for `key`.
fn valid_value(key: &str) -> &'static str {
    match key {
        "type" => "\"stats\"",
        "msg_id" | "seed" | "weight" | "max_connections" | "duration_ms" | "ramp" => "1",
        "active_connections" => "{\"a\":1}",
        "backends" | "exclude" => "[\"a\"]",
        "node_ids" => "[\"n\"]",
        "explain" | "ok" | "healthy" => "true",
        "algorithm" => "\"random\"",
        "tie_break" => "\"random\"",
        "counts" => "\"all\"",
        _ => "\"a\"",
    }
}

// --- valid traces ----------------------------------------------------------------

fn message(id: u64, kind: u8, n: u8) -> String {
    let name = format!("b{}", n % 4);
    let body = match kind % 11 {
        0 => format!(
            r#"{{"type":"init","msg_id":{id},"backends":["b0","b1",{{"name":"b2","weight":2}}],"tie_break":"round-robin"}}"#
        ),
        1 => format!(
            r#"{{"type":"request_complete","msg_id":{id},"backend":"{name}","ok":false,"duration_ms":3.5}}"#
        ),
        2 => format!(
            r#"{{"type":"http_request","msg_id":{id},"active_connections":{{"{name}":{n},"b1":1}}}}"#
        ),
        3 => format!(
            r#"{{"type":"set_backend","msg_id":{id},"backend":"{name}","healthy":{}}}"#,
            n % 2 == 0
        ),
        4 => format!(
            r#"{{"type":"add_backend","msg_id":{id},"backend":"{name}","max_connections":2}}"#
        ),
        5 => format!(r#"{{"type":"remove_backend","msg_id":{id},"backend":"{name}"}}"#),
        6 => format!(r#"{{"type":"stats","msg_id":{id}}}"#),
        7 => format!(
            r#"{{"type":"set_backend","msg_id":{id},"backend":"{name}","ramp":{}}}"#,
            n % 101 + 1
        ),
        8 => format!(
            r#"{{"type":"http_request","msg_id":{id},"exclude":["{name}"],"explain":{}}}"#,
            n % 2 == 0
        ),
        9 => format!(
            r#"{{"type":"add_backend","msg_id":{id},"backend":"{name}","address":"10.0.0.{n}:80"}}"#
        ),
        _ => format!(
            r#"{{"type":"http_request","msg_id":{id},"algorithm":"round-robin","explain":true}}"#
        ),
    };
    format!(r#"{{"src":"c{n}","dest":"lb","body":{body}}}"#)
}

fn trace() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec((any::<u8>(), any::<u8>()), 1..40).prop_map(|specs| {
        specs
            .iter()
            .enumerate()
            .map(|(i, &(kind, n))| message(i as u64 + 1, kind, n))
            .collect()
    })
}

/// Ways of damaging a trace, as a user's tools do.
#[derive(Clone, Debug)]
enum Damage {
    FlipByte { line: usize, at: usize, to: u8 },
    CutLine { line: usize, at: usize },
    DropTail { line: usize, keep: usize },
    Retype { line: usize, field: u8, to: u8 },
    JoinLines { line: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), any::<u8>()).prop_map(|(line, at, to)| Damage::FlipByte {
            line,
            at,
            to
        }),
        (any::<usize>(), any::<usize>()).prop_map(|(line, at)| Damage::CutLine { line, at }),
        (any::<usize>(), any::<usize>()).prop_map(|(line, keep)| Damage::DropTail { line, keep }),
        (any::<usize>(), any::<u8>(), any::<u8>()).prop_map(|(line, field, to)| Damage::Retype {
            line,
            field,
            to
        }),
        any::<usize>().prop_map(|line| Damage::JoinLines { line }),
    ]
}

fn apply_damage(lines: &mut Vec<Vec<u8>>, damage: &Damage) {
    let n = lines.len();
    match *damage {
        Damage::FlipByte { line, at, to } => {
            let l = &mut lines[line % n];
            if !l.is_empty() {
                let i = at % l.len();
                l[i] = to;
            }
        }
        Damage::CutLine { line, at } => {
            let l = lines[line % n].clone();
            let i = at % (l.len() + 1);
            lines[line % n] = l[..i].to_vec();
            lines.insert(line % n + 1, l[i..].to_vec());
        }
        Damage::DropTail { line, keep } => {
            let l = &mut lines[line % n];
            let keep = keep % (l.len() + 1);
            l.truncate(keep);
        }
        Damage::Retype { line, field, to } => {
            let fields = [
                "\"msg_id\":",
                "\"backend\":",
                "\"body\":",
                "\"src\":",
                "\"active_connections\":",
                "\"type\":",
                "\"exclude\":",
                "\"ramp\":",
                "\"address\":",
            ];
            let values: [&[u8]; 6] = [b"\"text\"", b"-1", b"[1,2]", b"null", b"1.5", b"{}"];
            let key = fields[field as usize % fields.len()].as_bytes();
            let l = &mut lines[line % n];
            if let Some(start) = l.windows(key.len()).position(|w| w == key) {
                let value_start = start + key.len();
                // Replace the value up to the next ',' or '}' at the same level
                // (roughly: good enough to change its type).
                let end = l[value_start..]
                    .iter()
                    .position(|&b| b == b',' || b == b'}')
                    .map_or(l.len(), |p| value_start + p);
                l.splice(
                    value_start..end,
                    values[to as usize % values.len()].iter().copied(),
                );
            }
        }
        Damage::JoinLines { line } => {
            if n > 1 {
                let i = line % (n - 1);
                let next = lines.remove(i + 1);
                lines[i].extend_from_slice(&next);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_break_the_loop(input in prop::collection::vec(any::<u8>(), 0..2000)) {
        let (_, _) = run_bytes(&input);
    }

    #[test]
    fn json_like_bytes_never_break_the_loop(
        input in prop::collection::vec(
            prop::sample::select(b"{}[]\":,\\ \n\r\t0123456789-.eEtrufalsn\x00\xff\xef\xbb\xbfabc".to_vec()),
            0..2000,
        )
    ) {
        let (_, _) = run_bytes(&input);
    }

    #[test]
    fn reading_in_pieces_changes_nothing(
        trace in trace(),
        damages in prop::collection::vec(damage(), 0..4),
        piece in 1..40usize,
        limit in prop_oneof![Just(64 * 1024 * 1024), 50..400usize],
    ) {
        let mut lines: Vec<Vec<u8>> = trace.into_iter().map(String::into_bytes).collect();
        for d in &damages {
            apply_damage(&mut lines, d);
        }
        let input = lines.join(&b'\n');
        let whole = run_raw(&input[..], limit);
        let pieces = run_raw(Pieces { data: &input, piece }, limit);
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn the_one_pass_parse_agrees_with_the_precise_one(
        trace in trace(),
        damages in prop::collection::vec(damage(), 0..6),
    ) {
        let mut lines: Vec<Vec<u8>> = trace.into_iter().map(String::into_bytes).collect();
        for d in &damages {
            apply_damage(&mut lines, d);
        }
        for line in &lines {
            let Some((to, mut fields, len)) = protocol::read_one_pass(line, line.len()) else { continue };
            let (fast_id, fast) = message::parse(&mut *fields);
            let Ok(fast) = fast else { continue };
            // The same bytes, through the precise parse.
            let (precise_to, body) = protocol::read_envelope(&line[..len]).expect("the precise parse accepts it too");
            let mut body = protocol::read_body(body).map_err(|(_, e)| e).expect("the precise parse reads the body too");
            let (precise_id, precise) = message::parse(&mut body);
            prop_assert_eq!((&*to.src, &*to.dest), (&*precise_to.src, &*precise_to.dest));
            prop_assert_eq!(fast_id, precise_id);
            let precise = precise.expect("the precise parse accepts it too");
            prop_assert_eq!(format!("{:?}", fast), format!("{:?}", precise));
        }
        // And whole runs: the same replies and diagnostics either way.
        let input = lines.join(&b'\n');
        prop_assert_eq!(run_with(&input[..], 1 << 20, true), run_with(&input[..], 1 << 20, false));
    }

    #[test]
    fn a_repeated_field_any_field_is_refused_alike_by_both_parses(
        fields in prop::sample::subsequence(Fields::<Precise>::KEYS.to_vec(), 0..Fields::<Precise>::KEYS.len()),
        repeated in prop::sample::select(Fields::<Precise>::KEYS.to_vec()),
        kind in prop::sample::select(message::MESSAGE_TYPES.to_vec()),
        at in any::<prop::sample::Index>(),
    ) {
        let mut keys: Vec<&str> = fields.into_iter().filter(|k| *k != "type" && *k != "msg_id").collect();
        keys.insert(at.index(keys.len() + 1), repeated);
        keys.push(repeated);
        let members: Vec<String> = keys
            .iter()
            .map(|key| format!("\"{key}\":{}", valid_value(key)))
            .collect();
        let mut body = format!("{{\"type\":\"{kind}\",\"msg_id\":7");
        for member in &members {
            body.push(',');
            body.push_str(member);
        }
        body.push('}');
        let input = format!("{{\"src\":\"c\",\"dest\":\"lb\",\"body\":{body}}}\n");
        let one_pass = run_with(input.as_bytes(), 1 << 20, true);
        let precise = run_with(input.as_bytes(), 1 << 20, false);
        prop_assert_eq!(&one_pass, &precise);
        let reply: Value = serde_json::from_slice(&one_pass.0).expect("one reply");
        prop_assert_eq!(&reply["body"]["type"], "error", "{}", input);
        prop_assert_eq!(&reply["body"]["code"], 12);
        let in_reply_to = (repeated != "msg_id").then_some(7);
        prop_assert_eq!(reply["body"]["in_reply_to"].as_u64(), in_reply_to);
        let text = reply["body"]["text"].as_str().unwrap_or_default();
        prop_assert!(text.contains(&format!("duplicate field `{repeated}`")), "{}", text);
    }

    #[test]
    fn every_message_of_a_valid_trace_is_answered_once(trace in trace()) {
        let input = trace.join("\n") + "\n";
        let (replies, diagnostics) = run_bytes(input.as_bytes());
        prop_assert_eq!(diagnostics, "");
        prop_assert_eq!(replies.len(), trace.len());
        for (i, reply) in replies.iter().enumerate() {
            prop_assert_eq!(&reply["body"]["in_reply_to"], &Value::from(i as u64 + 1));
        }
    }

    #[test]
    fn damaged_traces_still_answer_every_well_formed_message(
        trace in trace(),
        damages in prop::collection::vec(damage(), 1..6),
    ) {
        let mut lines: Vec<Vec<u8>> = trace.into_iter().map(String::into_bytes).collect();
        for d in &damages {
            apply_damage(&mut lines, d);
        }
        let input = lines.join(&b'\n');
        let (replies, _) = run_bytes(&input);
        check_replies(&input, &replies);
    }
}
