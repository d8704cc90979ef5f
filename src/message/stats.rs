//! `stats`: what has happened.
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
//! `ramp` (the percent of its weight in effect, set by `set_backend`)
//! follows `weight` only while it is below 100.

use super::Message;
use crate::engine::{Backend, Pool, FULL_RAMP};
use crate::node::Node;
use crate::protocol::fields::{Fields, Repr};
use crate::protocol::write::{key, WriteJson};
use crate::protocol::ProtocolError;

#[derive(Debug, PartialEq, Eq)]
pub struct Stats;

impl<'a> Message<'a> for Stats {
    const TYPE: &'static str = "stats";
    const REPLY: &'static str = "stats_ok";
    type Outcome = ();

    fn parse<R: Repr<'a>>(_: &mut Fields<'a, R>) -> Result<Self, ProtocolError> {
        Ok(Stats)
    }

    fn apply(self, _: &mut Node) -> Result<(), ProtocolError> {
        Ok(())
    }

    fn reply((): (), node: &Node, out: &mut Vec<u8>) {
        out.raw(b",");
        write_stats(node.pool(), out, |_, _| {});
    }
}

/// The pool's statistics as the members of an object, from
/// `"algorithm":` to `"backends":[…]` (the caller writes the braces and any
/// comma before); `extra` may add members to each backend's object, after
/// its name. Shared by `stats_ok` and the proxy's `GET /stats`.
pub fn write_stats<P>(
    pool: &Pool<P>,
    out: &mut Vec<u8>,
    extra: impl FnMut(&Backend<P>, &mut Vec<u8>),
) {
    let policy = pool.policy();
    out.raw(b"\"algorithm\":");
    out.str(policy.algorithm.name());
    out.raw(key!("tie_break"));
    out.str(policy.tie_break.name());
    out.raw(key!("rejected"));
    out.u64(pool.rejected());
    out.raw(key!("backends"));
    write_backends(pool, out, extra);
}

/// Every backend's settings and statistics, in pool order, as a JSON
/// array; `extra` may add members to each backend's object, after its name.
fn write_backends<P>(
    pool: &Pool<P>,
    out: &mut Vec<u8>,
    mut extra: impl FnMut(&Backend<P>, &mut Vec<u8>),
) {
    out.list(pool.iter(), |out, (name, backend): (&str, &Backend<P>)| {
        let stats = backend.stats();
        out.raw(b"{\"name\":");
        out.str(name);
        extra(backend, out);
        out.raw(key!("active"));
        out.u64(backend.active());
        out.raw(key!("weight"));
        out.u64(backend.weight());
        if backend.ramp() < FULL_RAMP {
            out.raw(key!("ramp"));
            out.u64(backend.ramp().into());
        }
        out.raw(key!("healthy"));
        out.bool(backend.healthy());
        out.raw(key!("max_connections"));
        out.opt_u64(backend.max_connections());
        out.raw(key!("requests"));
        out.u64(stats.requests);
        out.raw(key!("completed"));
        out.u64(stats.completed);
        out.raw(key!("failed"));
        out.u64(stats.failed);
        out.raw(key!("mean_duration_ms"));
        out.opt_f64(stats.mean_duration_ms());
        out.raw(b"}");
    });
}
