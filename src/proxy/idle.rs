//! A client connection's transport: its inactivity timeout, and the input
//! it read last.
//!
//! A connection with nothing read or written for the idle timeout fails
//! its next wait with `TimedOut`, and is closed. This bounds idle
//! keep-alive connections, and clients (or tunnels) that stop reading or
//! sending.
//!
//! The last input read is kept (16 KiB) for one check hyper leaves
//! undone: a request head with both `Transfer-Encoding` and
//! `Content-Length` reaches the handler with `Content-Length` already
//! removed (RFC 9112 lets `Transfer-Encoding` win), so whether the client
//! sent both is read from the raw head. Each request's head is taken from
//! it in turn, so that the input kept starts after the last request
//! checked.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A TCP stream that times out after `timeout` without activity.
pub struct Idle {
    stream: TcpStream,
    timeout: Duration,
    /// When a byte last went either way.
    last: Instant,
    /// Wakes a waiting read or write at the earliest possible deadline;
    /// reset lazily, when it fires, rather than at every byte.
    timer: Pin<Box<Sleep>>,
    recent: Recent,
}

/// How much of the last input is kept.
const RECENT: usize = 16 * 1024;

/// The last input a connection read, shared with its request handler.
#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<Vec<u8>>>);

impl Recent {
    fn keep(&self, bytes: &[u8]) {
        let mut recent = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() + bytes.len() > RECENT {
            let keep_from = (recent.len() + bytes.len())
                .saturating_sub(RECENT)
                .min(recent.len());
            recent.drain(..keep_from);
        }
        let start = bytes.len().saturating_sub(RECENT);
        recent.extend_from_slice(&bytes[start..]);
    }

    /// Takes the raw head of the request that begins with `request_line`,
    /// the first such line in the input kept, and forgets it and all input
    /// before it, so that the next request's head is looked for after it
    /// (a pipelined request with the same line, or one in a body, is never
    /// taken for this one). Called for every request, in order. Whether
    /// that head had a `Content-Length` line; `None` when it is not in the
    /// input kept (a head over 16 KiB).
    pub fn take_head(&self, request_line: &[u8]) -> Option<bool> {
        let mut recent = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = memchr::memmem::find(&recent, request_line)?;
        let mut end = recent.len();
        let mut has_length = false;
        let mut at = start;
        for line in recent[start..].split_inclusive(|&b| b == b'\n') {
            at += line.len();
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            // The empty line that ends the head.
            if text.is_empty() {
                end = at;
                break;
            }
            has_length |= text.len() >= 15 && text[..15].eq_ignore_ascii_case(b"content-length:");
        }
        recent.drain(..end);
        Some(has_length)
    }
}

impl Idle {
    pub fn new(stream: TcpStream, timeout: Duration, recent: Recent) -> Idle {
        let now = Instant::now();
        Idle {
            stream,
            timeout,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
            recent,
        }
    }

    /// While waiting: an error once the connection has been idle too long.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last + self.timeout;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) if Instant::now() >= self.last + self.timeout => {
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the connection was idle too long",
                    ))
                }
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn active<T>(&mut self, done: &Poll<io::Result<T>>) {
        if matches!(done, Poll::Ready(Ok(_))) {
            self.last = Instant::now();
        }
    }
}

impl AsyncRead for Idle {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if polled.is_pending() {
            return this.check(cx).map(Err);
        }
        this.active(&polled);
        this.recent.keep(&buf.filled()[before..]);
        polled
    }
}

impl AsyncWrite for Idle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if polled.is_pending() {
            return this.check(cx).map(Err);
        }
        this.active(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if polled.is_pending() {
            return this.check(cx).map(Err);
        }
        this.active(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
