//! `scripts/chaos`'s program (benches/chaos.rs), briefly: each case (a
//! backend killed and started again, a backend that stops answering, an
//! operator's changes under load, idle kept-alive connections) runs for 2
//! seconds against the real binary, and must end with no count leaked, no
//! descriptor leaked, the proxy running, and only documented statuses.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn every_chaos_case_passes_briefly() {
    let bin = Path::new(common::BIN);
    // Built with the tests, beside the binary.
    let chaos = bin
        .parent()
        .expect("the binary's directory")
        .join("examples/chaos");
    let mut child = Command::new(&chaos)
        .args(["--proxy", common::BIN, "--seconds", "2", "--clients", "8"])
        .args(["--idle", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} runs ({e}): cargo test builds it, as does cargo build --example chaos",
                chaos.display()
            )
        });
    let stdout = common::read_all(child.stdout.take().expect("piped"));
    let stderr = common::read_all(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chaos did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = String::from_utf8(stdout.join().expect("stdout")).expect("UTF-8");
    let err = String::from_utf8_lossy(&stderr.join().expect("stderr")).into_owned();
    assert!(status.success(), "{out}{err}");
    let rows: Vec<&str> = out.lines().skip(2).collect();
    let names: Vec<&str> = rows
        .iter()
        .map(|row| {
            row.split(" | ")
                .next()
                .unwrap_or_default()
                .trim_start_matches("| ")
        })
        .collect();
    assert_eq!(
        names,
        [
            "a backend killed, started again",
            "a backend that stops answering",
            "an operator's changes under load",
            "idle kept-alive connections (300 held)",
        ],
        "{out}"
    );
    for row in rows {
        let cells: Vec<&str> = row.split(" | ").collect();
        // leaked, then the result.
        assert_eq!(cells[4], "0", "{row}");
        assert_eq!(cells.last().copied(), Some("passed |"), "{row}");
    }
}
