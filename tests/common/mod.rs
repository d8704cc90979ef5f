//! Helpers shared by the integration tests: the real binary, run as users
//! run it, with every wait bounded and every process stopped.
#![allow(dead_code)] // each test file uses some of these

mod pieces;
pub mod proxy;

#[allow(unused_imports)] // used by some test files only
pub use pieces::Pieces;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_leastconn");

/// How long any one run of the binary may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A running process, killed and reaped when dropped: a failing test never
/// leaves one behind.
pub struct Running {
    pub child: Child,
}

impl Running {
    /// Starts the binary with `args`, every standard stream piped.
    pub fn start(args: &[&str]) -> Running {
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        Running { child }
    }

    /// Waits for the process to exit, at most `timeout`; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished run wrote, and how it exited.
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub status: Option<i32>,
}

impl Output {
    pub fn stdout_text(&self) -> &str {
        std::str::from_utf8(&self.stdout).expect("stdout is UTF-8")
    }

    /// Each stdout line as JSON.
    pub fn replies(&self) -> Vec<Value> {
        replies(&self.stdout)
    }
}

/// Runs the binary with `args` on `input`, written from a thread so that a
/// large input cannot dead-lock against a full output pipe, and collects
/// its output once it exits (within [`TIMEOUT`]).
pub fn run(args: &[&str], input: &[u8]) -> Output {
    let mut running = Running::start(args);
    let mut stdin = running.child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // A node that stops reading (a closed stdout) makes writing fail: fine.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = read_all(running.child.stdout.take().expect("piped stdout"));
    let stderr = read_all(running.child.stderr.take().expect("piped stderr"));
    let status = running.wait(TIMEOUT);
    writer.join().expect("the writer thread");
    Output {
        stdout: stdout.join().expect("the stdout reader"),
        stderr: String::from_utf8(stderr.join().expect("the stderr reader"))
            .expect("stderr is UTF-8"),
        status,
    }
}

/// Reads a stream to its end on a thread.
pub fn read_all(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    })
}

/// Reads lines on a thread and hands them over a channel, so that a
/// missing line shows as a timeout in `recv_timeout`, not a hang.
pub fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Each line of a node's stdout, as JSON.
pub fn replies(stdout: &[u8]) -> Vec<Value> {
    std::str::from_utf8(stdout)
        .expect("stdout is UTF-8")
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:.200}"))
        })
        .collect()
}

/// A process's peak resident memory, from procfs.
pub fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A fresh, empty temporary directory for one test.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("leastconn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
