//! Unit tests of the engine: exact picks, exact counts, exact errors.

use super::select::cmp_load;
use super::*;

fn spec(name: &str, weight: u64) -> BackendSpec<'_> {
    BackendSpec {
        name,
        weight,
        max_connections: None,
    }
}

fn pool_with(specs: &[BackendSpec<'_>], policy: Policy) -> Pool {
    Pool::with_backends(specs.iter().copied(), policy).expect("valid backends")
}

fn pool(names: &[&str]) -> Pool {
    let specs: Vec<_> = names.iter().map(|n| BackendSpec::named(n)).collect();
    pool_with(&specs, Policy::default())
}

fn policy(algorithm: Algorithm, tie_break: TieBreak) -> Policy {
    Policy {
        algorithm,
        tie_break,
        seed: DEFAULT_SEED,
    }
}

/// Takes the backend `name` out, as a failed health check would.
fn mark_down(pool: &mut Pool, name: &str) {
    let down = BackendChange {
        healthy: Some(false),
        ..Default::default()
    };
    pool.change(name, down).expect("in the pool");
}

fn counts(pool: &Pool) -> Vec<u64> {
    pool.iter().map(|(_, b)| b.active()).collect()
}

/// Picks `n` times with the pool's own algorithm; returns the names.
fn picks(pool: &mut Pool, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let index = pool.pick(None, &[], false).chosen.expect("a backend");
            pool.get_index(index).unwrap().0.to_owned()
        })
        .collect()
}

#[test]
fn fresh_pool_picks_in_order_then_wraps() {
    let mut p = pool(&["api-1", "api-2", "api-3"]);
    assert_eq!(picks(&mut p, 4), ["api-1", "api-2", "api-3", "api-1"]);
    assert_eq!(counts(&p), [2, 1, 1]);
}

#[test]
fn picks_fewest_and_counts_eagerly() {
    let mut p = pool(&["api-1", "api-2", "api-3"]);
    p.apply_snapshot(&[("api-1", 5), ("api-2", 2), ("api-3", 8)], &mut Vec::new())
        .unwrap();
    assert_eq!(picks(&mut p, 4), ["api-2", "api-2", "api-2", "api-1"]);
    assert_eq!(counts(&p), [6, 5, 8]);
}

#[test]
fn snapshot_appends_in_its_own_order_and_keeps_unlisted_counts() {
    let mut p = pool(&["b"]);
    p.pick(None, &[], false);
    p.apply_snapshot(&[("z", 4), ("a", 1)], &mut Vec::new())
        .unwrap();
    let names: Vec<&str> = p.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["b", "z", "a"]);
    assert_eq!(counts(&p), [1, 4, 1]);
    assert_eq!(p.get("z").unwrap().weight(), 1);
}

#[test]
fn rejected_snapshot_changes_nothing() {
    let mut p = pool(&["a", "b"]);
    let before = p.clone();
    assert_eq!(
        p.apply_snapshot(&[("a", 9), ("new", 1), ("a", 2)], &mut Vec::new()),
        Err(EngineError::DuplicateBackend("a".into()))
    );
    assert_eq!(
        p.apply_snapshot(&[("a", 9), ("", 1)], &mut Vec::new()),
        Err(EngineError::EmptyName)
    );
    assert_eq!(p, before);
}

#[test]
fn duplicate_and_empty_names_are_refused_at_creation() {
    let dup = [
        BackendSpec::named("a"),
        BackendSpec::named("b"),
        BackendSpec::named("a"),
    ];
    assert_eq!(
        Pool::<()>::with_backends(dup, Policy::default()),
        Err(EngineError::DuplicateBackend("a".into()))
    );
    let empty = [BackendSpec::named("a"), BackendSpec::named("")];
    assert_eq!(
        Pool::<()>::with_backends(empty, Policy::default()),
        Err(EngineError::EmptyName)
    );
}

#[test]
fn empty_pool_has_no_backend_and_counts_the_rejection() {
    let mut p = Pool::new();
    assert_eq!(p.pick(None, &[], false).chosen, Err(NoBackend::EmptyPool));
    assert_eq!(NoBackend::EmptyPool.to_string(), "no backend available");
    assert_eq!(p.rejected(), 1);
}

#[test]
fn a_saturated_count_is_full_not_wrapped() {
    let mut p = Pool::new();
    p.apply_snapshot(
        &[("full", MAX_COUNT), ("b", MAX_COUNT - 1)],
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(p.pick(None, &[], false).chosen, Ok(1));
    assert_eq!(counts(&p), [MAX_COUNT, MAX_COUNT]);
    let none = p.pick(None, &[], false).chosen.unwrap_err();
    assert_eq!(
        none,
        NoBackend::NoneEligible {
            down: 0,
            drained: 0,
            full: 2,
            tried: 0,
        }
    );
    assert_eq!(
        none.to_string(),
        "no backend available: all 2 backends are full (at their connection limit)"
    );
    p.complete("full", true, None).unwrap();
    assert_eq!(p.pick(None, &[], false).chosen, Ok(0));
}

#[test]
fn completion_decrements_and_refuses_unknown_or_idle() {
    let mut p = pool(&["a", "b"]);
    p.pick(None, &[], false);
    assert_eq!(p.complete("a", true, None), Ok(0));
    assert_eq!(counts(&p), [0, 0]);
    let before = p.clone();
    assert_eq!(
        p.complete("a", true, None),
        Err(EngineError::NoActiveConnection("a".into()))
    );
    assert_eq!(
        p.complete("zz", true, None),
        Err(EngineError::UnknownBackend("zz".into()))
    );
    assert_eq!(p, before);
}

#[test]
fn completion_by_id_and_set_counts_match_the_named_ones() {
    let mut p = pool(&["a", "b", "c"]);
    let id = |p: &Pool, i: usize| p.id_at(i).expect("in the pool");
    let (a, b) = (id(&p, 0), id(&p, 1));
    p.set_active(b, 3).unwrap();
    // b now holds 3: least-connections goes to a, then c.
    assert_eq!(p.pick(None, &[], false).chosen, Ok(0));
    assert_eq!(p.pick(None, &[], false).chosen, Ok(2));
    assert_eq!(p.release(b, false, Some(5.0)), Ok(Some(1)));
    assert_eq!(counts(&p), [1, 2, 1]);
    let stats = p.get("b").unwrap().stats();
    assert_eq!(
        (stats.completed, stats.failed, stats.mean_duration_ms()),
        (1, 1, Some(5.0))
    );
    let before = p.clone();
    // An id this pool never gave: no backend to count, and no error.
    let mut other = p.clone();
    other.add(BackendSpec::named("d")).unwrap();
    let unknown = id(&other, 3);
    assert_eq!(p.release(unknown, true, None), Ok(None));
    assert_eq!(
        p.set_active(unknown, 1),
        Err(EngineError::NoPosition(usize::MAX))
    );
    p.set_active(a, 0).unwrap();
    assert_eq!(
        p.release(a, true, None),
        Err(EngineError::NoActiveConnection("a".into()))
    );
    p.set_active(a, 1).unwrap();
    assert_eq!(p, before);
    // The index follows set counts: b at 0 is now the least loaded.
    p.set_active(b, 0).unwrap();
    assert_eq!(p.pick(None, &[], false).chosen, Ok(1));
}

#[test]
fn ids_survive_removals_before_them_and_die_with_their_backend() {
    let mut p = pool(&["a", "b", "c"]);
    let ids: Vec<BackendId> = (0..3).filter_map(|i| p.id_at(i)).collect();
    p.remove("a").unwrap();
    assert_eq!(p.position_of(ids[0]), None);
    assert_eq!(p.position_of(ids[1]), Some(0));
    assert_eq!(p.position_of(ids[2]), Some(1));
    p.add(BackendSpec::named("a")).unwrap();
    let again = p.id_at(2).unwrap();
    assert_ne!(again, ids[0], "a name added again is a different backend");
    assert_eq!(p.position_of(ids[0]), None);
    assert_eq!(p.id_at(0), Some(ids[1]));
    // Appended by a snapshot: an id too.
    p.apply_snapshot(&[("z", 2)], &mut Vec::new()).unwrap();
    let z = p.id_at(3).unwrap();
    assert_eq!(p.release(z, true, None), Ok(Some(3)));
    assert_eq!(p.get("z").unwrap().active(), 1);
}

// --- weights ---------------------------------------------------------------

#[test]
fn weighted_least_connections_follows_the_seed_article() {
    // Weights 4, 2, 1 with 8, 3, 1 connections: scores 2, 1.5, 1.
    let mut p = pool_with(
        &[spec("high", 4), spec("medium", 2), spec("low", 1)],
        Policy::default(),
    );
    p.apply_snapshot(&[("high", 8), ("medium", 3), ("low", 1)], &mut Vec::new())
        .unwrap();
    // low (1 → 2/1 = 2), then medium (1.5 → 4/2 = 2), then all tie at 2.
    assert_eq!(picks(&mut p, 3), ["low", "medium", "high"]);
    assert_eq!(counts(&p), [9, 4, 2]);
}

#[test]
fn scores_compare_exactly_without_floats() {
    // 333333333333333333 / 999999999999999999 is exactly 1/3; as f64 the two
    // differ. A true tie goes to the lower index.
    let mut p = pool_with(
        &[spec("a", 999_999_999_999_999_999), spec("b", 3)],
        Policy::default(),
    );
    p.apply_snapshot(&[("a", 333_333_333_333_333_333), ("b", 1)], &mut Vec::new())
        .unwrap();
    assert_eq!(p.pick(None, &[], false).chosen, Ok(0));
    // And the largest values do not overflow the comparison.
    let mut p = pool_with(
        &[spec("a", u64::MAX), spec("b", u64::MAX - 1)],
        Policy::default(),
    );
    p.apply_snapshot(&[("a", u64::MAX - 1), ("b", u64::MAX - 2)], &mut Vec::new())
        .unwrap();
    // (2^64-2)/(2^64-1) vs (2^64-3)/(2^64-2): the second is smaller.
    assert_eq!(p.pick(None, &[], false).chosen, Ok(1));
}

#[test]
fn a_drained_backend_keeps_its_connections_and_gets_no_new_ones() {
    let mut p = pool_with(&[spec("a", 0), spec("b", 1)], Policy::default());
    p.apply_snapshot(&[("a", 3), ("b", 10)], &mut Vec::new())
        .unwrap();
    assert_eq!(picks(&mut p, 2), ["b", "b"]);
    assert_eq!(counts(&p), [3, 12]);
    p.complete("a", true, None).unwrap();
    assert_eq!(counts(&p), [2, 12]);
}

#[test]
fn max_connections_makes_a_backend_full() {
    let limited = BackendSpec {
        name: "a",
        weight: 1,
        max_connections: Some(2),
    };
    let mut p = pool_with(&[limited, spec("b", 1)], Policy::default());
    p.apply_snapshot(&[("b", 5)], &mut Vec::new()).unwrap();
    assert_eq!(picks(&mut p, 3), ["a", "a", "b"]);
    let zero = BackendSpec {
        name: "z",
        weight: 1,
        max_connections: Some(0),
    };
    let mut p = pool_with(&[zero], Policy::default());
    let none = p.pick(None, &[], false).chosen.unwrap_err();
    assert_eq!(
        none.to_string(),
        "no backend available: the only backend is full (at its connection limit)"
    );
}

#[test]
fn no_backend_says_why() {
    let mut p = pool(&["a", "b", "c"]);
    mark_down(&mut p, "a");
    p.change(
        "b",
        BackendChange {
            weight: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    p.change(
        "c",
        BackendChange {
            max_connections: Some(Some(0)),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        p.pick(None, &[], false).chosen.unwrap_err().to_string(),
        "no backend available: 1 down, 1 drained (weight 0), 1 full (at their connection limit)"
    );
    let mut p = pool(&["a", "b"]);
    for name in ["a", "b"] {
        mark_down(&mut p, name);
    }
    assert_eq!(
        p.pick(None, &[], false).chosen.unwrap_err().to_string(),
        "no backend available: all 2 backends are down"
    );
    let mut p = pool(&["a", "b"]);
    for name in ["a", "b"] {
        p.change(
            name,
            BackendChange {
                weight: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
    }
    assert_eq!(
        p.pick(None, &[], false).chosen.unwrap_err().to_string(),
        "no backend available: all 2 backends are drained (weight 0)"
    );
    assert_eq!(p.rejected(), 1);
}

// --- algorithms ------------------------------------------------------------

#[test]
fn smooth_round_robin_spreads_weights_5_1_1_as_nginx_does() {
    let mut p = pool_with(
        &[spec("a", 5), spec("b", 1), spec("c", 1)],
        policy(Algorithm::RoundRobin, TieBreak::LowestIndex),
    );
    let expected = ["a", "a", "b", "a", "c", "a", "a"];
    assert_eq!(picks(&mut p, 7), expected);
    assert_eq!(picks(&mut p, 7), expected, "the cycle repeats");
    assert_eq!(
        counts(&p),
        [10, 2, 2],
        "counts are kept under round-robin too"
    );
}

#[test]
fn smooth_round_robin_skips_ineligible_and_keeps_current_weights_across_changes() {
    let mut p = pool_with(
        &[spec("a", 5), spec("b", 1), spec("c", 1)],
        policy(Algorithm::RoundRobin, TieBreak::LowestIndex),
    );
    assert_eq!(picks(&mut p, 2), ["a", "a"]);
    // Current weights now a: 5-7+5-7 = -4, b: 2, c: 2. Adding d (weight 1,
    // current 0) keeps them; the total becomes 8.
    p.add(spec("d", 1)).unwrap();
    // a  1, b  3, c 3, d 1 → b (the first of b, c); b = 3-8 = -5
    // a  6, b -4, c 4, d 2 → a;                     a = 6-8 = -2
    // a  3, b -3, c 5, d 3 → c;                     c = 5-8 = -3
    assert_eq!(picks(&mut p, 3), ["b", "a", "c"]);
    mark_down(&mut p, "a");
    let names = picks(&mut p, 6);
    assert!(!names.contains(&"a".to_owned()), "{names:?}");
}

#[test]
fn random_is_reproducible_under_a_seed() {
    let make = |seed| {
        let mut p = pool_with(
            &[spec("a", 1), spec("b", 2), spec("c", 3)],
            Policy {
                algorithm: Algorithm::Random,
                tie_break: TieBreak::LowestIndex,
                seed,
            },
        );
        picks(&mut p, 50)
    };
    assert_eq!(make(7), make(7));
    assert_ne!(make(7), make(8));
}

#[test]
fn random_is_fair_to_weights() {
    let mut p = pool_with(
        &[spec("three", 3), spec("one", 1)],
        policy(Algorithm::Random, TieBreak::LowestIndex),
    );
    let n = 20_000;
    let three = picks(&mut p, n).iter().filter(|x| *x == "three").count();
    // Expect 15000 with a standard deviation of about 61: ±600 is ten of
    // them, so this cannot fail by chance (and the seed is fixed anyway).
    assert!((14_400..=15_600).contains(&three), "{three} of {n}");
}

#[test]
fn random_never_picks_an_ineligible_backend() {
    let mut p = pool_with(
        &[spec("a", 5), spec("drained", 0), spec("c", 1)],
        policy(Algorithm::Random, TieBreak::LowestIndex),
    );
    mark_down(&mut p, "a");
    assert!(picks(&mut p, 200).iter().all(|n| n == "c"));
}

#[test]
fn power_of_two_choices_with_two_backends_is_least_connections() {
    let mut p = pool(&["a", "b"]);
    p = Pool {
        policy: policy(Algorithm::PowerOfTwoChoices, TieBreak::LowestIndex),
        ..p
    };
    p.apply_snapshot(&[("a", 5), ("b", 2)], &mut Vec::new())
        .unwrap();
    // b until it reaches 5, then the tie goes to a, then alternate.
    assert_eq!(picks(&mut p, 5), ["b", "b", "b", "a", "b"]);
}

#[test]
fn power_of_two_choices_prefers_the_lighter_of_two_draws() {
    let mut p = pool_with(
        &[spec("a", 1), spec("b", 1), spec("c", 1), spec("d", 1)],
        policy(Algorithm::PowerOfTwoChoices, TieBreak::LowestIndex),
    );
    p.apply_snapshot(
        &[("a", 1000), ("b", 1000), ("c", 1000), ("d", 0)],
        &mut Vec::new(),
    )
    .unwrap();
    // The heaviest three can win only against each other; d wins whenever it
    // is drawn (half of all pairs).
    for _ in 0..100 {
        let pick = p.pick(None, &[], true);
        let e = pick.explanation.unwrap();
        let [x, y] = e.sampled.unwrap();
        assert!(x < y);
        let chosen = pick.chosen.unwrap();
        if x == 3 || y == 3 {
            assert_eq!(chosen, 3);
        } else {
            assert!(chosen == x || chosen == y);
        }
        p.complete(
            p.get_index(chosen).unwrap().0.to_owned().as_str(),
            true,
            None,
        )
        .unwrap();
    }
}

#[test]
fn power_of_two_choices_with_one_eligible_takes_it() {
    let mut p = pool_with(
        &[spec("a", 0), spec("b", 1)],
        policy(Algorithm::PowerOfTwoChoices, TieBreak::LowestIndex),
    );
    assert_eq!(picks(&mut p, 3), ["b", "b", "b"]);
}

#[test]
fn a_request_may_use_another_algorithm_than_the_default() {
    let mut p = pool_with(&[spec("a", 5), spec("b", 1)], Policy::default());
    p.apply_snapshot(&[("a", 0), ("b", 0)], &mut Vec::new())
        .unwrap();
    assert_eq!(
        p.pick(Some(Algorithm::RoundRobin), &[], false).chosen,
        Ok(0)
    );
    assert_eq!(
        p.pick(None, &[], false).chosen,
        Ok(1),
        "default is least-connections"
    );
}

// --- tie-breaks ------------------------------------------------------------

#[test]
fn round_robin_tie_break_rotates_among_equals() {
    let mut p = pool_with(
        &[spec("a", 1), spec("b", 1), spec("c", 1)],
        policy(Algorithm::LeastConnections, TieBreak::RoundRobin),
    );
    let mut seen = Vec::new();
    for _ in 0..5 {
        let index = p.pick(None, &[], false).chosen.unwrap();
        let name = p.get_index(index).unwrap().0.to_owned();
        p.complete(&name, true, None).unwrap();
        seen.push(name);
    }
    assert_eq!(seen, ["a", "b", "c", "a", "b"]);
}

#[test]
fn round_robin_tie_break_counts_from_the_previous_pick_of_any_algorithm() {
    let mut p = pool_with(
        &[spec("a", 1), spec("b", 1), spec("c", 1), spec("d", 1)],
        policy(Algorithm::LeastConnections, TieBreak::RoundRobin),
    );
    p.apply_snapshot(&[("a", 0), ("b", 5), ("c", 0), ("d", 0)], &mut Vec::new())
        .unwrap();
    // A round-robin pick lands on a (position 0)...
    assert_eq!(
        p.pick(Some(Algorithm::RoundRobin), &[], false).chosen,
        Ok(0)
    );
    p.complete("a", true, None).unwrap();
    // ...so among a, c, d the tie goes to the first after position 0: c.
    assert_eq!(p.pick(None, &[], false).chosen, Ok(2));
    p.complete("c", true, None).unwrap();
    assert_eq!(p.pick(None, &[], false).chosen, Ok(3));
    p.complete("d", true, None).unwrap();
    assert_eq!(p.pick(None, &[], false).chosen, Ok(0), "wraps around");
}

#[test]
fn round_robin_tie_break_follows_a_removal() {
    let mut p = pool_with(
        &[spec("a", 1), spec("b", 1), spec("c", 1)],
        policy(Algorithm::LeastConnections, TieBreak::RoundRobin),
    );
    assert_eq!(p.pick(None, &[], false).chosen, Ok(0));
    p.complete("a", true, None).unwrap();
    assert_eq!(p.pick(None, &[], false).chosen, Ok(1)); // b
    p.complete("b", true, None).unwrap();
    p.remove("b").unwrap();
    // The pick after b's place is c, now at position 1.
    assert_eq!(p.pick(None, &[], false).chosen, Ok(1));
    assert_eq!(p.get_index(1).unwrap().0, "c");
}

#[test]
fn random_tie_break_is_reproducible_and_stays_among_the_tied() {
    let run = || {
        let mut p = pool_with(
            &[spec("a", 1), spec("b", 1), spec("c", 1), spec("busy", 1)],
            policy(Algorithm::LeastConnections, TieBreak::Random),
        );
        p.apply_snapshot(&[("busy", 1000)], &mut Vec::new())
            .unwrap();
        (0..60)
            .map(|_| {
                let i = p.pick(None, &[], false).chosen.unwrap();
                let name = p.get_index(i).unwrap().0.to_owned();
                p.complete(&name, true, None).unwrap();
                name
            })
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    assert!(!first.contains(&"busy".to_owned()));
    for name in ["a", "b", "c"] {
        assert!(
            first.contains(&name.to_owned()),
            "{name} never chosen: {first:?}"
        );
    }
}

// --- pool changes and statistics -------------------------------------------

#[test]
fn add_remove_and_change_backends() {
    let mut p = pool(&["a"]);
    assert_eq!(p.add(spec("b", 2)), Ok(1));
    assert_eq!(
        p.add(spec("a", 1)),
        Err(EngineError::AlreadyInPool("a".into()))
    );
    assert_eq!(p.add(spec("", 1)), Err(EngineError::EmptyName));
    p.pick(None, &[], false);
    assert_eq!(p.remove("a"), Ok(0));
    assert_eq!(p.remove("a"), Err(EngineError::UnknownBackend("a".into())));
    assert_eq!(
        p.complete("a", true, None),
        Err(EngineError::UnknownBackend("a".into()))
    );
    let change = BackendChange {
        healthy: Some(false),
        weight: Some(7),
        max_connections: Some(Some(3)),
        ramp: Some(40),
    };
    assert_eq!(p.change("b", change), Ok(0));
    let b = p.get("b").unwrap();
    assert_eq!(
        (b.healthy(), b.weight(), b.max_connections(), b.ramp()),
        (false, 7, Some(3), 40)
    );
    p.change(
        "b",
        BackendChange {
            max_connections: Some(None),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p.get("b").unwrap().max_connections(), None);
    assert_eq!(
        p.change("zz", BackendChange::default()),
        Err(EngineError::UnknownBackend("zz".into()))
    );
}

#[test]
fn statistics_count_picks_completions_failures_and_durations() {
    let mut p = pool(&["a", "b"]);
    picks(&mut p, 3); // a, b, a
    p.complete("a", true, Some(10.0)).unwrap();
    p.complete("a", false, Some(30.0)).unwrap();
    p.complete("b", false, None).unwrap();
    let a = p.get("a").unwrap().stats();
    assert_eq!((a.requests, a.completed, a.failed), (2, 2, 1));
    assert_eq!(a.mean_duration_ms(), Some(20.0));
    let b = p.get("b").unwrap().stats();
    assert_eq!((b.requests, b.completed, b.failed), (1, 1, 1));
    assert_eq!(b.mean_duration_ms(), None);
}

#[test]
fn durations_out_of_range_cannot_make_the_mean_unknown() {
    let mut p = pool(&["a"]);
    picks(&mut p, 4);
    p.complete("a", true, Some(f64::MAX)).unwrap();
    p.complete("a", true, Some(f64::INFINITY)).unwrap();
    p.complete("a", true, Some(-5.0)).unwrap();
    // Not a number: the duration is unknown, the completion still counts.
    p.complete("a", true, Some(f64::NAN)).unwrap();
    let a = p.get("a").unwrap().stats();
    assert_eq!(a.completed, 4);
    assert_eq!(a.mean_duration_ms(), Some(2.0 * MAX_DURATION_MS / 3.0));
}

#[test]
fn explanations_show_every_candidate_and_the_tie() {
    let mut p = pool_with(
        &[spec("a", 2), spec("b", 1), spec("c", 1), spec("d", 0)],
        policy(Algorithm::LeastConnections, TieBreak::LowestIndex),
    );
    p.apply_snapshot(&[("a", 2), ("b", 1), ("c", 3)], &mut Vec::new())
        .unwrap();
    mark_down(&mut p, "c");
    let pick = p.pick(None, &[], true);
    assert_eq!(pick.chosen, Ok(0));
    let e = pick.explanation.unwrap();
    assert_eq!(e.algorithm, Algorithm::LeastConnections);
    let reasons: Vec<_> = e.candidates.iter().map(|c| c.ineligible).collect();
    assert_eq!(
        reasons,
        [
            None,
            None,
            Some(Ineligible::Down),
            Some(Ineligible::Drained)
        ]
    );
    assert_eq!(
        e.candidates[0].score,
        Some(Score::Ratio {
            active: 2,
            weight: 2,
            ramp: FULL_RAMP,
        })
    );
    assert_eq!(e.candidates[0].active, 2, "as it stood before the pick");
    assert_eq!(e.candidates[2].score, None);
    assert_eq!(
        e.tie,
        Some(Tie {
            tied: vec![0, 1],
            rule: TieBreak::LowestIndex,
            after: None
        })
    );
    // Without a tie there is no tie record; without explain, no explanation.
    let pick = p.pick(None, &[], true);
    assert_eq!(pick.chosen, Ok(1));
    assert_eq!(pick.explanation.unwrap().tie, None);
    assert_eq!(p.pick(None, &[], false).explanation, None);
}

#[test]
fn algorithm_and_tie_break_names_round_trip() {
    for &(name, algorithm) in Algorithm::NAMES {
        assert_eq!(Algorithm::from_name(name), Some(algorithm));
    }
    assert_eq!(
        Algorithm::from_name("weighted-least-connections"),
        Some(Algorithm::LeastConnections)
    );
    assert_eq!(Algorithm::LeastConnections.name(), "least-connections");
    for &(name, rule) in TieBreak::NAMES {
        assert_eq!(TieBreak::from_name(name), Some(rule));
        assert_eq!(rule.name(), name);
    }
    assert_eq!(Algorithm::from_name("round_robin"), None);
}

#[test]
fn a_backend_without_payload_stays_small() {
    // A pool may hold millions: the id's slot fits in the padding.
    assert_eq!(std::mem::size_of::<Backend>(), 72);
}

// --- slow start: ramps -------------------------------------------------------

fn ramp_to(p: &mut Pool, name: &str, ramp: u8) {
    p.change(
        name,
        BackendChange {
            ramp: Some(ramp),
            ..Default::default()
        },
    )
    .unwrap();
}

fn load(active: u64, weight: u64, ramp: u8) -> Load {
    Load {
        active,
        weight,
        ramp,
    }
}

#[test]
fn a_backend_starts_at_its_full_ramp_and_takes_only_1_to_100() {
    let mut p = pool(&["a", "b"]);
    assert_eq!(p.get("a").unwrap().ramp(), FULL_RAMP);
    ramp_to(&mut p, "a", 1);
    assert_eq!(p.get("a").unwrap().ramp(), 1);
    let before = p.clone();
    for bad in [0, 101, u8::MAX] {
        let change = BackendChange {
            healthy: Some(false),
            ramp: Some(bad),
            ..Default::default()
        };
        assert_eq!(p.change("a", change), Err(EngineError::RampOutOfRange(bad)));
        assert_eq!(p, before, "nothing of a refused change is applied");
    }
    assert_eq!(
        EngineError::RampOutOfRange(0).to_string(),
        "a ramp is the percent of a backend's weight in effect, from 1 to 100, not 0"
    );
    ramp_to(&mut p, "a", FULL_RAMP);
    assert_eq!(p.get("a").unwrap().ramp(), FULL_RAMP);
}

#[test]
fn a_ramped_backend_gets_the_share_its_effective_weight_gives() {
    // b comes back with 0 connections while a and c hold 9 each. At ramp
    // 10 its weight in effect is 0.1, so its load is 10 × its count: 0,
    // then 10, above the others' 9. So b, then a and c (9 each, a first),
    // then all three at 10: a, first in pool order.
    let mut p = pool(&["a", "b", "c"]);
    p.apply_snapshot(&[("a", 9), ("b", 0), ("c", 9)], &mut Vec::new())
        .unwrap();
    ramp_to(&mut p, "b", 10);
    assert_eq!(picks(&mut p, 4), ["b", "a", "c", "a"]);
    assert_eq!(counts(&p), [11, 1, 10]);
    // Stepped up to 50: b's load is 2 × its count, 2 to 10 over its next
    // five picks (the last a tie with c's 10, which b wins as the earlier
    // in pool order), then 12: c.
    ramp_to(&mut p, "b", 50);
    assert_eq!(picks(&mut p, 6), ["b", "b", "b", "b", "b", "c"]);
    // At its full ramp the same backend would have taken all of them.
    let mut full = pool(&["a", "b", "c"]);
    full.apply_snapshot(&[("a", 9), ("b", 0), ("c", 9)], &mut Vec::new())
        .unwrap();
    assert_eq!(picks(&mut full, 9), ["b"; 9]);
}

#[test]
fn power_of_two_choices_compares_at_the_ramp() {
    let mut p = pool_with(
        &[spec("a", 1), spec("b", 1)],
        policy(Algorithm::PowerOfTwoChoices, TieBreak::LowestIndex),
    );
    p.apply_snapshot(&[("a", 3), ("b", 1)], &mut Vec::new())
        .unwrap();
    // b: 1 ÷ 0.25 = 4 against 3, then a: 4 ÷ 1 ties with b, a wins the tie.
    ramp_to(&mut p, "b", 25);
    assert_eq!(picks(&mut p, 2), ["a", "a"]);
    let e = p.pick(None, &[], true).explanation.unwrap();
    assert_eq!(
        e.candidates[1].score,
        Some(Score::Ratio {
            active: 1,
            weight: 1,
            ramp: 25
        })
    );
    assert_eq!(e.candidates[1].ramp, 25);
}

#[test]
fn round_robin_and_random_ignore_the_ramp() {
    let mut p = pool_with(
        &[spec("a", 1), spec("b", 1)],
        policy(Algorithm::RoundRobin, TieBreak::LowestIndex),
    );
    ramp_to(&mut p, "b", 1);
    assert_eq!(picks(&mut p, 4), ["a", "b", "a", "b"]);
    let run = |ramp| {
        let mut p = pool_with(
            &[spec("a", 1), spec("b", 3)],
            policy(Algorithm::Random, TieBreak::LowestIndex),
        );
        ramp_to(&mut p, "b", ramp);
        picks(&mut p, 50)
    };
    assert_eq!(run(1), run(FULL_RAMP));
}

#[test]
fn loads_with_ramps_compare_exactly_at_the_extremes() {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let max = u64::MAX;
    // Equal ramps cancel, at any ramp.
    assert_eq!(cmp_load(load(max, max, 7), load(max, max, 7)), Equal);
    assert_eq!(cmp_load(load(max, 1, 1), load(max - 1, 1, 1)), Greater);
    // A load of 100 (at 1% of its weight) against 1: the products are
    // (2^64-1)² × 100 and (2^64-1)² × 1, the first beyond 128 bits.
    assert_eq!(cmp_load(load(max, max, 1), load(max, max, 100)), Greater);
    assert_eq!(cmp_load(load(max, max, 100), load(max, max, 1)), Less);
    // One ramp step apart: (2^64-1)² × 100 against (2^64-1)² × 99, both
    // of 135 bits.
    assert_eq!(cmp_load(load(max, max, 99), load(max, max, 100)), Greater);
    assert_eq!(cmp_load(load(max, max, 100), load(max, max, 99)), Less);
    // Products whose low 64 bits carry into the next: (2^64-1) × 100
    // against (2^64-1) × 50, and a tie at a load of 2^64-1 each.
    assert_eq!(cmp_load(load(max, 1, 50), load(max, 1, 100)), Greater);
    assert_eq!(cmp_load(load(max, 2, 50), load(max, 1, 100)), Equal);
    // 100 ÷ (1 × 1%) = 10000 ÷ (1 × 100%): equal loads across ramps.
    assert_eq!(cmp_load(load(100, 1, 1), load(10_000, 1, 100)), Equal);
    assert_eq!(cmp_load(load(100, 1, 1), load(10_001, 1, 100)), Less);
    // An exact tie across ramps with the largest values: (2^63-1) ÷
    // ((2^64-2) × 50%) = 1 = (2^64-1) ÷ (2^64-1), and one either side.
    let half = (1u64 << 63) - 1;
    assert_eq!(
        cmp_load(load(half, max - 1, 50), load(max, max, 100)),
        Equal
    );
    assert_eq!(
        cmp_load(load(half + 1, max - 1, 50), load(max, max, 100)),
        Greater
    );
    assert_eq!(cmp_load(load(half, max, 50), load(max, max, 100)), Less);
    // Zero loads tie whatever the ramp.
    assert_eq!(cmp_load(load(0, max, 1), load(0, 1, 100)), Equal);
    assert_eq!(cmp_load(load(0, max, 1), load(1, max, 100)), Less);
}

#[test]
fn an_explanation_shows_excluded_backends_and_a_refusal_counts_them_as_tried() {
    let mut p = pool(&["a", "b", "c"]);
    mark_down(&mut p, "c");
    let (a, c) = (p.id_at(0).unwrap(), p.id_at(2).unwrap());
    let pick = p.pick_with(None, &[a, c], true);
    assert_eq!(pick.chosen, Ok(1));
    let reasons: Vec<_> = pick
        .explanation
        .unwrap()
        .candidates
        .iter()
        .map(|c| c.ineligible)
        .collect();
    // An excluded backend that is down anyway shows why it is down.
    assert_eq!(
        reasons,
        [Some(Ineligible::Excluded), None, Some(Ineligible::Down)]
    );
    let b = p.id_at(1).unwrap();
    let pick = p.pick_with(None, &[a, b], true);
    assert_eq!(
        pick.chosen.unwrap_err().to_string(),
        "no backend available: 1 down, 2 already tried"
    );
    assert_eq!(p.rejected(), 0, "pick_with counts no refusal");
    assert_eq!(counts(&p), [0, 1, 0]);
    // The exclusion ends with the pick.
    assert_eq!(p.pick(None, &[], false).chosen, Ok(0));
}

#[test]
fn one_slow_start_ending_leaves_the_others_ramped() {
    let mut p = pool(&["a", "b", "c"]);
    ramp_to(&mut p, "b", 10);
    ramp_to(&mut p, "c", 50);
    p.apply_snapshot(&[("a", 3), ("b", 1), ("c", 3)], &mut Vec::new())
        .unwrap();
    // c's slow start ends; b's does not: its 1 connection still weighs 10.
    ramp_to(&mut p, "c", FULL_RAMP);
    assert_eq!(picks(&mut p, 3), ["a", "c", "a"]);
    // b's ends too: its 1 connection is 1 again.
    ramp_to(&mut p, "b", FULL_RAMP);
    assert_eq!(picks(&mut p, 2), ["b", "b"]);
}
