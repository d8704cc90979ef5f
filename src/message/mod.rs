//! The messages the node answers: one module per message type, each with
//! its parse, what it does to the node, and its reply.
//!
//! Adding a message type means adding its module, with a type that
//! implements [`Message`], and one line to the table at the `messages!`
//! call below.

use crate::engine::EngineError;
use crate::node::Node;
use crate::protocol::fields::{self, Fields, Repr};
use crate::protocol::write::{key, WriteJson};
use crate::protocol::{self, Addresses, ErrorCode, MsgId, ProtocolError, Unanswerable};

/// One message type.
pub trait Message<'a>: Sized {
    /// The `type` that names it.
    const TYPE: &'static str;
    /// The `type` of its reply.
    const REPLY: &'static str;
    /// What applying it did, as its reply needs to know.
    type Outcome;

    /// Checks the body's fields, in a fixed order, so that the first
    /// problem is the one reported.
    fn parse<R: Repr<'a>>(fields: &mut Fields<'a, R>) -> Result<Self, ProtocolError>;

    /// Does what the message asks. A refusal must leave the node exactly as
    /// it was.
    fn apply(self, node: &mut Node) -> Result<Self::Outcome, ProtocolError>;

    /// Writes the reply's members after `type` and `in_reply_to`, each
    /// starting with its comma.
    fn reply(outcome: Self::Outcome, node: &Node, out: &mut Vec<u8>);
}

/// Declares the message types: their modules, the [`Request`] enum with a
/// variant each, the list of their names, and the dispatch by `type`.
macro_rules! messages {
    (for<$a:lifetime> $( $module:ident :: $name:ident $(<$lt:lifetime>)? ),* $(,)?) => {
        $( pub mod $module; )*

        /// A parsed request: one variant per message type.
        #[derive(Debug)]
        pub enum Request<$a> {
            $( $name($module::$name $(<$lt>)?), )*
        }

        /// The message types this node answers, for error texts.
        pub const MESSAGE_TYPES: &[&str] = &[$( <$module::$name as Message>::TYPE ),*];

        impl<$a> Request<$a> {
            /// Parses the fields as the message `kind` names.
            fn parse_as<R: Repr<$a>>(
                kind: &str,
                fields: &mut Fields<$a, R>,
            ) -> Option<Result<Self, ProtocolError>> {
                $(
                    if kind == <$module::$name as Message>::TYPE {
                        return Some(Message::parse(fields).map(Request::$name));
                    }
                )*
                None
            }

            /// Applies the request and writes its reply.
            fn answer(self, node: &mut Node, to: &Addresses<'_>, msg_id: Option<MsgId>, out: &mut Vec<u8>) {
                match self {
                    $( Request::$name(message) => respond(message, node, to, msg_id, out), )*
                }
            }
        }
    };
}

messages! { for<'a>
    init::Init<'a>,
    http_request::HttpRequest<'a>,
    request_complete::RequestComplete<'a>,
    add_backend::AddBackend<'a>,
    remove_backend::RemoveBackend<'a>,
    set_backend::SetBackend<'a>,
    stats::Stats,
}

/// Parses a body's fields into a request: its `msg_id` (when valid, so
/// that even a refusal says what it answers) and the request or why it is
/// refused.
pub fn parse<'a, R: Repr<'a>>(
    fields: &mut Fields<'a, R>,
) -> (Option<MsgId>, Result<Request<'a>, ProtocolError>) {
    match fields.msg_id.take().map(|id| fields::msg_id(R::raw(id))) {
        Some(Err(e)) => (None, Err(e)),
        Some(Ok(id)) => (Some(id), parse_request(fields)),
        None => (None, parse_request(fields)),
    }
}

fn parse_request<'a, R: Repr<'a>>(
    fields: &mut Fields<'a, R>,
) -> Result<Request<'a>, ProtocolError> {
    let Some(kind) = fields.kind.take() else {
        return Err(ProtocolError::malformed(
            "the body has no \"type\"; every message body needs one, such as \"http_request\"",
        ));
    };
    let kind = R::text(kind, "type")?;
    Request::parse_as(&kind, fields).unwrap_or_else(|| {
        Err(ProtocolError::new(
            ErrorCode::NotSupported,
            format!(
                "unknown message type {kind:?}; this node answers {}",
                MESSAGE_TYPES.join(", ")
            ),
        ))
    })
}

/// A message read precisely: its addresses, its `msg_id` (when valid) and
/// the request or why it is refused.
pub type Read<'a> = (
    Addresses<'a>,
    Option<MsgId>,
    Result<Request<'a>, ProtocolError>,
);

/// Reads a framed message precisely: its addresses, its `msg_id` (when
/// valid) and the request or why it is refused; or why it cannot be
/// answered at all.
pub fn read(bytes: &[u8]) -> Result<Read<'_>, Unanswerable> {
    let (to, body) = protocol::read_envelope(bytes)?;
    let (msg_id, request) = match protocol::read_body(body) {
        Ok(mut fields) => parse(&mut fields),
        Err((msg_id, e)) => (msg_id, Err(e)),
    };
    Ok((to, msg_id, request))
}

/// Answers one message: applies the request, or its refusal, and writes
/// exactly one reply line.
pub fn answer(
    node: &mut Node,
    to: &Addresses<'_>,
    msg_id: Option<MsgId>,
    request: Result<Request<'_>, ProtocolError>,
    out: &mut Vec<u8>,
) {
    node.begin_message();
    match request {
        Ok(request) => request.answer(node, to, msg_id, out),
        Err(e) => refuse(e, node, to, msg_id, out),
    }
}

fn respond<'a, M: Message<'a>>(
    message: M,
    node: &mut Node,
    to: &Addresses<'_>,
    msg_id: Option<MsgId>,
    out: &mut Vec<u8>,
) {
    match message.apply(node) {
        Ok(outcome) => {
            node.end_message();
            write_reply(node.id(), to, msg_id, M::REPLY, out, |out| {
                M::reply(outcome, node, out)
            });
        }
        Err(e) => refuse(e, node, to, msg_id, out),
    }
}

fn refuse(
    e: ProtocolError,
    node: &Node,
    to: &Addresses<'_>,
    msg_id: Option<MsgId>,
    out: &mut Vec<u8>,
) {
    write_error(node.id(), to, msg_id, &e, out);
}

/// Writes one reply line: its envelope (from `id`, the node's id once an
/// `init` gave one, else the message's `dest`), `type` and `in_reply_to`,
/// then the members `members` writes, each starting with its comma.
pub fn write_reply(
    id: Option<&str>,
    to: &Addresses<'_>,
    msg_id: Option<MsgId>,
    kind: &str,
    out: &mut Vec<u8>,
    members: impl FnOnce(&mut Vec<u8>),
) {
    out.raw(b"{\"src\":");
    out.str(id.unwrap_or(&to.dest));
    out.raw(key!("dest"));
    out.str(&to.src);
    out.raw(b",\"body\":{\"type\":");
    out.str(kind);
    match msg_id {
        Some(MsgId::Unsigned(n)) => {
            out.raw(key!("in_reply_to"));
            out.u64(n);
        }
        Some(MsgId::Negative(n)) => {
            out.raw(key!("in_reply_to"));
            out.i64(n);
        }
        None => {}
    }
    members(out);
    out.raw(b"}}\n");
}

/// Writes one `error` reply line, with the refusal's code and text.
pub fn write_error(
    id: Option<&str>,
    to: &Addresses<'_>,
    msg_id: Option<MsgId>,
    e: &ProtocolError,
    out: &mut Vec<u8>,
) {
    write_reply(id, to, msg_id, "error", out, |out| {
        out.raw(key!("code"));
        out.u64(e.code as u64);
        out.raw(key!("text"));
        out.str(&e.text);
    });
}

/// The protocol error for an operation the engine refused: its code, and
/// the engine's own words.
pub fn refusal(e: EngineError) -> ProtocolError {
    let code = match e {
        EngineError::EmptyName
        | EngineError::DuplicateBackend(_)
        | EngineError::RampOutOfRange(_) => ErrorCode::MalformedRequest,
        EngineError::AlreadyInPool(_) => ErrorCode::KeyAlreadyExists,
        EngineError::UnknownBackend(_) | EngineError::NoPosition(_) => ErrorCode::KeyDoesNotExist,
        EngineError::NoActiveConnection(_) => ErrorCode::PreconditionFailed,
    };
    ProtocolError::new(code, e.to_string())
}

/// The `backend` a message about one backend names.
fn backend_field<'a, R: Repr<'a>>(
    backend: Option<R::Str>,
    missing: &str,
) -> Result<std::borrow::Cow<'a, str>, ProtocolError> {
    let Some(backend) = backend else {
        return Err(ProtocolError::malformed(missing));
    };
    R::text(backend, "backend")
}

/// The reply members of a message about one backend: its name and the
/// counts.
fn backend_reply(backend: &str, node: &Node, out: &mut Vec<u8>) {
    write_backend_reply(backend, out, |out| node.write_counts(out));
}

/// The reply members of a message about one backend: its name, then the
/// pool's `active_connections`, which `counts` writes.
pub fn write_backend_reply(backend: &str, out: &mut Vec<u8>, counts: impl FnOnce(&mut Vec<u8>)) {
    out.raw(key!("backend"));
    out.str(backend);
    out.raw(key!("active_connections"));
    counts(out);
}

/// `active_connections` as an object of the given counts, in their order.
pub fn write_counts<'n>(counts: impl IntoIterator<Item = (&'n str, u64)>, out: &mut Vec<u8>) {
    let mut first = true;
    for (name, active) in counts {
        out.raw(if std::mem::take(&mut first) {
            b"{"
        } else {
            b","
        });
        out.str(name);
        out.raw(b":");
        out.u64(active);
    }
    out.raw(if first { b"{}" } else { b"}" });
}
