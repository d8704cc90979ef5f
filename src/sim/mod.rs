//! The simulator: clients, balancers and backends in simulated time, with
//! the engine choosing every backend.
//!
//! # Model
//!
//! - **Backends** each have a *speed*: a speed-`s` backend serves a request
//!   of size `w` in `w ÷ s` when alone. Time is measured in mean request
//!   sizes, so a speed-1 backend's mean service time is 1. How a backend
//!   serves the requests it holds is its [`Discipline`]: FIFO, processor
//!   sharing, or pure delay.
//! - **Requests** arrive by a Poisson process (or at regular intervals),
//!   alone or in bursts, at a rate given directly or as a *load*: a
//!   fraction of the backends' total speed. Sizes are drawn from a
//!   [`Service`] distribution with mean 1.
//! - **Balancers** are engine pools, one per balancer; arrivals are spread
//!   over them uniformly at random. A balancer counts a connection when it
//!   picks a backend and uncounts it when that request leaves. With sync 0
//!   every balancer sees the true counts; with sync `T`, a balancer sees its
//!   own connections as they are and its peers' as they were at its last
//!   sync, every `T` (staggered across balancers).
//! - **Measurements**: the first `warmup` fraction of requests (by arrival)
//!   is left out. For the rest: time in system (arrival to departure), each
//!   backend's share of requests, the spread of true counts (highest −
//!   lowest over all backends, seen by each arrival before its pick), and
//!   requests refused because no backend was eligible (only possible with
//!   a connection limit).
//! - **Replications** are independent runs with their own random streams;
//!   every algorithm meets the same arrivals and sizes in a replication.
//!   The mean's 95% confidence interval uses Student's t over the
//!   replications' means; percentiles pool every replication.
//!
//! - [`settings`]: every setting, declared once for flags and TOML files.
//! - [`scenario`]: the settings checked and completed into a scenario.
//! - [`dist`]: request sizes and arrival gaps.
//! - `run`: the event loop of one replication.
//! - [`stats`]: the latency histogram, spread and confidence intervals.
//! - [`report`]: the table and the JSON document.
//! - [`svg`]: the charts.
//! - [`transcript`]: the messages a real node would receive.
//! - [`output`]: a run for `leastconn simulate`: its transcript and chart
//!   files, its progress bar, and its table or JSON document.

pub mod dist;
pub mod output;
pub mod report;
mod run;
pub mod scenario;
pub mod settings;
pub mod stats;
pub mod svg;
pub mod transcript;

pub use dist::{Arrivals, Service};
pub use run::{Series, SERIES_CHANGES, SERIES_LINES};
pub use scenario::{Discipline, Scenario, Settings};

use crate::engine::{Algorithm, EngineError};
use stats::Histogram;
use std::io::Write;
use transcript::Transcript;

/// Everything measured for one algorithm, over all replications.
#[derive(Clone, Debug)]
pub struct AlgorithmResult {
    pub algorithm: Algorithm,
    /// Each replication's mean time in system.
    pub replication_means: Vec<f64>,
    pub mean: f64,
    /// Half-width of the mean's 95% confidence interval; none for one
    /// replication.
    pub mean_ci95: Option<f64>,
    /// Times in system of every replication.
    pub histogram: Histogram,
    /// Each backend's fraction of the requests that got one.
    pub share: Vec<f64>,
    pub spread_mean: f64,
    pub spread_max: u64,
    /// Over all replications.
    pub rejected: u64,
    /// The first replication's active connections over time.
    pub series: Option<Series>,
}

/// A finished simulation.
#[derive(Clone, Debug)]
pub struct Report {
    pub scenario: Scenario,
    pub results: Vec<AlgorithmResult>,
}

/// What a simulation should produce besides its figures.
pub struct Options<'a> {
    /// Record active connections over time in each algorithm's first
    /// replication.
    pub series: bool,
    /// Write the first algorithm's first replication here (one balancer
    /// only: the transcript speaks for a single node).
    pub transcript: Option<&'a mut Transcript<Box<dyn Write>>>,
    /// Told how many more arrivals have been simulated, now and then; the
    /// total is requests × replications × algorithms.
    pub progress: &'a mut dyn FnMut(u64),
}

/// Runs every algorithm of the scenario for every replication.
pub fn simulate(scenario: &Scenario, mut options: Options<'_>) -> Result<Report, EngineError> {
    let names = scenario.backend_names();
    let mut results = Vec::with_capacity(scenario.algorithms.len());
    for (a, &algorithm) in scenario.algorithms.iter().enumerate() {
        let mut runs = Vec::with_capacity(scenario.replications as usize);
        for replication in 0..scenario.replications {
            let first = replication == 0;
            let transcript = match (&mut options.transcript, first && a == 0) {
                (Some(t), true) if scenario.balancers == 1 => Some(&mut **t),
                _ => None,
            };
            runs.push(run::replicate(
                scenario,
                &names,
                algorithm,
                replication,
                run::Extras {
                    series: options.series && first,
                    transcript,
                    progress: &mut *options.progress,
                },
            )?);
        }
        results.push(combine(algorithm, runs));
    }
    Ok(Report {
        scenario: scenario.clone(),
        results,
    })
}

fn combine(algorithm: Algorithm, runs: Vec<run::Replication>) -> AlgorithmResult {
    let replication_means: Vec<f64> = runs.iter().map(|r| r.mean).collect();
    let (mean, mean_ci95) = stats::mean_ci95(&replication_means);
    let mut histogram = Histogram::default();
    let mut picks = vec![0u64; runs.first().map_or(0, |r| r.picks.len())];
    let (mut spread_sum, mut spread_samples, mut spread_max, mut rejected) = (0u128, 0u64, 0, 0);
    for run in &runs {
        histogram.merge(&run.histogram);
        for (total, p) in picks.iter_mut().zip(&run.picks) {
            *total += p;
        }
        spread_sum += run.spread_sum;
        spread_samples += run.spread_samples;
        spread_max = spread_max.max(run.spread_max);
        rejected += run.rejected;
    }
    let picked: u64 = picks.iter().sum();
    AlgorithmResult {
        algorithm,
        replication_means,
        mean,
        mean_ci95,
        histogram,
        share: picks
            .iter()
            .map(|&p| {
                if picked > 0 {
                    p as f64 / picked as f64
                } else {
                    0.0
                }
            })
            .collect(),
        spread_mean: if spread_samples > 0 {
            spread_sum as f64 / spread_samples as f64
        } else {
            0.0
        },
        spread_max,
        rejected,
        series: runs.into_iter().next().and_then(|r| r.series),
    }
}
