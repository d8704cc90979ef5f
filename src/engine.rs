//! The balancing engine: the backend pool, its active-connection counts, and
//! the choice of backend for each request.
//!
//! This module knows nothing of JSON, messages or I/O; every front-end (the
//! stdin/stdout node today) drives the same [`Pool`]. Every operation either
//! succeeds completely or fails with an [`EngineError`] and leaves the pool
//! exactly as it was.

use indexmap::IndexMap;
use std::fmt;

/// The largest count a backend can hold. A backend at this count cannot take
/// another connection, so it is treated as full rather than allowed to wrap.
pub const MAX_COUNT: u64 = u64::MAX;

/// One backend of the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    active: u64,
}

impl Backend {
    fn new() -> Self {
        Backend { active: 0 }
    }

    /// The number of connections this backend is serving now.
    pub fn active(&self) -> u64 {
        self.active
    }

    /// Whether this backend may be given a new connection.
    fn is_eligible(&self) -> bool {
        self.active < MAX_COUNT
    }
}

/// The selection algorithms the engine offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// The eligible backend with the fewest active connections; the one
    /// first in the pool on ties.
    #[default]
    LeastConnections,
}

impl Algorithm {
    /// Every algorithm, with the name the protocol knows it by.
    pub const NAMES: &'static [(&'static str, Algorithm)] =
        &[("least-connections", Algorithm::LeastConnections)];

    /// Looks an algorithm up by its protocol name.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, algorithm)| algorithm)
    }

    /// The protocol name of this algorithm.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map(|&(n, _)| n)
            .unwrap_or("least-connections")
    }
}

/// Why a request could not be given a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBackend {
    /// The pool has no backends at all.
    EmptyPool,
    /// Every backend's count is at [`MAX_COUNT`] and cannot grow.
    AllFull,
}

impl fmt::Display for NoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoBackend::EmptyPool => f.write_str("no backend available"),
            NoBackend::AllFull => write!(
                f,
                "no backend available: every backend's count is at the maximum ({MAX_COUNT})"
            ),
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
    /// No backend of this name is in the pool.
    UnknownBackend(String),
    /// The backend has no active connection to complete.
    NoActiveConnection(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::EmptyName => f.write_str("backend names must not be empty"),
            EngineError::DuplicateBackend(name) => {
                write!(f, "backend {name:?} is listed more than once")
            }
            EngineError::UnknownBackend(name) => {
                write!(f, "backend {name:?} is not in the pool")
            }
            EngineError::NoActiveConnection(name) => write!(
                f,
                "backend {name:?} has no active connections, so there is nothing to complete"
            ),
        }
    }
}

impl std::error::Error for EngineError {}

/// The backends, in pool order, with their counts.
///
/// "Lowest index" everywhere means "first in the pool": the order in which
/// backends were listed at creation, then appended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    backends: IndexMap<String, Backend>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Pool::default()
    }

    /// A pool of the given backends, in order, each with no connections.
    pub fn with_backends<'a, I>(names: I) -> Result<Pool, EngineError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let names = names.into_iter();
        let mut backends = IndexMap::with_capacity(names.size_hint().0);
        for name in names {
            if name.is_empty() {
                return Err(EngineError::EmptyName);
            }
            if backends.insert(name.to_owned(), Backend::new()).is_some() {
                return Err(EngineError::DuplicateBackend(name.to_owned()));
            }
        }
        Ok(Pool { backends })
    }

    /// The number of backends in the pool.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether the pool has no backends.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The backends with their names, in pool order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Backend)> + '_ {
        self.backends.iter().map(|(name, b)| (name.as_str(), b))
    }

    /// The backend at a pool position, with its name.
    pub fn get_index(&self, index: usize) -> Option<(&str, &Backend)> {
        self.backends
            .get_index(index)
            .map(|(name, b)| (name.as_str(), b))
    }

    /// The backend of that name.
    pub fn get(&self, name: &str) -> Option<&Backend> {
        self.backends.get(name)
    }

    /// Applies an observed snapshot of counts: each listed backend's count is
    /// set to the given value, and a name the pool lacks is appended, in the
    /// snapshot's order. Backends not listed keep their counts.
    ///
    /// Fails, changing nothing, if a name is empty or listed twice.
    pub fn apply_snapshot(&mut self, snapshot: &[(&str, u64)]) -> Result<(), EngineError> {
        check_names(snapshot.iter().map(|&(name, _)| name))?;
        for &(name, count) in snapshot {
            match self.backends.get_mut(name) {
                Some(backend) => backend.active = count,
                None => {
                    self.backends
                        .insert(name.to_owned(), Backend { active: count });
                }
            }
        }
        Ok(())
    }

    /// Chooses a backend for one new request and counts the connection at
    /// once. Returns the chosen backend's pool position.
    pub fn pick(&mut self, algorithm: Algorithm) -> Result<usize, NoBackend> {
        let index = self.select(algorithm)?;
        // `select` only returns eligible backends, which are below MAX_COUNT.
        if let Some((_, backend)) = self.backends.get_index_mut(index) {
            backend.active += 1;
        }
        Ok(index)
    }

    /// The backend `pick` would choose, without changing anything.
    pub fn select(&self, algorithm: Algorithm) -> Result<usize, NoBackend> {
        match algorithm {
            Algorithm::LeastConnections => {
                let mut best: Option<(usize, u64)> = None;
                for (index, backend) in self.backends.values().enumerate() {
                    if !backend.is_eligible() {
                        continue;
                    }
                    // Strictly fewer: on a tie the earlier backend stays.
                    if best.map_or(true, |(_, active)| backend.active < active) {
                        best = Some((index, backend.active));
                    }
                }
                best.map(|(index, _)| index).ok_or(self.why_none())
            }
        }
    }

    fn why_none(&self) -> NoBackend {
        if self.backends.is_empty() {
            NoBackend::EmptyPool
        } else {
            NoBackend::AllFull
        }
    }

    /// Records that a request on the named backend has finished: its count
    /// drops by one. Returns the backend's pool position.
    pub fn complete(&mut self, name: &str) -> Result<usize, EngineError> {
        let (index, _, backend) = self
            .backends
            .get_full_mut(name)
            .ok_or_else(|| EngineError::UnknownBackend(name.to_owned()))?;
        if backend.active == 0 {
            return Err(EngineError::NoActiveConnection(name.to_owned()));
        }
        backend.active -= 1;
        Ok(index)
    }
}

/// Checks that every name is non-empty and none repeats.
fn check_names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Result<(), EngineError> {
    // Snapshots are usually a handful of names: compare pairwise rather than
    // build a set for each request.
    const SMALL: usize = 16;
    let small = names.len() <= SMALL;
    let mut seen_small: Vec<&str> = Vec::new();
    let mut seen_large = std::collections::HashSet::new();
    for name in names {
        if name.is_empty() {
            return Err(EngineError::EmptyName);
        }
        let repeated = if small {
            let repeated = seen_small.contains(&name);
            seen_small.push(name);
            repeated
        } else {
            !seen_large.insert(name)
        };
        if repeated {
            return Err(EngineError::DuplicateBackend(name.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(names: &[&str]) -> Pool {
        Pool::with_backends(names.iter().copied()).expect("valid names")
    }

    fn counts(pool: &Pool) -> Vec<(String, u64)> {
        pool.iter()
            .map(|(name, b)| (name.to_owned(), b.active()))
            .collect()
    }

    fn name_of(pool: &Pool, index: usize) -> &str {
        pool.get_index(index).expect("index in pool").0
    }

    #[test]
    fn fresh_pool_picks_in_order_then_wraps() {
        let mut p = pool(&["api-1", "api-2", "api-3"]);
        let picks: Vec<String> = (0..4)
            .map(|_| {
                let i = p.pick(Algorithm::LeastConnections).unwrap();
                name_of(&p, i).to_owned()
            })
            .collect();
        assert_eq!(picks, ["api-1", "api-2", "api-3", "api-1"]);
        assert_eq!(
            counts(&p),
            [
                ("api-1".into(), 2),
                ("api-2".into(), 1),
                ("api-3".into(), 1)
            ]
        );
    }

    #[test]
    fn picks_fewest_and_counts_eagerly() {
        let mut p = pool(&["api-1", "api-2", "api-3"]);
        p.apply_snapshot(&[("api-1", 5), ("api-2", 2), ("api-3", 8)])
            .unwrap();
        assert_eq!(p.pick(Algorithm::LeastConnections), Ok(1));
        assert_eq!(p.get("api-2").unwrap().active(), 3);
        // api-2 at 3 is still the fewest; the increment is seen at once.
        assert_eq!(p.pick(Algorithm::LeastConnections), Ok(1));
        assert_eq!(p.pick(Algorithm::LeastConnections), Ok(1));
        assert_eq!(p.pick(Algorithm::LeastConnections), Ok(0));
    }

    #[test]
    fn ties_go_to_the_lowest_index() {
        let mut p = Pool::new();
        p.apply_snapshot(&[("c", 3), ("a", 3), ("b", 3)]).unwrap();
        assert_eq!(p.pick(Algorithm::LeastConnections), Ok(0));
        assert_eq!(name_of(&p, 0), "c");
    }

    #[test]
    fn snapshot_appends_in_its_own_order_and_keeps_unlisted_counts() {
        let mut p = pool(&["b"]);
        p.pick(Algorithm::LeastConnections).unwrap();
        p.apply_snapshot(&[("z", 4), ("a", 1)]).unwrap();
        assert_eq!(
            counts(&p),
            [("b".into(), 1), ("z".into(), 4), ("a".into(), 1)]
        );
    }

    #[test]
    fn rejected_snapshot_changes_nothing() {
        let mut p = pool(&["a", "b"]);
        let before = p.clone();
        assert_eq!(
            p.apply_snapshot(&[("a", 9), ("new", 1), ("a", 2)]),
            Err(EngineError::DuplicateBackend("a".into()))
        );
        assert_eq!(
            p.apply_snapshot(&[("a", 9), ("", 1)]),
            Err(EngineError::EmptyName)
        );
        assert_eq!(p, before);
    }

    #[test]
    fn duplicate_and_empty_names_are_refused_at_creation() {
        assert_eq!(
            Pool::with_backends(["a", "b", "a"]),
            Err(EngineError::DuplicateBackend("a".into()))
        );
        assert_eq!(Pool::with_backends(["a", ""]), Err(EngineError::EmptyName));
    }

    #[test]
    fn empty_pool_has_no_backend() {
        let mut p = Pool::new();
        assert_eq!(
            p.pick(Algorithm::LeastConnections),
            Err(NoBackend::EmptyPool)
        );
        assert_eq!(NoBackend::EmptyPool.to_string(), "no backend available");
    }

    #[test]
    fn a_saturated_count_is_skipped_not_wrapped() {
        let mut p = Pool::new();
        p.apply_snapshot(&[("full", MAX_COUNT), ("b", MAX_COUNT - 1)])
            .unwrap();
        assert_eq!(p.pick(Algorithm::LeastConnections), Ok(1));
        assert_eq!(p.get("b").unwrap().active(), MAX_COUNT);
        let before = p.clone();
        assert_eq!(p.pick(Algorithm::LeastConnections), Err(NoBackend::AllFull));
        assert_eq!(p, before);
        // A completion frees a slot again.
        p.complete("full").unwrap();
        assert_eq!(p.pick(Algorithm::LeastConnections), Ok(0));
    }

    #[test]
    fn completion_decrements_and_refuses_unknown_or_idle() {
        let mut p = pool(&["a", "b"]);
        p.pick(Algorithm::LeastConnections).unwrap();
        assert_eq!(p.complete("a"), Ok(0));
        assert_eq!(p.get("a").unwrap().active(), 0);
        let before = p.clone();
        assert_eq!(
            p.complete("a"),
            Err(EngineError::NoActiveConnection("a".into()))
        );
        assert_eq!(
            p.complete("zz"),
            Err(EngineError::UnknownBackend("zz".into()))
        );
        assert_eq!(p, before);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for &(name, algorithm) in Algorithm::NAMES {
            assert_eq!(Algorithm::from_name(name), Some(algorithm));
            assert_eq!(algorithm.name(), name);
        }
        assert_eq!(Algorithm::from_name("round-robin-ish"), None);
    }
}
