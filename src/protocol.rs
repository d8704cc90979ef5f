//! The protocol: messages as typed values, parsed from JSON and written back.
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
//! ignored.
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
//! count (or only the changed ones: see `counts` under `init`). Counts are whole numbers from 0 to 2⁶⁴ − 1 in both directions.
//!
//! A backend is *eligible* for a new connection when it is healthy, its
//! weight is above 0, and its count is below its `max_connections` (and
//! below 2⁶⁴ − 1, so that counts never wrap).
//!
//! ## `init`
//!
//! ```json
//! {"type":"init","msg_id":1,"backends":["api-1",{"name":"api-2","weight":4,"max_connections":100}],"algorithm":"least-connections","tie_break":"lowest-index","seed":42}
//! ```
//!
//! - `backends` (optional array): the new pool, in this order, each backend
//!   healthy with 0 connections. An element is a name (a non-empty string)
//!   or an object with `name` (required), `weight` (a whole number, default
//!   1; 0 drains the backend: it keeps its connections and gets no new
//!   ones) and `max_connections` (a whole number, or `null` for no limit,
//!   the default). Other keys are refused. Absent: the pool is empty.
//! - `algorithm` (optional string), the default for requests:
//!   `least-connections` (the default; `weighted-least-connections` is
//!   another name for it), `round-robin`, `random`, `power-of-two-choices`.
//! - `tie_break` (optional string), among backends with equal best score
//!   under least-connections: `lowest-index` (the default), `round-robin`,
//!   `random`.
//! - `seed` (optional integer; negative seeds mean the same 64 bits
//!   unsigned): seeds every random choice. Without it a fixed default seed
//!   is used, so the same input always gives the same output.
//! - `counts` (optional string): `all` (the default) or `changed`. With
//!   `changed`, the `active_connections` of every later reply lists only
//!   the backends whose count that message changed (set by a snapshot to a
//!   new value, appended, picked, completed, or added), in pool order; a
//!   pool of 10⁵ backends otherwise makes every reply 2 MB.
//! - `node_id` (optional string), `node_ids` (optional array of strings): the
//!   standard Maelstrom fields. `node_id` becomes the `src` of later replies.
//!
//! It replaces the pool, all counts, statistics and algorithm state. Reply:
//! `{"type":"init_ok","in_reply_to":1}`.
//!
//! ## `http_request`
//!
//! ```json
//! {"type":"http_request","msg_id":2,"method":"GET","path":"/api/data","active_connections":{"api-1":5,"api-2":2,"api-3":8}}
//! ```
//!
//! - `method`, `path` (optional strings): accepted and not used.
//! - `active_connections` (optional object of backend name to count): a
//!   snapshot, applied first. Each listed backend's count is set to the
//!   given value; a name the pool lacks is appended (weight 1, no limit), in
//!   the snapshot's own key order; backends not listed keep their counts.
//!   Without an `init`, the snapshot defines the pool.
//! - `algorithm` (optional string): as in `init`, for this request only.
//! - `explain` (optional boolean, default false): add an `explain` object.
//!
//! Then one eligible backend is chosen and its count grows by one at once:
//!
//! - `least-connections`: the lowest active ÷ weight, compared exactly by
//!   cross-multiplication; ties by the `tie_break`: the first in pool order
//!   (`lowest-index`); the first whose position comes after the previous
//!   pick's, by any algorithm, wrapping around (`round-robin`); or one at
//!   random (`random`).
//! - `round-robin`: NGINX's smooth weighted round-robin. Each pick adds every
//!   eligible backend's weight to its running weight, takes the highest
//!   (first in pool order on ties) and subtracts the eligible backends' total
//!   weight from it. Running weights start at 0 and survive pool changes.
//! - `random`: an eligible backend at random, in proportion to weight.
//! - `power-of-two-choices`: two distinct eligible backends at random; the
//!   lower active ÷ weight wins, the earlier in pool order on a tie. With one
//!   eligible backend, that one.
//!
//! Reply:
//!
//! ```json
//! {"type":"http_response","in_reply_to":2,"status":200,"backend":"api-2","active_connections":{"api-1":5,"api-2":3,"api-3":8}}
//! ```
//!
//! With no eligible backend, `status` is 503, `error` says why, and there is
//! no `backend`. For an empty pool the text is exactly
//! `no backend available`; otherwise it names the reasons, as in
//! `no backend available: all 2 backends are down` or
//! `no backend available: 1 down, 1 drained (weight 0), 1 full (at their connection limit)`.
//!
//! ```json
//! {"type":"http_response","in_reply_to":2,"status":503,"error":"no backend available","active_connections":{}}
//! ```
//!
//! With `"explain":true`, the reply (200 or 503) also carries
//!
//! ```json
//! "explain":{"algorithm":"least-connections",
//!            "candidates":[{"backend":"a","active":2,"weight":2,"eligible":true,"score":1.0},
//!                          {"backend":"b","active":1,"weight":1,"eligible":true,"score":1.0},
//!                          {"backend":"c","active":0,"weight":1,"eligible":false,"reason":"down"}],
//!            "tie":{"tied":["a","b"],"broken_by":"lowest-index"}}
//! ```
//!
//! - `candidates`: every backend, in pool order, as it stood before the
//!   pick: `active`, `weight`, `eligible`, and `reason` (`down`, `drained` or
//!   `full`) when not eligible. Eligible backends have a `score` where the
//!   algorithm compares one: active ÷ weight for least-connections and
//!   power-of-two-choices (lower wins; shown as a decimal, compared
//!   exactly), the running weight after this pick's increase for
//!   round-robin (higher wins); none for random.
//! - `tie`: `null`, or the backends that shared the best score (`tied`, in
//!   pool order) and the rule that chose among them (`broken_by`); for the
//!   `round-robin` rule also `after`, the backend the search started after:
//!   the previous pick's (or, if that one was removed since, the one before
//!   its place), `null` before the first pick.
//! - `sampled` (power-of-two-choices only): the two backends drawn, in pool
//!   order.
//!
//! ## `request_complete`
//!
//! ```json
//! {"type":"request_complete","msg_id":7,"backend":"api-2","ok":false,"duration_ms":120.5}
//! ```
//!
//! A request on `backend` (required string) has finished: its count drops
//! by one. `ok` (optional boolean, default true) false counts the request as
//! failed; `duration_ms` (optional number, 0 or more) joins the backend's
//! mean duration. Reply:
//!
//! ```json
//! {"type":"request_complete_ok","in_reply_to":7,"backend":"api-2","active_connections":{"api-1":5,"api-2":2,"api-3":8}}
//! ```
//!
//! ## `add_backend`, `remove_backend`, `set_backend`
//!
//! ```json
//! {"type":"add_backend","msg_id":8,"backend":"api-4","weight":2,"max_connections":50}
//! {"type":"remove_backend","msg_id":9,"backend":"api-4"}
//! {"type":"set_backend","msg_id":10,"backend":"api-1","healthy":false,"weight":3,"max_connections":10}
//! ```
//!
//! `add_backend` appends a healthy backend with 0 connections (`weight` and
//! `max_connections` as in `init`). `remove_backend` removes a backend and
//! its counts at once; later completions for it get error 20.
//! `set_backend` changes any of `healthy` (boolean), `weight` and
//! `max_connections` (`null` removes the limit); fields left out keep their
//! values. Replies `add_backend_ok`, `remove_backend_ok`, `set_backend_ok`
//! carry `backend` and `active_connections`:
//!
//! ```json
//! {"type":"add_backend_ok","in_reply_to":8,"backend":"api-4","active_connections":{"api-1":5,"api-2":2,"api-3":8,"api-4":0}}
//! ```
//!
//! ## `stats`
//!
//! `{"type":"stats","msg_id":11}` is answered with the pool's settings and
//! what has happened since `init`:
//!
//! ```json
//! {"type":"stats_ok","in_reply_to":11,"algorithm":"least-connections","tie_break":"lowest-index","rejected":1,
//!  "backends":[{"name":"api-1","active":1,"weight":1,"healthy":true,"max_connections":null,
//!               "requests":3,"completed":2,"failed":1,"mean_duration_ms":20.25}]}
//! ```
//!
//! `rejected` counts requests answered 503. Per backend, in pool order:
//! `requests` counts picks, `completed` every accepted completion (failed
//! ones included), `failed` those with `"ok":false`; `max_connections` is
//! `null` when unset (a limit of 2⁶⁴ − 1 is the same as none, and shows as
//! `null` too), and `mean_duration_ms` when no duration was reported.
//!
//! ## `error`
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
//! | 12   | malformed-request   | a field missing or of the wrong type; a count, weight or limit negative, fractional, not a number or above 2⁶⁴ − 1; an empty or repeated backend name; an unknown key in a backend object; a negative `duration_ms`; a `msg_id` that is not an integer (the reply then has no `in_reply_to`) |
//! | 20   | key-does-not-exist  | `request_complete`, `remove_backend` or `set_backend` for a backend not in the pool |
//! | 21   | key-already-exists  | `add_backend` for a backend already in the pool |
//! | 22   | precondition-failed | `request_complete` for a backend with 0 connections |
//!
//! `text` says which field was wrong and how.
//!
//! ## Input that cannot be answered
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
//! Ordinary `http_request` and `request_complete` messages are read in one
//! strict pass ([`parse_fast_prefix`]), straight from the input buffer as
//! the framer meets them. Everything else, and anything unusual or wrong,
//! takes the precise path, which gives the same result for valid messages
//! and an exact error otherwise.
//!
//! The precise path has two steps. [`parse_envelope`] checks the envelope;
//! input that fails it cannot be answered. [`parse_body`] then turns the
//! body into a [`Request`], or into a [`ProtocolError`] that is answered
//! with an `error` reply. Fields are first taken as raw JSON text, without
//! copying, and each is then checked on its own, so that every error names
//! the field and says what was wrong with it. Replies are serialized
//! straight from the engine's state, without an intermediate JSON value.

use crate::engine::{
    Algorithm, Backend, BackendChange, BackendSpec, Candidate, Explanation, Policy, Pool, Score,
    Tie, TieBreak, DEFAULT_SEED, MAX_COUNT,
};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
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

    fn malformed(text: impl Into<String>) -> Self {
        ProtocolError::new(ErrorCode::MalformedRequest, text)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code as u16, self.text)
    }
}

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

/// A string that borrows from the input unless it had escapes to undo.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// An object's members in their order, values left as raw JSON.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Text(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// An array's elements, left as raw JSON.
struct Elements<'a>(Vec<&'a RawValue>);

impl<'de> Deserialize<'de> for Elements<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Elements<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut elements = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(element) = seq.next_element()? {
                    elements.push(element);
                }
                Ok(Elements(elements))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Takes a field present with any value, `null` included, so that `null` is
/// reported as a wrong type rather than mistaken for a missing field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// What kind of JSON value a raw value is, for error texts.
fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

// ---------------------------------------------------------------------------
// The envelope

/// A message's envelope. The body is kept raw until its type is known.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub src: Cow<'a, str>,
    pub dest: Cow<'a, str>,
    pub body: &'a RawValue,
}

#[derive(serde::Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    src: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    dest: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
}

/// Parses a message's envelope. The error says why the input is not an
/// envelope, in words for a diagnostic; such input cannot be answered.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope<'_>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| describe_utf8_error(bytes, &e))?;
    let raw: RawEnvelope = serde_json::from_str(text).map_err(|e| describe_json_error(&e))?;
    let src = address_field("src", raw.src)?;
    let dest = address_field("dest", raw.dest)?;
    let body = match raw.body {
        Some(body) if body.get().starts_with('{') => body,
        Some(body) => {
            return Err(format!(
                "not a message: \"body\" must be an object, found {}",
                kind_of(body)
            ))
        }
        None => return Err("not a message: the envelope has no \"body\"".into()),
    };
    Ok(Envelope { src, dest, body })
}

/// An envelope's `src` or `dest`, or why it is not an address.
fn address_field<'a>(field: &str, raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, String> {
    let raw = raw.ok_or_else(|| format!("not a message: the envelope has no \"{field}\""))?;
    string_field(field, raw).map_err(|e| format!("not a message: {}", e.text))
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

/// A piece of input quoted in an error text, cut short if it is long.
fn quoted(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
        None => text.to_owned(),
    }
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

// ---------------------------------------------------------------------------
// The one-pass path

/// A whole message, read in one pass.
pub struct Message<'a> {
    pub src: Cow<'a, str>,
    pub dest: Cow<'a, str>,
    pub msg_id: Option<MsgId>,
    pub request: Request<'a>,
}

/// Reads an ordinary, valid `http_request` or `request_complete` at the
/// start of `bytes` (more may follow), of at most `max_len` bytes, in a
/// single strict pass, and returns it with its length. Anything else
/// (another type, a wrong type, a `null`, an unknown algorithm, a repeated
/// field, invalid UTF-8) gives `None`, and the message goes through
/// [`parse_envelope`] and [`parse_body`], which give the same result for
/// valid messages and a precise error for the rest.
pub fn parse_fast_prefix(bytes: &[u8], max_len: usize) -> Option<(Message<'_>, usize)> {
    // The usual message is ASCII and ends on its line: check the line once
    // and read it as text, which spares a UTF-8 check for every string.
    let line = &bytes[..memchr::memchr(b'\n', bytes).unwrap_or(bytes.len())];
    let (envelope, len) = if line.is_ascii() {
        let text = std::str::from_utf8(line).ok()?;
        let mut messages = serde_json::Deserializer::from_str(text).into_iter::<FastEnvelope>();
        (messages.next()?.ok()?, messages.byte_offset())
    } else {
        let mut messages = serde_json::Deserializer::from_slice(bytes).into_iter::<FastEnvelope>();
        let envelope = messages.next()?.ok()?;
        // Strings the pass skipped were not checked: the whole must be UTF-8.
        let len = messages.byte_offset();
        std::str::from_utf8(&bytes[..len]).ok()?;
        (envelope, len)
    };
    if len > max_len {
        return None;
    }
    let body = envelope.body;
    let request = match &*body.kind.0 {
        "http_request" => {
            let algorithm = match body.algorithm {
                Some(Text(name)) => Some(Algorithm::from_name(&name)?),
                None => None,
            };
            Request::HttpRequest(HttpRequest {
                snapshot: body.active_connections.map(|s| s.0),
                algorithm,
                explain: body.explain.unwrap_or(false),
            })
        }
        "request_complete" => Request::RequestComplete(RequestComplete {
            backend: body.backend?.0,
            ok: body.ok.unwrap_or(true),
            duration_ms: match body.duration_ms {
                Some(ms) if ms >= 0.0 && ms.is_finite() => Some(ms),
                Some(_) => return None,
                None => None,
            },
        }),
        _ => return None,
    };
    let message = Message {
        src: envelope.src.0,
        dest: envelope.dest.0,
        msg_id: body.msg_id,
        request,
    };
    Some((message, len))
}

#[derive(serde::Deserialize)]
struct FastEnvelope<'a> {
    #[serde(borrow)]
    src: Text<'a>,
    #[serde(borrow)]
    dest: Text<'a>,
    #[serde(borrow)]
    body: FastBody<'a>,
}

/// Every field [`RawBody`] knows is named here too, so that a repeated one
/// fails this pass as it fails that one; those fields are never read.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct FastBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(default, deserialize_with = "strict")]
    msg_id: Option<MsgId>,
    #[serde(default, deserialize_with = "strict", borrow)]
    active_connections: Option<Snapshot<'a>>,
    #[serde(default, deserialize_with = "strict", borrow)]
    algorithm: Option<Text<'a>>,
    #[serde(default, deserialize_with = "strict")]
    explain: Option<bool>,
    #[serde(default, deserialize_with = "strict", borrow)]
    backend: Option<Text<'a>>,
    #[serde(default, deserialize_with = "strict")]
    ok: Option<bool>,
    #[serde(default, deserialize_with = "strict")]
    duration_ms: Option<f64>,
    #[serde(default, deserialize_with = "strict", borrow)]
    method: Option<Text<'a>>,
    #[serde(default, deserialize_with = "strict", borrow)]
    path: Option<Text<'a>>,
    #[serde(default)]
    node_id: Option<de::IgnoredAny>,
    #[serde(default)]
    node_ids: Option<de::IgnoredAny>,
    #[serde(default)]
    backends: Option<de::IgnoredAny>,
    #[serde(default)]
    tie_break: Option<de::IgnoredAny>,
    #[serde(default)]
    seed: Option<de::IgnoredAny>,
    #[serde(default)]
    counts: Option<de::IgnoredAny>,
    #[serde(default)]
    weight: Option<de::IgnoredAny>,
    #[serde(default)]
    max_connections: Option<de::IgnoredAny>,
    #[serde(default)]
    healthy: Option<de::IgnoredAny>,
}

/// A field that is present must have its type: `null` is not "absent".
fn strict<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl<'de> Deserialize<'de> for MsgId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MsgId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_u64<E>(self, v: u64) -> Result<MsgId, E> {
                Ok(MsgId::Unsigned(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<MsgId, E> {
                Ok(MsgId::from(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `active_connections` as whole numbers, in the snapshot's order.
struct Snapshot<'a>(Vec<(Cow<'a, str>, u64)>);

impl<'de: 'a, 'a> Deserialize<'de> for Snapshot<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Snapshot<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of counts")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Text(name)) = map.next_key()? {
                    entries.push((name, map.next_value::<u64>()?));
                }
                Ok(Snapshot(entries))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------
// Bodies

/// A request the node understands.
#[derive(Debug)]
pub enum Request<'a> {
    Init(Init<'a>),
    HttpRequest(HttpRequest<'a>),
    RequestComplete(RequestComplete<'a>),
    AddBackend(AddBackend<'a>),
    RemoveBackend { backend: Cow<'a, str> },
    SetBackend(SetBackend<'a>),
    Stats,
}

/// A backend as `init` or `add_backend` describes it.
#[derive(Debug, PartialEq, Eq)]
pub struct BackendConfig<'a> {
    pub name: Cow<'a, str>,
    pub weight: u64,
    pub max_connections: Option<u64>,
}

impl BackendConfig<'_> {
    /// The engine's view of this backend.
    pub fn spec(&self) -> BackendSpec<'_> {
        BackendSpec {
            name: &self.name,
            weight: self.weight,
            max_connections: self.max_connections,
        }
    }
}

/// `init`: replaces the pool.
#[derive(Debug)]
pub struct Init<'a> {
    pub node_id: Option<Cow<'a, str>>,
    /// The `backends` array, read element by element by
    /// [`for_each_backend`](Init::for_each_backend), so that a list of
    /// millions is never copied.
    backends: Option<&'a RawValue>,
    pub policy: Policy,
    pub counts: CountsMode,
}

impl<'a> Init<'a> {
    /// How many backends the list has.
    pub fn backend_count(&self) -> usize {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
                let mut n = 0;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(n)
            }
        }
        self.backends
            .and_then(|raw| {
                serde_json::Deserializer::from_str(raw.get())
                    .deserialize_seq(Count)
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Reads the backends in order, handing each to `f`; stops at the first
    /// error, of the list or of `f`.
    pub fn for_each_backend(
        &self,
        mut f: impl FnMut(BackendConfig<'a>) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let Some(list) = self.backends else {
            return Ok(());
        };
        for_each_element(list, |i, element| f(parse_backend_config(i, element)?)).map_err(|e| {
            e.unwrap_or_else(|| {
                ProtocolError::malformed(format!(
                    "\"backends\" must be an array of backend names or objects, found {}",
                    kind_of(list)
                ))
            })
        })
    }
}

/// Calls `f` on each element of a JSON array, in order. The error is `f`'s,
/// or `None` when `raw` is not an array.
fn for_each_element<'a>(
    raw: &'a RawValue,
    f: impl FnMut(usize, &'a RawValue) -> Result<(), ProtocolError>,
) -> Result<(), Option<ProtocolError>> {
    struct Each<F> {
        f: F,
        error: Option<ProtocolError>,
    }
    impl<'de, F> Visitor<'de> for &mut Each<F>
    where
        F: FnMut(usize, &'de RawValue) -> Result<(), ProtocolError>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while let Some(element) = seq.next_element::<&RawValue>()? {
                if let Err(e) = (self.f)(i, element) {
                    self.error = Some(e);
                    return Err(de::Error::custom("stopped"));
                }
                i += 1;
            }
            Ok(())
        }
    }
    let mut each = Each { f, error: None };
    let result = serde_json::Deserializer::from_str(raw.get()).deserialize_seq(&mut each);
    match (result, each.error) {
        (Ok(()), _) => Ok(()),
        (Err(_), error) => Err(error),
    }
}

/// Which backends a reply's `active_connections` lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CountsMode {
    /// Every backend of the pool.
    #[default]
    All,
    /// Only the backends whose count the message changed.
    Changed,
}

impl CountsMode {
    pub const NAMES: &'static [(&'static str, CountsMode)] =
        &[("all", CountsMode::All), ("changed", CountsMode::Changed)];
}

/// `http_request`: pick a backend, after applying the snapshot if any.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    pub snapshot: Option<Vec<(Cow<'a, str>, u64)>>,
    pub algorithm: Option<Algorithm>,
    pub explain: bool,
}

/// `request_complete`: a request on `backend` has finished.
#[derive(Debug, PartialEq)]
pub struct RequestComplete<'a> {
    pub backend: Cow<'a, str>,
    pub ok: bool,
    pub duration_ms: Option<f64>,
}

/// `add_backend`: append a backend to the pool.
#[derive(Debug, PartialEq, Eq)]
pub struct AddBackend<'a>(pub BackendConfig<'a>);

/// `set_backend`: change a backend's health, weight or limit.
#[derive(Debug, PartialEq, Eq)]
pub struct SetBackend<'a> {
    pub backend: Cow<'a, str>,
    pub change: BackendChange,
}

/// The message types this node answers, for error texts.
pub const MESSAGE_TYPES: &[&str] = &[
    "init",
    "http_request",
    "request_complete",
    "add_backend",
    "remove_backend",
    "set_backend",
    "stats",
];

#[derive(serde::Deserialize)]
struct RawBody<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    msg_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    node_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    node_ids: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    backends: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    algorithm: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    tie_break: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    seed: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    counts: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    path: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    active_connections: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    explain: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    backend: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    ok: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    duration_ms: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    weight: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_connections: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    healthy: Option<&'a RawValue>,
}

/// A parsed body: its `msg_id` (when it had a valid one, so that even an
/// error can say what it answers) and the request or why it was refused.
pub struct Body<'a> {
    pub msg_id: Option<MsgId>,
    pub request: Result<Request<'a>, ProtocolError>,
}

/// Parses a message body (already known to be a JSON object).
pub fn parse_body(body: &RawValue) -> Body<'_> {
    let raw: RawBody = match serde_json::from_str(body.get()) {
        Ok(raw) => raw,
        Err(e) => {
            // Only a repeated field gets here; the msg_id may still be clear.
            let text = describe_json_error(&e);
            let text = text.trim_start_matches("not a message: ");
            return Body {
                msg_id: unique_msg_id(body),
                request: Err(ProtocolError::malformed(format!(
                    "the body could not be read: {text}; each field may appear only once"
                ))),
            };
        }
    };
    let (msg_id, id_error) = match raw.msg_id.map(parse_msg_id) {
        None => (None, None),
        Some(Ok(id)) => (Some(id), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let request = match id_error {
        Some(e) => Err(e),
        None => parse_request(&raw),
    };
    Body { msg_id, request }
}

/// The body's `msg_id` if it appears exactly once and is valid.
fn unique_msg_id(body: &RawValue) -> Option<MsgId> {
    let Members(members) = serde_json::from_str(body.get()).ok()?;
    let mut ids = members.iter().filter(|(key, _)| key == "msg_id");
    match (ids.next(), ids.next()) {
        (Some((_, raw)), None) => parse_msg_id(raw).ok(),
        _ => None,
    }
}

fn parse_msg_id(raw: &RawValue) -> Result<MsgId, ProtocolError> {
    let text = raw.get();
    let parsed = if text.starts_with('-') {
        text.parse::<i64>().ok().map(MsgId::from)
    } else {
        text.parse::<u64>().ok().map(MsgId::Unsigned)
    };
    parsed.ok_or_else(|| {
        let found = match kind_of(raw) {
            "a number" => quoted(text),
            kind => kind.to_owned(),
        };
        ProtocolError::malformed(format!(
            "\"msg_id\" must be an integer (from -2^63 to 2^64 - 1), found {found}"
        ))
    })
}

fn parse_request<'a>(raw: &RawBody<'a>) -> Result<Request<'a>, ProtocolError> {
    let kind =
        match raw.kind {
            None => return Err(ProtocolError::malformed(
                "the body has no \"type\"; every message body needs one, such as \"http_request\"",
            )),
            Some(kind) => string_field("type", kind)?,
        };
    match &*kind {
        "init" => parse_init(raw).map(Request::Init),
        "http_request" => parse_http_request(raw).map(Request::HttpRequest),
        "request_complete" => parse_request_complete(raw).map(Request::RequestComplete),
        "add_backend" => Ok(Request::AddBackend(AddBackend(BackendConfig {
            name: backend_field(raw, "add_backend")?,
            weight: optional(raw.weight, |r| whole_number("weight", r))?.unwrap_or(1),
            max_connections: optional(raw.max_connections, limit_field)?.flatten(),
        }))),
        "remove_backend" => Ok(Request::RemoveBackend {
            backend: backend_field(raw, "remove_backend")?,
        }),
        "set_backend" => Ok(Request::SetBackend(SetBackend {
            backend: backend_field(raw, "set_backend")?,
            change: BackendChange {
                healthy: optional(raw.healthy, |r| boolean_field("healthy", r))?,
                weight: optional(raw.weight, |r| whole_number("weight", r))?,
                max_connections: optional(raw.max_connections, limit_field)?,
            },
        })),
        "stats" => Ok(Request::Stats),
        other => Err(ProtocolError::new(
            ErrorCode::NotSupported,
            format!(
                "unknown message type {other:?}; this node answers {}",
                MESSAGE_TYPES.join(", ")
            ),
        )),
    }
}

/// Parses a field if it is present.
fn optional<'a, T>(
    raw: Option<&'a RawValue>,
    parse: impl FnOnce(&'a RawValue) -> Result<T, ProtocolError>,
) -> Result<Option<T>, ProtocolError> {
    raw.map(parse).transpose()
}

fn string_field<'a>(field: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, ProtocolError> {
    serde_json::from_str::<Text>(raw.get())
        .map(|Text(s)| s)
        .map_err(|_| {
            ProtocolError::malformed(format!(
                "\"{field}\" must be a string, found {}",
                kind_of(raw)
            ))
        })
}

fn boolean_field(field: &str, raw: &RawValue) -> Result<bool, ProtocolError> {
    match raw.get() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ProtocolError::malformed(format!(
            "\"{field}\" must be true or false, found {}",
            kind_of(raw)
        ))),
    }
}

/// The `backend` a pool-change message names.
fn backend_field<'a>(raw: &RawBody<'a>, kind: &str) -> Result<Cow<'a, str>, ProtocolError> {
    let Some(backend) = raw.backend else {
        return Err(ProtocolError::malformed(format!(
            "{kind} needs \"backend\": the name of a backend"
        )));
    };
    string_field("backend", backend)
}

/// A whole number from 0 to 2^64 - 1 (a count, a weight, a limit).
fn whole_number(field: &str, raw: &RawValue) -> Result<u64, ProtocolError> {
    parse_count(raw).map_err(|why| {
        ProtocolError::malformed(format!(
            "{field} must be a whole number from 0 to {MAX_COUNT}, {why}"
        ))
    })
}

/// `max_connections`: a whole number, or `null` for no limit.
fn limit_field(raw: &RawValue) -> Result<Option<u64>, ProtocolError> {
    if raw.get() == "null" {
        return Ok(None);
    }
    whole_number("max_connections", raw).map(Some)
}

/// Looks up a name in a table of names, or refuses it with error 10.
fn named<T: Copy>(
    field: &str,
    raw: Option<&RawValue>,
    names: &[(&str, T)],
) -> Result<Option<T>, ProtocolError> {
    let Some(raw) = raw else { return Ok(None) };
    let name = string_field(field, raw)?;
    match names.iter().find(|(n, _)| *n == name) {
        Some(&(_, value)) => Ok(Some(value)),
        None => {
            let known: Vec<&str> = names.iter().map(|&(n, _)| n).collect();
            Err(ProtocolError::new(
                ErrorCode::NotSupported,
                format!("unknown {field} {name:?}; supported: {}", known.join(", ")),
            ))
        }
    }
}

fn parse_init<'a>(raw: &RawBody<'a>) -> Result<Init<'a>, ProtocolError> {
    let node_id = optional(raw.node_id, |r| string_field("node_id", r))?;
    if let Some(ids) = raw.node_ids {
        let all_strings = serde_json::from_str::<Elements>(ids.get())
            .map(|Elements(e)| e.iter().all(|v| v.get().starts_with('"')))
            .unwrap_or(false);
        if !all_strings {
            return Err(ProtocolError::malformed(
                "\"node_ids\" must be an array of strings",
            ));
        }
    }
    if let Some(list) = raw.backends {
        if !list.get().starts_with('[') {
            return Err(ProtocolError::malformed(format!(
                "\"backends\" must be an array of backend names or objects, found {}",
                kind_of(list)
            )));
        }
    }
    let seed = match raw.seed {
        None => DEFAULT_SEED,
        Some(seed) => parse_seed(seed)?,
    };
    Ok(Init {
        node_id,
        backends: raw.backends,
        policy: Policy {
            algorithm: named("algorithm", raw.algorithm, Algorithm::NAMES)?.unwrap_or_default(),
            tie_break: named("tie_break", raw.tie_break, TieBreak::NAMES)?.unwrap_or_default(),
            seed,
        },
        counts: named("counts", raw.counts, CountsMode::NAMES)?.unwrap_or_default(),
    })
}

/// An integer seed; negative seeds stand for the same 64 bits unsigned.
fn parse_seed(raw: &RawValue) -> Result<u64, ProtocolError> {
    let text = raw.get();
    text.parse::<u64>()
        .ok()
        .or_else(|| text.parse::<i64>().ok().map(|n| n as u64))
        .ok_or_else(|| {
            ProtocolError::malformed(format!(
                "\"seed\" must be an integer (from -2^63 to 2^64 - 1), found {}",
                match kind_of(raw) {
                    "a number" => quoted(text),
                    kind => kind.to_owned(),
                }
            ))
        })
}

/// One element of `init`'s `backends`: a name, or
/// `{"name", "weight", "max_connections"}`.
fn parse_backend_config(i: usize, raw: &RawValue) -> Result<BackendConfig<'_>, ProtocolError> {
    if let Ok(Text(name)) = serde_json::from_str::<Text>(raw.get()) {
        return Ok(BackendConfig {
            name,
            weight: 1,
            max_connections: None,
        });
    }
    let Ok(Members(members)) = serde_json::from_str::<Members>(raw.get()) else {
        return Err(ProtocolError::malformed(format!(
            "backends[{i}] must be a backend name or an object {{\"name\", \"weight\", \"max_connections\"}}, found {}",
            kind_of(raw)
        )));
    };
    let mut name = None;
    let mut weight = 1;
    let mut max_connections = None;
    for (key, value) in members {
        match &*key {
            "name" => name = Some(string_field(&format!("backends[{i}].name"), value)?),
            "weight" => weight = whole_number(&format!("backends[{i}].weight"), value)?,
            "max_connections" => max_connections = limit_field(value).map_err(|e| {
                ProtocolError::malformed(e.text.replacen("max_connections", &format!("backends[{i}].max_connections"), 1))
            })?,
            other => {
                return Err(ProtocolError::malformed(format!(
                    "backends[{i}] has an unknown field {other:?}; a backend has \"name\", \"weight\" and \"max_connections\""
                )))
            }
        }
    }
    let name =
        name.ok_or_else(|| ProtocolError::malformed(format!("backends[{i}] needs a \"name\"")))?;
    Ok(BackendConfig {
        name,
        weight,
        max_connections,
    })
}

fn parse_http_request<'a>(raw: &RawBody<'a>) -> Result<HttpRequest<'a>, ProtocolError> {
    for (field, value) in [("method", raw.method), ("path", raw.path)] {
        if let Some(value) = value {
            string_field(field, value)?;
        }
    }
    Ok(HttpRequest {
        snapshot: optional(raw.active_connections, parse_snapshot)?,
        algorithm: named("algorithm", raw.algorithm, Algorithm::NAMES)?,
        explain: optional(raw.explain, |r| boolean_field("explain", r))?.unwrap_or(false),
    })
}

fn parse_snapshot(raw: &RawValue) -> Result<Vec<(Cow<'_, str>, u64)>, ProtocolError> {
    let Ok(Members(members)) = serde_json::from_str::<Members>(raw.get()) else {
        return Err(ProtocolError::malformed(format!(
            "\"active_connections\" must be an object mapping backend names to counts, found {}",
            kind_of(raw)
        )));
    };
    members
        .into_iter()
        .map(|(name, value)| {
            let count = whole_number(&format!("active_connections[{name:?}]"), value)?;
            Ok((name, count))
        })
        .collect()
}

/// Parses a whole number from 0 to 2^64 - 1, or says what was wrong.
fn parse_count(raw: &RawValue) -> Result<u64, String> {
    let text = raw.get();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    Err(match kind_of(raw) {
        "a number" if text.starts_with('-') => format!("but {} is negative", quoted(text)),
        "a number" if text.contains(['.', 'e', 'E']) => {
            format!("but {} is not a whole number", quoted(text))
        }
        "a number" => format!("but {} is too large", quoted(text)),
        kind => format!("found {kind}"),
    })
}

fn parse_request_complete<'a>(raw: &RawBody<'a>) -> Result<RequestComplete<'a>, ProtocolError> {
    let Some(backend) = raw.backend else {
        return Err(ProtocolError::malformed(
            "request_complete needs \"backend\": the name of the backend whose request finished",
        ));
    };
    let duration_ms = optional(raw.duration_ms, |r| {
        let value = serde_json::from_str::<f64>(r.get())
            .ok()
            .filter(|_| kind_of(r) == "a number");
        match value {
            Some(ms) if ms >= 0.0 && ms.is_finite() => Ok(ms),
            _ => Err(ProtocolError::malformed(format!(
                "\"duration_ms\" must be a number of milliseconds, 0 or more, found {}",
                if kind_of(r) == "a number" {
                    quoted(r.get())
                } else {
                    kind_of(r).to_owned()
                }
            ))),
        }
    })?;
    Ok(RequestComplete {
        backend: string_field("backend", backend)?,
        ok: optional(raw.ok, |r| boolean_field("ok", r))?.unwrap_or(true),
        duration_ms,
    })
}

// ---------------------------------------------------------------------------
// Replies

/// The body of a reply, minus `type` and `in_reply_to`.
pub enum Reply<'a> {
    InitOk,
    /// A backend was chosen (status 200).
    Routed {
        backend: &'a str,
        counts: Counts<'a>,
        explanation: Option<Explanation>,
    },
    /// No backend could be chosen (status 503).
    Unavailable {
        error: String,
        counts: Counts<'a>,
        explanation: Option<Explanation>,
    },
    /// `request_complete_ok`, `add_backend_ok` or `set_backend_ok`: the
    /// backend concerned and the counts.
    BackendOk {
        kind: &'static str,
        backend: &'a str,
        counts: Counts<'a>,
    },
    /// `remove_backend_ok`: the backend is no longer in the pool.
    Removed {
        backend: String,
        counts: Counts<'a>,
    },
    StatsOk {
        pool: &'a Pool,
    },
    Error(ProtocolError),
}

impl Reply<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Reply::InitOk => "init_ok",
            Reply::Routed { .. } | Reply::Unavailable { .. } => "http_response",
            Reply::BackendOk { kind, .. } => kind,
            Reply::Removed { .. } => "remove_backend_ok",
            Reply::StatsOk { .. } => "stats_ok",
            Reply::Error(_) => "error",
        }
    }
}

/// A whole reply message, ready to serialize.
pub struct Outgoing<'a> {
    pub src: &'a str,
    pub dest: &'a str,
    pub in_reply_to: Option<MsgId>,
    pub reply: Reply<'a>,
}

impl Outgoing<'_> {
    /// Appends the reply as one line of compact JSON: `src`, `dest`, then
    /// `body` with `type` first and `in_reply_to` next.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"src\":");
        write_str(out, self.src);
        out.extend_from_slice(b",\"dest\":");
        write_str(out, self.dest);
        out.extend_from_slice(b",\"body\":{\"type\":");
        write_str(out, self.reply.kind());
        if let Some(id) = &self.in_reply_to {
            out.extend_from_slice(b",\"in_reply_to\":");
            match *id {
                MsgId::Unsigned(n) => {
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes())
                }
                MsgId::Negative(n) => {
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes())
                }
            }
        }
        match &self.reply {
            Reply::InitOk => {}
            Reply::Routed {
                backend,
                counts,
                explanation,
            } => {
                out.extend_from_slice(b",\"status\":200,\"backend\":");
                write_str(out, backend);
                out.extend_from_slice(b",\"active_connections\":");
                counts.write(out);
                if let Some(e) = explanation {
                    key(out, "explain");
                    write_json(out, &ExplainOut(e, counts.pool));
                }
            }
            Reply::Unavailable {
                error,
                counts,
                explanation,
            } => {
                key(out, "status");
                out.extend_from_slice(b"503");
                key(out, "error");
                write_str(out, error);
                key(out, "active_connections");
                counts.write(out);
                if let Some(e) = explanation {
                    key(out, "explain");
                    write_json(out, &ExplainOut(e, counts.pool));
                }
            }
            Reply::BackendOk {
                backend, counts, ..
            } => {
                out.extend_from_slice(b",\"backend\":");
                write_str(out, backend);
                out.extend_from_slice(b",\"active_connections\":");
                counts.write(out);
            }
            Reply::Removed { backend, counts } => {
                key(out, "backend");
                write_str(out, backend);
                key(out, "active_connections");
                counts.write(out);
            }
            Reply::StatsOk { pool } => {
                let policy = pool.policy();
                key(out, "algorithm");
                write_str(out, policy.algorithm.name());
                key(out, "tie_break");
                write_str(out, policy.tie_break.name());
                key(out, "rejected");
                write_json(out, &pool.rejected());
                key(out, "backends");
                write_json(out, &StatsOut(pool));
            }
            Reply::Error(e) => {
                key(out, "code");
                write_json(out, &(e.code as u16));
                key(out, "text");
                write_str(out, &e.text);
            }
        }
        out.extend_from_slice(b"}}\n");
    }
}

/// Starts the next member of an object that already has one.
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The bytes a JSON string must escape: control characters, `"` and `\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Writes a JSON string, copying it straight when it needs no escapes.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)]) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        write_json(out, s);
    }
}

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing into a Vec cannot fail, and every value here serializes.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A reply's `active_connections`: every backend's count, or only those at
/// the given positions, in pool order.
#[derive(Clone, Copy)]
pub struct Counts<'a> {
    pub pool: &'a Pool,
    /// Sorted positions without repeats; `None` for every backend.
    pub only: Option<&'a [usize]>,
}

impl Counts<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        let mut entry = |out: &mut Vec<u8>, name: &str, backend: &Backend| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            write_str(out, name);
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(backend.active()).as_bytes());
        };
        match self.only {
            None => self.pool.iter().for_each(|(n, b)| entry(out, n, b)),
            Some(positions) => positions
                .iter()
                .filter_map(|&i| self.pool.get_index(i))
                .for_each(|(n, b)| entry(out, n, b)),
        }
        out.push(b'}');
    }
}

/// `stats_ok`'s `backends`: one object per backend, in pool order.
struct StatsOut<'a>(&'a Pool);

impl Serialize for StatsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (name, backend) in self.0.iter() {
            seq.serialize_element(&BackendStatsOut(name, backend))?;
        }
        seq.end()
    }
}

struct BackendStatsOut<'a>(&'a str, &'a Backend);

impl Serialize for BackendStatsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let BackendStatsOut(name, b) = *self;
        let stats = b.stats();
        let mut map = s.serialize_map(Some(9))?;
        map.serialize_entry("name", name)?;
        map.serialize_entry("active", &b.active())?;
        map.serialize_entry("weight", &b.weight())?;
        map.serialize_entry("healthy", &b.healthy())?;
        map.serialize_entry("max_connections", &b.max_connections())?;
        map.serialize_entry("requests", &stats.requests)?;
        map.serialize_entry("completed", &stats.completed)?;
        map.serialize_entry("failed", &stats.failed)?;
        map.serialize_entry("mean_duration_ms", &stats.mean_duration_ms())?;
        map.end()
    }
}

/// An explanation, with pool positions turned into names.
struct ExplainOut<'a>(&'a Explanation, &'a Pool);

impl ExplainOut<'_> {
    fn name(&self, index: usize) -> &str {
        self.1.get_index(index).map_or("", |(name, _)| name)
    }
}

impl Serialize for ExplainOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("algorithm", e.algorithm.name())?;
        map.serialize_entry("candidates", &CandidatesOut(self))?;
        if let Some([a, b]) = e.sampled {
            map.serialize_entry("sampled", &[self.name(a), self.name(b)])?;
        }
        match &e.tie {
            None => map.serialize_entry("tie", &())?,
            Some(tie) => map.serialize_entry("tie", &TieOut(self, tie))?,
        }
        map.end()
    }
}

struct CandidatesOut<'a, 'b>(&'b ExplainOut<'a>);

impl Serialize for CandidatesOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let candidates = &self.0 .0.candidates;
        let mut seq = s.serialize_seq(Some(candidates.len()))?;
        for c in candidates {
            seq.serialize_element(&CandidateOut(self.0.name(c.index), c))?;
        }
        seq.end()
    }
}

struct CandidateOut<'a>(&'a str, &'a Candidate);

impl Serialize for CandidateOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let CandidateOut(name, c) = *self;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("backend", name)?;
        map.serialize_entry("active", &c.active)?;
        map.serialize_entry("weight", &c.weight)?;
        map.serialize_entry("eligible", &c.ineligible.is_none())?;
        if let Some(reason) = c.ineligible {
            map.serialize_entry("reason", reason.name())?;
        }
        match c.score {
            // Shown as a decimal for reading; picks compare it exactly.
            Some(Score::Ratio { active, weight }) => {
                map.serialize_entry("score", &(active as f64 / weight as f64))?
            }
            Some(Score::CurrentWeight(w)) => map.serialize_entry("score", &w)?,
            None => {}
        }
        map.end()
    }
}

struct TieOut<'a, 'b>(&'b ExplainOut<'a>, &'b Tie);

impl Serialize for TieOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let TieOut(explain, tie) = *self;
        let mut map = s.serialize_map(None)?;
        let names: Vec<&str> = tie.tied.iter().map(|&i| explain.name(i)).collect();
        map.serialize_entry("tied", &names)?;
        map.serialize_entry("broken_by", tie.rule.name())?;
        if tie.rule == TieBreak::RoundRobin {
            map.serialize_entry("after", &tie.after.map(|i| explain.name(i)))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Body<'_> {
        let raw: &RawValue = serde_json::from_str(json).expect("test body is JSON");
        parse_body(raw)
    }

    /// The refusal of a body, including one found while reading an
    /// `init`'s backend list.
    fn error_of(json: &str) -> (ErrorCode, String) {
        let e = match body(json).request {
            Err(e) => e,
            Ok(Request::Init(init)) => init
                .for_each_backend(|_| Ok(()))
                .expect_err("should be refused"),
            Ok(other) => panic!("should be refused: {other:?}"),
        };
        (e.code, e.text)
    }

    #[test]
    fn envelope_needs_string_addresses_and_an_object_body() {
        assert!(parse_envelope(br#"{"src":"c","dest":"lb","body":{}}"#).is_ok());
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
        ];
        for (input, expected) in cases {
            let err = parse_envelope(input).expect_err("not an envelope");
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_named_with_its_place() {
        let err = parse_envelope(b"{\"src\":\"c\",\n\"dest\":\"l\xffb\",\"body\":{}}").unwrap_err();
        assert_eq!(
            err,
            "not valid UTF-8: byte 0xFF at line 2, column 10 of this message"
        );
    }

    #[test]
    fn long_values_are_quoted_short() {
        let digits = "9".repeat(10_000);
        let json = format!(r#"{{"type":"http_request","active_connections":{{"a":{digits}}}}}"#);
        let (_, text) = error_of(&json);
        assert!(
            text.ends_with(
                "but 9999999999999999999999999999999999999999… (10000 bytes) is too large"
            ),
            "{text}"
        );
    }

    #[test]
    fn escaped_addresses_are_unescaped() {
        let env = parse_envelope(br#"{"src":"c\u0031","dest":"l\"b","body":{}}"#).unwrap();
        assert_eq!((&*env.src, &*env.dest), ("c1", "l\"b"));
    }

    #[test]
    fn the_course_request_parses_with_its_snapshot_in_order() {
        let b = body(
            r#"{"type":"http_request","msg_id":2,"method":"GET","path":"/api/data","active_connections":{"api-3":8,"api-1":5,"api-2":2}}"#,
        );
        assert_eq!(b.msg_id, Some(MsgId::Unsigned(2)));
        let Ok(Request::HttpRequest(req)) = b.request else {
            panic!("not a request")
        };
        let snapshot: Vec<(&str, u64)> = req
            .snapshot
            .as_ref()
            .unwrap()
            .iter()
            .map(|(n, c)| (&**n, *c))
            .collect();
        assert_eq!(snapshot, [("api-3", 8), ("api-1", 5), ("api-2", 2)]);
        assert_eq!(req.algorithm, None);
    }

    #[test]
    fn init_takes_names_node_id_and_algorithm() {
        let b = body(
            r#"{"type":"init","msg_id":1,"node_id":"n1","node_ids":["n1"],"backends":["a","b"],"algorithm":"least-connections"}"#,
        );
        let Ok(Request::Init(init)) = b.request else {
            panic!("not an init")
        };
        assert_eq!(init.node_id.as_deref(), Some("n1"));
        let mut names = Vec::new();
        init.for_each_backend(|b| {
            names.push(b.name.into_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(init.backend_count(), 2);
        assert_eq!(init.policy, Policy::default());
        assert_eq!(init.counts, CountsMode::All);
    }

    #[test]
    fn field_errors_have_codes_and_say_what_was_wrong() {
        use ErrorCode::*;
        let cases: &[(&str, ErrorCode, &str)] = &[
            (r#"{"msg_id":1}"#, MalformedRequest, "has no \"type\""),
            (
                r#"{"type":7}"#,
                MalformedRequest,
                "\"type\" must be a string, found a number",
            ),
            (
                r#"{"type":"nope"}"#,
                NotSupported,
                "unknown message type \"nope\"",
            ),
            (
                r#"{"type":"init","algorithm":"fastest"}"#,
                NotSupported,
                "unknown algorithm \"fastest\"",
            ),
            (
                r#"{"type":"init","algorithm":3}"#,
                MalformedRequest,
                "\"algorithm\" must be a string",
            ),
            (
                r#"{"type":"init","backends":"a"}"#,
                MalformedRequest,
                "\"backends\" must be an array",
            ),
            (
                r#"{"type":"init","backends":["a",2]}"#,
                MalformedRequest,
                "backends[1] must be a backend name or an object",
            ),
            (
                r#"{"type":"init","node_id":5}"#,
                MalformedRequest,
                "\"node_id\" must be a string",
            ),
            (
                r#"{"type":"init","node_ids":[5]}"#,
                MalformedRequest,
                "\"node_ids\" must be an array of strings",
            ),
            (
                r#"{"type":"http_request","method":1}"#,
                MalformedRequest,
                "\"method\" must be a string",
            ),
            (
                r#"{"type":"http_request","active_connections":[]}"#,
                MalformedRequest,
                "must be an object mapping",
            ),
            (
                r#"{"type":"http_request","active_connections":{"a":-1}}"#,
                MalformedRequest,
                "but -1 is negative",
            ),
            (
                r#"{"type":"http_request","active_connections":{"a":1.5}}"#,
                MalformedRequest,
                "but 1.5 is not a whole number",
            ),
            (
                r#"{"type":"http_request","active_connections":{"a":"3"}}"#,
                MalformedRequest,
                "found a string",
            ),
            (
                r#"{"type":"http_request","active_connections":{"a":null}}"#,
                MalformedRequest,
                "found null",
            ),
            (
                r#"{"type":"http_request","active_connections":{"a":18446744073709551616}}"#,
                MalformedRequest,
                "is too large",
            ),
            (
                r#"{"type":"request_complete"}"#,
                MalformedRequest,
                "needs \"backend\"",
            ),
            (
                r#"{"type":"request_complete","backend":["a"]}"#,
                MalformedRequest,
                "\"backend\" must be a string, found an array",
            ),
            (
                r#"{"type":"init","msg_id":1.5}"#,
                MalformedRequest,
                "\"msg_id\" must be an integer",
            ),
            (
                r#"{"type":"init","msg_id":"1"}"#,
                MalformedRequest,
                "found a string",
            ),
            (r#"{"type":"init","backends":[{"weight":2}]}"#, MalformedRequest, "backends[0] needs a \"name\""),
            (r#"{"type":"init","backends":[{"name":"a","weight":-1}]}"#, MalformedRequest, "backends[0].weight must be a whole number from 0 to 18446744073709551615, but -1 is negative"),
            (r#"{"type":"init","backends":[{"name":"a","weight":1.5}]}"#, MalformedRequest, "but 1.5 is not a whole number"),
            (r#"{"type":"init","backends":[{"name":"a","weight":"2"}]}"#, MalformedRequest, "backends[0].weight must be a whole number"),
            (r#"{"type":"init","backends":[{"name":"a","max_connections":-3}]}"#, MalformedRequest, "backends[0].max_connections must be a whole number"),
            (r#"{"type":"init","backends":[{"name":"a","wieght":3}]}"#, MalformedRequest, "unknown field \"wieght\""),
            (r#"{"type":"init","backends":[{"name":7}]}"#, MalformedRequest, "\"backends[0].name\" must be a string"),
            (r#"{"type":"init","tie_break":"coin"}"#, NotSupported, "unknown tie_break \"coin\"; supported: lowest-index, round-robin, random"),
            (r#"{"type":"init","tie_break":1}"#, MalformedRequest, "\"tie_break\" must be a string"),
            (r#"{"type":"init","counts":"some"}"#, NotSupported, "unknown counts \"some\"; supported: all, changed"),
            (r#"{"type":"init","seed":1.5}"#, MalformedRequest, "\"seed\" must be an integer"),
            (r#"{"type":"init","seed":"7"}"#, MalformedRequest, "found a string"),
            (r#"{"type":"http_request","explain":"yes"}"#, MalformedRequest, "\"explain\" must be true or false"),
            (r#"{"type":"request_complete","backend":"a","ok":1}"#, MalformedRequest, "\"ok\" must be true or false"),
            (r#"{"type":"request_complete","backend":"a","duration_ms":-1}"#, MalformedRequest, "\"duration_ms\" must be a number of milliseconds, 0 or more, found -1"),
            (r#"{"type":"request_complete","backend":"a","duration_ms":"5"}"#, MalformedRequest, "found a string"),
            (r#"{"type":"add_backend"}"#, MalformedRequest, "add_backend needs \"backend\""),
            (r#"{"type":"add_backend","backend":"x","weight":-2}"#, MalformedRequest, "weight must be a whole number"),
            (r#"{"type":"remove_backend","backend":5}"#, MalformedRequest, "\"backend\" must be a string"),
            (r#"{"type":"set_backend","backend":"x","healthy":"no"}"#, MalformedRequest, "\"healthy\" must be true or false"),
            (r#"{"type":"set_backend","backend":"x","max_connections":"10"}"#, MalformedRequest, "max_connections must be a whole number"),
            (
                r#"{"type":"init","type":"init"}"#,
                MalformedRequest,
                "duplicate field `type`",
            ),
        ];
        for &(json, code, text) in cases {
            let (got_code, got_text) = error_of(json);
            assert_eq!(got_code, code, "{json}");
            assert!(
                got_text.contains(text),
                "{json}: {got_text:?} lacks {text:?}"
            );
        }
    }

    #[test]
    fn the_largest_count_and_extreme_msg_ids_are_accepted() {
        let b = body(
            r#"{"type":"http_request","msg_id":-9223372036854775808,"active_connections":{"a":18446744073709551615}}"#,
        );
        assert_eq!(b.msg_id, Some(MsgId::Negative(i64::MIN)));
        let Ok(Request::HttpRequest(req)) = b.request else {
            panic!("refused")
        };
        assert_eq!(req.snapshot.unwrap()[0].1, u64::MAX);
        assert_eq!(
            body(r#"{"type":"init","msg_id":18446744073709551615}"#).msg_id,
            Some(MsgId::Unsigned(u64::MAX))
        );
    }

    #[test]
    fn a_repeated_field_is_refused_but_a_clear_msg_id_is_kept() {
        let b = body(r#"{"type":"init","msg_id":4,"type":"stats"}"#);
        assert_eq!(b.msg_id, Some(MsgId::Unsigned(4)));
        let e = b.request.unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedRequest);
        assert!(e.text.contains("duplicate field `type`"), "{}", e.text);
        assert_eq!(
            body(r#"{"type":"init","msg_id":4,"msg_id":5}"#).msg_id,
            None
        );
    }

    #[test]
    fn both_parsers_read_msg_ids_alike() {
        // serde reads `-0` as a float, so the one-pass parser declines it.
        for (id, expected, one_pass) in [
            ("-0", MsgId::Unsigned(0), false),
            ("-7", MsgId::Negative(-7), true),
            ("7", MsgId::Unsigned(7), true),
        ] {
            let body_json = format!(r#"{{"type":"request_complete","msg_id":{id},"backend":"a"}}"#);
            assert_eq!(body(&body_json).msg_id, Some(expected), "precise, {id}");
            let message = format!(r#"{{"src":"c","dest":"lb","body":{body_json}}}"#);
            let fast = parse_fast_prefix(message.as_bytes(), message.len());
            assert_eq!(fast.is_some(), one_pass, "{id}");
            if let Some((fast, _)) = fast {
                assert_eq!(fast.msg_id, Some(expected), "one-pass, {id}");
            }
        }
    }

    #[test]
    fn a_bad_msg_id_is_reported_without_one() {
        let b = body(r#"{"type":"init","msg_id":"7"}"#);
        assert_eq!(b.msg_id, None);
        assert!(b.request.is_err());
    }

    #[test]
    fn replies_are_compact_with_counts_in_pool_order() {
        let mut pool = Pool::new();
        pool.apply_snapshot(&[("z", 2), ("a", 0)], &mut Vec::new())
            .unwrap();
        let mut out = Vec::new();
        Outgoing {
            src: "lb",
            dest: "c",
            in_reply_to: Some(MsgId::Unsigned(4)),
            reply: Reply::Routed {
                backend: "a",
                counts: Counts {
                    pool: &pool,
                    only: None,
                },
                explanation: None,
            },
        }
        .write_line(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"http_response\",\"in_reply_to\":4,\"status\":200,\"backend\":\"a\",\"active_connections\":{\"z\":2,\"a\":0}}}\n"
        );
    }
}
