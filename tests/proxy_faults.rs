//! `leastconn proxy`, the real binary, against backends and clients that
//! misbehave: whatever they do, the proxy keeps running, answers every
//! request it read exactly once (or closes the connection of one it could
//! not read), and afterwards every backend's count is back to 0 and the
//! process holds no more descriptors than before the load.
//!
//! Cases `tests/proxy.rs` already has are not repeated here: a client gone
//! mid-response (`a_client_gone_mid_response_gives_its_count_back`), a
//! hanging backend's 504 and its text (here only its counts and
//! descriptors, with a backend that answers beside it), a gigabyte each
//! way.

mod common;

use common::peak_kib;
use common::proxy::{
    get, read_head, read_response, request_head, status_of, within, Backend, Behaviour, Client,
    Gate, Proxy, Stats, WAIT,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Short enough for `settles` to see the backend connections closed.
const BACKEND_IDLE: &str = "200ms";

/// How many of each status.
fn tally(statuses: impl IntoIterator<Item = u16>) -> BTreeMap<u16, usize> {
    let mut tally = BTreeMap::new();
    for status in statuses {
        *tally.entry(status).or_default() += 1;
    }
    tally
}

/// `(requests, completed, failed)` of a backend.
fn counts(stats: &Stats, name: &str) -> (u64, u64, u64) {
    (
        stats.requests(name),
        stats.get(name, "completed"),
        stats.get(name, "failed"),
    )
}

/// Waits until the proxy settles (no count in flight, no more than `fds`
/// descriptors open), then checks, for each backend named, its
/// `(requests, completed, failed)` and whether it is in the pool.
async fn settled(proxy: &Proxy, fds: usize, expected: &[(&str, (u64, u64, u64), bool)]) -> Stats {
    let stats = proxy.settles(fds).await;
    for &(name, counted, healthy) in expected {
        assert_eq!(counts(&stats, name), counted, "{name}: {}", stats.0);
        assert_eq!(stats.healthy(name), healthy, "{name}: {}", stats.0);
    }
    stats
}

/// Waits, for at most [`WAIT`], until `n` requests have reached `backend`:
/// a request is counted when its backend is picked, before it is sent.
async fn arrived(backend: &Backend, n: usize) {
    let deadline = Instant::now() + WAIT;
    while backend.arrived() < n {
        assert!(Instant::now() < deadline, "{} arrived", backend.arrived());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `took` is at least `at_least` and well within [`WAIT`].
fn took_at_least(took: Duration, at_least: Duration) {
    assert!(
        at_least <= took && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// The proxy has not exited, no task of it panicked (the runtime would
/// carry on, so only the log tells), and a normal request still gets a 200
/// from one of `names`.
async fn still_serves(proxy: &mut Proxy, names: &[&str]) {
    let exited = proxy.running.child.try_wait().expect("try_wait");
    assert!(exited.is_none(), "the proxy exited: {exited:?}");
    let log = proxy.log();
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:#?}");
    let answer = get(proxy.address, "/").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(names.contains(&answer.text()), "{}", answer.text());
}

/// A plain request, as raw bytes.
const GET: &str = "GET / HTTP/1.1\r\nHost: test.example\r\n\r\n";

/// Sends `requests` plain requests at once on a new connection and reads
/// the first response's head, which must be a 200; the connection, the
/// head, and the body bytes read with it.
async fn answered_200(address: SocketAddr, requests: usize) -> (TcpStream, String, Vec<u8>) {
    let mut stream = sent(address, GET.repeat(requests).as_bytes()).await;
    let (head, first) = read_head(&mut stream).await;
    assert_eq!(status_of(&head), 200, "{head}");
    (stream, head, first)
}

/// A raw connection to the proxy, `bytes` written on it.
async fn sent(address: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = within("connect", TcpStream::connect(address))
        .await
        .expect("connected");
    stream.write_all(bytes).await.expect("sent");
    stream
}

/// Reads until the proxy closes the connection (an orderly close or a
/// reset); everything read.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match within("the connection closed", stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return bytes,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// A backend that reads one request head per connection, writes `answer`
/// as it is, then closes the connection or, with `stall`, holds it open
/// saying nothing more. `NAME=HOST:PORT` for `--backend`; it serves until
/// the test's runtime ends.
async fn scripted(name: &str, answer: Vec<u8>, stall: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let answer: std::sync::Arc<[u8]> = answer.into();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = std::sync::Arc::clone(&answer);
            tokio::spawn(async move {
                if request_head(&mut stream).await.is_none() {
                    return;
                }
                let mut buf = [0u8; 4096];
                // The proxy may give up on a long answer: nothing to do.
                let _ = stream.write_all(&answer).await;
                if stall {
                    // Until the proxy closes its side.
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
            });
        }
    });
    format!("{name}={address}")
}

/// Flags for a proxy whose first backend takes every request while it is
/// in (`lowest-index`), and is out at its first failure.
fn first_until_it_fails<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--tie-break",
        "lowest-index",
        "--max-fails",
        "1",
        "--backend-idle-timeout",
        BACKEND_IDLE,
    ];
    flags.extend_from_slice(more);
    flags
}

// 1. Backends that fail.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_what_it_held_and_gets_traffic_again_once_restarted() {
    let (held_a, held_b) = (Gate::new(), Gate::new());
    let mut a = Backend::start("a", Behaviour::Gated(held_a)).await;
    let b = Backend::start("b", Behaviour::Gated(held_b.clone())).await;
    let mut proxy = Proxy::start(
        &[a.spec(), b.spec()],
        &[
            "--max-fails",
            "1",
            "--fail-timeout",
            "1s",
            "--backend-idle-timeout",
            BACKEND_IDLE,
        ],
    );
    let fds = proxy.open_fds();
    let first: Vec<_> = (0..4)
        .map(|_| tokio::spawn(get(proxy.address, "/")))
        .collect();
    proxy
        .stats_when("two requests held on each", |s| {
            (s.active("a"), s.active("b")) == (2, 2)
        })
        .await;
    arrived(&a, 2).await;
    a.kill().await;
    // Both sent to a, so neither may be tried again: 502 each.
    proxy
        .stats_when("a's requests failed", |s| s.active("a") == 0)
        .await;
    let stats = proxy.stats().await;
    assert_eq!(counts(&stats, "a"), (2, 2, 2));
    assert!(!stats.healthy("a"), "{}", stats.0);
    // While a is out, b takes everything.
    let later: Vec<_> = (0..3)
        .map(|_| tokio::spawn(get(proxy.address, "/")))
        .collect();
    proxy.stats_when("b holds 5", |s| s.active("b") == 5).await;
    held_b.open();
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    for task in first.into_iter().chain(later) {
        let answer = within("an answer", task).await.expect("no panic");
        statuses.push(answer.status);
        bodies.push(answer.text().to_owned());
    }
    assert_eq!(tally(statuses), BTreeMap::from([(200, 5), (502, 2)]));
    assert_eq!(bodies.iter().filter(|b| *b == "b").count(), 5);
    let failed = format!(
        "leastconn: 502 Bad Gateway: backend a ({}): connection error: \
         Connection reset by peer (os error 104)\n",
        a.address
    );
    assert_eq!(
        bodies.iter().filter(|b| **b == failed).count(),
        2,
        "{bodies:?}"
    );
    // Restarted, a is back once its passive time is over, and takes its
    // share again.
    a.listen_again(Behaviour::Fast).await;
    proxy
        .stats_when("a back after its fail timeout", |s| s.healthy("a"))
        .await;
    let mut client = Client::connect(proxy.address).await;
    let mut names = Vec::new();
    for _ in 0..4 {
        let answer = client.get("/").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        names.push(answer.text().to_owned());
    }
    names.sort();
    assert_eq!(names, ["a", "a", "b", "b"]);
    drop(client);
    settled(
        &proxy,
        fds,
        &[("a", (4, 4, 2), true), ("b", (7, 7, 0), true)],
    )
    .await;
    still_serves(&mut proxy, &["a", "b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_body_cuts_the_response_and_fails() {
    let mut streaming = Backend::start(
        "streaming",
        Behaviour::Stream {
            len: 1 << 30,
            pause: Some(Duration::from_millis(2)),
        },
    )
    .await;
    let ok = Backend::start("ok", Behaviour::Fast).await;
    let mut proxy = Proxy::start(&[streaming.spec(), ok.spec()], &first_until_it_fails(&[]));
    let fds = proxy.open_fds();
    let (mut stream, _, _) = answered_200(proxy.address, 1).await;
    // A client of the backend's own, mid-body too, sees how it dies.
    let (mut direct, _, _) = answered_200(streaming.address, 1).await;
    streaming.kill().await;
    let mut buf = vec![0; 64 * 1024];
    // What was already under way, at most the socket buffers' worth.
    let mut reset = None;
    for _ in 0..10_000 {
        match within("the reset", direct.read(&mut buf)).await {
            Ok(0) => panic!("an orderly close, not a reset"),
            Ok(_) => {}
            Err(e) => {
                reset = Some(e.kind());
                break;
            }
        }
    }
    assert_eq!(reset, Some(std::io::ErrorKind::ConnectionReset));
    // Whatever came before the reset, then the end: no second response.
    let got = until_closed(&mut stream).await;
    assert!(got.len() < 1 << 30);
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/1.1"));
    let expected = [("streaming", (1, 1, 1), false), ("ok", (0, 0, 0), true)];
    settled(&proxy, fds, &expected).await;
    still_serves(&mut proxy, &["ok"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gives_504s_counted_as_its_failures() {
    let hung = Backend::start("hung", Behaviour::Hang).await;
    let ok = Backend::start("ok", Behaviour::Fast).await;
    // Never out, so that it keeps drawing its share.
    let mut proxy = Proxy::start(
        &[hung.spec(), ok.spec()],
        &[
            "--max-fails",
            "0",
            "--response-timeout",
            "300ms",
            "--backend-idle-timeout",
            BACKEND_IDLE,
        ],
    );
    let fds = proxy.open_fds();
    let started = Instant::now();
    let mut statuses = Vec::new();
    // One at a time: both idle, each request goes to the next in turn.
    for _ in 0..3 {
        statuses.push(get(proxy.address, "/").await.status);
    }
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(statuses, [504, 200, 504]);
    assert_eq!(hung.arrived(), 2);
    // The hung connections are closed with the requests that gave up.
    let expected = [("hung", (2, 2, 2), true), ("ok", (1, 1, 0), true)];
    settled(&proxy, fds, &expected).await;
    still_serves(&mut proxy, &["ok"]).await;
}

/// A response head with `Content-Length: len`, then `sent` bytes of it.
fn partial_answer(len: usize, sent: usize) -> Vec<u8> {
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    answer.resize(answer.len() + sent, b'x');
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_halfway_through_its_body_cuts_the_response_and_fails() {
    let closing = scripted("closing", partial_answer(1000, 500), false).await;
    let ok = Backend::start("ok", Behaviour::Fast).await;
    let mut proxy = Proxy::start(&[closing, ok.spec()], &first_until_it_fails(&[]));
    let fds = proxy.open_fds();
    let (mut stream, head, first) = answered_200(proxy.address, 1).await;
    // The length announced, which the client will see it never got.
    assert!(head.contains("\r\ncontent-length: 1000\r\n"), "{head}");
    // Half the body, then the connection closed: no second response.
    let rest = until_closed(&mut stream).await;
    assert_eq!(first.len() + rest.len(), 500);
    let expected = [("closing", (1, 1, 1), false), ("ok", (0, 0, 0), true)];
    settled(&proxy, fds, &expected).await;
    still_serves(&mut proxy, &["ok"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_status_line_is_a_502() {
    let garbled = scripted(
        "garbled",
        b"HTTP/1.1 two hundred OK\r\n\r\n".to_vec(),
        false,
    )
    .await;
    let ok = Backend::start("ok", Behaviour::Fast).await;
    let mut proxy = Proxy::start(&[garbled, ok.spec()], &first_until_it_fails(&[]));
    let fds = proxy.open_fds();
    let answer = get(proxy.address, "/").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert!(
        answer.text().ends_with("invalid HTTP status-code parsed\n"),
        "{}",
        answer.text()
    );
    let expected = [("garbled", (1, 1, 1), false), ("ok", (0, 0, 0), true)];
    settled(&proxy, fds, &expected).await;
    still_serves(&mut proxy, &["ok"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_response_header_is_a_502_in_bounded_memory() {
    let mut answer = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    answer.resize(answer.len() + (10 << 20), b'a');
    answer.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let big = scripted("big", answer, false).await;
    let ok = Backend::start("ok", Behaviour::Fast).await;
    let mut proxy = Proxy::start(&[big, ok.spec()], &first_until_it_fails(&[]));
    let fds = proxy.open_fds();
    let before = peak_kib(proxy.pid());
    let answer = get(proxy.address, "/").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert!(
        answer.text().ends_with("message head is too large\n"),
        "{}",
        answer.text()
    );
    let after = peak_kib(proxy.pid());
    eprintln!("peak {before} KiB before, {after} KiB after");
    // Far less than the header: the proxy stops reading it.
    assert!(after < before + 4 * 1024, "{before} KiB, then {after} KiB");
    let expected = [("big", (1, 1, 1), false), ("ok", (0, 0, 0), true)];
    settled(&proxy, fds, &expected).await;
    still_serves(&mut proxy, &["ok"]).await;
}

// 2. Clients that misbehave.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_gone_while_their_backend_works_give_their_counts_back() {
    let gate = Gate::new();
    let held = Backend::start("held", Behaviour::Gated(gate.clone())).await;
    let mut proxy = Proxy::start(&[held.spec()], &["--backend-idle-timeout", BACKEND_IDLE]);
    let fds = proxy.open_fds();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(sent(proxy.address, GET.as_bytes()).await);
    }
    // Counted when picked, before the backend has them: wait for both.
    proxy
        .stats_when("three held", |s| s.active("held") == 3)
        .await;
    arrived(&held, 3).await;
    drop(clients);
    // The proxy sees them go while it waits, and gives their counts back
    // at once, as the client's doing, not the backend's.
    let stats = proxy
        .stats_when("the counts given back", |s| s.active("held") == 0)
        .await;
    assert_eq!(counts(&stats, "held"), (3, 3, 0));
    // The answers, when they come, find no one: nothing changes.
    gate.open();
    settled(&proxy, fds, &[("held", (3, 3, 0), true)]).await;
    assert_eq!(held.arrived(), 3);
    still_serves(&mut proxy, &["held"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_after_the_header_timeout() {
    let ok = Backend::start("ok", Behaviour::Fast).await;
    let mut proxy = Proxy::start(&[ok.spec()], &["--header-timeout", "500ms"]);
    let fds = proxy.open_fds();
    // Before connecting: the header timeout may count from the accept.
    let started = Instant::now();
    let stream = within("connect", TcpStream::connect(proxy.address))
        .await
        .expect("connected");
    let (mut reading, mut writing) = stream.into_split();
    let head = b"GET / HTTP/1.1\r\nHost: test.example\r\nX-Slowly: 1\r\n\r\n";
    let dripping = tokio::spawn(async move {
        for byte in head {
            if writing.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut got = Vec::new();
    let _ = within("the connection closed", reading.read_to_end(&mut got)).await;
    let took = started.elapsed();
    dripping.abort();
    // Closed with nothing said (hyper sends no 408), never forwarded.
    assert_eq!(String::from_utf8_lossy(&got), "");
    took_at_least(took, Duration::from_millis(500));
    assert_eq!(ok.arrived(), 0);
    settled(&proxy, fds, &[("ok", (0, 0, 0), true)]).await;
    still_serves(&mut proxy, &["ok"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_after_the_idle_timeout_in_bounded_memory() {
    const LEN: u64 = 256 << 20;
    let big = Backend::start(
        "big",
        Behaviour::Stream {
            len: LEN,
            pause: None,
        },
    )
    .await;
    let mut proxy = Proxy::start(
        &[big.spec()],
        &[
            "--idle-timeout",
            "500ms",
            "--backend-idle-timeout",
            BACKEND_IDLE,
        ],
    );
    let fds = proxy.open_fds();
    let before = peak_kib(proxy.pid());
    let started = Instant::now();
    let mut stream = sent(
        proxy.address,
        b"GET /big HTTP/1.1\r\nHost: test.example\r\n\r\n",
    )
    .await;
    proxy
        .stats_when("the response under way", |s| s.active("big") == 1)
        .await;
    proxy
        .stats_when("the count given back", |s| s.active("big") == 0)
        .await;
    let took = started.elapsed();
    let after = peak_kib(proxy.pid());
    eprintln!("given back after {took:?}; peak {before} KiB before, {after} KiB after");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(after < before + 16 * 1024, "{before} KiB, then {after} KiB");
    // What was sent before the proxy gave up, then the end.
    let (head, first) = read_head(&mut stream).await;
    assert_eq!(status_of(&head), 200, "{head}");
    let rest = until_closed(&mut stream).await;
    let got = (first.len() + rest.len()) as u64;
    eprintln!("{got} bytes of {LEN} read");
    assert!(got < LEN, "{got}");
    settled(&proxy, fds, &[("big", (1, 1, 0), true)]).await;
    let exited = proxy.running.child.try_wait().expect("try_wait");
    assert!(exited.is_none(), "the proxy exited: {exited:?}");
}

/// A backend `up` that answers the length of the body it read, behind a
/// proxy with `flags`; the proxy's descriptors before any load.
async fn uploads(flags: &[&str]) -> (Backend, Proxy, usize) {
    let up = Backend::start("up", Behaviour::Upload).await;
    let mut flags = flags.to_vec();
    flags.extend(["--backend-idle-timeout", BACKEND_IDLE]);
    let proxy = Proxy::start(&[up.spec()], &flags);
    let fds = proxy.open_fds();
    (up, proxy, fds)
}

/// A request that announces 100 bytes of body and sends 10.
const SHORT_BODY: &[u8] =
    b"POST /up HTTP/1.1\r\nHost: test.example\r\nContent-Length: 100\r\n\r\n0123456789";

/// The responses in `bytes`, each with a `Content-Length`: status, body.
fn responses(mut bytes: &[u8]) -> Vec<(u16, String)> {
    let mut responses = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = std::str::from_utf8(&bytes[..end]).expect("a text head");
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().expect("a length"))
            })
            .unwrap_or(0);
        let body = &bytes[end + 4..end + 4 + length];
        responses.push((status_of(head), String::from_utf8_lossy(body).into_owned()));
        bytes = &bytes[end + 4 + length..];
    }
    assert!(
        bytes.is_empty(),
        "left over: {:?}",
        String::from_utf8_lossy(bytes)
    );
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (up, mut proxy, fds) = uploads(&[]).await;
    let mut stream = sent(
        proxy.address,
        b"POST /1 HTTP/1.1\r\nHost: test.example\r\nContent-Length: 1\r\n\r\na\
          POST /2 HTTP/1.1\r\nHost: test.example\r\nContent-Length: 2\r\n\r\nbb\
          POST /3 HTTP/1.1\r\nHost: test.example\r\nContent-Length: 3\r\nConnection: close\r\n\r\nccc",
    )
    .await;
    let got = until_closed(&mut stream).await;
    assert_eq!(
        responses(&got),
        [(200, "1".into()), (200, "2".into()), (200, "3".into())]
    );
    let uris: Vec<String> = up.received().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/1", "/2", "/3"]);
    settled(&proxy, fds, &[("up", (3, 3, 0), true)]).await;
    still_serves(&mut proxy, &["0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_announced_leaves_the_rest_as_the_next_request() {
    let (up, mut proxy, fds) = uploads(&["--header-timeout", "500ms"]).await;
    // `Content-Length: 10` and 20 bytes: the first 10 are the body, the
    // rest the beginning of a next request. Here that is an unfinished
    // request line: the proxy waits for the rest of its head, and after
    // the header timeout closes the connection without an answer. A rest
    // that cannot be a request line gets 400 at once.
    for (rest, second, waits) in [
        (&b"ABCDEFGHIJ"[..], None, true),
        (b"NOT HTTP\r\n", Some(400), false),
    ] {
        let mut request =
            b"POST /up HTTP/1.1\r\nHost: test.example\r\nContent-Length: 10\r\n\r\n0123456789"
                .to_vec();
        request.extend_from_slice(rest);
        let mut stream = sent(proxy.address, &request).await;
        let started = Instant::now();
        let got = until_closed(&mut stream).await;
        let took = started.elapsed();
        let mut expected = vec![(200, "10".to_owned())];
        expected.extend(second.map(|status| (status, String::new())));
        assert_eq!(responses(&got), expected);
        assert_eq!(took >= Duration::from_millis(500), waits, "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    assert_eq!(up.arrived(), 2);
    settled(&proxy, fds, &[("up", (2, 2, 0), true)]).await;
    still_serves(&mut proxy, &["0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stalling_its_body_is_cut_off_after_the_response_timeout() {
    // Alone on its connection, and with the client's next request already
    // sent behind it: then hyper reads nothing from the client while the
    // response is under way, and no client timeout runs.
    for pipelined in [false, true] {
        let stalling = scripted("stalling", partial_answer(1 << 20, 64 * 1024), true).await;
        let ok = Backend::start("ok", Behaviour::Fast).await;
        let mut proxy = Proxy::start(
            &[stalling, ok.spec()],
            &first_until_it_fails(&["--response-timeout", "300ms"]),
        );
        let fds = proxy.open_fds();
        let started = Instant::now();
        let (mut stream, _, first) = answered_200(proxy.address, 1 + pipelined as usize).await;
        // What the backend sent, then the connection closed: no second
        // response.
        let rest = until_closed(&mut stream).await;
        let took = started.elapsed();
        assert_eq!(
            first.len() + rest.len(),
            64 * 1024,
            "pipelined: {pipelined}"
        );
        took_at_least(took, Duration::from_millis(300));
        assert_eq!(ok.arrived(), 0);
        let expected = [("stalling", (1, 1, 1), false), ("ok", (0, 0, 0), true)];
        settled(&proxy, fds, &expected).await;
        still_serves(&mut proxy, &["ok"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_its_request_is_whole_is_no_failure_of_the_backend() {
    let (up, mut proxy, fds) = uploads(&[]).await;
    // Half a head: nothing reaches a backend.
    drop(sent(proxy.address, b"GET / HTTP/1.1\r\nHost: test.exa").await);
    // Half a body: the request reaches the backend, then its client goes.
    let half = sent(proxy.address, SHORT_BODY).await;
    proxy
        .stats_when("the upload under way", |s| s.active("up") == 1)
        .await;
    drop(half);
    // Counted, and not as a failure: the backend stays in.
    settled(&proxy, fds, &[("up", (1, 1, 0), true)]).await;
    assert_eq!(up.arrived(), 1);
    // Upload answers the length of the body it read: none.
    still_serves(&mut proxy, &["0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_announced_gets_408_after_the_idle_timeout_and_no_failure() {
    // The response timeout is shorter, but waiting for the client's body
    // is no slowness of the backend's: the client's idle timeout ends it.
    let flags = ["--response-timeout", "300ms", "--idle-timeout", "800ms"];
    let (up, mut proxy, fds) = uploads(&flags).await;
    let mut stream = sent(proxy.address, SHORT_BODY).await;
    let started = Instant::now();
    let answer = read_response(&mut stream).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 408, "{}", answer.head);
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        text.starts_with("leastconn: 408 Request Timeout: the request body did not arrive whole"),
        "{text}"
    );
    took_at_least(took, Duration::from_millis(800));
    assert_eq!(up.arrived(), 1);
    settled(&proxy, fds, &[("up", (1, 1, 0), true)]).await;
    still_serves(&mut proxy, &["0"]).await;
}
