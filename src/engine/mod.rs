//! The balancing engine: the backend pool, its counts and statistics, and
//! the choice of backend for each request.
//!
//! This module knows nothing of JSON, messages, I/O or clocks; every
//! front-end drives the same [`Pool`]. Every operation either succeeds
//! completely or fails with an [`EngineError`] and leaves the pool exactly
//! as it was.
//!
//! A backend has a position (its place in pool order, which shifts when an
//! earlier backend is removed) and a [`BackendId`] that never changes and is
//! never reused: completing a request on a backend removed since it was
//! picked is a harmless no-op, and a name removed and added again is a
//! different backend. Each backend carries a payload of the front-end's
//! (the proxy keeps its address there; the node keeps nothing).
//!
//! - [`select`]: the selection algorithms and tie-breaks, and the
//!   explanation of a pick.
//! - [`rng`]: the seeded random number generator behind every random
//!   choice.
//! - `tree`: the index that makes least-connections and power-of-two-choices
//!   picks O(log N).
//! - `errors`: [`NoBackend`] and [`EngineError`], why the engine refused.
//! - [`shared`]: a pool shared by concurrent tasks behind one short lock,
//!   the [`Lease`] that holds one request's count until it ends, and the
//!   [`Journal`] told of every change in engine order.

mod errors;
pub mod rng;
pub mod select;
pub mod shared;
mod tree;

use indexmap::IndexMap;

pub use errors::{short_name, EngineError, NoBackend};
pub use select::{Algorithm, Candidate, Explanation, Ineligible, Load, Score, Tie, TieBreak};
pub use shared::{Journal, Lease, SharedPool};

/// A backend's identity for as long as it is in the pool, and never another
/// backend's: a slot and the generation of that slot's occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendId {
    slot: u32,
    generation: u32,
}

/// Where a slot's backend is, if the slot is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    generation: u32,
    /// `FREE` when no backend holds the slot.
    position: u32,
}

const FREE: u32 = u32::MAX;

/// The largest count a backend can hold. A backend at this count cannot take
/// another connection, so it is treated as full rather than allowed to wrap.
pub const MAX_COUNT: u64 = u64::MAX;

/// The longest duration a completion may report, in milliseconds: with
/// every one of 2^64 completions at this, a backend's total still fits in
/// an `f64`, so its mean is always a number.
pub const MAX_DURATION_MS: f64 = 1e288;

/// The seed used when none is given, so that runs are reproducible unless
/// told otherwise.
pub const DEFAULT_SEED: u64 = 0x6C65_6173_7463_6F6E; // "leastcon"

/// How a backend is configured: what `init`, `add_backend` and snapshots
/// create it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec<'a> {
    pub name: &'a str,
    /// Relative capacity; 0 drains the backend.
    pub weight: u64,
    /// No new connections once `active` reaches this.
    pub max_connections: Option<u64>,
}

impl<'a> BackendSpec<'a> {
    /// A backend of weight 1 with no connection limit.
    pub fn named(name: &'a str) -> Self {
        BackendSpec {
            name,
            weight: 1,
            max_connections: None,
        }
    }
}

/// A change to a backend's settings; `None` leaves a setting as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendChange {
    pub healthy: Option<bool>,
    pub weight: Option<u64>,
    /// `Some(None)` removes the limit.
    pub max_connections: Option<Option<u64>>,
    /// The percent of its weight in effect, from 1 to [`FULL_RAMP`] (see
    /// [`Backend::ramp`]).
    pub ramp: Option<u8>,
}

/// A backend's ramp when its whole weight is in effect: the default.
pub const FULL_RAMP: u8 = 100;

/// One backend of the pool. Kept small: a pool may hold millions.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend<P = ()> {
    active: u64,
    weight: u64,
    /// `u64::MAX` for no limit, which behaves the same: no count exceeds it.
    limit: u64,
    healthy: bool,
    /// The percent of `weight` in effect, 1 to [`FULL_RAMP`]; fits in the
    /// padding after `healthy`.
    ramp: u8,
    /// Its slot, for its [`BackendId`].
    slot: u32,
    stats: BackendStats,
    payload: P,
}

/// What has happened on a backend since it joined the pool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendStats {
    /// Times it was picked.
    pub requests: u64,
    /// Completions accepted, failed ones included.
    pub completed: u64,
    /// Completions reported as failed.
    pub failed: u64,
    duration_sum_ms: f64,
    duration_count: u64,
}

impl BackendStats {
    /// The mean of the durations reported with completions, if any were.
    pub fn mean_duration_ms(&self) -> Option<f64> {
        (self.duration_count > 0).then(|| self.duration_sum_ms / self.duration_count as f64)
    }
}

impl<P> Backend<P> {
    fn new(spec: &BackendSpec<'_>, payload: P) -> Self {
        Backend {
            active: 0,
            weight: spec.weight,
            limit: spec.max_connections.unwrap_or(u64::MAX),
            healthy: true,
            ramp: FULL_RAMP,
            slot: FREE,
            stats: BackendStats::default(),
            payload,
        }
    }

    /// What the front-end keeps with this backend.
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// The number of connections this backend is serving now.
    pub fn active(&self) -> u64 {
        self.active
    }

    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// The connection limit; `None` when unset (or set to 2^64 - 1, which
    /// is the same).
    pub fn max_connections(&self) -> Option<u64> {
        (self.limit != u64::MAX).then_some(self.limit)
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// The percent of its weight in effect, from 1 to [`FULL_RAMP`] (the
    /// default): a backend brought back into service is ramped up from a
    /// small share (slow start) by its front-end, step by step, as the
    /// engine keeps no clock. Least-connections and power-of-two-choices
    /// compare active ÷ (weight × ramp ÷ 100), exactly; round-robin and
    /// random use the weight alone, as they give a returning backend only
    /// its share anyway.
    pub fn ramp(&self) -> u8 {
        self.ramp
    }

    /// What least-connections compares.
    fn load(&self) -> Load {
        Load {
            active: self.active,
            weight: self.weight,
            ramp: self.ramp,
        }
    }

    pub fn stats(&self) -> &BackendStats {
        &self.stats
    }

    /// Why this backend may not take a new connection, if it may not.
    pub fn ineligible(&self) -> Option<Ineligible> {
        if !self.healthy {
            Some(Ineligible::Down)
        } else if self.weight == 0 {
            Some(Ineligible::Drained)
        } else if self.active >= self.limit || self.active == MAX_COUNT {
            Some(Ineligible::Full)
        } else {
            None
        }
    }
}

/// How a pool chooses, fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Used by requests that do not name an algorithm.
    pub algorithm: Algorithm,
    pub tie_break: TieBreak,
    /// Seeds every random choice.
    pub seed: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            algorithm: Algorithm::default(),
            tie_break: TieBreak::default(),
            seed: DEFAULT_SEED,
        }
    }
}

/// The result of a pick: the chosen pool position, or why there was none,
/// and the explanation if one was asked for.
///
/// A position is valid until the pool next changes; [`Pool::id_at`] gives
/// the backend's lasting identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    pub chosen: Result<usize, NoBackend>,
    pub explanation: Option<Explanation>,
}

/// The backends, in pool order, with their counts, and how to choose.
///
/// "Lowest index" everywhere means "first in the pool": the order in which
/// backends were listed at creation, then appended.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool<P = ()> {
    backends: IndexMap<Box<str>, Backend<P>>,
    /// Every slot ever used: its current generation and its backend's
    /// position.
    slots: Vec<Slot>,
    /// Slots whose backend was removed, to reuse with the next generation.
    free_slots: Vec<u32>,
    policy: Policy,
    rng: rng::Rng,
    /// Where the round-robin tie-break starts looking: just after the
    /// previous pick's position.
    next_after_pick: usize,
    /// Requests that found no eligible backend.
    rejected: u64,
    /// Kept in step with `backends` by every change to them.
    tree: tree::LoadTree,
    /// Smooth round-robin's running weight per position, kept across pool
    /// changes. Empty until round-robin is first used (all zero).
    running_weights: Vec<i128>,
    /// Positions left out of the pick in progress (see
    /// [`Pool::pick_with`]); empty between picks.
    excluded: Vec<usize>,
}

impl<P> Default for Pool<P> {
    fn default() -> Self {
        Pool::with_policy(Policy::default())
    }
}

impl Pool {
    /// An empty pool with the default policy.
    pub fn new() -> Self {
        Pool::default()
    }
}

impl<P> Pool<P> {
    /// An empty pool that chooses by `policy`.
    pub fn with_policy(policy: Policy) -> Self {
        Pool {
            backends: IndexMap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            policy,
            rng: rng::Rng::new(policy.seed),
            next_after_pick: 0,
            rejected: 0,
            tree: tree::LoadTree::default(),
            running_weights: Vec::new(),
            excluded: Vec::new(),
        }
    }

    /// A pool of the given backends, in order, each with no connections and
    /// its payload.
    pub fn with_payloads<'a, I>(specs: I, policy: Policy) -> Result<Pool<P>, EngineError>
    where
        I: IntoIterator<Item = (BackendSpec<'a>, P)>,
    {
        let specs = specs.into_iter();
        let mut builder = PoolBuilder::new(policy, specs.size_hint().0);
        for (spec, payload) in specs {
            builder.push_with(spec, payload)?;
        }
        Ok(builder.build())
    }

    /// The lasting identity of the backend at a position.
    pub fn id_at(&self, position: usize) -> Option<BackendId> {
        let (_, backend) = self.backends.get_index(position)?;
        let slot = self.slots.get(backend.slot as usize)?;
        Some(BackendId {
            slot: backend.slot,
            generation: slot.generation,
        })
    }

    /// Where a backend is now, if it is still in the pool.
    pub fn position_of(&self, id: BackendId) -> Option<usize> {
        let slot = self.slots.get(id.slot as usize)?;
        (slot.generation == id.generation && slot.position != FREE)
            .then_some(slot.position as usize)
    }

    /// Gives a newly placed backend a slot, reusing a freed one.
    fn assign_slot(&mut self, position: usize) {
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize].position = position as u32;
                slot
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    position: position as u32,
                });
                (self.slots.len() - 1) as u32
            }
        };
        if let Some((_, backend)) = self.backends.get_index_mut(position) {
            backend.slot = slot;
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// How many requests were refused for want of an eligible backend.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Counts a request refused for want of an eligible backend, for a
    /// front-end that refuses after [`Pool::pick_with`] (which counts
    /// nothing itself: a request may wait and be picked later).
    pub fn reject(&mut self) {
        self.rejected += 1;
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
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Backend<P>)> + '_ {
        self.backends.iter().map(|(name, b)| (&**name, b))
    }

    /// The backend at a pool position, with its name.
    pub fn get_index(&self, index: usize) -> Option<(&str, &Backend<P>)> {
        self.backends.get_index(index).map(|(name, b)| (&**name, b))
    }

    /// The backend of that name.
    pub fn get(&self, name: &str) -> Option<&Backend<P>> {
        self.backends.get(name)
    }

    /// The pool position of the backend of that name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.backends.get_index_of(name)
    }

    /// Chooses a backend for one new request by `algorithm` (the pool's
    /// default if `None`), never one of `excluded` (see
    /// [`Pool::pick_with`]), and counts the connection at once. A request
    /// that finds no eligible backend is counted as rejected.
    pub fn pick(
        &mut self,
        algorithm: Option<Algorithm>,
        excluded: &[BackendId],
        explain: bool,
    ) -> Pick {
        let pick = self.pick_with(algorithm, excluded, explain);
        if pick.chosen.is_err() {
            self.rejected += 1;
        }
        pick
    }

    /// As [`Pool::pick`], never choosing one of `excluded` (backends a
    /// request has already failed on; ids no longer in the pool are
    /// ignored), and without counting a refusal (see [`Pool::reject`]). An
    /// explanation shows the excluded backends as [`Ineligible::Excluded`]
    /// (unless ineligible anyway), and a refusal counts them as `tried`.
    pub fn pick_with(
        &mut self,
        algorithm: Option<Algorithm>,
        excluded: &[BackendId],
        explain: bool,
    ) -> Pick {
        let algorithm = algorithm.unwrap_or(self.policy.algorithm);
        for &id in excluded {
            if let Some(position) = self.position_of(id) {
                self.excluded.push(position);
                self.tree.exclude(&self.backends, position);
            }
        }
        // Described before the pick, as the algorithm saw the pool.
        let mut explanation = explain.then(|| self.describe(algorithm));
        let choice = self.choose(algorithm, explain);
        if !self.excluded.is_empty() {
            self.end_exclusions();
        }
        let chosen = choice.map(|choice| {
            self.count_pick(choice.index);
            if let Some(e) = &mut explanation {
                e.tie = choice.tie;
                e.sampled = choice.sampled;
            }
            choice.index
        });
        Pick {
            chosen,
            explanation,
        }
    }

    /// Puts the backends left out of a pick back into the index.
    fn end_exclusions(&mut self) {
        for &position in &self.excluded {
            self.tree.update(&self.backends, position);
        }
        self.excluded.clear();
    }

    /// Counts a new connection on the backend at `index`, which `choose`
    /// found eligible (so below the largest count).
    fn count_pick(&mut self, index: usize) {
        if let Some((_, backend)) = self.backends.get_index_mut(index) {
            backend.active += 1;
            backend.stats.requests += 1;
        }
        self.tree.update(&self.backends, index);
        self.next_after_pick = index + 1;
    }

    /// Records that a request on the named backend has finished: its count
    /// drops by one. `ok` is false for a failed request; `duration_ms`, if
    /// known, joins the backend's mean (limited to 0 to
    /// [`MAX_DURATION_MS`]; not a number counts as unknown). Returns the
    /// backend's position.
    pub fn complete(
        &mut self,
        name: &str,
        ok: bool,
        duration_ms: Option<f64>,
    ) -> Result<usize, EngineError> {
        let index = self
            .backends
            .get_index_of(name)
            .ok_or_else(|| EngineError::UnknownBackend(name.to_owned()))?;
        self.complete_at(index, ok, duration_ms)?;
        Ok(index)
    }

    /// [`Pool::complete`] for a backend known by its id. A backend removed
    /// since is no error: there is nothing left to count, and `None` says
    /// so; otherwise its position.
    pub fn release(
        &mut self,
        id: BackendId,
        ok: bool,
        duration_ms: Option<f64>,
    ) -> Result<Option<usize>, EngineError> {
        let Some(index) = self.position_of(id) else {
            return Ok(None);
        };
        self.complete_at(index, ok, duration_ms)?;
        Ok(Some(index))
    }

    fn complete_at(
        &mut self,
        index: usize,
        ok: bool,
        duration_ms: Option<f64>,
    ) -> Result<(), EngineError> {
        let (name, backend) = self
            .backends
            .get_index_mut(index)
            .ok_or(EngineError::NoPosition(index))?;
        if backend.active == 0 {
            return Err(EngineError::NoActiveConnection(name.to_string()));
        }
        backend.active -= 1;
        let stats = &mut backend.stats;
        stats.completed += 1;
        if !ok {
            stats.failed += 1;
        }
        if let Some(ms) = duration_ms.filter(|ms| !ms.is_nan()) {
            stats.duration_sum_ms += ms.clamp(0.0, MAX_DURATION_MS);
            stats.duration_count += 1;
        }
        self.tree.update(&self.backends, index);
        Ok(())
    }

    /// Sets the count of a backend, as a snapshot does, for front-ends that
    /// learn counts from elsewhere (a balancer catching up with its peers).
    pub fn set_active(&mut self, id: BackendId, count: u64) -> Result<(), EngineError> {
        let index = self
            .position_of(id)
            .ok_or(EngineError::NoPosition(usize::MAX))?;
        let (_, backend) = self
            .backends
            .get_index_mut(index)
            .ok_or(EngineError::NoPosition(index))?;
        if backend.active != count {
            backend.active = count;
            self.tree.update(&self.backends, index);
        }
        Ok(())
    }

    /// Appends a backend with no connections and its payload. Returns its
    /// position.
    pub fn add_with(&mut self, spec: BackendSpec<'_>, payload: P) -> Result<usize, EngineError> {
        if spec.name.is_empty() {
            return Err(EngineError::EmptyName);
        }
        if self.backends.contains_key(spec.name) {
            return Err(EngineError::AlreadyInPool(spec.name.to_owned()));
        }
        let (index, _) = self
            .backends
            .insert_full(spec.name.into(), Backend::new(&spec, payload));
        self.assign_slot(index);
        self.tree.update(&self.backends, index);
        Ok(index)
    }

    /// Removes a backend and its counts at once; later backends move up one
    /// position, and its id is never valid again. Returns the position it
    /// had.
    pub fn remove(&mut self, name: &str) -> Result<usize, EngineError> {
        let (index, _, removed) = self
            .backends
            .shift_remove_full(name)
            .ok_or_else(|| EngineError::UnknownBackend(name.to_owned()))?;
        if let Some(slot) = self.slots.get_mut(removed.slot as usize) {
            slot.generation = slot.generation.wrapping_add(1);
            slot.position = FREE;
            self.free_slots.push(removed.slot);
        }
        // Every later position moved up one: O(N), as IndexMap's own removal.
        for backend in self.backends.values().skip(index) {
            if let Some(slot) = self.slots.get_mut(backend.slot as usize) {
                slot.position -= 1;
            }
        }
        if index < self.next_after_pick {
            self.next_after_pick -= 1;
        }
        if index < self.running_weights.len() {
            self.running_weights.remove(index);
        }
        self.tree.rebuild(&self.backends);
        Ok(index)
    }

    /// Changes a backend's health, weight, limit or ramp. Returns its
    /// position.
    pub fn change(&mut self, name: &str, change: BackendChange) -> Result<usize, EngineError> {
        let (index, _, backend) = self
            .backends
            .get_full_mut(name)
            .ok_or_else(|| EngineError::UnknownBackend(name.to_owned()))?;
        let mut ramp_ended = false;
        if let Some(ramp) = change.ramp {
            if !(1..=FULL_RAMP).contains(&ramp) {
                return Err(EngineError::RampOutOfRange(ramp));
            }
            ramp_ended = ramp == FULL_RAMP && backend.ramp < FULL_RAMP;
            backend.ramp = ramp;
        }
        if let Some(healthy) = change.healthy {
            backend.healthy = healthy;
        }
        if let Some(weight) = change.weight {
            backend.weight = weight;
        }
        if let Some(limit) = change.max_connections {
            backend.limit = limit.unwrap_or(u64::MAX);
        }
        self.tree.update(&self.backends, index);
        // The last slow start over: the index may compare without ramps
        // again. A scan, once per slow start.
        if ramp_ended && self.backends.values().all(|b| b.ramp == FULL_RAMP) {
            self.tree.ramps_ended();
        }
        Ok(index)
    }

    /// Why no backend is eligible. Only meaningful when none is.
    fn why_none(&self) -> NoBackend {
        if self.backends.is_empty() {
            return NoBackend::EmptyPool;
        }
        let (mut down, mut drained, mut full, mut tried) = (0, 0, 0, 0);
        for (index, backend) in self.backends.values().enumerate() {
            match backend.ineligible() {
                Some(Ineligible::Down) => down += 1,
                Some(Ineligible::Drained) => drained += 1,
                Some(Ineligible::Full) => full += 1,
                Some(Ineligible::Excluded) => tried += 1,
                None if self.excluded.contains(&index) => tried += 1,
                None => {}
            }
        }
        NoBackend::NoneEligible {
            down,
            drained,
            full,
            tried,
        }
    }
}

impl<P: Default> Pool<P> {
    /// A pool of the given backends, in order, each with no connections.
    pub fn with_backends<'a, I>(specs: I, policy: Policy) -> Result<Pool<P>, EngineError>
    where
        I: IntoIterator<Item = BackendSpec<'a>>,
    {
        Pool::with_payloads(specs.into_iter().map(|spec| (spec, P::default())), policy)
    }

    /// Applies an observed snapshot of counts: each listed backend's count is
    /// set to the given value, and a name the pool lacks is appended (weight
    /// 1, no limit, the default payload), in the snapshot's order. Backends
    /// not listed keep their counts. The positions whose count changed,
    /// appended ones included, are added to `changed`.
    ///
    /// Fails, changing nothing, if a name is empty or listed twice.
    pub fn apply_snapshot<S: AsRef<str>>(
        &mut self,
        snapshot: &[(S, u64)],
        changed: &mut Vec<usize>,
    ) -> Result<(), EngineError> {
        check_snapshot(snapshot)?;
        for (name, count) in snapshot {
            let (name, count) = (name.as_ref(), *count);
            match self.backends.get_full_mut(name) {
                Some((index, _, backend)) => {
                    if backend.active != count {
                        backend.active = count;
                        changed.push(index);
                        self.tree.update(&self.backends, index);
                    }
                }
                None => {
                    let mut backend = Backend::new(&BackendSpec::named(name), P::default());
                    backend.active = count;
                    let (index, _) = self.backends.insert_full(name.into(), backend);
                    self.assign_slot(index);
                    changed.push(index);
                    self.tree.update(&self.backends, index);
                }
            }
        }
        Ok(())
    }

    /// Appends a backend with no connections. Returns its position.
    pub fn add(&mut self, spec: BackendSpec<'_>) -> Result<usize, EngineError> {
        self.add_with(spec, P::default())
    }
}

/// Builds a pool one backend at a time, as a list is read.
#[derive(Debug)]
pub struct PoolBuilder<P = ()> {
    pool: Pool<P>,
}

impl<P> PoolBuilder<P> {
    /// A builder for a pool of about `capacity` backends.
    pub fn new(policy: Policy, capacity: usize) -> Self {
        let mut pool = Pool::with_policy(policy);
        pool.backends.reserve_exact(capacity);
        pool.slots.reserve_exact(capacity);
        PoolBuilder { pool }
    }

    /// Appends a backend with no connections and its payload.
    pub fn push_with(&mut self, spec: BackendSpec<'_>, payload: P) -> Result<(), EngineError> {
        if spec.name.is_empty() {
            return Err(EngineError::EmptyName);
        }
        let mut backend = Backend::new(&spec, payload);
        backend.slot = self.pool.slots.len() as u32;
        match self.pool.backends.entry(spec.name.into()) {
            indexmap::map::Entry::Occupied(_) => {
                Err(EngineError::DuplicateBackend(spec.name.to_owned()))
            }
            indexmap::map::Entry::Vacant(entry) => {
                let position = entry.index() as u32;
                entry.insert(backend);
                self.pool.slots.push(Slot {
                    generation: 0,
                    position,
                });
                Ok(())
            }
        }
    }

    /// The finished pool.
    pub fn build(mut self) -> Pool<P> {
        self.pool.tree.rebuild(&self.pool.backends);
        self.pool
    }
}

impl<P: Default> PoolBuilder<P> {
    /// Appends a backend with no connections.
    pub fn push(&mut self, spec: BackendSpec<'_>) -> Result<(), EngineError> {
        self.push_with(spec, P::default())
    }
}

/// Checks, in order, that every name of a snapshot is non-empty and none
/// repeats; the first problem is the one reported. [`Pool::apply_snapshot`]
/// does this itself; a front-end may check first, before other checks that
/// must come before any change.
pub fn check_snapshot<S: AsRef<str>>(snapshot: &[(S, u64)]) -> Result<(), EngineError> {
    // Snapshots are usually a handful of names: compare pairwise rather than
    // build a set for each request.
    const SMALL: usize = 16;
    let mut seen =
        (snapshot.len() > SMALL).then(|| std::collections::HashSet::with_capacity(snapshot.len()));
    for (i, (name, _)) in snapshot.iter().enumerate() {
        let name = name.as_ref();
        if name.is_empty() {
            return Err(EngineError::EmptyName);
        }
        let repeated = match &mut seen {
            Some(seen) => !seen.insert(name),
            None => snapshot[..i]
                .iter()
                .any(|(earlier, _)| earlier.as_ref() == name),
        };
        if repeated {
            return Err(EngineError::DuplicateBackend(name.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
