//! One request, from the client to a backend and back.
//!
//! 1. Smuggling shapes are refused with 400.
//! 2. The engine picks a backend and counts the request on it at once (a
//!    lease). When every eligible backend is at its connection limit, the
//!    request waits in a bounded queue for a lease to end; a full queue or
//!    a wait past the queue timeout is a 503, as is a pool with no eligible
//!    backend at all (with `Retry-After`).
//! 3. The request goes out on an idle connection to that backend or a new
//!    one. A connection that fails before the request was sent (refused,
//!    reset, timed out) is a failure of that backend, and the request is
//!    tried on another one, never the same twice, at most `retries` more
//!    times; once its body may have been sent it is not retried. A reused
//!    connection that the backend closes before answering is no failure:
//!    a request without a body that may be repeated is sent again on a new
//!    connection.
//! 4. A response header not received within the response timeout is a
//!    504; a failure that cannot be retried is a 502, unless the client's
//!    body failed (400, or 408 when it timed out), which is no failure of
//!    the backend's. Every such answer says what happened in its body.
//! 5. The response is relayed; the lease ends with its body, which fails
//!    when the backend sends no more of it within the response timeout.
//!    A 101 answer to an upgrade turns the exchange into a tunnel that
//!    holds the lease until either side closes.

use super::body::{Progress, ProxyBody, Relay, Reply};
use super::headers;
use super::idle::Recent;
use super::upstream::{ConnectError, Connection, Upstream};
use super::{Held, State};
use crate::engine::{BackendId, NoBackend};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Answers one client request.
pub async fn handle(
    state: Arc<State>,
    client: SocketAddr,
    recent: Recent,
    request: Request<Incoming>,
) -> Result<Response<Reply>, Infallible> {
    let started = Instant::now();
    // Kept for the access log only, when there is one.
    let logged = state
        .config
        .access_log
        .then(|| (request.method().clone(), request.uri().clone()));
    // `smuggles` first: it must see every request's head, in order.
    let smuggled = smuggles(&request, &recent).map(|why| (StatusCode::BAD_REQUEST, why));
    let response = match smuggled.or_else(|| headers::refused(&request)) {
        Some((status, why)) => answer(status, why.to_owned()),
        None => forward(&state, client, request, started).await,
    };
    if let Some((method, target)) = logged {
        tracing::info!(
            %client,
            %method,
            %target,
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
    Ok(response)
}

async fn forward(
    state: &Arc<State>,
    client: SocketAddr,
    mut request: Request<Incoming>,
    started: Instant,
) -> Response<Reply> {
    let upgrade = headers::wants_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    headers::for_backend(&mut request, client, upgrade);
    // The request leaves here; a send that fails before it went out hands
    // it back for the next backend.
    let mut unsent = Some(request.map(ProxyBody::client));
    let upload = unsent.as_ref().and_then(|r| r.body().progress());
    let mut tried: Vec<BackendId> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    loop {
        let mut held = match acquire(state, &tried).await {
            Ok(held) => held,
            Err(refusal) if !failures.is_empty() => {
                return answer(
                    StatusCode::BAD_GATEWAY,
                    format!("{}; {refusal}", failures.join("; ")),
                )
            }
            Err(refusal) => return refusal.response(state),
        };
        if !tried.is_empty() {
            state.retries.fetch_add(1, Ordering::Relaxed);
        }
        let Some(lease) = held.lease.as_ref() else {
            return answer(StatusCode::BAD_GATEWAY, "no backend".into());
        };
        let upstream = Arc::clone(lease.payload());
        let id = lease.id();
        let Some(outgoing) = unsent.take() else {
            return answer(StatusCode::BAD_GATEWAY, "the request was lost".into());
        };
        match exchange(state, &upstream, outgoing).await {
            Exchange::Answered(mut response, connection) => {
                // The client is answered in this proxy's HTTP version.
                *response.version_mut() = hyper::Version::HTTP_11;
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = client_upgrade {
                        let backend_side = hyper::upgrade::on(&mut response);
                        tokio::spawn(tunnel(client_side, backend_side, held, started));
                        headers::remove_hop_by_hop(response.headers_mut(), true);
                        return response.map(|_| Reply::empty());
                    }
                }
                let ok = !(state.config.fail_on_5xx && response.status().is_server_error());
                headers::remove_hop_by_hop(response.headers_mut(), false);
                let timeout = state.config.response_timeout;
                return response.map(|body| {
                    Reply::Relay(Relay::new(body, held, connection, started, ok, timeout))
                });
            }
            Exchange::Unsent(back, why) => {
                held.record(false, started.elapsed());
                failures.push(format!("{upstream}: {why}"));
                tried.push(id);
                unsent = Some(back);
                if tried.len() > state.config.retries {
                    return answer(
                        StatusCode::BAD_GATEWAY,
                        format!("{}; no more retries", failures.join("; ")),
                    );
                }
            }
            Exchange::Exhausted(why) => {
                // Released with nothing recorded, as below.
                let mut response = answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{upstream}: this proxy could not open a connection within {:?}: {why}",
                        state.config.connect_timeout
                    ),
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            Exchange::ClientFailed => {
                // Released with nothing recorded: the backend did no wrong.
                let (status, why) = upload
                    .as_deref()
                    .and_then(Progress::failed)
                    .cloned()
                    .unwrap_or((StatusCode::BAD_REQUEST, "it failed".into()));
                return answer(
                    status,
                    format!("the request body did not arrive whole: {why}"),
                );
            }
            Exchange::Failed(why) => {
                held.record(false, started.elapsed());
                failures.push(format!("{upstream}: {why}"));
                return answer(StatusCode::BAD_GATEWAY, failures.join("; "));
            }
            Exchange::TimedOut => {
                held.record(false, started.elapsed());
                return answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "{upstream} sent no response header within {:?}",
                        state.config.response_timeout
                    ),
                );
            }
        }
    }
}

/// Why a request with `Transfer-Encoding` is refused with 400, for what
/// hyper hid: the client sent `Content-Length` too (hyper drops it), or its
/// head was too large to tell.
fn smuggles(request: &Request<Incoming>, recent: &Recent) -> Option<&'static str> {
    // Taken for every request, so that the next is looked for after it.
    let (method, uri) = (request.method(), request.uri());
    let mut had_length = recent.take_head(format!("{method} {uri} ").as_bytes());
    // `http://host` is shown as `http://host/`: look for it as sent too.
    if let (None, Some(authority)) = (had_length, uri.authority()) {
        let authority = authority.as_str();
        let sent = uri
            .to_string()
            .replacen(&format!("{authority}/"), authority, 1);
        had_length = recent.take_head(format!("{method} {sent} ").as_bytes());
    }
    if !request
        .headers()
        .contains_key(hyper::header::TRANSFER_ENCODING)
    {
        return None;
    }
    match had_length {
        Some(false) => None,
        Some(true) => Some(headers::BOTH_LENGTHS),
        None => Some(
            "the request has Transfer-Encoding and a head over 16 KiB, \
             which cannot be checked for Content-Length",
        ),
    }
}

/// How one try on one backend went.
enum Exchange {
    /// A response header came, on this connection.
    Answered(Response<Incoming>, Connection),
    /// Nothing was sent: the request comes back, to try elsewhere.
    Unsent(Request<ProxyBody>, String),
    /// The request may have been sent, and failed.
    Failed(String),
    /// This proxy had no descriptor for a connection: the backend did no
    /// wrong, and another would fare no better.
    Exhausted(String),
    /// Reading the client's body failed (bad chunked framing, the client
    /// gone mid-body or silent for the idle timeout): the client's fault,
    /// not the backend's; its `Progress` says how.
    ClientFailed,
    /// No response header within the response timeout.
    TimedOut,
}

/// Sends the request to `upstream` on an idle connection, or a new one if
/// the idle one turns out closed (which is no failure of the backend's).
async fn exchange(state: &State, upstream: &Upstream, request: Request<ProxyBody>) -> Exchange {
    let mut request = request;
    let upload = request.body().progress();
    let mut idle = upstream.take_idle();
    // A backend may close an idle connection (its keep-alive timeout) just
    // as a request arrives on it, unanswered: a request without a body that
    // may be repeated (RFC 9110, 9.2.2) is then sent again on a new one.
    let mut again =
        (idle.is_some() && request.body().is_end_stream() && request.method().is_idempotent())
            .then(|| without_body(&request));
    loop {
        let from_idle = idle.is_some();
        let mut connection = match idle.take() {
            Some(connection) => connection,
            None => match upstream.connect(state.config.connect_timeout).await {
                Ok(connection) => connection,
                Err(e @ (ConnectError::Failed(_) | ConnectError::Handshake(_))) => {
                    return Exchange::Unsent(request, e.to_string())
                }
                Err(ConnectError::Exhausted(e)) => return Exchange::Exhausted(e.to_string()),
                Err(ConnectError::TimedOut) => {
                    return Exchange::Unsent(
                        request,
                        format!("no connection within {:?}", state.config.connect_timeout),
                    )
                }
            },
        };
        let sent = response_header(
            connection.try_send_request(request),
            upload.as_deref(),
            state.config.response_timeout,
        )
        .await;
        match sent {
            None => return Exchange::TimedOut,
            Some(Ok(response)) => return Exchange::Answered(response, connection),
            // Before anything else: a failed body is never sent again.
            Some(Err(_)) if upload.as_deref().and_then(Progress::failed).is_some() => {
                return Exchange::ClientFailed;
            }
            Some(Err(mut e)) => match e.take_message() {
                // An idle connection the backend had closed: a new one.
                Some(back) if from_idle => request = back,
                Some(back) => return Exchange::Unsent(back, with_cause(&e.into_error())),
                None => match again.take() {
                    Some(copy) if from_idle && closed_unanswered(e.error()) => {
                        request = copy;
                    }
                    _ => return Exchange::Failed(with_cause(&e.into_error())),
                },
            },
        }
    }
}

/// Waits for the response header, for at most `timeout` after the request
/// started to go out or, while its body is uploaded, after the body last
/// moved, not counting waits for the client to send more of it (bounded
/// by the client's idle timeout). `None` when the time ran out.
async fn response_header<T>(
    send: impl std::future::Future<Output = T>,
    upload: Option<&Progress>,
    timeout: std::time::Duration,
) -> Option<T> {
    tokio::pin!(send);
    let mut since = tokio::time::Instant::now();
    loop {
        let quiet_since = upload.map_or(since, |p| since.max(p.last().into()));
        match tokio::time::timeout_at(quiet_since + timeout, &mut send).await {
            Ok(result) => return Some(result),
            Err(_)
                if upload.is_some_and(|p| tokio::time::Instant::from(p.last()) > quiet_since) => {}
            Err(_) if upload.is_some_and(Progress::waiting) => {
                since = tokio::time::Instant::now();
            }
            Err(_) => return None,
        }
    }
}

/// What went wrong, with its cause: hyper says "connection error" and
/// keeps "Connection reset by peer" as its source.
fn with_cause(e: &hyper::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Whether a connection ended, closed or reset, before a whole response.
fn closed_unanswered(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    e.is_incomplete_message()
        || io.is_some_and(|io| matches!(io.kind(), ConnectionReset | BrokenPipe))
}

/// A copy of a request without a body, to send again.
fn without_body(request: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(ProxyBody::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Why no lease could be had.
pub enum Refusal {
    /// No backend is eligible, for a reason no wait would change.
    NoBackend(NoBackend),
    /// Every eligible backend is at its limit and the queue is full.
    QueueFull(usize),
    /// The wait in the queue ran out.
    QueueTimeout(std::time::Duration),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoBackend(none) => write!(f, "{none}"),
            Refusal::QueueFull(n) => write!(
                f,
                "every backend is at its connection limit and {n} requests are already waiting"
            ),
            Refusal::QueueTimeout(wait) => write!(
                f,
                "every backend stayed at its connection limit for {wait:?}, the longest a request waits"
            ),
        }
    }
}

impl Refusal {
    /// The 503 for it, with `Retry-After`.
    fn response(&self, state: &State) -> Response<Reply> {
        let mut response = answer(StatusCode::SERVICE_UNAVAILABLE, self.to_string());
        let after = match self {
            Refusal::NoBackend(_) => state.config.fail_timeout.as_secs().max(1),
            Refusal::QueueFull(_) | Refusal::QueueTimeout(_) => 1,
        };
        if let Ok(value) = HeaderValue::from_str(&after.to_string()) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }
}

/// Takes a lease on a backend other than those `tried`, waiting in the
/// queue while every eligible backend is at its limit.
async fn acquire(state: &Arc<State>, tried: &[BackendId]) -> Result<Held, Refusal> {
    let held = |lease| Held {
        lease: Some(lease),
        state: Arc::clone(state),
    };
    // The usual case, without touching the queue's waiter list; but while
    // others wait, a newcomer does not overtake them.
    let mut none = if state.queued.load(Ordering::Acquire) == 0 {
        match state.pool.acquire(None, tried) {
            Ok(lease) => return Ok(held(lease)),
            Err(none) => none,
        }
    } else {
        NoBackend::NoneEligible {
            down: 0,
            drained: 0,
            full: 1,
            tried: 0,
        }
    };
    let config = &state.config;
    let deadline = tokio::time::Instant::now() + config.queue_timeout;
    let mut place: Option<QueuePlace> = None;
    loop {
        let refusal = if !is_full(&none) {
            Some(Refusal::NoBackend(none))
        } else if place.is_none() {
            place = QueuePlace::take(state);
            place.is_none().then_some(Refusal::QueueFull(config.queue))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            // Counted in one locked step with a last pick, so that a
            // refusal is counted (and journaled) only where the engine had
            // no backend to give.
            if tried.is_empty() {
                if let Ok(lease) = state.pool.acquire_or_reject(None, tried) {
                    return Ok(held(lease));
                }
            }
            return Err(refusal);
        }
        // Registered before trying again, so that a release in between is
        // not missed.
        let released = state.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        match state.pool.acquire(None, tried) {
            Ok(lease) => return Ok(held(lease)),
            // Not for want of room (taken out, say): no wait helps.
            Err(other) if !is_full(&other) => {
                none = other;
                continue;
            }
            Err(_) => {}
        }
        if tokio::time::timeout_at(deadline, released).await.is_err() {
            return match state.pool.acquire_or_reject(None, tried) {
                Ok(lease) => Ok(held(lease)),
                Err(_) => Err(Refusal::QueueTimeout(config.queue_timeout)),
            };
        }
        none = match state.pool.acquire(None, tried) {
            Ok(lease) => return Ok(held(lease)),
            Err(none) => none,
        };
    }
}

/// Whether a refusal is for want of room: some eligible backend is only at
/// its limit, so a wait may help.
fn is_full(none: &NoBackend) -> bool {
    matches!(none, NoBackend::NoneEligible { full, .. } if *full > 0)
}

/// A place in the queue, given up when dropped.
struct QueuePlace {
    state: Arc<State>,
}

impl QueuePlace {
    fn take(state: &Arc<State>) -> Option<QueuePlace> {
        let before = state.queued.fetch_add(1, Ordering::AcqRel);
        if before >= state.config.queue {
            state.queued.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(QueuePlace {
            state: Arc::clone(state),
        })
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.state.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Relays bytes both ways between the upgraded client and backend
/// connections, holding the lease until either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    mut held: Held,
    started: Instant,
) {
    let name = held.upstream().map(|u| u.name.clone()).unwrap_or_default();
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(backend = %name, "upgrade failed: {e}");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut backend = hyper_util::rt::TokioIo::new(backend);
    let copied = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
    if let Err(e) = &copied {
        tracing::debug!(backend = %name, "tunnel ended: {e}");
    }
    held.record(true, started.elapsed());
}

/// An answer of the proxy's own, saying what happened.
fn answer(status: StatusCode, why: String) -> Response<Reply> {
    let text = format!(
        "leastconn: {} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    Reply::response(status, "text/plain; charset=utf-8", text)
}
