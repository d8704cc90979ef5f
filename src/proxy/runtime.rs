//! Changes to the running pool: the admin API's messages (`POST
//! /messages`) and the reload of `--config` on SIGHUP.
//!
//! `POST /messages` takes the node's own messages, one envelope or a
//! JSON-lines stream of them, and answers each with the line the node
//! would write, in order: `add_backend` (with an `address`), `remove_backend`,
//! `set_backend` and `stats`; `init`, `http_request` and `request_complete`
//! are error 10. Input the node would skip (not JSON, not UTF-8, not an
//! envelope) is answered `{"skipped":"line L, column C: why"}`, the node's
//! own diagnostic. A body over [`MAX_BODY`] is 413.
//!
//! With `--slow-start`, a backend added, or given a weight above 0 again,
//! begins a slow start in the step that makes it eligible (see `control`).
//!
//! A removal drains: the backend's weight goes to 0 at once, so that no
//! new request goes to it, and it leaves the pool when its last request in
//! flight ends, or when `--grace` has passed (its requests then finish all
//! the same, uncounted: the engine ignores the end of a lease on a backend
//! no longer in the pool). Only then is it answered. Meanwhile it takes no
//! `set_backend` (error 22) and no reweighting by a reload.
//!
//! A reload reads the file again, with the flags over it as at start, and
//! makes the pool match its backends: a new name is added, a name gone is
//! removed (drained, as above), a changed weight or limit is set in place
//! (its count goes on), changed checks are restarted, and a changed
//! address is a removal (drained) and then an addition of that name. Every
//! other setting is read at start only: a change to one is logged and
//! ignored. A file that does not read or check leaves everything as it
//! was.

use super::config::{Backend, Config, Source};
use super::upstream::Upstream;
use super::{health, State};
use crate::engine::{BackendChange, BackendSpec, EngineError};
use crate::framing::{Frame, Framer};
use crate::message::add_backend::AddBackend;
use crate::message::remove_backend::RemoveBackend;
use crate::message::set_backend::SetBackend;
use crate::message::stats::{write_stats, Stats};
use crate::message::{self, refusal, Message, Request};
use crate::protocol::write::WriteJson;
use crate::protocol::{ErrorCode, ProtocolError};
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where the admin listener takes messages.
pub const PATH: &str = "/messages";

/// The largest body `POST /messages` reads.
pub const MAX_BODY: usize = 1 << 20;

/// How often a drain looks at the count of the backend it drains.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// What run-time changes need besides the pool.
#[derive(Debug)]
pub struct Runtime {
    /// The file to read again on SIGHUP, and the flags over it.
    source: Option<Source>,
    /// The settings last loaded: a backend added at run time is checked
    /// as their pool-level health settings say.
    loaded: Mutex<Config>,
    /// Held to check that the backend drained is still the one of its
    /// name and remove it, in one step.
    removing: Mutex<()>,
}

impl Runtime {
    pub fn new(source: Option<Source>, config: Config) -> Self {
        Runtime {
            source,
            loaded: Mutex::new(config),
            removing: Mutex::new(()),
        }
    }
}

/// Answers `POST /messages`: the status and the reply lines.
pub async fn post(state: &Arc<State>, body: hyper::body::Incoming) -> (StatusCode, Vec<u8>) {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let text = format!("{{\"error\":\"the body is over {MAX_BODY} bytes\"}}\n");
            return (StatusCode::PAYLOAD_TOO_LARGE, text.into_bytes());
        }
        Err(e) => {
            let mut out = Vec::new();
            out.raw(b"{\"error\":");
            out.str(&format!("the body could not be read: {e}"));
            out.raw(b"}\n");
            return (StatusCode::BAD_REQUEST, out);
        }
    };
    (StatusCode::OK, messages(state, &bytes).await)
}

/// A piece of the body: a message to read, or input the node skips.
enum Piece {
    Message(Vec<u8>, crate::framing::Position),
    Skipped(String),
}

/// Answers each message of `input` in order, as the node frames it.
async fn messages(state: &Arc<State>, input: &[u8]) -> Vec<u8> {
    let mut framer = Framer::new(MAX_BODY);
    framer.push(input);
    let mut pieces = Vec::new();
    let mut take = |frame: Frame<'_>| match frame {
        // Not read in one pass: the framer scans it next.
        Frame::Begins { .. } => {}
        Frame::Object { bytes, at } => pieces.push(Piece::Message(bytes.to_vec(), at)),
        Frame::Skipped(skipped) => pieces.push(Piece::Skipped(skipped.to_string())),
    };
    while let Some(frame) = framer.next_frame() {
        take(frame);
    }
    if let Some(frame) = framer.finish() {
        take(frame);
    }
    let mut out = Vec::new();
    for piece in &pieces {
        match piece {
            Piece::Message(bytes, at) => match message::read(bytes) {
                Ok((to, msg_id, request)) => {
                    let answer = match request {
                        Ok(request) => apply(state, request).await,
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok(done) => {
                            message::write_reply(None, &to, msg_id, done.kind(), &mut out, |out| {
                                done.write(state, out)
                            })
                        }
                        Err(e) => message::write_error(None, &to, msg_id, &e, &mut out),
                    }
                }
                Err(why) => skipped(&format!("{at}: {why}"), &mut out),
            },
            Piece::Skipped(why) => skipped(why, &mut out),
        }
    }
    out
}

fn skipped(why: &str, out: &mut Vec<u8>) {
    out.raw(b"{\"skipped\":");
    out.str(why);
    out.raw(b"}\n");
}

/// What a message did, as its reply needs to know.
enum Done {
    /// A message about one backend, answered with its reply type, the
    /// backend's name and the counts.
    Backend(&'static str, String),
    Stats,
}

impl Done {
    fn kind(&self) -> &'static str {
        match self {
            Done::Backend(kind, _) => kind,
            Done::Stats => <Stats as Message>::REPLY,
        }
    }

    fn write(&self, state: &State, out: &mut Vec<u8>) {
        state.pool.read(|pool| match self {
            Done::Backend(_, name) => message::write_backend_reply(name, out, |out| {
                message::write_counts(pool.iter().map(|(n, b)| (n, b.active())), out)
            }),
            Done::Stats => {
                out.raw(b",");
                write_stats(pool, out, |_, _| {});
            }
        })
    }
}

/// Does what a message asks of the proxy.
async fn apply(state: &Arc<State>, request: Request<'_>) -> Result<Done, ProtocolError> {
    match request {
        Request::Init(_) => Err(not_supported("init")),
        Request::HttpRequest(_) => Err(not_supported("http_request")),
        Request::RequestComplete(_) => Err(not_supported("request_complete")),
        Request::Stats(_) => Ok(Done::Stats),
        Request::AddBackend(add) => {
            let Some(address) = add.address.as_deref() else {
                return Err(ProtocolError::malformed(
                    "add_backend needs \"address\" here: the HOST:PORT the proxy connects to",
                ));
            };
            let address = resolve(address).await?;
            let name = add.backend.name.to_string();
            let spec = add.backend.spec();
            add_backend(state, spec, address).map_err(refusal)?;
            Ok(Done::Backend(<AddBackend as Message>::REPLY, name))
        }
        Request::RemoveBackend(remove) => {
            remove_backend(state, &remove.backend)
                .await
                .map_err(refusal)?;
            Ok(Done::Backend(
                <RemoveBackend as Message>::REPLY,
                remove.backend.into_owned(),
            ))
        }
        Request::SetBackend(set) => {
            set_backend(state, &set.backend, set.change)?;
            Ok(Done::Backend(
                <SetBackend as Message>::REPLY,
                set.backend.into_owned(),
            ))
        }
    }
}

/// Error 10 for the node's messages that have no meaning here.
fn not_supported(kind: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NotSupported,
        format!(
            "{kind} is not supported by the proxy: its pool is set by its config, \
             and its requests are real HTTP requests"
        ),
    )
}

/// An `address`, `HOST:PORT`, to the first socket address it resolves to.
async fn resolve(address: &str) -> Result<SocketAddr, ProtocolError> {
    let bad = || {
        ProtocolError::malformed(format!(
            "\"address\" {address:?} is not a HOST:PORT that resolves"
        ))
    };
    match tokio::net::lookup_host(address).await {
        Ok(mut found) => found.next().ok_or_else(bad),
        Err(_) => Err(bad()),
    }
}

/// The backend of that name now, with its payload.
fn find(state: &State, name: &str) -> Result<Arc<Upstream>, EngineError> {
    state
        .pool
        .read(|pool| pool.get(name).map(|b| Arc::clone(b.payload())))
        .ok_or_else(|| EngineError::UnknownBackend(name.to_owned()))
}

/// Whether `upstream` is still the backend of its name.
fn is_current(state: &State, upstream: &Arc<Upstream>) -> bool {
    state.pool.read(|pool| {
        pool.get(&upstream.name)
            .is_some_and(|b| Arc::ptr_eq(b.payload(), upstream))
    })
}

/// Adds a backend at `address`, checked as the pool's settings say.
fn add_backend(
    state: &Arc<State>,
    spec: BackendSpec<'_>,
    address: SocketAddr,
) -> Result<(), EngineError> {
    let upstream = Arc::new(Upstream::new(spec.name.to_owned(), address));
    state.add(spec, &upstream)?;
    let checks = lock(&state.runtime.loaded).checks_for_added(&upstream.name);
    match checks {
        Ok(Some(check)) => {
            health::start(state, &upstream, check);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(backend = %upstream.name, "added unchecked: {e:#}"),
    }
    tracing::info!(backend = %upstream.name, %address, "added");
    Ok(())
}

/// Drains the backend `name` and removes it: see the module's docs.
async fn remove_backend(state: &State, name: &str) -> Result<(), EngineError> {
    let upstream = find(state, name)?;
    drain(state, &upstream).await?;
    {
        let _one = lock(&state.runtime.removing);
        if !is_current(state, &upstream) {
            return Err(EngineError::UnknownBackend(name.to_owned()));
        }
        state.pool.remove(name)?;
    }
    upstream.retire();
    upstream.replace_checks(None);
    tracing::info!(backend = %name, "removed");
    Ok(())
}

/// Gives `upstream` no new request and waits, at most `--grace`, for its
/// requests in flight to end.
async fn drain(state: &State, upstream: &Arc<Upstream>) -> Result<(), EngineError> {
    let name = &upstream.name;
    let zero = BackendChange {
        weight: Some(0),
        ..BackendChange::default()
    };
    let ours = |b: &crate::engine::Backend<Arc<Upstream>>| Arc::ptr_eq(b.payload(), upstream);
    state.pool.change_with(name, |b| {
        // With the weight, in one step: no change comes between.
        let drains = ours(b).then_some(zero);
        if drains.is_some() {
            upstream.draining.store(true, Ordering::Relaxed);
        }
        drains
    })?;
    let grace = state.config.grace;
    let deadline = Instant::now() + grace;
    loop {
        let active = state
            .pool
            .read(|pool| pool.get(name).filter(|b| ours(b)).map(|b| b.active()))
            .ok_or_else(|| EngineError::UnknownBackend(name.clone()))?;
        // A stopping proxy has its own wait for requests in flight.
        if active == 0 || *state.stopping.borrow() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                backend = %name,
                "{active} requests still in flight after --grace {grace:?}: removed all the same; \
                 they finish, no longer counted"
            );
            return Ok(());
        }
        // Polled: an admin's wait is not worth a wake-up on every release.
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// `set_backend`: the weight, limit and ramp in the pool; health through
/// the backend's reasons, as an operator's. A backend being removed takes
/// no change (error 22): a weight would give it requests again.
fn set_backend(state: &State, name: &str, change: BackendChange) -> Result<(), ProtocolError> {
    let upstream = find(state, name).map_err(refusal)?;
    let draining = || {
        ProtocolError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "backend {} is being removed: it drains until its requests in flight end, and takes no change meanwhile",
                crate::engine::short_name(name)
            ),
        )
    };
    if upstream.draining.load(Ordering::Relaxed) {
        return Err(draining());
    }
    let in_pool = BackendChange {
        healthy: None,
        ..change
    };
    if in_pool != BackendChange::default() && !state.reweight(name, in_pool).map_err(refusal)? {
        return Err(draining());
    }
    match change.healthy {
        Some(false) => {
            state.set_reason(&upstream, super::control::Reason::Admin, true);
        }
        Some(true) => {
            state.clear_reasons(&upstream);
        }
        None => {}
    }
    Ok(())
}

/// Reads the config again and applies it: see the module's docs.
pub async fn reload(state: &Arc<State>) {
    let Some(source) = &state.runtime.source else {
        tracing::info!("SIGHUP: started without --config, there is nothing to reload");
        return;
    };
    let path = source.path.display();
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("reload of {path} failed, nothing changed: {}", one_line(&e));
            return;
        }
    };
    let fixed = state.config.fixed_changes(&config);
    if !fixed.is_empty() {
        tracing::warn!(
            "reload of {path}: {} changed but cannot change at run time: ignored until a restart",
            fixed.join(", ")
        );
    }
    *lock(&state.runtime.loaded) = config.clone();
    let plan = Plan::new(state, &config.backends);
    tracing::info!("reload of {path}: {}", plan.summary());
    for backend in &plan.added {
        add_configured(state, backend);
    }
    for (upstream, backend, _) in &plan.changed {
        change_configured(state, upstream, backend);
    }
    // Drained side by side; a new address is added once the old is gone.
    let leaving = plan.removed.into_iter().map(|upstream| (upstream, None));
    let moving = plan
        .moved
        .into_iter()
        .map(|(upstream, backend)| (upstream, Some(backend)));
    let drains: Vec<_> = leaving
        .chain(moving)
        .map(|(upstream, then_add)| {
            let state = Arc::clone(state);
            tokio::spawn(async move {
                match remove_backend(&state, &upstream.name).await {
                    Ok(()) => {
                        if let Some(backend) = then_add {
                            add_configured(&state, &backend);
                        }
                    }
                    Err(e) => tracing::warn!(backend = %upstream.name, "not removed: {e}"),
                }
            })
        })
        .collect();
    for drain in drains {
        let _ = drain.await;
    }
}

/// An error on one line: a TOML error draws the line it is on, and a
/// caret under the place, over several; those drawings go.
fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let drawn = |line: &str| {
        let digits = line.trim_start_matches(|c: char| c.is_ascii_digit());
        line.starts_with('|') || (digits.len() < line.len() && digits.starts_with(" |"))
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !drawn(line))
        .collect();
    lines.join("; ")
}

/// What a reload changes in the pool.
#[derive(Default)]
struct Plan {
    added: Vec<Backend>,
    removed: Vec<Arc<Upstream>>,
    /// Same name and address, and a new weight, limit or checks; and
    /// what changed, as `a (weight 1 to 3)`.
    changed: Vec<(Arc<Upstream>, Backend, String)>,
    /// Same name, another address.
    moved: Vec<(Arc<Upstream>, Backend)>,
}

impl Plan {
    fn new(state: &State, backends: &[Backend]) -> Plan {
        let live: Vec<(Arc<Upstream>, u64, Option<u64>)> = state.pool.read(|pool| {
            pool.iter()
                .map(|(_, b)| (Arc::clone(b.payload()), b.weight(), b.max_connections()))
                .collect()
        });
        let mut plan = Plan::default();
        for backend in backends {
            let now = live.iter().find(|(u, _, _)| u.name == backend.name);
            match now {
                None => plan.added.push(backend.clone()),
                Some((u, ..)) if u.address != backend.address => {
                    plan.moved.push((Arc::clone(u), backend.clone()))
                }
                Some((u, weight, max)) => {
                    let limit = |max: Option<u64>| max.map_or("none".to_owned(), |m| m.to_string());
                    let what: Vec<String> = [
                        (*weight != backend.weight)
                            .then(|| format!("weight {weight} to {}", backend.weight)),
                        (*max != backend.max_connections).then(|| {
                            format!("max {} to {}", limit(*max), limit(backend.max_connections))
                        }),
                        (u.checks() != backend.health).then(|| "checks".to_owned()),
                    ]
                    .into_iter()
                    .flatten()
                    .collect();
                    if !what.is_empty() {
                        let what = format!("{} ({})", u.name, what.join(", "));
                        plan.changed.push((Arc::clone(u), backend.clone(), what));
                    }
                }
            }
        }
        plan.removed = live
            .into_iter()
            .filter(|(u, ..)| !backends.iter().any(|b| b.name == u.name))
            .map(|(u, ..)| u)
            .collect();
        plan
    }

    /// `added c; removing b; changed a (weight 1 to 3); new address for
    /// d`, or that nothing
    /// changed.
    fn summary(&self) -> String {
        let names = |what: &str, names: Vec<&str>| {
            (!names.is_empty()).then(|| format!("{what} {}", names.join(", ")))
        };
        let parts: Vec<String> = [
            names("added", self.added.iter().map(|b| &*b.name).collect()),
            names("removing", self.removed.iter().map(|u| &*u.name).collect()),
            names(
                "changed",
                self.changed.iter().map(|(.., what)| &**what).collect(),
            ),
            names(
                "new address for",
                self.moved.iter().map(|(u, _)| &*u.name).collect(),
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "no backend changed".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Adds a backend of the config, with its own checks.
fn add_configured(state: &Arc<State>, backend: &Backend) {
    let upstream = Arc::new(Upstream::new(backend.name.clone(), backend.address));
    let spec = BackendSpec {
        name: &backend.name,
        weight: backend.weight,
        max_connections: backend.max_connections,
    };
    if let Err(e) = state.add(spec, &upstream) {
        tracing::warn!(backend = %backend.name, "not added: {e}");
        return;
    }
    if let Some(check) = &backend.health {
        health::start(state, &upstream, check.clone());
    }
}

/// Sets a staying backend's weight and limit in place, so that its count
/// goes on, and restarts its checks if they changed.
fn change_configured(state: &Arc<State>, upstream: &Arc<Upstream>, backend: &Backend) {
    let change = BackendChange {
        weight: Some(backend.weight),
        max_connections: Some(backend.max_connections),
        ..BackendChange::default()
    };
    match state.reweight(&backend.name, change) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(backend = %backend.name, "not changed: it is being removed");
            return;
        }
        Err(e) => {
            tracing::warn!(backend = %backend.name, "not changed: {e}");
            return;
        }
    }
    if upstream.checks() != backend.health {
        match &backend.health {
            Some(check) => {
                health::start(state, upstream, check.clone());
            }
            None => {
                state.checks_off(upstream);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
