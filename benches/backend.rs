//! The HTTP backend behind `scripts/bench-proxy` (BENCHMARKS.md, "The
//! proxy").
//!
//! `backend --listen 127.0.0.1:PORT --mean-ms M --workers W [--seed S]`
//! answers every request with 200 and a small body after an exponentially
//! distributed service time of mean M milliseconds (0: at once). At most W
//! requests are in service at a time; the others wait their turn, first
//! come first served, as at a server with W worker threads. Connections are
//! kept alive.
//!
//! `GET /__stats` answers `{"requests":N,"peak_in_flight":P}`: the requests
//! served so far and the most that were ever in flight at once (waiting plus
//! in service). It is not counted itself. The script compares these between
//! proxies: which backend got how many requests, and how deep its queue got.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use leastconn::engine::rng::Rng;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

const USAGE: &str = "usage: backend --listen 127.0.0.1:PORT --mean-ms M --workers W [--seed S]";

struct Settings {
    listen: SocketAddr,
    mean_ms: f64,
    workers: usize,
    seed: u64,
}

struct State {
    mean_ms: f64,
    /// One permit per worker; tokio's semaphore hands permits out in the
    /// order they were asked for, which makes the wait FIFO.
    workers: Semaphore,
    rng: Mutex<Rng>,
    served: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl State {
    /// An exponentially distributed service time (inverse transform; the
    /// draw is never 0, so the logarithm is finite).
    fn service_time(&self) -> Duration {
        if self.mean_ms == 0.0 {
            return Duration::ZERO;
        }
        let u = self.rng.lock().expect("no panics hold the lock").next_f64();
        Duration::from_secs_f64(-self.mean_ms * u.ln() / 1000.0)
    }
}

/// Counts a request in flight from its arrival until its answer, or until
/// the client goes away and hyper drops the request's future.
struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: &Arc<State>) -> InFlight {
        let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn main() -> anyhow::Result<()> {
    let settings = match parse(std::env::args().skip(1)) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("backend: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // One thread answers: the benchmark pins several backends and the load
    // generator to one core, where more threads would only take turns.
    // Service times are slept on the blocking pool, whose threads sleep to
    // the tens of microseconds, where tokio's timer rounds up to the next
    // millisecond (a 2 ms mean came out at 3 ms); at most one thread
    // per worker sleeps at a time.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(settings.workers.clamp(1, 1000))
        .build()?;
    runtime.block_on(serve(settings))
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Settings> {
    let (mut listen, mut mean_ms, mut workers, mut seed) = (None, None, None, 1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--listen" => listen = Some(value()?.parse()?),
            "--mean-ms" => mean_ms = Some(value()?.parse::<f64>()?),
            "--workers" => workers = Some(value()?.parse::<usize>()?),
            "--seed" => seed = value()?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let (Some(listen), Some(mean_ms), Some(workers)) = (listen, mean_ms, workers) else {
        anyhow::bail!("--listen, --mean-ms and --workers are required");
    };
    anyhow::ensure!(
        mean_ms.is_finite() && mean_ms >= 0.0,
        "--mean-ms must be 0 or more"
    );
    anyhow::ensure!(
        (1..=Semaphore::MAX_PERMITS).contains(&workers),
        "--workers must be at least 1"
    );
    Ok(Settings {
        listen,
        mean_ms,
        workers,
        seed,
    })
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.listen).await?;
    eprintln!("backend listening on {}", listener.local_addr()?);
    let state = Arc::new(State {
        mean_ms: settings.mean_ms,
        workers: Semaphore::new(settings.workers),
        rng: Mutex::new(Rng::new(settings.seed)),
        served: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        peak_in_flight: AtomicU64::new(0),
    });
    // The script stops backends with SIGTERM; leaving through here makes
    // that an ordinary exit.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to close.
                    eprintln!("backend: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        };
        // Answers are single small writes; Nagle's algorithm would hold one
        // back until the previous one is acknowledged.
        stream.set_nodelay(true)?;
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(Arc::clone(&state), request));
            // A client that goes away mid-request is no error of ours.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/__stats" {
        let body = format!(
            "{{\"requests\":{},\"peak_in_flight\":{}}}\n",
            state.served.load(Ordering::Relaxed),
            state.peak_in_flight.load(Ordering::Relaxed)
        );
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    let _in_flight = InFlight::new(&state);
    {
        let _worker = state
            .workers
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let service = state.service_time();
        if !service.is_zero() {
            tokio::task::spawn_blocking(move || std::thread::sleep(service))
                .await
                .expect("sleeping does not panic");
        }
    }
    state.served.fetch_add(1, Ordering::Relaxed);
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}
