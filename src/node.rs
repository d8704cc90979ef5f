//! The node: its state, and what each request does to it.
//!
//! [`Node::handle_prefix`] answers an ordinary message read in one pass
//! straight from the input; [`Node::handle`] takes the bytes of any other
//! framed object and parses it precisely. Either applies the request to the
//! [`Pool`] and writes exactly one reply line (`handle` may instead say why
//! the input cannot be answered at all). Every
//! request is validated completely before anything changes, so a refused
//! request leaves the state as it was.

use crate::engine::{EngineError, Explanation, NoBackend, Pool, PoolBuilder};
use crate::protocol::{
    self, Counts, CountsMode, ErrorCode, HttpRequest, Init, MsgId, Outgoing, ProtocolError, Reply,
    Request, RequestComplete,
};
use std::borrow::Cow;

/// The state of one leastconn node.
#[derive(Debug, Default)]
pub struct Node {
    /// The `node_id` of the last `init` that carried one.
    id: Option<String>,
    pool: Pool,
    counts: CountsMode,
    /// The positions whose count the current message changed.
    changed: Vec<usize>,
}

/// Why input was framed as an object but cannot be answered.
pub type Unanswerable = String;

impl Node {
    pub fn new() -> Self {
        Node::default()
    }

    /// The pool as it stands.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Handles one framed message, reading it precisely, and appends its
    /// reply line to `out`. The event loop first offers every message to
    /// [`handle_prefix`](Node::handle_prefix); what reaches this is what
    /// that declined, so it is not tried again.
    pub fn handle(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Unanswerable> {
        let envelope = protocol::parse_envelope(bytes)?;
        let body = protocol::parse_body(envelope.body);
        self.answer(envelope.src, envelope.dest, body.msg_id, body.request, out);
        Ok(())
    }

    /// Handles an ordinary message at the start of `bytes` (of at most
    /// `max_len` bytes) read in one pass, and returns its length; `None`,
    /// having done nothing, for anything else, which then comes back framed
    /// to [`handle`](Node::handle).
    pub fn handle_prefix(
        &mut self,
        bytes: &[u8],
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        let (message, len) = protocol::parse_fast_prefix(bytes, max_len)?;
        self.answer(
            message.src,
            message.dest,
            message.msg_id,
            Ok(message.request),
            out,
        );
        Some(len)
    }

    fn answer(
        &mut self,
        src: Cow<'_, str>,
        dest: Cow<'_, str>,
        msg_id: Option<MsgId>,
        request: Result<Request<'_>, ProtocolError>,
        out: &mut Vec<u8>,
    ) {
        self.changed.clear();
        let outcome = request.and_then(|request| self.apply(request));
        if self.counts == CountsMode::Changed {
            self.changed.sort_unstable();
            self.changed.dedup();
        }
        Outgoing {
            src: self.id.as_deref().unwrap_or(&dest),
            dest: &src,
            in_reply_to: msg_id,
            reply: self.reply(outcome),
        }
        .write_line(out);
    }

    fn apply(&mut self, request: Request<'_>) -> Result<Outcome, ProtocolError> {
        match request {
            Request::Init(init) => self.init(init),
            Request::HttpRequest(request) => self.route(request),
            Request::RequestComplete(done) => self.complete(done),
            Request::AddBackend(add) => {
                let index = self.pool.add(add.0.spec()).map_err(refusal)?;
                self.changed.push(index);
                Ok(Outcome::Backend("add_backend_ok", index))
            }
            Request::RemoveBackend { backend } => {
                self.pool.remove(&backend).map_err(refusal)?;
                Ok(Outcome::Removed(backend.into_owned()))
            }
            Request::SetBackend(set) => self
                .pool
                .change(&set.backend, set.change)
                .map(|i| Outcome::Backend("set_backend_ok", i))
                .map_err(refusal),
            Request::Stats => Ok(Outcome::Stats),
        }
    }

    fn init(&mut self, init: Init<'_>) -> Result<Outcome, ProtocolError> {
        // Built aside and swapped in whole, so that a refusal changes nothing;
        // sized exactly from a counting pass, so that a list of millions
        // never makes the pool's tables grow (and briefly double).
        let mut builder = PoolBuilder::new(init.policy, init.backend_count());
        init.for_each_backend(|backend| builder.push(backend.spec()).map_err(refusal))?;
        self.pool = builder.build();
        self.counts = init.counts;
        if let Some(id) = init.node_id {
            self.id = Some(id.into_owned());
        }
        Ok(Outcome::InitOk)
    }

    fn route(&mut self, request: HttpRequest<'_>) -> Result<Outcome, ProtocolError> {
        if let Some(snapshot) = &request.snapshot {
            self.pool
                .apply_snapshot(snapshot, &mut self.changed)
                .map_err(refusal)?;
        }
        let pick = self.pool.pick(request.algorithm, request.explain);
        Ok(match pick.chosen {
            Ok(index) => {
                self.changed.push(index);
                Outcome::Routed(index, pick.explanation)
            }
            Err(none) => Outcome::Unavailable(none, pick.explanation),
        })
    }

    fn complete(&mut self, done: RequestComplete<'_>) -> Result<Outcome, ProtocolError> {
        let index = self
            .pool
            .complete(&done.backend, done.ok, done.duration_ms)
            .map_err(refusal)?;
        self.changed.push(index);
        Ok(Outcome::Backend("request_complete_ok", index))
    }

    fn reply(&self, outcome: Result<Outcome, ProtocolError>) -> Reply<'_> {
        let name = |index| self.pool.get_index(index).map_or("", |(name, _)| name);
        let counts = Counts {
            pool: &self.pool,
            only: (self.counts == CountsMode::Changed).then_some(&self.changed[..]),
        };
        match outcome {
            Ok(Outcome::InitOk) => Reply::InitOk,
            Ok(Outcome::Routed(index, explanation)) => Reply::Routed {
                backend: name(index),
                counts,
                explanation,
            },
            Ok(Outcome::Unavailable(none, explanation)) => Reply::Unavailable {
                error: none.to_string(),
                counts,
                explanation,
            },
            Ok(Outcome::Backend(kind, index)) => Reply::BackendOk {
                kind,
                backend: name(index),
                counts,
            },
            Ok(Outcome::Removed(backend)) => Reply::Removed { backend, counts },
            Ok(Outcome::Stats) => Reply::StatsOk { pool: &self.pool },
            Err(e) => Reply::Error(e),
        }
    }
}

/// What a request did, by pool position.
enum Outcome {
    InitOk,
    Routed(usize, Option<Explanation>),
    Unavailable(NoBackend, Option<Explanation>),
    /// An acknowledgement of this type about the backend at this position.
    Backend(&'static str, usize),
    /// The backend is gone from the pool, so it is named, not placed.
    Removed(String),
    Stats,
}

/// The protocol error for an operation the engine refused.
fn refusal(e: EngineError) -> ProtocolError {
    let code = match e {
        EngineError::EmptyName | EngineError::DuplicateBackend(_) => ErrorCode::MalformedRequest,
        EngineError::AlreadyInPool(_) => ErrorCode::KeyAlreadyExists,
        EngineError::UnknownBackend(_) | EngineError::NoPosition(_) => ErrorCode::KeyDoesNotExist,
        EngineError::NoActiveConnection(_) => ErrorCode::PreconditionFailed,
    };
    ProtocolError::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Feeds each line to a node; returns each reply's body.
    fn run(lines: &[&str]) -> Vec<Value> {
        let mut node = Node::new();
        lines
            .iter()
            .map(|line| {
                let mut out = Vec::new();
                node.handle(line.as_bytes(), &mut out).expect("answerable");
                assert_eq!(out.last(), Some(&b'\n'));
                let reply: Value = serde_json::from_slice(&out).expect("reply is JSON");
                reply["body"].clone()
            })
            .collect()
    }

    fn msg(body: &str) -> String {
        format!(r#"{{"src":"c","dest":"lb","body":{body}}}"#)
    }

    #[test]
    fn a_refused_request_changes_nothing() {
        let mut node = Node::new();
        let mut out = Vec::new();
        let init = msg(r#"{"type":"init","msg_id":1,"backends":["a","b"]}"#);
        node.handle(init.as_bytes(), &mut out).unwrap();
        let before = node.pool().clone();
        // Valid snapshot entries followed by a bad one: none applied.
        for bad in [
            r#"{"type":"http_request","msg_id":2,"active_connections":{"a":7,"new":1,"b":-1}}"#,
            r#"{"type":"http_request","msg_id":3,"active_connections":{"a":7},"algorithm":"x"}"#,
            r#"{"type":"http_request","msg_id":4,"active_connections":{"a":7,"a":8}}"#,
            r#"{"type":"init","msg_id":5,"node_id":"n9","backends":["x","x"]}"#,
        ] {
            node.handle(msg(bad).as_bytes(), &mut out).unwrap();
            assert_eq!(node.pool(), &before, "{bad}");
        }
        assert_eq!(node.id, None, "a refused init must not set the node id");
    }

    #[test]
    fn reply_source_is_the_node_id_once_known() {
        let mut node = Node::new();
        let mut out = Vec::new();
        node.handle(
            br#"{"src":"c","dest":"lb","body":{"type":"http_request"}}"#,
            &mut out,
        )
        .unwrap();
        node.handle(
            br#"{"src":"c","dest":"lb","body":{"type":"init","node_id":"n1"}}"#,
            &mut out,
        )
        .unwrap();
        node.handle(
            br#"{"src":"c","dest":"zz","body":{"type":"http_request"}}"#,
            &mut out,
        )
        .unwrap();
        let srcs: Vec<String> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<Value>(l).unwrap()["src"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(srcs, ["lb", "n1", "n1"]);
    }

    #[test]
    fn the_course_worked_example() {
        let replies = run(&[
            &msg(r#"{"type":"init","msg_id":1,"backends":["api-1","api-2","api-3"]}"#),
            &msg(r#"{"type":"http_request","msg_id":2,"algorithm":"least-connections"}"#),
            &msg(r#"{"type":"http_request","msg_id":3}"#),
            &msg(r#"{"type":"http_request","msg_id":4}"#),
            &msg(r#"{"type":"request_complete","msg_id":5,"backend":"api-2"}"#),
            &msg(r#"{"type":"http_request","msg_id":6}"#),
        ]);
        let picks: Vec<&str> = replies
            .iter()
            .filter_map(|r| r.get("backend").and_then(Value::as_str))
            .collect();
        assert_eq!(picks, ["api-1", "api-2", "api-3", "api-2", "api-2"]);
        assert_eq!(
            replies[5]["active_connections"],
            serde_json::json!({"api-1":1,"api-2":1,"api-3":1})
        );
    }

    #[test]
    fn unanswerable_input_writes_nothing() {
        let mut node = Node::new();
        let mut out = Vec::new();
        let err = node
            .handle(br#"{"dest":"lb","body":{"type":"init"}}"#, &mut out)
            .unwrap_err();
        assert!(err.contains("no \"src\""), "{err}");
        assert!(out.is_empty());
    }
}
