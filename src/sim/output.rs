//! Running a scenario for `leastconn simulate`: the transcript file, the
//! chart files, the progress bar, and the table or JSON document.

use super::transcript::Transcript;
use super::{report, svg, Report, Scenario};
use anyhow::{bail, Context};
use std::io::{self, Write};
use std::path::Path;

/// Where the results go besides the table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outputs<'a> {
    /// One JSON document instead of the table.
    pub json: bool,
    /// A directory for the charts.
    pub svg: Option<&'a Path>,
    /// A file for the messages a real node would receive.
    pub transcript: Option<&'a Path>,
}

/// Simulates `scenario` and writes the table (or JSON document) to `out`,
/// with the charts and transcript asked for. Files are created before the
/// simulation starts, so that a bad path fails at once.
pub fn run(scenario: &Scenario, outputs: Outputs<'_>, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut transcript = match outputs.transcript {
        Some(path) => Some(create_transcript(scenario, path)?),
        None => None,
    };
    if let Some(dir) = outputs.svg {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the chart directory {}", dir.display()))?;
    }
    let total = scenario
        .requests
        .saturating_mul(u64::from(scenario.replications))
        .saturating_mul(scenario.algorithms.len() as u64);
    let mut progress = Progress::new(total);
    let report = super::simulate(
        scenario,
        super::Options {
            series: outputs.svg.is_some(),
            transcript: transcript.as_mut(),
            progress: &mut |n| progress.advance(n),
        },
    )
    .context("simulate: the engine refused an operation (a bug)")?;
    progress.clear();
    if let (Some(t), Some(path)) = (transcript, outputs.transcript) {
        t.finish()
            .with_context(|| format!("cannot write the transcript {}", path.display()))?;
    }
    if let Some(dir) = outputs.svg {
        write_charts(&report, dir)?;
    }
    let text = if outputs.json {
        format!("{}\n", report::to_json(&report))
    } else {
        report::to_table(&report)
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write the results")
}

/// Creates the transcript file of a scenario that has one node to record.
pub fn create_transcript(
    scenario: &Scenario,
    path: &Path,
) -> anyhow::Result<Transcript<Box<dyn Write>>> {
    if scenario.balancers != 1 || scenario.algorithms.len() != 1 {
        bail!("simulate: --transcript records one node: give one algorithm and one balancer");
    }
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create the transcript {}", path.display()))?;
    Ok(Transcript::new(Box::new(io::BufWriter::new(file))))
}

/// Writes `latency-cdf.svg` and, for each algorithm with a series,
/// `active-ALGORITHM.svg` into `dir`, which must exist.
pub fn write_charts(report: &Report, dir: &Path) -> anyhow::Result<()> {
    let mut charts = vec![("latency-cdf.svg".to_owned(), svg::latency_cdf(report))];
    for result in &report.results {
        if let Some(chart) = svg::active_connections(result) {
            charts.push((format!("active-{}.svg", result.algorithm.name()), chart));
        }
    }
    for (name, chart) in charts {
        let path = dir.join(name);
        std::fs::write(&path, chart.render())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A progress bar on standard error, drawn only when it is a terminal and
/// the run is long enough to need one.
struct Progress {
    total: u64,
    done: u64,
    shown: Option<u64>,
    enabled: bool,
}

impl Progress {
    const WIDTH: u64 = 40;

    fn new(total: u64) -> Progress {
        use std::io::IsTerminal;
        Progress {
            total,
            done: 0,
            shown: None,
            enabled: total >= 1_000_000 && io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if !self.enabled {
            return;
        }
        let percent = (u128::from(self.done) * 100 / u128::from(self.total.max(1))).min(100) as u64;
        if self.shown != Some(percent) {
            self.shown = Some(percent);
            let filled = (percent * Self::WIDTH / 100) as usize;
            let bar = format!(
                "{}{}",
                "#".repeat(filled),
                " ".repeat(Self::WIDTH as usize - filled)
            );
            eprint!("\rsimulating [{bar}] {percent:>3}%");
        }
    }

    fn clear(&self) {
        if self.enabled && self.shown.is_some() {
            eprint!("\r{}\r", " ".repeat(Self::WIDTH as usize + 20));
        }
    }
}
