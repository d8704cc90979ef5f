//! `request_complete`: a request finished.
//!
//! ```json
//! {"type":"request_complete","msg_id":7,"backend":"api-2","ok":false,"duration_ms":120.5}
//! ```
//!
//! A request on `backend` (required string) has finished: its count drops
//! by one. `ok` (optional boolean, default true) false counts the request as
//! failed; `duration_ms` (optional number, 0 or more) joins the backend's
//! mean duration. Reply:
//!
//! ```json
//! {"type":"request_complete_ok","in_reply_to":7,"backend":"api-2","active_connections":{"api-1":5,"api-2":2,"api-3":8}}
//! ```

use super::{backend_reply, refusal, Message};
use crate::node::Node;
use crate::protocol::fields::{self, Fields, Repr};
use crate::protocol::ProtocolError;
use std::borrow::Cow;

#[derive(Debug, PartialEq)]
pub struct RequestComplete<'a> {
    pub backend: Cow<'a, str>,
    pub ok: bool,
    pub duration_ms: Option<f64>,
}

impl<'a> Message<'a> for RequestComplete<'a> {
    const TYPE: &'static str = "request_complete";
    const REPLY: &'static str = "request_complete_ok";
    /// The backend's pool position.
    type Outcome = usize;

    fn parse<R: Repr<'a>>(f: &mut Fields<'a, R>) -> Result<Self, ProtocolError> {
        let Some(backend) = f.backend.take() else {
            return Err(ProtocolError::malformed(
                "request_complete needs \"backend\": the name of the backend whose request finished",
            ));
        };
        let duration_ms = fields::optional::<R, _>(f.duration_ms.take(), fields::duration_ms)?;
        Ok(RequestComplete {
            backend: R::text(backend, "backend")?,
            ok: fields::boolean::<R>(f.ok.take(), "ok")?.unwrap_or(true),
            duration_ms,
        })
    }

    fn apply(self, node: &mut Node) -> Result<usize, ProtocolError> {
        let index = node
            .pool_mut()
            .complete(&self.backend, self.ok, self.duration_ms)
            .map_err(refusal)?;
        node.changed(index);
        Ok(index)
    }

    fn reply(index: usize, node: &Node, out: &mut Vec<u8>) {
        backend_reply(node.name(index), node, out);
    }
}
