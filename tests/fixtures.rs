//! Replays every case in `fixtures/` against the real binary, as the
//! grader does, and prints the same `N passed, N failed` line as
//! `leastconn replay`.

use leastconn::fixture;
use std::path::{Path, PathBuf};

#[test]
fn every_fixture_passes_against_the_binary() {
    let bin = Path::new(env!("CARGO_BIN_EXE_leastconn"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let cases = fixture::load_cases(&[root]).expect("fixtures load");
    // The course's own cases must be among them.
    for required in [
        "course/route-to-backend-with-fewest-connections",
        "course/tie-breaking-when-connections-equal",
        "course/worked-example-three-backends-no-snapshots",
    ] {
        assert!(
            cases.iter().any(|c| c.name.ends_with(required)),
            "missing fixture {required}"
        );
    }
    let mut report = Vec::new();
    let tally = fixture::replay_all(bin, &cases, fixture::DEFAULT_TIMEOUT, &mut report)
        .expect("report written");
    let report = String::from_utf8_lossy(&report);
    println!("{report}");
    assert!(tally.passed >= 60, "too few cases ran: {report}");
    assert!(tally.failed.is_empty(), "{report}");
}
