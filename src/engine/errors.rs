//! Why the engine refused: no backend for a request, or an operation it
//! will not do.

use std::fmt;

/// Why a request could not be given a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBackend {
    /// The pool has no backends at all.
    EmptyPool,
    /// Every backend is ineligible; how many for each reason (`tried`: left
    /// out of this pick by the front-end, having failed it already).
    NoneEligible {
        down: usize,
        drained: usize,
        full: usize,
        tried: usize,
    },
}

impl fmt::Display for NoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NoBackend::NoneEligible {
            down,
            drained,
            full,
            tried,
        } = *self
        else {
            return f.write_str("no backend available");
        };
        let reasons = [
            (down, "down"),
            (drained, "drained (weight 0)"),
            (full, "full (at their connection limit)"),
            (tried, "already tried"),
        ];
        let present: Vec<(usize, &str)> = reasons.into_iter().filter(|&(n, _)| n > 0).collect();
        f.write_str("no backend available: ")?;
        match present[..] {
            [(1, why)] => write!(f, "the only backend is {}", why.replace("their", "its")),
            [(n, why)] => write!(f, "all {n} backends are {why}"),
            _ => {
                let parts: Vec<String> = present
                    .iter()
                    .map(|(n, why)| format!("{n} {why}"))
                    .collect();
                f.write_str(&parts.join(", "))
            }
        }
    }
}

/// An operation the engine refused. The pool is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// A backend name was empty.
    EmptyName,
    /// The same backend name was given twice in one list.
    DuplicateBackend(String),
    /// A backend of this name is already in the pool.
    AlreadyInPool(String),
    /// No backend of this name is in the pool.
    UnknownBackend(String),
    /// The backend has no active connection to complete.
    NoActiveConnection(String),
    /// No backend is at this pool position.
    NoPosition(usize),
    /// A ramp outside 1 to 100 percent.
    RampOutOfRange(u8),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::EmptyName => f.write_str("backend names must not be empty"),
            EngineError::DuplicateBackend(name) => {
                write!(f, "backend {} is listed more than once", short_name(name))
            }
            EngineError::AlreadyInPool(name) => {
                write!(f, "backend {} is already in the pool", short_name(name))
            }
            EngineError::UnknownBackend(name) => {
                write!(f, "backend {} is not in the pool", short_name(name))
            }
            EngineError::NoActiveConnection(name) => write!(
                f,
                "backend {} has no active connections, so there is nothing to complete",
                short_name(name)
            ),
            EngineError::NoPosition(index) => {
                write!(f, "no backend is at pool position {index}")
            }
            EngineError::RampOutOfRange(ramp) => write!(
                f,
                "a ramp is the percent of a backend's weight in effect, from 1 to 100, not {ramp}"
            ),
        }
    }
}

impl std::error::Error for EngineError {}

/// How many characters of a long name an error text quotes.
const SHOWN: usize = 40;

/// A backend name in an error text: in quotes, cut short (with its length)
/// if it is long, so that a megabyte of name is not repeated back.
pub fn short_name(name: &str) -> String {
    match name.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &name[..end], name.len()),
        None => format!("{name:?}"),
    }
}
