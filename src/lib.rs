//! leastconn: a least-connections load balancer, spoken to as a
//! Maelstrom-style node over JSON lines.
#![forbid(unsafe_code)]

pub mod cli;
pub mod engine;
pub mod event_loop;
pub mod fixture;
pub mod framing;
pub mod node;
pub mod protocol;
