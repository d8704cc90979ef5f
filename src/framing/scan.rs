//! The byte-by-byte scan: an incremental JSON syntax check with an
//! explicit stack of open containers, which knows where malformed input
//! goes wrong and where to resume.

use super::{Framer, Position, Skipped, MAX_DEPTH};

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Between top-level values.
    Top,
    /// A value is expected (after ':' or after ',' in an array).
    Value,
    /// Just after '[': a value or ']'.
    ArrayFirst,
    /// Just after '{': a key or '}'.
    ObjectFirst,
    /// After ',' in an object: a key.
    Key,
    /// After a key: ':'.
    Colon,
    /// After a value in a container: ',' or the closing bracket.
    AfterValue,
    /// Inside a string, which is an object key or a value.
    Str { key: bool },
    /// Just after a backslash in a string.
    Escape { key: bool },
    /// Inside `\uXXXX`, with this many hex digits still to come.
    Unicode { key: bool, left: u8 },
    /// Inside a number or a literal (`true`, `false`, `null`).
    Scalar,
    /// After an error: everything up to the end of the line is skipped.
    SkipLine,
}

/// The top-level value being scanned.
#[derive(Clone, Copy, Debug)]
pub(super) struct Current {
    /// Where it starts in `buf`, or `None` when it is too large and only
    /// scanned to find its end.
    pub start: Option<usize>,
    pub at: Position,
    pub is_object: bool,
}

/// A stack of open containers, one bit each: set for an object, clear for
/// an array.
#[derive(Debug, Default)]
pub(super) struct Containers {
    bits: Vec<u64>,
    pub depth: usize,
}

impl Containers {
    pub fn push(&mut self, object: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if word == self.bits.len() {
            self.bits.push(0);
        }
        if object {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.depth += 1;
        true
    }

    /// Whether the innermost open container is an object.
    pub fn top_is_object(&self) -> bool {
        let d = self.depth - 1;
        self.bits[d / 64] & (1 << (d % 64)) != 0
    }

    pub fn pop(&mut self) {
        self.depth -= 1;
    }

    pub fn clear(&mut self) {
        self.depth = 0;
        self.bits.clear();
    }
}

impl Framer {
    /// Checks a top-level scalar that ends just before `end`: a word that is
    /// not a JSON literal or number is a syntax error, not a value.
    pub(super) fn invalid_top_level_scalar(&self, end: usize) -> Option<Skipped> {
        let current = self.current?;
        let start = current.start?;
        let token = &self.buf[start..end];
        if serde_json::from_slice::<serde::de::IgnoredAny>(token).is_ok() {
            return None;
        }
        const SHOWN: usize = 20;
        let shown = String::from_utf8_lossy(&token[..token.len().min(SHOWN)]);
        let more = if token.len() > SHOWN { "…" } else { "" };
        Some(Skipped {
            at: current.at,
            reason: format!(
                "invalid JSON: `{shown}{more}` is not a JSON value; skipped to the end of line {}",
                current.at.line
            ),
        })
    }

    pub(super) fn too_large(&self, at: Position) -> Skipped {
        Skipped {
            at,
            reason: format!(
                "message is larger than the limit of {} bytes; skipped",
                self.max_size
            ),
        }
    }

    /// Ends the current top-level value just before `buf[end]`.
    pub(super) fn end_top_level(&mut self, end: usize) -> Option<Found> {
        let current = self.current.take()?;
        let start = current.start?; // too large: reported already
        if end - start > self.max_size {
            return Some(Found::Skipped(self.too_large(current.at)));
        }
        if current.is_object {
            return Some(Found::Object {
                start,
                end,
                at: current.at,
            });
        }
        let kind = match self.buf[start] {
            b'[' => "an array",
            b'"' => "a string",
            _ => "a number or literal",
        };
        Some(Found::Skipped(Skipped {
            at: current.at,
            reason: format!(
                "found {kind}, but every message must be a JSON object \
                 {{\"src\":…,\"dest\":…,\"body\":{{…}}}}; skipped"
            ),
        }))
    }

    pub(super) fn reset(&mut self, state: State) {
        self.containers.clear();
        self.current = None;
        self.state = state;
    }

    /// Handles one byte. See [`Step`] for what the result asks of the caller.
    pub(super) fn step(&mut self, index: usize, byte: u8) -> Step {
        use State::*;
        let state = self.state;
        match state {
            Str { key } => {
                match byte {
                    b'"' => return self.end_string(key, index),
                    b'\\' => self.state = Escape { key },
                    0x00..=0x1f => {
                        return self.error(
                            index,
                            byte,
                            "a control character or line break inside a string \
                             (was the line cut short?)",
                        )
                    }
                    _ => {
                        // Skip ordinary string bytes in one go.
                        let rest = &self.buf[index + 1..self.end];
                        let run = rest
                            .iter()
                            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                            .unwrap_or(rest.len());
                        self.pos += run;
                    }
                }
                return Step::Next;
            }
            Escape { key } => {
                self.state = match byte {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Str { key },
                    b'u' => Unicode { key, left: 4 },
                    _ => return self.error(index, byte, "an invalid escape sequence"),
                };
                return Step::Next;
            }
            Unicode { key, left } => {
                if !byte.is_ascii_hexdigit() {
                    return self.error(index, byte, "an invalid \\u escape");
                }
                self.state = if left == 1 {
                    Str { key }
                } else {
                    Unicode {
                        key,
                        left: left - 1,
                    }
                };
                return Step::Next;
            }
            Scalar => {
                if byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.') {
                    return Step::Next;
                }
                // The scalar ended just before this byte, which is looked at
                // again in the state that follows.
                if self.containers.depth == 0 {
                    if let Some(skipped) = self.invalid_top_level_scalar(index) {
                        self.reset(State::SkipLine);
                        return Step::Skip(skipped);
                    }
                }
                return self.end_value(index, true);
            }
            SkipLine => {
                if byte == b'\n' {
                    self.newline(index);
                    self.state = Top;
                }
                return Step::Next;
            }
            _ => {}
        }

        if matches!(byte, b' ' | b'\t' | b'\r') {
            return Step::Next;
        }
        if byte == b'\n' {
            self.newline(index);
            return Step::Next;
        }
        if state == Top && byte == BOM[0] {
            let rest = &self.buf[index..self.end];
            if rest.starts_with(BOM) {
                self.pos += BOM.len() - 1;
                if index == 0 && self.base == 0 {
                    // A byte-order mark at the start of the input is not
                    // content.
                    return Step::Next;
                }
                // Where two files were joined, only this mark is in the
                // way: the message after it is read.
                self.pos += 1;
                return Step::Skip(Skipped {
                    at: self.position_of(index),
                    reason: "a byte-order mark (EF BB BF) in the middle of the input, \
                             where only its start may have one: were two files joined? \
                             Skipped the mark"
                        .into(),
                });
            }
            if BOM.starts_with(rest) && !self.at_eof {
                return Step::Wait;
            }
        }

        let step = match (state, byte) {
            (Top | Value | ArrayFirst, _) if is_value_start(byte) => self.start_value(index, byte),
            (ArrayFirst, b']') => self.close(index, false),
            (ObjectFirst | Key, b'"') => {
                self.state = Str { key: true };
                Step::Next
            }
            (ObjectFirst, b'}') => self.close(index, true),
            (Colon, b':') => {
                self.state = Value;
                Step::Next
            }
            (AfterValue, b',') => {
                self.state = if self.containers.top_is_object() {
                    Key
                } else {
                    Value
                };
                Step::Next
            }
            (AfterValue, b'}') => self.close(index, true),
            (AfterValue, b']') => self.close(index, false),
            _ => {
                let expected = match state {
                    Top => "the start of a message ('{')",
                    Value | ArrayFirst => "a value",
                    ObjectFirst | Key => "a key in double quotes",
                    Colon => "':' after a key",
                    _ => {
                        if self.containers.top_is_object() {
                            "',' or '}' after a value"
                        } else {
                            "',' or ']' after a value"
                        }
                    }
                };
                let what = format!("expected {expected}");
                return self.error(index, byte, &what);
            }
        };
        self.line_has_content = true;
        step
    }

    fn newline(&mut self, index: usize) {
        self.line += 1;
        self.line_start = self.base + index as u64 + 1;
        self.line_has_content = false;
    }

    fn start_value(&mut self, index: usize, byte: u8) -> Step {
        if self.containers.depth == 0 {
            self.current = Some(Current {
                start: Some(index),
                at: self.position_of(index),
                is_object: byte == b'{',
            });
        }
        match byte {
            b'{' | b'[' => {
                if !self.containers.push(byte == b'{') {
                    return self.error(index, byte, "nesting deeper than the framer follows");
                }
                self.state = if byte == b'{' {
                    State::ObjectFirst
                } else {
                    State::ArrayFirst
                };
            }
            b'"' => self.state = State::Str { key: false },
            _ => self.state = State::Scalar,
        }
        Step::Next
    }

    fn close(&mut self, index: usize, object: bool) -> Step {
        if self.containers.top_is_object() != object {
            let expected = if object { "']'" } else { "'}'" };
            let byte = self.buf[index];
            return self.error(
                index,
                byte,
                &format!("a mismatched bracket (expected {expected})"),
            );
        }
        self.containers.pop();
        self.end_value(index + 1, false)
    }

    fn end_string(&mut self, key: bool, index: usize) -> Step {
        if key {
            self.state = State::Colon;
            Step::Next
        } else {
            self.end_value(index + 1, false)
        }
    }

    /// A value ended just before `end`. `again` says the byte at the current
    /// position was not part of it and must be looked at again.
    fn end_value(&mut self, end: usize, again: bool) -> Step {
        if self.containers.depth > 0 {
            self.state = State::AfterValue;
            return if again { Step::Again } else { Step::Next };
        }
        self.state = State::Top;
        if again {
            Step::EmitAndAgain(end)
        } else {
            Step::Emit(end)
        }
    }

    fn error(&mut self, index: usize, byte: u8, what: &str) -> Step {
        let at = self.position_of(index);
        let started = self.current.map(|c| c.at);
        let reported = self.current.is_none_or(|c| c.start.is_some());
        if byte == b'{' && !self.line_has_content && started.is_some() {
            // A message opening its own line while another was unfinished:
            // the earlier one was cut short. Resume at this '{'.
            self.reset(State::Top);
            return match started.filter(|_| reported) {
                Some(start) => Step::Skip(Skipped {
                    at: start,
                    reason: format!(
                        "this message is incomplete: a new message begins on line {} \
                         before it ends; skipped",
                        at.line
                    ),
                }),
                None => Step::Again,
            };
        }
        let rest = &self.buf[index..self.end];
        if MARKS
            .iter()
            .any(|mark| mark.len() > rest.len() && mark.starts_with(rest))
            && !self.at_eof
        {
            // Whether this is a byte-order mark depends on bytes to come.
            return Step::Wait;
        }
        let found = describe_byte(byte, rest);
        let start_note = match started {
            Some(s) if s.line != at.line => {
                format!(" in the message that starts on line {}", s.line)
            }
            _ => String::new(),
        };
        if byte == b'\n' {
            // The error is the line ending itself: the next line is fresh.
            self.newline(index);
            self.reset(State::Top);
        } else {
            self.reset(State::SkipLine);
        }
        self.pos = index + 1;
        if !reported {
            return Step::Again;
        }
        Step::Skip(Skipped {
            at,
            reason: format!(
                "invalid JSON: {what}, found {found}{start_note}; skipped to the end of line {}",
                at.line
            ),
        })
    }
}

/// What the scan found, by position in the buffer.
pub(super) enum Found {
    Object {
        start: usize,
        end: usize,
        at: Position,
    },
    Skipped(Skipped),
    /// A top-level `{` at this index, offered before it is scanned.
    Begins(usize),
}

/// What the scanning loop does after one byte.
pub(super) enum Step {
    /// Stop until more input arrives.
    Wait,
    /// Move to the next byte.
    Next,
    /// Look at the same byte again (the state changed).
    Again,
    /// A top-level value ends before this index; move past this byte.
    Emit(usize),
    /// A top-level value ends before this index; look at this byte again.
    EmitAndAgain(usize),
    /// Input was skipped; `pos` is already where scanning resumes.
    Skip(Skipped),
}

fn is_value_start(byte: u8) -> bool {
    matches!(
        byte,
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
    )
}

/// The byte-order marks of UTF-8 and UTF-16, which name a likely cause.
const MARKS: [&[u8]; 3] = [BOM, b"\xFF\xFE", b"\xFE\xFF"];

/// What an unexpected byte is, with what likely put it there; `rest` is
/// the input from it on.
fn describe_byte(byte: u8, rest: &[u8]) -> String {
    const UTF16: &str = "the input looks like UTF-16, and leastconn reads UTF-8: \
                         convert it first, for instance with iconv -f UTF-16 -t UTF-8";
    match byte {
        b'\n' => "the end of the line".into(),
        0 => "a NUL byte (if the input is UTF-16, convert it to UTF-8 first, \
              for instance with iconv -f UTF-16 -t UTF-8)"
            .into(),
        0x20..=0x7e => format!("'{}'", byte as char),
        _ if rest.starts_with(BOM) => "a byte-order mark (EF BB BF), which only the start \
                                       of the input may have (were two files joined?)"
            .into(),
        _ if rest.starts_with(b"\xFF\xFE") || rest.starts_with(b"\xFE\xFF") => {
            format!("a UTF-16 byte-order mark ({UTF16})")
        }
        _ => format!("byte 0x{byte:02X}"),
    }
}
