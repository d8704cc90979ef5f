//! The command line: the arguments (declared with clap), their help, and
//! which command runs. Usage errors are returned like any other error, in
//! the words this program has always used; `main` reports them.

use crate::event_loop::{self, Options};
use crate::fixture;
use crate::sim::{self, Settings};
use anyhow::{anyhow, bail, Context};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Args, Parser, Subcommand};
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Every command's help: what it is and does (`before_help`: a command's
/// `about` is its line in the list of commands, and clap would show a long
/// description only in a sparser layout), how to run it, and its flags under
/// upper-case headings.
const TEMPLATE: &str = "{before-help}USAGE:\n    {usage}\n\n{all-args}\n";

/// The program's arguments: the node's flags, or a command.
#[derive(Debug, Parser)]
#[command(
    name = "leastconn",
    version,
    help_template = TEMPLATE,
    before_help = "\
leastconn: a least-connections load balancer, spoken to as a Maelstrom-style node

Reads JSON messages {\"src\",\"dest\",\"body\"} on standard input (one per
line, pretty-printed, or several per line), answers each on standard
output as one line of compact JSON, and reports input it cannot answer
on standard error with its line and column. It exits 0 when the input
ends, and quietly when standard output is closed.

Message types: init, http_request, request_complete, add_backend,
remove_backend, set_backend, stats. See README.md for the protocol.",
    override_usage = "\
leastconn [OPTIONS]                    run the node on stdin/stdout
    leastconn replay [OPTIONS] [PATH...]   replay fixture cases against the node
    leastconn simulate [OPTIONS]           simulate balancing in virtual time
    leastconn proxy [OPTIONS]              an HTTP reverse proxy over the engine",
    // `leastconn --strict replay` is a mistake, not a strict replay.
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    disable_help_flag = true,
    disable_version_flag = true,
    arg = help_flag(),
    arg = version_flag(),
    propagate_version = true,
    subcommand_help_heading = "COMMANDS",
    // A repeated flag takes its last value, as it always has.
    args_override_self = true
)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: Option<Subcommands>,
}

/// `-h, --help`, on every command (global). Clap's own says "Print help".
fn help_flag() -> clap::Arg {
    clap::Arg::new("help")
        .short('h')
        .long("help")
        .action(ArgAction::Help)
        .help("print this help")
        .help_heading("OTHER")
        .global(true)
}

/// `-V, --version`, on every command (global).
fn version_flag() -> clap::Arg {
    clap::Arg::new("version")
        .short('V')
        .long("version")
        .action(ArgAction::Version)
        .help("print the version")
        .help_heading("OTHER")
        .global(true)
}

#[derive(Debug, Subcommand)]
enum Subcommands {
    /// replay fixture cases against the node
    #[command(
        help_template = TEMPLATE,
        before_help = "\
leastconn replay: replays fixture cases against the node

Runs each case (NAME.in, NAME.out, optional NAME.case.json) under the
given files or directories [default: fixtures] and prints one line per
case, then `N passed, N failed`. Exits 1 if any case failed.",
    )]
    Replay(ReplayArgs),
    /// simulate balancing in virtual time (see `leastconn simulate --help`)
    #[command(
        help_template = TEMPLATE,
        before_help = "\
leastconn simulate: a discrete-event simulation of clients, balancers and
backends, with the node's own engine choosing every backend

Prints, for each algorithm, the mean time in system with its 95% confidence
interval over replications, percentiles, each backend's share of requests,
the spread of active connections (highest - lowest count over backends, seen
by each arrival) and rejected requests. Times are in units of a speed-1
backend's mean service time. Every setting may also come from a TOML
scenario file (keys as the flags, without the dashes); flags override it.
See docs/simulator.md for the model.",
        // `--sync -1` is a bad sync, not an unknown flag.
        allow_negative_numbers = true
    )]
    Simulate(Box<SimulateArgs>),
    /// an HTTP/1.1 reverse proxy: least connections for real traffic
    #[command(
        help_template = TEMPLATE,
        before_help = "\
leastconn proxy: an HTTP/1.1 reverse proxy in front of the given backends,
with the node's own engine choosing the backend of every request

Each request is counted on its backend from the moment it is chosen until
its response has been relayed (a WebSocket, for its whole life), so the
counts are requests in flight. A connection that fails before anything was
sent is retried on another backend; a backend that fails --max-fails times
within --fail-timeout is taken out for --fail-timeout, and with
--health-check one that fails --health-fall checks in a row until it
passes --health-rise; when every eligible backend is at its limit,
requests wait in a bounded queue. Every setting may also come from a TOML
file (--config; keys as the flags, backends as [[backend]] tables with
name, address, weight, max and health-* keys); flags override it.
It prints `listening on HOST:PORT` once it accepts connections, and stops
on SIGTERM or SIGINT, letting requests in flight finish within --grace.
On SIGHUP it reads --config again and applies its backends to the running
pool (removed ones drained first). With --admin, POST /messages there takes
the node's add_backend, remove_backend, set_backend and stats messages.
See README.md, \"The proxy\"."
    )]
    Proxy(Box<ProxyArgs>),
}

/// `leastconn proxy`'s flags: the settings, and the file they may come
/// from.
#[derive(Debug, Default, PartialEq, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub settings: crate::proxy::Settings,
    /// read settings from a TOML file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Node(NodeArgs),
    Replay(ReplayArgs),
    Simulate(Box<SimulateArgs>),
    Proxy(Box<ProxyArgs>),
}

/// The node's flags.
#[derive(Debug, PartialEq, Eq, Args)]
#[command(next_help_heading = "THE NODE")]
pub struct NodeArgs {
    /// skip (and report) any message larger than SIZE
    /// bytes; suffixes K, M, G (powers of 1024)
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    #[arg(verbatim_doc_comment)]
    pub max_message_size: usize,
    /// exit with status 1 if any input could not be
    /// parsed (not JSON, not UTF-8, not an envelope,
    /// over the size limit), for CI replays. Without
    /// it, bad input never changes the exit status.
    /// Error replies are normal traffic either way.
    #[arg(long, verbatim_doc_comment)]
    pub strict: bool,
    /// read every message with the precise parser
    /// only, not the one-pass read first: the same
    /// replies, more CPU (for measuring the one-pass
    /// read)
    #[arg(long, verbatim_doc_comment)]
    pub no_one_pass: bool,
}

/// `leastconn replay`'s flags.
#[derive(Debug, PartialEq, Eq, Args)]
#[command(next_help_heading = "REPLAY")]
pub struct ReplayArgs {
    /// the node to run [default: this program]
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// time allowed per case
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// case files or directories [default: fixtures]
    #[arg(value_name = "PATH", help_heading = "REPLAY")]
    pub paths: Vec<PathBuf>,
}

/// `leastconn simulate`'s flags: the model's settings and the outputs.
#[derive(Debug, Default, PartialEq, Args)]
pub struct SimulateArgs {
    /// The model's settings given as flags; they override the file's.
    #[command(flatten)]
    pub settings: Settings,
    /// read settings from a TOML file
    #[arg(long, value_name = "FILE", help_heading = "RUNNING")]
    pub scenario: Option<PathBuf>,
    /// one JSON document on standard output instead
    /// of the table
    #[arg(long, help_heading = "OUTPUT", verbatim_doc_comment)]
    pub json: bool,
    /// write DIR/latency-cdf.svg and, from the first
    /// replication, DIR/active-ALGORITHM.svg
    #[arg(
        long,
        value_name = "DIR",
        help_heading = "OUTPUT",
        verbatim_doc_comment
    )]
    pub svg: Option<PathBuf>,
    /// write the messages a real node would receive
    /// (one algorithm, one balancer, the first
    /// replication); `leastconn < FILE` makes the
    /// same picks
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "OUTPUT",
        verbatim_doc_comment
    )]
    pub transcript: Option<PathBuf>,
}

/// Parses the arguments after the program name. `--help` and `--version`
/// come back as errors of kind `DisplayHelp` and `DisplayVersion`, with the
/// text to print.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, clap::Error> {
    let cli = Cli::try_parse_from(std::iter::once(OsString::from("leastconn")).chain(args))?;
    Ok(match cli.command {
        None => Command::Node(cli.node),
        Some(Subcommands::Replay(args)) => Command::Replay(args),
        Some(Subcommands::Simulate(args)) => Command::Simulate(args),
        Some(Subcommands::Proxy(args)) => Command::Proxy(args),
    })
}

/// Runs the command line and says how the process should exit. Every
/// error, a usage error included, is returned for `main` to report.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> anyhow::Result<ExitCode> {
    let args: Vec<OsString> = args.into_iter().collect();
    let command = match parse(args.iter().cloned()) {
        Ok(command) => command,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            write!(io::stdout(), "{}", e.render())?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) if e.kind() == ErrorKind::DisplayVersion => {
            // The program's name even for `leastconn simulate -V`.
            writeln!(io::stdout(), "leastconn {}", env!("CARGO_PKG_VERSION"))?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(usage_error(&e, &args)),
    };
    match command {
        Command::Node(args) => run_node(args),
        Command::Replay(args) => run_replay(args),
        Command::Simulate(args) => run_simulate(args),
        Command::Proxy(args) => run_proxy(args),
    }
}

/// A usage error in this program's words: the flag, then what is wrong
/// with it.
fn usage_error(e: &clap::Error, args: &[OsString]) -> anyhow::Error {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.as_str()),
        Some(ContextValue::Strings(v)) => v.first().map(String::as_str),
        _ => None,
    };
    // Clap names a flag with its value's name, as in `--requests <M>`.
    let flag = context(ContextKind::InvalidArg)
        .map(|arg| arg.split_once(' ').map_or(arg, |(flag, _)| flag).to_owned());
    let value = context(ContextKind::InvalidValue);
    let help = match args.first().and_then(|a| a.to_str()) {
        Some(sub @ ("replay" | "simulate")) => format!("leastconn {sub} --help"),
        _ => "leastconn --help".to_owned(),
    };
    match (e.kind(), flag, value) {
        (ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand, Some(arg), _) => {
            anyhow!("unknown argument {arg:?}; see `{help}`")
        }
        (ErrorKind::InvalidSubcommand, None, _) => match context(ContextKind::InvalidSubcommand) {
            Some(arg) => anyhow!("unknown argument {arg:?}; see `{help}`"),
            None => anyhow!("{}; see `{help}`", clap_message(e)),
        },
        (ErrorKind::InvalidValue, Some(flag), Some("")) => anyhow!("{flag} needs a value"),
        (ErrorKind::TooManyValues, Some(flag), Some(value)) => {
            anyhow!("{flag} takes no value, not {value:?}; see `{help}`")
        }
        (ErrorKind::ValueValidation, Some(flag), _) => match std::error::Error::source(e) {
            Some(reason) => anyhow!("{flag}: {reason}"),
            None => anyhow!("{flag}: {:?} is not valid", value.unwrap_or_default()),
        },
        _ => anyhow!("{}; see `{help}`", clap_message(e)),
    }
}

/// Clap's own one-line description of an error.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
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
        _ => bail!("{text:?} is not a size like 65536, 64K or 64M"),
    };
    let n: usize = number
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| format!("{text:?} is not a positive size"))?;
    n.checked_mul(1 << shift)
        .with_context(|| format!("{text:?} is too large"))
}

/// Parses a positive number of seconds, such as `2.5`.
fn parse_seconds(text: &str) -> anyhow::Result<Duration> {
    let secs: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .with_context(|| format!("{text:?} is not a positive number of seconds"))?;
    Duration::try_from_secs_f64(secs).with_context(|| format!("{text:?} is too long"))
}

fn run_node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let options = Options {
        max_message_size: args.max_message_size,
        one_pass: !args.no_one_pass,
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

fn run_proxy(args: Box<ProxyArgs>) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => crate::proxy::Settings::from_file(path)?,
        None => crate::proxy::Settings::default(),
    };
    let source = args
        .config
        .clone()
        .map(|path| crate::proxy::config::Source {
            path,
            flags: args.settings.clone(),
        });
    let config = file
        .overridden_by(args.settings)
        .resolve()
        .context("proxy")?;
    crate::proxy::run(config, source)?;
    Ok(ExitCode::SUCCESS)
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
mod tests;
