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
//! - `scenario`: every parameter after defaults, with the names the flags
//!   use (`tie_break`, `max_connections` in snake case), `rate` and `load`
//!   both given, and `service` with its parameters (`lognormal:1.15`).
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
use serde_json::{json, Value};
use std::fmt::Write;

/// The JSON document.
pub fn to_json(report: &Report) -> Value {
    json!({
        "scenario": scenario_json(&report.scenario),
        "results": report.results.iter().map(result_json).collect::<Vec<_>>(),
    })
}

fn scenario_json(s: &Scenario) -> Value {
    json!({
        "backends": s.speeds.len(),
        "speeds": s.speeds,
        "weights": s.weights,
        "max_connections": s.max_connections,
        "discipline": s.discipline.name(),
        "service": s.service.to_string(),
        "arrivals": s.arrivals.name(),
        "rate": s.rate,
        "load": s.load(),
        "burst": s.burst,
        "algorithms": s.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "tie_break": s.tie_break.name(),
        "balancers": s.balancers,
        "sync": s.sync,
        "requests": s.requests,
        "warmup": s.warmup,
        "replications": s.replications,
        "seed": s.seed,
    })
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
