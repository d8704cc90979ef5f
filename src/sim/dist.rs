//! Random request sizes and arrival times.
//!
//! A request's *size* is the time a speed-1 backend needs for it alone; every
//! distribution here has mean 1, so a backend of speed `s` serves requests
//! in 1 ÷ `s` on average.

use crate::engine::rng::Rng;
use crate::names::named_enum;
use std::fmt;

/// The distribution of request sizes, each with mean 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Service {
    /// Exponential: the classic queueing assumption.
    Exp,
    /// Every request the same size.
    Const,
    /// Uniform on [1 − h, 1 + h], 0 ≤ h ≤ 1 (default 1: [0, 2]).
    Uniform { half_width: f64 },
    /// Lognormal whose logarithm has standard deviation `sigma` (default
    /// 1.15, a shape often fitted to web response times).
    Lognormal { sigma: f64 },
    /// Pareto with tail index `alpha` > 1 (default 2.5: heavy-tailed, finite
    /// variance).
    Pareto { alpha: f64 },
    /// Two sizes: a fraction `long` of requests is `ratio` times as large as
    /// the rest (default 0.1 and 10).
    Bimodal { long: f64, ratio: f64 },
}

impl Service {
    /// The distribution names, for help and errors.
    pub const NAMES: &'static str =
        "exp, const, uniform[:H], lognormal[:SIGMA], pareto[:ALPHA], bimodal[:FRACTION[:RATIO]]";

    /// Parses `NAME` or `NAME:PARAM[:PARAM]`, as in `lognormal:1.5`.
    pub fn parse(text: &str) -> Result<Service, String> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or_default();
        let params = parts
            .map(|p| {
                p.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("{p:?} is not a number"))
            })
            .collect::<Result<Vec<f64>, String>>()
            .map_err(|e| format!("service {text:?}: {e}"))?;
        let arity = |max: usize| {
            if params.len() > max {
                Err(format!(
                    "service {text:?}: {name} takes at most {max} parameter(s)"
                ))
            } else {
                Ok(())
            }
        };
        let param = |i: usize, default: f64| params.get(i).copied().unwrap_or(default);
        let service = match name {
            "exp" | "exponential" => {
                arity(0)?;
                Service::Exp
            }
            "const" | "constant" => {
                arity(0)?;
                Service::Const
            }
            "uniform" => {
                arity(1)?;
                Service::Uniform {
                    half_width: param(0, 1.0),
                }
            }
            "lognormal" => {
                arity(1)?;
                Service::Lognormal {
                    sigma: param(0, 1.15),
                }
            }
            "pareto" => {
                arity(1)?;
                Service::Pareto {
                    alpha: param(0, 2.5),
                }
            }
            "bimodal" => {
                arity(2)?;
                Service::Bimodal {
                    long: param(0, 0.1),
                    ratio: param(1, 10.0),
                }
            }
            _ => return Err(format!("unknown service {text:?}; one of {}", Self::NAMES)),
        };
        let valid = match service {
            Service::Exp | Service::Const => true,
            Service::Uniform { half_width: h } => (0.0..=1.0).contains(&h),
            Service::Lognormal { sigma } => (0.0..=10.0).contains(&sigma),
            Service::Pareto { alpha } => alpha > 1.0,
            Service::Bimodal { long, ratio } => (0.0..=1.0).contains(&long) && ratio >= 1.0,
        };
        if !valid {
            return Err(format!(
                "service {text:?}: parameter out of range (uniform: 0 ≤ H ≤ 1; \
                 lognormal: 0 ≤ SIGMA ≤ 10; pareto: ALPHA > 1; bimodal: 0 ≤ FRACTION ≤ 1, RATIO ≥ 1)"
            ));
        }
        Ok(service)
    }

    /// One request size.
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            Service::Exp => -rng.next_f64().ln(),
            Service::Const => 1.0,
            Service::Uniform { half_width } => 1.0 + half_width * (2.0 * rng.next_f64() - 1.0),
            Service::Lognormal { sigma } => (sigma * normal(rng) - sigma * sigma / 2.0).exp(),
            Service::Pareto { alpha } => {
                // Scale (alpha − 1) ÷ alpha puts the mean at 1.
                (alpha - 1.0) / alpha * rng.next_f64().powf(-1.0 / alpha)
            }
            Service::Bimodal { long, ratio } => {
                let short = 1.0 / (1.0 - long + long * ratio);
                // next_f64 is in (0, 1]: "≤ long" happens with probability long.
                if rng.next_f64() <= long {
                    short * ratio
                } else {
                    short
                }
            }
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Service::Exp => f.write_str("exp"),
            Service::Const => f.write_str("const"),
            Service::Uniform { half_width } => write!(f, "uniform:{half_width}"),
            Service::Lognormal { sigma } => write!(f, "lognormal:{sigma}"),
            Service::Pareto { alpha } => write!(f, "pareto:{alpha}"),
            Service::Bimodal { long, ratio } => write!(f, "bimodal:{long}:{ratio}"),
        }
    }
}

impl std::str::FromStr for Service {
    type Err = String;

    fn from_str(text: &str) -> Result<Service, String> {
        Service::parse(text)
    }
}

impl serde::Serialize for Service {
    /// As written in a scenario file: `lognormal:1.15`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Service {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Service, D::Error> {
        let text = String::deserialize(d)?;
        Service::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A standard normal draw (Box–Muller, one of the pair).
fn normal(rng: &mut Rng) -> f64 {
    let radius = (-2.0 * rng.next_f64().ln()).sqrt();
    radius * (std::f64::consts::TAU * rng.next_f64()).cos()
}

named_enum! {
    /// How arrival times are spaced.
    pub enum Arrivals("arrivals") {
        /// A Poisson process: independent exponential gaps.
        Poisson = "poisson",
        /// Exactly equal gaps, starting at time 0.
        Regular = "regular",
    }
}

impl Arrivals {
    /// The gap before the next arrival (or group of arrivals), for a mean
    /// gap of `mean`.
    pub fn gap(self, mean: f64, rng: &mut Rng) -> f64 {
        match self {
            Arrivals::Poisson => -mean * rng.next_f64().ln(),
            Arrivals::Regular => mean,
        }
    }

    /// When the first arrival comes.
    pub fn first(self, mean: f64, rng: &mut Rng) -> f64 {
        match self {
            Arrivals::Poisson => self.gap(mean, rng),
            Arrivals::Regular => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample mean and variance of `n` draws.
    fn moments(service: Service, n: usize) -> (f64, f64) {
        let mut rng = Rng::new(11);
        let xs: Vec<f64> = (0..n).map(|_| service.sample(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        (mean, var)
    }

    #[test]
    fn every_distribution_has_mean_one_and_its_variance() {
        let n = 400_000;
        // (service, exact variance): the tolerance on the mean is 5 standard
        // errors; on the variance a loose 10% (heavy tails converge slowly).
        let cases = [
            (Service::Exp, 1.0),
            (Service::Const, 0.0),
            (Service::Uniform { half_width: 1.0 }, 1.0 / 3.0),
            (Service::Uniform { half_width: 0.5 }, 1.0 / 12.0),
            (
                Service::Lognormal { sigma: 1.15 },
                (1.15f64 * 1.15).exp() - 1.0,
            ),
            (Service::Pareto { alpha: 6.0 }, 1.0 / (6.0 * 4.0)),
            (
                Service::Bimodal {
                    long: 0.1,
                    ratio: 10.0,
                },
                // sizes 1/1.9 and 10/1.9: E[x²] = (0.9 + 10) / 1.9², minus 1.
                (0.9 + 10.0) / (1.9 * 1.9) - 1.0,
            ),
        ];
        for (service, variance) in cases {
            let (mean, var) = moments(service, n);
            let se = (variance / n as f64).sqrt();
            assert!(
                (mean - 1.0).abs() <= 5.0 * se + 1e-12,
                "{service}: mean {mean}"
            );
            assert!(
                (var - variance).abs() <= 0.1 * variance + 1e-12,
                "{service}: variance {var}, expected {variance}"
            );
        }
        // Pareto 2.5's variance exists but its estimate converges too slowly
        // to test; its mean does not.
        let (mean, _) = moments(Service::Pareto { alpha: 2.5 }, n);
        assert!((mean - 1.0).abs() < 0.02, "pareto:2.5 mean {mean}");
    }

    #[test]
    fn names_and_parameters_parse_and_print_back() {
        for text in [
            "exp",
            "const",
            "uniform:1",
            "uniform:0.25",
            "lognormal:1.15",
            "pareto:2.5",
            "bimodal:0.1:10",
        ] {
            assert_eq!(Service::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            serde_json::from_str::<Service>(r#""pareto:3""#).unwrap(),
            Service::Pareto { alpha: 3.0 }
        );
        assert_eq!(
            serde_json::to_string(&Service::Bimodal {
                long: 0.2,
                ratio: 5.0
            })
            .unwrap(),
            r#""bimodal:0.2:5""#
        );
        assert!(serde_json::from_str::<Service>(r#""gamma""#)
            .unwrap_err()
            .to_string()
            .contains("unknown service"));
        assert_eq!(
            Service::parse("lognormal").unwrap(),
            Service::Lognormal { sigma: 1.15 }
        );
        assert_eq!(
            Service::parse("bimodal:0.2").unwrap(),
            Service::Bimodal {
                long: 0.2,
                ratio: 10.0
            }
        );
        for bad in [
            "",
            "gamma",
            "exp:1",
            "uniform:2",
            "uniform:x",
            "pareto:1",
            "pareto:nan",
            "bimodal:1.5",
            "bimodal:0.1:0.5",
            "lognormal:1:2",
        ] {
            assert!(Service::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arrivals_have_the_asked_mean_gap() {
        let mut rng = Rng::new(3);
        let n = 200_000;
        let total: f64 = (0..n).map(|_| Arrivals::Poisson.gap(0.5, &mut rng)).sum();
        // Standard error 0.5 / sqrt(n) ≈ 0.0011; allow 5 of them.
        assert!((total / n as f64 - 0.5).abs() < 0.0056);
        assert_eq!(Arrivals::Regular.gap(0.5, &mut rng), 0.5);
        assert_eq!(Arrivals::Regular.first(0.5, &mut rng), 0.0);
        assert_eq!(Arrivals::from_name("regular"), Some(Arrivals::Regular));
        assert_eq!(Arrivals::Poisson.name(), "poisson");
    }
}
