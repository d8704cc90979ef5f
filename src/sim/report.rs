//! The results as a readable table or as one JSON document.
//!
//! # JSON
//!
//! ```json
//! {"scenario":{"backends":2,"speeds":[1.0,1.0],…},
//!  "results":[{"algorithm":"least-connections","mean":1.52,"mean_ci95":0.03,
//!              "p50":1.05,"p95":4.4,"p99":6.9,"p999":10.2,"share":[0.5,0.5],
//!              "spread_mean":0.7,"spread_max":9,"rejected":0,
//!              "replication_means":[1.5,1.53,1.51,1.54,1.52]}]}
//! ```
//!
//! - `scenario`: every field of the [`Scenario`] (every parameter after
//!   defaults), with the names the flags use (`tie_break`, `max_connections`
//!   in snake case), `rate` and `load` both given, `backends` counted, and
//!   `service` with its parameters (`lognormal:1.15`).
//! - `results`: one per algorithm, in the order asked. Times are in units of
//!   a speed-1 backend's mean service time. `mean` is the mean over
//!   replications of each replication's mean time in system; `mean_ci95` is
//!   the half-width of its 95% confidence interval (`null` for one
//!   replication). `p50` to `p999` are percentiles of all replications'
//!   times, within 0.1%. `share` is each backend's fraction of the requests
//!   given a backend, in backend order. `spread_mean` and `spread_max`:
//!   highest minus lowest count over backends, as seen by each arrival.
//!   `rejected`: requests that found no eligible backend, over all
//!   replications. A figure with nothing to measure is `null`.

use super::{AlgorithmResult, Report, Scenario};
use serde_json::{json, Map, Value};
use std::fmt::Write;

/// The JSON document.
pub fn to_json(report: &Report) -> Value {
    json!({
        "scenario": scenario_json(&report.scenario),
        "results": report.results.iter().map(result_json).collect::<Vec<_>>(),
    })
}

/// The scenario's own fields, in its order, with the derived `backends`
/// first and `load` after `rate`.
fn scenario_json(s: &Scenario) -> Value {
    // Cannot fail: every field is a number, a string, or a list of them.
    let fields = match serde_json::to_value(s) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    let mut out = Map::new();
    out.insert("backends".into(), s.speeds.len().into());
    for (key, value) in fields {
        let after = (key == "rate").then(|| ("load".to_owned(), Value::from(s.load())));
        out.insert(key, value);
        out.extend(after);
    }
    Value::Object(out)
}

fn result_json(r: &AlgorithmResult) -> Value {
    let q = |p: f64| r.histogram.quantile(p);
    json!({
        "algorithm": r.algorithm.name(),
        "mean": r.mean,
        "mean_ci95": r.mean_ci95,
        "p50": q(0.5),
        "p95": q(0.95),
        "p99": q(0.99),
        "p999": q(0.999),
        "share": r.share,
        "spread_mean": r.spread_mean,
        "spread_max": r.spread_max,
        "rejected": r.rejected,
        "replication_means": r.replication_means,
    })
}

/// Pools up to this size get a share column per backend.
const SHARE_COLUMNS: usize = 8;

/// The readable table.
pub fn to_table(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.scenario;
    let _ = writeln!(out, "{s}.");
    let _ = writeln!(
        out,
        "Times in units of a speed-1 backend's mean service time.\n"
    );
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>8}",
        "algorithm", "mean", "±95%", "p50", "p95", "p99", "p99.9", "spread", "max", "rejected"
    );
    for r in &report.results {
        let q = |p: f64| number(r.histogram.quantile(p));
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>8}",
            r.algorithm.name(),
            number(Some(r.mean)),
            number(r.mean_ci95),
            q(0.5),
            q(0.95),
            q(0.99),
            q(0.999),
            number(Some(r.spread_mean)),
            r.spread_max,
            r.rejected
        );
    }
    let n = s.speeds.len();
    out.push('\n');
    if n <= SHARE_COLUMNS {
        let names: Vec<String> = s.backend_names();
        let _ = write!(out, "{:<22}", "share of requests");
        for name in &names {
            let _ = write!(out, " {name:>7}");
        }
        out.push('\n');
        for r in &report.results {
            let _ = write!(out, "{:<22}", r.algorithm.name());
            for share in &r.share {
                let _ = write!(out, " {:>6.2}%", share * 100.0);
            }
            out.push('\n');
        }
    } else {
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>9}   (fair: {:.3}%)",
            "share of requests",
            "lowest",
            "highest",
            100.0 / n as f64
        );
        for r in &report.results {
            let lowest = r.share.iter().copied().fold(f64::INFINITY, f64::min);
            let highest = r.share.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "{:<22} {:>8.3}% {:>8.3}%",
                r.algorithm.name(),
                lowest * 100.0,
                highest * 100.0
            );
        }
    }
    out
}

/// A figure with four significant digits or so, or `-` for none.
fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => {
            let magnitude = v.abs();
            if magnitude >= 1000.0 {
                format!("{v:.0}")
            } else if magnitude >= 100.0 {
                format!("{v:.1}")
            } else if magnitude >= 10.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.3}")
            }
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Algorithm, TieBreak};
    use crate::sim::{Arrivals, Discipline, Service};

    #[test]
    fn the_scenario_is_every_field_with_backends_and_load_derived() {
        let s = Scenario {
            speeds: vec![10.0, 2.5, 1.0],
            weights: vec![4, 2, 1],
            max_connections: Some(7),
            discipline: Discipline::Ps,
            service: Service::Bimodal {
                long: 0.2,
                ratio: 5.0,
            },
            arrivals: Arrivals::Regular,
            rate: 6.75,
            burst: 3,
            algorithms: vec![Algorithm::PowerOfTwoChoices, Algorithm::LeastConnections],
            tie_break: TieBreak::RoundRobin,
            balancers: 2,
            sync: 0.5,
            requests: 1000,
            warmup: 0.25,
            replications: 3,
            seed: u64::MAX,
        };
        let expected = json!({
            "backends": 3,
            "speeds": [10.0, 2.5, 1.0],
            "weights": [4, 2, 1],
            "max_connections": 7,
            "discipline": "ps",
            "service": "bimodal:0.2:5",
            "arrivals": "regular",
            "rate": 6.75,
            "load": 0.5,
            "burst": 3,
            "algorithms": ["power-of-two-choices", "least-connections"],
            "tie_break": "round-robin",
            "balancers": 2,
            "sync": 0.5,
            "requests": 1000,
            "warmup": 0.25,
            "replications": 3,
            "seed": u64::MAX,
        });
        // Byte for byte: the same keys in the same order.
        assert_eq!(scenario_json(&s).to_string(), expected.to_string());
        let unlimited = Scenario {
            max_connections: None,
            ..s
        };
        assert_eq!(scenario_json(&unlimited)["max_connections"], Value::Null);
    }
}
