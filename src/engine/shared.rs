//! A pool shared by concurrent tasks, and the lease that holds one
//! request's count until the request ends.
//!
//! [`SharedPool`] is a handle over one [`Pool`] behind a plain mutex: each
//! call locks it for one short engine operation (a pick, a release) and
//! never across an `.await`, so tasks on any number of threads see one set
//! of counts. [`SharedPool::acquire`] picks a backend and counts it at once,
//! and returns a [`Lease`]; dropping the lease gives the count back, exactly
//! once, however the request ended: finished, failed, timed out, its client
//! gone, its task cancelled. What the front-end recorded on the lease
//! (success or failure, and the duration it measured) goes into the
//! backend's statistics then.

use super::{Algorithm, BackendId, NoBackend, Pool};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A pool shared by tasks: cheap to clone, every clone the same pool.
#[derive(Debug)]
pub struct SharedPool<P> {
    pool: Arc<Mutex<Pool<P>>>,
}

impl<P> Clone for SharedPool<P> {
    fn clone(&self) -> Self {
        SharedPool {
            pool: Arc::clone(&self.pool),
        }
    }
}

impl<P> SharedPool<P> {
    pub fn new(pool: Pool<P>) -> Self {
        SharedPool {
            pool: Arc::new(Mutex::new(pool)),
        }
    }

    /// Runs `f` with the pool locked. Keep `f` short: every pick and
    /// release waits for it.
    pub fn with<R>(&self, f: impl FnOnce(&mut Pool<P>) -> R) -> R {
        f(&mut lock(&self.pool))
    }
}

impl<P: Clone> SharedPool<P> {
    /// Picks a backend by `algorithm` (the pool's default if `None`), never
    /// one of `excluded`, and counts the request on it at once. A refusal is
    /// not counted as rejected: the caller may wait and try again (see
    /// [`Pool::reject`]).
    pub fn acquire(
        &self,
        algorithm: Option<Algorithm>,
        excluded: &[BackendId],
    ) -> Result<Lease<P>, NoBackend> {
        let mut pool = lock(&self.pool);
        let position = pool.pick_excluding(algorithm, excluded)?;
        let (id, payload) = match (pool.id_at(position), pool.get_index(position)) {
            (Some(id), Some((_, backend))) => (id, backend.payload().clone()),
            // `pick_excluding` returned a position in the pool.
            _ => return Err(NoBackend::EmptyPool),
        };
        Ok(Lease {
            pool: Arc::clone(&self.pool),
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
    pool: Arc<Mutex<Pool<P>>>,
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
        let duration_ms = self.duration.map(|d| d.as_secs_f64() * 1000.0);
        // A backend removed since has nothing left to count: no error. The
        // count cannot be 0 while this lease holds one of it.
        let _ = lock(&self.pool).release(self.id, self.ok, duration_ms);
    }
}

/// Locks the pool. A panic elsewhere while it was locked leaves it as the
/// engine left it (every operation is complete or not done), so the pool
/// is still good to use.
fn lock<P>(pool: &Mutex<Pool<P>>) -> MutexGuard<'_, Pool<P>> {
    pool.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BackendSpec, Policy};

    fn shared(names: &[&str]) -> SharedPool<String> {
        let specs = names
            .iter()
            .map(|n| (BackendSpec::named(n), format!("addr-of-{n}")));
        SharedPool::new(Pool::with_payloads(specs, Policy::default()).expect("distinct names"))
    }

    fn active(pool: &SharedPool<String>) -> Vec<u64> {
        pool.with(|p| p.iter().map(|(_, b)| b.active()).collect())
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
        pool.with(|p| {
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
        let all: Vec<BackendId> = pool.with(|p| (0..3).filter_map(|i| p.id_at(i)).collect());
        let none = pool.acquire(None, &all).expect_err("every backend tried");
        assert_eq!(
            none.to_string(),
            "no backend available: all 3 backends are already tried"
        );
        assert_eq!(pool.with(|p| p.rejected()), 0);
        // The exclusion lasted for that pick only.
        drop(next);
        assert_eq!(pool.acquire(None, &[]).expect("a").payload(), "addr-of-a");
    }

    #[test]
    fn a_lease_on_a_removed_backend_ends_harmlessly_and_a_new_one_of_its_name_is_another() {
        let pool = shared(&["a", "b"]);
        let lease = pool.acquire(None, &[]).expect("a");
        let old = lease.id();
        pool.with(|p| p.remove("a")).expect("in the pool");
        pool.with(|p| p.add_with(BackendSpec::named("a"), "new-a".into()))
            .expect("added again");
        let new = pool.with(|p| p.id_at(1)).expect("appended");
        assert_ne!(old, new, "a name added again is another backend");
        drop(lease);
        assert_eq!(active(&pool), [0, 0], "the new `a` was not touched");
        assert_eq!(pool.with(|p| p.position_of(old)), None);
    }

    #[test]
    fn concurrent_leases_leave_every_count_at_zero() {
        let pool = shared(&["a", "b", "c", "d"]);
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
        let requests: u64 = pool.with(|p| p.iter().map(|(_, b)| b.stats().requests).sum());
        assert_eq!(requests, 16_000);
    }
}
