//! The simulator's settings, declared once for the command line and for
//! scenario files: each field's doc comment is its flag's help, its name is
//! the flag (`--max-connections`) and the file's key (`max-connections`).
//!
//! Adding a setting is adding a field here, with its doc comment, flag
//! attributes and parser, and using it in [`Settings::resolve`] and in a
//! field of [`Scenario`](super::Scenario), which the JSON report shows
//! as it is.

use crate::engine::{Algorithm, TieBreak};
use anyhow::{anyhow, Context};
use clap::ArgAction;
use std::path::Path;

use super::dist::{Arrivals, Service};
use super::scenario::Discipline;
use crate::layers::settings;

settings! {
    /// Every setting, each optional: one layer of configuration. A scenario
    /// file is one layer, the flags another.
    #[derive(Clone, Debug, Default, PartialEq, clap::Args, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    // The help shows optional parts in brackets (`uniform[:H]`), not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    pub struct Settings {
        /// N backends of speed 1 [default: 10]
        #[arg(help_heading = "BACKENDS", long, value_name = "N", value_parser = number::<u64>)]
        pub backends: Option<u64>,
        /// one speed per backend instead, e.g. 10,10,1,1
        #[arg(help_heading = "BACKENDS", long, value_name = "S,S,...")]
        #[arg(value_parser = number::<f64>, value_delimiter = ',', action = ArgAction::Set)]
        pub speeds: Option<Vec<f64>>,
        /// the balancer's weight for each backend
        /// [default: all 1]
        #[arg(help_heading = "BACKENDS", long, value_name = "W,W,...")]
        #[arg(value_parser = number::<u64>, value_delimiter = ',', action = ArgAction::Set)]
        pub weights: Option<Vec<u64>>,
        /// the same connection limit on every backend
        #[arg(help_heading = "BACKENDS", long, value_name = "N", value_parser = number::<u64>)]
        pub max_connections: Option<u64>,
        /// fifo: one request at a time, the rest queue;
        /// ps: processor sharing, all served at once;
        /// delay: each takes its own time whatever the
        /// load [default: fifo]
        #[arg(help_heading = "BACKENDS", long, value_name = "D", value_parser = name::<Discipline>)]
        pub discipline: Option<Discipline>,
        /// request sizes, mean 1: exp, const,
        /// uniform[:H] (on 1-H..1+H, default H=1),
        /// lognormal[:SIGMA] (default 1.15),
        /// pareto[:ALPHA] (default 2.5),
        /// bimodal[:FRACTION[:RATIO]] (a FRACTION of
        /// requests RATIO times larger, default 0.1:10)
        /// [default: exp]
        #[arg(help_heading = "BACKENDS", long, value_name = "DIST", value_parser = name::<Service>)]
        pub service: Option<Service>,
        /// arrival rate as a fraction of the backends'
        /// total speed [default: 0.9]
        #[arg(help_heading = "ARRIVALS", long, value_name = "RHO", value_parser = number::<f64>)]
        pub load: Option<f64>,
        /// or the arrival rate itself
        #[arg(help_heading = "ARRIVALS", long, value_name = "LAMBDA", value_parser = number::<f64>)]
        pub rate: Option<f64>,
        /// poisson, or regular (equal gaps from time 0)
        /// [default: poisson]
        #[arg(help_heading = "ARRIVALS", long, value_name = "A", value_parser = name::<Arrivals>)]
        pub arrivals: Option<Arrivals>,
        /// requests arriving together [default: 1]
        #[arg(help_heading = "ARRIVALS", long, value_name = "SIZE", value_parser = number::<u64>)]
        pub burst: Option<u64>,
        /// least-connections, round-robin, random,
        /// power-of-two-choices [default: all four]
        #[arg(help_heading = "BALANCING", long, value_name = "A,A,...")]
        #[arg(value_parser = name::<Algorithm>, value_delimiter = ',', action = ArgAction::Set)]
        pub algorithms: Option<Vec<Algorithm>>,
        /// lowest-index, round-robin, random
        /// [default: lowest-index]
        #[arg(help_heading = "BALANCING", long, value_name = "T", value_parser = name::<TieBreak>)]
        pub tie_break: Option<TieBreak>,
        /// independent balancers; each arrival goes to
        /// one at random [default: 1]
        #[arg(help_heading = "BALANCING", long, value_name = "K", value_parser = number::<u64>)]
        pub balancers: Option<u64>,
        /// each balancer sees its peers' counts as of its
        /// last sync, every T; 0 means always exact
        /// [default: 0]
        #[arg(help_heading = "BALANCING", long, value_name = "T", value_parser = number::<f64>)]
        pub sync: Option<f64>,
        /// requests per replication [default: 100000]
        #[arg(help_heading = "RUNNING", long, value_name = "M", value_parser = number::<u64>)]
        pub requests: Option<u64>,
        /// first requests left out of the figures
        /// [default: 0.1]
        #[arg(help_heading = "RUNNING", long, value_name = "FRACTION")]
        #[arg(value_parser = number::<f64>)]
        pub warmup: Option<f64>,
        /// independent runs [default: 5]
        #[arg(help_heading = "RUNNING", long, value_name = "R", value_parser = number::<u64>)]
        pub replications: Option<u64>,
        /// seeds every random stream [default: fixed]
        #[arg(help_heading = "RUNNING", long, value_name = "S", value_parser = number::<u64>)]
        pub seed: Option<u64>,
    }
}

impl Settings {
    /// Reads a scenario file's TOML.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the scenario {}", path.display()))?;
        Settings::from_toml(&text).map_err(|e| anyhow!("scenario {}: {e}", path.display()))
    }

    /// This layer with `over`'s settings taking precedence. `--backends`
    /// and `--speeds` replace each other, as do `--load` and `--rate`.
    pub fn overridden_by(mut self, over: Settings) -> Settings {
        if over.backends.is_some() || over.speeds.is_some() {
            self.backends = None;
            self.speeds = None;
        }
        if over.load.is_some() || over.rate.is_some() {
            self.load = None;
            self.rate = None;
        }
        self.take_given(over);
        self
    }
}

/// A flag's number (`1e6` is fine where a whole number is wanted, if it is
/// one), spaces around it ignored.
fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
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
    whole.ok_or_else(|| format!("{text:?} is not a valid number here"))
}

/// A flag's name of a value, spaces around it ignored (`round-robin,
/// random` is a list of two).
fn name<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, String> {
    text.trim().parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_take_whole_numbers_in_exponent_form_and_trimmed_names() {
        assert_eq!(number::<u64>("1e6"), Ok(1_000_000));
        assert_eq!(number::<u64>(" 7 "), Ok(7));
        assert_eq!(number::<f64>("2.5"), Ok(2.5));
        for bad in ["1.5", "-1", "", "x", "1e30"] {
            assert!(number::<u64>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            number::<u64>("x"),
            Err::<u64, _>(r#""x" is not a valid number here"#.into())
        );
        assert_eq!(name::<Algorithm>(" random"), Ok(Algorithm::Random));
        assert!(name::<Algorithm>("fastest")
            .unwrap_err()
            .starts_with(r#"unknown algorithm "fastest"; one of least-connections,"#));
    }

    #[test]
    fn a_layer_replaces_only_what_it_gives() {
        let file = Settings {
            speeds: Some(vec![2.0, 1.0]),
            rate: Some(3.0),
            tie_break: Some(TieBreak::Random),
            seed: Some(1),
            ..Settings::default()
        };
        let flags = Settings {
            load: Some(0.5),
            seed: Some(2),
            ..Settings::default()
        };
        assert_eq!(
            file.clone().overridden_by(flags),
            Settings {
                speeds: Some(vec![2.0, 1.0]),
                load: Some(0.5),
                tie_break: Some(TieBreak::Random),
                seed: Some(2),
                ..Settings::default()
            }
        );
        let flags = Settings {
            backends: Some(3),
            ..Settings::default()
        };
        assert_eq!(
            file.overridden_by(flags),
            Settings {
                backends: Some(3),
                rate: Some(3.0),
                tie_break: Some(TieBreak::Random),
                seed: Some(1),
                ..Settings::default()
            }
        );
    }
}
