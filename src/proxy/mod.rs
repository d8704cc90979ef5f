//! `leastconn proxy`: an HTTP/1.1 reverse proxy over the engine.
//!
//! Every request goes to the backend the engine chooses, counted from the
//! moment it is chosen (before connecting) until its response body has
//! been relayed to the end or the exchange ends any other way, through an
//! engine [`Lease`]. An upgraded exchange (a
//! WebSocket) holds its count for the tunnel's whole life.
//!
//! - [`config`]: the settings, from flags and a TOML file, checked.
//! - `forward`: one request: checks, the backend's lease (waiting in the
//!   queue when every eligible backend is at its limit), retries on
//!   another backend, timeouts, the relayed response or the error answer,
//!   tunnels.
//! - `headers`: hop-by-hop headers removed,
//!   `X-Forwarded-For`, `X-Forwarded-Proto` and `Via` added.
//! - `body`: the response body that ends the lease when it ends.
//! - `upstream`: a backend's address, idle connections and failures.
//! - `control`: why a backend is out of the pool (its checks, passive
//!   failures, an operator), the one place that takes it out and brings it
//!   back, and the slow start that eases it in.
//! - `health`: active health checks, a task per checked backend.
//! - `admin`: the admin listener: `GET /stats`, `POST /messages` for
//!   `runtime`, and the paths below.
//! - `metrics`: `GET /metrics`, the pool in Prometheus' text format, and
//!   the response-time histogram each backend keeps.
//! - `dashboard`: `GET /`, a page that shows `/stats` live.
//! - `runtime`: changes to the running pool: the admin API's messages
//!   (the node's own) and the reload of `--config` on SIGHUP.
//! - `idle`: the client connection's inactivity timeout, and the raw
//!   request heads kept to check what hyper does not show.
//! - `record`: `--record`, every decision of the engine written as the
//!   node's messages and replies, for `leastconn replay` to check.
//!
//! This module itself runs the listeners, the workers, the reload on
//! SIGHUP and graceful shutdown.

mod admin;
mod body;
pub mod config;
mod control;
mod dashboard;
mod forward;
mod headers;
mod health;
mod idle;
mod metrics;
mod record;
mod runtime;
mod upstream;

pub use config::{Config, Settings};

use crate::engine::{BackendSpec, Lease, Policy, Pool, SharedPool};
use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use upstream::Upstream;

/// What every request shares.
pub(crate) struct State {
    pool: SharedPool<Arc<Upstream>>,
    config: Config,
    /// Told whenever a lease ends: a queued request may find room.
    released: Notify,
    /// Requests waiting in the queue now.
    queued: AtomicUsize,
    /// Requests tried again on another backend, for `/metrics`.
    retries: AtomicU64,
    /// Becomes true when the proxy stops.
    stopping: watch::Receiver<bool>,
    /// What the admin API's changes and reloads need.
    runtime: runtime::Runtime,
    /// Never sent on: shutdown waits for the state, and so this sender, to
    /// be dropped by every connection, tunnel and body holding it.
    #[allow(dead_code)]
    tasks: mpsc::Sender<()>,
}

/// A request's lease on a backend, which also wakes a queued request when
/// it ends.
pub(crate) struct Held {
    lease: Option<Lease<Arc<Upstream>>>,
    state: Arc<State>,
}

impl Held {
    /// The backend held.
    fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.lease.as_ref().map(|lease| lease.payload())
    }

    /// Records how the request went; a failure counts towards taking the
    /// backend out.
    fn record(&mut self, ok: bool, duration: Duration) {
        let Some(lease) = &mut self.lease else { return };
        lease.record(ok, duration);
        if !ok {
            self.state.failed(lease.payload());
        }
    }

    /// Records how a request that got a response went, its time in the
    /// backend's histogram too.
    fn record_response(&mut self, ok: bool, duration: Duration) {
        if let Some(upstream) = self.upstream() {
            upstream.response_times.observe(duration);
        }
        self.record(ok, duration);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.lease.take());
        self.state.released.notify_one();
    }
}

/// Runs the proxy until SIGTERM or SIGINT, then lets requests in flight
/// finish within the grace period; on SIGHUP, reads `source` again.
pub fn run(config: Config, source: Option<config::Source>) -> anyhow::Result<()> {
    init_logging(&config.log);
    let runtime = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()
    }
    .context("cannot start the runtime")?;
    runtime.block_on(serve(config, source))
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("leastconn={level}")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("leastconn=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

async fn serve(config: Config, source: Option<config::Source>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin = match config.admin {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (--admin)"))?,
        ),
        None => None,
    };
    let policy = Policy {
        algorithm: config.algorithm,
        tie_break: config.tie_break,
        seed: config.seed,
    };
    let upstreams: Vec<Arc<Upstream>> = config
        .backends
        .iter()
        .map(|b| Arc::new(Upstream::new(b.name.clone(), b.address)))
        .collect();
    let backends = config.backends.iter().zip(&upstreams).map(|(b, upstream)| {
        let spec = BackendSpec {
            name: &b.name,
            weight: b.weight,
            max_connections: b.max_connections,
        };
        (spec, Arc::clone(upstream))
    });
    let pool = SharedPool::new(Pool::with_payloads(backends, policy)?);
    // Set before anything can change the pool: the record starts with it.
    let recorder = match &config.record {
        Some(paths) => {
            let (recorder, journal) = pool.read(|p| record::Recorder::start(paths, p))?;
            pool.set_journal(journal);
            tokio::spawn(flush_now_and_then(pool.clone()));
            Some((recorder, pool.clone()))
        }
        None => None,
    };
    let (tasks, mut all_done) = mpsc::channel::<()>(1);
    let (stop, stopping) = watch::channel(false);
    let state = Arc::new(State {
        pool,
        runtime: runtime::Runtime::new(source, config.clone()),
        config,
        released: Notify::new(),
        queued: AtomicUsize::new(0),
        retries: AtomicU64::new(0),
        stopping: stopping.clone(),
        tasks,
    });
    // Before the lines below: /stats shows the checks from the start.
    for (backend, upstream) in state.config.backends.iter().zip(&upstreams) {
        if let Some(check) = &backend.health {
            health::start(&state, upstream, check.clone());
        }
    }
    // The pool holds them from now on: one removed is then dropped, and
    // its connections with it.
    drop(upstreams);
    tokio::spawn(close_idle_now_and_then(Arc::downgrade(&state)));
    // Watched before the lines below, which tell scripts they may send it.
    let signal = shutdown_signal();
    reload_on_hangup(&state);
    // Read before the lines below: after them, the proxy opens no file
    // but for its connections (tests count its descriptors from there).
    let room = Arc::new(tokio::sync::Semaphore::new(client_limit()));
    // Tests and scripts wait for these lines.
    eprintln!("listening on {}", listener.local_addr()?);
    if let Some(admin) = &admin {
        eprintln!("admin on {}", admin.local_addr()?);
    }
    tracing::info!(
        backends = state.config.backends.len(),
        algorithm = %state.config.algorithm,
        "proxying"
    );
    if let Some(admin) = admin {
        tokio::spawn(admin::serve(admin, Arc::clone(&state), stopping.clone()));
    }
    tokio::pin!(signal);
    loop {
        // Never closed; waited for with the signal, so that a full proxy
        // still stops.
        let permit = tokio::select! {
            permit = Arc::clone(&room).acquire_owned() => permit,
            _ = &mut signal => break,
        };
        let Ok(permit) = permit else { break };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let state = Arc::clone(&state);
                    let stopping = stopping.clone();
                    // Held while hyper serves it (a tunnel it hands over
                    // is not counted).
                    tokio::spawn(async move {
                        connection(stream, client, state, stopping).await;
                        drop(permit);
                    });
                }
                // Out of descriptors and the like: say so, keep going.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = &mut signal => break,
        }
    }
    drop(listener);
    let grace = state.config.grace;
    tracing::info!("stopping: no new connections; up to {grace:?} for requests in flight");
    let _ = stop.send(true);
    // Every connection, tunnel and relayed body holds the state, and so
    // its sender: when the last is gone, all is done.
    drop(state);
    match tokio::time::timeout(grace, all_done.recv()).await {
        Ok(_) => tracing::info!("all requests finished"),
        Err(_) => tracing::warn!("the grace period ended with requests still in flight"),
    }
    if let Some((recorder, journaled)) = recorder {
        // Dropped, the journal hands its last lines over.
        drop(journaled.take_journal());
        recorder.finish();
    }
    Ok(())
}

/// How many client connections are served at once: as many as this
/// process may open descriptors, less a quarter (at least 32) kept for
/// backend connections, listeners, the admin API and checks. Without the
/// reserve, accepted clients take every descriptor and no request can
/// connect onwards. (HAProxy derives its `maxconn` from `ulimit -n` too.)
fn client_limit() -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    match limit {
        Some(limit) => limit.saturating_sub((limit / 4).max(32)).max(1),
        // "unlimited", or not Linux: no limit of ours.
        None => tokio::sync::Semaphore::MAX_PERMITS,
    }
}

/// Closes, every so often, the backend connections idle for longer than
/// `--backend-idle-timeout`, so that a quiet proxy holds none open for
/// long.
async fn close_idle_now_and_then(state: std::sync::Weak<State>) {
    let Some(timeout) = state.upgrade().map(|s| s.config.backend_idle_timeout) else {
        return;
    };
    let period = (timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // Weak: this task never keeps a stopping proxy waiting.
        let Some(state) = state.upgrade() else { return };
        let upstreams: Vec<Arc<Upstream>> = state
            .pool
            .read(|p| p.iter().map(|(_, b)| Arc::clone(b.payload())).collect());
        drop(state);
        for upstream in upstreams {
            upstream.close_idle(timeout);
        }
    }
}

/// Has the journal pass its lines on every so often, so that a record is
/// never far behind even when traffic is light.
async fn flush_now_and_then(pool: SharedPool<Arc<Upstream>>) {
    let mut every = tokio::time::interval(Duration::from_millis(200));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        pool.flush_journal();
    }
}

/// Serves one client connection until it closes, or, once the proxy is
/// stopping, until its request in flight is answered.
async fn connection(
    stream: tokio::net::TcpStream,
    client: std::net::SocketAddr,
    state: Arc<State>,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let recent = idle::Recent::default();
    let io = TokioIo::new(idle::Idle::new(
        stream,
        state.config.idle_timeout,
        recent.clone(),
    ));
    let handler = Arc::clone(&state);
    let service = service_fn(move |request| {
        forward::handle(Arc::clone(&handler), client, recent.clone(), request)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped(&mut stopping) => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%client, "client connection ended: {e}");
    }
}

/// Resolves once the proxy is stopping.
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // Dropping the guard here keeps the waiting future `Send`.
    let _ = stopping.wait_for(|&stop| stop).await;
}

/// Reloads the config on every SIGHUP, one reload at a time, until the
/// proxy stops. SIGHUP is watched from the call: until then it would end
/// the process.
fn reload_on_hangup(state: &Arc<State>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP: no reload: {e}");
            return;
        }
    };
    // Weak: waiting for a signal never keeps a stopping proxy waiting.
    let weak = Arc::downgrade(state);
    let mut stopping = state.stopping.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped(&mut stopping) => return,
                got = hangup.recv() => {
                    let (Some(()), Some(state)) = (got, weak.upgrade()) else { return };
                    tokio::select! {
                        _ = runtime::reload(&state) => {}
                        _ = stopped(&mut stopping) => return,
                    }
                }
            }
        }
    });
}

/// Resolves on SIGTERM or SIGINT. The signals are watched from the call,
/// not from the first poll: until then either would end the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let watched = signal(SignalKind::terminate()).and_then(|term| {
        let int = signal(SignalKind::interrupt())?;
        Ok((term, int))
    });
    async move {
        let (mut term, mut int) = match watched {
            Ok(both) => both,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM and SIGINT: {e}");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
}
