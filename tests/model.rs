//! Model-based tests of the engine: a deliberately naive model (a plain
//! list, linear scans, fractions compared by cross-multiplying) and the real
//! [`Pool`] are driven by the same random operation sequences, and must
//! agree after every operation on the pick, every count and setting, and
//! the error.
//!
//! Covered: inits with weights and limits, requests with and without partial
//! snapshots that add backends, valid and invalid completions, health,
//! weight, limit and ramp changes (valid and not), adds and removes, the
//! deterministic algorithms
//! (least-connections, round-robin) and tie-breaks (lowest-index,
//! round-robin). Random algorithms are covered by the engine's unit tests.

use leastconn::engine::{
    Algorithm, BackendChange, BackendSpec, EngineError, NoBackend, Policy, Pool, TieBreak,
    MAX_COUNT,
};
use proptest::prelude::*;

// --- the model ---------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct ModelBackend {
    name: String,
    active: u64,
    weight: u64,
    max: Option<u64>,
    healthy: bool,
    /// The percent of `weight` in effect (slow start).
    ramp: u8,
    running_weight: i128,
}

#[derive(Clone, Debug)]
struct Model {
    backends: Vec<ModelBackend>,
    algorithm: Algorithm,
    tie_break: TieBreak,
    /// Positions at or after this are "after the previous pick".
    after: usize,
}

/// What an operation did, in the model's terms.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Done,
    Picked(String),
    NoBackend {
        down: usize,
        drained: usize,
        full: usize,
        /// Eligible, but left out of this pick.
        tried: usize,
        empty: bool,
    },
    Refused(&'static str),
}

impl Model {
    fn new(
        specs: &[(String, u64, Option<u64>)],
        algorithm: Algorithm,
        tie_break: TieBreak,
    ) -> Option<Model> {
        let mut backends: Vec<ModelBackend> = Vec::new();
        for (name, weight, max) in specs {
            if name.is_empty() || backends.iter().any(|b| &b.name == name) {
                return None;
            }
            backends.push(ModelBackend {
                name: name.clone(),
                active: 0,
                weight: *weight,
                max: *max,
                healthy: true,
                ramp: 100,
                running_weight: 0,
            });
        }
        Some(Model {
            backends,
            algorithm,
            tie_break,
            after: 0,
        })
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    fn eligible(b: &ModelBackend) -> bool {
        let limit = b.max.unwrap_or(MAX_COUNT);
        b.healthy && b.weight > 0 && b.active < limit && b.active < MAX_COUNT
    }

    /// a.active / (a.weight × a.ramp) against b's, exactly: the cross
    /// products as schoolbook numbers in 32-bit digits.
    fn compare_loads(a: &ModelBackend, b: &ModelBackend) -> std::cmp::Ordering {
        /// The product, least significant digit first.
        fn product(factors: [u64; 3]) -> [u64; 6] {
            let mut digits = [1, 0, 0, 0, 0, 0];
            for factor in factors {
                let parts = [factor & 0xFFFF_FFFF, factor >> 32];
                let mut result = [0u64; 6];
                for (i, &digit) in digits.iter().enumerate() {
                    for (j, &part) in parts.iter().enumerate() {
                        let mut carry = digit * part;
                        let mut k = i + j;
                        while carry > 0 && k < 6 {
                            let sum = result[k] + (carry & 0xFFFF_FFFF);
                            result[k] = sum & 0xFFFF_FFFF;
                            carry = (carry >> 32) + (sum >> 32);
                            k += 1;
                        }
                    }
                }
                digits = result;
            }
            digits
        }
        let left = product([a.active, b.weight, b.ramp as u64]);
        let right = product([b.active, a.weight, a.ramp as u64]);
        left.iter().rev().cmp(right.iter().rev())
    }

    fn lighter(a: &ModelBackend, b: &ModelBackend) -> bool {
        Self::compare_loads(a, b) == std::cmp::Ordering::Less
    }

    fn same_load(a: &ModelBackend, b: &ModelBackend) -> bool {
        Self::compare_loads(a, b) == std::cmp::Ordering::Equal
    }

    fn snapshot(&mut self, entries: &[(String, u64)]) -> Result<(), &'static str> {
        for (i, (name, _)) in entries.iter().enumerate() {
            if name.is_empty() {
                return Err("empty");
            }
            if entries[..i].iter().any(|(n, _)| n == name) {
                return Err("duplicate");
            }
        }
        for (name, count) in entries {
            match self.position(name) {
                Some(i) => self.backends[i].active = *count,
                None => self.backends.push(ModelBackend {
                    name: name.clone(),
                    active: *count,
                    weight: 1,
                    max: None,
                    healthy: true,
                    ramp: 100,
                    running_weight: 0,
                }),
            }
        }
        Ok(())
    }

    /// Picks among the eligible backends not named in `excluded`.
    fn pick(&mut self, algorithm: Option<Algorithm>, excluded: &[String]) -> Outcome {
        let algorithm = algorithm.unwrap_or(self.algorithm);
        let left_out = |b: &ModelBackend| excluded.contains(&b.name);
        let eligible: Vec<usize> = (0..self.backends.len())
            .filter(|&i| Self::eligible(&self.backends[i]) && !left_out(&self.backends[i]))
            .collect();
        if eligible.is_empty() {
            let count =
                |f: &dyn Fn(&ModelBackend) -> bool| self.backends.iter().filter(|b| f(b)).count();
            return Outcome::NoBackend {
                empty: self.backends.is_empty(),
                down: count(&|b| !b.healthy),
                drained: count(&|b| b.healthy && b.weight == 0),
                full: count(&|b| b.healthy && b.weight > 0 && !Self::eligible(b)),
                tried: count(&|b| Self::eligible(b) && left_out(b)),
            };
        }
        let chosen = match algorithm {
            Algorithm::LeastConnections => {
                let mut best = eligible[0];
                for &i in &eligible {
                    if Self::lighter(&self.backends[i], &self.backends[best]) {
                        best = i;
                    }
                }
                let tied: Vec<usize> = eligible
                    .iter()
                    .copied()
                    .filter(|&i| Self::same_load(&self.backends[i], &self.backends[best]))
                    .collect();
                match self.tie_break {
                    TieBreak::RoundRobin => tied
                        .iter()
                        .copied()
                        .find(|&i| i >= self.after)
                        .unwrap_or(tied[0]),
                    _ => tied[0],
                }
            }
            Algorithm::RoundRobin => {
                let total: i128 = eligible
                    .iter()
                    .map(|&i| self.backends[i].weight as i128)
                    .sum();
                for &i in &eligible {
                    let b = &mut self.backends[i];
                    b.running_weight += b.weight as i128;
                }
                let mut best = eligible[0];
                for &i in &eligible {
                    if self.backends[i].running_weight > self.backends[best].running_weight {
                        best = i;
                    }
                }
                self.backends[best].running_weight -= total;
                best
            }
            other => unreachable!("the model covers deterministic algorithms, not {other:?}"),
        };
        self.backends[chosen].active += 1;
        self.after = chosen + 1;
        Outcome::Picked(self.backends[chosen].name.clone())
    }

    fn complete(&mut self, name: &str) -> Outcome {
        match self.position(name) {
            None => Outcome::Refused("unknown"),
            Some(i) if self.backends[i].active == 0 => Outcome::Refused("idle"),
            Some(i) => {
                self.backends[i].active -= 1;
                Outcome::Done
            }
        }
    }

    fn add(&mut self, name: &str, weight: u64, max: Option<u64>) -> Outcome {
        if name.is_empty() {
            return Outcome::Refused("empty");
        }
        if self.position(name).is_some() {
            return Outcome::Refused("exists");
        }
        self.backends.push(ModelBackend {
            name: name.to_owned(),
            active: 0,
            weight,
            max,
            healthy: true,
            ramp: 100,
            running_weight: 0,
        });
        Outcome::Done
    }

    fn remove(&mut self, name: &str) -> Outcome {
        let Some(i) = self.position(name) else {
            return Outcome::Refused("unknown");
        };
        self.backends.remove(i);
        if i < self.after {
            self.after -= 1;
        }
        Outcome::Done
    }

    fn change(&mut self, name: &str, change: BackendChange) -> Outcome {
        let Some(i) = self.position(name) else {
            return Outcome::Refused("unknown");
        };
        if change.ramp.is_some_and(|r| !(1..=100).contains(&r)) {
            return Outcome::Refused("ramp");
        }
        let b = &mut self.backends[i];
        if let Some(r) = change.ramp {
            b.ramp = r;
        }
        if let Some(h) = change.healthy {
            b.healthy = h;
        }
        if let Some(w) = change.weight {
            b.weight = w;
        }
        if let Some(m) = change.max_connections {
            b.max = m;
        }
        Outcome::Done
    }
}

// --- operations ----------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Init {
        backends: Vec<(String, u64, Option<u64>)>,
        algorithm: Algorithm,
        tie_break: TieBreak,
    },
    Request {
        snapshot: Option<Vec<(String, u64)>>,
        algorithm: Option<Algorithm>,
        /// Backends this request has already failed on, as a proxy's retry
        /// leaves them out.
        excluded: Vec<String>,
    },
    Complete(String),
    Change(String, BackendChange),
    Add(String, u64, Option<u64>),
    Remove(String),
}

fn name() -> impl Strategy<Value = String> {
    // Few names, so that they collide: duplicates, unknowns and re-adds.
    prop_oneof![
        10 => (0..6u8).prop_map(|i| format!("b{i}")),
        1 => Just(String::new()),
    ]
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..6u64, 1 => Just(MAX_COUNT - 1), 1 => Just(MAX_COUNT)]
}

fn weight() -> impl Strategy<Value = u64> {
    prop_oneof![6 => 1..4u64, 2 => Just(0u64), 1 => Just(u64::MAX)]
}

fn limit() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![3 => Just(None), 2 => (0..5u64).prop_map(Some)]
}

/// Mostly full or a few common steps, so that loads still tie; sometimes
/// out of range, to be refused.
fn ramp() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(100u8),
        2 => prop::sample::select(vec![1u8, 10, 25, 50]),
        2 => 1..=100u8,
        1 => prop::sample::select(vec![0u8, 101, u8::MAX]),
    ]
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::LeastConnections),
        Just(Algorithm::RoundRobin)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (
            prop::collection::vec((name(), weight(), limit()), 0..6),
            algorithm(),
            prop_oneof![Just(TieBreak::LowestIndex), Just(TieBreak::RoundRobin)],
        )
            .prop_map(|(backends, algorithm, tie_break)| Op::Init { backends, algorithm, tie_break }),
        8 => (
            prop::option::weighted(0.3, prop::collection::vec((name(), count()), 0..4)),
            prop::option::weighted(0.2, algorithm()),
            prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(name(), 1..4)],
        )
            .prop_map(|(snapshot, algorithm, excluded)| Op::Request { snapshot, algorithm, excluded }),
        5 => name().prop_map(Op::Complete),
        2 => (
            name(),
            prop::option::of(any::<bool>()),
            prop::option::of(weight()),
            prop::option::of(limit()),
            prop::option::weighted(0.4, ramp()),
        )
            .prop_map(|(n, healthy, weight, max_connections, ramp)| {
                Op::Change(n, BackendChange { healthy, weight, max_connections, ramp })
            }),
        1 => (name(), weight(), limit()).prop_map(|(n, w, m)| Op::Add(n, w, m)),
        1 => name().prop_map(Op::Remove),
    ]
}

// --- driving both ----------------------------------------------------------------

fn engine_refusal(e: &EngineError) -> &'static str {
    match e {
        EngineError::EmptyName => "empty",
        EngineError::DuplicateBackend(_) => "duplicate",
        EngineError::AlreadyInPool(_) => "exists",
        EngineError::UnknownBackend(_) | EngineError::NoPosition(_) => "unknown",
        EngineError::NoActiveConnection(_) => "idle",
        EngineError::RampOutOfRange(_) => "ramp",
    }
}

fn engine_outcome<T>(result: Result<T, EngineError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Done,
        Err(e) => Outcome::Refused(engine_refusal(&e)),
    }
}

/// The engine's state in the model's terms (running weights are checked
/// through the picks they produce).
type State = Vec<(String, u64, u64, Option<u64>, bool, u8)>;

fn engine_state(pool: &Pool) -> State {
    pool.iter()
        .map(|(n, b)| {
            (
                n.to_owned(),
                b.active(),
                b.weight(),
                b.max_connections(),
                b.healthy(),
                b.ramp(),
            )
        })
        .collect()
}

fn model_state(model: &Model) -> State {
    model
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.active, b.weight, b.max, b.healthy, b.ramp))
        .collect()
}

/// Applies one operation to both; returns the two outcomes.
fn apply(pool: &mut Pool, model: &mut Model, op: &Op) -> (Outcome, Outcome) {
    match op {
        Op::Init {
            backends,
            algorithm,
            tie_break,
        } => {
            let policy = Policy {
                algorithm: *algorithm,
                tie_break: *tie_break,
                ..Policy::default()
            };
            let specs = backends.iter().map(|(n, w, m)| BackendSpec {
                name: n,
                weight: *w,
                max_connections: *m,
            });
            let engine = match Pool::with_backends(specs, policy) {
                Ok(new) => {
                    *pool = new;
                    Outcome::Done
                }
                Err(e) => Outcome::Refused(engine_refusal(&e)),
            };
            let modelled = match Model::new(backends, *algorithm, *tie_break) {
                Some(new) => {
                    *model = new;
                    Outcome::Done
                }
                None => {
                    // Which refusal: the first bad name decides.
                    let mut seen = Vec::new();
                    let mut why = "duplicate";
                    for (n, _, _) in backends {
                        if n.is_empty() {
                            why = "empty";
                            break;
                        }
                        if seen.contains(&n) {
                            break;
                        }
                        seen.push(n);
                    }
                    Outcome::Refused(why)
                }
            };
            (engine, modelled)
        }
        Op::Request {
            snapshot,
            algorithm,
            excluded,
        } => {
            if let Some(entries) = snapshot {
                let borrowed: Vec<(&str, u64)> =
                    entries.iter().map(|(n, c)| (n.as_str(), *c)).collect();
                let engine = pool.apply_snapshot(&borrowed, &mut Vec::new());
                let modelled = model.snapshot(entries);
                match (&engine, &modelled) {
                    (Ok(()), Ok(())) => {}
                    _ => {
                        return (
                            engine_outcome(engine),
                            match modelled {
                                Ok(()) => Outcome::Done,
                                Err(why) => Outcome::Refused(why),
                            },
                        )
                    }
                }
            }
            // Left out by id, as a proxy does: names not in the pool have
            // none.
            let ids: Vec<_> = excluded
                .iter()
                .filter_map(|n| pool.position(n))
                .filter_map(|i| pool.id_at(i))
                .collect();
            let chosen = pool.pick(*algorithm, &ids, false).chosen;
            let engine = match chosen {
                Ok(i) => Outcome::Picked(pool.get_index(i).unwrap().0.to_owned()),
                Err(NoBackend::EmptyPool) => Outcome::NoBackend {
                    empty: true,
                    down: 0,
                    drained: 0,
                    full: 0,
                    tried: 0,
                },
                Err(NoBackend::NoneEligible {
                    down,
                    drained,
                    full,
                    tried,
                }) => Outcome::NoBackend {
                    empty: false,
                    down,
                    drained,
                    full,
                    tried,
                },
            };
            (engine, model.pick(*algorithm, excluded))
        }
        Op::Complete(n) => (
            engine_outcome(pool.complete(n, true, None)),
            model.complete(n),
        ),
        Op::Change(n, change) => (
            engine_outcome(pool.change(n, *change)),
            model.change(n, *change),
        ),
        Op::Add(n, w, m) => (
            engine_outcome(pool.add(BackendSpec {
                name: n,
                weight: *w,
                max_connections: *m,
            })),
            model.add(n, *w, *m),
        ),
        Op::Remove(n) => (engine_outcome(pool.remove(n)), model.remove(n)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut pool = Pool::new();
        let mut model = Model::new(&[], Algorithm::LeastConnections, TieBreak::LowestIndex).unwrap();
        // For the conservation invariant: since the last init or snapshot.
        let mut conserved = true;
        let (mut routed, mut completed, mut removed) = (0u128, 0u128, 0u128);
        for (step, op) in ops.iter().enumerate() {
            let before = pool.clone();
            let removed_count = match op {
                Op::Remove(n) => pool.get(n).map_or(0, |b| b.active()),
                _ => 0,
            };
            let (engine, modelled) = apply(&mut pool, &mut model, op);
            prop_assert_eq!(&engine, &modelled, "step {}: {:?}", step, op);
            prop_assert_eq!(engine_state(&pool), model_state(&model), "step {}: {:?}", step, op);
            if let Outcome::Refused(_) = engine {
                prop_assert_eq!(&pool, &before, "a refused {:?} changed the pool", op);
            }
            match (op, &engine) {
                (Op::Init { .. }, Outcome::Done) => {
                    conserved = true;
                    (routed, completed, removed) = (0, 0, 0);
                }
                (Op::Request { snapshot: Some(_), .. }, _) => conserved = false,
                (Op::Request { .. }, Outcome::Picked(_)) => routed += 1,
                (Op::Complete(_), Outcome::Done) => completed += 1,
                (Op::Remove(_), Outcome::Done) => removed += removed_count as u128,
                _ => {}
            }
            if conserved {
                let sum: u128 = pool.iter().map(|(_, b)| b.active() as u128).sum();
                prop_assert_eq!(sum, routed - completed - removed, "step {}", step);
            }
        }
    }
}
