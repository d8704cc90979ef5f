//! The command line: argument parsing, help, and running the chosen command.

use crate::event_loop::{self, Options};
use crate::fixture;
use crate::framing::DEFAULT_MAX_MESSAGE_SIZE;
use crate::sim::{self, Settings};
use anyhow::{bail, Context};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub const HELP: &str = "\
leastconn: a least-connections load balancer, spoken to as a Maelstrom-style node

USAGE:
    leastconn [OPTIONS]                    run the node on stdin/stdout
    leastconn replay [OPTIONS] [PATH...]   replay fixture cases against the node
    leastconn simulate [OPTIONS]           simulate balancing in virtual time
                                           (see `leastconn simulate --help`)

THE NODE
    Reads JSON messages {\"src\",\"dest\",\"body\"} on standard input (one per
    line, pretty-printed, or several per line), answers each on standard
    output as one line of compact JSON, and reports input it cannot answer
    on standard error with its line and column. It exits 0 when the input
    ends, and quietly when standard output is closed.

    Message types: init, http_request, request_complete, add_backend,
    remove_backend, set_backend, stats. See README.md for the protocol.

    --max-message-size SIZE   skip (and report) any message larger than SIZE
                              bytes; suffixes K, M, G (powers of 1024)
                              [default: 64M]
    --strict                  exit with status 1 if any input could not be
                              parsed (not JSON, not UTF-8, not an envelope,
                              over the size limit), for CI replays. Without
                              it, bad input never changes the exit status.
                              Error replies are normal traffic either way.

REPLAY
    Runs each case (NAME.in, NAME.out, optional NAME.case.json) under the
    given files or directories [default: fixtures] and prints one line per
    case, then `N passed, N failed`. Exits 1 if any case failed.

    --bin PATH                the node to run [default: this program]
    --timeout SECONDS         time allowed per case [default: 5]

OTHER
    -h, --help                print this help
    -V, --version             print the version
";

pub const SIMULATE_HELP: &str = "\
leastconn simulate: a discrete-event simulation of clients, balancers and
backends, with the node's own engine choosing every backend

USAGE:
    leastconn simulate [OPTIONS]

Prints, for each algorithm, the mean time in system with its 95% confidence
interval over replications, percentiles, each backend's share of requests,
the spread of active connections (highest - lowest count over backends, seen
by each arrival) and rejected requests. Times are in units of a speed-1
backend's mean service time. Every setting may also come from a TOML
scenario file (keys as the flags, without the dashes); flags override it.
See docs/simulator.md for the model.

BACKENDS
    --backends N              N backends of speed 1 [default: 10]
    --speeds S,S,...          one speed per backend instead, e.g. 10,10,1,1
    --weights W,W,...         the balancer's weight for each backend
                              [default: all 1]
    --max-connections N       the same connection limit on every backend
    --discipline D            fifo: one request at a time, the rest queue;
                              ps: processor sharing, all served at once;
                              delay: each takes its own time whatever the
                              load [default: fifo]
    --service DIST            request sizes, mean 1: exp, const,
                              uniform[:H] (on 1-H..1+H, default H=1),
                              lognormal[:SIGMA] (default 1.15),
                              pareto[:ALPHA] (default 2.5),
                              bimodal[:FRACTION[:RATIO]] (a FRACTION of
                              requests RATIO times larger, default 0.1:10)
                              [default: exp]

ARRIVALS
    --load RHO                arrival rate as a fraction of the backends'
                              total speed [default: 0.9]
    --rate LAMBDA             or the arrival rate itself
    --arrivals A              poisson, or regular (equal gaps from time 0)
                              [default: poisson]
    --burst SIZE              requests arriving together [default: 1]

BALANCING
    --algorithms A,A,...      least-connections, round-robin, random,
                              power-of-two-choices [default: all four]
    --tie-break T             lowest-index, round-robin, random
                              [default: lowest-index]
    --balancers K             independent balancers; each arrival goes to
                              one at random [default: 1]
    --sync T                  each balancer sees its peers' counts as of its
                              last sync, every T; 0 means always exact
                              [default: 0]

RUNNING
    --requests M              requests per replication [default: 100000]
    --warmup FRACTION         first requests left out of the figures
                              [default: 0.1]
    --replications R          independent runs [default: 5]
    --seed S                  seeds every random stream [default: fixed]
    --scenario FILE           read settings from a TOML file

OUTPUT
    --json                    one JSON document on standard output instead
                              of the table
    --svg DIR                 write DIR/latency-cdf.svg and, from the first
                              replication, DIR/active-ALGORITHM.svg
    --transcript FILE         write the messages a real node would receive
                              (one algorithm, one balancer, the first
                              replication); `leastconn < FILE` makes the
                              same picks
    -h, --help                print this help
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Node(NodeArgs),
    Replay(ReplayArgs),
    Simulate(Box<SimulateArgs>),
    Help,
    SimulateHelp,
    Version,
}

#[derive(Debug, PartialEq, Eq)]
pub struct NodeArgs {
    pub max_message_size: usize,
    pub strict: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ReplayArgs {
    pub bin: Option<PathBuf>,
    pub timeout: Duration,
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Default, PartialEq)]
pub struct SimulateArgs {
    /// The model's settings given as flags; they override the file's.
    pub settings: Settings,
    pub scenario: Option<PathBuf>,
    pub json: bool,
    pub svg: Option<PathBuf>,
    pub transcript: Option<PathBuf>,
}

/// The arguments one at a time, as `(flag, inline value)` pairs: `--a=b`
/// gives `("--a", Some("b"))`, anything else comes whole.
struct Args<I: Iterator<Item = OsString>> {
    rest: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = OsString>> Args<I> {
    fn next(&mut self) -> Option<anyhow::Result<(String, Option<String>)>> {
        let arg = self.rest.next()?;
        Some(
            arg.to_str()
                .with_context(|| format!("argument {arg:?} is not valid UTF-8"))
                .map(|text| match text.split_once('=') {
                    Some((flag, value)) if flag.starts_with("--") => {
                        (flag.to_owned(), Some(value.to_owned()))
                    }
                    _ => (text.to_owned(), None),
                }),
        )
    }

    /// The flag's value: inline, or the next argument.
    fn value(&mut self, flag: &str, inline: Option<String>) -> anyhow::Result<String> {
        match inline {
            Some(v) => Ok(v),
            None => self
                .rest
                .next()
                .and_then(|v| v.into_string().ok())
                .with_context(|| format!("{flag} needs a value")),
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> anyhow::Result<Command> {
    let mut args = Args {
        rest: args.into_iter().peekable(),
    };
    let subcommand = args
        .rest
        .peek()
        .and_then(|a| a.to_str())
        .filter(|a| ["replay", "simulate"].contains(a))
        .map(str::to_owned);
    if subcommand.is_some() {
        args.rest.next();
    }
    if subcommand.as_deref() == Some("simulate") {
        return parse_simulate(args);
    }
    let replay = subcommand.is_some();
    let mut node = NodeArgs {
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        strict: false,
    };
    let mut rep = ReplayArgs {
        bin: None,
        timeout: fixture::DEFAULT_TIMEOUT,
        paths: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = arg?;
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--max-message-size" if !replay => {
                node.max_message_size = parse_size(&args.value(&flag, inline)?)?
            }
            "--strict" if !replay && inline.is_none() => node.strict = true,
            "--bin" if replay => rep.bin = Some(PathBuf::from(args.value(&flag, inline)?)),
            "--timeout" if replay => {
                let v = args.value(&flag, inline)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .with_context(|| {
                        format!("--timeout: {v:?} is not a positive number of seconds")
                    })?;
                rep.timeout = Duration::from_secs_f64(secs);
            }
            _ if replay && !flag.starts_with('-') && inline.is_none() => {
                rep.paths.push(PathBuf::from(flag))
            }
            _ => bail!(
                "unknown argument {:?}; see `leastconn --help`",
                whole(&flag, &inline)
            ),
        }
    }
    Ok(if replay {
        Command::Replay(rep)
    } else {
        Command::Node(node)
    })
}

fn whole(flag: &str, inline: &Option<String>) -> String {
    match inline {
        Some(v) => format!("{flag}={v}"),
        None => flag.to_owned(),
    }
}

fn parse_simulate<I: Iterator<Item = OsString>>(mut args: Args<I>) -> anyhow::Result<Command> {
    let mut sim = SimulateArgs::default();
    let flags = &mut sim.settings;
    while let Some(arg) = args.next() {
        let (flag, inline) = arg?;
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::SimulateHelp),
            "-V" | "--version" => return Ok(Command::Version),
            "--json" if inline.is_none() => sim.json = true,
            "--scenario" => sim.scenario = Some(PathBuf::from(args.value(&flag, inline)?)),
            "--svg" => sim.svg = Some(PathBuf::from(args.value(&flag, inline)?)),
            "--transcript" => sim.transcript = Some(PathBuf::from(args.value(&flag, inline)?)),
            "--backends" => flags.backends = Some(number(&flag, &args.value(&flag, inline)?)?),
            "--speeds" => flags.speeds = Some(list(&flag, &args.value(&flag, inline)?)?),
            "--weights" => flags.weights = Some(list(&flag, &args.value(&flag, inline)?)?),
            "--max-connections" => {
                flags.max_connections = Some(number(&flag, &args.value(&flag, inline)?)?)
            }
            "--discipline" => flags.discipline = Some(named(&flag, &args.value(&flag, inline)?)?),
            "--service" => flags.service = Some(named(&flag, &args.value(&flag, inline)?)?),
            "--arrivals" => flags.arrivals = Some(named(&flag, &args.value(&flag, inline)?)?),
            "--load" => flags.load = Some(number(&flag, &args.value(&flag, inline)?)?),
            "--rate" => flags.rate = Some(number(&flag, &args.value(&flag, inline)?)?),
            "--burst" => flags.burst = Some(number(&flag, &args.value(&flag, inline)?)?),
            "--algorithms" => {
                let value = args.value(&flag, inline)?;
                let names = value.split(',').map(|name| named(&flag, name.trim()));
                flags.algorithms = Some(names.collect::<anyhow::Result<_>>()?)
            }
            "--tie-break" => flags.tie_break = Some(named(&flag, &args.value(&flag, inline)?)?),
            "--balancers" => flags.balancers = Some(number(&flag, &args.value(&flag, inline)?)?),
            "--sync" => flags.sync = Some(number(&flag, &args.value(&flag, inline)?)?),
            "--requests" => flags.requests = Some(number(&flag, &args.value(&flag, inline)?)?),
            "--warmup" => flags.warmup = Some(number(&flag, &args.value(&flag, inline)?)?),
            "--replications" => {
                flags.replications = Some(number(&flag, &args.value(&flag, inline)?)?)
            }
            "--seed" => flags.seed = Some(number(&flag, &args.value(&flag, inline)?)?),
            _ => bail!(
                "unknown argument {:?}; see `leastconn simulate --help`",
                whole(&flag, &inline)
            ),
        }
    }
    Ok(Command::Simulate(Box::new(sim)))
}

/// A flag's value as a number (`1e6` is fine where a whole number is
/// wanted, if it is one).
fn number<T: std::str::FromStr>(flag: &str, text: &str) -> anyhow::Result<T> {
    let text = text.trim();
    if let Ok(v) = text.parse() {
        return Ok(v);
    }
    // Whole numbers written like 1e7.
    let whole = text
        .parse::<f64>()
        .ok()
        .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v < 1e19)
        .and_then(|v| format!("{v:.0}").parse().ok());
    whole.with_context(|| format!("{flag}: {text:?} is not a valid number here"))
}

/// A flag's value by name, with the name's own error.
fn named<T: std::str::FromStr<Err = String>>(flag: &str, text: &str) -> anyhow::Result<T> {
    text.parse()
        .map_err(|e: String| anyhow::anyhow!("{flag}: {e}"))
}

/// A comma-separated list.
fn list<T: std::str::FromStr>(flag: &str, text: &str) -> anyhow::Result<Vec<T>> {
    text.split(',').map(|item| number(flag, item)).collect()
}

/// Parses a size such as `65536`, `64K` or `64MiB`.
pub fn parse_size(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => bail!("--max-message-size: {text:?} is not a size like 65536, 64K or 64M"),
    };
    let n: usize = number
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| format!("--max-message-size: {text:?} is not a positive size"))?;
    n.checked_mul(1 << shift)
        .with_context(|| format!("--max-message-size: {text:?} is too large"))
}

/// Runs the command line and says how the process should exit. Every
/// error, a usage error included, is returned for `main` to report.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> anyhow::Result<ExitCode> {
    match parse(args)? {
        Command::Help => {
            io::stdout().write_all(HELP.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            writeln!(io::stdout(), "leastconn {}", env!("CARGO_PKG_VERSION"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Node(args) => run_node(args),
        Command::Replay(args) => run_replay(args),
        Command::SimulateHelp => {
            io::stdout().write_all(SIMULATE_HELP.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => run_simulate(args),
    }
}

fn run_node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    // Any option without a flag keeps its default.
    #[allow(clippy::needless_update)]
    let options = Options {
        max_message_size: args.max_message_size,
        ..Options::default()
    };
    let stdin = io::stdin().lock();
    let stderr = io::stderr().lock();
    // Write to the descriptor directly: the loop does its own buffering and
    // flushing, which std's line-buffered stdout would undo.
    let result = match raw_stdout() {
        Some(stdout) => event_loop::run(stdin, stdout, stderr, &options),
        None => event_loop::run(stdin, io::stdout().lock(), stderr, &options),
    };
    let summary = result.context("input/output error")?;
    if args.strict && summary.skipped > 0 {
        eprintln!(
            "leastconn: --strict: {} piece(s) of input could not be parsed",
            summary.skipped
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn raw_stdout() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = io::stdout().as_fd().try_clone_to_owned().ok()?;
    Some(std::fs::File::from(fd))
}

fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let bin = match args.bin {
        Some(bin) => bin,
        None => std::env::current_exe().context("cannot find this program to replay against")?,
    };
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("fixtures")]
    } else {
        args.paths
    };
    let cases = fixture::load_cases(&paths)?;
    if cases.is_empty() {
        bail!("no cases (NAME.in files) found under {paths:?}");
    }
    let tally = fixture::replay_all(&bin, &cases, args.timeout, &mut io::stdout().lock())?;
    Ok(if tally.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_simulate(args: Box<SimulateArgs>) -> anyhow::Result<ExitCode> {
    let file = match &args.scenario {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let scenario = file
        .overridden_by(args.settings.clone())
        .resolve()
        .map_err(|e| anyhow::anyhow!("simulate: {e}"))?;
    let outputs = sim::output::Outputs {
        json: args.json,
        svg: args.svg.as_deref(),
        transcript: args.transcript.as_deref(),
    };
    sim::output::run(&scenario, outputs, &mut io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Algorithm;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn no_arguments_is_the_node_with_defaults() {
        assert_eq!(
            parse(args(&[])).unwrap(),
            Command::Node(NodeArgs {
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                strict: false,
            })
        );
        assert_eq!(
            parse(args(&["--strict"])).unwrap(),
            Command::Node(NodeArgs {
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                strict: true,
            })
        );
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        for bad in ["", "0", "-5", "12Q", "1.5M", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(args(&["--max-message-size=1K"])).unwrap(),
            Command::Node(NodeArgs {
                max_message_size: 1024,
                strict: false,
            })
        );
    }

    #[test]
    fn replay_takes_paths_bin_and_timeout() {
        assert_eq!(
            parse(args(&["replay", "--bin", "x", "a", "--timeout=2.5", "b"])).unwrap(),
            Command::Replay(ReplayArgs {
                bin: Some("x".into()),
                timeout: Duration::from_millis(2500),
                paths: vec!["a".into(), "b".into()],
            })
        );
    }

    #[test]
    fn simulate_flags_become_settings() {
        let Command::Simulate(sim) = parse(args(&[
            "simulate",
            "--speeds=10,2.5,1",
            "--weights",
            "4,2,1",
            "--requests",
            "1e6",
            "--algorithms",
            "round-robin, random",
            "--sync",
            "0.5",
            "--json",
            "--svg",
            "out",
        ]))
        .unwrap() else {
            panic!("not simulate");
        };
        assert_eq!(sim.settings.speeds, Some(vec![10.0, 2.5, 1.0]));
        assert_eq!(sim.settings.weights, Some(vec![4, 2, 1]));
        assert_eq!(sim.settings.requests, Some(1_000_000));
        assert_eq!(
            sim.settings.algorithms,
            Some(vec![Algorithm::RoundRobin, Algorithm::Random])
        );
        assert_eq!(sim.settings.sync, Some(0.5));
        assert!(sim.json && sim.transcript.is_none());
        assert_eq!(sim.svg, Some(PathBuf::from("out")));
        assert_eq!(
            parse(args(&["simulate", "-h"])).unwrap(),
            Command::SimulateHelp
        );
        for bad in [
            &["simulate", "--json=yes"][..],
            &["simulate", "--requests", "1.5"],
            &["simulate", "--backends", "-1"],
            &["simulate", "--weights", "1,,2"],
            &["simulate", "--strict"],
            &["simulate", "extra"],
        ] {
            assert!(parse(args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_or_misplaced_flags_are_errors() {
        for bad in [
            &["--nope"][..],
            &["--bin", "x"],
            &["replay", "--max-message-size", "1K"],
            &["replay", "--strict"],
            &["--strict=yes"],
            &["--max-message-size"],
            &["stray"],
        ] {
            assert!(parse(args(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(parse(args(&["--help", "--nope"])).unwrap(), Command::Help);
    }
}
