//! The messages a simulated client would send a real node, in event order.
//!
//! Piping a transcript into `leastconn` replays the simulation against the
//! node: every reply names the backend the simulator chose. Each
//! `http_request` carries `request` (its number, from 0) and `time` (when it
//! arrived); each `request_complete` carries the same `request` and the
//! `time` it finished. The node ignores both fields; they are there to pair
//! requests with completions and to read.

use crate::engine::{Algorithm, TieBreak};
use serde_json::json;
use std::io::{self, Write};

/// Writes a transcript, keeping the first write error for [`finish`]
/// so that the simulation need not stop to handle it.
///
/// [`finish`]: Transcript::finish
pub struct Transcript<W: Write> {
    out: W,
    msg_id: u64,
    error: Option<io::Error>,
}

/// The pool an `init` message sets up.
pub struct InitSpec<'a> {
    pub names: &'a [String],
    pub weights: &'a [u64],
    pub max_connections: Option<u64>,
    pub algorithm: Algorithm,
    pub tie_break: TieBreak,
    pub seed: u64,
}

impl<W: Write> Transcript<W> {
    pub fn new(out: W) -> Self {
        Transcript {
            out,
            msg_id: 0,
            error: None,
        }
    }

    fn line(&mut self, write: impl FnOnce(&mut W, u64) -> io::Result<()>) {
        if self.error.is_none() {
            self.msg_id += 1;
            if let Err(e) = write(&mut self.out, self.msg_id) {
                self.error = Some(e);
            }
        }
    }

    pub fn init(&mut self, spec: &InitSpec<'_>) {
        let backends: Vec<serde_json::Value> = spec
            .names
            .iter()
            .zip(spec.weights)
            .map(|(name, &weight)| {
                json!({"name": name, "weight": weight, "max_connections": spec.max_connections})
            })
            .collect();
        self.line(|out, msg_id| {
            let body = json!({
                "type": "init",
                "msg_id": msg_id,
                "node_id": "lb",
                "backends": backends,
                "algorithm": spec.algorithm.name(),
                "tie_break": spec.tie_break.name(),
                "seed": spec.seed,
                "counts": "changed",
            });
            writeln!(
                out,
                "{}",
                json!({"src": "client", "dest": "lb", "body": body})
            )
        });
    }

    pub fn request(&mut self, request: u64, time: f64) {
        self.line(|out, msg_id| {
            writeln!(
                out,
                r#"{{"src":"client","dest":"lb","body":{{"type":"http_request","msg_id":{msg_id},"request":{request},"time":{time}}}}}"#
            )
        });
    }

    pub fn complete(&mut self, request: u64, backend: &str, time: f64) {
        self.line(|out, msg_id| {
            writeln!(
                out,
                r#"{{"src":"client","dest":"lb","body":{{"type":"request_complete","msg_id":{msg_id},"request":{request},"backend":"{backend}","time":{time}}}}}"#
            )
        });
    }

    /// Flushes, and reports the first error of any write.
    pub fn finish(mut self) -> io::Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => self.out.flush(),
        }
    }
}
