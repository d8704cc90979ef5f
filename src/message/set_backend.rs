//! `set_backend`: change a backend's health, weight, limit or ramp.
//!
//! ```json
//! {"type":"set_backend","msg_id":10,"backend":"api-1","healthy":false,"weight":3,"max_connections":10,"ramp":25}
//! ```
//!
//! Changes any of `healthy` (boolean), `weight`, `max_connections` (`null`
//! removes the limit) and `ramp`; fields left out keep their values. Reply
//! `set_backend_ok` with `backend` and the pool's `active_connections`.
//!
//! `ramp` (a whole number from 1 to 100, 100 for every backend until set)
//! is the percent of the backend's weight in effect, for a slow start: a
//! backend back in service with 0 connections would otherwise take every
//! new request under least-connections until it caught up with the others.
//! Its front-end brings it back at a low ramp and steps the ramp up to 100
//! over time (HAProxy's `slowstart`, NGINX's `slow_start`); the node keeps
//! no clock. Least-connections and power-of-two-choices compare active ÷
//! (weight × ramp ÷ 100), exactly; round-robin and random ignore the ramp,
//! as they give a returning backend only its share of requests anyway. Any
//! other value (0, 101, 1.5, a string) is error 12.

use super::{backend_field, backend_reply, refusal, Message};
use crate::engine::BackendChange;
use crate::node::Node;
use crate::protocol::fields::{self, Fields, Repr};
use crate::protocol::ProtocolError;
use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub struct SetBackend<'a> {
    pub backend: Cow<'a, str>,
    pub change: BackendChange,
}

impl<'a> Message<'a> for SetBackend<'a> {
    const TYPE: &'static str = "set_backend";
    const REPLY: &'static str = "set_backend_ok";
    /// The backend's pool position.
    type Outcome = usize;

    fn parse<R: Repr<'a>>(f: &mut Fields<'a, R>) -> Result<Self, ProtocolError> {
        Ok(SetBackend {
            backend: backend_field::<R>(
                f.backend.take(),
                "set_backend needs \"backend\": the name of a backend",
            )?,
            change: BackendChange {
                healthy: fields::boolean::<R>(f.healthy.take(), "healthy")?,
                weight: fields::optional::<R, _>(f.weight.take(), |r| fields::whole_number("weight", r))?,
                max_connections: fields::optional::<R, _>(f.max_connections.take(), |r| {
                    fields::limit("max_connections", r)
                })?,
                ramp: fields::optional::<R, _>(f.ramp.take(), fields::ramp)?,
            },
        })
    }

    fn apply(self, node: &mut Node) -> Result<usize, ProtocolError> {
        node.pool_mut()
            .change(&self.backend, self.change)
            .map_err(refusal)
    }

    fn reply(index: usize, node: &Node, out: &mut Vec<u8>) {
        backend_reply(node.name(index), node, out);
    }
}
