//! Property tests of the leases: [`SharedPool`] driven by random
//! interleavings of acquires (with exclusions), releases in any order
//! (recorded ok or failed, or cancelled with nothing recorded), operator
//! changes, and adds and removes (a backend removed with leases out, then
//! added again under the same name), checked after every step against a
//! model of what each backend's count must be. A leaked or misdirected
//! count steers traffic away from a healthy backend for good, so every
//! count must be exact, and zero once every lease is gone.
//!
//! Each backend's payload is its incarnation, a number never reused: a
//! lease's payload says which backend of that name it was taken on.

use leastconn::engine::{
    Algorithm, Backend, BackendChange, BackendId, BackendSpec, EngineError, Journal, Lease,
    NoBackend, Policy, Pool, SharedPool, FULL_RAMP,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::LeastConnections,
    Algorithm::RoundRobin,
    Algorithm::Random,
    Algorithm::PowerOfTwoChoices,
];

// --- the model ---------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Expected {
    incarnation: u64,
    active: u64,
    weight: u64,
    healthy: bool,
    max: Option<u64>,
    ramp: u8,
    requests: u64,
    completed: u64,
    failed: u64,
}

impl Expected {
    fn new(incarnation: u64, weight: u64, max: Option<u64>) -> Expected {
        Expected {
            incarnation,
            active: 0,
            weight,
            healthy: true,
            max,
            ramp: FULL_RAMP,
            requests: 0,
            completed: 0,
            failed: 0,
        }
    }

    fn eligible(&self) -> bool {
        self.healthy && self.weight > 0 && self.max.is_none_or(|max| self.active < max)
    }

    fn apply(&mut self, change: &BackendChange) {
        self.ramp = change.ramp.unwrap_or(self.ramp);
        self.healthy = change.healthy.unwrap_or(self.healthy);
        self.weight = change.weight.unwrap_or(self.weight);
        self.max = change.max_connections.unwrap_or(self.max);
    }
}

/// Name → the backend of that name now. A removed backend's leases count
/// nowhere: its entry is gone, and a new one of its name has another
/// incarnation.
#[derive(Debug, Default)]
struct Model {
    backends: BTreeMap<String, Expected>,
    next_incarnation: u64,
    rejected: u64,
}

impl Model {
    fn incarnation(&mut self) -> u64 {
        self.next_incarnation += 1;
        self.next_incarnation
    }

    /// The backend a lease on `incarnation` counts on, if still there.
    fn holder(&mut self, incarnation: u64) -> Option<&mut Expected> {
        self.backends
            .values_mut()
            .find(|b| b.incarnation == incarnation)
    }
}

// --- the operations ----------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// `reject` for `acquire_or_reject`; `excluded` a mask over `NAMES`,
    /// `stale` an id of a backend removed since added to it.
    Acquire {
        algorithm: Option<usize>,
        excluded: u8,
        stale: bool,
        reject: bool,
    },
    /// The lease at `index` (modulo how many there are) ends: recorded ok
    /// or failed, or dropped with nothing recorded (cancelled).
    Release {
        index: usize,
        ok: Option<bool>,
    },
    Change {
        name: usize,
        change: BackendChange,
        /// Through `change_with`, decided from the backend as it is.
        with: bool,
    },
    Add {
        name: usize,
        weight: u64,
        max: Option<u64>,
        /// Through `add_then`, starting at this ramp.
        ramp: Option<u8>,
    },
    Remove {
        name: usize,
    },
}

fn change() -> impl Strategy<Value = BackendChange> {
    (
        proptest::option::of(any::<bool>()),
        proptest::option::of(0u64..4),
        proptest::option::of(proptest::option::of(0u64..4)),
        proptest::option::of(1u8..=FULL_RAMP),
    )
        .prop_map(|(healthy, weight, max_connections, ramp)| BackendChange {
            healthy,
            weight,
            max_connections,
            ramp,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::option::of(0..ALGORITHMS.len()), any::<u8>(), any::<bool>(), any::<bool>())
            .prop_map(|(algorithm, excluded, stale, reject)| Op::Acquire {
                algorithm,
                // Mostly few exclusions: a full mask excludes everything.
                excluded: excluded & excluded.rotate_left(3),
                stale,
                reject,
            }),
        5 => (any::<usize>(), proptest::option::of(any::<bool>()))
            .prop_map(|(index, ok)| Op::Release { index, ok }),
        2 => (0..NAMES.len(), change(), any::<bool>())
            .prop_map(|(name, change, with)| Op::Change { name, change, with }),
        1 => (
            0..NAMES.len(),
            0u64..4,
            proptest::option::of(0u64..4),
            proptest::option::of(1u8..=FULL_RAMP)
        )
            .prop_map(|(name, weight, max, ramp)| Op::Add { name, weight, max, ramp }),
        1 => (0..NAMES.len()).prop_map(|name| Op::Remove { name }),
    ]
}

// --- the run -----------------------------------------------------------------

struct Run {
    pool: SharedPool<u64>,
    model: Model,
    leases: Vec<Lease<u64>>,
    /// Ids of backends since removed, for exclusions that name them.
    stale: Vec<BackendId>,
}

impl Run {
    fn new(initial: &[(u64, Option<u64>)]) -> Run {
        let mut model = Model::default();
        let mut specs = Vec::new();
        for (name, &(weight, max)) in NAMES.iter().zip(initial) {
            let incarnation = model.incarnation();
            model
                .backends
                .insert((*name).to_owned(), Expected::new(incarnation, weight, max));
            let spec = BackendSpec {
                name,
                weight,
                max_connections: max,
            };
            specs.push((spec, incarnation));
        }
        let pool = Pool::with_payloads(specs, Policy::default()).expect("distinct names");
        Run {
            pool: SharedPool::new(pool),
            model,
            leases: Vec::new(),
            stale: Vec::new(),
        }
    }

    fn id_of(&self, name: &str) -> Option<BackendId> {
        self.pool
            .read(|p| p.position(name).and_then(|i| p.id_at(i)))
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Acquire {
                algorithm,
                excluded,
                stale,
                reject,
            } => self.acquire(algorithm.map(|i| ALGORITHMS[i]), excluded, stale, reject)?,
            Op::Release { index, ok } => {
                if self.leases.is_empty() {
                    return Ok(());
                }
                let mut lease = self.leases.swap_remove(index % self.leases.len());
                let incarnation = *lease.payload();
                if let Some(ok) = ok {
                    lease.record(ok, Duration::from_millis(3));
                }
                drop(lease);
                if let Some(b) = self.model.holder(incarnation) {
                    b.active -= 1;
                    b.completed += 1;
                    b.failed += u64::from(ok == Some(false));
                }
            }
            Op::Change { name, change, with } => {
                let name = NAMES[name];
                let got = if with {
                    // Applied only to a backend that is in, as a check that
                    // takes one out does; tells which way it decided.
                    let mut healthy_before = None;
                    let got = self.pool.change_with(name, |b: &Backend<u64>| {
                        healthy_before = Some(b.healthy());
                        b.healthy().then_some(change)
                    });
                    match got {
                        Ok(Some(_)) => Ok(Some(true)),
                        Ok(None) => {
                            prop_assert_eq!(healthy_before, Some(false));
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    self.pool.change(name, change).map(|_| Some(true))
                };
                match self.model.backends.get_mut(name) {
                    None => prop_assert_eq!(got, Err(EngineError::UnknownBackend(name.into()))),
                    Some(b) => {
                        prop_assert!(got.is_ok(), "{name}: {got:?}");
                        if got == Ok(Some(true)) {
                            b.apply(&change);
                        }
                    }
                }
            }
            Op::Add {
                name,
                weight,
                max,
                ramp,
            } => {
                let name = NAMES[name];
                let incarnation = self.model.incarnation();
                let spec = BackendSpec {
                    name,
                    weight,
                    max_connections: max,
                };
                let got = match ramp {
                    None => self.pool.add_with(spec, incarnation),
                    Some(ramp) => self.pool.add_then(spec, incarnation, |b| {
                        assert_eq!(b.active(), 0, "a new backend starts with no count");
                        Some(BackendChange {
                            ramp: Some(ramp),
                            ..BackendChange::default()
                        })
                    }),
                };
                if self.model.backends.contains_key(name) {
                    prop_assert_eq!(got, Err(EngineError::AlreadyInPool(name.into())));
                } else {
                    prop_assert!(got.is_ok(), "{name}: {got:?}");
                    let mut added = Expected::new(incarnation, weight, max);
                    added.ramp = ramp.unwrap_or(FULL_RAMP);
                    self.model.backends.insert(name.into(), added);
                }
            }
            Op::Remove { name } => {
                let name = NAMES[name];
                let id = self.id_of(name);
                let got = self.pool.remove(name);
                match self.model.backends.remove(name) {
                    None => prop_assert_eq!(got, Err(EngineError::UnknownBackend(name.into()))),
                    Some(_) => {
                        prop_assert!(got.is_ok(), "{name}: {got:?}");
                        self.stale.extend(id);
                    }
                }
            }
        }
        self.check()
    }

    fn acquire(
        &mut self,
        algorithm: Option<Algorithm>,
        mask: u8,
        stale: bool,
        reject: bool,
    ) -> Result<(), TestCaseError> {
        let mut excluded: Vec<BackendId> = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .filter_map(|(_, name)| self.id_of(name))
            .collect();
        if stale {
            excluded.extend(self.stale.last().copied());
        }
        let excluded_names: Vec<&str> = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, name)| *name)
            .collect();
        let candidates: Vec<&String> = self
            .model
            .backends
            .iter()
            .filter(|(name, b)| b.eligible() && !excluded_names.contains(&name.as_str()))
            .map(|(name, _)| name)
            .collect();
        let got = if reject {
            self.pool.acquire_or_reject(algorithm, &excluded)
        } else {
            self.pool.acquire(algorithm, &excluded)
        };
        match got {
            Ok(lease) => {
                let incarnation = *lease.payload();
                let name = self.pool.read(|p| {
                    p.position_of(lease.id())
                        .and_then(|i| p.get_index(i))
                        .map(|(name, _)| name.to_owned())
                });
                let name = name.ok_or_else(|| TestCaseError::fail("a lease on no backend"))?;
                prop_assert!(
                    candidates.contains(&&name),
                    "{name} picked, but the candidates were {candidates:?}: {:?}",
                    self.model
                );
                let picked = &self.model.backends[&name];
                prop_assert_eq!(picked.incarnation, incarnation);
                if algorithm.unwrap_or_default() == Algorithm::LeastConnections {
                    // No candidate has a lower active ÷ (weight × ramp).
                    let score =
                        |b: &Expected| (b.active, u128::from(b.weight) * u128::from(b.ramp));
                    let (a, w) = score(picked);
                    for other in &candidates {
                        let (oa, ow) = score(&self.model.backends[other.as_str()]);
                        prop_assert!(
                            u128::from(a) * ow <= u128::from(oa) * w,
                            "{name} picked over the less loaded {other}: {:?}",
                            self.model
                        );
                    }
                }
                let b = self.model.backends.get_mut(&name).expect("picked above");
                b.active += 1;
                b.requests += 1;
                self.leases.push(lease);
            }
            Err(why) => {
                prop_assert!(
                    candidates.is_empty(),
                    "refused ({why}) with {candidates:?} eligible"
                );
                if self.model.backends.is_empty() {
                    prop_assert_eq!(why, NoBackend::EmptyPool);
                }
                self.model.rejected += u64::from(reject);
            }
        }
        Ok(())
    }

    /// Every backend's count, settings and statistics as the model's; the
    /// counts add up to the live leases on backends still there.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let actual: BTreeMap<String, Expected> = self.pool.read(|p| {
            p.iter()
                .map(|(name, b)| {
                    let stats = b.stats();
                    let got = Expected {
                        incarnation: *b.payload(),
                        active: b.active(),
                        weight: b.weight(),
                        healthy: b.healthy(),
                        max: b.max_connections(),
                        ramp: b.ramp(),
                        requests: stats.requests,
                        completed: stats.completed,
                        failed: stats.failed,
                    };
                    (name.to_owned(), got)
                })
                .collect()
        });
        prop_assert_eq!(&actual, &self.model.backends);
        let live = self
            .leases
            .iter()
            .filter(|l| {
                let incarnation = *l.payload();
                actual.values().any(|b| b.incarnation == incarnation)
            })
            .count() as u64;
        prop_assert_eq!(actual.values().map(|b| b.active).sum::<u64>(), live);
        prop_assert_eq!(self.pool.read(|p| p.rejected()), self.model.rejected);
        Ok(())
    }
}

fn initial() -> impl Strategy<Value = Vec<(u64, Option<u64>)>> {
    proptest::collection::vec((0u64..4, proptest::option::of(0u64..4)), 0..=3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_count_is_the_models_after_every_step_and_zero_at_the_end(
        initial in initial(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let mut run = Run::new(&initial);
        run.check()?;
        for op in &ops {
            run.step(op)?;
        }
        // Every lease ends, in the order held: every count back to 0.
        while let Some(lease) = run.leases.pop() {
            let incarnation = *lease.payload();
            drop(lease);
            if let Some(b) = run.model.holder(incarnation) {
                b.active -= 1;
                b.completed += 1;
            }
            run.check()?;
        }
        let counts: Vec<u64> = run.pool.read(|p| p.iter().map(|(_, b)| b.active()).collect());
        prop_assert!(counts.iter().all(|&c| c == 0), "{counts:?}");
    }
}

// --- many threads ------------------------------------------------------------

/// Keeps, under the pool's lock, its own count of each backend from what it
/// is told, and checks after every event that the pool's counts are the
/// same: a pick, release or removal not told, or told twice, shows at once.
struct InStep {
    /// Incarnation → count, for the backends in the pool.
    counts: Arc<Mutex<BTreeMap<u64, u64>>>,
    events: Arc<AtomicU64>,
}

impl InStep {
    fn payload_at(pool: &Pool<u64>, position: usize) -> u64 {
        *pool
            .get_index(position)
            .expect("told of a position")
            .1
            .payload()
    }

    fn check(&self, pool: &Pool<u64>) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let counts = self.counts.lock().unwrap();
        let actual: BTreeMap<u64, u64> = pool
            .iter()
            .map(|(_, b)| (*b.payload(), b.active()))
            .collect();
        assert_eq!(*counts, actual, "the journal's counts and the pool's");
    }
}

impl Journal<u64> for InStep {
    fn picked(&mut self, pool: &Pool<u64>, position: usize, _: Algorithm, excluded: &[BackendId]) {
        let id = pool.id_at(position).expect("picked");
        assert!(!excluded.contains(&id), "an excluded backend picked");
        let b = pool.get_index(position).expect("picked").1;
        // Counted by the pick, so never more than its limit.
        assert!(b.healthy() && b.weight() > 0, "an ineligible pick: {b:?}");
        assert!(b.max_connections().is_none_or(|max| b.active() <= max));
        *self
            .counts
            .lock()
            .unwrap()
            .entry(Self::payload_at(pool, position))
            .or_default() += 1;
        self.check(pool);
    }
    fn rejected(&mut self, pool: &Pool<u64>, _: Algorithm, _: &[BackendId], _: &NoBackend) {
        self.check(pool);
    }
    fn released(&mut self, pool: &Pool<u64>, position: usize, _: bool, _: Option<f64>) {
        let payload = Self::payload_at(pool, position);
        {
            let mut counts = self.counts.lock().unwrap();
            let count = counts
                .get_mut(&payload)
                .expect("a released backend is counted");
            *count = count.checked_sub(1).expect("released more than picked");
        }
        self.check(pool);
    }
    fn changed(&mut self, pool: &Pool<u64>, _: usize, _: &BackendChange) {
        self.check(pool);
    }
    fn added(&mut self, pool: &Pool<u64>, position: usize) {
        self.counts
            .lock()
            .unwrap()
            .insert(Self::payload_at(pool, position), 0);
        self.check(pool);
    }
    fn removed(&mut self, pool: &Pool<u64>, _: &str) {
        let present: Vec<u64> = pool.iter().map(|(_, b)| *b.payload()).collect();
        self.counts
            .lock()
            .unwrap()
            .retain(|payload, _| present.contains(payload));
        self.check(pool);
    }
}

/// A small deterministic generator per thread: xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn many_threads_acquiring_releasing_and_changing_leave_every_count_at_zero_in_step() {
    let incarnations = Arc::new(AtomicU64::new(0));
    let specs = NAMES.iter().map(|name| {
        let incarnation = incarnations.fetch_add(1, Ordering::Relaxed);
        (BackendSpec::named(name), incarnation)
    });
    let pool = SharedPool::new(Pool::with_payloads(specs, Policy::default()).expect("names"));
    let counts = Arc::new(Mutex::new(
        (0..NAMES.len() as u64)
            .map(|i| (i, 0))
            .collect::<BTreeMap<u64, u64>>(),
    ));
    let events = Arc::new(AtomicU64::new(0));
    pool.set_journal(Box::new(InStep {
        counts: Arc::clone(&counts),
        events: Arc::clone(&events),
    }));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (pool, incarnations) = (pool.clone(), Arc::clone(&incarnations));
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
                let mut held: Vec<Lease<u64>> = Vec::new();
                let mut picked = 0u64;
                for _ in 0..2_000 {
                    let name = NAMES[rng.below(NAMES.len() as u64) as usize];
                    match rng.below(20) {
                        0..=7 => {
                            let excluded: Vec<BackendId> = pool.read(|p| {
                                (0..p.len())
                                    .filter(|_| rng.below(4) == 0)
                                    .filter_map(|i| p.id_at(i))
                                    .collect()
                            });
                            let algorithm = ALGORITHMS[rng.below(4) as usize];
                            if let Ok(lease) = pool.acquire_or_reject(Some(algorithm), &excluded) {
                                assert!(!excluded.contains(&lease.id()));
                                picked += 1;
                                held.push(lease);
                            }
                        }
                        8..=14 if !held.is_empty() => {
                            let index = rng.below(held.len() as u64) as usize;
                            let mut lease = held.swap_remove(index);
                            match rng.below(3) {
                                0 => lease.record(true, Duration::from_micros(7)),
                                1 => lease.record(false, Duration::from_micros(7)),
                                _ => {} // cancelled
                            }
                        }
                        15 | 16 => {
                            let change = BackendChange {
                                healthy: Some(rng.below(3) != 0),
                                weight: Some(rng.below(4)),
                                max_connections: Some((rng.below(2) == 0).then(|| rng.below(4))),
                                ramp: Some(1 + rng.below(100) as u8),
                            };
                            let _ = pool.change(name, change);
                        }
                        17 => {
                            let _ = pool.remove(name);
                        }
                        18 => {
                            let incarnation = incarnations.fetch_add(1, Ordering::Relaxed);
                            let _ = pool.add_with(BackendSpec::named(name), incarnation);
                        }
                        _ => {
                            // Everything back in, so that picks go on.
                            let _ = pool.change_with(name, |b| {
                                (!b.healthy() || b.weight() == 0).then_some(BackendChange {
                                    healthy: Some(true),
                                    weight: Some(1),
                                    max_connections: Some(None),
                                    ramp: Some(FULL_RAMP),
                                })
                            });
                        }
                    }
                }
                picked
            })
        })
        .collect();
    let picked: u64 = threads
        .into_iter()
        .map(|t| t.join().expect("no panic"))
        .sum();
    let active: Vec<u64> = pool.read(|p| p.iter().map(|(_, b)| b.active()).collect());
    assert_eq!(
        active,
        vec![0; active.len()],
        "every lease ended with its thread"
    );
    assert!(counts.lock().unwrap().values().all(|&c| c == 0));
    // Enough happened for the run to mean something.
    assert!(picked > 1_000, "only {picked} leases taken");
    assert!(events.load(Ordering::Relaxed) > 2 * picked);
}
