//! The scripts in `scripts/` as users run them, with `CARGO_TARGET_DIR`
//! set. A real release build would take minutes, so each test runs a copy of
//! the script in a scratch tree whose `cargo` (first on `PATH`) only puts
//! the already built binary where the build would have.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_leastconn");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A scratch directory, removed when dropped (even when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("leastconn-scripts-{name}-{}", std::process::id()));
        // A leftover from an earlier run with the same process id.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lays out `root/scripts/SCRIPT` (a copy of the real one), `root/fixtures`
/// (a link to the real fixtures) and `root/bin/cargo` (the stand-in build).
fn tree(root: &Path, script: &str) {
    std::fs::create_dir_all(root.join("scripts")).expect("scripts/");
    std::fs::copy(
        Path::new(ROOT).join("scripts").join(script),
        root.join("scripts").join(script),
    )
    .expect("copy of the script");
    std::os::unix::fs::symlink(Path::new(ROOT).join("fixtures"), root.join("fixtures"))
        .expect("link to the fixtures");
    std::fs::create_dir_all(root.join("bin")).expect("bin/");
    let cargo = root.join("bin/cargo");
    // Stands in for `cargo build --release`: the node is built already, so
    // it is only linked where cargo would put it. It reads CARGO_TARGET_DIR
    // relative to where it runs, as cargo does.
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\nset -eu\ntarget=\"${{CARGO_TARGET_DIR:-target}}\"\nmkdir -p \"$target/release\"\nln -sf '{BIN}' \"$target/release/leastconn\"\n"
        ),
    )
    .expect("stand-in cargo");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755))
        .expect("stand-in cargo is executable");
}

/// Runs `program` in `dir` with `CARGO_TARGET_DIR=target_dir` and the
/// stand-in cargo first on `PATH`, for at most two minutes; checks that it
/// succeeds and returns its standard output.
fn run(root: &Path, dir: &Path, program: &Path, target_dir: &str) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![root.join("bin")];
    paths.extend(std::env::split_paths(&path));
    let (out, err) = (root.join("stdout"), root.join("stderr"));
    let mut child = Command::new(program)
        .current_dir(dir)
        .env("PATH", std::env::join_paths(paths).expect("PATH"))
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("the script starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not finish in 2 minutes", program.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out).expect("stdout");
    let stderr = std::fs::read_to_string(&err).expect("stderr");
    assert!(
        status.success(),
        "{} exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        program.display()
    );
    stdout
}

/// The fixture cases under `fixtures/`.
fn cases() -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("fixtures/")
            .map(|entry| entry.expect("fixture entry").path())
            .map(|path| {
                if path.is_dir() {
                    count(&path)
                } else {
                    usize::from(path.extension().is_some_and(|e| e == "in"))
                }
            })
            .sum()
    }
    count(&Path::new(ROOT).join("fixtures"))
}

fn assert_all_passed(stdout: &str) {
    let summary = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        summary,
        format!("{} passed, 0 failed", cases()),
        "stdout:\n{stdout}"
    );
}

/// One test at a time: a script written by one test while another forks
/// would be inherited open for writing by that child, and executing it
/// would fail with "Text file busy".
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn replay_fixtures_runs_the_binary_built_under_an_absolute_cargo_target_dir() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("absolute");
    let root = &scratch.0;
    tree(root, "replay-fixtures");
    let target = root.join("elsewhere/build");
    let stdout = run(
        root,
        root,
        &root.join("scripts/replay-fixtures"),
        target.to_str().expect("a UTF-8 path"),
    );
    assert_all_passed(&stdout);
    assert!(target.join("release/leastconn").exists());
    assert!(!root.join("target").exists());
}

#[test]
fn a_relative_cargo_target_dir_is_relative_to_where_the_script_is_run() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("relative");
    let root = &scratch.0;
    tree(root, "replay-fixtures");
    let cwd = root.join("work");
    std::fs::create_dir_all(&cwd).expect("work/");
    let stdout = run(root, &cwd, &root.join("scripts/replay-fixtures"), "build");
    assert_all_passed(&stdout);
    assert!(cwd.join("build/release/leastconn").exists());
    assert!(!root.join("build").exists());
}
