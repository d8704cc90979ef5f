//! Charts as standalone SVG: the latency distribution of every algorithm,
//! and active connections per backend over time.

use super::{AlgorithmResult, Report};
use std::fmt::Write;

/// A line chart: lines overlaid on one plot with a legend, or each in a
/// panel of its own, one above the other, sharing both axes.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// A logarithmic x axis (every x must be above 0).
    pub log_x: bool,
    /// Values hold until the next point (counts), rather than change
    /// gradually.
    pub steps: bool,
    pub panels: bool,
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

const WIDTH: f64 = 760.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const PLOT_HEIGHT: f64 = 345.0;
/// The least height of one panel.
const PANEL_HEIGHT: f64 = 40.0;
/// More points than this per gradual line are thinned: the plot is 500
/// pixels wide.
const MAX_POINTS: usize = 500;
const COLOURS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// The latency CDF chart: one line per algorithm, log time axis.
pub fn latency_cdf(report: &Report) -> Chart {
    Chart {
        title: "Time in system: cumulative distribution".into(),
        x_label: "time in system (mean service times of a speed-1 backend, log scale)".into(),
        y_label: "fraction of requests".into(),
        log_x: true,
        steps: false,
        panels: false,
        lines: report
            .results
            .iter()
            .map(|r| {
                let points = r
                    .histogram
                    .cdf()
                    .into_iter()
                    .filter(|&(x, _)| x > 0.0)
                    .collect();
                (r.algorithm.name().to_owned(), points)
            })
            .collect(),
    }
}

/// Active connections over time in the algorithm's first replication, if
/// it was recorded: a panel per backend, or the lowest, mean and highest
/// count for pools of more than [`super::SERIES_LINES`].
pub fn active_connections(result: &AlgorithmResult) -> Option<Chart> {
    let series = result.series.as_ref()?;
    let per_backend = series.lines.len() <= super::SERIES_LINES
        && !series.lines.iter().any(|(name, _)| name == "lowest");
    Some(Chart {
        title: format!(
            "Active connections after the warm-up: {}",
            result.algorithm.name()
        ),
        x_label: "time (mean service times of a speed-1 backend)".into(),
        y_label: "active connections".into(),
        log_x: false,
        steps: true,
        panels: per_backend,
        lines: series
            .lines
            .iter()
            .map(|(name, values)| {
                let points = series.times.iter().copied().zip(values.iter().copied());
                (name.clone(), points.collect())
            })
            .collect(),
    })
}

impl Chart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let all = || self.lines.iter().flat_map(|(_, p)| p.iter().copied());
        let tx = |x: f64| if self.log_x { x.log10() } else { x };
        let (mut x0, mut x1) = all()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (x, _)| {
                (lo.min(tx(x)), hi.max(tx(x)))
            });
        let (mut y0, mut y1) = all().fold((0.0f64, f64::NEG_INFINITY), |(lo, hi), (_, y)| {
            (lo.min(y), hi.max(y))
        });
        if !x0.is_finite() || !x1.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            (x0, x1) = (x0 - 0.5, x1 + 0.5);
        }
        if !y1.is_finite() || y1 - y0 < 1e-9 {
            (y0, y1) = (y0, y0 + 1.0);
        }
        let rows = if self.panels {
            self.lines.len().max(1)
        } else {
            1
        };
        let row_h = (PLOT_HEIGHT / rows as f64).max(PANEL_HEIGHT);
        let plot_h = row_h * rows as f64;
        let height = TOP + plot_h + BOTTOM;
        let plot_w = WIDTH - LEFT - RIGHT;
        let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * plot_w;
        // The y of a value in a row, leaving a little room in panels.
        let py = |row: usize, y: f64| {
            let pad = if self.panels { 4.0 } else { 0.0 };
            TOP + row_h * (row + 1) as f64 - pad - (y - y0) / (y1 - y0) * (row_h - 2.0 * pad)
        };

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            escape(&self.title)
        );
        let x_ticks = if self.log_x {
            (x0.ceil() as i32..=x1.floor() as i32)
                .map(|e| (e as f64, format!("{}", 10f64.powi(e))))
                .collect()
        } else {
            nice_ticks(x0, x1)
        };
        for (t, label) in x_ticks {
            let x = LEFT + (t - x0) / (x1 - x0) * plot_w;
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                TOP + plot_h,
                TOP + plot_h + 16.0
            );
        }
        let y_ticks = if self.panels {
            vec![(y1, format!("{y1}"))]
        } else {
            nice_ticks(y0, y1)
        };
        for row in 0..rows {
            for (t, label) in &y_ticks {
                let y = py(row, *t);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                    LEFT + plot_w,
                    LEFT - 6.0,
                    y + 4.0
                );
            }
            let _ = writeln!(
                svg,
                r##"<rect x="{LEFT}" y="{:.1}" width="{plot_w}" height="{row_h:.1}" fill="none" stroke="#333"/>"##,
                TOP + row_h * row as f64
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            height - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        for (i, (name, points)) in self.lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let row = if self.panels { i } else { 0 };
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                self.path(points, &px, &|y| py(row, y))
            );
            let (lx, ly) = if self.panels {
                (LEFT + plot_w + 14.0, TOP + row_h * (i as f64 + 0.5))
            } else {
                (LEFT + plot_w + 14.0, TOP + 10.0 + 18.0 * i as f64)
            };
            let _ = writeln!(
                svg,
                r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                lx + 20.0,
                lx + 26.0,
                ly + 4.0,
                escape(name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// A polyline's points: steps hold each value until the next change
    /// (repeats dropped); gradual lines are thinned to the plot's width.
    fn path(
        &self,
        points: &[(f64, f64)],
        px: &dyn Fn(f64) -> f64,
        py: &dyn Fn(f64) -> f64,
    ) -> String {
        let mut path = String::new();
        if self.steps {
            let mut previous: Option<f64> = None;
            for (j, &(x, y)) in points.iter().enumerate() {
                let last = j + 1 == points.len();
                match previous {
                    Some(p) if p == y && !last => continue,
                    Some(p) => {
                        let _ = write!(path, "{:.1},{:.1} ", px(x), py(p));
                    }
                    None => {}
                }
                let _ = write!(path, "{:.1},{:.1} ", px(x), py(y));
                previous = Some(y);
            }
        } else {
            let step = points.len().div_ceil(MAX_POINTS).max(1);
            for (j, &(x, y)) in points.iter().enumerate() {
                if j % step == 0 || j + 1 == points.len() {
                    let _ = write!(path, "{:.1},{:.1} ", px(x), py(y));
                }
            }
        }
        path.truncate(path.trim_end().len());
        path
    }
}

/// Round tick positions (1, 2 or 5 times a power of ten apart) with labels.
fn nice_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let raw = (hi - lo) / 6.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power);
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|k| {
            let t = k as f64 * step;
            (t, format!("{t:.decimals$}"))
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let ticks: Vec<String> = nice_ticks(0.0, 1.0).into_iter().map(|t| t.1).collect();
        assert_eq!(ticks, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let ticks: Vec<f64> = nice_ticks(3.0, 117.0).into_iter().map(|t| t.0).collect();
        assert_eq!(ticks, [20.0, 40.0, 60.0, 80.0, 100.0]);
    }

    #[test]
    fn a_chart_has_a_line_and_a_legend_entry_per_series() {
        let chart = Chart {
            title: "a <b>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: true,
            steps: false,
            panels: false,
            lines: vec![
                ("one".into(), vec![(0.1, 0.0), (1.0, 0.5), (10.0, 1.0)]),
                ("two".into(), vec![(1.0, 1.0)]),
            ],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">one</text>") && svg.contains(">two</text>"));
        assert!(svg.contains("a &lt;b&gt;"));
        // Decades 0.1, 1 and 10 are labelled.
        assert!(svg.contains(">0.1</text>") && svg.contains(">10</text>"));
        // Three points, first at the left edge of the plot.
        assert!(svg.contains(r#"points="70.0,385.0 "#), "{svg}");
    }

    #[test]
    fn panels_hold_each_value_until_it_changes() {
        let chart = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: false,
            steps: true,
            panels: true,
            lines: vec![
                (
                    "a".into(),
                    vec![(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, 0.0)],
                ),
                ("b".into(), vec![(0.0, 1.0), (3.0, 1.0)]),
            ],
        };
        let svg = chart.render();
        // Two panels, each a frame of its own.
        assert_eq!(svg.matches(r##"fill="none" stroke="#333""##).count(), 2);
        // a: 0 until x=1, 1 until x=3 (the repeat at x=2 dropped), then 0.
        let a = svg
            .lines()
            .find(|l| l.contains("<polyline") && l.contains("#1f77b4"))
            .unwrap();
        assert_eq!(a.matches(',').count(), 5, "{a}");
    }
}
