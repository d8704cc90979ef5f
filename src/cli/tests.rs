//! The command line's parsing.

use super::*;
use crate::engine::Algorithm;
use crate::framing::DEFAULT_MAX_MESSAGE_SIZE;

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

#[test]
fn no_arguments_is_the_node_with_defaults() {
    assert_eq!(
        parse(args(&[])).unwrap(),
        Command::Node(NodeArgs {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            strict: false,
            no_one_pass: false,
        })
    );
    assert_eq!(
        parse(args(&["--strict"])).unwrap(),
        Command::Node(NodeArgs {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            strict: true,
            no_one_pass: false,
        })
    );
}

#[test]
fn sizes_take_binary_suffixes() {
    assert_eq!(parse_size("65536").unwrap(), 65536);
    assert_eq!(parse_size("64K").unwrap(), 64 << 10);
    assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
    assert_eq!(parse_size("1g").unwrap(), 1 << 30);
    for bad in ["", "0", "-5", "12Q", "1.5M", "99999999999999999999G"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse(args(&["--max-message-size=1K"])).unwrap(),
        Command::Node(NodeArgs {
            max_message_size: 1024,
            strict: false,
            no_one_pass: false,
        })
    );
}

#[test]
fn replay_takes_paths_bin_and_timeout() {
    assert_eq!(
        parse(args(&["replay", "--bin", "x", "a", "--timeout=2.5", "b"])).unwrap(),
        Command::Replay(ReplayArgs {
            bin: Some("x".into()),
            timeout: Duration::from_millis(2500),
            paths: vec!["a".into(), "b".into()],
        })
    );
}

#[test]
fn simulate_flags_become_settings() {
    let Command::Simulate(sim) = parse(args(&[
        "simulate",
        "--speeds=10,2.5,1",
        "--weights",
        "4,2,1",
        "--requests",
        "1e6",
        "--algorithms",
        "round-robin, random",
        "--sync",
        "0.5",
        "--json",
        "--svg",
        "out",
    ]))
    .unwrap() else {
        panic!("not simulate");
    };
    assert_eq!(sim.settings.speeds, Some(vec![10.0, 2.5, 1.0]));
    assert_eq!(sim.settings.weights, Some(vec![4, 2, 1]));
    assert_eq!(sim.settings.requests, Some(1_000_000));
    assert_eq!(
        sim.settings.algorithms,
        Some(vec![Algorithm::RoundRobin, Algorithm::Random])
    );
    assert_eq!(sim.settings.sync, Some(0.5));
    assert!(sim.json && sim.transcript.is_none());
    assert_eq!(sim.svg, Some(PathBuf::from("out")));
    let help = parse(args(&["simulate", "-h"])).unwrap_err();
    assert_eq!(help.kind(), ErrorKind::DisplayHelp);
    assert!(help.render().to_string().contains("--backends"));
    for bad in [
        &["simulate", "--json=yes"][..],
        &["simulate", "--requests", "1.5"],
        &["simulate", "--backends", "-1"],
        &["simulate", "--weights", "1,,2"],
        &["simulate", "--strict"],
        &["simulate", "extra"],
    ] {
        assert!(parse(args(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn unknown_or_misplaced_flags_are_errors() {
    for bad in [
        &["--nope"][..],
        &["--bin", "x"],
        &["replay", "--max-message-size", "1K"],
        &["replay", "--strict"],
        &["--strict=yes"],
        &["--max-message-size"],
        &["stray"],
    ] {
        assert!(parse(args(bad)).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse(args(&["--help", "--nope"])).unwrap_err().kind(),
        ErrorKind::DisplayHelp
    );
}

#[test]
fn defaults_shown_in_help_are_the_defaults_used() {
    assert_eq!(parse_size("64M").unwrap(), DEFAULT_MAX_MESSAGE_SIZE);
    let Command::Replay(replay) = parse(args(&["replay"])).unwrap() else {
        panic!("not replay");
    };
    assert_eq!(replay.timeout, fixture::DEFAULT_TIMEOUT);
}

#[test]
fn each_command_has_its_own_help_and_every_one_the_version() {
    let help = |list: &[&str]| {
        let e = parse(args(list)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{list:?}");
        e.render().to_string()
    };
    let top = help(&["--help"]);
    assert!(
        top.contains("USAGE:") && top.contains("--max-message-size") && top.contains("simulate")
    );
    let replay = help(&["replay", "--help"]);
    assert!(replay.contains("--timeout") && !replay.contains("--max-message-size"));
    let simulate = help(&["simulate", "-h"]);
    assert!(simulate.contains("--tie-break") && !simulate.contains("--strict"));
    for list in [&["-V"][..], &["replay", "--version"], &["simulate", "-V"]] {
        assert_eq!(
            parse(args(list)).unwrap_err().kind(),
            ErrorKind::DisplayVersion
        );
    }
}

#[test]
fn usage_errors_name_the_flag_and_the_trouble() {
    let error = |list: &[&str]| {
        let list = args(list);
        let e = parse(list.iter().cloned()).unwrap_err();
        usage_error(&e, &list).to_string()
    };
    assert_eq!(
        error(&["--frobnicate"]),
        "unknown argument \"--frobnicate\"; see `leastconn --help`"
    );
    assert_eq!(
        error(&["simulate", "extra"]),
        "unknown argument \"extra\"; see `leastconn simulate --help`"
    );
    assert_eq!(
        error(&["stray"]),
        "unknown argument \"stray\"; see `leastconn --help`"
    );
    assert_eq!(
        error(&["simulate", "--requests"]),
        "--requests needs a value"
    );
    assert_eq!(
        error(&["simulate", "--requests=1.5"]),
        "--requests: \"1.5\" is not a valid number here"
    );
    assert_eq!(
        error(&["--max-message-size", "1Q"]),
        "--max-message-size: \"1Q\" is not a size like 65536, 64K or 64M"
    );
    assert!(error(&["simulate", "--tie-break", "first"])
        .starts_with("--tie-break: unknown tie-break \"first\"; one of lowest-index,"));
    assert_eq!(
        error(&["--strict=yes"]),
        "--strict takes no value, not \"yes\"; see `leastconn --help`"
    );
}

#[test]
fn a_repeated_flag_takes_its_last_value() {
    let Command::Simulate(sim) = parse(args(&["simulate", "--seed", "1", "--seed", "2"])).unwrap()
    else {
        panic!("not simulate");
    };
    assert_eq!(sim.settings.seed, Some(2));
    assert_eq!(
        parse(args(&["--strict", "--strict"])).unwrap(),
        Command::Node(NodeArgs {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            strict: true,
            no_one_pass: false,
        })
    );
}
