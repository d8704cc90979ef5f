//! `http_request`: pick a backend.
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
//! - `exclude` (optional array of backend names): backends left out of this
//!   pick, as a proxy's retry never goes back to a backend that just failed
//!   the same request. Each must be in the pool (after the snapshot):
//!   another name is error 20, naming it; anything but an array of strings
//!   is error 12. With every eligible backend excluded the answer is a 503
//!   (`… already tried`), counted in `rejected` as every 503 is.
//!
//! Then one eligible backend is chosen and its count grows by one at once:
//!
//! - `least-connections`: the lowest active ÷ weight, compared exactly by
//!   cross-multiplication, with the weight taken at its ramp (active ÷
//!   (weight × ramp ÷ 100); see `set_backend`); ties by the `tie_break`: the first in pool order
//!   (`lowest-index`); the first whose position comes after the previous
//!   pick's, by any algorithm, wrapping around (`round-robin`); or one at
//!   random (`random`).
//! - `round-robin`: NGINX's smooth weighted round-robin. Each pick adds every
//!   eligible backend's weight to its running weight, takes the highest
//!   (first in pool order on ties) and subtracts the eligible backends' total
//!   weight from it. Running weights start at 0 and survive pool changes.
//!   Ramps are ignored.
//! - `random`: an eligible backend at random, in proportion to weight
//!   (ramps ignored).
//! - `power-of-two-choices`: two distinct eligible backends at random; the
//!   lower active ÷ weight (at its ramp, as for least-connections) wins,
//!   the earlier in pool order on a tie. With one eligible backend, that
//!   one.
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
//! `no backend available: 1 down, 1 drained (weight 0), 1 full (at their connection limit)`;
//! backends left out by `exclude` are `already tried`.
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
//!   pick: `active`, `weight`, `ramp` (only when below 100), `eligible`,
//!   and `reason` (`down`, `drained` or `full`, or `excluded` for one this
//!   request's `exclude` left out) when not eligible. Eligible backends
//!   have a `score` where the algorithm compares one: active ÷ (weight ×
//!   ramp ÷ 100) for least-connections and power-of-two-choices (lower
//!   wins; shown as a decimal, compared exactly), the running weight after
//!   this pick's increase for round-robin (higher wins); none for random.
//! - `tie`: `null`, or the backends that shared the best score (`tied`, in
//!   pool order) and the rule that chose among them (`broken_by`); for the
//!   `round-robin` rule also `after`, the backend the search started after:
//!   the previous pick's (or, if that one was removed since, the one before
//!   its place), `null` before the first pick.
//! - `sampled` (power-of-two-choices only): the two backends drawn, in pool
//!   order.
//!

use super::{refusal, Message};
use crate::engine::{
    check_snapshot, Algorithm, BackendId, EngineError, Explanation, NoBackend, Pool, Score,
    TieBreak, FULL_RAMP,
};
use crate::node::Node;
use crate::protocol::fields::{self, Fields, Repr};
use crate::protocol::write::{key, WriteJson};
use crate::protocol::ProtocolError;
use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    pub snapshot: Option<Vec<(Cow<'a, str>, u64)>>,
    pub algorithm: Option<Algorithm>,
    pub explain: bool,
    /// Backend names left out of this pick.
    pub exclude: Vec<Cow<'a, str>>,
}

/// Where the request went, by pool position, or why it went nowhere.
pub struct Routed {
    chosen: Result<usize, NoBackend>,
    explanation: Option<Explanation>,
}

impl<'a> Message<'a> for HttpRequest<'a> {
    const TYPE: &'static str = "http_request";
    const REPLY: &'static str = "http_response";
    type Outcome = Routed;

    fn parse<R: Repr<'a>>(f: &mut Fields<'a, R>) -> Result<Self, ProtocolError> {
        fields::text::<R>(f.method.take(), "method")?;
        fields::text::<R>(f.path.take(), "path")?;
        let snapshot = match f.active_connections.take() {
            Some(entries) => Some(fields::snapshot(R::entries(entries)?)?),
            None => None,
        };
        let algorithm = fields::text::<R>(f.algorithm.take(), "algorithm")?;
        Ok(HttpRequest {
            snapshot,
            algorithm: fields::named("algorithm", algorithm, Algorithm::NAMES)?,
            explain: fields::boolean::<R>(f.explain.take(), "explain")?.unwrap_or(false),
            exclude: fields::optional::<R, _>(f.exclude.take(), |r| fields::names("exclude", r))?
                .unwrap_or_default(),
        })
    }

    fn apply(self, node: &mut Node) -> Result<Routed, ProtocolError> {
        if !self.exclude.is_empty() {
            // Every name checked before the snapshot changes anything; a
            // snapshot's own problem is reported first, as it comes first.
            let snapshot = self.snapshot.as_deref().unwrap_or_default();
            check_snapshot(snapshot).map_err(refusal)?;
            let unknown = self.exclude.iter().find(|name| {
                node.pool().position(name).is_none()
                    && !snapshot.iter().any(|(listed, _)| listed == *name)
            });
            if let Some(name) = unknown {
                return Err(refusal(EngineError::UnknownBackend(name.to_string())));
            }
        }
        if let Some(snapshot) = &self.snapshot {
            node.apply_snapshot(snapshot)?;
        }
        let pool = node.pool();
        let excluded: Vec<BackendId> = self
            .exclude
            .iter()
            .filter_map(|name| pool.position(name).and_then(|i| pool.id_at(i)))
            .collect();
        let pick = node.pick(self.algorithm, &excluded, self.explain);
        Ok(Routed {
            chosen: pick.chosen,
            explanation: pick.explanation,
        })
    }

    fn reply(routed: Routed, node: &Node, out: &mut Vec<u8>) {
        match routed.chosen {
            Ok(index) => {
                out.raw(b",\"status\":200,\"backend\":");
                out.str(node.name(index));
            }
            Err(none) => {
                out.raw(b",\"status\":503,\"error\":");
                out.str(&none.to_string());
            }
        }
        out.raw(key!("active_connections"));
        node.write_counts(out);
        if let Some(explanation) = &routed.explanation {
            out.raw(key!("explain"));
            write_explanation(explanation, node.pool(), out);
        }
    }
}

/// An explanation, with pool positions turned into names.
fn write_explanation(e: &Explanation, pool: &Pool, out: &mut Vec<u8>) {
    let name = |index: usize| pool.get_index(index).map_or("", |(name, _)| name);
    out.raw(b"{\"algorithm\":");
    out.str(e.algorithm.name());
    out.raw(key!("candidates"));
    out.list(&e.candidates, |out, c| {
        out.raw(b"{\"backend\":");
        out.str(name(c.index));
        out.raw(key!("active"));
        out.u64(c.active);
        out.raw(key!("weight"));
        out.u64(c.weight);
        if c.ramp < FULL_RAMP {
            out.raw(key!("ramp"));
            out.u64(c.ramp.into());
        }
        out.raw(key!("eligible"));
        out.bool(c.ineligible.is_none());
        if let Some(reason) = c.ineligible {
            out.raw(key!("reason"));
            out.str(reason.name());
        }
        match c.score {
            Some(Score::Ratio {
                active,
                weight,
                ramp,
            }) => {
                out.raw(key!("score"));
                // Shown as a decimal for reading; picks compare it exactly.
                let (active, weight) = (active as f64, weight as f64);
                out.f64(if ramp == FULL_RAMP {
                    active / weight
                } else {
                    active * 100.0 / (weight * f64::from(ramp))
                });
            }
            Some(Score::CurrentWeight(w)) => {
                out.raw(key!("score"));
                out.i128(w);
            }
            None => {}
        }
        out.raw(b"}");
    });
    if let Some(sampled) = e.sampled {
        out.raw(key!("sampled"));
        out.list(sampled, |out, i| out.str(name(i)));
    }
    out.raw(key!("tie"));
    match &e.tie {
        None => out.raw(b"null"),
        Some(tie) => {
            out.raw(b"{\"tied\":");
            out.list(&tie.tied, |out, &i| out.str(name(i)));
            out.raw(key!("broken_by"));
            out.str(tie.rule.name());
            if tie.rule == TieBreak::RoundRobin {
                out.raw(key!("after"));
                out.opt_str(tie.after.map(name));
            }
            out.raw(b"}");
        }
    }
    out.raw(b"}");
}
