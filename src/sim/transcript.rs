//! The messages a simulated client would send a real node, in event order.
//!
//! Piping a transcript into `leastconn` replays the simulation against the
//! node: every reply names the backend the simulator chose. Each
//! `http_request` carries `request` (its number, from 0) and `time` (when it
//! arrived); each `request_complete` carries the same `request` and the
//! `time` it finished. The node ignores both fields; they are there to pair
//! requests with completions and to read.

use crate::engine::{Algorithm, TieBreak};
use crate::protocol::write::{key, WriteJson};
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

    /// Writes one message from the client to the node, with the node's
    /// own JSON writer: `body` writes the body's members after `type` and
    /// `msg_id`.
    fn line(&mut self, kind: &str, body: impl FnOnce(&mut Vec<u8>)) {
        if self.error.is_some() {
            return;
        }
        self.msg_id += 1;
        let mut line = Vec::with_capacity(128);
        line.raw(b"{\"src\":\"client\",\"dest\":\"lb\",\"body\":{\"type\":");
        line.str(kind);
        line.raw(key!("msg_id"));
        line.u64(self.msg_id);
        body(&mut line);
        line.raw(b"}}\n");
        if let Err(e) = self.out.write_all(&line) {
            self.error = Some(e);
        }
    }

    pub fn init(&mut self, spec: &InitSpec<'_>) {
        self.line("init", |out| {
            out.raw(key!("node_id"));
            out.str("lb");
            out.raw(key!("backends"));
            out.list(
                spec.names.iter().zip(spec.weights),
                |out, (name, &weight)| {
                    out.raw(b"{\"name\":");
                    out.str(name);
                    out.raw(key!("weight"));
                    out.u64(weight);
                    out.raw(key!("max_connections"));
                    out.opt_u64(spec.max_connections);
                    out.raw(b"}");
                },
            );
            out.raw(key!("algorithm"));
            out.str(spec.algorithm.name());
            out.raw(key!("tie_break"));
            out.str(spec.tie_break.name());
            out.raw(key!("seed"));
            out.u64(spec.seed);
            out.raw(key!("counts"));
            out.str("changed");
        });
    }

    pub fn request(&mut self, request: u64, time: f64) {
        self.line("http_request", |out| {
            out.raw(key!("request"));
            out.u64(request);
            out.raw(key!("time"));
            out.f64(time);
        });
    }

    pub fn complete(&mut self, request: u64, backend: &str, time: f64) {
        self.line("request_complete", |out| {
            out.raw(key!("request"));
            out.u64(request);
            out.raw(key!("backend"));
            out.str(backend);
            out.raw(key!("time"));
            out.f64(time);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_written_as_json() {
        let mut out = Vec::new();
        let mut t = Transcript::new(&mut out);
        let names = ["a\"b".to_owned(), "c\\d\n".to_owned()];
        t.init(&InitSpec {
            names: &names,
            weights: &[2, 1],
            max_connections: None,
            algorithm: Algorithm::LeastConnections,
            tie_break: TieBreak::Random,
            seed: 7,
        });
        t.request(0, 0.5);
        t.complete(0, &names[1], 1.25);
        t.finish().expect("in memory");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines[0]["body"]["backends"][0]["name"], "a\"b");
        assert_eq!(lines[0]["body"]["backends"][1]["weight"], 1);
        assert_eq!(lines[0]["body"]["seed"], 7);
        assert_eq!(lines[1]["body"]["msg_id"], 2);
        assert_eq!(lines[2]["body"]["backend"], "c\\d\n");
        assert_eq!(lines[2]["body"]["time"], 1.25);
    }
}
