//! The command line: argument parsing, help, and running the chosen command.

use crate::event_loop::{self, Options};
use crate::fixture;
use crate::framing::DEFAULT_MAX_MESSAGE_SIZE;
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

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Node(NodeArgs),
    Replay(ReplayArgs),
    Help,
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

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> anyhow::Result<Command> {
    let mut args = args.into_iter().peekable();
    let replay = args.peek().is_some_and(|a| a == "replay");
    if replay {
        args.next();
    }
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
        let text = arg
            .to_str()
            .with_context(|| format!("argument {arg:?} is not valid UTF-8"))?
            .to_owned();
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (text.clone(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--max-message-size" if !replay => node.max_message_size = parse_size(&value()?)?,
            "--strict" if !replay && inline.is_none() => node.strict = true,
            "--bin" if replay => rep.bin = Some(PathBuf::from(value()?)),
            "--timeout" if replay => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .with_context(|| {
                        format!("--timeout: {v:?} is not a positive number of seconds")
                    })?;
                rep.timeout = Duration::from_secs_f64(secs);
            }
            _ if replay && !text.starts_with('-') => rep.paths.push(PathBuf::from(text)),
            _ => bail!("unknown argument {text:?}; see `leastconn --help`"),
        }
    }
    Ok(if replay {
        Command::Replay(rep)
    } else {
        Command::Node(node)
    })
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

/// Runs the command line and says how the process should exit.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> anyhow::Result<ExitCode> {
    match parse(args) {
        Ok(Command::Help) => {
            io::stdout().write_all(HELP.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(Command::Version) => {
            writeln!(io::stdout(), "leastconn {}", env!("CARGO_PKG_VERSION"))?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(Command::Node(args)) => run_node(args),
        Ok(Command::Replay(args)) => run_replay(args),
        Err(e) => {
            eprintln!("leastconn: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

fn run_node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let options = Options {
        max_message_size: args.max_message_size,
    };
    let stdin = io::stdin().lock();
    let stderr = io::stderr().lock();
    // Write to the descriptor directly: the loop does its own buffering and
    // flushing, which std's line-buffered stdout would undo.
    let result = match raw_stdout() {
        Some(stdout) => event_loop::run(stdin, stdout, stderr, &options),
        None => event_loop::run(stdin, io::stdout().lock(), stderr, &options),
    };
    match result {
        Ok(summary) if args.strict && summary.skipped > 0 => {
            eprintln!(
                "leastconn: --strict: {} piece(s) of input could not be parsed",
                summary.skipped
            );
            Ok(ExitCode::from(1))
        }
        Ok(_) => Ok(ExitCode::SUCCESS),
        // The reader went away: nothing more can be said to anyone.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("input/output error"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
