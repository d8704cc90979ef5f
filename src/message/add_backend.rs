//! `add_backend`: append a backend to the pool, as HAProxy's runtime API
//! does and as a health checker needs.
//!
//! ```json
//! {"type":"add_backend","msg_id":8,"backend":"api-4","weight":2,"max_connections":50}
//! ```
//!
//! Appends a healthy backend with 0 connections; `weight` and
//! `max_connections` are as in `init`'s backend objects. `address`
//! (optional string, such as `"10.0.0.4:8080"`) is accepted and not used:
//! a proxy adds a backend with the address it will connect to, and the
//! record of its decisions, replayed here, keeps it. As in `init`'s backend
//! objects, other fields are refused (error 12): only `type`, `msg_id`,
//! `backend`, `weight`, `max_connections` and `address`. Reply:
//!
//! ```json
//! {"type":"add_backend_ok","in_reply_to":8,"backend":"api-4","active_connections":{"api-1":5,"api-2":2,"api-3":8,"api-4":0}}
//! ```

use super::init::BackendConfig;
use super::{backend_field, backend_reply, refusal, Message};
use crate::node::Node;
use crate::protocol::fields::{self, Fields, Repr};
use crate::protocol::ProtocolError;
use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub struct AddBackend<'a> {
    pub backend: BackendConfig<'a>,
    /// Where a proxy connects to it; not used by the node.
    pub address: Option<Cow<'a, str>>,
}

/// The body fields an `add_backend` has.
const KNOWN: &[&str] = &[
    "type",
    "msg_id",
    "backend",
    "weight",
    "max_connections",
    "address",
];

impl<'a> Message<'a> for AddBackend<'a> {
    const TYPE: &'static str = "add_backend";
    const REPLY: &'static str = "add_backend_ok";
    /// The new backend's pool position.
    type Outcome = usize;

    fn parse<R: Repr<'a>>(f: &mut Fields<'a, R>) -> Result<Self, ProtocolError> {
        let extra = f.present().find(|key| !KNOWN.contains(key));
        let config = BackendConfig {
            name: backend_field::<R>(f.backend.take(), "add_backend needs \"backend\": the name of a backend")?,
            weight: fields::optional::<R, _>(f.weight.take(), |r| fields::whole_number("weight", r))?
                .unwrap_or(1),
            max_connections: fields::optional::<R, _>(f.max_connections.take(), |r| {
                fields::limit("max_connections", r)
            })?
            .flatten(),
        };
        let address = fields::text::<R>(f.address.take(), "address")?;
        if let Some(extra) = extra.map(Cow::Borrowed).or(f.unknown.take()) {
            return Err(ProtocolError::malformed(format!(
                "add_backend has an unknown field {}; a backend has \"backend\" (its name), \"weight\", \"max_connections\" and \"address\"",
                fields::short_name(&extra)
            )));
        }
        Ok(AddBackend {
            backend: config,
            address,
        })
    }

    fn apply(self, node: &mut Node) -> Result<usize, ProtocolError> {
        let index = node.pool_mut().add(self.backend.spec()).map_err(refusal)?;
        node.changed(index);
        Ok(index)
    }

    fn reply(index: usize, node: &Node, out: &mut Vec<u8>) {
        backend_reply(node.name(index), node, out);
    }
}
