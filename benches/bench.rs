//! The benchmark (run it with `scripts/bench`; BENCHMARKS.md has results).
//!
//! Generates its workloads, then runs the release `leastconn` and the JSON
//! floor (`benches/json_floor.rs`) on each, as whole processes fed from a
//! file, several times, and reports the medians: wall time, messages per
//! second, MB per second, peak resident memory (from `/usr/bin/time`), and
//! leastconn's time as a ratio of the floor's.
//!
//! Workloads use the library's own engine to decide which backend each
//! request gets, so that every completion names a backend that really has a
//! connection to complete.

use leastconn::engine::rng::Rng;
use leastconn::engine::{BackendSpec, Policy, Pool};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

struct Workload {
    name: String,
    path: PathBuf,
    messages: usize,
    bytes: u64,
    /// The same init and one request, to subtract the init's cost.
    init_only: Option<PathBuf>,
    /// Arguments for the node.
    args: Vec<&'static str>,
}

struct Measure {
    /// Wall-clock time.
    seconds: f64,
    /// User plus system CPU time, where `/usr/bin/time` reports it.
    cpu: Option<f64>,
    peak_kib: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let mut runs = 5;
    let mut quick = false;
    let mut only: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!("usage: scripts/bench [--runs N] [--quick] [WORKLOAD...]");
                println!("workloads: course course-precise steady large-1000 large-10000 large-100000 large-1000000 startup");
                return Ok(());
            }
            other => only.push(other.to_owned()),
        }
    }
    // Where cargo put the builds, as cargo itself reads it.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir)?;
    let node = target.join("release/leastconn");
    let floor = target.join("release/examples/json_floor");
    anyhow::ensure!(
        node.exists() && floor.exists(),
        "build first: scripts/bench does"
    );

    let scale = if quick { 10 } else { 1 };
    let course = course(&dir, 200_000 / scale)?;
    // The same messages with the one-pass read off: what it saves.
    let course_precise = Workload {
        name: "course-precise".into(),
        path: course.path.clone(),
        messages: course.messages,
        bytes: course.bytes,
        init_only: None,
        args: vec!["--no-one-pass"],
    };
    let mut workloads = vec![course, course_precise, steady(&dir, 1_000_000 / scale)?];
    for backends in [1_000, 10_000, 100_000, 1_000_000] {
        // Enough messages that their cost, not the init's, dominates.
        workloads.push(large(&dir, backends, 1_000_000 / scale)?);
    }
    workloads.retain(|w| only.is_empty() || only.contains(&w.name));

    let time = Path::new("/usr/bin/time").exists();
    let mut table = String::new();
    writeln!(table, "| workload | messages | input MB | leastconn s | messages/s | MB/s | peak MiB | floor s | floor peak MiB | CPU time ÷ floor's |")?;
    writeln!(table, "|---|---|---|---|---|---|---|---|---|---|")?;
    let mut per_message = Vec::new();
    for w in &workloads {
        eprint!("{} ", w.name);
        let (ours, theirs, ratio) = paired(runs, (&node, &w.args), &floor, &w.path, time)?;
        eprintln!();
        let mb = w.bytes as f64 / 1e6;
        writeln!(
            table,
            "| {} | {} | {:.1} | {:.3} | {:.0} | {:.1} | {} | {:.3} | {} | {:.2} |",
            w.name,
            w.messages,
            mb,
            ours.seconds,
            w.messages as f64 / ours.seconds,
            mb / ours.seconds,
            mib(ours.peak_kib),
            theirs.seconds,
            mib(theirs.peak_kib),
            ratio,
        )?;
        if let Some(init_only) = &w.init_only {
            // The marginal cost of a message: the whole run less a run of
            // the init alone (the init of a million backends is a one-time
            // cost that would otherwise hide the per-message one), in CPU
            // time where known.
            let base = median(runs, || measure(&node, &w.args, init_only, time))?;
            let spent = |m: &Measure| m.cpu.unwrap_or(m.seconds);
            let marginal = (spent(&ours) - spent(&base)) / (w.messages - 2) as f64;
            per_message.push((w.name.clone(), marginal, spent(&base)));
        }
    }
    if only.is_empty() || only.iter().any(|o| o == "startup") {
        let path = startup(&dir)?;
        let (ours, theirs, ratio) = paired(runs.max(5) * 20, (&node, &[]), &floor, &path, false)?;
        writeln!(
            table,
            "| startup (init + 1 request), wall | 2 | 0.0 | {:.4} | | | | {:.4} | | {:.2} (wall) |",
            ours.seconds, theirs.seconds, ratio
        )?;
    }
    println!("{table}");
    if !per_message.is_empty() {
        println!("| pool | init + 1 request, CPU s | marginal CPU time per message, µs |");
        println!("|---|---|---|");
        for (name, marginal, init) in &per_message {
            println!("| {name} | {init:.3} | {:.2} |", marginal * 1e6);
        }
    }
    if let (Some(first), Some(last)) = (per_message.first(), per_message.last()) {
        println!(
            "\nmarginal time per message, {} ÷ {}: {:.2}×",
            last.0,
            first.0,
            last.1 / first.1
        );
    }
    Ok(())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Runs both programs `runs` times, alternating, so that both meet the same
/// noise; returns the median of each and the median of the per-pair ratios
/// (of CPU time where known, else of wall time).
fn paired(
    runs: usize,
    (node, args): (&Path, &[&str]),
    floor: &Path,
    input: &Path,
    time: bool,
) -> anyhow::Result<(Measure, Measure, f64)> {
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let a = measure(node, args, input, time)?;
        let b = measure(floor, &[], input, time)?;
        ratios.push(match (a.cpu, b.cpu) {
            (Some(x), Some(y)) if y > 0.0 => x / y,
            _ => a.seconds / b.seconds,
        });
        ours.push(a);
        theirs.push(b);
    }
    ratios.sort_by(f64::total_cmp);
    Ok((middle(ours), middle(theirs), ratios[ratios.len() / 2]))
}

/// Runs `program` with `input` on stdin, output discarded.
fn measure(
    program: &Path,
    args: &[&str],
    input: &Path,
    with_time: bool,
) -> anyhow::Result<Measure> {
    let stdin = std::fs::File::open(input)?;
    let report = std::env::temp_dir().join(format!("leastconn-bench-{}", std::process::id()));
    let mut command = if with_time {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(&report)
            .arg(program)
            .args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    let started = Instant::now();
    let status = command
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status.success(),
        "{} failed on {}",
        program.display(),
        input.display()
    );
    let report = with_time
        .then(|| std::fs::read_to_string(&report).ok())
        .flatten()
        .unwrap_or_default();
    let fields: Vec<&str> = report.split_whitespace().collect();
    let peak_kib = fields.first().and_then(|f| f.parse().ok());
    let cpu = match (fields.get(1), fields.get(2)) {
        (Some(user), Some(system)) => user
            .parse::<f64>()
            .ok()
            .zip(system.parse::<f64>().ok())
            .map(|(u, s)| u + s),
        _ => None,
    };
    eprint!(".");
    Ok(Measure {
        seconds,
        cpu,
        peak_kib,
    })
}

/// The median wall time and the median peak memory of several runs.
fn middle(mut all: Vec<Measure>) -> Measure {
    all.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mid = all.len() / 2;
    let mut peaks: Vec<u64> = all.iter().filter_map(|m| m.peak_kib).collect();
    peaks.sort_unstable();
    Measure {
        seconds: all[mid].seconds,
        cpu: all[mid].cpu,
        peak_kib: peaks.get(peaks.len() / 2).copied(),
    }
}

fn median(runs: usize, mut f: impl FnMut() -> anyhow::Result<Measure>) -> anyhow::Result<Measure> {
    let all = (0..runs.max(1))
        .map(|_| f())
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(middle(all))
}

// --- workloads ---------------------------------------------------------------

/// Writes messages to a file, counting them.
struct Writer {
    out: std::io::BufWriter<std::fs::File>,
    messages: usize,
    path: PathBuf,
}

impl Writer {
    fn new(dir: &Path, name: &str) -> anyhow::Result<Writer> {
        let path = dir.join(format!("{name}.in"));
        Ok(Writer {
            out: std::io::BufWriter::new(std::fs::File::create(&path)?),
            messages: 0,
            path,
        })
    }

    fn message(&mut self, body: &str) -> anyhow::Result<()> {
        self.messages += 1;
        writeln!(self.out, r#"{{"src":"client","dest":"lb","body":{body}}}"#)?;
        Ok(())
    }

    fn finish(mut self, name: &str) -> anyhow::Result<Workload> {
        self.out.flush()?;
        let bytes = std::fs::metadata(&self.path)?.len();
        Ok(Workload {
            name: name.to_owned(),
            path: self.path,
            messages: self.messages,
            bytes,
            init_only: None,
            args: Vec::new(),
        })
    }
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("api-{i}")).collect()
}

fn pool_of(names: &[String]) -> Pool {
    Pool::with_backends(
        names.iter().map(|n| BackendSpec::named(n)),
        Policy::default(),
    )
    .expect("distinct names")
}

fn init_body(names: &[String], extra: &str) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"{{"type":"init","msg_id":1,"backends":[{}]{extra}}}"#,
        list.join(",")
    )
}

/// The course's shape: 3 backends, every request with a snapshot and
/// followed by its completion.
fn course(dir: &Path, messages: usize) -> anyhow::Result<Workload> {
    let names = names(3);
    let mut pool = pool_of(&names);
    let mut rng = Rng::new(1);
    let mut w = Writer::new(dir, "course")?;
    w.message(&init_body(&names, r#","algorithm":"least-connections""#))?;
    let mut id = 2;
    while w.messages + 2 <= messages {
        let counts: Vec<u64> = (0..3).map(|_| rng.below(10)).collect();
        let snapshot: Vec<(&str, u64)> = names
            .iter()
            .map(|n| n.as_str())
            .zip(counts.iter().copied())
            .collect();
        pool.apply_snapshot(&snapshot, &mut Vec::new())?;
        let chosen = pool.pick(None, &[], false).chosen.expect("a backend");
        let backend = pool.get_index(chosen).expect("in pool").0.to_owned();
        w.message(&format!(
            r#"{{"type":"http_request","msg_id":{id},"method":"GET","path":"/api/data","active_connections":{{"api-1":{},"api-2":{},"api-3":{}}}}}"#,
            counts[0], counts[1], counts[2]
        ))?;
        w.message(&format!(
            r#"{{"type":"request_complete","msg_id":{},"backend":"{backend}"}}"#,
            id + 1
        ))?;
        pool.complete(&backend, true, None)?;
        id += 2;
    }
    w.finish("course")
}

/// Requests and completions with no snapshots, `busy` requests in flight
/// on average.
fn interleaved(
    w: &mut Writer,
    names: &[String],
    messages: usize,
    busy: usize,
) -> anyhow::Result<()> {
    let mut pool = pool_of(names);
    let mut rng = Rng::new(2);
    let mut in_flight: Vec<String> = Vec::new();
    let mut id = 2u64;
    while w.messages < messages {
        let request = in_flight.is_empty()
            || (in_flight.len() < busy && rng.below(10) < 6)
            || (in_flight.len() >= busy && rng.below(10) < 4);
        if request {
            let chosen = pool.pick(None, &[], false).chosen.expect("a backend");
            in_flight.push(pool.get_index(chosen).expect("in pool").0.to_owned());
            w.message(&format!(
                r#"{{"type":"http_request","msg_id":{id},"method":"GET","path":"/"}}"#
            ))?;
        } else {
            let i = rng.below(in_flight.len() as u64) as usize;
            let backend = in_flight.swap_remove(i);
            pool.complete(&backend, true, None)?;
            w.message(&format!(
                r#"{{"type":"request_complete","msg_id":{id},"backend":"{backend}"}}"#
            ))?;
        }
        id += 1;
    }
    Ok(())
}

/// 100 backends, about half of them busy.
fn steady(dir: &Path, messages: usize) -> anyhow::Result<Workload> {
    let names = names(100);
    let mut w = Writer::new(dir, "steady")?;
    w.message(&init_body(&names, ""))?;
    interleaved(&mut w, &names, messages, 50)?;
    w.finish("steady")
}

/// A large pool with compact replies.
fn large(dir: &Path, backends: usize, messages: usize) -> anyhow::Result<Workload> {
    let name = format!("large-{backends}");
    let names = names(backends);
    let init = init_body(&names, r#","counts":"changed""#);
    let mut base = Writer::new(dir, &format!("{name}-init"))?;
    base.message(&init)?;
    base.message(r#"{"type":"http_request","msg_id":2}"#)?;
    let init_only = base.finish(&name)?.path;
    let mut w = Writer::new(dir, &name)?;
    w.message(&init)?;
    interleaved(&mut w, &names, messages, (backends / 2).min(1000))?;
    let mut workload = w.finish(&name)?;
    workload.init_only = Some(init_only);
    Ok(workload)
}

fn startup(dir: &Path) -> anyhow::Result<PathBuf> {
    let names = names(3);
    let mut w = Writer::new(dir, "startup")?;
    w.message(&init_body(&names, ""))?;
    w.message(r#"{"type":"http_request","msg_id":2}"#)?;
    Ok(w.finish("startup")?.path)
}
