//! `remove_backend`: take a backend out of the pool.
//!
//! ```json
//! {"type":"remove_backend","msg_id":9,"backend":"api-4"}
//! ```
//!
//! Removes a backend and its counts at once; later completions for it get
//! error 20. Reply `remove_backend_ok` with `backend` and the pool's
//! `active_connections`.

use super::{backend_field, backend_reply, refusal, Message};
use crate::node::Node;
use crate::protocol::fields::{Fields, Repr};
use crate::protocol::ProtocolError;
use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub struct RemoveBackend<'a> {
    pub backend: Cow<'a, str>,
}

impl<'a> Message<'a> for RemoveBackend<'a> {
    const TYPE: &'static str = "remove_backend";
    const REPLY: &'static str = "remove_backend_ok";
    /// The backend is gone from the pool, so it is named, not placed.
    type Outcome = String;

    fn parse<R: Repr<'a>>(f: &mut Fields<'a, R>) -> Result<Self, ProtocolError> {
        Ok(RemoveBackend {
            backend: backend_field::<R>(
                f.backend.take(),
                "remove_backend needs \"backend\": the name of a backend",
            )?,
        })
    }

    fn apply(self, node: &mut Node) -> Result<String, ProtocolError> {
        node.pool_mut().remove(&self.backend).map_err(refusal)?;
        Ok(self.backend.into_owned())
    }

    fn reply(backend: String, node: &Node, out: &mut Vec<u8>) {
        backend_reply(&backend, node, out);
    }
}
