//! Helpers for testing `leastconn proxy`: HTTP backends with a chosen
//! behaviour, served inside the test process on 127.0.0.1; the real binary
//! started in front of them; minimal clients (hyper's, and raw TCP where
//! the exact bytes matter); and its `/stats`.
//!
//! Every wait is bounded by [`WAIT`]; the proxy is a [`Running`], killed
//! when dropped; a backend stops accepting when dropped, and its
//! connections end with the test's runtime.

use super::{lines, Running, BIN};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1 as client;
use hyper::header::HeaderMap;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest any one wait may take before the test fails: far above
/// what each takes, so that a slow machine is not a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future` for at most [`WAIT`], failing the test after that.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// Holds requests until opened; once open, lets every request through.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn pass(&self) {
        let mut open = self.0.subscribe();
        let _ = open.wait_for(|&open| open).await;
    }
}

/// What a backend's health path answers, switched by the test: a status,
/// or [`Health::HANG`] for never; answers queued with
/// [`Health::then_back`] come first.
#[derive(Clone)]
pub struct Health(Arc<Mutex<(u16, std::collections::VecDeque<u16>)>>);

impl Health {
    /// Never answers.
    pub const HANG: u16 = 0;

    pub fn new(status: u16) -> Health {
        Health(Arc::new(Mutex::new((status, Default::default()))))
    }

    /// Answers `status` from now on.
    pub fn set(&self, status: u16) {
        let mut health = self.0.lock().unwrap();
        health.0 = status;
        health.1.clear();
    }

    /// Answers `status` to the next `n` checks, then as before.
    pub fn then_back(&self, n: usize, status: u16) {
        self.0
            .lock()
            .unwrap()
            .1
            .extend(std::iter::repeat_n(status, n));
    }

    fn next(&self) -> u16 {
        let mut health = self.0.lock().unwrap();
        let now = health.0;
        health.1.pop_front().unwrap_or(now)
    }
}

/// What a test backend does with each request.
#[derive(Clone)]
pub enum Behaviour {
    /// Requests for `path` answered as `health` says, with an empty body;
    /// every other request as `otherwise`.
    Checked {
        path: &'static str,
        health: Health,
        otherwise: Box<Behaviour>,
    },
    /// 200 at once; the body is the backend's name.
    Fast,
    /// 200 with its name after this delay.
    Slow(Duration),
    /// 200 with its name once the gate opens.
    Gated(Gate),
    /// Never answers.
    Hang,
    /// 500 at once; the body is the backend's name.
    Error,
    /// 200 with a body of `len` bytes, made as it is sent, 64 KiB at a
    /// time, waiting `pause` before each piece if given.
    Stream { len: u64, pause: Option<Duration> },
    /// Reads the request body to its end; the answer is its length.
    Upload,
    /// 101 to an upgrade, then every byte echoed back.
    Echo,
}

/// When a [`Backend::closing`] closes a connection it answered on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Close {
    AfterAnswer,
    OnNextRequest,
    /// With a reset rather than an orderly close.
    ResetOnNextRequest,
}

/// A request as a backend received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
}

impl Received {
    /// The value of `name`, if present once and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Seen {
    received: Mutex<Vec<Received>>,
    answered: AtomicUsize,
    /// The connections open now, by number: a second descriptor of each
    /// socket, to reset it with, and the task serving it.
    open: Mutex<std::collections::HashMap<u64, (std::os::fd::OwnedFd, tokio::task::AbortHandle)>>,
    /// Numbers the connections.
    accepted: std::sync::atomic::AtomicU64,
}

/// An HTTP backend in the test process.
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    seen: Arc<Seen>,
    accepting: Option<JoinHandle<()>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = &self.accepting {
            task.abort();
        }
    }
}

impl Behaviour {
    /// `GET path` answered as `health` says, the rest as `otherwise`.
    pub fn checked(path: &'static str, health: &Health, otherwise: Behaviour) -> Behaviour {
        Behaviour::Checked {
            path,
            health: health.clone(),
            otherwise: Box::new(otherwise),
        }
    }
}

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

impl Backend {
    /// Serves on a port of its own on 127.0.0.1, doing `behaviour`.
    pub async fn start(name: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let seen = Arc::new(Seen::default());
        let accepting = accept(name, listener, behaviour, Arc::clone(&seen));
        Backend {
            name: name.to_owned(),
            address,
            seen,
            accepting: Some(accepting),
        }
    }

    /// Stops accepting connections (those open stay served): new ones are
    /// refused.
    pub async fn stop_listening(&mut self) {
        if let Some(task) = self.accepting.take() {
            task.abort();
            // Once it has ended, the listener is closed.
            let _ = task.await;
        }
    }

    /// Dies as a crashed server does: stops listening (new connections are
    /// refused) and resets every connection open, whatever it was doing
    /// (waiting for a request, holding one, halfway through a body).
    pub async fn kill(&mut self) {
        self.stop_listening().await;
        let open: Vec<_> = self.seen.open.lock().unwrap().drain().collect();
        for (_, (fd, task)) in open {
            // A linger of 0 makes the last close of the socket a reset.
            let socket = std::net::TcpStream::from(fd);
            if let Ok(socket) = TcpStream::from_std(socket) {
                let _ = socket.set_zero_linger();
            }
            task.abort();
        }
    }

    /// Accepts connections again, at the same address, doing `behaviour`.
    pub async fn listen_again(&mut self, behaviour: Behaviour) {
        self.stop_listening().await;
        let listener = TcpListener::bind(self.address).await.expect("bind again");
        let seen = Arc::clone(&self.seen);
        self.accepting = Some(accept(&self.name, listener, behaviour, seen));
    }

    /// A backend whose connections are refused: a port bound, then freed,
    /// so that nothing listens there.
    pub async fn refusing(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        drop(listener);
        Backend {
            name: name.to_owned(),
            address,
            seen: Arc::default(),
            accepting: None,
        }
    }

    /// A backend that answers one request per connection with its name and
    /// then closes the connection without saying so (no `Connection:
    /// close`), as a server with a very short keep-alive timeout does:
    /// `when` says at once, or only when the next request comes (as when
    /// that timeout ends just as a request arrives). For requests without
    /// a body.
    pub async fn closing(name: &str, when: Close) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let seen = Arc::new(Seen::default());
        let (name_, seen_) = (name.to_owned(), Arc::clone(&seen));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (name, seen) = (name_.clone(), Arc::clone(&seen_));
                tokio::spawn(async move {
                    let Some(head) = request_head(&mut stream).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let mut words = text.split(' ');
                    seen.received.lock().unwrap().push(Received {
                        method: words.next().unwrap_or_default().to_owned(),
                        uri: words.next().unwrap_or_default().to_owned(),
                        headers: HeaderMap::new(),
                    });
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                        name.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    seen.answered.fetch_add(1, Ordering::SeqCst);
                    if when != Close::AfterAnswer {
                        let _ = stream.read(&mut buf).await;
                    }
                    if when == Close::ResetOnNextRequest {
                        let _ = stream.set_zero_linger();
                    }
                    // Dropped: closed with nothing said.
                });
            }
        });
        Backend {
            name: name.to_owned(),
            address,
            seen,
            accepting: Some(accepting),
        }
    }

    /// `NAME=HOST:PORT`, for `--backend`.
    pub fn spec(&self) -> String {
        format!("{}={}", self.name, self.address)
    }

    /// `NAME=HOST:PORT,OPTIONS`.
    pub fn spec_with(&self, options: &str) -> String {
        format!("{},{options}", self.spec())
    }

    /// Every request received so far, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.seen.received.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn arrived(&self) -> usize {
        self.seen.received.lock().unwrap().len()
    }

    /// How many requests for `path` arrived.
    pub fn arrivals(&self, path: &str) -> usize {
        let received = self.seen.received.lock().unwrap();
        received.iter().filter(|r| r.uri == path).count()
    }

    /// How many requests were answered (the response head given to hyper).
    pub fn answered(&self) -> usize {
        self.seen.answered.load(Ordering::SeqCst)
    }
}

/// Reads a request head, and perhaps bytes after it, as a raw backend
/// does; `None` when the connection ends first.
pub async fn request_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// Serves every connection `listener` accepts, doing `behaviour`.
fn accept(
    name: &str,
    listener: TcpListener,
    behaviour: Behaviour,
    seen: Arc<Seen>,
) -> JoinHandle<()> {
    let name: Arc<str> = name.into();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (name, seen, behaviour) = (Arc::clone(&name), Arc::clone(&seen), behaviour.clone());
            let number = seen.accepted.fetch_add(1, Ordering::SeqCst);
            let second = stream.as_fd().try_clone_to_owned();
            let open = Arc::clone(&seen);
            let service = service_fn(move |request| {
                answer(
                    Arc::clone(&name),
                    behaviour.clone(),
                    Arc::clone(&seen),
                    request,
                )
            });
            // Holds the lock until registered, so that the task cannot end
            // (and unregister) first.
            let mut registry = open.open.lock().unwrap();
            let unregister = Arc::clone(&open);
            let task = tokio::spawn(async move {
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                unregister.open.lock().unwrap().remove(&number);
            });
            if let Ok(second) = second {
                registry.insert(number, (second, task.abort_handle()));
            }
        }
    })
}

async fn answer(
    name: Arc<str>,
    behaviour: Behaviour,
    seen: Arc<Seen>,
    mut request: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    seen.received.lock().unwrap().push(Received {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        headers: request.headers().clone(),
    });
    // Checked paths first: answered here; the rest passed on.
    let mut behaviour = behaviour;
    while let Behaviour::Checked {
        path,
        health,
        otherwise,
    } = behaviour
    {
        if request.uri().path() == path {
            let status = health.next();
            if status == Health::HANG {
                std::future::pending::<()>().await;
            }
            let mut response = Response::new(full(Vec::new()));
            *response.status_mut() = StatusCode::from_u16(status).expect("a status");
            seen.answered.fetch_add(1, Ordering::SeqCst);
            return Ok(response);
        }
        behaviour = *otherwise;
    }
    let named = || full(name.as_bytes().to_vec());
    let response = match behaviour {
        Behaviour::Checked { .. } => unreachable!("answered or passed on above"),
        Behaviour::Fast => Response::new(named()),
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Response::new(named())
        }
        Behaviour::Gated(gate) => {
            gate.pass().await;
            Response::new(named())
        }
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Error => {
            let mut response = Response::new(named());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
        Behaviour::Stream { len, pause } => {
            Response::new(Generated::new(len, pause).boxed_unsync())
        }
        Behaviour::Upload => {
            let mut length: u64 = 0;
            while let Some(frame) = request.body_mut().frame().await {
                match frame {
                    Ok(frame) => length += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::new(full(length.to_string().into_bytes()))
        }
        Behaviour::Echo => {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let (mut from, mut to) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = to.shutdown().await;
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .body(Empty::new().boxed_unsync())
                .expect("a 101")
        }
    };
    seen.answered.fetch_add(1, Ordering::SeqCst);
    Ok(response)
}

fn full(bytes: Vec<u8>) -> TestBody {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

/// A body of `len` bytes made as it is read, so that a gigabyte is never
/// held in memory; its exact length is known, so it is sent with
/// `Content-Length`.
pub struct Generated {
    left: u64,
    piece: Bytes,
    pause: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Generated {
    pub fn new(len: u64, pause: Option<Duration>) -> Generated {
        Generated {
            left: len,
            piece: Bytes::from(vec![b'x'; 64 * 1024]),
            pause,
            sleep: None,
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        if let Some(pause) = this.pause {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        let n = this.left.min(this.piece.len() as u64);
        this.left -= n;
        Poll::Ready(Some(Ok(Frame::data(this.piece.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A full pool: one backend, `only`, with a limit of 1 and answering once
/// the gate opens, behind a proxy started with `flags`, and a first
/// request held on it; returns once it is held.
pub async fn full_pool(flags: &[&str]) -> (Gate, Backend, Proxy, JoinHandle<Answer>) {
    let gate = Gate::new();
    let only = Backend::start("only", Behaviour::Gated(gate.clone())).await;
    let proxy = Proxy::start(&[only.spec_with("max=1")], flags);
    let first = tokio::spawn(get(proxy.address, "/"));
    proxy
        .stats_when("the first request held", |s| s.active("only") == 1)
        .await;
    (gate, only, proxy, first)
}

/// The proxy under test, killed when dropped.
pub struct Proxy {
    pub running: Running,
    /// Where clients connect.
    pub address: SocketAddr,
    /// Where `/stats` answers.
    pub admin: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Proxy {
    /// `leastconn proxy` on `backends` (`--backend` specs), with `extra`
    /// flags, listening and answering `/stats` on ports of its own.
    pub fn start(backends: &[String], extra: &[&str]) -> Proxy {
        Proxy::start_with(&Proxy::args(backends, extra))
    }

    /// As [`Proxy::start`], with at most `nofile` open file descriptors
    /// (`prlimit --nofile`, soft and hard), to run it out of them.
    pub fn start_limited(nofile: u64, backends: &[String], extra: &[&str]) -> Proxy {
        let mut command = Command::new("prlimit");
        command.args([
            format!("--nofile={nofile}:{nofile}"),
            "--".into(),
            BIN.into(),
        ]);
        command.args(Proxy::args(backends, extra));
        Proxy::start_command(command)
    }

    fn args(backends: &[String], extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["proxy", "--listen", "127.0.0.1:0"]
            .iter()
            .chain(&["--admin", "127.0.0.1:0"])
            .map(|s| s.to_string())
            .collect();
        for spec in backends {
            args.push("--backend".into());
            args.push(spec.clone());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// The binary with exactly `args`, which must give `--admin` (or a
    /// file that does); waits for it to say where it listens.
    pub fn start_with(args: &[String]) -> Proxy {
        let mut command = Command::new(BIN);
        command.args(args);
        Proxy::start_command(command)
    }

    /// Runs `command`, which must run the binary in its own process (as
    /// `prlimit` does, replacing itself by it), and waits for it to say
    /// where it listens.
    pub fn start_command(mut command: Command) -> Proxy {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut running = Running { child };
        // Read on a thread to the end, so that the proxy never blocks on a
        // full pipe, and kept for the test to look at.
        let log = lines(running.child.stderr.take().expect("piped stderr"));
        let deadline = Instant::now() + WAIT;
        let (mut address, mut admin) = (None, None);
        let mut before = Vec::new();
        while address.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = log.recv_timeout(left).unwrap_or_else(|e| {
                panic!("the proxy did not say where it listens ({e:?}); it wrote {before:?}")
            });
            let port = |prefix: &str| -> Option<SocketAddr> {
                line.strip_prefix(prefix)
                    .map(|a| a.trim().parse().expect("HOST:PORT"))
            };
            if let Some(a) = port("listening on ") {
                address = Some(a);
            } else if let Some(a) = port("admin on ") {
                admin = Some(a);
            } else {
                before.push(line);
            }
        }
        Proxy {
            running,
            address: address.expect("listening"),
            admin: admin.expect("admin"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.running.child.id()
    }

    /// The stderr lines written since the last call.
    pub fn log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Stats {
        let answer = get(self.admin, "/stats").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        Stats(serde_json::from_slice(&answer.body).expect("/stats is JSON"))
    }

    /// Polls `/stats` until `done` holds, for at most [`WAIT`]; the stats
    /// that satisfied it.
    pub async fn stats_when(&self, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {WAIT:?}; last /stats: {}",
                stats.0
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Posts one of the node's messages with this body (from `ops`) to
    /// the admin API's `/messages`; its reply's body.
    pub async fn message(&self, body: &str) -> Value {
        let message = format!(r#"{{"src":"ops","dest":"lb","body":{body}}}"#);
        let answer = post_to(self.admin, "/messages", message).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let reply: Value = serde_json::from_slice(&answer.body).expect("a JSON reply");
        reply["body"].clone()
    }

    /// The proxy process's open file descriptors now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the proxy's /proc entry")
            .count()
    }

    /// Waits, for at most [`WAIT`], until no backend has a request in
    /// flight and the process holds no more descriptors than `fds` (as it
    /// did before the load: its idle backend connections closed by
    /// `--backend-idle-timeout`); the stats then. Fails the test if either
    /// never comes: a leaked count or descriptor.
    pub async fn settles(&self, fds: usize) -> Stats {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.stats().await;
            let open = self.open_fds();
            if stats.sum("active") == 0 && open <= fds {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "not settled within {WAIT:?}: {open} descriptors open (at the start: {fds}); last /stats: {}",
                stats.0
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits, without blocking the runtime, for the process to exit within
    /// `limit`; its exit code.
    pub async fn exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.running.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads the proxy's log until a line containing every one of `parts`
/// comes (within [`WAIT`]); that line. Lines read go to `seen`.
pub async fn logged(proxy: &Proxy, seen: &mut Vec<String>, parts: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    let mut at = 0;
    loop {
        seen.extend(proxy.log());
        if let Some(line) = seen[at..]
            .iter()
            .find(|line| parts.iter().all(|part| line.contains(part)))
        {
            return line.clone();
        }
        at = seen.len();
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?} within {WAIT:?}; the log: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `/stats` document.
pub struct Stats(pub Value);

impl Stats {
    /// The named backend's object.
    pub fn backend(&self, name: &str) -> &Value {
        self.0["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no backend {name} in {}", self.0))
    }

    /// A whole-number field of the named backend.
    pub fn get(&self, name: &str, field: &str) -> u64 {
        self.backend(name)[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}.{field} in {}", self.0))
    }

    pub fn active(&self, name: &str) -> u64 {
        self.get(name, "active")
    }

    pub fn requests(&self, name: &str) -> u64 {
        self.get(name, "requests")
    }

    pub fn healthy(&self, name: &str) -> bool {
        self.backend(name)["healthy"].as_bool().expect("healthy")
    }

    /// Why the named backend is out of the pool; empty when it is in.
    pub fn down(&self, name: &str) -> Vec<String> {
        let down = self.backend(name)["down"].as_array();
        let down = down.unwrap_or_else(|| panic!("{name}.down in {}", self.0));
        down.iter()
            .map(|reason| reason.as_str().expect("a text").to_owned())
            .collect()
    }

    /// A whole-number field of the named backend's checks.
    pub fn check(&self, name: &str, field: &str) -> u64 {
        self.backend(name)["check"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}.check.{field} in {}", self.0))
    }

    /// A whole-number field summed over every backend.
    pub fn sum(&self, field: &str) -> u64 {
        self.0["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| b[field].as_u64().expect("a number"))
            .sum()
    }

    pub fn rejected(&self) -> u64 {
        self.0["rejected"].as_u64().expect("rejected")
    }
}

/// A response, read to its end.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a text body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` on a new connection to `address`; the response, its
/// body unread.
pub async fn send<B>(address: SocketAddr, request: Request<B>) -> Response<Incoming>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = within("connect", TcpStream::connect(address))
        .await
        .expect("connected");
    let (mut sender, connection) = client::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    within("a response", sender.send_request(request))
        .await
        .expect("a response")
}

/// `POST path` with `body` to the admin listener at `admin`.
pub async fn post_to(admin: SocketAddr, path: &str, body: impl Into<Bytes>) -> Answer {
    let request = Request::post(path)
        .header("host", "admin.test")
        .body(Full::new(body.into()))
        .expect("a request");
    read(send(admin, request).await).await
}

/// Reads a response's body to its end.
pub async fn read(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = within("the body", body.collect())
        .await
        .expect("the body")
        .to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// `GET path` on a new connection.
pub async fn get(address: SocketAddr, path: &str) -> Answer {
    read(send(address, get_request(path)).await).await
}

fn get_request(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "test.example")
        .body(Empty::new())
        .expect("a request")
}

/// A keep-alive client connection, one request at a time.
pub struct Client {
    sender: client::SendRequest<Empty<Bytes>>,
}

impl Client {
    pub async fn connect(address: SocketAddr) -> Client {
        let stream = within("connect", TcpStream::connect(address))
            .await
            .expect("connected");
        let (sender, connection) = client::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    /// `GET path`, read to its end.
    pub async fn get(&mut self, path: &str) -> Answer {
        within("ready", self.sender.ready())
            .await
            .expect("the connection is open");
        let response = within("a response", self.sender.send_request(get_request(path)))
            .await
            .expect("a response");
        read(response).await
    }
}

/// A response read from raw TCP.
pub struct RawAnswer {
    pub status: u16,
    /// The head, status line and headers, as received.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.head, name)
    }
}

fn header_in<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Writes `request` as it is on a new connection and reads one response
/// (see [`read_response`]).
pub async fn raw(address: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut stream = within("connect", TcpStream::connect(address))
        .await
        .expect("connected");
    stream.write_all(request).await.expect("the request sent");
    read_response(&mut stream).await
}

/// Reads one response: its head, then a `Content-Length` body, or else up
/// to the end of the connection. On a keep-alive connection, for one
/// request at a time (it may read past the end of the response).
pub async fn read_response(stream: &mut TcpStream) -> RawAnswer {
    let (head, mut body) = read_head(stream).await;
    let status = status_of(&head);
    match header_in(&head, "content-length") {
        Some(length) => {
            let length: usize = length.parse().expect("a length");
            assert!(body.len() <= length, "more than one response read");
            let mut rest = vec![0; length.saturating_sub(body.len())];
            within("the body", stream.read_exact(&mut rest))
                .await
                .expect("the whole body");
            body.extend_from_slice(&rest);
        }
        None => {
            within("the end of the connection", stream.read_to_end(&mut body))
                .await
                .expect("read to the end");
        }
    }
    RawAnswer { status, head, body }
}

/// Reads a response head; the head, and the bytes read after it.
pub async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = bytes.split_off(end + 4);
            bytes.truncate(end);
            return (String::from_utf8(bytes).expect("a text head"), rest);
        }
        assert!(bytes.len() < 64 * 1024, "a response head over 64 KiB");
        let n = within("a response head", stream.read(&mut buf))
            .await
            .expect("read");
        assert!(
            n > 0,
            "the connection closed before a response head: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..n]);
    }
}

/// The status code of a response head.
pub fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}
