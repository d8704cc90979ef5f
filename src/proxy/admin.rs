//! The admin listener: `POST /messages`, the node's own messages to change
//! the pool at run time (see `runtime`), and `GET /stats`, the pool as
//! JSON, with the fields of the node's `stats_ok` and each backend's
//! address, why it is out of the pool (`down`) and, when it is checked,
//! its checks (`check`):
//!
//! ```json
//! {"algorithm":"least-connections","tie_break":"round-robin","rejected":0,
//!  "backends":[{"name":"api-1","address":"127.0.0.1:9001",
//!               "down":["health check: 3 consecutive failures, last: GET /health answered 500"],
//!               "check":{"passes":0,"failures":4,"last":"GET /health answered 500"},
//!               "active":2,"weight":1,"healthy":false,
//!               "max_connections":null,"requests":120,"completed":118,"failed":1,"mean_duration_ms":3.2}]}
//! ```
//!
//! `failed` counts failures (connection errors, timeouts, 5xx when they
//! count); `healthy` is false while a backend is out, and `down` then says
//! why, one text per reason (failed checks, passive failures, an operator),
//! each as it was when the reason came; it is empty while the backend is
//! in. `check` (only for a checked backend) holds the checks passed and
//! failed in a row, one of them 0, and what the last check got (`null`
//! before the first).

use super::body::Reply;
use super::{runtime, State};
use crate::message::stats::write_stats;
use crate::protocol::write::{key, WriteJson};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves the admin listener until the proxy stops.
pub async fn serve(listener: TcpListener, state: Arc<State>, mut stopping: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(Arc::clone(&state), request));
                    let _ = http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = super::stopped(&mut stopping) => return,
        }
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Reply>, Infallible> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/stats") => (StatusCode::OK, stats(&state)),
        (_, "/stats") => (
            StatusCode::METHOD_NOT_ALLOWED,
            b"{\"error\":\"GET /stats\"}".to_vec(),
        ),
        (&Method::GET, "/metrics") => return Ok(super::metrics::response(&state)),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            b"{\"error\":\"GET /metrics\"}".to_vec(),
        ),
        (&Method::GET, "/") => return Ok(super::dashboard::response()),
        (_, "/") => (
            StatusCode::METHOD_NOT_ALLOWED,
            b"{\"error\":\"GET /\"}".to_vec(),
        ),
        (&Method::POST, runtime::PATH) => runtime::post(&state, request.into_body()).await,
        (_, runtime::PATH) => (
            StatusCode::METHOD_NOT_ALLOWED,
            b"{\"error\":\"POST /messages\"}".to_vec(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            b"{\"error\":\"not found: GET /, GET /stats, GET /metrics, POST /messages\"}".to_vec(),
        ),
    };
    Ok(Reply::response(status, "application/json", body))
}

/// The stats document.
fn stats(state: &State) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    state.pool.read(|pool| {
        out.raw(b"{");
        write_stats(pool, &mut out, |backend, out| {
            out.raw(key!("address"));
            out.str(&backend.payload().address.to_string());
            backend.payload().control.write_stats(out);
        });
        out.raw(b"}\n");
    });
    out
}
