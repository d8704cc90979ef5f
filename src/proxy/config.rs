//! The proxy's settings: from flags and from a TOML file (`--config`),
//! flags winning, checked into a [`Config`].
//!
//! Each setting is declared once, in [`Settings`]: its doc comment is its
//! flag's help, its name the flag and the file's key. The health checks'
//! settings, of the pool and of each backend, resolve in `health`.

use crate::engine::{Algorithm, TieBreak, DEFAULT_SEED};
use crate::layers::settings;
use anyhow::{anyhow, bail, Context};
use health::{HealthLayer, Layer};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod health;

pub use health::{HealthCheck, StatusSet};

settings! {
/// One layer of settings, each optional: the file is one layer, the flags
/// another.
#[derive(Clone, Debug, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
// The help shows optional parts in brackets (`[NAME=]`), not links.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct Settings {
    /// where clients connect, HOST:PORT [default: 127.0.0.1:8080]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// a backend: [NAME=]HOST:PORT[,weight=W][,max=N][,health-...=V];
    /// repeat for each. Without a name, its address is its name. weight is
    /// its relative capacity (default 1; 0 drains it), max its connection
    /// limit; health-check=on|off, health-path, health-interval,
    /// health-timeout, health-status (one code or range), health-rise and
    /// health-fall override the --health-* settings for this backend
    #[arg(long = "backend", value_name = "SPEC", value_parser = BackendSpec::parse)]
    #[serde(rename = "backend")]
    pub backends: Option<Vec<BackendSpec>>,
    /// where GET /stats and the admin API (POST /messages: the node's
    /// add_backend, remove_backend, set_backend and stats) answer,
    /// HOST:PORT [default: none]; bind it to loopback: it changes the pool
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// least-connections, round-robin, random, power-of-two-choices
    /// [default: least-connections]
    #[arg(long, value_name = "A")]
    pub algorithm: Option<Algorithm>,
    /// among equally loaded backends: round-robin, lowest-index, random
    /// [default: round-robin, as NGINX and HAProxy rotate]
    #[arg(long, value_name = "T")]
    pub tie_break: Option<TieBreak>,
    /// seeds every random choice [default: fixed]
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// worker threads [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// other backends a request may be sent to after a connection to one
    /// fails before any response byte, while its body is untouched
    /// [default: 2]
    #[arg(long, value_name = "N")]
    pub retries: Option<usize>,
    /// failures within --fail-timeout that take a backend out for
    /// --fail-timeout (NGINX's max_fails); 0 never takes one out
    /// [default: 1]
    #[arg(long, value_name = "N")]
    pub max_fails: Option<u32>,
    /// the window for --max-fails, and how long a backend stays out
    /// [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub fail_timeout: Option<Duration>,
    /// count 5xx responses as failures too (by default only connection
    /// errors and timeouts count: a backend that answers 5xx at once would
    /// otherwise look idle and attract every request)
    #[arg(long, num_args = 0, default_missing_value = "true")]
    #[serde(default, deserialize_with = "flag")]
    pub fail_on_5xx: Option<bool>,
    /// check each backend actively: GET --health-path every
    /// --health-interval, on a connection of its own (HAProxy's `check`)
    /// [default: off; on when --health-interval is given]
    #[arg(long, num_args = 0, default_missing_value = "true")]
    #[serde(default, deserialize_with = "flag")]
    pub health_check: Option<bool>,
    /// the path a check asks for, with Host set to the backend's address
    /// [default: /health]
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// time from the start of one check of a backend to the next
    /// [default: 2s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub health_interval: Option<Duration>,
    /// time a check has to connect and get a response header; shorter than
    /// the interval [default: 1s, or half the interval if that is less]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub health_timeout: Option<Duration>,
    /// the statuses a passing check answers with: codes and ranges, as
    /// 200-299,301 [default: 200-399]
    #[arg(long, value_name = "CODES", value_parser = StatusSet::parse)]
    pub health_status: Option<StatusSet>,
    /// consecutive passing checks that bring back a backend its checks
    /// took out [default: 2]
    #[arg(long, value_name = "N")]
    pub health_rise: Option<u32>,
    /// consecutive failing checks that take a backend out [default: 3]
    #[arg(long, value_name = "N")]
    pub health_fall: Option<u32>,
    /// a backend that comes back into the pool (its checks pass again, its
    /// passive time is over, an operator marks it up or undrains it) or is
    /// added at run time has its weight
    /// ramped from 5% to the whole over this time, in 20 steps, so that it
    /// does not take every new request at once (HAProxy's slowstart)
    /// [default: 0s, off]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub slow_start: Option<Duration>,
    /// requests that may wait when every eligible backend is at its
    /// connection limit (HAProxy's queue); more get 503 [default: 256]
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,
    /// how long a request may wait in the queue before a 503 [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub queue_timeout: Option<Duration>,
    /// time allowed to connect to a backend [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<Duration>,
    /// time allowed for a backend's response header after the request went
    /// out (while its body uploads, after the body last moved, not counting
    /// waits for the client to send more); then 504;
    /// and for each next piece of its body; then the response is cut
    /// [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub response_timeout: Option<Duration>,
    /// time allowed for a client's request header, and for the next one
    /// on an idle keep-alive connection [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub header_timeout: Option<Duration>,
    /// a client connection with nothing read or written for this long is
    /// closed [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// how long a kept-alive connection to a backend may stay idle before
    /// the proxy closes it (NGINX's upstream keepalive_timeout)
    /// [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub backend_idle_timeout: Option<Duration>,
    /// on SIGTERM or SIGINT, how long requests in flight may take to
    /// finish; also how long a backend removed at run time is drained
    /// before it goes anyway [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub grace: Option<Duration>,
    /// log level: error, warn, info, debug, trace (RUST_LOG overrides)
    /// [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
    /// a log line per request, at info
    #[arg(long, num_args = 0, default_missing_value = "true")]
    #[serde(default, deserialize_with = "flag")]
    pub access_log: Option<bool>,
    /// write every decision of the engine to FILE.in, as the node's
    /// messages (the pool's init, each pick, completion and change), and
    /// the proxy's own answers to FILE.out: `leastconn replay FILE.in`
    /// checks that the node makes exactly the same decisions
    #[arg(long, value_name = "FILE.in")]
    pub record: Option<PathBuf>,
}
}

/// A backend as the command line or the file gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Its name; its address when not given.
    pub name: Option<String>,
    pub address: String,
    pub weight: Option<u64>,
    pub max: Option<u64>,
    /// Its own health-check settings, over the pool's.
    #[serde(default, rename = "health-check")]
    pub health_check: Option<bool>,
    #[serde(default, rename = "health-path")]
    pub health_path: Option<String>,
    #[serde(default, rename = "health-interval", deserialize_with = "duration")]
    pub health_interval: Option<Duration>,
    #[serde(default, rename = "health-timeout", deserialize_with = "duration")]
    pub health_timeout: Option<Duration>,
    #[serde(default, rename = "health-status")]
    pub health_status: Option<StatusSet>,
    #[serde(default, rename = "health-rise")]
    pub health_rise: Option<u32>,
    #[serde(default, rename = "health-fall")]
    pub health_fall: Option<u32>,
}

impl BackendSpec {
    /// Parses `[NAME=]HOST:PORT[,weight=W][,max=N][,health-KEY=VALUE]`.
    pub fn parse(text: &str) -> Result<BackendSpec, String> {
        let mut parts = text.split(',');
        let target = parts.next().unwrap_or_default().trim();
        let (name, address) = match target.split_once('=') {
            Some((name, address)) => (Some(name.trim().to_owned()), address.trim()),
            None => (None, target),
        };
        if address.is_empty() || !address.contains(':') {
            return Err(format!(
                "{text:?}: expected [NAME=]HOST:PORT[,weight=W][,max=N]"
            ));
        }
        let mut spec = BackendSpec {
            name,
            address: address.to_owned(),
            ..BackendSpec::default()
        };
        for option in parts {
            let Some((key, value)) = option.split_once('=') else {
                let status = if text.contains("health-status=") {
                    "; here health-status is one code or range (commas part the options): \
                     give a list in the file or as --health-status"
                } else {
                    ""
                };
                return Err(format!("{text:?}: {option:?} is not KEY=VALUE{status}"));
            };
            let (key, value) = (key.trim(), value.trim());
            let number = || -> Result<u64, String> {
                value
                    .parse()
                    .map_err(|_| format!("{text:?}: {key} must be a whole number"))
            };
            let small = || -> Result<u32, String> {
                value
                    .parse()
                    .map_err(|_| format!("{text:?}: {key} must be a whole number"))
            };
            let time = || parse_duration(value).map_err(|e| format!("{text:?}: {key}: {e}"));
            match key {
                "weight" => spec.weight = Some(number()?),
                "max" => spec.max = Some(number()?),
                "health-check" => {
                    spec.health_check = Some(match value {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => return Err(format!("{text:?}: health-check is on or off")),
                    })
                }
                "health-path" => spec.health_path = Some(value.to_owned()),
                "health-interval" => spec.health_interval = Some(time()?),
                "health-timeout" => spec.health_timeout = Some(time()?),
                "health-status" => {
                    spec.health_status =
                        Some(StatusSet::parse(value).map_err(|e| format!("{text:?}: {key}: {e}"))?)
                }
                "health-rise" => spec.health_rise = Some(small()?),
                "health-fall" => spec.health_fall = Some(small()?),
                other => {
                    return Err(format!(
                        "{text:?}: unknown option {other:?}; weight, max, health-check, \
                         health-path, health-interval, health-timeout, health-status, \
                         health-rise or health-fall"
                    ))
                }
            }
        }
        Ok(spec)
    }

    /// Its health-check settings, as a layer over the pool's.
    fn health(&self) -> HealthLayer {
        HealthLayer {
            check: self.health_check,
            path: self.health_path.clone(),
            interval: self.health_interval,
            timeout: self.health_timeout,
            status: self.health_status.clone(),
            rise: self.health_rise,
            fall: self.health_fall,
        }
    }
}

/// `5s`, `250ms`, `2m` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s, 250ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit is ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Seconds(s) => format!("{s}"),
        Raw::Text(t) => t,
    };
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some)
}

impl Settings {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow!("config {}: {e}", path.display()))
    }

    /// This layer with `over`'s settings taking precedence (backends given
    /// as flags replace the file's list).
    pub fn overridden_by(mut self, over: Settings) -> Settings {
        self.take_given(over);
        self
    }

    /// Checks the settings and fills in the defaults.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let listen = resolve_address(
            "--listen",
            self.listen.as_deref().unwrap_or("127.0.0.1:8080"),
        )?;
        let admin = self
            .admin
            .as_deref()
            .map(|a| resolve_address("--admin", a))
            .transpose()?;
        let specs = self.backends.unwrap_or_default();
        if specs.is_empty() {
            bail!("give at least one --backend HOST:PORT");
        }
        let health = HealthLayer {
            check: self.health_check,
            path: self.health_path,
            interval: self.health_interval,
            timeout: self.health_timeout,
            status: self.health_status,
            rise: self.health_rise,
            fall: self.health_fall,
        };
        health.check_values(Layer::Pool)?;
        let mut backends: Vec<Backend> = Vec::with_capacity(specs.len());
        for spec in specs {
            let address = resolve_address("--backend", &spec.address)?;
            let name = spec.name.clone().unwrap_or_else(|| spec.address.clone());
            if name.is_empty() {
                bail!("--backend {:?}: the name is empty", spec.address);
            }
            if backends.iter().any(|b| b.name == name) {
                bail!("--backend: {name:?} is named twice");
            }
            let health = spec.health().resolve(&health, &name)?;
            backends.push(Backend {
                name,
                address,
                weight: spec.weight.unwrap_or(1),
                max_connections: spec.max.filter(|&m| m > 0),
                health,
            });
        }
        if backends.iter().all(|b| b.health.is_none()) {
            let off = health.enabled() == Some(false);
            if let Some(key) = health.first_given().filter(|_| !off) {
                bail!("--{key} is given but no backend is checked: add --health-check");
            }
        }
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        let record = self.record.map(|path| Record::new(&path)).transpose()?;
        Ok(Config {
            listen,
            admin,
            backends,
            health,
            algorithm: self.algorithm.unwrap_or_default(),
            tie_break: self.tie_break.unwrap_or(TieBreak::RoundRobin),
            seed: self.seed.unwrap_or(DEFAULT_SEED),
            threads,
            retries: self.retries.unwrap_or(2),
            max_fails: self.max_fails.unwrap_or(1),
            fail_timeout: self.fail_timeout.unwrap_or(Duration::from_secs(10)),
            fail_on_5xx: self.fail_on_5xx.unwrap_or(false),
            queue: self.queue.unwrap_or(256),
            queue_timeout: self.queue_timeout.unwrap_or(Duration::from_secs(5)),
            connect_timeout: self.connect_timeout.unwrap_or(Duration::from_secs(5)),
            response_timeout: self.response_timeout.unwrap_or(Duration::from_secs(60)),
            header_timeout: self.header_timeout.unwrap_or(Duration::from_secs(10)),
            idle_timeout: self.idle_timeout.unwrap_or(Duration::from_secs(60)),
            backend_idle_timeout: self.backend_idle_timeout.unwrap_or(Duration::from_secs(60)),
            grace: self.grace.unwrap_or(Duration::from_secs(30)),
            log: self.log.unwrap_or_else(|| "info".into()),
            access_log: self.access_log.unwrap_or(false),
            slow_start: self.slow_start.unwrap_or(Duration::ZERO),
            record,
        })
    }
}

impl Config {
    /// The checks of a backend named `name` added at run time, which has
    /// no settings of its own: the pool's, if they turn checks on.
    pub fn checks_for_added(&self, name: &str) -> anyhow::Result<Option<HealthCheck>> {
        HealthLayer::default().resolve(&self.health, name)
    }

    /// The settings a reload cannot change that `new` changes, by their
    /// flags. Every setting but the backends and the pool's health checks
    /// (which apply to backends added later) is one: the pattern is
    /// exhaustive, so that a new setting must be placed.
    pub fn fixed_changes(&self, new: &Config) -> Vec<&'static str> {
        let old = self;
        let Config {
            listen,
            admin,
            backends: _,
            health: _,
            algorithm,
            tie_break,
            seed,
            threads,
            retries,
            max_fails,
            fail_timeout,
            fail_on_5xx,
            queue,
            queue_timeout,
            connect_timeout,
            response_timeout,
            header_timeout,
            idle_timeout,
            backend_idle_timeout,
            grace,
            log,
            access_log,
            slow_start,
            record,
        } = new;
        [
            (old.listen != *listen, "listen"),
            (old.admin != *admin, "admin"),
            (old.algorithm != *algorithm, "algorithm"),
            (old.tie_break != *tie_break, "tie-break"),
            (old.seed != *seed, "seed"),
            (old.threads != *threads, "threads"),
            (old.retries != *retries, "retries"),
            (old.max_fails != *max_fails, "max-fails"),
            (old.fail_timeout != *fail_timeout, "fail-timeout"),
            (old.fail_on_5xx != *fail_on_5xx, "fail-on-5xx"),
            (old.queue != *queue, "queue"),
            (old.queue_timeout != *queue_timeout, "queue-timeout"),
            (old.connect_timeout != *connect_timeout, "connect-timeout"),
            (
                old.response_timeout != *response_timeout,
                "response-timeout",
            ),
            (old.header_timeout != *header_timeout, "header-timeout"),
            (old.idle_timeout != *idle_timeout, "idle-timeout"),
            (
                old.backend_idle_timeout != *backend_idle_timeout,
                "backend-idle-timeout",
            ),
            (old.grace != *grace, "grace"),
            (old.log != *log, "log"),
            (old.access_log != *access_log, "access-log"),
            (old.slow_start != *slow_start, "slow-start"),
            (old.record != *record, "record"),
        ]
        .into_iter()
        .filter_map(|(changed, name)| changed.then_some(name))
        .collect()
    }
}

/// Where the settings came from, to read them again on SIGHUP: the file,
/// and the flags that override it.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: std::path::PathBuf,
    pub flags: Settings,
}

impl Source {
    /// Reads the file again and layers the flags over it, as at start.
    pub fn load(&self) -> anyhow::Result<Config> {
        Settings::from_file(&self.path)?
            .overridden_by(self.flags.clone())
            .resolve()
    }
}

/// `HOST:PORT` to one socket address (the first the name resolves to).
fn resolve_address(flag: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("{flag} {text:?}: not a HOST:PORT that resolves"))?
        .next()
        .ok_or_else(|| anyhow!("{flag} {text:?}: resolves to no address"))
}

/// A backend, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u64,
    pub max_connections: Option<u64>,
    /// Its active checks, if it is checked.
    pub health: Option<HealthCheck>,
}

/// Every setting, checked and with its default.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub backends: Vec<Backend>,
    /// The pool's health-check settings, for backends added at run time.
    health: HealthLayer,
    pub algorithm: Algorithm,
    pub tie_break: TieBreak,
    pub seed: u64,
    pub threads: usize,
    pub retries: usize,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub fail_on_5xx: bool,
    pub queue: usize,
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub backend_idle_timeout: Duration,
    pub grace: Duration,
    pub log: String,
    pub access_log: bool,
    /// Zero for none.
    pub slow_start: Duration,
    pub record: Option<Record>,
}

/// Where `--record` writes: the node's input, and the proxy's answers in
/// the node's replies, as a fixture case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `NAME.in`.
    pub input: PathBuf,
    /// `NAME.out`, beside it.
    pub output: PathBuf,
}

impl Record {
    fn new(path: &Path) -> anyhow::Result<Record> {
        if path.extension().and_then(|e| e.to_str()) != Some("in") {
            bail!(
                "--record {}: the name must end in .in (the proxy's own answers go beside it, in NAME.out, so that `leastconn replay` checks the pair)",
                path.display()
            );
        }
        Ok(Record {
            input: path.to_owned(),
            output: path.with_extension("out"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_each_setting_it_cannot_change_and_no_other() {
        let on = |address: &str| Settings {
            backends: Some(vec![BackendSpec::parse(address).expect("a backend")]),
            ..Settings::default()
        };
        let before = on("127.0.0.1:9001").resolve().expect("valid");
        assert_eq!(before.fixed_changes(&before), Vec::<&str>::new());
        // The backends may change.
        let moved = on("127.0.0.1:9002").resolve().expect("valid");
        assert_eq!(before.fixed_changes(&moved), Vec::<&str>::new());
        let after = Settings {
            listen: Some("127.0.0.1:8090".into()),
            slow_start: Some(Duration::from_secs(10)),
            backend_idle_timeout: Some(Duration::from_secs(5)),
            ..on("127.0.0.1:9001")
        }
        .resolve()
        .expect("valid");
        assert_eq!(
            before.fixed_changes(&after),
            ["listen", "backend-idle-timeout", "slow-start"]
        );
    }

    #[test]
    fn backend_specs_take_a_name_a_weight_and_a_limit() {
        assert_eq!(
            BackendSpec::parse("api-1=127.0.0.1:9001,weight=2,max=100"),
            Ok(BackendSpec {
                name: Some("api-1".into()),
                address: "127.0.0.1:9001".into(),
                weight: Some(2),
                max: Some(100),
                ..BackendSpec::default()
            })
        );
        assert_eq!(
            BackendSpec::parse("127.0.0.1:9002").map(|s| (s.name, s.weight)),
            Ok((None, None))
        );
        for bad in [
            "",
            "api",
            "a=127.0.0.1:1,weight=x",
            "127.0.0.1:1,colour=2",
            "127.0.0.1:1,max",
        ] {
            assert!(BackendSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "5h", "x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_is_read_and_flags_override_it() {
        let file: Settings = toml::from_str(
            r#"
            listen = "127.0.0.1:8081"
            algorithm = "round-robin"
            queue-timeout = "250ms"
            connect-timeout = 2
            fail-on-5xx = true

            [[backend]]
            name = "api-1"
            address = "127.0.0.1:9001"
            weight = 4
            max = 100

            [[backend]]
            address = "127.0.0.1:9002"
            "#,
        )
        .expect("valid TOML");
        let flags = Settings {
            algorithm: Some(Algorithm::LeastConnections),
            ..Settings::default()
        };
        let config = file.overridden_by(flags).resolve().expect("valid");
        assert_eq!(config.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(config.algorithm, Algorithm::LeastConnections);
        assert_eq!(config.tie_break, TieBreak::RoundRobin);
        assert_eq!(config.queue_timeout, Duration::from_millis(250));
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        assert!(config.fail_on_5xx);
        assert_eq!(config.backends.len(), 2);
        assert_eq!(config.backends[0].name, "api-1");
        assert_eq!(config.backends[0].max_connections, Some(100));
        assert_eq!(config.backends[1].name, "127.0.0.1:9002");
        assert!(toml::from_str::<Settings>("colour = 1").is_err());
        let err = Settings::default().resolve().unwrap_err().to_string();
        assert!(err.contains("at least one --backend"), "{err}");
    }
}

#[cfg(test)]
mod example {
    use super::*;

    #[test]
    fn the_documented_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/proxy.toml");
        let config = Settings::from_file(&path)
            .expect("docs/proxy.toml reads")
            .resolve()
            .expect("docs/proxy.toml is valid");
        let weights: Vec<u64> = config.backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [4, 2, 1]);
        assert_eq!(config.max_fails, 3);
        assert_eq!(config.queue_timeout, Duration::from_secs(5));
        assert_eq!(config.slow_start, Duration::from_secs(30));
        assert_eq!(config.backend_idle_timeout, Duration::from_secs(60));
        // HAProxy's `check inter 3s fall 3 rise 2`, on every server.
        let article = HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(3),
            timeout: Duration::from_secs(1),
            statuses: StatusSet::parse("200").expect("a status"),
            rise: 2,
            fall: 3,
        };
        for backend in &config.backends {
            assert_eq!(backend.health.as_ref(), Some(&article), "{}", backend.name);
        }
    }
}
