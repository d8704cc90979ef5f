//! The response body sent to a client: a backend's body relayed frame by
//! frame, which ends the request's lease when it ends, or an answer of the
//! proxy's own (an error with what happened).
//!
//! The lease ends, and the backend's count drops, when the body has been
//! read to its end (the connection then goes back to the idle pool), when
//! it fails, and when it is dropped unfinished because the client went
//! away: exactly once, whichever comes first.
//!
//! A backend that sends nothing more for the response timeout while the
//! proxy waits for its body fails the body, as NGINX's
//! `proxy_read_timeout`: the client connection's idle timeout alone cannot
//! end that wait, as it only runs while hyper reads or writes, and hyper
//! reads nothing while a response is under way and the client has already
//! sent its next request.

use super::upstream::Connection;
use super::Held;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What the proxy sends backends: the client's request body, as it comes,
/// noting when it last moved, or none (a request without a body, sent
/// again).
pub struct ProxyBody {
    /// `None` for no body at all.
    inner: Option<Incoming>,
    /// `None` for a request without a body.
    progress: Option<Arc<Progress>>,
}

/// When an upload last moved, so that the response timeout counts from
/// there: a long upload is not a slow backend; whether the proxy waits for
/// the client to send more, which is no slowness of the backend's either;
/// and whether the client's body failed (the client gone, or silent for
/// the idle timeout), which is no failure of the backend's.
pub struct Progress {
    start: Instant,
    /// Microseconds from `start` to the last frame sent.
    last: AtomicU64,
    waiting: AtomicBool,
    /// The client's answer once its body failed.
    failed: OnceLock<(StatusCode, String)>,
}

impl Progress {
    /// When the upload last moved.
    pub fn last(&self) -> Instant {
        self.start + Duration::from_micros(self.last.load(Ordering::Relaxed))
    }

    /// Whether the proxy is waiting for the client's next piece of body.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Once the client's body failed, the status and reason to answer it
    /// with: 408 when it timed out, else 400.
    pub fn failed(&self) -> Option<&(StatusCode, String)> {
        self.failed.get()
    }

    fn touch(&self) {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last.store(micros, Ordering::Relaxed);
    }

    fn fail(&self, e: &hyper::Error) {
        // The innermost cause says what was wrong: `invalid chunk size:
        // overflow`, `connection reset by peer`.
        let mut innermost: &dyn std::error::Error = e;
        while let Some(inner) = innermost.source() {
            innermost = inner;
        }
        let timed_out = innermost
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        let status = if timed_out {
            StatusCode::REQUEST_TIMEOUT
        } else {
            StatusCode::BAD_REQUEST
        };
        let _ = self.failed.set((status, innermost.to_string()));
    }
}

impl ProxyBody {
    /// The client's body.
    pub fn client(inner: Incoming) -> ProxyBody {
        let progress = (!inner.is_end_stream()).then(|| {
            Arc::new(Progress {
                start: Instant::now(),
                last: AtomicU64::new(0),
                waiting: AtomicBool::new(false),
                failed: OnceLock::new(),
            })
        });
        ProxyBody {
            inner: Some(inner),
            progress,
        }
    }

    /// No body.
    pub fn empty() -> ProxyBody {
        ProxyBody {
            inner: None,
            progress: None,
        }
    }

    pub fn progress(&self) -> Option<Arc<Progress>> {
        self.progress.clone()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            progress
                .waiting
                .store(polled.is_pending(), Ordering::Relaxed);
            if let Poll::Ready(frame) = &polled {
                progress.touch();
                if let Some(Err(e)) = frame {
                    progress.fail(e);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// Why a relayed body failed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body to the client.
pub enum Reply {
    Relay(Relay),
    Own(Full<Bytes>),
}

impl Reply {
    pub fn empty() -> Reply {
        Reply::Own(Full::new(Bytes::new()))
    }

    /// A response of the proxy's own with this status, type and body.
    pub fn response(
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Response<Reply> {
        let mut response = Response::new(Reply::Own(Full::new(body.into())));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// A backend's response body, and what ends with it.
pub struct Relay {
    inner: Incoming,
    end: Option<End>,
    /// The longest wait for the backend's next frame.
    timeout: Duration,
    /// Set at the first wait since the last frame, so that time spent
    /// while the client was not ready for more does not count; made once,
    /// then reset for each wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `timer` runs for the wait in progress.
    waiting: bool,
}

/// What the end of a relayed body settles.
struct End {
    held: Held,
    connection: Connection,
    started: Instant,
    /// Whether the response itself counts as a success (not a 5xx, when
    /// 5xx responses count as failures).
    ok: bool,
}

impl Relay {
    pub fn new(
        inner: Incoming,
        held: Held,
        connection: Connection,
        started: Instant,
        ok: bool,
        timeout: Duration,
    ) -> Relay {
        Relay {
            inner,
            end: Some(End {
                held,
                connection,
                started,
                ok,
            }),
            timeout,
            timer: None,
            waiting: false,
        }
    }

    /// Settles the end of the exchange: `read_all` when the body was read
    /// to its end, `failed` when reading it failed.
    fn finish(&mut self, read_all: bool, failed: bool) {
        let Some(mut end) = self.end.take() else {
            return;
        };
        if let (true, Some(upstream)) = (read_all, end.held.upstream()) {
            upstream.give_back(end.connection);
        }
        if read_all || failed {
            end.held
                .record_response(end.ok && !failed, end.started.elapsed());
        }
        // Dropping `end.held` here gives the count back.
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if !std::mem::replace(&mut this.waiting, true) {
                    timer.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.finish(false, true);
                    let why = format!("the backend sent no more of its body within {timeout:?}");
                    return Poll::Ready(Some(Err(why.into())));
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => this.finish(true, false),
            Poll::Ready(Some(Err(_))) => this.finish(false, true),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(true, false),
            Poll::Ready(Some(Ok(_))) => {}
        }
        this.waiting = false;
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A body hyper never needed to read (empty, or a HEAD response) is
        // complete; any other is a client gone before the end.
        let complete = self.inner.is_end_stream();
        self.finish(complete, false);
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Reply::Relay(relay) => Pin::new(relay).poll_frame(cx),
            Reply::Own(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Relay(relay) => relay.is_end_stream(),
            Reply::Own(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Relay(relay) => relay.size_hint(),
            Reply::Own(full) => full.size_hint(),
        }
    }
}
