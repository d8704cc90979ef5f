//! The node: its state, and the two ways a message reaches it.
//!
//! [`Node::handle_one_pass`] answers a message read in one pass straight
//! from the input; [`Node::handle`] reads a framed object precisely. Either
//! way, the message's own module under [`crate::message`] applies it and
//! writes exactly one reply line (`handle` may instead say why the input
//! cannot be answered at all). Every request is checked completely before
//! anything changes, so a refused request leaves the state as it was.

use crate::engine::{Algorithm, BackendId, Pick, Pool};
use crate::message::{self, refusal};
use crate::names::named_enum;
use crate::protocol::{self, ProtocolError, Unanswerable};
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

named_enum! {
    /// Which backends a reply's `active_connections` lists.
    #[derive(Default)]
    pub enum CountsMode("counts") {
        /// Every backend of the pool.
        #[default]
        All = "all",
        /// Only the backends whose count the message changed.
        Changed = "changed",
    }
}

impl Node {
    pub fn new() -> Self {
        Node::default()
    }

    /// Reads a framed message precisely and appends its reply line to
    /// `out`, or says why it cannot be answered.
    pub fn handle(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Unanswerable> {
        let (to, msg_id, request) = message::read(bytes)?;
        message::answer(self, &to, msg_id, request, out);
        Ok(())
    }

    /// Answers a message at the start of `bytes` (of at most `max_len`
    /// bytes) read in one pass, and returns its length; `None`, having done
    /// nothing, for anything that pass declines, which then comes back
    /// framed to [`handle`](Node::handle).
    pub fn handle_one_pass(
        &mut self,
        bytes: &[u8],
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        let (to, mut fields, len) = protocol::read_one_pass(bytes, max_len)?;
        let (msg_id, request) = message::parse(&mut fields);
        let request = request.ok()?;
        message::answer(self, &to, msg_id, Ok(request), out);
        Some(len)
    }

    /// The pool as it stands.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn pool_mut(&mut self) -> &mut Pool {
        &mut self.pool
    }

    /// The `node_id` replies come from, once an `init` gave one.
    pub(crate) fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The name of the backend at a pool position.
    pub(crate) fn name(&self, index: usize) -> &str {
        self.pool.get_index(index).map_or("", |(name, _)| name)
    }

    /// Replaces the pool and the settings an `init` carries.
    pub(crate) fn replace(&mut self, pool: Pool, counts: CountsMode, id: Option<Cow<'_, str>>) {
        self.pool = pool;
        self.counts = counts;
        if let Some(id) = id {
            self.id = Some(id.into_owned());
        }
    }

    /// Applies a snapshot of counts, noting what changed.
    pub(crate) fn apply_snapshot(
        &mut self,
        snapshot: &[(Cow<'_, str>, u64)],
    ) -> Result<(), ProtocolError> {
        self.pool
            .apply_snapshot(snapshot, &mut self.changed)
            .map_err(refusal)
    }

    /// Picks a backend other than the `excluded`, noting the change.
    pub(crate) fn pick(
        &mut self,
        algorithm: Option<Algorithm>,
        excluded: &[BackendId],
        explain: bool,
    ) -> Pick {
        let pick = self.pool.pick(algorithm, excluded, explain);
        if let Ok(index) = pick.chosen {
            self.changed.push(index);
        }
        pick
    }

    /// Notes that the count at a pool position changed.
    pub(crate) fn changed(&mut self, index: usize) {
        self.changed.push(index);
    }

    pub(crate) fn begin_message(&mut self) {
        self.changed.clear();
    }

    pub(crate) fn end_message(&mut self) {
        if self.counts == CountsMode::Changed {
            self.changed.sort_unstable();
            self.changed.dedup();
        }
    }

    /// A reply's `active_connections`: every backend's count, or only those
    /// the message changed, in pool order.
    pub(crate) fn write_counts(&self, out: &mut Vec<u8>) {
        match self.counts {
            CountsMode::All => {
                message::write_counts(self.pool.iter().map(|(name, b)| (name, b.active())), out)
            }
            CountsMode::Changed => message::write_counts(
                self.changed
                    .iter()
                    .filter_map(|&i| self.pool.get_index(i))
                    .map(|(name, b)| (name, b.active())),
                out,
            ),
        }
    }
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
    fn replies_are_compact_with_counts_in_pool_order() {
        let mut node = Node::new();
        let mut out = Vec::new();
        node.handle(
            br#"{"src":"c","dest":"lb","body":{"type":"http_request","msg_id":4,"active_connections":{"z":2,"a":0}}}"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"http_response\",\"in_reply_to\":4,\"status\":200,\"backend\":\"a\",\"active_connections\":{\"z\":2,\"a\":1}}}\n"
        );
    }

    #[test]
    fn a_ramp_is_listed_only_while_below_100() {
        let replies = run(&[
            &msg(r#"{"type":"init","msg_id":1,"backends":["a","b"]}"#),
            &msg(r#"{"type":"set_backend","msg_id":2,"backend":"b","ramp":40}"#),
            &msg(r#"{"type":"http_request","msg_id":3,"explain":true}"#),
            &msg(r#"{"type":"stats","msg_id":4}"#),
            &msg(r#"{"type":"set_backend","msg_id":5,"backend":"b","ramp":100}"#),
            &msg(r#"{"type":"http_request","msg_id":6,"explain":true}"#),
            &msg(r#"{"type":"stats","msg_id":7}"#),
        ]);
        let stats_b = |reply: &Value| reply["backends"][1].clone();
        let candidate_b = |reply: &Value| reply["explain"]["candidates"][1].clone();
        // b at 40%: its load is 0 ÷ 0.4, tied with a's 0; a goes first.
        assert_eq!(replies[2]["backend"], "a");
        assert_eq!(
            candidate_b(&replies[2]),
            serde_json::json!({"backend":"b","active":0,"weight":1,"ramp":40,"eligible":true,"score":0.0})
        );
        assert_eq!(
            stats_b(&replies[3]),
            serde_json::json!({"name":"b","active":0,"weight":1,"ramp":40,"healthy":true,"max_connections":null,
                               "requests":0,"completed":0,"failed":0,"mean_duration_ms":null})
        );
        assert_eq!(
            candidate_b(&replies[5]),
            serde_json::json!({"backend":"b","active":0,"weight":1,"eligible":true,"score":0.0})
        );
        assert_eq!(
            stats_b(&replies[6]),
            serde_json::json!({"name":"b","active":1,"weight":1,"healthy":true,"max_connections":null,
                               "requests":1,"completed":0,"failed":0,"mean_duration_ms":null})
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
