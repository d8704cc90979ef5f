//! Active health checks, as HAProxy's `check inter … rise … fall …`.
//!
//! Each checked backend has a task of its own that asks it for
//! `GET path` every interval (the first at once), on a new connection each
//! time: never one of the requests' idle connections, and never counted by
//! the engine. The request carries `Host: ADDRESS` (the backend's address)
//! and `Connection: close`; the connection and the response header must
//! come within the timeout, and the status must be one of the healthy ones.
//! How each check went goes to `control`, which counts passes and failures
//! in a row and takes the backend out or lets it back.
//!
//! A task stops when its backend leaves the pool (at once when it is
//! retired, at its next check otherwise), when a reload replaces it, and
//! when the proxy stops; a check in progress is dropped with its
//! connection.

use super::config::HealthCheck;
use super::upstream::Upstream;
use super::State;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Weak};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Starts checking `upstream` as `check` says, on a task of its own,
/// instead of any checks it had.
pub(crate) fn start(
    state: &Arc<State>,
    upstream: &Arc<Upstream>,
    check: HealthCheck,
) -> JoinHandle<()> {
    upstream.control.start_checks();
    let stopping = state.stopping.clone();
    // Weak: the checks never keep a stopping proxy waiting.
    let state = Arc::downgrade(state);
    let checked = Arc::clone(upstream);
    let settings = check.clone();
    let task = tokio::spawn(async move {
        let mut stopping = stopping;
        let upstream = checked;
        tokio::select! {
            biased;
            _ = super::stopped(&mut stopping) => {}
            _ = upstream.control.retired() => {}
            _ = checks(state, &upstream, &settings) => {}
        }
    });
    // Any checks before stop: one task per backend.
    upstream.replace_checks(Some((check, task.abort_handle())));
    task
}

/// Checks `upstream` every interval, until it is no longer in the pool.
async fn checks(state: Weak<State>, upstream: &Upstream, check: &HealthCheck) {
    let mut ticks = tokio::time::interval(check.interval);
    // A late check is not made up for with a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (passed, said) = probe(upstream, check).await;
        let Some(state) = state.upgrade() else { return };
        if state.checked(upstream, check, passed, said).is_none() {
            return;
        }
    }
}

/// One check: whether it passed, and what happened, as
/// `GET /health answered 200`.
async fn probe(upstream: &Upstream, check: &HealthCheck) -> (bool, String) {
    let asked = format!("GET {}", check.path);
    match tokio::time::timeout(check.timeout, status(upstream, &check.path)).await {
        Ok(Ok(status)) => (
            check.statuses.contains(status),
            format!("{asked} answered {status}"),
        ),
        Ok(Err(why)) => (false, format!("{asked}: {why}")),
        Err(_) => (
            false,
            format!("{asked}: no answer within {:?}", check.timeout),
        ),
    }
}

/// Asks `upstream` for `GET path` on a new connection; the status.
async fn status(upstream: &Upstream, path: &str) -> Result<u16, String> {
    let failed = |e: &dyn std::fmt::Display| format!("the connection failed: {e}");
    let stream = TcpStream::connect(upstream.address)
        .await
        .map_err(|e| failed(&e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    let request = Request::get(path)
        .header(HOST, upstream.address.to_string())
        .header(USER_AGENT, "leastconn-health-check")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot be asked: {e}"))?;
    let response = sender.send_request(request);
    tokio::pin!(response);
    // The connection is driven here, not on a task of its own, so that it
    // ends with the check, however the check ends.
    let answered = tokio::select! {
        biased;
        answered = &mut response => answered,
        ended = connection => match ended {
            Err(e) => return Err(failed(&e)),
            // The connection is gone: the response came, or never will.
            Ok(()) => response.await,
        },
    };
    answered
        .map(|response| response.status().as_u16())
        .map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::super::config::{Settings, StatusSet};
    use super::super::control::testing::state;
    use super::*;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the test server answers now: a status, or [`HANG`], or
    /// [`CLOSE`] (closes without answering).
    type Answer = Arc<AtomicU16>;
    const HANG: u16 = 0;
    const CLOSE: u16 = 1;

    /// A server on 127.0.0.1 that reads a request head and does what
    /// `answer` says; its address and the heads it read. It serves until
    /// the test's runtime ends.
    async fn server(answer: &Answer) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("an address").to_string();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (seen, answer) = (Arc::clone(&heads), Arc::clone(answer));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, answer) = (Arc::clone(&seen), Arc::clone(&answer));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    seen.lock().unwrap().push(head);
                    match answer.load(Ordering::SeqCst) {
                        HANG => std::future::pending().await,
                        CLOSE => {}
                        status => {
                            let response =
                                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.read(&mut buf).await;
                        }
                    }
                });
            }
        });
        (address, heads)
    }

    fn answer(status: u16) -> Answer {
        Arc::new(AtomicU16::new(status))
    }

    fn check(interval_ms: u64, timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            path: "/health".into(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            statuses: StatusSet::default(),
            rise: 2,
            fall: 3,
        }
    }

    #[tokio::test]
    async fn a_check_says_what_happened() {
        let now = answer(200);
        let (address, heads) = server(&now).await;
        let (_state, up, _stop) = state(&[("a", &address)], Settings::default());
        let a = &up[0];
        let check = check(1000, 30);
        assert_eq!(
            probe(a, &check).await,
            (true, "GET /health answered 200".to_owned())
        );
        let head = heads.lock().unwrap()[0].to_lowercase();
        assert!(head.starts_with("get /health http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: {address}\r\n")), "{head}");
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        for (status, passed, said) in [
            (399, true, "GET /health answered 399"),
            (500, false, "GET /health answered 500"),
            (HANG, false, "GET /health: no answer within 30ms"),
            (
                CLOSE,
                false,
                "GET /health: the connection failed: connection closed before message completed",
            ),
        ] {
            now.store(status, Ordering::SeqCst);
            assert_eq!(probe(a, &check).await, (passed, said.to_owned()));
        }
        // Each check on a connection of its own.
        assert_eq!(heads.lock().unwrap().len(), 5);

        let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = free.local_addr().expect("an address").to_string();
        drop(free);
        let (_state, up, _stop) = state(&[("a", &address)], Settings::default());
        assert_eq!(
            probe(&up[0], &check).await,
            (
                false,
                "GET /health: the connection failed: Connection refused (os error 111)".to_owned()
            )
        );
    }

    /// Waits, at most 10 s, for `task` to end.
    async fn ends(what: &str, task: JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap_or_else(|_| panic!("{what}: the checks did not stop"))
            .expect("no panic");
    }

    /// Waits, at most 10 s, for `done` to hold.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn checks_stop_when_the_backend_leaves_the_pool_or_the_proxy_stops() {
        let (address, heads) = server(&answer(200)).await;
        let count = || heads.lock().unwrap().len();
        let (state, up, stop) = state(&[("a", &address), ("b", &address)], Settings::default());
        // Retired: at once.
        let checks = start(&state, &up[0], check(20, 10));
        until("two checks", || count() >= 2).await;
        up[0].control.retire();
        ends("retired", checks).await;

        // Taken from the pool without a word: at its next check.
        let checks = start(&state, &up[1], check(20, 10));
        let before = count();
        until("two more checks", || count() >= before + 2).await;
        state.pool.remove("b").expect("removed");
        ends("removed", checks).await;
        let after = count();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(count(), after, "checked after its task ended");

        // The proxy stopping, with a check hanging.
        let (address, heads) = server(&answer(HANG)).await;
        let (state, up, stop_too) =
            super::super::control::testing::state(&[("c", &address)], Settings::default());
        drop(stop);
        let checks = start(&state, &up[0], check(2_000, 1_000));
        until("a check", || heads.lock().unwrap().len() == 1).await;
        stop_too.send_replace(true);
        ends("stopped", checks).await;
        // The checks held no strong reference to the state.
        assert_eq!(Arc::strong_count(&state), 1);
    }

    #[tokio::test]
    async fn failing_checks_take_a_backend_out_and_passing_ones_bring_it_back() {
        let now = answer(503);
        let (address, _) = server(&now).await;
        let (state, up, _stop) = state(&[("a", &address)], Settings::default());
        let healthy = || state.pool.read(|p| p.get("a").is_some_and(|b| b.healthy()));
        let _checks = start(&state, &up[0], check(10, 5));
        until("out", || !healthy()).await;
        assert_eq!(
            up[0].control.reasons(),
            ["health check: 3 consecutive failures, last: GET /health answered 503"]
        );
        now.store(204, Ordering::SeqCst);
        until("back", healthy).await;
        assert!(up[0].control.reasons().is_empty());
        let checks = up[0].control.checks().expect("checked");
        assert!(checks.passes >= 2, "{checks:?}");
        assert_eq!(checks.last.as_deref(), Some("GET /health answered 204"));
    }
}
