//! The program behind `scripts/chaos`: `leastconn proxy` under faults, with
//! its own backends and clients on 127.0.0.1, and a report of what every
//! request got and what the proxy held afterwards.
//!
//! `chaos --proxy BIN [--seconds S] [--clients C] [--idle N]` runs each
//! case for S seconds (default 6) and prints a Markdown table, a row a
//! case; `--soak` runs one case for S seconds (default 120) with every
//! fault injected in turn, every `--period` seconds, and prints one line.
//! Each case checks, after its load, that no backend's count is left in
//! `/stats` (a leaked count), that the proxy holds no more descriptors
//! than before the load (once its idle backend connections have timed
//! out), that it is still running, and that every answer had a documented
//! status; the exit status is 1 if any case failed.
//!
//! The faults: a backend killed (its listener closed, its connections
//! reset) and started again later; a backend that stops answering (the
//! proxy's 504 after `--response-timeout`); an operator's changes through
//! the admin API (a backend removed while it has requests in flight, added
//! back, reweighted, marked down and up); and, for the idle case, N
//! kept-alive client connections held open while the load runs.

use clap::Parser;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(about = "leastconn proxy under faults: see scripts/chaos")]
struct Args {
    /// the leastconn binary
    #[arg(long)]
    proxy: PathBuf,
    /// one long run with every fault in turn, printed as one line
    #[arg(long)]
    soak: bool,
    /// how long each case (or the soak) runs [default: 6, or 120 with --soak]
    #[arg(long)]
    seconds: Option<u64>,
    /// seconds between one fault and the next in the soak
    #[arg(long, default_value_t = 10)]
    period: u64,
    /// concurrent clients, each on a kept-alive connection
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// idle kept-alive connections held by the idle case
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
}

/// How long the proxy keeps an idle backend connection, here: short, so
/// that a case can see every descriptor come back.
const BACKEND_IDLE: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_secs(15);

// ---- Backends ----

/// A backend in this process that can be killed, started again, or made
/// to stop answering.
struct Backend {
    name: String,
    address: SocketAddr,
    hanging: watch::Sender<bool>,
    /// Its accept loop and connections, aborted together when killed.
    tasks: Mutex<Option<JoinSet<()>>>,
    served: Arc<AtomicU64>,
}

impl Backend {
    async fn start(name: &str) -> Arc<Backend> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let backend = Arc::new(Backend {
            name: name.to_owned(),
            address: listener.local_addr().expect("local address"),
            hanging: watch::channel(false).0,
            tasks: Mutex::new(None),
            served: Arc::default(),
        });
        backend.serve(listener);
        backend
    }

    fn serve(&self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let (hanging, served) = (self.hanging.clone(), Arc::clone(&self.served));
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let held = Arc::clone(&connections);
        tasks.spawn(async move {
            // Keeps the connections' tasks: aborted when this task is.
            let _connections = held;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Killed, a connection is reset rather than closed.
                let _ = stream.set_zero_linger();
                let (hanging, served) = (hanging.clone(), Arc::clone(&served));
                let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                    let (mut hanging, served) = (hanging.subscribe(), Arc::clone(&served));
                    async move {
                        let _ = hanging.wait_for(|&h| !h).await;
                        served.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let mut set = _connections.lock().expect("not poisoned");
                set.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Finished connections leave the set as it is used.
                while set.try_join_next().is_some() {}
            }
        });
        *self.tasks.lock().expect("not poisoned") = Some(tasks);
    }

    /// Closes its listener and resets every connection.
    fn kill(&self) {
        if let Some(mut tasks) = self.tasks.lock().expect("not poisoned").take() {
            tasks.abort_all();
        }
    }

    /// Listens again on the same address.
    async fn restart(&self) {
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(self.address).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "chaos: {} could not listen on {} again",
            self.name, self.address
        );
    }

    fn hang(&self, on: bool) {
        self.hanging.send_replace(on);
    }
}

// ---- The proxy ----

struct Proxy {
    child: Child,
    address: SocketAddr,
    admin: SocketAddr,
}

impl Proxy {
    fn start(bin: &PathBuf, backends: &[Arc<Backend>]) -> Proxy {
        let mut args: Vec<String> = [
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--response-timeout",
            "1s",
            "--connect-timeout",
            "1s",
            "--max-fails",
            "1",
            "--fail-timeout",
            "1s",
            "--health-check",
            "--health-interval",
            "500ms",
            "--slow-start",
            "2s",
            "--log",
            "error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--backend-idle-timeout".into());
        args.push(format!("{}ms", BACKEND_IDLE.as_millis()));
        for b in backends {
            args.push("--backend".into());
            args.push(format!("{}={}", b.name, b.address));
        }
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the proxy starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let (mut address, mut admin) = (None, None);
        while address.is_none() || admin.is_none() {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("the proxy did not say where it listens"),
            };
            let at = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|a| a.trim().parse().ok())
            };
            address = address.or_else(|| at("listening on "));
            admin = admin.or_else(|| at("admin on "));
        }
        // Its later lines are read and dropped, so that it never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        Proxy {
            child,
            address: address.expect("listening"),
            admin: admin.expect("admin"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    fn peak_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    async fn admin_get(&self, path: &str) -> Option<String> {
        let answer = send(
            self.admin,
            Request::get(path).body(Full::new(Bytes::new())).ok()?,
        )
        .await;
        answer.ok().map(|(_, body)| body)
    }

    async fn message(&self, body: &str) -> Option<String> {
        let envelope = format!(r#"{{"src":"chaos","dest":"lb","body":{body}}}"#);
        let request = Request::post("/messages")
            .body(Full::new(Bytes::from(envelope)))
            .ok()?;
        send(self.admin, request).await.ok().map(|(_, body)| body)
    }

    /// The sum of every backend's `active` in `/stats`.
    async fn active(&self) -> Option<u64> {
        let stats: serde_json::Value =
            serde_json::from_str(&self.admin_get("/stats").await?).ok()?;
        let backends = stats["backends"].as_array()?;
        Some(backends.iter().filter_map(|b| b["active"].as_u64()).sum())
    }

    async fn retries(&self) -> u64 {
        let metrics = self.admin_get("/metrics").await.unwrap_or_default();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("leastconn_retries_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request on a connection of its own, read to its end.
async fn send(
    address: SocketAddr,
    mut request: Request<Full<Bytes>>,
) -> Result<(u16, String), String> {
    request.headers_mut().insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_static("chaos.test"),
    );
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

// ---- Load ----

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Answers by status; 0 for an exchange cut without an answer.
    statuses: BTreeMap<u16, u64>,
    /// Latencies in microseconds, of requests started with no fault on,
    /// and with one on.
    calm: Vec<u32>,
    faulted: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.calm.extend(other.calm);
        self.faulted.extend(other.faulted);
    }

    fn sent(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn statuses(&self) -> String {
        let parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| match status {
                0 => format!("cut {n}"),
                s => format!("{s}: {n}"),
            })
            .collect();
        parts.join(", ")
    }

    /// Statuses a client may get from the proxy under these faults: 200,
    /// 502 (a failure it could not retry), 503 (no backend), 504 (no
    /// answer in time).
    fn undocumented(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| ![200, 502, 503, 504].contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

fn p99_ms(latencies: &mut [u32]) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let at = (latencies.len() as f64 * 0.99).ceil() as usize;
    Some(f64::from(latencies[at.clamp(1, latencies.len()) - 1]) / 1000.0)
}

/// `clients` clients, each on a kept-alive connection (a new one after an
/// error), sending `GET /` until `until`.
async fn load(
    address: SocketAddr,
    clients: usize,
    until: Instant,
    fault: Arc<AtomicBool>,
) -> Tally {
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let fault = Arc::clone(&fault);
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut sender = None;
            while Instant::now() < until {
                if sender.is_none() {
                    let Ok(stream) = TcpStream::connect(address).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let Ok((s, connection)) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                    else {
                        continue;
                    };
                    tokio::spawn(connection);
                    sender = Some(s);
                }
                let Some(s) = sender.as_mut() else { continue };
                let faulted = fault.load(Ordering::Relaxed);
                let start = Instant::now();
                let request = Request::get("/")
                    .header("host", "chaos.test")
                    .body(Empty::<Bytes>::new());
                let Ok(request) = request else { break };
                let outcome = match s.send_request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.into_body().collect().await {
                            Ok(_) => Some(status),
                            Err(_) => None,
                        }
                    }
                    Err(_) => None,
                };
                let micros = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
                match outcome {
                    Some(status) => {
                        *tally.statuses.entry(status).or_default() += 1;
                        if faulted {
                            tally.faulted.push(micros);
                        } else {
                            tally.calm.push(micros);
                        }
                        if !s.is_ready() {
                            sender = None;
                        }
                    }
                    None => {
                        *tally.statuses.entry(0).or_default() += 1;
                        sender = None;
                    }
                }
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        if let Ok(t) = done {
            tally.merge(t);
        }
    }
    tally
}

/// Holds `n` kept-alive connections to the proxy, each after one request
/// answered, until dropped; how many could be opened.
async fn idle_connections(address: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut stream) = TcpStream::connect(address).await else {
            break;
        };
        let request = b"GET / HTTP/1.1\r\nHost: chaos\r\n\r\n";
        if stream.write_all(request).await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => held.push(stream),
            _ => break,
        }
    }
    let opened = held.len();
    (held, opened)
}

// ---- Cases ----

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Killed,
    Hangs,
    Admin,
    Idle,
    Soak,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Killed => "a backend killed, started again",
            Case::Hangs => "a backend that stops answering",
            Case::Admin => "an operator's changes under load",
            Case::Idle => "idle kept-alive connections",
            Case::Soak => "soak",
        }
    }
}

struct Outcome {
    tally: Tally,
    retries: u64,
    leaked: Option<u64>,
    fds_start: usize,
    fds_peak: usize,
    fds_end: usize,
    peak_mib: f64,
    alive: bool,
    idle_opened: Option<usize>,
}

/// An outcome's figures, as both reports write them.
struct Shown {
    statuses: String,
    leaked: String,
    p99_calm: String,
    p99_faulted: String,
    result: &'static str,
}

impl Outcome {
    fn shown(&mut self) -> Shown {
        Shown {
            statuses: self.tally.statuses(),
            leaked: self.leaked.map_or("unknown".into(), |n| n.to_string()),
            p99_calm: ms(p99_ms(&mut self.tally.calm)),
            p99_faulted: ms(p99_ms(&mut self.tally.faulted)),
            result: if self.passed() { "passed" } else { "FAILED" },
        }
    }

    fn passed(&self) -> bool {
        self.alive
            && self.leaked == Some(0)
            && self.fds_end <= self.fds_start
            && self.tally.undocumented() == 0
            && self.tally.statuses.get(&200).copied().unwrap_or(0) > 0
    }
}

async fn run(args: &Args, case: Case, seconds: u64) -> Outcome {
    let backends = vec![
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let mut proxy = Proxy::start(&args.proxy, &backends);
    // A first request each way, then the descriptors as they stand.
    for _ in 0..3 {
        let _ = send(
            proxy.address,
            Request::get("/")
                .body(Full::new(Bytes::new()))
                .expect("a request"),
        )
        .await;
    }
    tokio::time::sleep(BACKEND_IDLE * 2).await;
    let fds_start = proxy.fds();
    let fds_peak = Arc::new(AtomicU64::new(fds_start as u64));
    let pid = proxy.pid();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&fds_peak), Arc::clone(&sampling));
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
                peak.fetch_max(open as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let length = Duration::from_secs(seconds);
    let until = Instant::now() + length;
    let fault = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(load(proxy.address, args.clients, until, Arc::clone(&fault)));
    let mut idle_opened = None;
    let mut held = Vec::new();
    let third = length / 3;
    match case {
        Case::Killed => {
            tokio::time::sleep(third).await;
            fault.store(true, Ordering::Relaxed);
            backends[1].kill();
            tokio::time::sleep(third).await;
            backends[1].restart().await;
            fault.store(false, Ordering::Relaxed);
        }
        Case::Hangs => {
            tokio::time::sleep(third).await;
            fault.store(true, Ordering::Relaxed);
            backends[2].hang(true);
            tokio::time::sleep(third).await;
            backends[2].hang(false);
            fault.store(false, Ordering::Relaxed);
        }
        Case::Admin => {
            tokio::time::sleep(third / 2).await;
            fault.store(true, Ordering::Relaxed);
            admin_changes(&proxy, &backends[1], third).await;
            fault.store(false, Ordering::Relaxed);
        }
        Case::Idle => {
            let (streams, opened) = idle_connections(proxy.address, args.idle).await;
            held = streams;
            idle_opened = Some(opened);
        }
        Case::Soak => {
            let period = Duration::from_secs(args.period.max(2));
            let mut turn = 0u32;
            while Instant::now() + period < until {
                tokio::time::sleep(period / 2).await;
                fault.store(true, Ordering::Relaxed);
                match turn % 3 {
                    0 => {
                        backends[1].kill();
                        tokio::time::sleep(period / 2).await;
                        backends[1].restart().await;
                    }
                    1 => {
                        backends[2].hang(true);
                        tokio::time::sleep(period / 2).await;
                        backends[2].hang(false);
                    }
                    _ => admin_changes(&proxy, &backends[0], period / 2).await,
                }
                fault.store(false, Ordering::Relaxed);
                turn += 1;
            }
        }
    }
    let tally = clients.await.unwrap_or_default();
    drop(held);
    let retries = proxy.retries().await;
    // Settled: no count in flight, and the descriptors back.
    let deadline = Instant::now() + SETTLE;
    let mut leaked = proxy.active().await;
    let mut fds_end = proxy.fds();
    while (leaked != Some(0) || fds_end > fds_start) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        leaked = proxy.active().await;
        fds_end = proxy.fds();
    }
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let peak_mib = proxy.peak_mib();
    let alive = proxy.alive();
    proxy.stop();
    for b in &backends {
        b.kill();
    }
    Outcome {
        tally,
        retries,
        leaked,
        fds_start,
        fds_peak: fds_peak.load(Ordering::Relaxed) as usize,
        fds_end,
        peak_mib,
        alive,
        idle_opened,
    }
}

/// Removes `victim` (drained while its requests finish), adds it back at
/// a new weight, marks it down and up again, over about `length`.
async fn admin_changes(proxy: &Proxy, victim: &Backend, length: Duration) {
    let name = &victim.name;
    let step = length / 4;
    let _ = proxy
        .message(&format!(
            r#"{{"type":"remove_backend","msg_id":1,"backend":"{name}"}}"#
        ))
        .await;
    tokio::time::sleep(step).await;
    let _ = proxy
        .message(&format!(
            r#"{{"type":"add_backend","msg_id":2,"backend":"{name}","address":"{}","weight":2}}"#,
            victim.address
        ))
        .await;
    tokio::time::sleep(step).await;
    let _ = proxy
        .message(&format!(
            r#"{{"type":"set_backend","msg_id":3,"backend":"{name}","healthy":false}}"#
        ))
        .await;
    tokio::time::sleep(step).await;
    let _ = proxy
        .message(&format!(
            r#"{{"type":"set_backend","msg_id":4,"backend":"{name}","healthy":true,"weight":1}}"#
        ))
        .await;
    tokio::time::sleep(step).await;
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1} ms"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut failed = false;
    if args.soak {
        let seconds = args.seconds.unwrap_or(120);
        let mut o = run(&args, Case::Soak, seconds).await;
        let sent = o.tally.sent();
        let shown = o.shown();
        println!(
            "chaos soak: {seconds} s, {} clients: sent {sent} ({:.0}/s); {}; retries {}; leaked {}; \
             peak {:.1} MiB, peak fds {} (before {}, after {}); p99 {} without faults, {} with; {}",
            args.clients,
            sent as f64 / seconds as f64,
            shown.statuses,
            o.retries,
            shown.leaked,
            o.peak_mib,
            o.fds_peak,
            o.fds_start,
            o.fds_end,
            shown.p99_calm,
            shown.p99_faulted,
            shown.result
        );
        failed |= !o.passed();
    } else {
        let seconds = args.seconds.unwrap_or(6);
        println!("| case | sent | answers | retries | leaked | fds before / peak / after | peak MiB | p99 calm / faulted | result |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for case in [Case::Killed, Case::Hangs, Case::Admin, Case::Idle] {
            let mut o = run(&args, case, seconds).await;
            let name = match o.idle_opened {
                Some(n) => format!("{} ({n} held)", case.name()),
                None => case.name().to_owned(),
            };
            let shown = o.shown();
            println!(
                "| {name} | {} | {} | {} | {} | {} / {} / {} | {:.1} | {} / {} | {} |",
                o.tally.sent(),
                shown.statuses,
                o.retries,
                shown.leaked,
                o.fds_start,
                o.fds_peak,
                o.fds_end,
                o.peak_mib,
                shown.p99_calm,
                shown.p99_faulted,
                shown.result
            );
            failed |= !o.passed();
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
