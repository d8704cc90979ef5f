//! The health-check settings of the pool and of each backend: the healthy
//! statuses, one layer of settings, and how a backend's layer over the
//! pool's resolves into its [`HealthCheck`], checked.

use anyhow::bail;
use serde::Deserialize;
use std::time::Duration;

/// The statuses that make a check pass: codes and ranges of codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl Default for StatusSet {
    /// 2xx and 3xx, as HAProxy's `option httpchk` expects.
    fn default() -> Self {
        StatusSet(vec![(200, 399)])
    }
}

impl StatusSet {
    /// Parses `200-299,301`: codes and inclusive ranges, by commas.
    pub fn parse(text: &str) -> Result<StatusSet, String> {
        // The whole text is named only when the part is not all of it.
        let within = if text.contains(',') {
            format!("{text:?}: ")
        } else {
            String::new()
        };
        let code = |part: &str| -> Result<u16, String> {
            match part.trim().parse::<u16>() {
                Ok(code @ 100..=599) => Ok(code),
                _ => Err(format!(
                    "{within}{:?} is not a status: give codes from 100 to 599, \
                     or ranges as 200-299, separated by commas",
                    part.trim()
                )),
            }
        };
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (code(low)?, code(high)?),
                None => (code(part)?, code(part)?),
            };
            if low > high {
                return Err(format!(
                    "{within}the range {low}-{high} runs backwards; write {high}-{low}"
                ));
            }
            ranges.push((low, high));
        }
        Ok(StatusSet(ranges))
    }

    /// Whether a check answered with `status` passes.
    pub fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, &(low, high)) in self.0.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            if low == high {
                write!(f, "{comma}{low}")?;
            } else {
                write!(f, "{comma}{low}-{high}")?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    /// `"200-299,301"`, or one code as a number.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Code(code) => code.to_string(),
            Raw::Text(text) => text,
        };
        StatusSet::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One layer of health-check settings: the pool's or one backend's.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct HealthLayer {
    pub check: Option<bool>,
    pub path: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub status: Option<StatusSet>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// Whose health settings a message is about: the pool's flags and keys,
/// or one backend's.
#[derive(Clone, Copy)]
pub(super) enum Layer<'a> {
    Pool,
    Backend(&'a str),
}

impl Layer<'_> {
    /// How the setting `key` (`health-rise`) is named to the user.
    fn name(self, key: &str) -> String {
        match self {
            Layer::Pool => format!("--{key}"),
            Layer::Backend(backend) => format!("--backend {backend}: {key}"),
        }
    }
}

impl HealthLayer {
    /// Whether this layer turns checks on or off: `health-check`, or an
    /// interval given (which turns them on).
    pub fn enabled(&self) -> Option<bool> {
        self.check.or(self.interval.map(|_| true))
    }

    /// The first setting given that only matters when checks are on.
    pub fn first_given(&self) -> Option<&'static str> {
        [
            (self.path.is_some(), "health-path"),
            (self.timeout.is_some(), "health-timeout"),
            (self.status.is_some(), "health-status"),
            (self.rise.is_some(), "health-rise"),
            (self.fall.is_some(), "health-fall"),
        ]
        .into_iter()
        .find_map(|(given, key)| given.then_some(key))
    }

    /// Checks the values this layer gives, each on its own.
    pub fn check_values(&self, layer: Layer<'_>) -> anyhow::Result<()> {
        for (value, key) in [(self.rise, "health-rise"), (self.fall, "health-fall")] {
            if value == Some(0) {
                bail!("{} must be at least 1", layer.name(key));
            }
        }
        for (value, key) in [
            (self.interval, "health-interval"),
            (self.timeout, "health-timeout"),
        ] {
            if value == Some(Duration::ZERO) {
                bail!("{} must be more than 0", layer.name(key));
            }
        }
        if let Some(path) = &self.path {
            if !path.starts_with('/') {
                bail!(
                    "{} {path:?}: a path begins with /",
                    layer.name("health-path")
                );
            }
            let is_path = path
                .parse::<hyper::Uri>()
                .is_ok_and(|uri| uri.scheme().is_none() && uri.authority().is_none());
            if !is_path {
                bail!(
                    "{} {path:?}: not a path a request can ask for",
                    layer.name("health-path")
                );
            }
        }
        Ok(())
    }

    /// A backend's checks from its layer (`self`) over the pool's, `None`
    /// when they are off; `name` names the backend in messages.
    pub fn resolve(&self, pool: &HealthLayer, name: &str) -> anyhow::Result<Option<HealthCheck>> {
        let layer = Layer::Backend(name);
        self.check_values(layer)?;
        if !self.enabled().or(pool.enabled()).unwrap_or(false) {
            // Turned off on purpose, its settings may stay.
            if let Some(key) = self.first_given().filter(|_| self.check.is_none()) {
                bail!(
                    "{} is given but its checks are off: add health-check=on",
                    layer.name(key)
                );
            }
            return Ok(None);
        }
        let interval = self
            .interval
            .or(pool.interval)
            .unwrap_or(Duration::from_secs(2));
        let timeout = self
            .timeout
            .or(pool.timeout)
            .unwrap_or_else(|| Duration::from_secs(1).min(interval / 2));
        if timeout >= interval {
            // Named as the layer that gave either of them.
            let layer = if self.interval.is_some() || self.timeout.is_some() {
                layer
            } else {
                Layer::Pool
            };
            let short = |key: &str| match layer {
                Layer::Pool => format!("--{key}"),
                Layer::Backend(_) => key.to_owned(),
            };
            bail!(
                "{} ({timeout:?}) must be shorter than {} ({interval:?}): a check ends \
                 before the next begins",
                layer.name("health-timeout"),
                short("health-interval"),
            );
        }
        Ok(Some(HealthCheck {
            path: self
                .path
                .clone()
                .or_else(|| pool.path.clone())
                .unwrap_or_else(|| "/health".into()),
            interval,
            timeout,
            statuses: self
                .status
                .clone()
                .or_else(|| pool.status.clone())
                .unwrap_or_default(),
            rise: self.rise.or(pool.rise).unwrap_or(2),
            fall: self.fall.or(pool.fall).unwrap_or(3),
        }))
    }
}

/// How one backend is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check asks for: `GET path`.
    pub path: String,
    /// From the start of one check to the next.
    pub interval: Duration,
    /// For the connection and the response header.
    pub timeout: Duration,
    /// The statuses of a passing check.
    pub statuses: StatusSet,
    /// Consecutive passes that bring it back.
    pub rise: u32,
    /// Consecutive failures that take it out.
    pub fall: u32,
}

#[cfg(test)]
mod tests {
    use super::super::{BackendSpec, Config, Settings};
    use super::*;

    fn backend(name: &str, options: &str) -> BackendSpec {
        BackendSpec::parse(&format!("{name}=127.0.0.1:9{options}")).expect("a spec")
    }

    fn resolve(settings: Settings, backends: Vec<BackendSpec>) -> anyhow::Result<Config> {
        Settings {
            backends: Some(backends),
            ..settings
        }
        .resolve()
    }

    fn checks(settings: Settings, backends: Vec<BackendSpec>) -> Vec<Option<HealthCheck>> {
        let config = resolve(settings, backends).expect("valid");
        config.backends.into_iter().map(|b| b.health).collect()
    }

    fn error(settings: Settings, backends: Vec<BackendSpec>) -> String {
        resolve(settings, backends)
            .expect_err("refused")
            .to_string()
    }

    /// Checks on, with their defaults.
    fn on() -> Settings {
        Settings {
            health_check: Some(true),
            ..Settings::default()
        }
    }

    #[test]
    fn checks_are_off_unless_asked_for_and_take_haproxys_defaults() {
        let a = backend("a", "");
        assert_eq!(checks(Settings::default(), vec![a.clone()]), [None]);
        let defaults = HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            statuses: StatusSet(vec![(200, 399)]),
            rise: 2,
            fall: 3,
        };
        assert_eq!(checks(on(), vec![a.clone()]), [Some(defaults.clone())]);
        // An interval alone turns them on; the timeout is then half of it.
        let fast = Settings {
            health_interval: Some(Duration::from_millis(50)),
            ..Settings::default()
        };
        assert_eq!(
            checks(fast, vec![a.clone()]),
            [Some(HealthCheck {
                interval: Duration::from_millis(50),
                timeout: Duration::from_millis(25),
                ..defaults
            })]
        );
        // Off on purpose: its settings may stay.
        let off = Settings {
            health_check: Some(false),
            health_interval: Some(Duration::from_millis(50)),
            health_path: Some("/ready".into()),
            ..Settings::default()
        };
        assert_eq!(checks(off, vec![a]), [None]);
    }

    #[test]
    fn a_backend_overrides_the_pools_checks_in_the_file_and_in_its_spec() {
        let file: Settings = toml::from_str(
            r#"
            health-check = true
            health-path = "/health"
            health-interval = "500ms"
            health-status = "200-299,301"
            health-fall = 4

            [[backend]]
            name = "a"
            address = "127.0.0.1:9001"

            [[backend]]
            name = "b"
            address = "127.0.0.1:9002"
            health-path = "/ready"
            health-status = 204
            health-rise = 1
            health-timeout = "100ms"

            [[backend]]
            name = "c"
            address = "127.0.0.1:9003"
            health-check = false
            "#,
        )
        .expect("valid TOML");
        let config = file.resolve().expect("valid");
        let pool = HealthCheck {
            path: "/health".into(),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(250),
            statuses: StatusSet(vec![(200, 299), (301, 301)]),
            rise: 2,
            fall: 4,
        };
        let b = HealthCheck {
            path: "/ready".into(),
            timeout: Duration::from_millis(100),
            statuses: StatusSet(vec![(204, 204)]),
            rise: 1,
            ..pool.clone()
        };
        let health: Vec<_> = config.backends.into_iter().map(|b| b.health).collect();
        assert_eq!(health, [Some(pool.clone()), Some(b), None]);

        // The same in a --backend spec, and one backend checked alone.
        let spec = backend(
            "d",
            ",health-path=/ready,health-status=204,health-rise=1,health-timeout=100ms",
        );
        assert_eq!(spec.health_status, Some(StatusSet(vec![(204, 204)])));
        let alone = backend("e", ",health-check=on,health-interval=1s");
        assert_eq!(
            checks(Settings::default(), vec![backend("f", ""), alone]),
            [
                None,
                Some(HealthCheck {
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_millis(500),
                    statuses: StatusSet::default(),
                    rise: 2,
                    fall: 3,
                    path: "/health".into(),
                })
            ]
        );
        let off = backend("g", ",health-check=off");
        assert_eq!(checks(on(), vec![off]), [None]);
    }

    #[test]
    fn health_settings_are_checked_with_errors_that_name_them() {
        let a = backend("a", "");
        let cases = [
            (
                Settings {
                    health_rise: Some(0),
                    ..on()
                },
                "--health-rise must be at least 1",
            ),
            (
                Settings {
                    health_fall: Some(0),
                    ..on()
                },
                "--health-fall must be at least 1",
            ),
            (
                Settings {
                    health_interval: Some(Duration::ZERO),
                    ..on()
                },
                "--health-interval must be more than 0",
            ),
            (
                Settings {
                    health_timeout: Some(Duration::ZERO),
                    ..on()
                },
                "--health-timeout must be more than 0",
            ),
            (
                Settings {
                    health_interval: Some(Duration::from_secs(1)),
                    health_timeout: Some(Duration::from_secs(1)),
                    ..on()
                },
                "--health-timeout (1s) must be shorter than --health-interval (1s): \
                 a check ends before the next begins",
            ),
            (
                Settings {
                    health_path: Some("health".into()),
                    ..on()
                },
                "--health-path \"health\": a path begins with /",
            ),
            (
                Settings {
                    health_path: Some("/a b".into()),
                    ..on()
                },
                "--health-path \"/a b\": not a path a request can ask for",
            ),
            (
                Settings {
                    health_path: Some("/ready".into()),
                    ..Settings::default()
                },
                "--health-path is given but no backend is checked: add --health-check",
            ),
            (
                Settings {
                    health_fall: Some(2),
                    ..Settings::default()
                },
                "--health-fall is given but no backend is checked: add --health-check",
            ),
        ];
        for (settings, message) in cases {
            assert_eq!(error(settings, vec![a.clone()]), message);
        }
        let cases = [
            (
                backend("a", ",health-fall=0"),
                "--backend a: health-fall must be at least 1",
            ),
            (
                backend("a", ",health-timeout=3s"),
                "--backend a: health-timeout (3s) must be shorter than health-interval (2s): \
                 a check ends before the next begins",
            ),
            (
                backend("a", ",health-path=ready"),
                "--backend a: health-path \"ready\": a path begins with /",
            ),
        ];
        for (spec, message) in cases {
            assert_eq!(error(on(), vec![spec]), message);
        }
        assert_eq!(
            error(
                Settings::default(),
                vec![backend("a", ",health-path=/ready")]
            ),
            "--backend a: health-path is given but its checks are off: add health-check=on"
        );
        for (bad, message) in [
            (",health-check=yes", "health-check is on or off"),
            (",health-rise=x", "health-rise must be a whole number"),
            (
                ",health-interval=5h",
                "health-interval: \"5h\": the unit is ms, s or m",
            ),
            (",colour=2", "unknown option \"colour\""),
        ] {
            let err = BackendSpec::parse(&format!("a=127.0.0.1:9{bad}")).expect_err(bad);
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn statuses_are_codes_and_ranges() {
        let set = StatusSet::parse("200-299, 301").expect("valid");
        assert_eq!(set.to_string(), "200-299,301");
        for (status, passes) in [
            (199, false),
            (200, true),
            (299, true),
            (300, false),
            (301, true),
            (302, false),
        ] {
            assert_eq!(set.contains(status), passes, "{status}");
        }
        assert_eq!(StatusSet::default().to_string(), "200-399");
        assert_eq!(
            StatusSet::parse("600"),
            Err("\"600\" is not a status: give codes from 100 to 599, \
                 or ranges as 200-299, separated by commas"
                .into())
        );
        assert_eq!(
            StatusSet::parse("200,300-200"),
            Err("\"200,300-200\": the range 300-200 runs backwards; write 200-300".into())
        );
        for bad in ["", "99", "2xx", "200-", "200,,204", "200-300-400"] {
            assert!(StatusSet::parse(bad).is_err(), "{bad}");
        }
        let file: Result<Settings, _> = toml::from_str("health-status = 700");
        let err = file.expect_err("refused").to_string();
        assert!(err.contains("\"700\" is not a status"), "{err}");
    }
}
