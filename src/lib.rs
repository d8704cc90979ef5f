//! leastconn: a least-connections load balancer: one engine, driven by a
//! Maelstrom-style node over JSON lines, a simulator, and an HTTP reverse
//! proxy.
//!
//! For every HTTP request it is told about, the node picks the backend with
//! the fewest active connections (weighted, or by round-robin, random or
//! power-of-two-choices on request), counts that connection at once, and
//! answers with the chosen backend and the updated counts. The wire
//! protocol is specified in [`protocol`].
//!
//! # Layout
//!
//! One engine, front-ends around it: the node (the modules from [`cli`]
//! to [`protocol`]; data flows down the list and replies flow back up), the
//! simulator and the proxy.
//!
//! - [`cli`]: the command line (clap): arguments, each command's `--help`,
//!   usage errors in the program's words, and which command runs.
//!   `main.rs` only turns its result into an exit status: every error is
//!   reported there, once (status 2, or a quiet 0 for a closed pipe).
//! - [`event_loop`]: reads input, feeds the framer, decides how each
//!   message is read (the one-pass read first where an object begins, the
//!   precise one for what that declines), hands it to the node, writes
//!   replies and diagnostics, and decides when to flush.
//! - [`framing`]: takes bytes and says where the next object begins, where
//!   it ends, or why the input there cannot be a message (an incremental
//!   syntax check that knows where malformed input went wrong and where to
//!   resume). It knows nothing of messages.
//! - [`node`]: the node's state (its id, the pool, which counts replies
//!   list) and the two ways a message reaches it.
//! - [`message`]: one module per message type (`init`, `http_request`,
//!   `request_complete`, `add_backend`, `remove_backend`, `set_backend`,
//!   `stats`), each with its parse, what it does to the node, and its
//!   reply; the table in `message/mod.rs` dispatches on `type`, and its
//!   reading and reply writing serve the proxy's admin API too.
//! - [`protocol`]: what all messages share: the wire format's
//!   specification, the envelope, Maelstrom error codes, the body's fields
//!   declared once and the check of each ([`protocol::fields`], read by
//!   both the one-pass and the precise parse), and the reply writer's
//!   primitives ([`protocol::write`]).
//! - [`engine`]: the balancing engine: the backend pool, counts, health,
//!   weights, limits and statistics. No I/O and no JSON; every front-end
//!   drives it.
//!   - [`engine::select`]: the selection algorithms and tie-breaks, once,
//!     and the explanation of a pick.
//!   - [`engine::rng`]: the seeded random number generator behind every
//!     random choice.
//!   - `engine::tree`: the index (a segment tree over pool positions) that
//!     makes least-connections and power-of-two-choices picks O(log N).
//!   - `engine::errors`: why the engine refused (no backend, a bad
//!     operation).
//!   - [`engine::shared`]: a pool shared by concurrent tasks behind one
//!     short lock, the lease that holds one request's count until the
//!     request ends, whichever way, and the journal told of every change
//!     in engine order.
//! - [`sim`]: `leastconn simulate`, a discrete-event simulation that drives
//!   the same engine with simulated clients and backends, and reports
//!   latency, shares and spread per algorithm (table, JSON, SVG charts,
//!   transcripts the node can replay).
//!   - [`sim::settings`] every parameter, declared once for flags and TOML
//!     files, [`sim::scenario`] their checks and defaults, [`sim::dist`]
//!     request sizes and arrivals, `sim::run` the event loop,
//!     [`sim::stats`] histogram, spread and confidence intervals,
//!     [`sim::report`] table and JSON, [`sim::svg`] charts,
//!     [`sim::transcript`] the node's input, [`sim::output`] a command's
//!     run: its files, progress bar and printed results.
//! - [`proxy`]: `leastconn proxy`, an HTTP/1.1 reverse proxy on tokio and
//!   hyper over a shared engine pool: [`proxy::config`] its settings
//!   (`proxy::config::health` those of the health checks),
//!   `proxy::forward` one request (lease, queue, retries, timeouts,
//!   tunnels), `proxy::headers` what a proxy does to headers,
//!   `proxy::body` the response body that ends the lease,
//!   `proxy::upstream` a backend's connections and failures,
//!   `proxy::control` why a backend is out of the pool (its checks,
//!   passive failures, an operator), the one place that takes it out
//!   and brings it back, and the slow start that eases it in,
//!   `proxy::health` the active health checks, `proxy::admin` the admin
//!   listener (`GET /stats`, `POST /messages`), `proxy::runtime` changes
//!   to the running pool (the node's messages from the admin API, drained
//!   removals, the reload on SIGHUP), `proxy::metrics` `GET /metrics`
//!   (Prometheus' text format) and the backends' response-time
//!   histograms, `proxy::dashboard` `GET /` (a page showing `/stats`
//!   live), `proxy::idle` the client connection's inactivity timeout and
//!   the raw input kept for the framing check, `proxy::record` the record
//!   of every decision (`--record`) as the node's messages and replies.
//! - `layers`: the `settings!` macro that declares a struct of optional
//!   settings once, for flags and files, with how one layer overrides
//!   another (the simulator's and the proxy's).
//! - `names`: the `named_enum!` macro that declares an enum with the
//!   names it goes by on the command line, in scenario files and on the
//!   wire (parsing, printing, serde), once for every such enum.
//! - [`fixture`]: recorded cases (input bytes, expected messages) replayed
//!   against the binary, for `leastconn replay` and the test suite.
#![forbid(unsafe_code)]

pub mod cli;
pub mod engine;
pub mod event_loop;
pub mod fixture;
pub mod framing;
pub(crate) mod layers;
pub mod message;
pub(crate) mod names;
pub mod node;
pub mod protocol;
pub mod proxy;
pub mod sim;
