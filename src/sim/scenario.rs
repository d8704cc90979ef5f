//! The model's parameters: partial [`Settings`] from a TOML file and from
//! flags (declared in [`settings`](super::settings)), merged (flags win)
//! and checked into a [`Scenario`].

use super::dist::{Arrivals, Service};
pub use super::settings::Settings;
use crate::engine::{Algorithm, TieBreak, DEFAULT_SEED};
use crate::names::named_enum;
use std::fmt;

named_enum! {
    /// How a backend serves the requests it holds.
    pub enum Discipline("discipline") {
        /// One request at a time, the rest wait in order (classic queueing).
        Fifo = "fifo",
        /// All at once, sharing the backend's speed equally (a web server
        /// serving its connections concurrently).
        Ps = "ps",
        /// Each request takes its own time whatever the load (an infinite
        /// server).
        Delay = "delay",
    }
}

impl Settings {
    /// Checks the settings and fills in the defaults.
    pub fn resolve(self) -> Result<Scenario, String> {
        let speeds = match (self.backends, self.speeds) {
            (Some(_), Some(_)) => return Err("give backends or speeds, not both".into()),
            (None, Some(speeds)) => speeds,
            (Some(n), None) => vec![
                1.0;
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(MAX_BACKENDS + 1)
            ],
            (None, None) => vec![1.0; DEFAULT_BACKENDS],
        };
        if speeds.is_empty() || speeds.len() > MAX_BACKENDS {
            return Err(format!("between 1 and {MAX_BACKENDS} backends, please"));
        }
        if let Some(bad) = speeds.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("speeds must be positive numbers, not {bad}"));
        }
        let weights = self.weights.unwrap_or_else(|| vec![1; speeds.len()]);
        if weights.len() != speeds.len() {
            return Err(format!(
                "{} weights for {} backends",
                weights.len(),
                speeds.len()
            ));
        }
        if weights.iter().all(|&w| w == 0) {
            return Err("at least one weight must be above 0".into());
        }
        let discipline = self.discipline.unwrap_or(Discipline::Fifo);
        let service = self.service.unwrap_or(Service::Exp);
        let arrivals = self.arrivals.unwrap_or(Arrivals::Poisson);
        let capacity: f64 = speeds.iter().sum();
        let positive = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(format!("{what} must be a positive number, not {v}"))
            }
        };
        let rate = match (self.load, self.rate) {
            (Some(_), Some(_)) => return Err("give load or rate, not both".into()),
            (Some(load), None) => positive("load", load)? * capacity,
            (None, Some(rate)) => positive("rate", rate)?,
            (None, None) => DEFAULT_LOAD * capacity,
        };
        let burst = self.burst.unwrap_or(1);
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        let algorithms = match self.algorithms {
            None => vec![
                Algorithm::LeastConnections,
                Algorithm::RoundRobin,
                Algorithm::Random,
                Algorithm::PowerOfTwoChoices,
            ],
            Some(asked) => {
                // Each once, in the order first asked.
                let mut list = Vec::new();
                for a in asked {
                    if !list.contains(&a) {
                        list.push(a);
                    }
                }
                if list.is_empty() {
                    return Err("name at least one algorithm".into());
                }
                list
            }
        };
        let tie_break = self.tie_break.unwrap_or_default();
        let balancers = self.balancers.unwrap_or(1);
        if !(1..=MAX_BALANCERS).contains(&balancers) {
            return Err(format!("between 1 and {MAX_BALANCERS} balancers, please"));
        }
        let sync = self.sync.unwrap_or(0.0);
        if !(sync.is_finite() && sync >= 0.0) {
            return Err(format!("sync must be 0 or a positive number, not {sync}"));
        }
        let requests = self.requests.unwrap_or(DEFAULT_REQUESTS);
        if requests == 0 {
            return Err("requests must be at least 1".into());
        }
        let warmup = self.warmup.unwrap_or(0.1);
        if !(0.0..1.0).contains(&warmup) {
            return Err(format!("warmup is a fraction from 0 up to 1, not {warmup}"));
        }
        let replications = self.replications.unwrap_or(5);
        if !(1..=10_000).contains(&replications) {
            return Err("between 1 and 10000 replications, please".into());
        }
        if self.max_connections == Some(0) {
            return Err("max-connections must be at least 1".into());
        }
        Ok(Scenario {
            speeds,
            weights,
            max_connections: self.max_connections,
            discipline,
            service,
            arrivals,
            rate,
            burst,
            algorithms,
            tie_break,
            balancers: balancers as usize,
            sync,
            requests,
            warmup,
            replications: replications as u32,
            seed: self.seed.unwrap_or(DEFAULT_SEED),
        })
    }
}

const DEFAULT_BACKENDS: usize = 10;
const DEFAULT_LOAD: f64 = 0.9;
const DEFAULT_REQUESTS: u64 = 100_000;
/// Bounds that keep a typo from asking for terabytes.
const MAX_BACKENDS: usize = 1 << 20;
const MAX_BALANCERS: u64 = 1024;

/// A checked, complete description of what to simulate. It serializes as
/// the JSON report's `scenario`, which adds the figures derived from it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Scenario {
    /// One per backend, in pool order: requests per unit of time it serves
    /// alone.
    pub speeds: Vec<f64>,
    /// One per backend: the balancer's weights.
    pub weights: Vec<u64>,
    /// The same limit on every backend.
    pub max_connections: Option<u64>,
    pub discipline: Discipline,
    pub service: Service,
    pub arrivals: Arrivals,
    /// Requests per unit of time, over all balancers.
    pub rate: f64,
    /// Requests arriving together at each arrival instant.
    pub burst: u64,
    pub algorithms: Vec<Algorithm>,
    pub tie_break: TieBreak,
    pub balancers: usize,
    /// Time between a balancer's updates of its peers' counts; 0 for exact.
    pub sync: f64,
    pub requests: u64,
    /// The fraction of requests, from the start, left out of every figure.
    pub warmup: f64,
    pub replications: u32,
    pub seed: u64,
}

impl Scenario {
    /// The arrival rate as a fraction of the backends' total speed.
    pub fn load(&self) -> f64 {
        self.rate / self.speeds.iter().sum::<f64>()
    }

    /// Requests left out of the figures as warm-up.
    pub fn warmup_requests(&self) -> u64 {
        (self.requests as f64 * self.warmup) as u64
    }

    /// The backends' names, in pool order: `b1`, `b2`, …
    pub fn backend_names(&self) -> Vec<String> {
        (1..=self.speeds.len()).map(|i| format!("b{i}")).collect()
    }
}

impl fmt::Display for Scenario {
    /// One paragraph for the top of the table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.speeds.len();
        let first = self.speeds[0];
        if self.speeds.iter().all(|&s| s == first) {
            write!(f, "{n} backends of speed {first}")?;
        } else {
            write!(f, "{n} backends, speeds {}", list(&self.speeds))?;
        }
        if self.weights.iter().any(|&w| w != 1) {
            write!(f, ", weights {}", list(&self.weights))?;
        }
        if let Some(limit) = self.max_connections {
            write!(f, ", at most {limit} connections each")?;
        }
        write!(
            f,
            "; {} discipline, {} service; {} arrivals at rate {} (load {})",
            self.discipline.name(),
            self.service,
            self.arrivals.name(),
            short(self.rate),
            short(self.load())
        )?;
        if self.burst > 1 {
            write!(f, " in bursts of {}", self.burst)?;
        }
        if self.balancers > 1 {
            write!(f, "; {} balancers", self.balancers)?;
            if self.sync > 0.0 {
                write!(f, " syncing every {}", self.sync)?;
            } else {
                f.write_str(" sharing exact counts")?;
            }
        }
        write!(
            f,
            "; tie-break {}; {} requests ({} warm-up), {} replication(s), seed {}",
            self.tie_break.name(),
            self.requests,
            self.warmup_requests(),
            self.replications,
            self.seed
        )
    }
}

/// A number with at most six decimals and no trailing zeros.
fn short(v: f64) -> String {
    let text = format!("{v:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn list<T: fmt::Display>(values: &[T]) -> String {
    const SHOWN: usize = 8;
    let mut text: Vec<String> = values.iter().take(SHOWN).map(|v| v.to_string()).collect();
    if values.len() > SHOWN {
        text.push("…".into());
    }
    text.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_an_empty_scenario() {
        let s = Settings::default().resolve().unwrap();
        assert_eq!(s.speeds, vec![1.0; 10]);
        assert_eq!(s.algorithms.len(), 4);
        assert_eq!((s.rate, s.load()), (9.0, 0.9));
        assert_eq!((s.requests, s.warmup_requests()), (100_000, 10_000));
        assert_eq!(s.backend_names()[9], "b10");
    }

    #[test]
    fn a_file_is_read_and_flags_override_it() {
        let file = Settings::from_toml(
            r#"
            speeds = [10, 2.5, 1]
            discipline = "delay"
            load = 0.5
            algorithms = ["round-robin"]
            tie-break = "random"
            seed = 7
            "#,
        )
        .unwrap();
        let flags = Settings {
            rate: Some(10.0),
            backends: Some(4),
            seed: Some(8),
            ..Settings::default()
        };
        let s = file.overridden_by(flags).resolve().unwrap();
        assert_eq!(s.speeds, vec![1.0; 4]);
        assert_eq!((s.rate, s.load()), (10.0, 2.5));
        assert_eq!(s.discipline, Discipline::Delay);
        assert_eq!(s.algorithms, vec![Algorithm::RoundRobin]);
        assert_eq!((s.tie_break, s.seed), (TieBreak::Random, 8));
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        for (toml, expected) in [
            ("backend = 3", "unknown field"),
            ("discipline = \"lifo\"", "unknown discipline"),
            ("algorithms = [\"fastest\"]", "unknown algorithm"),
        ] {
            let err = Settings::from_toml(toml).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        let cases: [(Settings, &str); 6] = [
            (
                Settings {
                    speeds: Some(vec![1.0, 0.0]),
                    ..Settings::default()
                },
                "speeds must be positive",
            ),
            (
                Settings {
                    weights: Some(vec![1, 2]),
                    ..Settings::default()
                },
                "2 weights for 10 backends",
            ),
            (
                Settings {
                    load: Some(0.5),
                    rate: Some(3.0),
                    ..Settings::default()
                },
                "load or rate",
            ),
            (
                Settings {
                    warmup: Some(1.0),
                    ..Settings::default()
                },
                "warmup",
            ),
            (
                Settings {
                    backends: Some(0),
                    ..Settings::default()
                },
                "between 1 and",
            ),
            (
                Settings {
                    sync: Some(-1.0),
                    ..Settings::default()
                },
                "sync",
            ),
        ];
        for (settings, expected) in cases {
            let err = settings.resolve().unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }
}
