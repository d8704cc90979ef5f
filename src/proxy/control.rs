//! Why a backend is out of the pool, and the one place that takes it out
//! and brings it back.
//!
//! A backend is out (the engine's `healthy: false`) while any reason
//! holds:
//!
//! - [`Reason::Check`]: its active checks failed `fall` times in a row
//!   (see `health`); it clears after `rise` passes in a row.
//! - [`Reason::Passive`]: requests failed on it `--max-fails` times within
//!   `--fail-timeout` (NGINX's `max_fails`); it clears `--fail-timeout`
//!   later.
//! - [`Reason::Admin`]: an operator marked it down.
//!
//! The reasons are kept with the backend ([`Control`], in its `Upstream`)
//! and changed only with the pool locked, in the same step as the engine's
//! flag, so that the two always agree: the flag flips exactly when the set
//! of reasons goes from empty to not empty, and back. An operator marking
//! a backend up ([`State::clear_reasons`]) clears every reason and its
//! checks' counts: its checks then need `fall` new failures to take it out
//! again, and its passive failures start from none.
//!
//! Requests already on a backend when it goes out finish as usual: only
//! new picks pass it by.
//!
//! With `--slow-start`, a backend that comes back starts at [`FIRST_RAMP`]
//! percent of its weight, set in the same locked step that brings it back,
//! and a task of its own steps the ramp up to 100 (see [`ramp_up`]).

use super::config::HealthCheck;
use super::upstream::Upstream;
use super::State;
use crate::engine::{BackendChange, SharedPool, FULL_RAMP};
use crate::protocol::write::{key, WriteJson};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// Why a backend is out. Any one keeps it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Its active checks failed `fall` times in a row.
    Check,
    /// Requests failed on it `--max-fails` times within `--fail-timeout`.
    Passive,
    /// An operator marked it down.
    Admin,
}

impl Reason {
    /// Where its text is kept, which is also the order `/stats` lists them.
    fn index(self) -> usize {
        match self {
            Reason::Check => 0,
            Reason::Passive => 1,
            Reason::Admin => 2,
        }
    }
}

/// How a change of reasons moved a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    /// In as it was, or out as it was.
    Stayed,
    /// Its first reason came: it is out of the pool now.
    Out,
    /// Its last reason went: it is back in the pool.
    Back,
}

/// One backend's reasons for being out and its checks' counts, kept with
/// it.
#[derive(Debug)]
pub struct Control {
    /// Locked only with the pool locked first, or alone.
    inner: Mutex<Inner>,
    /// Set when the backend leaves the pool: its checks stop.
    retired: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Why it is out, by [`Reason::index`], each as `/stats` says it.
    reasons: [Option<String>; 3],
    /// What its checks have seen, when it is checked.
    checks: Option<Checks>,
    /// Counts passive take-outs, so that the end of one clears only its
    /// own (not one that an operator's clearing made way for).
    passive_epoch: u64,
    /// Counts slow starts, so that a ramp left behind by a newer one stops.
    ramp_epoch: u64,
}

impl Inner {
    fn is_out(&self) -> bool {
        self.reasons.iter().any(Option::is_some)
    }
}

/// What a backend's checks have seen lately.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    /// Checks passed in a row (0 after a failure).
    pub passes: u32,
    /// Checks failed in a row (0 after a pass).
    pub failures: u32,
    /// The last check's outcome, as `GET /health answered 200`.
    pub last: Option<String>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            inner: Mutex::new(Inner::default()),
            retired: watch::channel(false).0,
        }
    }
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Says that the backend is checked, so that `/stats` shows its checks
    /// from the start.
    pub fn start_checks(&self) {
        self.lock().checks.get_or_insert_with(Checks::default);
    }

    /// Why the backend is out, as `/stats` says it; empty when it is in.
    pub fn reasons(&self) -> Vec<String> {
        self.lock().reasons.iter().flatten().cloned().collect()
    }

    /// What its checks have seen, if it is checked.
    #[cfg(test)]
    pub fn checks(&self) -> Option<Checks> {
        self.lock().checks.clone()
    }

    /// The backend has left the pool: its checks stop.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Whether the backend has left the pool.
    pub fn is_retired(&self) -> bool {
        *self.retired.borrow()
    }

    /// Resolves once the backend has left the pool.
    pub async fn retired(&self) {
        let mut retired = self.retired.subscribe();
        // Dropping the guard here keeps the waiting future `Send`.
        let _ = retired.wait_for(|&gone| gone).await;
    }

    /// `/stats`' members for the backend, after its address:
    /// `,"down":[…]` and, when it is checked, `,"check":{…}`.
    pub fn write_stats(&self, out: &mut Vec<u8>) {
        let inner = self.lock();
        out.raw(key!("down"));
        out.list(inner.reasons.iter().flatten(), |out, text| out.str(text));
        if let Some(checks) = &inner.checks {
            out.raw(key!("check"));
            out.raw(b"{\"passes\":");
            out.u64(checks.passes.into());
            out.raw(key!("failures"));
            out.u64(checks.failures.into());
            out.raw(key!("last"));
            out.opt_str(checks.last.as_deref());
            out.raw(b"}");
        }
    }
}

impl State {
    /// Sets (`on`) or clears one reason for `upstream` being out, and
    /// takes it out or brings it back when that changes whether any reason
    /// holds. `None` when `upstream` is not (or no longer) in the pool; its
    /// reasons are changed all the same.
    ///
    /// An operator's "healthy: false" is `set_reason(u, Reason::Admin,
    /// true)`; an operator's "healthy: true" is [`State::clear_reasons`].
    pub(crate) fn set_reason(
        &self,
        upstream: &Upstream,
        reason: Reason,
        on: bool,
    ) -> Option<Moved> {
        let max_fails = self.config.max_fails;
        let window = self.config.fail_timeout;
        self.change(upstream, |inner| {
            let text = match reason {
                Reason::Check => match &inner.checks {
                    Some(Checks {
                        failures,
                        last: Some(last),
                        ..
                    }) => check_text(*failures, "failure", "failures", last),
                    _ => "health check: failing".to_owned(),
                },
                Reason::Passive => passive_text(max_fails, window),
                Reason::Admin => "marked down by an operator".to_owned(),
            };
            let slot = &mut inner.reasons[reason.index()];
            match (on, slot.is_some()) {
                (true, false) => {
                    *slot = Some(text.clone());
                    Some(text)
                }
                (false, true) => {
                    *slot = None;
                    Some(match reason {
                        Reason::Check => "health check: passing".to_owned(),
                        Reason::Passive => format!("passive: {window:?} out, over"),
                        Reason::Admin => "marked up by an operator".to_owned(),
                    })
                }
                _ => None,
            }
        })
    }

    /// An operator's "healthy: true": clears every reason, and the counts
    /// of its checks and of its passive failures, so that it takes `fall`
    /// new failed checks (or `--max-fails` new failures) to take it out
    /// again. `None` when `upstream` is not in the pool.
    pub(crate) fn clear_reasons(&self, upstream: &Upstream) -> Option<Moved> {
        self.change(upstream, |inner| {
            let was_out = inner.is_out();
            inner.reasons = Default::default();
            if let Some(checks) = &mut inner.checks {
                checks.passes = 0;
                checks.failures = 0;
            }
            inner.passive_epoch += 1;
            upstream.forget_failures();
            was_out.then(|| "marked up by an operator".to_owned())
        })
    }

    /// `upstream`'s checks are turned off (by a reload): their counts go,
    /// and so does their reason for keeping it out. `None` when it is not
    /// in the pool.
    pub(crate) fn checks_off(&self, upstream: &Upstream) -> Option<Moved> {
        upstream.replace_checks(None);
        self.change(upstream, |inner| {
            inner.checks = None;
            let slot = &mut inner.reasons[Reason::Check.index()];
            slot.take().map(|_| "health checks turned off".to_owned())
        })
    }

    /// A check of `upstream` passed or failed (`last` says how): counts it,
    /// and after `fall` failures in a row takes it out, after `rise`
    /// passes in a row lets it back. `None` when it has left the pool.
    pub(crate) fn checked(
        &self,
        upstream: &Upstream,
        check: &HealthCheck,
        passed: bool,
        last: String,
    ) -> Option<Moved> {
        self.change(upstream, |inner| {
            let checks = inner.checks.get_or_insert_with(Checks::default);
            if passed {
                checks.passes = checks.passes.saturating_add(1);
                checks.failures = 0;
            } else {
                checks.failures = checks.failures.saturating_add(1);
                checks.passes = 0;
            }
            let (passes, failures) = (checks.passes, checks.failures);
            let slot = &mut inner.reasons[Reason::Check.index()];
            let why = if slot.is_none() && failures >= check.fall {
                let text = check_text(failures, "failure", "failures", &last);
                *slot = Some(text.clone());
                Some(text)
            } else if slot.is_some() && passes >= check.rise {
                *slot = None;
                Some(check_text(passes, "pass", "passes", &last))
            } else {
                None
            };
            checks.last = Some(last);
            why
        })
    }

    /// A failure on `upstream`: after `--max-fails` within
    /// `--fail-timeout`, it is out for `--fail-timeout`, as NGINX's
    /// `max_fails` does.
    pub(crate) fn failed(self: &Arc<Self>, upstream: &Arc<Upstream>) {
        let max = self.config.max_fails;
        let window = self.config.fail_timeout;
        if max == 0 || upstream.note_failure(window) < max as usize {
            return;
        }
        let mut epoch = None;
        self.change(upstream, |inner| {
            let slot = &mut inner.reasons[Reason::Passive.index()];
            if slot.is_some() {
                return None;
            }
            let text = passive_text(max, window);
            *slot = Some(text.clone());
            inner.passive_epoch += 1;
            epoch = Some(inner.passive_epoch);
            Some(text)
        });
        let Some(epoch) = epoch else { return };
        // Weak: a take-out never keeps a stopping proxy waiting.
        let state = Arc::downgrade(self);
        let upstream = Arc::clone(upstream);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            if let Some(state) = state.upgrade() {
                state.passive_over(&upstream, epoch);
            }
        });
    }

    /// The passive take-out numbered `epoch` has lasted its time.
    fn passive_over(&self, upstream: &Upstream, epoch: u64) {
        let window = self.config.fail_timeout;
        self.change(upstream, |inner| {
            let slot = &mut inner.reasons[Reason::Passive.index()];
            if inner.passive_epoch != epoch || slot.is_none() {
                return None;
            }
            *slot = None;
            upstream.forget_failures();
            Some(format!("passive: {window:?} out, over"))
        });
    }

    /// Changes `upstream`'s reasons with `f`, which says what changed (or
    /// `None` for nothing), and sets the engine's flag to match, both under
    /// the pool's lock; then logs and, when it is back, says so.
    fn change(
        &self,
        upstream: &Upstream,
        f: impl FnOnce(&mut Inner) -> Option<String>,
    ) -> Option<Moved> {
        let mut f = Some(f);
        let mut outcome = None;
        let mut ramping = None;
        let _ = self.pool.change_with(&upstream.name, |backend| {
            let mut inner = upstream.control.lock();
            let was_out = inner.is_out();
            let why = f.take().and_then(|f| f(&mut inner));
            let out = inner.is_out();
            // The name may have been given to another backend since.
            if !std::ptr::eq(Arc::as_ptr(backend.payload()), upstream) {
                outcome = Some((None, why));
                return None;
            }
            let moved = match (was_out, out) {
                (false, true) => Moved::Out,
                (true, false) => Moved::Back,
                _ => Moved::Stayed,
            };
            // Eased in from the step that brings it back: no request
            // finds it at its whole weight in between.
            let epoch = (moved == Moved::Back)
                .then(|| self.first_ramp(&mut inner))
                .flatten();
            ramping = epoch.map(|epoch| (Arc::clone(backend.payload()), epoch));
            let ramp = epoch.map(|_| FIRST_RAMP);
            outcome = Some((Some(moved), why));
            (backend.healthy() == out).then(|| BackendChange {
                healthy: Some(!out),
                ramp,
                ..BackendChange::default()
            })
        });
        let (moved, why) = match (outcome, f) {
            (Some(outcome), _) => outcome,
            // Not in the pool: its reasons change all the same.
            (None, Some(f)) => (None, f(&mut upstream.control.lock())),
            (None, None) => (None, None),
        };
        let name = &upstream.name;
        match (moved, why) {
            (Some(Moved::Out), Some(why)) => {
                tracing::warn!(backend = %name, "out of the pool: {why}");
            }
            (Some(Moved::Back), Some(why)) => {
                tracing::info!(backend = %name, "back in the pool: {why}");
            }
            (Some(Moved::Stayed), Some(why)) => {
                let reasons = upstream.control.reasons();
                if reasons.contains(&why) {
                    tracing::info!(backend = %name, "out for another reason too: {why}");
                } else {
                    let reasons = reasons.join("; ");
                    tracing::info!(backend = %name, "{why}; still out: {reasons}");
                }
            }
            _ => {}
        }
        if let Some((upstream, epoch)) = ramping {
            self.start_ramp(upstream, epoch);
        }
        moved
    }

    /// With `--slow-start`, begins a slow start of the backend whose
    /// control `inner` is: the epoch of its ramp, which then starts at
    /// [`FIRST_RAMP`]. To be called with the pool locked, from the step
    /// that makes the backend eligible. `None` without slow start.
    fn first_ramp(&self, inner: &mut Inner) -> Option<u64> {
        if self.config.slow_start.is_zero() {
            return None;
        }
        inner.ramp_epoch += 1;
        Some(inner.ramp_epoch)
    }

    /// Logs a slow start that has begun and steps its ramp up.
    fn start_ramp(&self, upstream: Arc<Upstream>, epoch: u64) {
        let over = self.config.slow_start;
        tracing::info!(
            backend = %upstream.name,
            "slow start: from {FIRST_RAMP}% of its weight to all of it over {over:?}"
        );
        ramp_up(self.pool.clone(), upstream, epoch, over);
    }

    /// Adds `upstream` to the pool as `spec` says; with `--slow-start` it
    /// comes in at [`FIRST_RAMP`], in the same locked step.
    pub(crate) fn add(
        &self,
        spec: crate::engine::BackendSpec<'_>,
        upstream: &Arc<Upstream>,
    ) -> Result<(), crate::engine::EngineError> {
        let mut epoch = None;
        self.pool.add_then(spec, Arc::clone(upstream), |_| {
            epoch = self.first_ramp(&mut upstream.control.lock());
            epoch.map(|_| BackendChange {
                ramp: Some(FIRST_RAMP),
                ..BackendChange::default()
            })
        })?;
        if let Some(epoch) = epoch {
            self.start_ramp(Arc::clone(upstream), epoch);
        }
        Ok(())
    }

    /// Changes the weight, limit or ramp of the backend `name` in the
    /// pool; with `--slow-start`, a weight from 0 to more (undrained)
    /// begins a slow start in the same locked step, unless the change sets
    /// a ramp itself. `Ok(false)`, changing nothing, for a backend being
    /// removed (draining): checked in the same locked step as its removal
    /// began.
    pub(crate) fn reweight(
        &self,
        name: &str,
        change: BackendChange,
    ) -> Result<bool, crate::engine::EngineError> {
        let mut ramping = None;
        let mut draining = false;
        self.pool.change_with(name, |backend| {
            draining = backend.payload().draining.load(Ordering::Relaxed);
            if draining {
                return None;
            }
            let undrained = backend.weight() == 0 && change.weight.is_some_and(|w| w > 0);
            if !undrained || change.ramp.is_some() {
                return Some(change);
            }
            let upstream = backend.payload();
            let epoch = self.first_ramp(&mut upstream.control.lock());
            ramping = epoch.map(|epoch| (Arc::clone(upstream), epoch));
            Some(BackendChange {
                ramp: epoch.map(|_| FIRST_RAMP),
                ..change
            })
        })?;
        if let Some((upstream, epoch)) = ramping {
            self.start_ramp(upstream, epoch);
        }
        Ok(!draining)
    }
}

/// The percent of its weight a backend has when a slow start begins; the
/// ramp then grows by as much at each of [`RAMP_STEPS`] steps.
pub const FIRST_RAMP: u8 = 5;

/// Steps from [`FIRST_RAMP`] to the whole weight.
const RAMP_STEPS: u32 = (FULL_RAMP / FIRST_RAMP) as u32 - 1;

/// Steps `upstream`'s ramp from [`FIRST_RAMP`] up to 100 in equal steps
/// over `over`, on a task of its own, through the pool (so that a record
/// of the engine's decisions has every step). It stops early, leaving the
/// ramp where it is, when the backend goes out again (it starts anew when
/// it comes back), leaves the pool, or begins another slow start
/// (`epoch` is no longer its latest). Holds neither the proxy's state nor
/// its connections: it never keeps a stopping proxy waiting.
fn ramp_up(pool: SharedPool<Arc<Upstream>>, upstream: Arc<Upstream>, epoch: u64, over: Duration) {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let step = over / RAMP_STEPS;
        for n in 1..=RAMP_STEPS {
            tokio::time::sleep_until(start + step * n).await;
            // Whole numbers: 5 × 20 is exactly 100 at the last step.
            let ramp = FIRST_RAMP * (n as u8 + 1);
            let stepped = pool.change_with(&upstream.name, |backend| {
                let ours = Arc::ptr_eq(backend.payload(), &upstream)
                    && backend.healthy()
                    && upstream.control.lock().ramp_epoch == epoch;
                ours.then(|| BackendChange {
                    ramp: Some(ramp),
                    ..BackendChange::default()
                })
            });
            if !matches!(stepped, Ok(Some(_))) {
                tracing::debug!(backend = %upstream.name, "slow start stopped at step {n}");
                return;
            }
        }
        tracing::info!(backend = %upstream.name, "slow start over: all of its weight");
    });
}

/// `health check: 3 consecutive failures, last: GET /health answered 500`.
fn check_text(n: u32, one: &str, many: &str, last: &str) -> String {
    let what = if n == 1 { one } else { many };
    format!("health check: {n} consecutive {what}, last: {last}")
}

/// `passive: 1 failure within 10s`.
fn passive_text(max_fails: u32, window: Duration) -> String {
    let what = if max_fails == 1 {
        "failure"
    } else {
        "failures"
    };
    format!("passive: {max_fails} {what} within {window:?}")
}

/// A state over given backends, for the tests of this module and of
/// `health`.
#[cfg(test)]
pub(super) mod testing {
    use super::super::config::{BackendSpec, Settings};
    use super::super::upstream::Upstream;
    use super::super::State;
    use crate::engine::{self, Policy, Pool, SharedPool};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::sync::{mpsc, watch, Notify};

    /// The state of a proxy over `backends` (name, address) with
    /// `settings`, its upstreams, and what stops it.
    pub fn state(
        backends: &[(&str, &str)],
        settings: Settings,
    ) -> (Arc<State>, Vec<Arc<Upstream>>, watch::Sender<bool>) {
        let specs = backends
            .iter()
            .map(|(name, address)| BackendSpec {
                name: Some(name.to_string()),
                address: address.to_string(),
                ..BackendSpec::default()
            })
            .collect();
        let config = Settings {
            backends: Some(specs),
            ..settings
        }
        .resolve()
        .expect("valid settings");
        let upstreams: Vec<Arc<Upstream>> = config
            .backends
            .iter()
            .map(|b| Arc::new(Upstream::new(b.name.clone(), b.address)))
            .collect();
        let pool = Pool::with_payloads(
            config
                .backends
                .iter()
                .zip(&upstreams)
                .map(|(b, u)| (engine::BackendSpec::named(&b.name), Arc::clone(u))),
            Policy::default(),
        )
        .expect("distinct names");
        let (tasks, _) = mpsc::channel(1);
        let (stop, stopping) = watch::channel(false);
        let state = State {
            pool: SharedPool::new(pool),
            runtime: super::super::runtime::Runtime::new(None, config.clone()),
            config,
            released: Notify::new(),
            queued: AtomicUsize::new(0),
            retries: Default::default(),
            stopping,
            tasks,
        };
        (Arc::new(state), upstreams, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::state;
    use super::*;
    use crate::proxy::config::{Settings, StatusSet};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn healthy(state: &State, name: &str) -> bool {
        state
            .pool
            .read(|p| p.get(name).map(|b| b.healthy()))
            .expect("in the pool")
    }

    fn check(fall: u32, rise: u32) -> HealthCheck {
        HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            statuses: StatusSet::default(),
            rise,
            fall,
        }
    }

    const ADMIN: &str = "marked down by an operator";
    const PASSIVE: &str = "passive: 1 failure within 10s";

    #[test]
    fn the_flag_flips_only_when_the_first_reason_comes_and_the_last_goes() {
        let (state, up, _stop) = state(
            &[("a", "127.0.0.1:1"), ("b", "127.0.0.1:2")],
            Settings::default(),
        );
        let a = &up[0];
        assert_eq!(state.set_reason(a, Reason::Admin, true), Some(Moved::Out));
        assert!(!healthy(&state, "a"));
        assert!(healthy(&state, "b"));
        assert_eq!(a.control.reasons(), [ADMIN]);
        // The same reason again, another one, one that is not there.
        assert_eq!(
            state.set_reason(a, Reason::Admin, true),
            Some(Moved::Stayed)
        );
        assert_eq!(
            state.set_reason(a, Reason::Passive, true),
            Some(Moved::Stayed)
        );
        assert_eq!(
            state.set_reason(a, Reason::Check, false),
            Some(Moved::Stayed)
        );
        assert_eq!(a.control.reasons(), [PASSIVE, ADMIN]);
        assert_eq!(
            state.set_reason(a, Reason::Admin, false),
            Some(Moved::Stayed)
        );
        assert!(!healthy(&state, "a"));
        assert_eq!(a.control.reasons(), [PASSIVE]);
        assert_eq!(
            state.set_reason(a, Reason::Passive, false),
            Some(Moved::Back)
        );
        assert!(healthy(&state, "a"));
        assert!(a.control.reasons().is_empty());
        assert_eq!(
            state.set_reason(a, Reason::Passive, false),
            Some(Moved::Stayed)
        );
    }

    #[test]
    fn checks_take_it_out_after_fall_failures_in_a_row_and_back_after_rise_passes() {
        let (state, up, _stop) = state(&[("a", "127.0.0.1:1")], Settings::default());
        let (a, check) = (&up[0], check(3, 2));
        let fail = |n: u32| {
            (0..n)
                .map(|_| {
                    state
                        .checked(a, &check, false, "GET /health answered 500".into())
                        .expect("in the pool")
                })
                .collect::<Vec<_>>()
        };
        let pass = |n: u32| {
            (0..n)
                .map(|_| {
                    state
                        .checked(a, &check, true, "GET /health answered 200".into())
                        .expect("in the pool")
                })
                .collect::<Vec<_>>()
        };
        // Two failures, a pass that resets them, then three.
        assert_eq!(fail(2), [Moved::Stayed; 2]);
        assert_eq!(pass(1), [Moved::Stayed]);
        assert_eq!(fail(3), [Moved::Stayed, Moved::Stayed, Moved::Out]);
        assert!(!healthy(&state, "a"));
        let down = "health check: 3 consecutive failures, last: GET /health answered 500";
        assert_eq!(a.control.reasons(), [down]);
        // The reason says why it went out; the counts go on.
        assert_eq!(fail(2), [Moved::Stayed; 2]);
        assert_eq!(a.control.reasons(), [down]);
        let checks = a.control.checks().expect("checked");
        assert_eq!((checks.passes, checks.failures), (0, 5));
        // One pass, a failure that resets it, then two.
        assert_eq!(pass(1), [Moved::Stayed]);
        assert_eq!(fail(1), [Moved::Stayed]);
        assert_eq!(pass(2), [Moved::Stayed, Moved::Back]);
        assert!(healthy(&state, "a"));
        assert_eq!(
            a.control.checks(),
            Some(Checks {
                passes: 2,
                failures: 0,
                last: Some("GET /health answered 200".into())
            })
        );
    }

    #[test]
    fn an_operator_marking_it_up_clears_every_reason_and_the_counts() {
        let (state, up, _stop) = state(&[("a", "127.0.0.1:1")], Settings::default());
        let (a, check) = (&up[0], check(2, 2));
        let fail = || state.checked(a, &check, false, "GET /health answered 503".into());
        assert_eq!(fail(), Some(Moved::Stayed));
        assert_eq!(fail(), Some(Moved::Out));
        assert_eq!(fail(), Some(Moved::Stayed));
        assert_eq!(
            state.set_reason(a, Reason::Admin, true),
            Some(Moved::Stayed)
        );
        assert_eq!(a.note_failure(Duration::from_secs(10)), 1);
        assert_eq!(state.clear_reasons(a), Some(Moved::Back));
        assert!(healthy(&state, "a"));
        assert!(a.control.reasons().is_empty());
        let checks = a.control.checks().expect("checked");
        assert_eq!((checks.passes, checks.failures), (0, 0));
        assert_eq!(a.recent_failures(), 0);
        // `fall` new failures to take it out again.
        assert_eq!(fail(), Some(Moved::Stayed));
        assert_eq!(fail(), Some(Moved::Out));
        assert_eq!(state.clear_reasons(a), Some(Moved::Back));
        assert_eq!(state.clear_reasons(a), Some(Moved::Stayed));
    }

    #[test]
    fn a_backend_no_longer_in_the_pool_moves_nothing_there() {
        let (state, up, _stop) = state(&[("a", "127.0.0.1:1")], Settings::default());
        let old = &up[0];
        state.pool.remove("a").expect("removed");
        assert_eq!(state.set_reason(old, Reason::Admin, true), None);
        // Another backend of the same name is another backend.
        let new = Arc::new(Upstream::new("a".into(), old.address));
        state
            .pool
            .add_with(crate::engine::BackendSpec::named("a"), Arc::clone(&new))
            .expect("added");
        assert_eq!(state.set_reason(old, Reason::Admin, false), None);
        assert_eq!(state.set_reason(old, Reason::Passive, true), None);
        assert!(healthy(&state, "a"));
        assert_eq!(
            state.set_reason(&new, Reason::Admin, true),
            Some(Moved::Out)
        );
        assert!(!healthy(&state, "a"));
    }

    #[test]
    fn concurrent_changes_leave_the_flag_and_the_reasons_agreeing() {
        let (state, up, _stop) = state(&[("a", "127.0.0.1:1")], Settings::default());
        let a = &up[0];
        let check = check(2, 1);
        let (outs, backs) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (state, check, outs, backs) = (&state, &check, &outs, &backs);
                s.spawn(move || {
                    let mut x = t + 1;
                    for _ in 0..2_000 {
                        // A small xorshift: each thread its own sequence.
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let on = x & 1 == 0;
                        let moved = match (x >> 1) % 4 {
                            0 => state.set_reason(a, Reason::Admin, on),
                            1 => state.set_reason(a, Reason::Passive, on),
                            2 => state.checked(a, check, on, "GET /health answered 200".into()),
                            _ => state.clear_reasons(a),
                        };
                        match moved.expect("in the pool") {
                            Moved::Out => outs.fetch_add(1, Ordering::Relaxed),
                            Moved::Back => backs.fetch_add(1, Ordering::Relaxed),
                            Moved::Stayed => 0,
                        };
                        // Seen under the pool's lock, they agree.
                        state.pool.read(|p| {
                            let healthy = p.get("a").expect("in the pool").healthy();
                            assert_eq!(healthy, a.control.reasons().is_empty());
                        });
                    }
                });
            }
        });
        let (outs, backs) = (outs.into_inner(), backs.into_inner());
        let out = !a.control.reasons().is_empty();
        assert!(outs > 100, "{outs} take-outs");
        // Every take-out but the last is matched by one return.
        assert_eq!(outs, backs + u64::from(out));
        assert_eq!(healthy(&state, "a"), !out);
    }

    #[tokio::test]
    async fn passive_failures_take_it_out_for_the_fail_timeout() {
        let settings = Settings {
            max_fails: Some(2),
            fail_timeout: Some(Duration::from_millis(400)),
            ..Settings::default()
        };
        let (state, up, _stop) = state(&[("a", "127.0.0.1:1")], settings);
        let a = &up[0];
        state.failed(a);
        assert!(healthy(&state, "a"));
        state.failed(a);
        assert!(!healthy(&state, "a"));
        assert_eq!(a.control.reasons(), ["passive: 2 failures within 400ms"]);
        // An operator's clearing ends it, and the old timer then leaves a
        // new take-out alone.
        assert_eq!(state.clear_reasons(a), Some(Moved::Back));
        tokio::time::sleep(Duration::from_millis(200)).await;
        state.failed(a);
        state.failed(a);
        assert!(!healthy(&state, "a"));
        // Past the first timer, well before the second.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            !healthy(&state, "a"),
            "ended by the earlier take-out's timer"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !healthy(&state, "a") {
            assert!(std::time::Instant::now() < deadline, "still out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(a.control.reasons().is_empty());
        assert_eq!(a.recent_failures(), 0);
    }
}
