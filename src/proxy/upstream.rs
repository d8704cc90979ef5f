//! A backend as the proxy reaches it: its address, a small pool of idle
//! keep-alive connections, its recent failures, why it is out of the
//! pool, if it is (`control`), and its response times (`metrics`).
//!
//! Connections are hyper's connection-level HTTP/1 client, one request at a
//! time each: a request takes an idle connection or opens one (never both
//! at once, so the engine's count covers exactly the exchange the engine
//! chose), and gives it back once its response body has been read to the
//! end. A connection that fails, or whose response was abandoned, is
//! dropped, and so is one idle for longer than `--backend-idle-timeout`
//! (see [`Upstream::close_idle`]).

use super::body::ProxyBody;
use super::config::HealthCheck;
use super::control::Control;
use super::metrics::Histogram;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

/// Idle connections kept per backend; more are closed when given back.
const IDLE_PER_BACKEND: usize = 64;

/// A connection that can carry one request.
pub type Connection = SendRequest<ProxyBody>;

/// One backend, as the engine's payload for it.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub address: SocketAddr,
    /// Oldest first, each with when it was given back.
    idle: Mutex<Vec<(Connection, Instant)>>,
    /// When the failures still inside the window happened, oldest first.
    failures: Mutex<VecDeque<Instant>>,
    /// Why it is out of the pool, and what its checks have seen.
    pub control: Control,
    /// How long its relayed responses took, for `/metrics`.
    pub response_times: Histogram,
    /// Its checks' settings and task, while it is checked: a reload that
    /// changes the settings replaces the task.
    checking: Mutex<Option<(HealthCheck, AbortHandle)>>,
    /// Set, with the pool locked, when its removal begins: it drains, and
    /// takes no change that would give it requests again.
    pub draining: std::sync::atomic::AtomicBool,
}

/// Why no connection to a backend could be had.
#[derive(Debug)]
pub enum ConnectError {
    /// Refused, reset or unreachable: nothing was sent.
    Failed(std::io::Error),
    /// No answer within the connect timeout.
    TimedOut,
    /// The HTTP handshake failed.
    Handshake(hyper::Error),
    /// This proxy stayed out of descriptors (or socket buffers, or local
    /// ports) for the whole connect timeout: no fault of the backend's.
    Exhausted(std::io::Error),
}

/// How long a connect waits for this proxy to have a descriptor again, as
/// the accept loop does.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(10);

/// Whether a connect failed for want of this host's resources rather than
/// anything the backend did (Linux's EMFILE, ENFILE, ENOBUFS, ENOMEM,
/// EADDRNOTAVAIL).
fn exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12 | 99))
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Failed(e) => write!(f, "the connection failed: {e}"),
            ConnectError::TimedOut => f.write_str("the connection timed out"),
            ConnectError::Handshake(e) => write!(f, "the connection failed: {e}"),
            ConnectError::Exhausted(e) => write!(f, "this proxy cannot connect now: {e}"),
        }
    }
}

impl std::fmt::Display for Upstream {
    /// How error answers and logs name it: `backend NAME (ADDRESS)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend {} ({})", self.name, self.address)
    }
}

impl Upstream {
    pub fn new(name: String, address: SocketAddr) -> Self {
        Upstream {
            name,
            address,
            idle: Mutex::new(Vec::new()),
            failures: Mutex::new(VecDeque::new()),
            control: Control::default(),
            response_times: Histogram::default(),
            checking: Mutex::new(None),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// An idle connection that is still open, if any.
    /// The most recently used first: the oldest are left to time out.
    pub fn take_idle(&self) -> Option<Connection> {
        let mut idle = lock(&self.idle);
        while let Some((connection, _)) = idle.pop() {
            if connection.is_ready() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps a connection whose exchange is over for the next request.
    /// Not once the backend has left the pool: nothing would close it.
    pub fn give_back(&self, connection: Connection) {
        if connection.is_ready() {
            let mut idle = lock(&self.idle);
            // Checked under the lock that `retire` closes the idle ones
            // with, so that none slips in after.
            if idle.len() < IDLE_PER_BACKEND && !self.control.is_retired() {
                idle.push((connection, Instant::now()));
            }
        }
    }

    /// Closes the connections idle for `timeout` or longer (dropped, each
    /// connection's task ends and closes its socket); how many.
    pub fn close_idle(&self, timeout: Duration) -> usize {
        let mut idle = lock(&self.idle);
        let expired = idle
            .iter()
            .take_while(|(_, since)| since.elapsed() >= timeout)
            .count();
        idle.drain(..expired);
        expired
    }

    /// The backend has left the pool: its checks stop, and its idle
    /// connections close (the periodic close sees only backends in the
    /// pool), as does any given back later.
    pub fn retire(&self) {
        self.control.retire();
        self.close_idle(Duration::ZERO);
    }

    /// Opens a new connection, within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> Result<Connection, ConnectError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match tokio::time::timeout_at(deadline, TcpStream::connect(self.address)).await {
                Ok(Ok(stream)) => break stream,
                // Out of descriptors here is no failure there: wait for one,
                // or for a connection another request has finished with.
                Ok(Err(e)) if exhausted(&e) => {
                    if let Some(idle) = self.take_idle() {
                        return Ok(idle);
                    }
                    if tokio::time::Instant::now() + EXHAUSTED_PAUSE >= deadline {
                        return Err(ConnectError::Exhausted(e));
                    }
                    tokio::time::sleep(EXHAUSTED_PAUSE).await;
                }
                Ok(Err(e)) => return Err(ConnectError::Failed(e)),
                Err(_) => return Err(ConnectError::TimedOut),
            }
        };
        // Requests and responses are small and latency matters more.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        // Driven on its own task; upgrades let a 101 response hand the
        // connection over to a tunnel.
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("backend connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// Its checks' settings, while it is checked.
    pub fn checks(&self) -> Option<HealthCheck> {
        lock(&self.checking)
            .as_ref()
            .map(|(check, _)| check.clone())
    }

    /// Records the checks now running (`None`: none), and stops the task
    /// of those before.
    pub fn replace_checks(&self, checking: Option<(HealthCheck, AbortHandle)>) {
        let before = std::mem::replace(&mut *lock(&self.checking), checking);
        if let Some((_, task)) = before {
            task.abort();
        }
    }

    /// Notes a failure now; returns how many fell within `window`.
    pub fn note_failure(&self, window: Duration) -> usize {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|&t| now.duration_since(t) > window)
        {
            failures.pop_front();
        }
        failures.len()
    }

    /// Forgets past failures (the backend is back).
    pub fn forget_failures(&self) {
        lock(&self.failures).clear();
    }

    /// How many failures are remembered.
    #[cfg(test)]
    pub fn recent_failures(&self) -> usize {
        lock(&self.failures).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
