//! A pool shared by concurrent tasks, the lease that holds one request's
//! count until the request ends, and the journal that is told of every
//! change in the order the engine made it.
//!
//! [`SharedPool`] is a handle over one [`Pool`] behind a plain mutex: each
//! call locks it for one short engine operation (a pick, a release, a
//! change) and never across an `.await`, so tasks on any number of threads
//! see one set of counts. [`SharedPool::acquire`] picks a backend and
//! counts it at once, and returns a [`Lease`]; dropping the lease gives the
//! count back, exactly once, however the request ended: finished, failed,
//! timed out, its client gone, its task cancelled. What the front-end
//! recorded on the lease (success or failure, and the duration it
//! measured) goes into the backend's statistics then.
//!
//! Every change goes through the handle's own operations, never through a
//! `&mut Pool` handed out, so that a [`Journal`], kept under the same lock,
//! is told of each one in the order the engine applied it: a record that
//! the node can replay to the same decisions.

use super::{
    Algorithm, Backend, BackendChange, BackendId, BackendSpec, EngineError, NoBackend, Pool,
};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Told of every change the shared pool makes, in the order made, with the
/// pool locked (so briefly: no I/O here, hand the event on). Each call
/// comes after the change, with the pool as it left it.
pub trait Journal<P>: Send {
    /// A request was given the backend at `position` by `algorithm` (the
    /// one used: the pool's default if the caller named none), never one of
    /// `excluded` (ids no longer in the pool were ignored).
    fn picked(
        &mut self,
        pool: &Pool<P>,
        position: usize,
        algorithm: Algorithm,
        excluded: &[BackendId],
    );

    /// A request found no backend and was counted as rejected (see
    /// [`SharedPool::acquire_or_reject`]); `why` is the engine's refusal.
    fn rejected(
        &mut self,
        pool: &Pool<P>,
        algorithm: Algorithm,
        excluded: &[BackendId],
        why: &NoBackend,
    );

    /// A lease ended and the count of the backend at `position` dropped by
    /// one. A lease on a backend removed since changes nothing, and is not
    /// told.
    fn released(&mut self, pool: &Pool<P>, position: usize, ok: bool, duration_ms: Option<f64>);

    /// The backend at `position` took `change`.
    fn changed(&mut self, pool: &Pool<P>, position: usize, change: &BackendChange);

    /// A backend was appended at `position`.
    fn added(&mut self, pool: &Pool<P>, position: usize);

    /// The backend `name` was removed, with its counts.
    fn removed(&mut self, pool: &Pool<P>, name: &str);

    /// Asked now and then (see [`SharedPool::flush_journal`]) to pass on
    /// what it holds back.
    fn flush(&mut self) {}
}

/// What the lock guards: the pool and its journal, together, so that the
/// journal hears of changes in the order they were made.
struct Shared<P> {
    pool: Pool<P>,
    journal: Option<Box<dyn Journal<P>>>,
}

impl<P> Shared<P> {
    fn change(&mut self, name: &str, change: BackendChange) -> Result<usize, EngineError> {
        let position = self.pool.change(name, change)?;
        if let Some(journal) = &mut self.journal {
            journal.changed(&self.pool, position, &change);
        }
        Ok(position)
    }
}

impl<P: fmt::Debug> fmt::Debug for Shared<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("pool", &self.pool)
            .field("journal", &self.journal.is_some())
            .finish()
    }
}

/// A pool shared by tasks: cheap to clone, every clone the same pool.
#[derive(Debug)]
pub struct SharedPool<P> {
    shared: Arc<Mutex<Shared<P>>>,
}

impl<P> Clone for SharedPool<P> {
    fn clone(&self) -> Self {
        SharedPool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P> SharedPool<P> {
    /// A shared pool with no journal.
    pub fn new(pool: Pool<P>) -> Self {
        SharedPool {
            shared: Arc::new(Mutex::new(Shared {
                pool,
                journal: None,
            })),
        }
    }

    /// Tells `journal` of every later change, instead of the journal set
    /// before, which is returned.
    pub fn set_journal(&self, journal: Box<dyn Journal<P>>) -> Option<Box<dyn Journal<P>>> {
        lock(&self.shared).journal.replace(journal)
    }

    /// Takes the journal away: it hears of no later change.
    pub fn take_journal(&self) -> Option<Box<dyn Journal<P>>> {
        lock(&self.shared).journal.take()
    }

    /// Asks the journal to pass on what it holds back.
    pub fn flush_journal(&self) {
        if let Some(journal) = &mut lock(&self.shared).journal {
            journal.flush();
        }
    }

    /// Runs `f` with the pool locked, to read it. Keep `f` short: every
    /// pick and release waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&Pool<P>) -> R) -> R {
        f(&lock(&self.shared).pool)
    }

    /// [`Pool::change`], journaled. Returns the backend's position.
    pub fn change(&self, name: &str, change: BackendChange) -> Result<usize, EngineError> {
        let mut shared = lock(&self.shared);
        shared.change(name, change)
    }

    /// [`Pool::change`] with the change `decide` makes from the backend as
    /// it is now, in one locked step (taking a backend out only if it is
    /// still in, say); `None` from `decide` changes nothing. Returns the
    /// backend's position if it changed, `None` if not.
    pub fn change_with(
        &self,
        name: &str,
        decide: impl FnOnce(&Backend<P>) -> Option<BackendChange>,
    ) -> Result<Option<usize>, EngineError> {
        let mut shared = lock(&self.shared);
        let backend = shared
            .pool
            .get(name)
            .ok_or_else(|| EngineError::UnknownBackend(name.to_owned()))?;
        match decide(backend) {
            Some(change) => shared.change(name, change).map(Some),
            None => Ok(None),
        }
    }

    /// [`Pool::add_with`], journaled. Returns the new backend's position.
    pub fn add_with(&self, spec: BackendSpec<'_>, payload: P) -> Result<usize, EngineError> {
        self.add_then(spec, payload, |_| None)
    }

    /// [`Pool::add_with`], then the change `then` makes from the new
    /// backend (a slow start's first ramp, say), in one locked step, so
    /// that no pick sees the backend between the two; both journaled.
    /// Returns the new backend's position.
    pub fn add_then(
        &self,
        spec: BackendSpec<'_>,
        payload: P,
        then: impl FnOnce(&Backend<P>) -> Option<BackendChange>,
    ) -> Result<usize, EngineError> {
        let mut shared = lock(&self.shared);
        let Shared { pool, journal } = &mut *shared;
        let position = pool.add_with(spec, payload)?;
        if let Some(journal) = journal {
            journal.added(pool, position);
        }
        let added = shared.pool.get_index(position);
        if let Some((name, change)) = added.and_then(|(name, b)| Some((name.to_owned(), then(b)?)))
        {
            shared.change(&name, change)?;
        }
        Ok(position)
    }

    /// [`Pool::remove`], journaled. Leases on the backend end harmlessly.
    /// Returns the position it had.
    pub fn remove(&self, name: &str) -> Result<usize, EngineError> {
        let mut shared = lock(&self.shared);
        let Shared { pool, journal } = &mut *shared;
        let position = pool.remove(name)?;
        if let Some(journal) = journal {
            journal.removed(pool, name);
        }
        Ok(position)
    }
}

impl<P: Clone> SharedPool<P> {
    /// Picks a backend by `algorithm` (the pool's default if `None`), never
    /// one of `excluded`, and counts the request on it at once. A refusal is
    /// neither counted as rejected nor journaled: the caller may wait and
    /// try again (see [`SharedPool::acquire_or_reject`]).
    pub fn acquire(
        &self,
        algorithm: Option<Algorithm>,
        excluded: &[BackendId],
    ) -> Result<Lease<P>, NoBackend> {
        self.take(algorithm, excluded, false)
    }

    /// As [`SharedPool::acquire`], but a refusal is counted as rejected and
    /// journaled, in the same locked step as the pick that found no
    /// backend: for a request that gives up, so that a refusal is recorded
    /// only where the engine had no backend to give.
    pub fn acquire_or_reject(
        &self,
        algorithm: Option<Algorithm>,
        excluded: &[BackendId],
    ) -> Result<Lease<P>, NoBackend> {
        self.take(algorithm, excluded, true)
    }

    fn take(
        &self,
        algorithm: Option<Algorithm>,
        excluded: &[BackendId],
        reject: bool,
    ) -> Result<Lease<P>, NoBackend> {
        let mut shared = lock(&self.shared);
        let Shared { pool, journal } = &mut *shared;
        let used = algorithm.unwrap_or(pool.policy().algorithm);
        let position = match pool.pick_with(Some(used), excluded, false).chosen {
            Ok(position) => position,
            Err(why) => {
                if reject {
                    pool.reject();
                    if let Some(journal) = journal {
                        journal.rejected(pool, used, excluded, &why);
                    }
                }
                return Err(why);
            }
        };
        let (id, payload) = match (pool.id_at(position), pool.get_index(position)) {
            (Some(id), Some((_, backend))) => (id, backend.payload().clone()),
            // `pick_with` returned a position in the pool.
            _ => return Err(NoBackend::EmptyPool),
        };
        if let Some(journal) = journal {
            journal.picked(pool, position, used, excluded);
        }
        Ok(Lease {
            shared: Arc::clone(&self.shared),
            id,
            payload,
            ok: true,
            duration: None,
        })
    }
}

/// One request's count on one backend, given back when the lease is
/// dropped.
#[derive(Debug)]
pub struct Lease<P> {
    shared: Arc<Mutex<Shared<P>>>,
    id: BackendId,
    payload: P,
    ok: bool,
    duration: Option<Duration>,
}

impl<P> Lease<P> {
    /// The backend this request holds.
    pub fn id(&self) -> BackendId {
        self.id
    }

    /// The backend's payload, as it was when the lease was taken.
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// Records how the request went, for the backend's statistics when the
    /// lease ends. A lease dropped with nothing recorded counts as
    /// completed, neither failed nor timed: the request ended for a reason
    /// that is not the backend's (its client went away, its task was
    /// cancelled).
    pub fn record(&mut self, ok: bool, duration: Duration) {
        self.ok = ok;
        self.duration = Some(duration);
    }
}

impl<P> Drop for Lease<P> {
    fn drop(&mut self) {
        // From whole nanoseconds, rounded once: `1.031047`, not
        // `1.0310470000000001`.
        let duration_ms = self.duration.map(|d| d.as_nanos() as f64 / 1_000_000.0);
        let mut shared = lock(&self.shared);
        let Shared { pool, journal } = &mut *shared;
        // A backend removed since has nothing left to count: no error, and
        // nothing to journal. The count cannot be 0 while this lease holds
        // one of it.
        if let Ok(Some(position)) = pool.release(self.id, self.ok, duration_ms) {
            if let Some(journal) = journal {
                journal.released(pool, position, self.ok, duration_ms);
            }
        }
    }
}

/// Locks the pool. A panic elsewhere while it was locked leaves it as the
/// engine left it (every operation is complete or not done), so the pool
/// is still good to use.
fn lock<P>(shared: &Mutex<Shared<P>>) -> MutexGuard<'_, Shared<P>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Policy, FULL_RAMP};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn shared(names: &[&str]) -> SharedPool<String> {
        let specs = names
            .iter()
            .map(|n| (BackendSpec::named(n), format!("addr-of-{n}")));
        SharedPool::new(Pool::with_payloads(specs, Policy::default()).expect("distinct names"))
    }

    fn active(pool: &SharedPool<String>) -> Vec<u64> {
        pool.read(|p| p.iter().map(|(_, b)| b.active()).collect())
    }

    #[test]
    fn a_lease_counts_at_once_and_gives_the_count_back_exactly_once() {
        let pool = shared(&["a", "b"]);
        let first = pool.acquire(None, &[]).expect("a backend");
        let second = pool.acquire(None, &[]).expect("a backend");
        assert_eq!(first.payload(), "addr-of-a");
        assert_eq!(second.payload(), "addr-of-b");
        assert_eq!(active(&pool), [1, 1]);
        drop(first);
        assert_eq!(active(&pool), [0, 1]);
        let mut second = second;
        second.record(false, Duration::from_millis(30));
        drop(second);
        assert_eq!(active(&pool), [0, 0]);
        pool.read(|p| {
            let b = p.get("b").expect("b").stats();
            assert_eq!((b.completed, b.failed), (1, 1));
            assert_eq!(b.mean_duration_ms(), Some(30.0));
            let a = p.get("a").expect("a").stats();
            assert_eq!((a.completed, a.failed, a.mean_duration_ms()), (1, 0, None));
        });
    }

    #[test]
    fn excluded_backends_are_never_picked_and_refusals_are_not_counted() {
        let pool = shared(&["a", "b", "c"]);
        let a = pool.acquire(None, &[]).expect("a");
        let tried = [a.id()];
        drop(a);
        // `a` is the least loaded, and left out.
        let next = pool.acquire(None, &tried).expect("another");
        assert_eq!(next.payload(), "addr-of-b");
        let all: Vec<BackendId> = pool.read(|p| (0..3).filter_map(|i| p.id_at(i)).collect());
        let none = pool.acquire(None, &all).expect_err("every backend tried");
        assert_eq!(
            none.to_string(),
            "no backend available: all 3 backends are already tried"
        );
        assert_eq!(pool.read(|p| p.rejected()), 0);
        // Counted only when asked to.
        let none = pool
            .acquire_or_reject(None, &all)
            .expect_err("every backend tried");
        assert_eq!(
            none.to_string(),
            "no backend available: all 3 backends are already tried"
        );
        assert_eq!(pool.read(|p| p.rejected()), 1);
        // The exclusion lasted for that pick only.
        drop(next);
        assert_eq!(pool.acquire(None, &[]).expect("a").payload(), "addr-of-a");
    }

    #[test]
    fn a_lease_on_a_removed_backend_ends_harmlessly_and_a_new_one_of_its_name_is_another() {
        let pool = shared(&["a", "b"]);
        let lease = pool.acquire(None, &[]).expect("a");
        let old = lease.id();
        assert_eq!(pool.remove("a"), Ok(0));
        assert_eq!(
            pool.remove("a"),
            Err(EngineError::UnknownBackend("a".into()))
        );
        assert_eq!(
            pool.add_with(BackendSpec::named("a"), "new-a".into()),
            Ok(1)
        );
        let new = pool.read(|p| p.id_at(1)).expect("appended");
        assert_ne!(old, new, "a name added again is another backend");
        drop(lease);
        assert_eq!(active(&pool), [0, 0], "the new `a` was not touched");
        assert_eq!(pool.read(|p| p.position_of(old)), None);
    }

    #[test]
    fn change_with_changes_a_backend_only_as_decided_from_what_it_is_now() {
        let pool = shared(&["a", "b"]);
        let out = BackendChange {
            healthy: Some(false),
            ..BackendChange::default()
        };
        assert_eq!(
            pool.change_with("b", |b| b.healthy().then_some(out)),
            Ok(Some(1))
        );
        assert_eq!(
            pool.change_with("b", |b| b.healthy().then_some(out)),
            Ok(None)
        );
        assert_eq!(
            pool.change_with("zz", |_| Some(out)),
            Err(EngineError::UnknownBackend("zz".into()))
        );
        let ramp = BackendChange {
            ramp: Some(FULL_RAMP + 1),
            ..BackendChange::default()
        };
        assert_eq!(
            pool.change("a", ramp),
            Err(EngineError::RampOutOfRange(101))
        );
        assert_eq!(
            pool.read(|p| p
                .iter()
                .map(|(_, b)| (b.healthy(), b.ramp()))
                .collect::<Vec<_>>()),
            [(true, FULL_RAMP), (false, FULL_RAMP)]
        );
    }

    /// Writes down every event, with names for positions and ids.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    fn name_at(pool: &Pool<String>, position: usize) -> String {
        pool.get_index(position)
            .map_or("?".into(), |(name, _)| name.to_owned())
    }

    fn names_of(pool: &Pool<String>, ids: &[BackendId]) -> String {
        let names: Vec<String> = ids
            .iter()
            .map(|&id| {
                pool.position_of(id)
                    .map_or("gone".into(), |i| name_at(pool, i))
            })
            .collect();
        names.join(",")
    }

    impl Journal<String> for Recorder {
        fn picked(
            &mut self,
            pool: &Pool<String>,
            position: usize,
            algorithm: Algorithm,
            excluded: &[BackendId],
        ) {
            let b = pool.get_index(position).expect("picked").1;
            self.0.lock().unwrap().push(format!(
                "picked {} ({}) by {} excluding [{}]",
                name_at(pool, position),
                b.active(),
                algorithm.name(),
                names_of(pool, excluded)
            ));
        }
        fn rejected(
            &mut self,
            pool: &Pool<String>,
            algorithm: Algorithm,
            excluded: &[BackendId],
            why: &NoBackend,
        ) {
            self.0.lock().unwrap().push(format!(
                "rejected ({}) by {} excluding [{}]: {why}",
                pool.rejected(),
                algorithm.name(),
                names_of(pool, excluded)
            ));
        }
        fn released(
            &mut self,
            pool: &Pool<String>,
            position: usize,
            ok: bool,
            duration_ms: Option<f64>,
        ) {
            let b = pool.get_index(position).expect("released").1;
            self.0.lock().unwrap().push(format!(
                "released {} ({}) ok={ok} ms={duration_ms:?}",
                name_at(pool, position),
                b.active()
            ));
        }
        fn changed(&mut self, pool: &Pool<String>, position: usize, change: &BackendChange) {
            self.0.lock().unwrap().push(format!(
                "changed {} {:?} {:?}",
                name_at(pool, position),
                change.healthy,
                change.ramp
            ));
        }
        fn added(&mut self, pool: &Pool<String>, position: usize) {
            let payload = pool.get_index(position).expect("added").1.payload();
            self.0.lock().unwrap().push(format!(
                "added {} at {position} ({payload})",
                name_at(pool, position)
            ));
        }
        fn removed(&mut self, pool: &Pool<String>, name: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("removed {name} ({} left)", pool.len()));
        }
    }

    #[test]
    fn a_journal_hears_of_every_change_in_order_and_of_nothing_else() {
        let pool = shared(&["a", "b", "c"]);
        let events = Arc::new(Mutex::new(Vec::new()));
        assert!(pool
            .set_journal(Box::new(Recorder(Arc::clone(&events))))
            .is_none());
        let a = pool.acquire(None, &[]).expect("a");
        let tried = [a.id()];
        let mut b = pool.acquire(None, &tried).expect("b");
        let c = pool
            .acquire(Some(Algorithm::RoundRobin), &[tried[0], b.id()])
            .expect("c");
        b.record(false, Duration::from_millis(250));
        drop(b);
        let out = BackendChange {
            healthy: Some(false),
            ..BackendChange::default()
        };
        pool.change("c", out).expect("c is in the pool");
        // Unchanged: neither the refused nor the unmet condition is told.
        assert!(pool.change("zz", out).is_err());
        assert_eq!(
            pool.change_with("c", |b| b.healthy().then_some(out)),
            Ok(None)
        );
        assert!(pool
            .add_with(BackendSpec::named("a"), "again".into())
            .is_err());
        // A refusal that is not counted is not told.
        let all: Vec<BackendId> = pool.read(|p| (0..3).filter_map(|i| p.id_at(i)).collect());
        assert!(pool.acquire(None, &all).is_err());
        assert!(pool.acquire_or_reject(None, &all).is_err());
        pool.remove("c").expect("c is in the pool");
        // c's lease ends on a removed backend: nothing to tell.
        drop(c);
        pool.add_with(BackendSpec::named("d"), "addr-of-d".into())
            .expect("a new name");
        let ramp = BackendChange {
            ramp: Some(10),
            ..BackendChange::default()
        };
        pool.change("d", ramp).expect("d is in the pool");
        drop(a);
        assert_eq!(
            *events.lock().unwrap(),
            [
                "picked a (1) by least-connections excluding []",
                "picked b (1) by least-connections excluding [a]",
                "picked c (1) by round-robin excluding [a,b]",
                "released b (0) ok=false ms=Some(250.0)",
                "changed c Some(false) None",
                "rejected (1) by least-connections excluding [a,b,c]: no backend available: 1 down, 2 already tried",
                "removed c (2 left)",
                "added d at 2 (addr-of-d)",
                "changed d None Some(10)",
                "released a (0) ok=true ms=None",
            ]
        );
        // The journal can be handed over.
        let other = Arc::new(Mutex::new(Vec::new()));
        assert!(pool
            .set_journal(Box::new(Recorder(Arc::clone(&other))))
            .is_some());
        drop(pool.acquire(None, &[]).expect("a"));
        assert_eq!(events.lock().unwrap().len(), 10);
        assert_eq!(
            *other.lock().unwrap(),
            [
                "picked a (1) by least-connections excluding []",
                "released a (0) ok=true ms=None"
            ]
        );
    }

    /// Counts picks and releases, as a check on a concurrent run.
    struct Tally {
        picked: Arc<AtomicU64>,
        released: Arc<AtomicU64>,
    }

    impl<P> Journal<P> for Tally {
        fn picked(&mut self, _: &Pool<P>, _: usize, _: Algorithm, _: &[BackendId]) {
            self.picked.fetch_add(1, Ordering::Relaxed);
        }
        fn rejected(&mut self, _: &Pool<P>, _: Algorithm, _: &[BackendId], _: &NoBackend) {}
        fn released(&mut self, pool: &Pool<P>, _: usize, _: bool, _: Option<f64>) {
            let n = self.released.fetch_add(1, Ordering::Relaxed) + 1;
            // Told under the lock, after the release: every count is
            // picks told minus releases told.
            let held: u64 = pool.iter().map(|(_, b)| b.active()).sum();
            assert_eq!(held, self.picked.load(Ordering::Relaxed) - n);
        }
        fn changed(&mut self, _: &Pool<P>, _: usize, _: &BackendChange) {}
        fn added(&mut self, _: &Pool<P>, _: usize) {}
        fn removed(&mut self, _: &Pool<P>, _: &str) {}
    }

    #[test]
    fn concurrent_leases_leave_every_count_at_zero_and_the_journal_in_step() {
        let pool = shared(&["a", "b", "c", "d"]);
        let (picked, released) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        pool.set_journal(Box::new(Tally {
            picked: Arc::clone(&picked),
            released: Arc::clone(&released),
        }));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        let mut held = vec![pool.acquire(None, &[]).expect("a")];
                        held.push(pool.acquire(None, &[]).expect("b"));
                        held[0].record(true, Duration::from_micros(5));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert_eq!(active(&pool), [0, 0, 0, 0]);
        let requests: u64 = pool.read(|p| p.iter().map(|(_, b)| b.stats().requests).sum());
        assert_eq!(requests, 16_000);
        assert_eq!(picked.load(Ordering::Relaxed), 16_000);
        assert_eq!(released.load(Ordering::Relaxed), 16_000);
    }
}
