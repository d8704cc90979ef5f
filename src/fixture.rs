//! Fixtures: recorded cases replayed against the node binary.
//!
//! A case is a set of files sharing a name, `NAME.*`, anywhere under a
//! fixtures directory:
//!
//! - `NAME.in` (required): exactly the bytes piped to the node's stdin.
//! - `NAME.out` (required): the expected messages, JSON values one after
//!   another (any layout). The i-th expected value must match the i-th
//!   output message as a JSON subset: every key the expected object names
//!   must be present in the output with a matching value, recursively;
//!   arrays and scalars must be equal. `{}` matches any message.
//! - `NAME.case.json` (optional): an object with any of
//!   - `"messages"`: the exact number of output messages;
//!   - `"args"`: command-line arguments for the node (default none);
//!   - `"status"`: the expected exit status (default 0);
//!   - `"stderr"`: strings that must appear in stderr, in this order;
//!   - `"diagnostics"`: the exact number of lines on stderr;
//!   - `"key_order"`: `true` to also require that the keys an expected
//!     object names appear in the output in the same order.
//!
//! Whatever the case says, every line the node writes to stdout must be one
//! reply envelope: a JSON object with string `src` and `dest` and an object
//! `body` with a string `type`.

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a case may run, as the course's grader allows.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The optional settings of a case (`NAME.case.json`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub messages: Option<usize>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub status: i32,
    #[serde(default)]
    pub stderr: Vec<String>,
    pub diagnostics: Option<usize>,
    #[serde(default)]
    pub key_order: bool,
}

/// One fixture case.
#[derive(Clone, Debug)]
pub struct Case {
    /// The case's path without extension, relative to where it was found.
    pub name: String,
    pub input: Vec<u8>,
    pub expected: Vec<Value>,
    pub settings: Settings,
}

/// Finds and loads every case under the given files and directories, in
/// name order. A path may name a case's `.in` file or a directory.
pub fn load_cases(paths: &[PathBuf]) -> anyhow::Result<Vec<Case>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.is_dir() {
            collect_inputs(path, &mut inputs)?;
        } else if path.extension().is_some_and(|e| e == "in") {
            inputs.push(path.clone());
        } else {
            bail!("{}: not a directory or a case's .in file", path.display());
        }
    }
    inputs.sort();
    inputs.iter().map(|path| load_case(path)).collect()
}

fn collect_inputs(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_inputs(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "in") {
            found.push(path);
        }
    }
    Ok(())
}

/// Loads the case whose input is at `input_path`.
pub fn load_case(input_path: &Path) -> anyhow::Result<Case> {
    let stem = input_path.with_extension("");
    let name = stem.display().to_string();
    let input = std::fs::read(input_path)
        .with_context(|| format!("cannot read {}", input_path.display()))?;
    let out_path = stem.with_extension("out");
    let out = std::fs::read(&out_path)
        .with_context(|| format!("{name}: cannot read {}", out_path.display()))?;
    let expected = serde_json::Deserializer::from_slice(&out)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a sequence of JSON values", out_path.display()))?;
    let settings_path = PathBuf::from(format!("{name}.case.json"));
    let settings = if settings_path.exists() {
        let text = std::fs::read(&settings_path)
            .with_context(|| format!("cannot read {}", settings_path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{}: invalid case settings", settings_path.display()))?
    } else {
        Settings::default()
    };
    Ok(Case {
        name,
        input,
        expected,
        settings,
    })
}

/// What the node did with a case's input.
#[derive(Debug)]
pub struct Run {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Option<i32>,
}

/// Runs `bin` on the case's input, as the grader does: input piped to
/// stdin, stdin closed, output collected, killed after `timeout`.
pub fn run_case(bin: &Path, case: &Case, timeout: Duration) -> anyhow::Result<Run> {
    let mut child = Command::new(bin)
        .args(&case.settings.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    let input = case.input.clone();
    // A node that stops reading early closes the pipe; that is its business.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {} ms", timeout.as_millis());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Run {
        stdout,
        stderr,
        status: status.code(),
    })
}

/// Checks a run against the case. The error explains the first mismatch.
pub fn check(case: &Case, run: &Run) -> Result<(), String> {
    let settings = &case.settings;
    let stdout =
        std::str::from_utf8(&run.stdout).map_err(|e| format!("stdout is not UTF-8: {e}"))?;
    if !stdout.is_empty() && !stdout.ends_with('\n') {
        return Err("stdout does not end with a line break".into());
    }
    let mut messages = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        let message: Value = serde_json::from_str(line)
            .map_err(|e| format!("stdout line {} is not JSON ({e}): {line}", i + 1))?;
        check_envelope(&message).map_err(|e| format!("stdout line {}: {e}: {line}", i + 1))?;
        messages.push(message);
    }
    for (i, expected) in case.expected.iter().enumerate() {
        let Some(actual) = messages.get(i) else {
            return Err(format!(
                "expected message {} ({}), but the node wrote only {} message(s)",
                i + 1,
                expected,
                messages.len()
            ));
        };
        subset(expected, actual, settings.key_order, "")
            .map_err(|e| format!("message {}: {e}\n  got: {actual}", i + 1))?;
    }
    if let Some(count) = settings.messages {
        if messages.len() != count {
            return Err(format!(
                "expected exactly {count} message(s), got {}",
                messages.len()
            ));
        }
    }
    let stderr = String::from_utf8_lossy(&run.stderr);
    let mut rest: &str = &stderr;
    for wanted in &settings.stderr {
        match rest.find(wanted.as_str()) {
            Some(i) => rest = &rest[i + wanted.len()..],
            None => {
                return Err(format!(
                    "stderr lacks {wanted:?} (in order); stderr was:\n{stderr}"
                ))
            }
        }
    }
    if let Some(count) = settings.diagnostics {
        let lines = stderr.lines().count();
        if lines != count {
            return Err(format!(
                "expected {count} line(s) on stderr, got {lines}:\n{stderr}"
            ));
        }
    }
    if run.status != Some(settings.status) {
        return Err(format!(
            "expected exit status {}, got {:?}; stderr was:\n{stderr}",
            settings.status, run.status
        ));
    }
    Ok(())
}

/// Checks that a message is a reply envelope.
fn check_envelope(message: &Value) -> Result<(), &'static str> {
    let object = message.as_object().ok_or("not a JSON object")?;
    for field in ["src", "dest"] {
        if !object.get(field).is_some_and(Value::is_string) {
            return Err("the envelope lacks a string src or dest");
        }
    }
    let body = object
        .get("body")
        .and_then(Value::as_object)
        .ok_or("the envelope lacks an object body")?;
    if !body.get("type").is_some_and(Value::is_string) {
        return Err("the body lacks a string type");
    }
    Ok(())
}

/// Checks that `expected` is a JSON subset of `actual`; the error names the
/// path where they differ.
pub fn subset(expected: &Value, actual: &Value, key_order: bool, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            let mut last_position = 0;
            for (key, want_value) in want {
                let here = format!("{path}.{key}");
                let Some((position, have_value)) = have
                    .iter()
                    .enumerate()
                    .find_map(|(i, (k, v))| (k == key).then_some((i, v)))
                else {
                    return Err(format!("{here} is missing (expected {want_value})"));
                };
                if key_order && position < last_position {
                    return Err(format!("{here} comes earlier than expected"));
                }
                last_position = position;
                subset(want_value, have_value, key_order, &here)?;
            }
            Ok(())
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!(
            "{} is {actual}, expected {expected}",
            if path.is_empty() { "the message" } else { path }
        )),
    }
}

/// The outcome of replaying many cases.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: Vec<(String, String)>,
}

/// Replays every case, writing a line per case and a closing
/// `N passed, N failed` line to `report`.
pub fn replay_all<W: Write>(
    bin: &Path,
    cases: &[Case],
    timeout: Duration,
    report: &mut W,
) -> std::io::Result<Tally> {
    let mut tally = Tally::default();
    for case in cases {
        let result = run_case(bin, case, timeout)
            .map_err(|e| format!("{e:#}"))
            .and_then(|run| check(case, &run));
        match result {
            Ok(()) => {
                tally.passed += 1;
                writeln!(report, "ok   {}", case.name)?;
            }
            Err(why) => {
                writeln!(
                    report,
                    "FAIL {}\n  {}",
                    case.name,
                    why.replace('\n', "\n  ")
                )?;
                tally.failed.push((case.name.clone(), why));
            }
        }
    }
    writeln!(
        report,
        "{} passed, {} failed",
        tally.passed,
        tally.failed.len()
    )?;
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        let actual = json!({"src":"lb","body":{"type":"x","n":[1,2],"m":{"a":1,"b":2}}});
        assert!(subset(&json!({}), &actual, false, "").is_ok());
        assert!(subset(&json!({"body":{"m":{"b":2}}}), &actual, false, "").is_ok());
        assert_eq!(
            subset(&json!({"body":{"m":{"b":3}}}), &actual, false, ""),
            Err(".body.m.b is 2, expected 3".into())
        );
        assert!(subset(&json!({"body":{"n":[1]}}), &actual, false, "").is_err());
        assert!(subset(&json!({"nope":1}), &actual, false, "").is_err());
        assert!(subset(&json!({"body":{"m":{"b":2,"a":1}}}), &actual, false, "").is_ok());
        assert!(subset(&json!({"body":{"m":{"b":2,"a":1}}}), &actual, true, "").is_err());
        assert!(subset(&json!({"body":{"m":{"a":1,"b":2}}}), &actual, true, "").is_ok());
    }

    fn case(expected: Vec<Value>, settings: Settings) -> Case {
        Case {
            name: "t".into(),
            input: Vec::new(),
            expected,
            settings,
        }
    }

    fn run(stdout: &str, stderr: &str, status: i32) -> Run {
        Run {
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            status: Some(status),
        }
    }

    #[test]
    fn check_compares_in_order_and_counts() {
        let line1 = r#"{"src":"lb","dest":"c","body":{"type":"init_ok","in_reply_to":1}}"#;
        let line2 = r#"{"src":"lb","dest":"c","body":{"type":"error","code":10}}"#;
        let out = format!("{line1}\n{line2}\n");
        let c = case(
            vec![json!({"body":{"type":"init_ok"}})],
            Settings::default(),
        );
        assert!(check(&c, &run(&out, "", 0)).is_ok());
        let c = case(
            vec![json!({}), json!({"body":{"code":12}})],
            Settings::default(),
        );
        assert!(check(&c, &run(&out, "", 0))
            .unwrap_err()
            .contains("message 2"));
        let pinned = Settings {
            messages: Some(1),
            ..Settings::default()
        };
        assert!(check(&case(vec![], pinned), &run(&out, "", 0)).is_err());
        assert!(check(&case(vec![], Settings::default()), &run(&out, "", 1)).is_err());
        assert!(check(
            &case(vec![], Settings::default()),
            &run("{\"a\":1}\n", "", 0)
        )
        .is_err());
        assert!(check(&case(vec![], Settings::default()), &run(line1, "", 0)).is_err());
        let diag = Settings {
            stderr: vec!["line 2".into(), "line 5".into()],
            diagnostics: Some(2),
            ..Settings::default()
        };
        let c = case(vec![], diag);
        assert!(check(&c, &run("", "x line 2\ny line 5\n", 0)).is_ok());
        assert!(check(&c, &run("", "y line 5\nx line 2\n", 0)).is_err());
    }
}
