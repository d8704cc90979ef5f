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
//! every backend of the pool, in pool order, mapped to its count.
//!
//! ## `init`
//!
//! ```json
//! {"type":"init","msg_id":1,"backends":["api-1","api-2","api-3"],"algorithm":"least-connections"}
//! ```
//!
//! - `backends` (optional array of non-empty strings, no repeats): the new
//!   pool, in this order, each backend with 0 connections. Absent: the pool
//!   is empty.
//! - `algorithm` (optional string): `least-connections`, the default.
//! - `node_id` (optional string), `node_ids` (optional array of strings): the
//!   standard Maelstrom fields. `node_id` becomes the `src` of later replies.
//!
//! It replaces the pool and all counts. Reply:
//! `{"type":"init_ok","in_reply_to":1}`.
//!
//! ## `http_request`
//!
//! ```json
//! {"type":"http_request","msg_id":2,"method":"GET","path":"/api/data","active_connections":{"api-1":5,"api-2":2,"api-3":8}}
//! ```
//!
//! - `method`, `path` (optional strings): accepted and not used.
//! - `active_connections` (optional object of backend name to a whole number
//!   from 0 to 2⁶⁴ − 1): a snapshot, applied first. Each listed backend's
//!   count is set to the given value; a name the pool lacks is appended to
//!   the pool, in the snapshot's own key order; backends not listed keep
//!   their counts. Without an `init`, the snapshot defines the pool.
//! - `algorithm` (optional string): as in `init`, for this request only.
//!
//! Then the backend with the fewest active connections is chosen, the first
//! in pool order on ties, and its count grows by one at once. A backend
//! whose count is 2⁶⁴ − 1 cannot grow and is not chosen. Reply:
//!
//! ```json
//! {"type":"http_response","in_reply_to":2,"status":200,"backend":"api-2","active_connections":{"api-1":5,"api-2":3,"api-3":8}}
//! ```
//!
//! With no backend to choose, `status` is 503, `error` says why, and there
//! is no `backend`. For an empty pool the text is exactly
//! `no backend available`:
//!
//! ```json
//! {"type":"http_response","in_reply_to":2,"status":503,"error":"no backend available","active_connections":{}}
//! ```
//!
//! ## `request_complete`
//!
//! ```json
//! {"type":"request_complete","msg_id":7,"backend":"api-2"}
//! ```
//!
//! A request on `backend` (required string) has finished: its count drops
//! by one. Reply:
//!
//! ```json
//! {"type":"request_complete_ok","in_reply_to":7,"backend":"api-2","active_connections":{"api-1":5,"api-2":2,"api-3":8}}
//! ```
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
//! | 10   | not-supported       | unknown `type`; unknown `algorithm` |
//! | 12   | malformed-request   | a field missing or of the wrong type; a count negative, fractional, not a number or above 2⁶⁴ − 1; an empty or repeated backend name; a `msg_id` that is not an integer (the reply then has no `in_reply_to`) |
//! | 20   | key-does-not-exist  | `request_complete` for a backend not in the pool |
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
//! Parsing happens in two steps. [`parse_envelope`] checks the envelope;
//! input that fails it cannot be answered. [`parse_body`] then turns the
//! body into a [`Request`], or into a [`ProtocolError`] that is answered
//! with an `error` reply. Fields are first taken as raw JSON text, without
//! copying, and each is then checked on its own, so that every error names
//! the field and says what was wrong with it. Replies are serialized
//! straight from the engine's state, without an intermediate JSON value.

use crate::engine::{Algorithm, Backend, Pool, MAX_COUNT};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
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

impl Serialize for MsgId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            MsgId::Unsigned(n) => s.serialize_u64(n),
            MsgId::Negative(n) => s.serialize_i64(n),
        }
    }
}

/// A string that borrows from the input unless it had escapes to undo.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
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
        d.deserialize_str(V)
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
    let raw: RawEnvelope = serde_json::from_slice(bytes).map_err(|e| describe_json_error(&e))?;
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
// Bodies

/// A request the node understands.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Init(Init<'a>),
    HttpRequest(HttpRequest<'a>),
    RequestComplete(RequestComplete<'a>),
}

/// `init`: replaces the pool.
#[derive(Debug, PartialEq, Eq)]
pub struct Init<'a> {
    pub node_id: Option<Cow<'a, str>>,
    pub backends: Vec<Cow<'a, str>>,
    pub algorithm: Algorithm,
}

/// `http_request`: pick a backend, after applying the snapshot if any.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    pub snapshot: Option<Vec<(Cow<'a, str>, u64)>>,
    pub algorithm: Option<Algorithm>,
}

/// `request_complete`: a request on `backend` has finished.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestComplete<'a> {
    pub backend: Cow<'a, str>,
}

/// The message types this node answers, for error texts.
pub const MESSAGE_TYPES: &[&str] = &["init", "http_request", "request_complete"];

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
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    path: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    active_connections: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    backend: Option<&'a RawValue>,
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
            return Body {
                msg_id: None,
                request: Err(ProtocolError::malformed(format!(
                    "the body could not be read: {}",
                    describe_json_error(&e).trim_start_matches("not a message: ")
                ))),
            }
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

fn parse_msg_id(raw: &RawValue) -> Result<MsgId, ProtocolError> {
    let text = raw.get();
    let parsed = if text.starts_with('-') {
        text.parse::<i64>().ok().map(MsgId::Negative)
    } else {
        text.parse::<u64>().ok().map(MsgId::Unsigned)
    };
    parsed.ok_or_else(|| {
        let found = match kind_of(raw) {
            "a number" => text.to_owned(),
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
        other => Err(ProtocolError::new(
            ErrorCode::NotSupported,
            format!(
                "unknown message type {other:?}; this node answers {}",
                MESSAGE_TYPES.join(", ")
            ),
        )),
    }
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

fn algorithm_field(raw: Option<&RawValue>) -> Result<Option<Algorithm>, ProtocolError> {
    let Some(raw) = raw else { return Ok(None) };
    let name = string_field("algorithm", raw)?;
    Algorithm::from_name(&name).map(Some).ok_or_else(|| {
        let known: Vec<&str> = Algorithm::NAMES.iter().map(|&(n, _)| n).collect();
        ProtocolError::new(
            ErrorCode::NotSupported,
            format!(
                "unknown algorithm {name:?}; supported: {}",
                known.join(", ")
            ),
        )
    })
}

fn parse_init<'a>(raw: &RawBody<'a>) -> Result<Init<'a>, ProtocolError> {
    let node_id = raw
        .node_id
        .map(|r| string_field("node_id", r))
        .transpose()?;
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
    let mut backends = Vec::new();
    if let Some(list) = raw.backends {
        let Ok(Elements(elements)) = serde_json::from_str::<Elements>(list.get()) else {
            return Err(ProtocolError::malformed(format!(
                "\"backends\" must be an array of backend names, found {}",
                kind_of(list)
            )));
        };
        backends.reserve(elements.len());
        for (i, element) in elements.into_iter().enumerate() {
            let name = serde_json::from_str::<Text>(element.get()).map_err(|_| {
                ProtocolError::malformed(format!(
                    "backends[{i}] must be a string (a backend name), found {}",
                    kind_of(element)
                ))
            })?;
            backends.push(name.0);
        }
    }
    let algorithm = algorithm_field(raw.algorithm)?.unwrap_or_default();
    Ok(Init {
        node_id,
        backends,
        algorithm,
    })
}

fn parse_http_request<'a>(raw: &RawBody<'a>) -> Result<HttpRequest<'a>, ProtocolError> {
    for (field, value) in [("method", raw.method), ("path", raw.path)] {
        if let Some(value) = value {
            string_field(field, value)?;
        }
    }
    let snapshot = raw.active_connections.map(parse_snapshot).transpose()?;
    let algorithm = algorithm_field(raw.algorithm)?;
    Ok(HttpRequest {
        snapshot,
        algorithm,
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
            let count = parse_count(value).map_err(|why| {
                ProtocolError::malformed(format!(
                    "active_connections[{name:?}] must be a whole number from 0 to {MAX_COUNT}, {why}"
                ))
            })?;
            Ok((name, count))
        })
        .collect()
}

/// Parses a connection count, or says what was wrong with it.
fn parse_count(raw: &RawValue) -> Result<u64, String> {
    let text = raw.get();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    Err(match kind_of(raw) {
        "a number" if text.starts_with('-') => format!("but {text} is negative"),
        "a number" if text.contains(['.', 'e', 'E']) => format!("but {text} is not a whole number"),
        "a number" => format!("but {text} is too large"),
        kind => format!("found {kind}"),
    })
}

fn parse_request_complete<'a>(raw: &RawBody<'a>) -> Result<RequestComplete<'a>, ProtocolError> {
    let Some(backend) = raw.backend else {
        return Err(ProtocolError::malformed(
            "request_complete needs \"backend\": the name of the backend whose request finished",
        ));
    };
    Ok(RequestComplete {
        backend: string_field("backend", backend)?,
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
        pool: &'a Pool,
    },
    /// No backend could be chosen (status 503).
    Unavailable {
        error: String,
        pool: &'a Pool,
    },
    RequestCompleteOk {
        backend: &'a str,
        pool: &'a Pool,
    },
    Error(ProtocolError),
}

impl Reply<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Reply::InitOk => "init_ok",
            Reply::Routed { .. } | Reply::Unavailable { .. } => "http_response",
            Reply::RequestCompleteOk { .. } => "request_complete_ok",
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
    /// Appends the reply as one line of compact JSON.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every value here serializes.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("src", self.src)?;
        map.serialize_entry("dest", self.dest)?;
        map.serialize_entry("body", &BodyOut(self))?;
        map.end()
    }
}

struct BodyOut<'a, 'b>(&'b Outgoing<'a>);

impl Serialize for BodyOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let out = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("type", out.reply.kind())?;
        if let Some(id) = &out.in_reply_to {
            map.serialize_entry("in_reply_to", id)?;
        }
        match &out.reply {
            Reply::InitOk => {}
            Reply::Routed { backend, pool } => {
                map.serialize_entry("status", &200)?;
                map.serialize_entry("backend", backend)?;
                map.serialize_entry("active_connections", &Counts(pool))?;
            }
            Reply::Unavailable { error, pool } => {
                map.serialize_entry("status", &503)?;
                map.serialize_entry("error", error)?;
                map.serialize_entry("active_connections", &Counts(pool))?;
            }
            Reply::RequestCompleteOk { backend, pool } => {
                map.serialize_entry("backend", backend)?;
                map.serialize_entry("active_connections", &Counts(pool))?;
            }
            Reply::Error(e) => {
                map.serialize_entry("code", &(e.code as u16))?;
                map.serialize_entry("text", &e.text)?;
            }
        }
        map.end()
    }
}

/// Every backend's count, in pool order.
struct Counts<'a>(&'a Pool);

impl Serialize for Counts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, backend) in self.0.iter() {
            map.serialize_entry(name, &Backend::active(backend))?;
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

    fn error_of(json: &str) -> (ErrorCode, String) {
        let e = body(json).request.expect_err("should be refused");
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
            (b"{\"src\":\"\xff\",\"dest\":\"lb\",\"body\":{}}", "invalid"),
        ];
        for (input, expected) in cases {
            let err = parse_envelope(input).expect_err("not an envelope");
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
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
        assert_eq!(init.backends, ["a", "b"]);
        assert_eq!(init.algorithm, Algorithm::LeastConnections);
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
                r#"{"type":"init","algorithm":"round-robin"}"#,
                NotSupported,
                "unknown algorithm \"round-robin\"",
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
                "backends[1] must be a string",
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
    fn a_bad_msg_id_is_reported_without_one() {
        let b = body(r#"{"type":"init","msg_id":"7"}"#);
        assert_eq!(b.msg_id, None);
        assert!(b.request.is_err());
    }

    #[test]
    fn replies_are_compact_with_counts_in_pool_order() {
        let mut pool = Pool::new();
        pool.apply_snapshot(&[("z", 2), ("a", 0)]).unwrap();
        let mut out = Vec::new();
        Outgoing {
            src: "lb",
            dest: "c",
            in_reply_to: Some(MsgId::Unsigned(4)),
            reply: Reply::Routed {
                backend: "a",
                pool: &pool,
            },
        }
        .write_line(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"http_response\",\"in_reply_to\":4,\"status\":200,\"backend\":\"a\",\"active_connections\":{\"z\":2,\"a\":0}}}\n"
        );
    }
}
