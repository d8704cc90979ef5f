//! `--record FILE.in`: every decision of the engine, as the node's
//! messages, with the proxy's own answers beside them as the node's
//! replies: a fixture case that `leastconn replay FILE.in` checks.
//!
//! `FILE.in` holds, in the order the engine made them: the pool's `init`
//! (with `"counts":"changed"`, so that a replay's replies stay small), an
//! `http_request` for each pick (with `exclude` naming the backends a retry
//! passed by) and for each refusal counted as rejected, a
//! `request_complete` (with `ok` and `duration_ms`) for each request that
//! ended, and a `set_backend`, `add_backend` or `remove_backend` for each
//! change of the pool, whatever made it: a health check, passive failures,
//! a slow-start step, an operator, a reload. `FILE.out` holds, line for
//! line, what the proxy's engine answered: the backend picked and its count
//! after, the refusal's text, each count after a completion or change. So
//! the node fed `FILE.in` must make exactly the proxy's decisions, and
//! `explain` on any of those requests says why each went where it did.
//!
//! The journal is told under the pool's lock, so it only appends to two
//! buffers there; full buffers go to a thread that writes them, and
//! [`Recorder::finish`] writes the rest when the proxy stops.

use super::config::Record;
use super::upstream::Upstream;
use crate::engine::{Algorithm, BackendChange, BackendId, Journal, NoBackend, Pool};
use crate::message;
use crate::protocol::write::{key, WriteJson};
use anyhow::Context;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Buffered bytes past which the journal hands them to the writer.
const BATCH: usize = 32 * 1024;

/// The journal kept in the pool: the two files' next lines.
struct Lines {
    input: Vec<u8>,
    output: Vec<u8>,
    msg_id: u64,
    writer: mpsc::Sender<Batch>,
}

/// Lines for each file, in order.
type Batch = (Vec<u8>, Vec<u8>);

/// The journal a proxy's pool keeps.
pub type ProxyJournal = Box<dyn Journal<Arc<Upstream>>>;

/// The thread writing the record, and how to stop it.
pub struct Recorder {
    writer: JoinHandle<anyhow::Result<u64>>,
    paths: Record,
}

impl Recorder {
    /// Creates both files, writes the pool's `init`, and returns the
    /// recorder and the journal to set on the pool before anything can
    /// change it: as built, every backend in, at its whole weight, with no
    /// count, which is all `init` says.
    pub fn start(
        paths: &Record,
        pool: &Pool<Arc<Upstream>>,
    ) -> anyhow::Result<(Recorder, ProxyJournal)> {
        let create = |path: &PathBuf| {
            File::create(path)
                .map(BufWriter::new)
                .with_context(|| format!("--record: cannot create {}", path.display()))
        };
        let (mut input, mut output) = (create(&paths.input)?, create(&paths.output)?);
        let (writer, batches) = mpsc::channel::<Batch>();
        let mut lines = Lines {
            input: Vec::with_capacity(BATCH * 2),
            output: Vec::with_capacity(BATCH * 2),
            msg_id: 0,
            writer,
        };
        lines.init(pool);
        let shown = paths.input.display().to_string();
        let writer = std::thread::Builder::new()
            .name("record".into())
            .spawn(move || -> anyhow::Result<u64> {
                let mut written = 0u64;
                // Ends when the journal, and so its sender, is dropped.
                for (into_input, into_output) in batches {
                    input.write_all(&into_input)?;
                    output.write_all(&into_output)?;
                    written += count_lines(&into_input);
                }
                input.flush()?;
                output.flush()?;
                Ok(written)
            })
            .with_context(|| format!("--record {shown}: cannot start its writer"))?;
        let recorder = Recorder {
            writer,
            paths: paths.clone(),
        };
        Ok((recorder, Box::new(lines)))
    }

    /// Waits for every line to be written, once the journal has been taken
    /// from the pool and dropped; logs how it went.
    pub fn finish(self) {
        let shown = self.paths.input.display();
        match self.writer.join() {
            Ok(Ok(lines)) => tracing::info!("recorded {lines} decisions in {shown}"),
            Ok(Err(e)) => tracing::error!("--record {shown}: cannot write: {e}"),
            Err(_) => tracing::error!("--record {shown}: its writer failed"),
        }
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

impl Lines {
    /// Starts a message to the node: `{"src":"proxy","dest":"lb","body":{"type":TYPE,"msg_id":N`,
    /// and its reply: `{"src":"lb","dest":"proxy","body":{"type":REPLY,"in_reply_to":N`.
    fn begin(&mut self, kind: &[u8], reply: &[u8]) {
        self.msg_id += 1;
        self.input
            .raw(b"{\"src\":\"proxy\",\"dest\":\"lb\",\"body\":{\"type\":\"");
        self.input.raw(kind);
        self.input.raw(b"\",\"msg_id\":");
        self.input.u64(self.msg_id);
        self.output
            .raw(b"{\"src\":\"lb\",\"dest\":\"proxy\",\"body\":{\"type\":\"");
        self.output.raw(reply);
        self.output.raw(b"\",\"in_reply_to\":");
        self.output.u64(self.msg_id);
    }

    /// Ends both lines, handing full buffers to the writer.
    fn end(&mut self) {
        self.input.raw(b"}}\n");
        self.output.raw(b"}}\n");
        if self.input.len() >= BATCH || self.output.len() >= BATCH {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        let batch = (
            std::mem::replace(&mut self.input, Vec::with_capacity(BATCH * 2)),
            std::mem::replace(&mut self.output, Vec::with_capacity(BATCH * 2)),
        );
        // The writer is gone only when it failed, which `finish` reports.
        let _ = self.writer.send(batch);
    }

    /// The reply's `"backend":NAME,"active_connections":{NAME:COUNT}` for
    /// the backend at `position`: the one count that changed.
    fn count_of(&mut self, pool: &Pool<Arc<Upstream>>, position: usize) {
        let Some((name, backend)) = pool.get_index(position) else {
            return;
        };
        message::write_backend_reply(name, &mut self.output, |out| {
            message::write_counts([(name, backend.active())], out)
        });
    }

    /// The message's `"backend":NAME` for the backend at `position`.
    fn name_of(&mut self, pool: &Pool<Arc<Upstream>>, position: usize) {
        if let Some((name, _)) = pool.get_index(position) {
            self.input.raw(key!("backend"));
            self.input.str(name);
        }
    }

    fn init(&mut self, pool: &Pool<Arc<Upstream>>) {
        self.begin(b"init", b"init_ok");
        let policy = pool.policy();
        self.input.raw(key!("backends"));
        self.input.list(pool.iter(), |out, (name, backend)| {
            out.raw(b"{\"name\":");
            out.str(name);
            out.raw(key!("weight"));
            out.u64(backend.weight());
            out.raw(key!("max_connections"));
            out.opt_u64(backend.max_connections());
            out.raw(b"}");
        });
        self.input.raw(key!("algorithm"));
        self.input.str(policy.algorithm.name());
        self.input.raw(key!("tie_break"));
        self.input.str(policy.tie_break.name());
        self.input.raw(key!("seed"));
        self.input.u64(policy.seed);
        self.input.raw(key!("counts"));
        self.input.str("changed");
        self.end();
    }

    /// An `http_request`'s `algorithm`, when not the pool's, and `exclude`.
    fn request(
        &mut self,
        pool: &Pool<Arc<Upstream>>,
        algorithm: Algorithm,
        excluded: &[BackendId],
    ) {
        self.begin(b"http_request", b"http_response");
        if algorithm != pool.policy().algorithm {
            self.input.raw(key!("algorithm"));
            self.input.str(algorithm.name());
        }
        // As the engine did: ids no longer in the pool are passed over.
        let mut names = excluded
            .iter()
            .filter_map(|&id| pool.position_of(id))
            .filter_map(|position| pool.get_index(position))
            .map(|(name, _)| name)
            .peekable();
        if names.peek().is_some() {
            self.input.raw(key!("exclude"));
            self.input.list(names, |out, name| out.str(name));
        }
    }
}

impl Journal<Arc<Upstream>> for Lines {
    fn picked(
        &mut self,
        pool: &Pool<Arc<Upstream>>,
        position: usize,
        algorithm: Algorithm,
        excluded: &[BackendId],
    ) {
        self.request(pool, algorithm, excluded);
        self.output.raw(b",\"status\":200");
        self.count_of(pool, position);
        self.end();
    }

    fn rejected(
        &mut self,
        pool: &Pool<Arc<Upstream>>,
        algorithm: Algorithm,
        excluded: &[BackendId],
        why: &NoBackend,
    ) {
        self.request(pool, algorithm, excluded);
        self.output.raw(b",\"status\":503,\"error\":");
        self.output.str(&why.to_string());
        self.end();
    }

    fn released(
        &mut self,
        pool: &Pool<Arc<Upstream>>,
        position: usize,
        ok: bool,
        duration_ms: Option<f64>,
    ) {
        self.begin(b"request_complete", b"request_complete_ok");
        self.name_of(pool, position);
        self.input.raw(key!("ok"));
        self.input.bool(ok);
        if let Some(ms) = duration_ms {
            self.input.raw(key!("duration_ms"));
            self.input.f64(ms);
        }
        self.count_of(pool, position);
        self.end();
    }

    fn changed(&mut self, pool: &Pool<Arc<Upstream>>, position: usize, change: &BackendChange) {
        self.begin(b"set_backend", b"set_backend_ok");
        self.name_of(pool, position);
        if let Some(healthy) = change.healthy {
            self.input.raw(key!("healthy"));
            self.input.bool(healthy);
        }
        if let Some(weight) = change.weight {
            self.input.raw(key!("weight"));
            self.input.u64(weight);
        }
        if let Some(limit) = change.max_connections {
            self.input.raw(key!("max_connections"));
            self.input.opt_u64(limit);
        }
        if let Some(ramp) = change.ramp {
            self.input.raw(key!("ramp"));
            self.input.u64(ramp.into());
        }
        // No count changed, so the node's reply (counts "changed") has none.
        if let Some((name, _)) = pool.get_index(position) {
            self.output.raw(key!("backend"));
            self.output.str(name);
        }
        self.end();
    }

    fn added(&mut self, pool: &Pool<Arc<Upstream>>, position: usize) {
        self.begin(b"add_backend", b"add_backend_ok");
        if let Some((name, backend)) = pool.get_index(position) {
            self.input.raw(key!("backend"));
            self.input.str(name);
            self.input.raw(key!("weight"));
            self.input.u64(backend.weight());
            self.input.raw(key!("max_connections"));
            self.input.opt_u64(backend.max_connections());
            self.input.raw(key!("address"));
            self.input.str(&backend.payload().address.to_string());
        }
        self.count_of(pool, position);
        self.end();
    }

    fn removed(&mut self, _: &Pool<Arc<Upstream>>, name: &str) {
        self.begin(b"remove_backend", b"remove_backend_ok");
        self.input.raw(key!("backend"));
        self.input.str(name);
        self.output.raw(key!("backend"));
        self.output.str(name);
        self.end();
    }

    fn flush(&mut self) {
        if !self.input.is_empty() {
            self.hand_over();
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.flush();
    }
}
