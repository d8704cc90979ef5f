//! `init`: set the pool.
//!
//! ```json
//! {"type":"init","msg_id":1,"backends":["api-1",{"name":"api-2","weight":4,"max_connections":100}],"algorithm":"least-connections","tie_break":"lowest-index","seed":42}
//! ```
//!
//! - `backends` (optional array): the new pool, in this order, each backend
//!   healthy with 0 connections. An element is a name (a non-empty string)
//!   or an object with `name` (required), `weight` (a whole number, default
//!   1; 0 drains the backend: it keeps its connections and gets no new
//!   ones) and `max_connections` (a whole number, or `null` for no limit,
//!   the default). Other keys, and a key given twice, are refused. Absent:
//!   the pool is empty.
//! - `algorithm` (optional string), the default for requests:
//!   `least-connections` (the default; `weighted-least-connections` is
//!   another name for it), `round-robin`, `random`, `power-of-two-choices`.
//! - `tie_break` (optional string), among backends with equal best score
//!   under least-connections: `lowest-index` (the default), `round-robin`,
//!   `random`.
//! - `seed` (optional integer; negative seeds mean the same 64 bits
//!   unsigned): seeds every random choice. Without it a fixed default seed
//!   is used, so the same input always gives the same output.
//! - `counts` (optional string): `all` (the default) or `changed`. With
//!   `changed`, the `active_connections` of every later reply lists only
//!   the backends whose count that message changed (set by a snapshot to a
//!   new value, appended, picked, completed, or added), in pool order; a
//!   pool of 10⁵ backends otherwise makes every reply 2 MB.
//! - `node_id` (optional string), `node_ids` (optional array of strings): the
//!   standard Maelstrom fields. `node_id` becomes the `src` of later replies.
//!
//! It replaces the pool, all counts, statistics and algorithm state. Reply:
//! `{"type":"init_ok","in_reply_to":1}`.

use super::{refusal, Message};
use crate::engine::{Algorithm, BackendSpec, Policy, PoolBuilder, TieBreak, DEFAULT_SEED};
use crate::node::{CountsMode, Node};
use crate::protocol::fields::{self, kind_of, Fields, Members, Repr};
use crate::protocol::ProtocolError;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

#[derive(Debug)]
pub struct Init<'a> {
    pub node_id: Option<Cow<'a, str>>,
    /// The `backends` array, read element by element as the pool is built,
    /// so that a list of millions is never copied.
    backends: Option<&'a RawValue>,
    pub policy: Policy,
    pub counts: CountsMode,
}

impl<'a> Message<'a> for Init<'a> {
    const TYPE: &'static str = "init";
    const REPLY: &'static str = "init_ok";
    type Outcome = ();

    fn parse<R: Repr<'a>>(f: &mut Fields<'a, R>) -> Result<Self, ProtocolError> {
        let node_id = fields::text::<R>(f.node_id.take(), "node_id")?;
        if let Some(ids) = f.node_ids.take().map(R::raw) {
            let all_strings = serde_json::from_str::<Vec<&RawValue>>(ids.get())
                .is_ok_and(|ids| ids.iter().all(|v| v.get().starts_with('"')));
            if !all_strings {
                return Err(ProtocolError::malformed(
                    "\"node_ids\" must be an array of strings",
                ));
            }
        }
        let backends = f.backends.take().map(R::raw);
        if let Some(list) = backends {
            if !list.get().starts_with('[') {
                return Err(not_a_list(list));
            }
        }
        let seed = fields::optional::<R, _>(f.seed.take(), fields::seed)?.unwrap_or(DEFAULT_SEED);
        let algorithm = fields::text::<R>(f.algorithm.take(), "algorithm")?;
        let algorithm = fields::named("algorithm", algorithm, Algorithm::NAMES)?;
        let tie_break = fields::text::<R>(f.tie_break.take(), "tie_break")?;
        let tie_break = fields::named("tie_break", tie_break, TieBreak::NAMES)?;
        let counts = fields::text::<R>(f.counts.take(), "counts")?;
        let counts = fields::named("counts", counts, CountsMode::NAMES)?;
        Ok(Init {
            node_id,
            backends,
            policy: Policy {
                algorithm: algorithm.unwrap_or_default(),
                tie_break: tie_break.unwrap_or_default(),
                seed,
            },
            counts: counts.unwrap_or_default(),
        })
    }

    fn apply(self, node: &mut Node) -> Result<(), ProtocolError> {
        // Built aside and swapped in whole, so that a refusal changes nothing;
        // sized exactly from a counting pass, so that a list of millions
        // never makes the pool's tables grow (and briefly double).
        let mut builder = PoolBuilder::new(self.policy, self.backend_count());
        self.for_each_backend(|backend| builder.push(backend.spec()).map_err(refusal))?;
        node.replace(builder.build(), self.counts, self.node_id);
        Ok(())
    }

    fn reply((): (), _: &Node, _: &mut Vec<u8>) {}
}

/// A backend as `init` or `add_backend` describes it.
#[derive(Debug, PartialEq, Eq)]
pub struct BackendConfig<'a> {
    pub name: Cow<'a, str>,
    pub weight: u64,
    pub max_connections: Option<u64>,
}

impl BackendConfig<'_> {
    /// The engine's view of this backend.
    pub fn spec(&self) -> BackendSpec<'_> {
        BackendSpec {
            name: &self.name,
            weight: self.weight,
            max_connections: self.max_connections,
        }
    }
}

impl<'a> Init<'a> {
    /// How many backends the list has.
    pub fn backend_count(&self) -> usize {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
                let mut n = 0;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(n)
            }
        }
        self.backends
            .and_then(|raw| {
                serde_json::Deserializer::from_str(raw.get())
                    .deserialize_seq(Count)
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Reads the backends in order, handing each to `f`; stops at the first
    /// error, of the list or of `f`.
    pub fn for_each_backend(
        &self,
        mut f: impl FnMut(BackendConfig<'a>) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        let Some(list) = self.backends else {
            return Ok(());
        };
        fields::for_each_element(list, |i, element| f(backend_config(i, element)?))
            .map_err(|e| e.unwrap_or_else(|| not_a_list(list)))
    }
}

fn not_a_list(list: &RawValue) -> ProtocolError {
    ProtocolError::malformed(format!(
        "\"backends\" must be an array of backend names or objects, found {}",
        kind_of(list)
    ))
}

/// One element of `backends`: a name, or
/// `{"name", "weight", "max_connections"}`, each key at most once.
fn backend_config(i: usize, raw: &RawValue) -> Result<BackendConfig<'_>, ProtocolError> {
    match kind_of(raw) {
        "a string" => {
            return Ok(BackendConfig {
                name: fields::string(&format!("backends[{i}]"), raw)?,
                weight: 1,
                max_connections: None,
            })
        }
        "an object" => {}
        kind => {
            return Err(ProtocolError::malformed(format!(
                "backends[{i}] must be a backend name or an object {{\"name\", \"weight\", \"max_connections\"}}, found {kind}"
            )))
        }
    }
    let Members(members) = serde_json::from_str(raw.get()).map_err(|_| {
        let escape = fields::unpaired_surrogate(raw.get()).unwrap_or("an escape");
        ProtocolError::malformed(format!(
            "a key of backends[{i}] contains {escape}, an unpaired surrogate escape, which is no character"
        ))
    })?;
    let mut name = None;
    let mut weight = None;
    let mut max_connections = None;
    for (key, value) in members {
        let repeated = match &*key {
            "name" => name
                .replace(fields::string(&format!("backends[{i}].name"), value)?)
                .is_some(),
            "weight" => weight
                .replace(fields::whole_number(&format!("backends[{i}].weight"), value)?)
                .is_some(),
            "max_connections" => max_connections
                .replace(fields::limit(&format!("backends[{i}].max_connections"), value)?)
                .is_some(),
            other => {
                return Err(ProtocolError::malformed(format!(
                    "backends[{i}] has an unknown field {other:?}; a backend has \"name\", \"weight\" and \"max_connections\""
                )))
            }
        };
        if repeated {
            return Err(ProtocolError::malformed(format!(
                "backends[{i}] has {key:?} more than once; each field may appear only once"
            )));
        }
    }
    let name =
        name.ok_or_else(|| ProtocolError::malformed(format!("backends[{i}] needs a \"name\"")))?;
    Ok(BackendConfig {
        name,
        weight: weight.unwrap_or(1),
        max_connections: max_connections.flatten(),
    })
}
