//! The response body sent to a client: a backend's body relayed frame by
//! frame, which ends the request's lease when it ends, or an answer of the
//! proxy's own (an error with what happened).
//!
//! The lease ends, and the backend's count drops, when the body has been
//! read to its end (the connection then goes back to the idle pool), when
//! it fails, and when it is dropped unfinished because the client went
//! away: exactly once, whichever comes first.

use super::upstream::Connection;
use super::Held;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
/// there: a long upload is not a slow backend; and whether the client's
/// body failed (bad chunked framing, the client gone mid-body), which is no
/// failure of the backend's.
pub struct Progress {
    start: Instant,
    /// Microseconds from `start` to the last frame sent.
    last: AtomicU64,
    client_failed: AtomicBool,
}

impl Progress {
    /// When the upload last moved.
    pub fn last(&self) -> Instant {
        self.start + Duration::from_micros(self.last.load(Ordering::Relaxed))
    }

    /// Whether reading the client's body failed.
    pub fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last.store(micros, Ordering::Relaxed);
    }
}

impl ProxyBody {
    /// The client's body.
    pub fn client(inner: Incoming) -> ProxyBody {
        let progress = (!inner.is_end_stream()).then(|| {
            Arc::new(Progress {
                start: Instant::now(),
                last: AtomicU64::new(0),
                client_failed: AtomicBool::new(false),
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
        if let (Poll::Ready(frame), Some(progress)) = (&polled, &this.progress) {
            progress.touch();
            if matches!(frame, Some(Err(_))) {
                progress.client_failed.store(true, Ordering::Relaxed);
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

/// A response body to the client.
pub enum Reply {
    Relay(Relay),
    Own(Full<Bytes>),
}

impl Reply {
    /// A body of the proxy's own.
    pub fn text(text: String) -> Reply {
        Reply::Own(Full::new(Bytes::from(text)))
    }

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
    ) -> Relay {
        Relay {
            inner,
            end: Some(End {
                held,
                connection,
                started,
                ok,
            }),
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(true, false),
            Poll::Ready(Some(Err(_))) => this.finish(false, true),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(true, false),
            _ => {}
        }
        polled
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
