//! What the simulator measures: a latency histogram with percentiles, the
//! spread of active connections, and confidence intervals.

/// Times in system, in logarithmic buckets of relative width 0.2%: flat
/// memory however many requests, mergeable across replications, and each
/// percentile within 0.1% of the exact order statistic (clamped to the
/// smallest and largest value seen, which are kept exactly).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: f64,
    max: f64,
}

/// The lower edge of bucket 1; everything below shares bucket 0.
const LOWEST: f64 = 1e-9;
/// Each bucket's upper edge over its lower edge.
const GROWTH: f64 = 1.002;

impl Histogram {
    pub fn record(&mut self, x: f64) {
        let bucket = if x < LOWEST {
            0
        } else {
            // Truncation of a finite, non-negative value: a valid index.
            1 + ((x / LOWEST).ln() / GROWTH.ln()) as usize
        };
        if bucket >= self.counts.len() {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        if self.total == 0 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.total += 1;
    }

    /// Adds another histogram's values to this one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        if self.total == 0 {
            (self.min, self.max) = (other.min, other.max);
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.total += other.total;
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The smallest value v with at least a fraction `q` of values ≤ v
    /// (to bucket precision); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        // The extremes are known exactly.
        if rank == 1 {
            return Some(self.min);
        }
        if rank == self.total {
            return Some(self.max);
        }
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(self.representative(bucket));
            }
        }
        Some(self.max)
    }

    /// The cumulative distribution at every occupied bucket: (value,
    /// fraction of values ≤ it), ascending.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let mut seen = 0;
        let mut points = Vec::new();
        for (bucket, &count) in self.counts.iter().enumerate() {
            if count > 0 {
                seen += count;
                points.push((self.representative(bucket), seen as f64 / self.total as f64));
            }
        }
        points
    }

    /// A bucket's geometric middle, within the range actually seen.
    fn representative(&self, bucket: usize) -> f64 {
        let middle = if bucket == 0 {
            self.min
        } else {
            LOWEST * GROWTH.powf(bucket as f64 - 0.5)
        };
        middle.clamp(self.min, self.max)
    }
}

/// The lowest and highest count over all backends, kept up to date as
/// counts move by one, in O(1): how many backends hold each count.
#[derive(Clone, Debug)]
pub struct Spread {
    holding: Vec<u64>,
    min: u64,
    max: u64,
}

impl Spread {
    /// `backends` backends, all at 0.
    pub fn new(backends: usize) -> Spread {
        Spread {
            holding: vec![backends as u64],
            min: 0,
            max: 0,
        }
    }

    pub fn min(&self) -> u64 {
        self.min
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// A backend's count went from `from` to `from + 1`.
    pub fn increment(&mut self, from: u64) {
        let to = from + 1;
        if self.holding.len() <= to as usize {
            self.holding.push(0);
        }
        self.holding[from as usize] -= 1;
        self.holding[to as usize] += 1;
        self.max = self.max.max(to);
        if from == self.min && self.holding[from as usize] == 0 {
            self.min = to;
        }
    }

    /// A backend's count went from `from` to `from - 1` (`from` > 0).
    pub fn decrement(&mut self, from: u64) {
        let to = from - 1;
        self.holding[from as usize] -= 1;
        self.holding[to as usize] += 1;
        self.min = self.min.min(to);
        if from == self.max && self.holding[from as usize] == 0 {
            self.max = to;
        }
    }
}

/// The mean of `values` and the half-width of its 95% confidence interval
/// (Student's t with n − 1 degrees of freedom); no interval for fewer than
/// two values.
pub fn mean_ci95(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, None);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, None);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (
        mean,
        Some(t_975(n as u64 - 1) * (variance / n as f64).sqrt()),
    )
}

/// Student's t quantile at 0.975 for `df` ≥ 1 degrees of freedom.
pub fn t_975(df: u64) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df as usize - 1],
        _ => {
            // Cornish–Fisher expansion around the normal quantile: within
            // 1e-4 of the exact value from 30 degrees of freedom on.
            let z: f64 = 1.959_964;
            let v = df as f64;
            z + (z.powi(3) + z) / (4.0 * v)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_tenth_of_a_percent_of_the_exact_ones() {
        let mut h = Histogram::default();
        let values: Vec<f64> = (1..=100_000).map(|i| i as f64 / 1000.0).collect();
        for &v in values.iter().rev() {
            h.record(v);
        }
        assert_eq!(h.len(), 100_000);
        for q in [0.5, 0.95, 0.99, 0.999] {
            let exact = values[(q * 100_000.0) as usize - 1];
            let got = h.quantile(q).unwrap();
            assert!((got / exact - 1.0).abs() < 0.001, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(0.0), Some(0.001));
        assert_eq!(h.quantile(1.0), Some(100.0));
        let cdf = h.cdf();
        assert_eq!(cdf.last().map(|p| p.1), Some(1.0));
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }

    #[test]
    fn a_constant_is_reported_exactly_and_merging_adds() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        (0..10).for_each(|_| a.record(1.0));
        (0..30).for_each(|_| b.record(3.0));
        b.record(0.0);
        assert_eq!(a.quantile(0.5), Some(1.0));
        a.merge(&b);
        assert_eq!(a.len(), 41);
        assert_eq!(a.quantile(0.01), Some(0.0));
        assert!((a.quantile(0.25).unwrap() - 1.0).abs() < 0.001);
        assert!((a.quantile(0.5).unwrap() / 3.0 - 1.0).abs() < 0.001);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn spread_follows_the_extremes() {
        let mut counts = [0u64; 4];
        let mut s = Spread::new(4);
        let check = |s: &Spread, counts: &[u64; 4]| {
            assert_eq!(s.min(), *counts.iter().min().unwrap());
            assert_eq!(s.max(), *counts.iter().max().unwrap());
        };
        let moves: [(usize, bool); 12] = [
            (0, true),
            (0, true),
            (1, true),
            (2, true),
            (3, true),
            (0, false),
            (1, false),
            (0, false),
            (3, true),
            (3, true),
            (3, false),
            (2, false),
        ];
        for (i, up) in moves {
            if up {
                s.increment(counts[i]);
                counts[i] += 1;
            } else {
                s.decrement(counts[i]);
                counts[i] -= 1;
            }
            check(&s, &counts);
        }
    }

    #[test]
    fn confidence_intervals_use_student_t() {
        let (mean, half) = mean_ci95(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(mean, 3.0);
        // s = sqrt(2.5), t(4) = 2.776.
        assert!((half.unwrap() - 2.776 * (2.5f64 / 5.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_ci95(&[7.0]), (7.0, None));
        assert!((t_975(31) - 2.0395).abs() < 2e-4);
        assert!((t_975(120) - 1.9799).abs() < 2e-4);
        assert!((t_975(1_000_000) - 1.96).abs() < 1e-3);
    }
}
