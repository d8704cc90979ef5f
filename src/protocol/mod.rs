//! The protocol: messages as JSON, parsed into typed values and written
//! back.
//!
//! # Wire format
//!
//! Input is a stream of JSON objects on standard input: one per line,
//! pretty-printed over several lines, or several on one line; LF or CRLF;
//! blank lines and a missing final newline are fine. Each is an envelope
//!
//! ```json
//! {"src": "client", "dest": "lb", "body": {"type": "…", "msg_id": 1, …}}
//! ```
//!
//! `src` and `dest` are strings and `body` is an object, or the input is not
//! a message (see *Input that cannot be answered*). Other envelope fields
//! are ignored. In the body, `type` is a string and `msg_id`, if present, an
//! integer from −2⁶³ to 2⁶⁴ − 1. Body fields a message type does not use are
//! ignored, except by `add_backend`. A field given twice in the envelope
//! makes the input not a message; in the body, it is error 12.
//!
//! Every message is answered with exactly one line of compact JSON on
//! standard output:
//!
//! ```json
//! {"src":"lb","dest":"client","body":{"type":"…","in_reply_to":1,…}}
//! ```
//!
//! - `src` is the `node_id` of the last accepted `init` that carried one,
//!   otherwise the `dest` of the message answered;
//! - `dest` is the `src` of the message answered;
//! - `body.type` comes first; `in_reply_to` follows it when, and only when,
//!   the message had a valid `msg_id`, and echoes it exactly.
//!
//! Wherever a reply carries `active_connections`, it is an object with
//! every backend of the pool, eligible or not, in pool order, mapped to its
//! count (or only the changed ones: see `counts` under `init`). Counts are
//! whole numbers from 0 to 2⁶⁴ − 1 in both directions, written as integer
//! literals: no sign, no fraction, no exponent.
//!
//! A backend is *eligible* for a new connection when it is healthy, its
//! weight is above 0, and its count is below its `max_connections` (and
//! below 2⁶⁴ − 1, so that counts never wrap).
//!
//! # Messages
//!
//! Each message type is specified, with its reply, in its own module:
//!
//! | `type` | reply | module |
//! |---|---|---|
//! | `init` | `init_ok` | [`message::init`](crate::message::init) |
//! | `http_request` | `http_response` | [`message::http_request`](crate::message::http_request) |
//! | `request_complete` | `request_complete_ok` | [`message::request_complete`](crate::message::request_complete) |
//! | `add_backend` | `add_backend_ok` | [`message::add_backend`](crate::message::add_backend) |
//! | `remove_backend` | `remove_backend_ok` | [`message::remove_backend`](crate::message::remove_backend) |
//! | `set_backend` | `set_backend_ok` | [`message::set_backend`](crate::message::set_backend) |
//! | `stats` | `stats_ok` | [`message::stats`](crate::message::stats) |
//!
//! # `error`
//!
//! A message that is refused changes nothing at all, and is answered with
//!
//! ```json
//! {"type":"error","in_reply_to":7,"code":20,"text":"backend \"api-9\" is not in the pool"}
//! ```
//!
//! | code | name                | when |
//! |------|---------------------|------|
//! | 10   | not-supported       | unknown `type`; unknown `algorithm` or `tie_break` |
//! | 12   | malformed-request   | a field missing or of the wrong type, or given twice; a count, weight or limit that is not an integer literal from 0 to 2⁶⁴ − 1; a `ramp` that is not a whole number from 1 to 100; an `exclude` that is not an array of names; an empty or repeated backend name, or one that is not valid Unicode (an unpaired surrogate escape); an unknown key in a backend object or an `add_backend`; a negative `duration_ms`; a `msg_id` that is not an integer (the reply then has no `in_reply_to`) |
//! | 20   | key-does-not-exist  | `request_complete`, `remove_backend` or `set_backend` for a backend not in the pool; an `http_request` whose `exclude` names one |
//! | 21   | key-already-exists  | `add_backend` for a backend already in the pool |
//! | 22   | precondition-failed | `request_complete` for a backend with 0 connections |
//!
//! `text` says which field was wrong and how; a long value or backend name
//! is quoted only in part, with its length.
//!
//! # Input that cannot be answered
//!
//! Input that is not JSON, not valid UTF-8, not an object, or not an
//! envelope (no string `src` or `dest`, no object `body`) gets no reply. A
//! line `leastconn: line L, column C: why` goes to standard error, and the
//! node goes on with the next message (see [`crate::framing`] for where it
//! resumes). Messages over the size limit (`--max-message-size`, 64 MiB by
//! default) are reported and skipped the same way. Nesting depth is not
//! limited: nested values are framed and skipped without recursion.
//!
//! # Parsing
//!
//! A message is read one of two ways, both into the same envelope and body
//! types of [`fields`], whose field lists are written once:
//!
//! - in one strict pass ([`read_one_pass`]) straight from the input buffer,
//!   where the framer meets a `{`: strings and booleans are read to their
//!   values at once. Anything that is not a well-formed message with
//!   fields of the right types is declined, with nothing changed;
//! - precisely, once the framer has delimited the object:
//!   [`read_envelope`] checks the envelope (input that fails it cannot be
//!   answered), and [`read_body`] keeps each field as raw JSON text, so
//!   that the message's own parse can check each on its own and say what
//!   was wrong with it.
//!
//! Either way, each message type's parse (in its module under
//! [`crate::message`]) checks the fields with the functions of [`fields`],
//! so the two ways accept exactly the same messages and read them to the
//! same request. Replies are written straight from the engine's state with
//! the primitives of [`write`](mod@write).

pub mod fields;
pub mod write;

use fields::{Envelope, Fields, OnePass, Precise};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The Maelstrom error codes this node answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message type or the algorithm is not supported.
    NotSupported = 10,
    /// A field is missing, of the wrong type, or out of range.
    MalformedRequest = 12,
    /// The named backend is not in the pool.
    KeyDoesNotExist = 20,
    /// A backend of that name is already in the pool.
    KeyAlreadyExists = 21,
    /// The operation's precondition does not hold (nothing to complete).
    PreconditionFailed = 22,
}

/// A message the node refuses, answered with an `error` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub text: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ProtocolError {
            code,
            text: text.into(),
        }
    }

    /// Error 12, the usual refusal of a field.
    pub fn malformed(text: impl Into<String>) -> Self {
        ProtocolError::new(ErrorCode::MalformedRequest, text)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code as u16, self.text)
    }
}

impl std::error::Error for ProtocolError {}

/// A `msg_id`, kept as sent so that `in_reply_to` echoes it exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgId {
    Unsigned(u64),
    Negative(i64),
}

impl From<i64> for MsgId {
    /// Non-negative ids are always `Unsigned`, however they were read.
    fn from(n: i64) -> Self {
        match u64::try_from(n) {
            Ok(n) => MsgId::Unsigned(n),
            Err(_) => MsgId::Negative(n),
        }
    }
}

/// Why input framed as an object cannot be answered, in words for a
/// diagnostic.
pub type Unanswerable = String;

/// The addresses of a message: who sent it, and to whom.
#[derive(Debug)]
pub struct Addresses<'a> {
    pub src: Cow<'a, str>,
    pub dest: Cow<'a, str>,
}

/// Reads a well-formed message at the start of `bytes` (more input may
/// follow), of at most `max_len` bytes, in one strict pass, and returns its
/// addresses, its body's fields and its length. Anything else (not JSON,
/// incomplete, not UTF-8, not an envelope, a body field of the wrong type
/// or repeated, too long) gives `None`; the framer then delimits the input
/// and [`read_envelope`] says what is wrong.
pub fn read_one_pass(
    bytes: &[u8],
    max_len: usize,
) -> Option<(Addresses<'_>, Box<Fields<'_, OnePass>>, usize)> {
    // The usual message is ASCII and ends on its line: check the line once
    // and read it as text, which spares a UTF-8 check for every string.
    let line = &bytes[..memchr::memchr(b'\n', bytes).unwrap_or(bytes.len())];
    let (envelope, len) = if line.is_ascii() {
        let text = std::str::from_utf8(line).ok()?;
        let mut messages =
            serde_json::Deserializer::from_str(text).into_iter::<Envelope<OnePass>>();
        (messages.next()?.ok()?, messages.byte_offset())
    } else {
        let mut messages =
            serde_json::Deserializer::from_slice(bytes).into_iter::<Envelope<OnePass>>();
        let envelope = messages.next()?.ok()?;
        // Strings the pass skipped were not checked: the whole must be UTF-8.
        let len = messages.byte_offset();
        std::str::from_utf8(&bytes[..len]).ok()?;
        (envelope, len)
    };
    if len > max_len {
        return None;
    }
    let addresses = Addresses {
        src: envelope.src?.0,
        dest: envelope.dest?.0,
    };
    Some((addresses, envelope.body?.0, len))
}

/// Checks a delimited message's envelope. The error says why the input is
/// not a message; such input cannot be answered.
pub fn read_envelope(bytes: &[u8]) -> Result<(Addresses<'_>, &RawValue), Unanswerable> {
    let text = std::str::from_utf8(bytes).map_err(|e| describe_utf8_error(bytes, &e))?;
    let envelope: Envelope<Precise> =
        serde_json::from_str(text).map_err(|e| describe_json_error(&e))?;
    let src = address("src", envelope.src)?;
    let dest = address("dest", envelope.dest)?;
    let body = match envelope.body {
        Some(body) if body.get().starts_with('{') => body,
        Some(body) => {
            return Err(format!(
                "not a message: \"body\" must be an object, found {}",
                fields::kind_of(body)
            ))
        }
        None => return Err("not a message: the envelope has no \"body\"".into()),
    };
    Ok((Addresses { src, dest }, body))
}

/// An envelope's `src` or `dest`, or why it is not an address.
fn address<'a>(field: &str, raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, Unanswerable> {
    let raw = raw.ok_or_else(|| format!("not a message: the envelope has no \"{field}\""))?;
    fields::string(field, raw).map_err(|e| format!("not a message: {}", e.text))
}

/// Reads a body (already known to be a JSON object) into raw fields. A body
/// that cannot be read (a field given twice) is refused, with its `msg_id`
/// if that alone is clear.
pub fn read_body(body: &RawValue) -> Result<Fields<'_, Precise>, (Option<MsgId>, ProtocolError)> {
    serde_json::from_str(body.get()).map_err(|e| {
        let text = match fields::unpaired_surrogate(body.get()) {
            Some(escape) if !e.to_string().starts_with("duplicate field") => format!(
                "a key of the body contains {escape}, an unpaired surrogate escape, which is no character"
            ),
            _ => {
                let text = describe_json_error(&e);
                let text = text.trim_start_matches("not a message: ").to_owned();
                format!("the body could not be read: {text}; each field may appear only once")
            }
        };
        (unique_msg_id(body), ProtocolError::malformed(text))
    })
}

/// The body's `msg_id` if it appears exactly once and is valid.
fn unique_msg_id(body: &RawValue) -> Option<MsgId> {
    let fields::Members(members) = serde_json::from_str(body.get()).ok()?;
    let mut ids = members.iter().filter(|(key, _)| key == "msg_id");
    match (ids.next(), ids.next()) {
        (Some((_, raw)), None) => fields::msg_id(raw).ok(),
        _ => None,
    }
}

/// Says where a message stops being UTF-8.
fn describe_utf8_error(bytes: &[u8], e: &std::str::Utf8Error) -> String {
    let at = e.valid_up_to();
    let before = &bytes[..at];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    format!(
        "not valid UTF-8: byte 0x{:02X} at line {line}, column {column} of this message",
        bytes[at]
    )
}

/// Turns a serde_json error into a diagnostic, without serde's own wording
/// where ours is clearer.
fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde_json appends " at line L column C" relative to the message; the
    // caller reports the message's own position instead.
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    if e.is_syntax() || e.is_eof() {
        return format!("invalid JSON: {text} (line {} of this message)", e.line());
    }
    format!("not a message: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_needs_string_addresses_and_an_object_body() {
        assert!(read_envelope(br#"{"src":"c","dest":"lb","body":{}}"#).is_ok());
        let cases: &[(&[u8], &str)] = &[
            (br#"{"dest":"lb","body":{}}"#, "the envelope has no \"src\""),
            (
                br#"{"src":1,"dest":"lb","body":{}}"#,
                "\"src\" must be a string, found a number",
            ),
            (
                br#"{"src":"c","dest":null,"body":{}}"#,
                "\"dest\" must be a string, found null",
            ),
            (
                br#"{"src":"c","dest":"lb"}"#,
                "the envelope has no \"body\"",
            ),
            (
                br#"{"src":"c","dest":"lb","body":[1]}"#,
                "\"body\" must be an object, found an array",
            ),
            (
                br#"{"src":"c","src":"d","dest":"lb","body":{}}"#,
                "duplicate field `src`",
            ),
            (
                b"{\"src\":\"\xff\",\"dest\":\"lb\",\"body\":{}}",
                "not valid UTF-8: byte 0xFF at line 1, column 9",
            ),
            (
                br#"{"src":"\ud800","dest":"lb","body":{}}"#,
                "not a message: \"src\" contains \\ud800, an unpaired surrogate escape",
            ),
        ];
        for (input, expected) in cases {
            let err = read_envelope(input).expect_err("not an envelope");
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_named_with_its_place() {
        let err = read_envelope(b"{\"src\":\"c\",\n\"dest\":\"l\xffb\",\"body\":{}}").unwrap_err();
        assert_eq!(
            err,
            "not valid UTF-8: byte 0xFF at line 2, column 10 of this message"
        );
    }

    #[test]
    fn escaped_addresses_are_unescaped() {
        let (a, _) = read_envelope(br#"{"src":"c\u0031","dest":"l\"b","body":{}}"#).unwrap();
        assert_eq!((&*a.src, &*a.dest), ("c1", "l\"b"));
    }

    #[test]
    fn a_repeated_body_field_is_refused_but_a_clear_msg_id_is_kept() {
        let raw: &RawValue =
            serde_json::from_str(r#"{"type":"init","msg_id":4,"type":"stats"}"#).expect("JSON");
        let Err((id, e)) = read_body(raw) else {
            panic!("a repeated field is refused")
        };
        assert_eq!(id, Some(MsgId::Unsigned(4)));
        assert_eq!(e.code, ErrorCode::MalformedRequest);
        assert_eq!(
            e.text,
            "the body could not be read: duplicate field `type`; each field may appear only once"
        );
        let raw: &RawValue =
            serde_json::from_str(r#"{"type":"init","msg_id":4,"msg_id":5}"#).expect("JSON");
        assert!(matches!(read_body(raw), Err((None, _))));
    }

    #[test]
    fn one_pass_declines_what_it_cannot_read_whole() {
        let ok = br#"{"src":"c","dest":"lb","body":{"type":"stats"}} {"x":1}"#;
        let (a, f, len) = read_one_pass(ok, 1000).expect("a message");
        assert_eq!((&*a.src, &*a.dest, len), ("c", "lb", 47));
        assert!(f.kind.is_some());
        for bad in [
            &br#"{"src":"c","dest":"lb","body":{"type":"stats""#[..],
            br#"{"src":"c","dest":"lb","body":{"type":7}}"#,
            br#"{"src":"c","dest":"lb","body":{"type":"stats","ok":null}}"#,
            br#"{"src":"c","dest":"lb"}"#,
            br#"{"src":"c","src":"c","dest":"lb","body":{}}"#,
            b"{\"src\":\"c\xff\",\"dest\":\"lb\",\"body\":{}}",
        ] {
            assert!(read_one_pass(bad, 1000).is_none(), "{bad:?}");
        }
        assert!(read_one_pass(ok, 46).is_none(), "over the size limit");
    }
}
