//! The simulator against queueing theory, the seeds' scenarios, and the
//! real node (through transcripts).
//!
//! Every run is seeded, so each figure is fixed; the tolerances are still
//! chosen as if it were not: each is several times the spread of the
//! replication means seen at these sizes, so a change of seed would not
//! fail them, while a wrong model would.

mod common;

use common::tempdir;
use leastconn::sim::{self, Arrivals, Discipline, Report, Service, Settings};
use serde_json::Value;
use std::collections::HashMap;

/// One algorithm, at the tests' seed.
fn settings(algorithm: &str) -> Settings {
    Settings {
        algorithms: Some(vec![algorithm.parse().expect("an algorithm")]),
        ..settings_seed()
    }
}

/// Only the seed, to lay over an example scenario.
fn settings_seed() -> Settings {
    Settings {
        seed: Some(2026),
        ..Settings::default()
    }
}

/// A scenario file from `scenarios/`.
fn example(name: &str) -> Settings {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("the example exists");
    Settings::from_toml(&text).expect("the example parses")
}

#[test]
fn every_example_scenario_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("scenarios/") {
        let name = entry.expect("entry").file_name();
        let name = name.to_str().expect("utf-8 name");
        if name.ends_with(".toml") {
            example(name).resolve().expect(name);
            seen += 1;
        }
    }
    assert!(seen >= 4, "{seen} examples");
}

fn simulate(settings: Settings) -> Report {
    let scenario = settings.resolve().expect("a valid scenario");
    sim::simulate(
        &scenario,
        sim::Options {
            series: false,
            transcript: None,
            progress: &mut |_| {},
        },
    )
    .expect("the engine accepts every operation")
}

/// The mean time in system of the only algorithm.
fn mean(settings: Settings) -> f64 {
    simulate(settings).results[0].mean
}

/// FIFO, exponential sizes, speed-1 backends, one balancer: the classic
/// queueing setting, at load 0.9 with 10^6 requests and 5 replications.
fn classic(algorithm: &str, backends: u64) -> Settings {
    Settings {
        backends: Some(backends),
        load: Some(0.9),
        requests: Some(1_000_000),
        ..settings(algorithm)
    }
}

fn assert_near(what: &str, got: f64, expected: f64, tolerance: f64) {
    assert!(
        (got - expected).abs() <= tolerance,
        "{what}: {got} is not within {tolerance} of {expected}"
    );
}

// --- queueing theory --------------------------------------------------------

#[test]
fn random_routing_makes_independent_mm1_queues() {
    // Each backend sees Poisson arrivals at 0.9: M/M/1, mean 1 / (1 - 0.9).
    // Replication means spread by about 0.25 here.
    assert_near("random", mean(classic("random", 10)), 10.0, 0.6);
}

#[test]
fn round_robin_makes_erlang_arrivals() {
    // Every n-th Poisson arrival: an E_n/M/1 queue, mean 1 / (1 - σ) where
    // σ = (0.9n / (0.9n + 1 - σ))^n: 5.66 for n = 10, 5.23 for n = 100
    // (replication means spread by about 0.15).
    assert_near(
        "round-robin n=10",
        mean(classic("round-robin", 10)),
        5.66,
        0.35,
    );
    assert_near(
        "round-robin n=100",
        mean(classic("round-robin", 100)),
        5.23,
        0.3,
    );
}

#[test]
fn power_of_two_choices_approaches_mitzenmachers_limit() {
    // Σ_{i≥1} 0.9^(2^i - 2) = 2.614 as n → ∞; n = 100 sits a little above
    // (replication means spread by about 0.02).
    let got = mean(classic("power-of-two-choices", 100));
    assert_near("power-of-two-choices n=100", got, 2.66, 0.08);
    assert!(got > 2.614, "{got} is below the infinite-n limit");
}

#[test]
fn least_connections_is_join_the_shortest_queue() {
    // Above M/M/100 (one shared queue, 1.022), close to it (about 1.07).
    let got = mean(classic("least-connections", 100));
    assert!((1.022..1.075).contains(&got), "least-connections: {got}");
}

#[test]
fn the_disciplines_match_their_formulas() {
    let with = |discipline: &str, service: &str| Settings {
        discipline: Some(discipline.parse().expect("a discipline")),
        service: Some(service.parse().expect("a service")),
        ..classic("random", 10)
    };
    // M/D/1 (Pollaczek–Khinchine): 1 + 0.9 / (2 · 0.1) = 5.5.
    assert_near("fifo const", mean(with("fifo", "const")), 5.5, 0.3);
    // Processor sharing: 1 / (1 - 0.9) whatever the size distribution.
    assert_near("ps exp", mean(with("ps", "exp")), 10.0, 0.6);
    assert_near("ps lognormal", mean(with("ps", "lognormal")), 10.0, 0.8);
    assert_near("ps bimodal", mean(with("ps", "bimodal")), 10.0, 0.8);
    // Pure delay: the mean size, 1, at any load.
    assert_near("delay pareto", mean(with("delay", "pareto")), 1.0, 0.01);
}

// --- the seeds' scenarios ---------------------------------------------------

#[test]
fn the_proof_of_concept_sends_the_fast_server_the_most() {
    // Backends averaging 50, 200 and 500 ms (time unit: 500 ms), each
    // request taking uniformly 2/3 to 4/3 of its backend's average, 15
    // requests 50 ms apart, each backend serving all its requests at once;
    // 200 replications.
    let report = simulate(example("poc.toml").overridden_by(settings_seed()));
    let requests = |i: usize| -> Vec<f64> {
        report.results[i]
            .share
            .iter()
            .map(|s| (s * 15.0 * 100.0).round() / 100.0)
            .collect()
    };
    let lc = requests(0);
    // The seed expects about 10, 4 and 1.
    assert!(lc[0] > 9.0 && lc[1] > lc[2] && lc[2] >= 0.5, "{lc:?}");
    assert_eq!(requests(1), [5.0, 5.0, 5.0]);
}

#[test]
fn power_of_two_choices_overloads_slow_backends_where_least_connections_does_not() {
    // Half the backends 10x faster. Both draws land on slow backends with
    // probability 10/45, so above a load of 2/5.5 = 36% the slow half gets
    // more than it can serve and its queues grow without bound.
    let run = |algorithm: &str, load: f64, requests: u64| {
        mean(example("heterogeneous.toml").overridden_by(Settings {
            load: Some(load),
            requests: Some(requests),
            ..settings(algorithm)
        }))
    };
    let (p2c_short, p2c_long) = (
        run("power-of-two-choices", 0.45, 100_000),
        run("power-of-two-choices", 0.45, 400_000),
    );
    // Four times the requests, about four times the wait: no steady state.
    assert!(
        p2c_long > 3.0 * p2c_short && p2c_short > 20.0,
        "{p2c_short} {p2c_long}"
    );
    let (lc_short, lc_long) = (
        run("least-connections", 0.45, 100_000),
        run("least-connections", 0.45, 400_000),
    );
    assert!(
        lc_long < 0.3 && (lc_long - lc_short).abs() < 0.02,
        "{lc_short} {lc_long}"
    );
    // Below the threshold, power-of-two-choices is stable too.
    let (stable_short, stable_long) = (
        run("power-of-two-choices", 0.3, 100_000),
        run("power-of-two-choices", 0.3, 400_000),
    );
    assert!(stable_long < 1.0 && (stable_long - stable_short).abs() < 0.05);
}

#[test]
fn stale_counts_make_least_connections_herd_more_than_power_of_two_choices() {
    // 10 balancers over 20 backends at load 0.8, each seeing its peers'
    // counts as of 5 mean service times ago (about 80 arrivals).
    let run = |sync: f64| {
        simulate(example("stale.toml").overridden_by(Settings {
            sync: Some(sync),
            ..settings_seed()
        }))
    };
    let (exact, stale) = (run(0.0), run(5.0));
    let ratio = |i: usize, figure: &dyn Fn(&sim::AlgorithmResult) -> f64| {
        figure(&stale.results[i]) / figure(&exact.results[i])
    };
    let spread = |r: &sim::AlgorithmResult| r.spread_mean;
    let p99 = |r: &sim::AlgorithmResult| r.histogram.quantile(0.99).unwrap_or(f64::NAN);
    let (lc_spread, p2c_spread) = (ratio(0, &spread), ratio(1, &spread));
    let (lc_p99, p2c_p99) = (ratio(0, &p99), ratio(1, &p99));
    // Least-connections' spread more than doubles (about 3.4x), its tail
    // grows about 1.7x; power-of-two-choices' by about 1.7x and 1.3x.
    assert!(
        lc_spread > 2.5 && p2c_spread < 2.0,
        "{lc_spread} {p2c_spread}"
    );
    assert!(lc_p99 > 1.5 && p2c_p99 < 1.45, "{lc_p99} {p2c_p99}");
}

#[test]
fn bursts_fan_out_under_least_connections() {
    // Bursts of 10 requests into 10 idle backends: each pick counts at
    // once, so least-connections gives every backend exactly one.
    let idle = |algorithm: &str| {
        simulate(Settings {
            backends: Some(10),
            discipline: Some(Discipline::Delay),
            service: Some(Service::Const),
            arrivals: Some(Arrivals::Regular),
            rate: Some(5.0), // a burst every 2 time units; each request takes 1
            burst: Some(10),
            requests: Some(1000),
            warmup: Some(0.0),
            replications: Some(1),
            ..settings(algorithm)
        })
        .results
        .remove(0)
    };
    let lc = idle("least-connections");
    assert_eq!(lc.share, vec![0.1; 10]);
    // Within a burst the counts go 0,0,…,0 then 1,0,…,0 up to 1,1,…,1,0.
    assert_eq!(lc.spread_max, 1);
    assert!((lc.spread_mean - 0.9).abs() < 1e-9, "{}", lc.spread_mean);
    let random = idle("random");
    assert!(random.spread_max >= 3, "{}", random.spread_max);

    // Under queueing load the spread stays small too: about 1.3 against 5.4
    // for random, with a mean time in system of 1.8 against 2.9.
    let queued = |algorithm: &str| {
        simulate(Settings {
            backends: Some(10),
            load: Some(0.5),
            burst: Some(10),
            requests: Some(100_000),
            replications: Some(2),
            ..settings(algorithm)
        })
        .results
        .remove(0)
    };
    let (lc, random) = (queued("least-connections"), queued("random"));
    assert!(lc.spread_mean < 1.5, "{}", lc.spread_mean);
    assert!(random.spread_mean > 3.0 * lc.spread_mean);
    assert!(random.mean > 1.4 * lc.mean, "{} {}", random.mean, lc.mean);
}

// --- the command line -------------------------------------------------------

fn leastconn(args: &[&str], input: Option<&[u8]>) -> common::Output {
    common::run(args, input.unwrap_or_default())
}

fn json_of(output: &common::Output) -> Value {
    assert_eq!(output.status, Some(0), "{}", output.stderr);
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

#[test]
fn json_output_has_every_field_for_every_algorithm() {
    let doc = json_of(&leastconn(
        &[
            "simulate",
            "--backends",
            "4",
            "--requests",
            "2000",
            "--replications",
            "3",
            "--json",
        ],
        None,
    ));
    assert_eq!(doc["scenario"]["backends"], 4);
    assert_eq!(doc["scenario"]["replications"], 3);
    assert_eq!(doc["scenario"]["service"], "exp");
    let results = doc["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .filter_map(|r| r["algorithm"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "least-connections",
            "round-robin",
            "random",
            "power-of-two-choices"
        ]
    );
    for r in results {
        for key in [
            "mean",
            "mean_ci95",
            "p50",
            "p95",
            "p99",
            "p999",
            "spread_mean",
        ] {
            assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {r}");
        }
        assert!(r["p50"].as_f64() < r["p99"].as_f64());
        let share: Vec<f64> = r["share"]
            .as_array()
            .expect("share")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        assert_eq!(share.len(), 4);
        assert!((share.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(r["rejected"], 0);
        assert_eq!(r["replication_means"].as_array().map(Vec::len), Some(3));
    }
    // Round-robin over identical backends: exactly even shares.
    assert_eq!(
        results[1]["share"],
        serde_json::json!([0.25, 0.25, 0.25, 0.25])
    );
}

#[test]
fn a_scenario_file_is_read_and_flags_override_it() {
    let dir = tempdir("scenario");
    let path = dir.join("poc.toml");
    std::fs::write(
        &path,
        "speeds = [10, 2.5, 1]\ndiscipline = \"delay\"\nrate = 10\narrivals = \"regular\"\n\
         requests = 15\nwarmup = 0\nreplications = 1\nalgorithms = [\"least-connections\"]\n",
    )
    .expect("write");
    let file = path.to_str().expect("utf-8 path");
    let doc = json_of(&leastconn(
        &["simulate", "--scenario", file, "--json"],
        None,
    ));
    assert_eq!(
        doc["scenario"]["speeds"],
        serde_json::json!([10.0, 2.5, 1.0])
    );
    assert_eq!(doc["scenario"]["discipline"], "delay");
    let doc = json_of(&leastconn(
        &[
            "simulate",
            "--scenario",
            file,
            "--json",
            "--backends",
            "2",
            "--algorithms",
            "round-robin",
        ],
        None,
    ));
    assert_eq!(doc["scenario"]["speeds"], serde_json::json!([1.0, 1.0]));
    assert_eq!(doc["scenario"]["rate"], 10.0);
    assert_eq!(doc["results"][0]["algorithm"], "round-robin");
}

#[test]
fn bad_settings_exit_2_with_a_reason() {
    let dir = tempdir("bad");
    let bad_file = dir.join("bad.toml");
    std::fs::write(&bad_file, "backend = 3\n").expect("write");
    let bad_file = bad_file.to_str().expect("utf-8 path");
    for (args, reason) in [
        (&["--load", "0.5", "--rate", "2"][..], "load or rate"),
        (&["--service", "gamma"], "unknown service"),
        (&["--speeds", "1,x"], "--speeds"),
        (
            &["--weights", "1,2", "--backends", "3"],
            "2 weights for 3 backends",
        ),
        (&["--transcript", "t.jsonl"], "one algorithm"),
        (&["--scenario", bad_file], "unknown field"),
        (&["--scenario", "/nonexistent/s.toml"], "cannot read"),
        (&["--requests"], "needs a value"),
        (&["--frobnicate"], "unknown argument"),
    ] {
        let output = leastconn(&[&["simulate"], args].concat(), None);
        let stderr = &output.stderr;
        assert_eq!(output.status, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn the_table_and_help_say_what_they_measure() {
    let output = leastconn(
        &["simulate", "--requests", "1000", "--replications", "2"],
        None,
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status == Some(0));
    for text in [
        "10 backends of speed 1",
        "algorithm",
        "p99.9",
        "least-connections",
        "power-of-two-choices",
        "share of requests",
    ] {
        assert!(table.contains(text), "{text:?} missing from\n{table}");
    }
    // Not a terminal: no progress bar.
    assert!(output.stderr.is_empty());
    let help = leastconn(&["simulate", "--help"], None);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--backends",
        "--speeds",
        "--weights",
        "--discipline",
        "--service",
        "--load",
        "--rate",
        "--burst",
        "--algorithms",
        "--tie-break",
        "--balancers",
        "--sync",
        "--requests",
        "--warmup",
        "--replications",
        "--seed",
        "--json",
        "--svg",
        "--transcript",
        "--scenario",
    ] {
        assert!(help.contains(flag), "{flag} missing from simulate --help");
    }
}

#[test]
fn a_closed_stdout_ends_the_simulation_quietly_with_status_0() {
    let mut sim =
        common::Running::start(&["simulate", "--requests", "2000", "--replications", "1"]);
    // Closed before the table is written, like `| head -0`.
    drop(sim.child.stdout.take());
    let stderr = common::read_all(sim.child.stderr.take().expect("piped stderr"));
    let status = sim.wait(common::TIMEOUT);
    let stderr = String::from_utf8(stderr.join().expect("stderr")).expect("UTF-8");
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn charts_are_written_for_every_algorithm() {
    let dir = tempdir("svg");
    let out = dir.join("charts");
    let output = leastconn(
        &[
            "simulate",
            "--requests",
            "5000",
            "--replications",
            "2",
            "--backends",
            "3",
            "--svg",
            out.to_str().expect("utf-8 path"),
        ],
        None,
    );
    assert!(output.status == Some(0));
    let cdf = std::fs::read_to_string(out.join("latency-cdf.svg")).expect("cdf chart");
    assert_eq!(cdf.matches("<polyline").count(), 4);
    for algorithm in [
        "least-connections",
        "round-robin",
        "random",
        "power-of-two-choices",
    ] {
        let chart = std::fs::read_to_string(out.join(format!("active-{algorithm}.svg")))
            .expect("active chart");
        // One line per backend.
        assert_eq!(chart.matches("<polyline").count(), 3, "{algorithm}");
    }
}

/// Runs the simulator with a transcript, pipes the transcript into the
/// node, and checks that the node made the simulator's every pick.
fn transcript_replays_exactly(extra: &[&str]) {
    let dir = tempdir("transcript");
    let path = dir.join("run.jsonl");
    let path_text = path.to_str().expect("utf-8 path");
    let args = [
        &[
            "simulate",
            "--requests",
            "3000",
            "--warmup",
            "0",
            "--replications",
            "1",
            "--json",
        ][..],
        extra,
        &["--transcript", path_text],
    ]
    .concat();
    let doc = json_of(&leastconn(&args, None));
    let transcript = std::fs::read(&path).expect("transcript written");

    // The simulator's picks, from its completions: request -> backend.
    let mut message_request = HashMap::new();
    let mut sim_pick = HashMap::new();
    for line in transcript.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let msg: Value = serde_json::from_slice(line).expect("transcript lines are JSON");
        let body = &msg["body"];
        match body["type"].as_str() {
            Some("http_request") => {
                message_request.insert(body["msg_id"].as_u64(), body["request"].as_u64());
            }
            Some("request_complete") => {
                sim_pick.insert(body["request"].as_u64(), body["backend"].clone());
            }
            _ => {}
        }
    }
    assert_eq!(message_request.len(), 3000);

    let output = leastconn(&[], Some(&transcript));
    assert!(output.status == Some(0) && output.stderr.is_empty());
    let mut served = HashMap::<String, u64>::new();
    let mut refused = 0;
    let mut replies = 0;
    for line in output
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let reply: Value = serde_json::from_slice(line).expect("replies are JSON");
        let body = &reply["body"];
        replies += 1;
        assert_ne!(body["type"], "error", "{body}");
        if body["type"] != "http_response" {
            continue;
        }
        let request = message_request[&body["in_reply_to"].as_u64()];
        match sim_pick.get(&request) {
            Some(backend) => {
                assert_eq!(body["status"], 200, "request {request:?}");
                assert_eq!(&body["backend"], backend, "request {request:?}");
                *served
                    .entry(backend.as_str().unwrap_or("").into())
                    .or_default() += 1;
            }
            None => {
                assert_eq!(body["status"], 503, "request {request:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(
        replies,
        transcript
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    );
    assert_eq!(served.values().sum::<u64>() + refused, 3000);
    // The transcript is the (only) replication: its figures agree too.
    let result = &doc["results"][0];
    assert_eq!(result["rejected"].as_u64(), Some(refused));
    let picked = (3000 - refused) as f64;
    let shares = result["share"].as_array().expect("share");
    for (i, share) in shares.iter().enumerate() {
        let count = served.get(&format!("b{}", i + 1)).copied().unwrap_or(0);
        let share = share.as_f64().expect("a number");
        assert!(
            (share * picked - count as f64).abs() < 1e-6,
            "b{}: {share} of {picked} is not {count}",
            i + 1
        );
    }
}

#[test]
fn transcripts_reproduce_least_connections_with_random_ties_and_limits() {
    transcript_replays_exactly(&[
        "--algorithms",
        "least-connections",
        "--tie-break",
        "random",
        "--backends",
        "5",
        "--max-connections",
        "2",
        "--load",
        "1.2",
    ]);
}

#[test]
fn transcripts_reproduce_power_of_two_choices_on_weighted_backends() {
    transcript_replays_exactly(&[
        "--algorithms",
        "power-of-two-choices",
        "--speeds",
        "4,2,1",
        "--weights",
        "4,2,1",
        "--discipline",
        "ps",
    ]);
}

#[test]
fn transcripts_reproduce_round_robin_and_random() {
    for algorithm in ["round-robin", "random"] {
        transcript_replays_exactly(&[
            "--algorithms",
            algorithm,
            "--weights",
            "3,1,1,1,1,1,1,1,1,1",
        ]);
    }
}
