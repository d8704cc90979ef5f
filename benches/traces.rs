//! Traces for `scripts/compare-binaries`: complete standard inputs for the
//! node, to be run through two builds whose outputs must then be identical.
//!
//! ```text
//! traces [--seed S] [--count N] --out DIR
//! ```
//!
//! writes `DIR/trace-0000.in` … (exactly the bytes for standard input), a
//! `trace-NNNN.args` beside each trace that is to be run with command-line
//! arguments (`--max-message-size 300` for messages sized around that
//! limit, `--strict` for the exit status), and `DIR/manifest.tsv`, a line
//! `name<TAB>messages<TAB>bytes` per trace. The same seed always gives the
//! same bytes: every choice comes from the crate's own seeded generator.
//!
//! Between them the traces use every message type and option of the
//! protocol (`init` with names and backend objects, every algorithm and
//! tie-break, seeds, `"counts":"changed"`, `node_id` and `node_ids`;
//! `http_request` with and without snapshots, `algorithm`, `explain`,
//! `method` and `path`; `request_complete` with `ok` and `duration_ms`;
//! `add_backend`, `remove_backend`, `set_backend` with `healthy`, `weight`
//! and `max_connections`, `null` included; `stats`), and what goes wrong
//! with them: unknown types, missing and extra fields, wrong types, counts
//! that are negative, fractional or too large, odd and invalid `msg_id`s,
//! messages without one, names with escapes and non-ASCII characters. They
//! are framed every way the node accepts (pretty-printed, several to a line,
//! CRLF, blank lines, a byte-order mark at the start, no final newline) and
//! damaged as tools damage input: bytes flipped, lines cut, joined or cut
//! short, garbage lines, bytes that are not UTF-8, control bytes, JSON values
//! that are not messages, a last message cut off. Long runs of valid
//! traffic come between the damage, so that picks, ties, round-robin state
//! and counts evolve over hundreds of messages; every fiftieth trace has
//! 10^5 messages.
//!
//! # Inputs left out
//!
//! These are the inputs whose replies were intentionally changed, so a
//! comparison across that change must not contain them, and the generator
//! never writes them:
//!
//! - a lone (unpaired) surrogate escape anywhere: `\ud800` not followed by
//!   a low surrogate, or a low surrogate without a high one before it;
//! - a key repeated inside a backend object of `init`'s `backends`;
//! - a `duration_ms` above 1e288 (now refused, so that a backend's total
//!   cannot overflow);
//! - a NUL byte anywhere (its diagnostic now names UTF-16 as a likely
//!   cause);
//! - a count, weight, limit, seed or `msg_id` written as `-0`, or with a
//!   fraction or exponent but a whole value (`2.0`, `1e2`, `1.0e0`); genuine
//!   fractions such as `1.5` and negative numbers such as `-1` are kept;
//! - any body field other than `type`, `msg_id`, `backend`, `weight` and
//!   `max_connections` in an `add_backend` message;
//! - a byte-order mark (EF BB BF) anywhere but the very start of the input,
//!   and UTF-16 input (FF FE, FE FF);
//! - a backend name longer than 40 characters anywhere (error texts now
//!   quote only the first 40).
//!
//! Every piece of output is checked for them, byte by byte ([`excluded`],
//! broader than the list) and in every object that reads as a message
//! ([`excluded_message`]): damage that would make one is drawn again, and
//! any other piece that held one would stop the generator. Damage also
//! only ever touches messages without backend lists, `add_backend`,
//! `duration_ms`, escapes, non-ASCII text or long names; and since a
//! damaged message can run into the lines after it only as nested values,
//! never as strings, the messages it runs into are read whole or not at all.

use leastconn::engine::rng::Rng;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::io::Write as _;
use std::path::PathBuf;

const USAGE: &str = "usage: traces [--seed S] [--count N] --out DIR";

fn main() -> anyhow::Result<()> {
    let (mut seed, mut count, mut out) = (1u64, 500usize, None::<PathBuf>);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--seed" => seed = value()?.parse()?,
            "--count" => count = value()?.parse()?,
            "--out" => out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let dir = out.ok_or_else(|| anyhow::anyhow!("--out is required\n{USAGE}"))?;
    std::fs::create_dir_all(&dir)?;
    let mut manifest = std::io::BufWriter::new(std::fs::File::create(dir.join("manifest.tsv"))?);
    let mut seeds = Rng::new(seed);
    for index in 0..count {
        let trace = Trace::generate(seeds.next_u64(), index);
        let name = format!("trace-{index:04}");
        std::fs::write(dir.join(format!("{name}.in")), &trace.bytes)?;
        if !trace.args.is_empty() {
            std::fs::write(
                dir.join(format!("{name}.args")),
                trace.args.join(" ") + "\n",
            )?;
        }
        writeln!(
            manifest,
            "{name}\t{}\t{}",
            trace.messages,
            trace.bytes.len()
        )?;
    }
    manifest.flush()?;
    Ok(())
}

/// One generated input.
struct Trace {
    bytes: Vec<u8>,
    messages: usize,
    args: Vec<&'static str>,
}

/// A backend name, as written inside a JSON string.
struct Name {
    /// Ways of writing it; all decode to the same name.
    spellings: Vec<String>,
    /// Longer than 40 bytes as written, so possibly longer than 40
    /// characters: never named where the reply could be "not in the pool"
    /// or "has no active connections".
    long: bool,
}

impl Name {
    fn new(spellings: &[&str]) -> Name {
        Name {
            spellings: spellings.iter().map(|s| (*s).to_owned()).collect(),
            long: spellings.iter().any(|s| s.len() > 40),
        }
    }
}

/// Names with escapes and characters beyond ASCII; the spellings of each
/// decode to one name.
const SPECIAL_NAMES: &[&[&str]] = &[
    &["caf\\u00e9", "café", "caf\\u00E9"],
    &["\\u00fcber", "über"],
    &["q\\\"uote"],
    &["back\\\\slash"],
    &["new\\nline", "new\\u000aline"],
    &["tab\\tname"],
    &["sl\\/ash", "sl/ash"],
    &["\\ud83d\\ude80rocket", "🚀rocket", "\\uD83D\\uDE80rocket"],
    &["\\u4e2d\\u6587", "中文"],
    &["sp ace"],
    &["nul\\u0000byte"],
    &["ctl\\u001f\\b\\f\\r"],
    &["\\u00e9\\u00e8-mix", "é\\u00e8-mix", "éè-mix"],
    &["\\ud83d\\ude00", "😀"],
    &["A\\u0301"],
    &["\\u2028sep"],
    &["\\u0041scii", "Ascii"],
    &["10"],
    &["-1"],
];

/// Numbers that are not whole numbers from 0 to 2^64 - 1, or not numbers.
const BAD_COUNTS: &[&str] = &[
    "-1",
    "-7",
    "1.5",
    "2.25",
    "2.5e-1",
    "\"3\"",
    "null",
    "[1]",
    "{}",
    "true",
    "18446744073709551616",
    "-18446744073709551616",
    "99999999999999999999999999999999999999999999999999999999",
];

/// Valid `msg_id`s off the sequence.
const ODD_IDS: &[&str] = &[
    "0",
    "-5",
    "18446744073709551615",
    "-9223372036854775808",
    "9223372036854775807",
];

/// `msg_id`s that are not integers in range.
const BAD_IDS: &[&str] = &[
    "1.5",
    "\"7\"",
    "null",
    "[1]",
    "{}",
    "true",
    "18446744073709551616",
    "-9223372036854775809",
    "2.5e-1",
];

const ALGORITHMS: &[&str] = &[
    "\"least-connections\"",
    "\"weighted-least-connections\"",
    "\"round-robin\"",
    "\"random\"",
    "\"power-of-two-choices\"",
];

/// The fields of a JSON object, rendered in order.
struct Obj(Vec<(String, String)>);

impl Obj {
    fn new(kind: &str) -> Obj {
        Obj(vec![("type".into(), format!("\"{kind}\""))])
    }

    fn add(&mut self, key: &str, value: impl Into<String>) {
        self.0.push((key.to_owned(), value.into()));
    }

    fn render(&self) -> String {
        let fields: Vec<String> = self.0.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    }
}

/// How lines end in a trace.
#[derive(Clone, Copy)]
enum Endings {
    Lf,
    Crlf,
    Mixed,
}

struct Gen {
    rng: Rng,
    names: Vec<Name>,
    /// The pool as the node probably holds it (indices into `names`); only
    /// a guide for choosing plausible names, not an exact model.
    pool: Vec<usize>,
    /// Probable active connections, by index into `names`.
    active: Vec<u64>,
    next_id: u64,
    endings: Endings,
    /// Messages are sized around a 300-byte limit.
    small_limit: bool,
    /// Pools of hundreds of backends.
    wide: bool,
    /// No mistakes in the message being drawn.
    careful: bool,
    /// The message being drawn has a mistake.
    flawed: bool,
    out: Vec<u8>,
    messages: usize,
}

impl Trace {
    fn generate(seed: u64, index: usize) -> Trace {
        let mut rng = Rng::new(seed);
        let large = index % 50 == 7;
        let small_limit = index % 4 == 1 && !large;
        let strict = index % 9 == 4;
        let wide = index % 10 == 3 && !large;
        // Log-uniform from 20 to 3000 messages.
        let target = if large {
            100_000
        } else {
            let size = (20.0 * 150f64.powf(rng.next_f64())) as usize;
            if wide {
                size.min(1500)
            } else {
                size
            }
        };
        let endings = match rng.below(10) {
            0 | 1 => Endings::Crlf,
            2 => Endings::Mixed,
            _ => Endings::Lf,
        };
        // How many messages, on average, between damaged stretches.
        let damage_every = match index % 5 {
            0 => None,
            1 => Some(6),
            _ => Some(150),
        };
        let names = catalogue(&mut rng, wide);
        let active = vec![0; names.len()];
        let mut g = Gen {
            rng,
            names,
            pool: Vec::new(),
            active,
            next_id: 1,
            endings,
            small_limit,
            wide,
            careful: false,
            flawed: false,
            out: Vec::new(),
            messages: 0,
        };
        g.generate(target, damage_every);
        let mut args = Vec::new();
        if small_limit {
            args.extend(["--max-message-size", "300"]);
        }
        if strict {
            args.push("--strict");
        }
        Trace {
            bytes: g.out,
            messages: g.messages,
            args,
        }
    }
}

/// The names a trace draws from.
fn catalogue(rng: &mut Rng, wide: bool) -> Vec<Name> {
    let prefixes = ["api-", "b", "srv-", "web", "n"];
    let prefix = prefixes[rng.below(prefixes.len() as u64) as usize];
    let plain = if wide {
        100 + rng.below(300)
    } else {
        3 + rng.below(12)
    };
    let mut names: Vec<Name> = (1..=plain)
        .map(|i| Name::new(&[&format!("{prefix}{i}")]))
        .collect();
    for spellings in SPECIAL_NAMES {
        if rng.below(4) == 0 {
            names.push(Name::new(spellings));
        }
    }
    // Exactly 40 characters: still allowed everywhere.
    if rng.below(3) == 0 {
        names.push(Name::new(&[&format!("forty-{}", "z".repeat(34))]));
    }
    // Longer names are cut in error texts, which changed: 40 at most.
    for _ in 0..rng.below(3) {
        let length = 30 + rng.below(11) as usize;
        let name = format!("long-{}", "x".repeat(length - 5));
        names.push(Name::new(&[&name]));
    }
    if rng.below(4) == 0 {
        names.push(Name::new(&["\\u00e9".repeat(40).as_str()]));
    }
    names
}

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn spell(&mut self, name: usize) -> String {
        let i = self.below(self.names[name].spellings.len());
        format!("\"{}\"", self.names[name].spellings[i])
    }

    fn eol(&mut self) -> &'static [u8] {
        let crlf = match self.endings {
            Endings::Lf => false,
            Endings::Crlf => true,
            Endings::Mixed => self.chance(50),
        };
        if crlf {
            b"\r\n"
        } else {
            b"\n"
        }
    }

    fn generate(&mut self, target: usize, damage_every: Option<usize>) {
        if self.chance(5) {
            self.out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        // Most traces start with an init; the rest start on an empty pool
        // or let a snapshot define it.
        let first = if self.chance(85) {
            let careful = self.chance(90);
            self.init(careful)
        } else {
            self.message()
        };
        let first = self.envelope(&first);
        let mut segment = first.into_bytes();
        segment.extend_from_slice(self.eol());
        self.append(segment);
        self.messages += 1;
        while self.messages < target {
            let run = match damage_every {
                None => target - self.messages,
                Some(every) => (1 + self.below(2 * every)).min(target - self.messages),
            };
            self.valid_run(run);
            if damage_every.is_some() && self.messages < target {
                self.damaged_run();
            }
        }
        match self.below(10) {
            0 => {
                // No final newline.
                while self.out.last().is_some_and(|b| b"\r\n".contains(b)) {
                    self.out.pop();
                }
            }
            1 => self.truncated_last_message(),
            2 => {
                let tail = self.pick(&["\n\n", "  \n\t\n", "\r\n\r\n", " "]);
                self.append(tail.as_bytes().to_vec());
            }
            _ => {}
        }
    }

    /// Adds a piece of output, which must not hold an excluded input.
    fn append(&mut self, segment: Vec<u8>) {
        let start = if self.out.is_empty() && segment.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        if let Some(why) = excluded(&segment[start..]).or_else(|| excluded_message(&segment)) {
            panic!(
                "generated an excluded input ({why}): {}",
                String::from_utf8_lossy(&segment)
            );
        }
        self.out.extend_from_slice(&segment);
    }

    /// `n` messages, framed in every accepted way but not damaged.
    fn valid_run(&mut self, n: usize) {
        let mut segment = Vec::new();
        let mut written = 0;
        while written < n {
            match self.below(100) {
                0..=2 => {
                    let text = self.message_text();
                    let eol = self.eol();
                    segment.extend_from_slice(&pretty(&text, eol));
                    segment.extend_from_slice(eol);
                    written += 1;
                }
                3..=5 => {
                    let k = (2 + self.below(3)).min(n - written).max(1);
                    for i in 0..k {
                        if i > 0 {
                            let gap = self.pick(&["", " ", "\t", "  "]);
                            segment.extend_from_slice(gap.as_bytes());
                        }
                        let text = self.message_text();
                        segment.extend_from_slice(text.as_bytes());
                    }
                    segment.extend_from_slice(self.eol());
                    written += k;
                }
                6 | 7 => {
                    let blank = self.pick(&["", "  ", "\t", " \t "]);
                    segment.extend_from_slice(blank.as_bytes());
                    segment.extend_from_slice(self.eol());
                }
                _ => {
                    let text = self.message_text();
                    segment.extend_from_slice(text.as_bytes());
                    segment.extend_from_slice(self.eol());
                    written += 1;
                }
            }
        }
        self.messages += written;
        self.append(segment);
    }

    /// A few messages, damaged. Only messages that [`damageable`] allows
    /// are damaged; others drawn meanwhile are written whole first.
    fn damaged_run(&mut self) {
        let k = 1 + self.below(6);
        let mut lines: Vec<Vec<u8>> = Vec::new();
        while lines.len() < k {
            let text = self.message_text();
            self.messages += 1;
            if damageable(&text) {
                lines.push(text.into_bytes());
            } else {
                let mut segment = text.into_bytes();
                segment.extend_from_slice(self.eol());
                self.append(segment);
            }
        }
        let eol = self.eol();
        for _ in 0..20 {
            let mut damaged = lines.clone();
            for _ in 0..1 + self.below(3) {
                self.damage(&mut damaged);
            }
            let mut segment = damaged.join(eol);
            segment.extend_from_slice(eol);
            if excluded(&segment).is_none() && excluded_message(&segment).is_none() {
                self.append(segment);
                return;
            }
        }
        let mut segment = lines.join(eol);
        segment.extend_from_slice(eol);
        self.append(segment);
    }

    fn truncated_last_message(&mut self) {
        loop {
            let text = self.message_text();
            if !damageable(&text) {
                continue;
            }
            self.messages += 1;
            let cut = 1 + self.below(text.len() - 1);
            let segment = text.as_bytes()[..cut].to_vec();
            if excluded(&segment).is_none() && excluded_message(&segment).is_none() {
                self.append(segment);
                return;
            }
        }
    }

    fn damage(&mut self, lines: &mut Vec<Vec<u8>>) {
        let n = lines.len();
        let line = self.below(n);
        match self.below(10) {
            0 | 1 => {
                // A byte flipped. Never next to a digit, and never to a
                // digit, so that no number changes its value or form.
                let l = &lines[line];
                let spots: Vec<usize> = (0..l.len())
                    .filter(|&i| {
                        !(i.saturating_sub(1)..(i + 2).min(l.len())).any(|j| l[j].is_ascii_digit())
                    })
                    .collect();
                if spots.is_empty() {
                    return;
                }
                let at = spots[self.below(spots.len())];
                let to = self.flipped_byte();
                lines[line][at] = to;
            }
            2 => {
                // A line cut in two.
                let l = lines[line].clone();
                let at = self.below(l.len() + 1);
                lines[line] = l[..at].to_vec();
                lines.insert(line + 1, l[at..].to_vec());
            }
            3 => {
                // The rest of a line lost.
                let keep = self.below(lines[line].len() + 1);
                lines[line].truncate(keep);
            }
            4 => {
                if n > 1 {
                    let i = self.below(n - 1);
                    let next = lines.remove(i + 1);
                    lines[i].extend_from_slice(&next);
                }
            }
            5 => self.retype(&mut lines[line]),
            6 | 7 => {
                let garbage = self.garbage();
                let at = self.below(n + 1);
                lines.insert(at, garbage);
            }
            8 => {
                // Bytes that are not UTF-8, inside a line.
                let bad = self.pick_bytes(&[
                    b"\x80",
                    b"\xc3(",
                    b"\xe2\x82",
                    b"\xf5\x80\x80\x80",
                    b"\xc0\xaf",
                    b"\xf8",
                    b"\x9f",
                ]);
                let at = self.below(lines[line].len() + 1);
                lines[line].splice(at..at, bad.iter().copied());
            }
            _ => {
                let at = self.below(lines[line].len() + 1);
                lines[line].insert(at, 0);
            }
        }
    }

    fn pick_bytes(&mut self, items: &[&'static [u8]]) -> &'static [u8] {
        items[self.below(items.len())]
    }

    /// A byte to flip to: printable ASCII but digits, a few control bytes,
    /// and bytes that cannot start UTF-8 sequences here (never the bytes of
    /// a byte-order mark or of UTF-16's).
    fn flipped_byte(&mut self) -> u8 {
        const OTHERS: &[u8] = &[0, 1, 9, 0x0b, 0x1f, 0x7f, 0x80, 0x9f, 0xc3, 0xe2, 0xf5];
        loop {
            let b = if self.chance(80) {
                0x20 + self.below(0x5f) as u8
            } else {
                OTHERS[self.below(OTHERS.len())]
            };
            if !b.is_ascii_digit() {
                return b;
            }
        }
    }

    /// A field's value replaced with one of another type.
    fn retype(&mut self, line: &mut Vec<u8>) {
        const FIELDS: &[&str] = &[
            "\"msg_id\":",
            "\"backend\":",
            "\"body\":",
            "\"src\":",
            "\"dest\":",
            "\"active_connections\":",
            "\"type\":",
            "\"weight\":",
            "\"healthy\":",
            "\"explain\":",
            "\"algorithm\":",
            "\"ok\":",
            "\"max_connections\":",
        ];
        const VALUES: &[&str] = &[
            "\"text\"",
            "-1",
            "[1,2]",
            "null",
            "1.5",
            "{}",
            "true",
            "\"5\"",
            "18446744073709551616",
        ];
        let key = self.pick(FIELDS).as_bytes();
        let value = self.pick(VALUES).as_bytes();
        if let Some(start) = line.windows(key.len()).position(|w| w == key) {
            let from = start + key.len();
            // Up to the next ',' or '}': roughly the value, enough to
            // change its type.
            let end = line[from..]
                .iter()
                .position(|&b| b == b',' || b == b'}')
                .map_or(line.len(), |p| from + p);
            line.splice(from..end, value.iter().copied());
        }
    }

    /// A line that is not a message.
    fn garbage(&mut self) -> Vec<u8> {
        let id = self.next_id;
        match self.below(11) {
            0 => b"this is not json".to_vec(),
            1 => {
                // Printable, but without quotes or backslashes: joined to a
                // line cut inside a string, it can only end that message.
                let len = 1 + self.below(60);
                (0..len)
                    .map(|_| match 0x20 + self.below(0x5f) as u8 {
                        b'"' | b'\\' => b'#',
                        b => b,
                    })
                    .collect()
            }
            2 => self
                .pick(&[
                    "[1,2]",
                    "\"hello\"",
                    "42",
                    "null",
                    "true",
                    "false",
                    "-3.5",
                    "[]",
                    "[{\"src\":\"c\"}]",
                ])
                .as_bytes()
                .to_vec(),
            3 => {
                let shapes = [
                    "{\"src\":\"c\",\"body\":{}}".to_owned(),
                    format!("{{\"src\":7,\"dest\":\"lb\",\"body\":{{\"type\":\"stats\",\"msg_id\":{id}}}}}"),
                    "{\"src\":\"c\",\"dest\":\"lb\",\"body\":[]}".to_owned(),
                    "{\"src\":\"c\",\"dest\":\"lb\"}".to_owned(),
                    format!("{{\"src\":\"c\",\"src\":\"d\",\"dest\":\"lb\",\"body\":{{\"type\":\"stats\",\"msg_id\":{id}}}}}"),
                    "{\"src\":\"c\",\"dest\":null,\"body\":{\"type\":\"stats\"}}".to_owned(),
                    "{}".to_owned(),
                ];
                shapes[self.below(shapes.len())].clone().into_bytes()
            }
            4 => {
                let bad = self.pick_bytes(&[b"\x80", b"\xc3(", b"\xe2\x82", b"\xc0\xaf", b"\xf8"]);
                let mut line = format!(
                    "{{\"src\":\"c\",\"dest\":\"lb\",\"body\":{{\"type\":\"stats\",\"msg_id\":{id},\"x\":\""
                )
                .into_bytes();
                line.extend_from_slice(bad);
                line.extend_from_slice(b"\"}}");
                line
            }
            5 => {
                // Control bytes (NUL, whose diagnostic changed, is left out).
                if self.chance(50) {
                    b"{\"src\":\"c\",\x01\"dest\":\"lb\",\"body\":{\"type\":\"stats\"}}".to_vec()
                } else {
                    b"\x01\x02\x03".to_vec()
                }
            }
            6 => self
                .pick(&["{", "}", "]", "[", "\t \x0b", "{\"src\":"])
                .as_bytes()
                .to_vec(),
            7 => {
                let depth = 1 + self.below(2000);
                format!(
                    "{{\"src\":\"c\",\"dest\":\"lb\",\"body\":{{\"type\":\"stats\",\"msg_id\":{id},\"x\":{}{}}}}}",
                    "[".repeat(depth),
                    "]".repeat(depth)
                )
                .into_bytes()
            }
            8 => {
                let len = 1 + self.below(2000);
                format!("{{\"src\":\"c\",\"dest\":\"lb\",\"body\":{{\"type\":\"stats\",\"msg_id\":{id},\"x\":\"{}\"}}}}", "y".repeat(len)).into_bytes()
            }
            9 => format!(
                "{{\"src\":\"c\",\"dest\":\"lb\",\"body\":{{\"type\":\"stats\",\"msg_id\":{id}]}}"
            )
            .into_bytes(),
            _ => self
                .pick(&["-7", "0.5", "12 13", "\"a\" \"b\""])
                .as_bytes()
                .to_vec(),
        }
    }

    /// A whole message: envelope and body.
    fn message_text(&mut self) -> String {
        let body = self.message();
        self.envelope(&body)
    }

    fn envelope(&mut self, body: &str) -> String {
        let src = match self.below(100) {
            0..=2 => "\"\\u00e9-client\"".to_owned(),
            3 => "\"\"".to_owned(),
            4..=9 => "\"admin\"".to_owned(),
            10..=39 => format!("\"c{}\"", 1 + self.below(9)),
            _ => "\"client\"".to_owned(),
        };
        let dest = self.pick(&["\"lb\"", "\"lb\"", "\"lb\"", "\"n1\""]);
        let mut fields = vec![
            ("src", src),
            ("dest", dest.to_owned()),
            ("body", body.to_owned()),
        ];
        match self.below(100) {
            0..=2 => fields.rotate_left(2),
            3..=5 => fields.rotate_left(1),
            _ => {}
        }
        if self.chance(3) {
            let extra = self.pick(&["7", "{\"k\":[1,\"x\",null]}", "\"abc\"", "[]"]);
            let at = self.below(fields.len() + 1);
            fields.insert(at, ("id", extra.to_owned()));
        }
        let render = |fields: &[(&str, String)]| {
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", parts.join(","))
        };
        let text = render(&fields);
        // Around the 300-byte limit, on both sides of it: padding in an
        // ignored envelope field fits every message type.
        if self.small_limit && self.chance(40) {
            let size = 285 + self.below(31);
            let room = size.saturating_sub(text.len() + ",\"pad\":\"\"".len());
            if room > 0 {
                fields.push(("pad", format!("\"{}\"", "p".repeat(room))));
                return render(&fields);
            }
        }
        text
    }

    /// Whether to make a mistake, `percent` of the time unless careful. A
    /// mistake gets the message refused, so the pool model stays as it is.
    fn mistake(&mut self, percent: u64) -> bool {
        let mistake = !self.careful && self.chance(percent);
        self.flawed |= mistake;
        mistake
    }

    fn msg_id(&mut self) -> Option<String> {
        let draw = if self.careful { 99 } else { self.below(100) };
        match draw {
            0..=2 => None,
            3 | 4 => Some(self.pick(ODD_IDS).to_owned()),
            5 | 6 => {
                self.flawed = true;
                Some(self.pick(BAD_IDS).to_owned())
            }
            _ => {
                let id = self.next_id;
                self.next_id += 1;
                Some(id.to_string())
            }
        }
    }

    fn with_id(&mut self, kind: &str) -> Obj {
        let mut o = Obj::new(kind);
        if let Some(id) = self.msg_id() {
            o.add("msg_id", id);
        }
        o
    }

    fn count(&mut self, typical: u64) -> String {
        if self.mistake(3) {
            self.pick(BAD_COUNTS).to_owned()
        } else if self.chance(1) {
            "18446744073709551615".to_owned()
        } else {
            self.rng.below(typical + 1).to_string()
        }
    }

    fn weight(&mut self) -> String {
        if self.mistake(4) {
            return self.pick(BAD_COUNTS).to_owned();
        }
        match self.below(100) {
            0..=5 => "0".to_owned(),
            10 => "18446744073709551615".to_owned(),
            _ => (1 + self.below(5)).to_string(),
        }
    }

    fn limit(&mut self) -> String {
        if self.mistake(4) {
            return self.pick(BAD_COUNTS).to_owned();
        }
        match self.below(100) {
            0..=15 => "null".to_owned(),
            _ => self.below(12).to_string(),
        }
    }

    /// A name from the pool that may be named in a request that can fail
    /// with "not in the pool" or "has no active connections": never a long
    /// one. Prefers backends that probably have connections.
    fn short_in_pool(&mut self, busy: bool) -> Option<usize> {
        let candidates: Vec<usize> = self
            .pool
            .iter()
            .copied()
            .filter(|&i| !self.names[i].long && (!busy || self.active[i] > 0))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.below(candidates.len())])
    }

    /// A short name that is probably not in the pool.
    fn short_not_in_pool(&mut self) -> (String, Option<usize>) {
        let candidates: Vec<usize> = (0..self.names.len())
            .filter(|i| !self.names[*i].long && !self.pool.contains(i))
            .collect();
        if candidates.is_empty() || self.chance(20) {
            (format!("\"ghost-{}\"", self.below(5)), None)
        } else {
            let i = candidates[self.below(candidates.len())];
            (self.spell(i), Some(i))
        }
    }

    /// A `backend` for a request that can fail with "not in the pool" or
    /// "has no active connections" (so never a long name), and which name
    /// of the catalogue it is, if any.
    fn target(&mut self, busy: bool) -> (String, Option<usize>) {
        match self.below(100) {
            0..=94 => match self
                .short_in_pool(busy)
                .or_else(|| self.short_in_pool(false))
            {
                Some(i) => (self.spell(i), Some(i)),
                None => self.short_not_in_pool(),
            },
            _ if self.mistake(20) => {
                let bad = self.pick(&["5", "null", "\"\"", "[\"a\"]", "{}"]);
                (bad.to_owned(), None)
            }
            _ => self.short_not_in_pool(),
        }
    }

    fn message(&mut self) -> String {
        self.flawed = false;
        match self.below(1000) {
            0..=429 => self.http_request(),
            430..=779 => self.request_complete(),
            780..=829 => self.set_backend(),
            830..=854 => self.add_backend(),
            855..=874 => self.remove_backend(),
            875..=914 => self.with_id("stats").render(),
            915..=924 => {
                let careful = self.chance(60);
                self.init(careful)
            }
            _ => self.odd(),
        }
    }

    /// An `init`; a careful one (most first ones) is accepted.
    fn init(&mut self, careful: bool) -> String {
        self.careful = careful;
        self.flawed = false;
        let mut o = self.with_id("init");
        // The new pool, unless the init is refused.
        let mut pool = None;
        let shape = if careful { 0 } else { self.below(100) };
        match shape {
            0..=91 => {
                let n = if self.wide {
                    50 + self.below(self.names.len() - 49)
                } else {
                    self.below(self.names.len().min(10) + 1)
                };
                let mut order: Vec<usize> = (0..self.names.len()).collect();
                for i in 0..n {
                    let j = i + self.below(order.len() - i);
                    order.swap(i, j);
                }
                order.truncate(n);
                let mut elements = Vec::new();
                for &name in &order {
                    elements.push(self.backend_element(name));
                }
                let flaw = if careful { 99 } else { self.below(100) };
                match flaw {
                    0..=2 if !order.is_empty() => {
                        // A name listed twice.
                        let twice = order[self.below(order.len())];
                        let again = self.spell(twice);
                        elements.push(again);
                    }
                    3 | 4 => elements.push("\"\"".to_owned()),
                    5 | 6 => elements.push(self.pick(&["5", "null", "[]", "true"]).to_owned()),
                    _ => pool = Some(order),
                }
                o.add("backends", format!("[{}]", elements.join(",")));
            }
            92..=95 => pool = Some(Vec::new()),
            _ => {
                let bad = self.pick(&["\"a\"", "5", "{}", "null"]);
                o.add("backends", bad);
            }
        }
        if self.chance(50) {
            let algorithm = if self.mistake(5) {
                self.pick(&["\"fastest\"", "5", "null"])
            } else {
                self.pick(ALGORITHMS)
            };
            o.add("algorithm", algorithm);
        }
        if self.chance(40) {
            let tie = if self.mistake(5) {
                self.pick(&["\"coin\"", "1"])
            } else {
                self.pick(&["\"lowest-index\"", "\"round-robin\"", "\"random\""])
            };
            o.add("tie_break", tie);
        }
        if self.chance(30) {
            let seed = if self.mistake(20) {
                self.pick(&["1.5", "\"42\"", "null", "18446744073709551616"])
            } else {
                self.pick(&[
                    "0",
                    "1",
                    "42",
                    "7",
                    "123456789",
                    "-1",
                    "18446744073709551615",
                    "-9223372036854775808",
                ])
            };
            o.add("seed", seed);
        }
        if self.chance(if self.wide { 95 } else { 20 }) {
            let counts = match self.below(100) {
                _ if self.mistake(3) => self.pick(&["\"some\"", "5"]),
                3..=19 if !self.wide => "\"all\"",
                _ => "\"changed\"",
            };
            o.add("counts", counts);
        }
        if self.chance(15) {
            let id = if self.mistake(10) {
                "5"
            } else {
                self.pick(&["\"lb\"", "\"n1\"", "\"node-\\u00e9\""])
            };
            o.add("node_id", id);
        }
        if self.chance(10) {
            let ids = if self.mistake(20) {
                self.pick(&["5", "[\"n1\",2]"])
            } else {
                self.pick(&["[\"n1\",\"n2\"]", "[\"lb\"]", "[]"])
            };
            o.add("node_ids", ids);
        }
        if self.chance(5) {
            o.add("meta", "{\"a\":[1,2,{\"b\":null}]}");
        }
        self.careful = false;
        if let (false, Some(pool)) = (self.flawed, pool) {
            self.pool = pool;
            self.active.iter_mut().for_each(|a| *a = 0);
        }
        o.render()
    }

    /// One element of `init`'s `backends`: a name, or an object whose keys
    /// are never repeated.
    fn backend_element(&mut self, name: usize) -> String {
        if self.chance(70) {
            return self.spell(name);
        }
        let mut fields = Vec::new();
        if !self.mistake(3) {
            fields.push(format!("\"name\":{}", self.spell(name)));
        }
        if self.chance(50) {
            fields.push(format!("\"weight\":{}", self.weight()));
        }
        if self.chance(30) {
            fields.push(format!("\"max_connections\":{}", self.limit()));
        }
        if self.mistake(3) {
            fields.push("\"zone\":\"eu\"".to_owned());
        }
        if fields.len() > 1 && self.chance(30) {
            fields.rotate_left(1);
        }
        format!("{{{}}}", fields.join(","))
    }

    fn http_request(&mut self) -> String {
        let mut o = self.with_id("http_request");
        if self.chance(20) {
            let method = if self.mistake(3) {
                "5"
            } else {
                self.pick(&["\"GET\"", "\"POST\"", "\"PUT\"", "\"DELETE\""])
            };
            o.add("method", method);
            let path = if self.mistake(3) {
                self.pick(&["null", "[]"])
            } else {
                self.pick(&[
                    "\"/api/data\"",
                    "\"/\"",
                    "\"/health\"",
                    "\"/caf\\u00e9?q=1\"",
                ])
            };
            o.add("path", path);
        }
        let mut snapshot = Vec::new();
        if self.chance(25) {
            let (text, counts) = self.snapshot();
            o.add("active_connections", text);
            snapshot = counts;
        }
        if self.chance(12) {
            let algorithm = if self.mistake(4) {
                self.pick(&["\"fastest\"", "7"])
            } else {
                self.pick(ALGORITHMS)
            };
            o.add("algorithm", algorithm);
        }
        if self.chance(10) {
            let explain = if self.mistake(5) {
                "\"yes\""
            } else {
                self.pick(&["true", "true", "false"])
            };
            o.add("explain", explain);
        }
        if self.chance(3) {
            let extra = self.pick(&["\"abc123\"", "2", "{\"x\":[1,2,{\"y\":null}]}"]);
            o.add("trace_id", extra);
        }
        if o.0.len() > 2 && self.chance(5) {
            o.0.rotate_left(1);
        }
        if !self.flawed {
            for (name, count) in snapshot {
                if !self.pool.contains(&name) {
                    self.pool.push(name);
                }
                self.active[name] = count;
            }
            // The probable pick: the least loaded.
            if let Some(&i) = self.pool.iter().min_by_key(|&&i| self.active[i]) {
                self.active[i] += 1;
            }
        }
        o.render()
    }

    /// A snapshot, and the counts it sets if it is accepted.
    fn snapshot(&mut self) -> (String, Vec<(usize, u64)>) {
        if self.mistake(1) {
            return (
                self.pick(&["[]", "\"a\"", "5", "null"]).to_owned(),
                Vec::new(),
            );
        }
        if self.chance(1) {
            return ("{}".to_owned(), Vec::new());
        }
        let n = 1 + self.below(self.pool.len().min(6) + 2);
        let mut entries = Vec::new();
        let mut counts: Vec<(usize, u64)> = Vec::new();
        for _ in 0..n {
            let name = if !self.pool.is_empty() && self.chance(80) {
                let i = self.below(self.pool.len());
                self.pool[i]
            } else {
                self.below(self.names.len())
            };
            // A name listed twice is refused.
            if counts.iter().any(|&(listed, _)| listed == name) && !self.mistake(2) {
                continue;
            }
            let count = self.count(12);
            counts.push((name, count.parse().unwrap_or(0)));
            entries.push(format!("{}:{count}", self.spell(name)));
        }
        if self.mistake(1) {
            entries.push("\"\":1".to_owned());
        }
        (format!("{{{}}}", entries.join(",")), counts)
    }

    fn request_complete(&mut self) -> String {
        let mut o = self.with_id("request_complete");
        let mut completed = None;
        if !self.mistake(2) {
            let (backend, name) = self.target(true);
            o.add("backend", backend);
            completed = name;
        }
        match self.below(100) {
            0..=19 => o.add("ok", "false"),
            20..=29 => o.add("ok", "true"),
            _ if self.mistake(3) => o.add("ok", self.pick(&["\"no\"", "0", "null"])),
            _ => {}
        }
        if self.chance(30) {
            let duration = match self.below(100) {
                _ if self.mistake(10) => self
                    .pick(&["-1", "-0.5", "\"12\"", "null", "[]", "true"])
                    .to_owned(),
                0..=49 => self.below(500).to_string(),
                50..=84 => self
                    .pick(&["12.5", "0.125", "3.75", "1e-3", "7.5e2", "2.0", "0.1"])
                    .to_owned(),
                _ => self
                    .pick(&[
                        "1.5e200",
                        "9.99e287",
                        "1e-320",
                        "123456789012345678901234567890",
                    ])
                    .to_owned(),
            };
            o.add("duration_ms", duration);
        }
        if let (false, Some(i)) = (self.flawed, completed) {
            self.active[i] = self.active[i].saturating_sub(1);
        }
        o.render()
    }

    fn set_backend(&mut self) -> String {
        let mut o = self.with_id("set_backend");
        if !self.mistake(2) {
            let (backend, _) = self.target(false);
            o.add("backend", backend);
        }
        if self.chance(60) {
            let healthy = if self.mistake(3) {
                self.pick(&["\"yes\"", "1", "null"])
            } else if self.chance(60) {
                "true"
            } else {
                "false"
            };
            o.add("healthy", healthy);
        }
        if self.chance(30) {
            let weight = self.weight();
            o.add("weight", weight);
        }
        if self.chance(30) {
            let limit = self.limit();
            o.add("max_connections", limit);
        }
        o.render()
    }

    /// An `add_backend`: only ever `type`, `msg_id`, `backend`, `weight`
    /// and `max_connections`.
    fn add_backend(&mut self) -> String {
        let mut o = self.with_id("add_backend");
        // Mostly a name the pool probably lacks.
        let absent: Vec<usize> = (0..self.names.len())
            .filter(|i| !self.pool.contains(i))
            .collect();
        let name = if !absent.is_empty() && self.chance(75) {
            absent[self.below(absent.len())]
        } else {
            self.below(self.names.len())
        };
        let mut added = None;
        match self.below(100) {
            _ if self.mistake(6) => o.add("backend", self.pick(&["5", "null", "\"\"", "[]"])),
            0..=2 => {}
            _ => {
                let spelled = self.spell(name);
                o.add("backend", spelled);
                added = Some(name);
            }
        }
        if self.chance(40) {
            let weight = self.weight();
            o.add("weight", weight);
        }
        if self.chance(30) {
            let limit = self.limit();
            o.add("max_connections", limit);
        }
        if let (false, Some(name)) = (self.flawed, added) {
            if !self.pool.contains(&name) {
                self.pool.push(name);
                self.active[name] = 0;
            }
        }
        o.render()
    }

    fn remove_backend(&mut self) -> String {
        let mut o = self.with_id("remove_backend");
        let (backend, name) = self.target(false);
        if let (false, Some(i)) = (self.flawed, name) {
            self.pool.retain(|&p| p != i);
        }
        o.add("backend", backend);
        o.render()
    }

    /// Messages the node refuses, or that are not quite what they seem.
    fn odd(&mut self) -> String {
        match self.below(9) {
            0 => {
                let kind = self.pick(&["echo", "read", "HTTP_REQUEST", "", "init_ok", "topology"]);
                self.with_id(kind).render()
            }
            1 => match self.msg_id() {
                Some(id) if self.chance(70) => format!("{{\"msg_id\":{id}}}"),
                _ => "{}".to_owned(),
            },
            2 => {
                let kind = self.pick(&["5", "null", "[\"init\"]", "{\"a\":1}", "true"]);
                let id = self.next_id;
                self.next_id += 1;
                format!("{{\"type\":{kind},\"msg_id\":{id}}}")
            }
            3 => {
                // A field given twice (never in add_backend).
                let id = self.next_id;
                self.next_id += 2;
                let shapes = [
                    format!("{{\"type\":\"stats\",\"msg_id\":{id},\"msg_id\":{}}}", id + 1),
                    format!("{{\"type\":\"http_request\",\"type\":\"stats\",\"msg_id\":{id}}}"),
                    format!("{{\"type\":\"request_complete\",\"msg_id\":{id},\"backend\":\"a\",\"backend\":\"b\"}}"),
                    format!("{{\"type\":\"http_request\",\"msg_id\":{id},\"explain\":true,\"explain\":false}}"),
                ];
                shapes[self.below(shapes.len())].clone()
            }
            4 => {
                let mut o = self.with_id("set_backend");
                o.add("backend", self.pick(&["7", "null", "{}"]));
                o.render()
            }
            5 => {
                let mut o = self.with_id("http_request");
                o.add(
                    "active_connections",
                    self.pick(&["[]", "\"a\"", "5", "null", "[[\"a\",1]]"]),
                );
                o.render()
            }
            6 => {
                let mut o = self.with_id("stats");
                o.add("verbose", self.pick(&["true", "{\"a\":[]}", "\"x\""]));
                o.render()
            }
            7 => {
                let mut o = self.with_id("remove_backend");
                if self.chance(50) {
                    o.add("backend", self.pick(&["1", "[]", "true"]));
                }
                o.render()
            }
            _ => {
                let mut o = self.with_id("request_complete");
                let (backend, _) = self.target(false);
                o.add("backend", backend);
                o.add("region", "\"eu\"");
                o.render()
            }
        }
    }
}

/// Re-indents compact JSON over several lines, as people write it.
fn pretty(text: &str, eol: &[u8]) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.extend_from_slice(eol);
        out.resize(out.len() + 2 * depth, b' ');
    };
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                out.push(b);
                if !matches!(bytes.get(i + 1), Some(b'}' | b']')) {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                if !matches!(i.checked_sub(1).map(|j| bytes[j]), Some(b'{' | b'[')) {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(b),
        }
    }
    out
}

/// Whether a message may be damaged: plain ASCII without escapes, no
/// backend list, `add_backend`, `duration_ms` or long name, so that no
/// damage can make one of the inputs left out.
fn damageable(text: &str) -> bool {
    text.is_ascii()
        && !text.contains('\\')
        && !["backends", "add_backend", "duration_ms", "long-", "forty-"]
            .iter()
            .any(|word| text.contains(word))
}

/// Which of the byte-level inputs left out (see the module docs) `bytes`
/// holds, if any. Deliberately broader than the list: it looks at every
/// place that could be read as a number or an escape, inside strings too.
fn excluded(bytes: &[u8]) -> Option<String> {
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Some(format!("a NUL byte at byte {at}"));
    }
    if bytes.windows(3).any(|w| w == b"\xEF\xBB\xBF") {
        return Some("a byte-order mark after the start".into());
    }
    if bytes.iter().any(|&b| b == 0xFE || b == 0xFF) {
        return Some("a byte of a UTF-16 byte-order mark".into());
    }
    if bytes.windows(2).any(|w| w[0] == 0xED && w[1] >= 0xA0) {
        return Some("a surrogate encoded in UTF-8".into());
    }
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\\' && bytes[i + 1] == b'u' {
            match surrogate(&bytes[i + 2..]) {
                Some(Surrogate::High) => {
                    let low = bytes.get(i + 6..i + 8) == Some(b"\\u")
                        && surrogate(&bytes[i + 8..]) == Some(Surrogate::Low);
                    if !low {
                        return Some(format!("a lone high surrogate at byte {i}"));
                    }
                    i += 12;
                    continue;
                }
                Some(_) => return Some(format!("a lone or partial surrogate at byte {i}")),
                None => {}
            }
        }
        i += 1;
    }
    for start in 0..bytes.len() {
        let b = bytes[start];
        if !(b.is_ascii_digit() || b == b'-') {
            continue;
        }
        if start > 0
            && matches!(bytes[start - 1], b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'+' | b'-' | b'.')
        {
            continue;
        }
        let len = number_prefix(&bytes[start..]);
        if len == 0 {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes[start..start + len]);
        let fraction_or_exponent = text.contains(['.', 'e', 'E']);
        let value: f64 = text.parse().unwrap_or(f64::INFINITY);
        let negative_zero = text.starts_with('-') && value == 0.0;
        let bad = if key_before(bytes, start) == Some(b"duration_ms".as_slice()) {
            negative_zero || value.abs() > 1e288 || !value.is_finite()
        } else {
            negative_zero || (fraction_or_exponent && (!value.is_finite() || value.fract() == 0.0))
        };
        if bad {
            return Some(format!("the number {text} at byte {start}"));
        }
    }
    None
}

#[derive(PartialEq)]
enum Surrogate {
    High,
    Low,
    /// `\uD8` and the like, without all four hex digits.
    Partial,
}

/// Whether the hex digits after a `\u` begin a surrogate escape.
fn surrogate(hex: &[u8]) -> Option<Surrogate> {
    if !matches!(hex.first(), Some(b'd' | b'D')) {
        return None;
    }
    let kind = match hex.get(1) {
        Some(b'8'..=b'9' | b'a' | b'b' | b'A' | b'B') => Surrogate::High,
        Some(b'c'..=b'f' | b'C'..=b'F') => Surrogate::Low,
        _ => return None,
    };
    let complete = hex
        .get(2..4)
        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
    Some(if complete { kind } else { Surrogate::Partial })
}

/// The length of the longest JSON number at the start of `s` (0 if none).
fn number_prefix(s: &[u8]) -> usize {
    let digit = |i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while digit(i) {
                i += 1;
            }
        }
        _ => return 0,
    }
    if s.get(i) == Some(&b'.') && digit(i + 1) {
        i += 1;
        while digit(i) {
            i += 1;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if digit(j) {
            i = j;
            while digit(i) {
                i += 1;
            }
        }
    }
    i
}

/// The key whose value starts at `start`, if `"key":` comes right before.
fn key_before(bytes: &[u8], start: usize) -> Option<&[u8]> {
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let mut i = start;
    while i > 0 && space(bytes[i - 1]) {
        i -= 1;
    }
    if i == 0 || bytes[i - 1] != b':' {
        return None;
    }
    i -= 1;
    while i > 0 && space(bytes[i - 1]) {
        i -= 1;
    }
    if i == 0 || bytes[i - 1] != b'"' {
        return None;
    }
    let end = i - 1;
    let open = bytes[..end].iter().rposition(|&b| b == b'"')?;
    Some(&bytes[open + 1..end])
}

/// An object's fields in order, repeated keys kept.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    fields.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

impl Fields<'_> {
    fn all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.get())
    }
}

/// Which of the inputs left out that concern whole messages (see the
/// module docs) `bytes` holds, if any: every object in it that reads as a
/// message, wherever it starts, is checked, so that damage cannot make one
/// unseen.
fn excluded_message(bytes: &[u8]) -> Option<String> {
    for at in (0..bytes.len()).filter(|&i| bytes[i] == b'{') {
        let mut input = serde_json::Deserializer::from_slice(&bytes[at..]);
        let Ok(envelope) = Fields::deserialize(&mut input) else {
            continue;
        };
        for body in envelope.all("body") {
            let Ok(body) = serde_json::from_str::<Fields>(body) else {
                continue;
            };
            if let Some(why) = excluded_body(&body) {
                return Some(format!("{why} at byte {at}"));
            }
        }
    }
    None
}

/// A backend name of more than 40 characters, anywhere a message names one:
/// `backend`, `backends` (names and objects' `name`) and snapshot keys.
fn long_name(body: &Fields) -> Option<String> {
    let too_long = |name: &str| {
        let n = name.chars().count();
        (n > 40).then(|| format!("a backend name of {n} characters"))
    };
    let mut names: Vec<String> = Vec::new();
    for raw in body.all("backend") {
        names.extend(serde_json::from_str::<String>(raw).ok());
    }
    for list in body.all("backends") {
        for element in serde_json::from_str::<Vec<&RawValue>>(list).unwrap_or_default() {
            names.extend(serde_json::from_str::<String>(element.get()).ok());
            if let Ok(fields) = serde_json::from_str::<Fields>(element.get()) {
                for name in fields.all("name") {
                    names.extend(serde_json::from_str::<String>(name).ok());
                }
            }
        }
    }
    for snapshot in body.all("active_connections") {
        if let Ok(fields) = serde_json::from_str::<Fields>(snapshot) {
            names.extend(fields.0.iter().map(|(k, _)| k.clone()));
        }
    }
    names.iter().find_map(|n| too_long(n))
}

fn excluded_body(body: &Fields) -> Option<String> {
    if let Some(why) = long_name(body) {
        return Some(why);
    }
    for kind in body.all("type") {
        match serde_json::from_str::<String>(kind).ok()?.as_str() {
            "add_backend" => {
                const ALLOWED: [&str; 5] =
                    ["type", "msg_id", "backend", "weight", "max_connections"];
                if let Some((key, _)) = body.0.iter().find(|(k, _)| !ALLOWED.contains(&k.as_str()))
                {
                    return Some(format!("add_backend with a field {key:?}"));
                }
            }
            "init" => {
                for list in body.all("backends") {
                    let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(list) else {
                        continue;
                    };
                    for element in list {
                        let Ok(fields) = serde_json::from_str::<Fields>(element.get()) else {
                            continue;
                        };
                        let keys: Vec<&str> = fields.0.iter().map(|(k, _)| k.as_str()).collect();
                        if keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k)) {
                            return Some(format!(
                                "a backend object with a repeated key: {}",
                                element.get()
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for duration in body.all("duration_ms") {
        if let Ok(value) = serde_json::from_str::<f64>(duration) {
            if value.is_nan() || value.abs() > 1e288 {
                return Some(format!("duration_ms {duration}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_level_exclusions_are_recognised() {
        for bad in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\uDBFF\u0041"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"x\ud8"}"#,
            "{\"a\":1}\n\u{feff}{\"a\":1}",
            r#"{"msg_id":-0}"#,
            r#"{"weight":2.0}"#,
            r#"{"seed":1e2}"#,
            r#"{"a":{"b":1.0e0}}"#,
            r#"{"max_connections": -0.0}"#,
            r#"{"duration_ms":1e300}"#,
            r#"{"duration_ms":1.5e288}"#,
            "{\"a\":\0}",
            r#"{"duration_ms": 2e308}"#,
        ] {
            assert!(excluded(bad.as_bytes()).is_some(), "{bad}");
        }
        assert!(excluded(b"\xFF\xFE{").is_some());
        for good in [
            r#"{"a":"\ud83d\ude00","b":"\uD83D\uDE80"}"#,
            r#"{"active_connections":{"api-0":1.5,"b":-1,"c":2.5e-1}}"#,
            r#"{"duration_ms":2.0,"x":1}"#,
            r#"{"duration_ms": 9.99e287}"#,
            r#"{"msg_id":18446744073709551616}"#,
        ] {
            assert_eq!(excluded(good.as_bytes()), None, "{good}");
        }
    }

    #[test]
    fn the_message_level_exclusions_are_recognised() {
        let long = "x".repeat(41);
        for bad in [
            r#"{"src":"c","dest":"lb","body":{"type":"add_backend","backend":"a","ok":true}}"#.to_owned(),
            r#"{"src":"c","dest":"lb","body":{"type":"init","backends":[{"name":"a","name":"b"}]}}"#.to_owned(),
            format!(r#"{{"src":"c","dest":"lb","body":{{"type":"request_complete","backend":"{long}"}}}}"#),
            format!(r#"x {{"src":"c","dest":"lb","body":{{"type":"set_backend","backend":"{long}"}}}}"#),
            format!(r#"{{"src":"c","dest":"lb","body":{{"type":"init","backends":["{long}"]}}}}"#),
            format!(r#"{{"src":"c","dest":"lb","body":{{"type":"init","backends":[{{"name":"{long}"}}]}}}}"#),
            format!(r#"{{"src":"c","dest":"lb","body":{{"type":"http_request","active_connections":{{"{long}":1}}}}}}"#),
        ] {
            assert!(excluded_message(bad.as_bytes()).is_some(), "{bad}");
        }
        for good in [
            format!(
                r#"{{"src":"c","dest":"lb","body":{{"type":"add_backend","backend":"{}","weight":1,"max_connections":null}}}}"#,
                "y".repeat(40)
            ),
            format!(
                r#"{{"src":"c","dest":"lb","body":{{"type":"request_complete","backend":"{}"}}}}"#,
                "y".repeat(40)
            ),
        ] {
            assert_eq!(excluded_message(good.as_bytes()), None, "{good}");
        }
    }

    #[test]
    fn traces_are_fixed_by_the_seed_and_hold_no_excluded_input() {
        // Index 7 would be a large trace; the others cover every shape.
        for index in (0..7).chain(8..14) {
            let trace = Trace::generate(1000 + index as u64, index);
            let again = Trace::generate(1000 + index as u64, index);
            assert_eq!(trace.bytes, again.bytes);
            let bytes = trace
                .bytes
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(&trace.bytes);
            assert_eq!(excluded(bytes), None, "trace {index}");
            assert_eq!(excluded_message(bytes), None, "trace {index}");
            assert!(trace.messages >= 20);
        }
    }
}
