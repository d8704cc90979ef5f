//! The examples in README.md and docs/*.md, run against the binary: every
//! example shows what the binary really prints, and this keeps it so.
//!
//! What counts as an example, and how it is checked:
//!
//! - A ```json block of messages: lines addressed to the node (`"dest":"lb"`)
//!   are input, lines from it (`"src":"lb"`) are the replies to that input,
//!   in order, exactly. A block of input alone followed by a block of
//!   replies alone is one example. Messages sent first whose replies are not
//!   shown go in a comment before the block: `<!-- given: MESSAGES -->`, one
//!   per line; `<!-- stdin: PATH -->` instead says that the block shows the
//!   replies to a whole file.
//! - A ```console block: each `$ leastconn ARGS` line (optionally with
//!   `< FILE`) is run in a scratch directory that sees the repository's
//!   `fixtures/` and `scenarios/`, and must print exactly the lines that
//!   follow it (standard output, then standard error). Files it writes are
//!   compared with the repository's files of the same path, when those
//!   exist (charts under `docs/`).
//! - A table with a `command` column: each row's command (a code span,
//!   `leastconn ARGS`) is run as a console example is, and every number in
//!   the row's columns headed "simulated …" must be one the command
//!   printed.
//! - docs/bad-input.md's table: each row's quoted texts (in backticks, in
//!   the "what the user gets" column) must appear in what the binary gives
//!   for the fixture the row names (its replies' texts or its diagnostics),
//!   or, for rows checked by `tests/bad_input.rs`, in that test's
//!   assertions.
//!
//! A block that is not an example says so, with why, in a comment just
//! before it: `<!-- not run: … -->`.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fenced block and the directives in the comments just before it.
#[derive(Debug)]
struct Block {
    lang: String,
    lines: Vec<String>,
    /// The line of the opening fence, from 1.
    at: usize,
    given: Vec<String>,
    stdin: Option<String>,
    not_run: bool,
}

/// The fenced blocks of a Markdown text, with their directives.
fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut comments = String::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(lang) = line.trim_start().strip_prefix("```") else {
            // Blank lines and comments (until they close) lead to a block;
            // anything else cuts the comments off from it.
            let in_comment = comments.matches("<!--").count() > comments.matches("-->").count();
            if line.trim().is_empty() || in_comment || line.trim_start().starts_with("<!--") {
                comments.push_str(line);
                comments.push('\n');
            } else {
                comments.clear();
            }
            continue;
        };
        let mut body = Vec::new();
        for (_, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            body.push(line.to_owned());
        }
        let directive = |name: &str| -> Option<String> {
            let start = comments.find(&format!("<!-- {name}:"))? + name.len() + 6;
            let end = comments[start..].find("-->")? + start;
            Some(comments[start..end].trim().to_owned())
        };
        blocks.push(Block {
            lang: lang.trim().to_owned(),
            lines: body,
            at: i + 1,
            given: directive("given")
                .map(|g| g.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
            stdin: directive("stdin"),
            not_run: directive("not run").is_some(),
        });
        comments.clear();
    }
    blocks
}

fn is_input(line: &str) -> bool {
    line.contains("\"dest\":\"lb\"")
}

fn is_reply(line: &str) -> bool {
    line.starts_with("{\"src\":\"lb\"")
}

/// Checks the message examples of one document; returns how many ran.
fn check_messages(doc: &str) -> usize {
    let text = std::fs::read_to_string(root().join(doc)).expect("the document");
    let all = blocks(&text);
    let json: Vec<&Block> = all
        .iter()
        .filter(|b| b.lang == "json" && !b.not_run)
        .collect();
    let mut ran = 0;
    let mut pending: Option<&Block> = None;
    for block in json {
        let inputs: Vec<&String> = block.lines.iter().filter(|l| is_input(l)).collect();
        let replies: Vec<&String> = block.lines.iter().filter(|l| is_reply(l)).collect();
        assert_eq!(
            inputs.len() + replies.len(),
            block.lines.len(),
            "{doc}:{}: a message example has only messages to and from \"lb\", one per line \
             (or say why it is not run)",
            block.at
        );
        if replies.is_empty() && block.stdin.is_none() {
            // Input alone: its replies are in the next block.
            assert!(
                pending.is_none(),
                "{doc}:{}: two input blocks in a row",
                block.at
            );
            pending = Some(block);
            continue;
        }
        let (setup, inputs) = match pending.take() {
            Some(first) if inputs.is_empty() => (&first.given, first.lines.iter().collect()),
            Some(first) => panic!(
                "{doc}:{}: the replies to {} are missing",
                block.at, first.at
            ),
            None => (&block.given, inputs),
        };
        let mut input = String::new();
        for line in setup.iter().chain(inputs.iter().copied()) {
            input.push_str(line);
            input.push('\n');
        }
        let input = match &block.stdin {
            Some(path) => std::fs::read(root().join(path)).expect("the stdin file"),
            None => input.into_bytes(),
        };
        let out = common::run(&[], &input);
        assert_eq!(out.status, Some(0), "{doc}:{}: {}", block.at, out.stderr);
        let got: Vec<&str> = out.stdout_text().lines().skip(setup.len()).collect();
        let shown: Vec<&str> = replies.iter().map(|l| l.as_str()).collect();
        assert_eq!(
            got, shown,
            "{doc}:{}: the replies shown are not the binary's",
            block.at
        );
        ran += 1;
    }
    assert!(pending.is_none(), "{doc}: input without replies at the end");
    ran
}

/// A scratch directory that sees the repository's inputs.
fn scratch(name: &str) -> PathBuf {
    let dir = common::tempdir(name);
    for shared in ["fixtures", "scenarios"] {
        std::os::unix::fs::symlink(root().join(shared), dir.join(shared)).expect("a symlink");
    }
    dir
}

/// Lists the files under `dir`, relative to it.
fn files_under(dir: &Path, base: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            files_under(&path, base, found);
        } else if let Ok(relative) = path.strip_prefix(base) {
            found.push(relative.to_owned());
        }
    }
}

/// Checks the console examples of one document; returns how many ran.
fn check_console(doc: &str) -> usize {
    let text = std::fs::read_to_string(root().join(doc)).expect("the document");
    let mut ran = 0;
    for block in blocks(&text)
        .iter()
        .filter(|b| b.lang == "console" && !b.not_run)
    {
        let mut lines = block.lines.iter().peekable();
        while let Some(line) = lines.next() {
            let command = line
                .strip_prefix("$ leastconn")
                .unwrap_or_else(|| panic!("{doc}:{}: {line:?} is not `$ leastconn …`", block.at));
            let mut shown = Vec::new();
            while let Some(next) = lines.next_if(|l| !l.starts_with("$ ")) {
                shown.push(next.as_str());
            }
            let (args, stdin) = match command.split_once(" < ") {
                Some((args, file)) => (args, Some(file.trim())),
                None => (command, None),
            };
            let args: Vec<&str> = args.split_whitespace().collect();
            let dir = scratch(&format!("docs-{}", block.at));
            let input = stdin
                .map(|f| std::fs::read(dir.join(f)).expect("the input file"))
                .unwrap_or_default();
            let out = run_in(&dir, &args, &input);
            let printed = format!("{}{}", out.stdout_text(), out.stderr);
            let printed: Vec<&str> = printed.lines().collect();
            assert_eq!(
                printed, shown,
                "{doc}:{}: `leastconn{command}` prints something else",
                block.at
            );
            let mut written = Vec::new();
            files_under(&dir, &dir, &mut written);
            for file in written {
                let Ok(committed) = std::fs::read(root().join(&file)) else {
                    continue;
                };
                let made = std::fs::read(dir.join(&file)).expect("a written file");
                assert!(
                    committed == made,
                    "{doc}:{}: {} differs from what `leastconn{command}` writes",
                    block.at,
                    file.display()
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
            ran += 1;
        }
    }
    ran
}

/// Runs the binary in `dir`.
fn run_in(dir: &Path, args: &[&str], input: &[u8]) -> common::Output {
    let mut child = std::process::Command::new(common::BIN)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let stdout = common::read_all(child.stdout.take().expect("piped stdout"));
    let stderr = common::read_all(child.stderr.take().expect("piped stderr"));
    let mut running = common::Running { child };
    let status = running.wait(common::TIMEOUT);
    writer.join().expect("the writer");
    common::Output {
        stdout: stdout.join().expect("stdout"),
        stderr: String::from_utf8(stderr.join().expect("stderr")).expect("UTF-8 stderr"),
        status,
    }
}

/// The code spans of a table cell: texts in backticks, or in double
/// backticks when they hold one.
fn quoted(cell: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut rest = cell;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        let fence = &rest[start..start + ticks];
        let inside = &rest[start + ticks..];
        let Some(end) = inside.find(fence) else { break };
        let span = &inside[..end];
        spans.push(if ticks > 1 { span.trim() } else { span });
        rest = &inside[end + ticks..];
    }
    spans
}

/// Every string value in a JSON value, for finding a text in replies.
fn strings(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(s) => found.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, found)),
        Value::Object(map) => map.values().for_each(|v| strings(v, found)),
        _ => {}
    }
}

/// Checks the tables of one document that name their commands; returns
/// how many rows ran.
fn check_tables(doc: &str) -> usize {
    let text = std::fs::read_to_string(root().join(doc)).expect("the document");
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut ran = 0;
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with('|') {
            i += 1;
            continue;
        }
        let header = cells(lines[i]);
        let command = header.iter().position(|h| h == "command");
        let results: Vec<usize> = (0..header.len())
            .filter(|&c| header[c].starts_with("simulated"))
            .collect();
        i += 2; // the header and the separator
        while i < lines.len() && lines[i].starts_with('|') {
            let Some(command) = command else {
                i += 1;
                continue;
            };
            let row = cells(lines[i]);
            let mut printed = String::new();
            for span in quoted(&row[command]) {
                let args: Vec<&str> = span
                    .strip_prefix("leastconn ")
                    .unwrap_or_else(|| panic!("{doc}: {span:?} is not `leastconn …`"))
                    .split_whitespace()
                    .collect();
                let dir = scratch(&format!("table-{}", i));
                let out = run_in(&dir, &args, b"");
                assert_eq!(out.status, Some(0), "{doc}: {span}: {}", out.stderr);
                printed.push_str(out.stdout_text());
                let _ = std::fs::remove_dir_all(&dir);
            }
            let words: Vec<&str> = printed
                .split(|c: char| c.is_whitespace() || c == '%')
                .collect();
            for &c in &results {
                for number in row[c].split(|c: char| c.is_whitespace() || c == '/' || c == '±') {
                    if number.is_empty() {
                        continue;
                    }
                    assert!(
                        words.contains(&number),
                        "{doc}: `{}` does not print {number}",
                        row[command]
                    );
                }
            }
            ran += 1;
            i += 1;
        }
    }
    ran
}

#[test]
fn the_readme_examples_are_what_the_node_prints() {
    let ran = check_messages("README.md") + check_console("README.md");
    assert!(ran >= 10, "only {ran} examples ran");
}

#[test]
fn the_simulator_guide_examples_are_what_the_simulator_prints() {
    let ran = check_messages("docs/simulator.md") + check_console("docs/simulator.md");
    assert!(ran >= 5, "only {ran} examples ran");
}

#[test]
fn the_simulator_guide_tables_are_what_the_simulator_prints() {
    let ran = check_tables("docs/simulator.md");
    assert!(ran >= 15, "only {ran} rows ran");
}

#[test]
fn the_bad_input_table_says_what_the_node_says() {
    let text = std::fs::read_to_string(root().join("docs/bad-input.md")).expect("the table");
    let bad_input_test =
        std::fs::read_to_string(root().join("tests/bad_input.rs")).expect("the test");
    let mut checked = 0;
    for row in text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| kind"))
    {
        let cells: Vec<&str> = row.split(" | ").collect();
        assert_eq!(cells.len(), 4, "a row of four cells: {row}");
        let (gets, test) = (cells[2], cells[3]);
        let fixtures: Vec<&str> = quoted(test)
            .into_iter()
            .filter(|t| t.starts_with("fixtures/"))
            .collect();
        let mut said = Vec::new();
        for fixture in &fixtures {
            let case = leastconn::fixture::load_case(&root().join(format!("{fixture}.in")))
                .unwrap_or_else(|e| panic!("{row}: {e:#}"));
            let args: Vec<&str> = case.settings.args.iter().map(String::as_str).collect();
            let out = common::run(&args, &case.input);
            said.extend(out.stderr.lines().map(str::to_owned));
            for reply in out.replies() {
                strings(&reply, &mut said);
            }
        }
        for text in quoted(gets) {
            let found = if fixtures.is_empty() {
                assert!(
                    test.contains("tests/bad_input.rs"),
                    "{row}: no fixture or test"
                );
                bad_input_test.contains(text) || bad_input_test.contains(&text.replace('"', "\\\""))
            } else {
                said.iter().any(|s| s.contains(text))
            };
            assert!(found, "{row}:\n`{text}` is not what the node says");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} texts checked");
}
