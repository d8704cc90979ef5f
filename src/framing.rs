//! Framing: cutting a byte stream into JSON values.
//!
//! Input is a stream of JSON objects: one per line, pretty-printed across
//! lines, or several on one line, with LF or CRLF endings. [`Framer`] scans
//! the bytes once, with an incremental syntax checker, and hands out each
//! complete top-level object. It does not build values; the protocol layer
//! parses the bytes it hands out.
//!
//! Because it follows the JSON grammar (with an explicit stack, so nesting
//! depth costs no call stack), it knows where malformed input goes wrong.
//! A malformed value is skipped from its start to the end of the line where
//! it went wrong, and scanning resumes on the next line, with one exception:
//! when the unexpected byte is a `{` that opens its line, the previous value
//! was cut short and a new one begins there, so scanning resumes at that `{`.
//! A value larger than the size limit is reported, scanned to its end without
//! being kept, and skipped.
//!
//! Two fast paths come first at each top-level `{`, and either may decline:
//! the caller's own one-pass reader ([`Framer::next_frame_or`]), and a quick
//! serde skim that delimits a complete, valid object. Whatever they decline
//! (invalid, incomplete or oversized input) is scanned byte by byte from the
//! same place, so they change speed, never results.

use std::fmt;
use std::io::{self, Read};

/// The default limit on the size of one message, in bytes.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The deepest nesting the framer follows. Deeper input is reported as a
/// syntax error; the protocol layer refuses far shallower nesting anyway.
pub const MAX_DEPTH: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How much is read from the input at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A place in the input, for diagnostics. Both numbers count from 1; the
/// column counts bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Input that was skipped, with where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub at: Position,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

/// What the framer found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete top-level JSON object, syntactically balanced, starting at
    /// `at`. Its scalars and UTF-8 are checked by whoever parses it.
    Object { bytes: &'a [u8], at: Position },
    /// Input that cannot be a message and was skipped.
    Skipped(Skipped),
    /// An object that the caller's `take` handled (see
    /// [`Framer::next_frame_or`]).
    Taken,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
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
struct Current {
    /// Where it starts in `buf`, or `None` when it is too large and only
    /// scanned to find its end.
    start: Option<usize>,
    at: Position,
    is_object: bool,
}

/// A stack of open containers, one bit each: set for an object, clear for
/// an array.
#[derive(Debug, Default)]
struct Containers {
    bits: Vec<u64>,
    depth: usize,
}

impl Containers {
    fn push(&mut self, object: bool) -> bool {
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
    fn top_is_object(&self) -> bool {
        let d = self.depth - 1;
        self.bits[d / 64] & (1 << (d % 64)) != 0
    }

    fn pop(&mut self) {
        self.depth -= 1;
    }

    fn clear(&mut self) {
        self.depth = 0;
        self.bits.clear();
    }
}

/// Cuts a byte stream into top-level JSON objects. See the module docs.
#[derive(Debug)]
pub struct Framer {
    /// Input bytes in `buf[..end]`; the rest is spare room for the next
    /// read, kept between reads so that it is not cleared again each time.
    buf: Vec<u8>,
    end: usize,
    /// Index in `buf` of the next byte to scan.
    pos: usize,
    /// The absolute input offset of `buf[0]`.
    base: u64,
    line: u64,
    /// The absolute input offset where the current line starts.
    line_start: u64,
    /// Whether the current line has had a byte other than whitespace before
    /// `pos`.
    line_has_content: bool,
    state: State,
    containers: Containers,
    current: Option<Current>,
    max_size: usize,
    at_eof: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl Framer {
    /// A framer that skips any value larger than `max_size` bytes.
    pub fn new(max_size: usize) -> Self {
        Framer {
            buf: Vec::new(),
            end: 0,
            pos: 0,
            base: 0,
            line: 1,
            line_start: 0,
            line_has_content: false,
            state: State::Top,
            containers: Containers::default(),
            current: None,
            max_size,
            at_eof: false,
        }
    }

    /// Appends bytes to the input.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// Reads once from `reader` into the framer's buffer. Returns the number
    /// of bytes read; 0 means the input has ended.
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.compact();
        if self.buf.len() - self.end < READ_CHUNK / 2 {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let n = loop {
            match reader.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.end += n;
        Ok(n)
    }

    /// Drops bytes no longer needed from the front of the buffer.
    fn compact(&mut self) {
        let keep_from = match self.current {
            Some(Current {
                start: Some(start), ..
            }) => start,
            _ => self.pos,
        };
        if keep_from == 0 {
            return;
        }
        self.buf.copy_within(keep_from..self.end, 0);
        self.end -= keep_from;
        self.base += keep_from as u64;
        self.pos -= keep_from;
        if let Some(Current {
            start: Some(start), ..
        }) = &mut self.current
        {
            *start -= keep_from;
        }
    }

    fn position_of(&self, index: usize) -> Position {
        Position {
            line: self.line,
            column: self.base + index as u64 - self.line_start + 1,
        }
    }

    /// Scans on and returns the next complete object or skipped input, or
    /// `None` when the buffered input holds no more.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        self.next_frame_or(&mut |_: &[u8], _: usize| None)
    }

    /// As [`next_frame`](Self::next_frame), but first offers the input at
    /// each top-level `{` to `take`, with the size limit: if `take` handles
    /// a whole, valid object there of at most that size, it returns the
    /// object's length, and the framer moves past it and says
    /// [`Frame::Taken`].
    pub fn next_frame_or(
        &mut self,
        take: &mut dyn FnMut(&[u8], usize) -> Option<usize>,
    ) -> Option<Frame<'_>> {
        let found = self.scan(take);
        found.map(|found| self.frame(found))
    }

    fn scan(&mut self, take: &mut dyn FnMut(&[u8], usize) -> Option<usize>) -> Option<Found> {
        while self.pos < self.end {
            let index = self.pos;
            let byte = self.buf[index];
            if byte == b'{' && self.state == State::Top {
                if let Some(len) = take(&self.buf[index..self.end], self.max_size) {
                    self.move_past(index, len);
                    return Some(Found::Taken);
                }
                if let Some(found) = self.whole_object(index) {
                    return Some(found);
                }
            }
            let step = self.step(index, byte);
            match step {
                Step::Next => {
                    self.pos += 1;
                    // Checked at every step, so that where a message turns
                    // out too large does not depend on how input arrives.
                    if let Some(found) = self.check_size() {
                        return Some(found);
                    }
                }
                Step::Again => {}
                Step::Wait => return None,
                Step::Emit(end) | Step::EmitAndAgain(end) => {
                    if matches!(step, Step::Emit(_)) {
                        self.pos += 1;
                    }
                    if let Some(found) = self.end_top_level(end) {
                        return Some(found);
                    }
                }
                Step::Skip(skipped) => return Some(Found::Skipped(skipped)),
            }
        }
        None
    }

    /// Reports the current value once it is past the size limit, and stops
    /// keeping its bytes.
    fn check_size(&mut self) -> Option<Found> {
        let current = self.current.as_mut()?;
        let start = current.start?;
        if self.pos - start <= self.max_size {
            return None;
        }
        current.start = None;
        let at = current.at;
        Some(Found::Skipped(self.too_large(at)))
    }

    /// The fast path: when a complete, valid JSON object starts at `index`
    /// (the usual case), frames it in one quick pass. Returns `None`, having
    /// changed nothing, whenever the byte-by-byte scan must decide instead:
    /// invalid or incomplete JSON, or a value over the size limit.
    fn whole_object(&mut self, index: usize) -> Option<Found> {
        let rest = &self.buf[index..self.end];
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde::de::IgnoredAny>();
        values.next()?.ok()?;
        let len = values.byte_offset();
        if len > self.max_size {
            return None;
        }
        let at = self.move_past(index, len);
        Some(Found::Object {
            start: index,
            end: index + len,
            at,
        })
    }

    /// Moves past a whole object of `len` bytes at `index`, found by a fast
    /// path, keeping the line count. Returns where the object starts.
    fn move_past(&mut self, index: usize, len: usize) -> Position {
        let at = self.position_of(index);
        let object = &self.buf[index..index + len];
        if let Some(last) = memchr::memrchr(b'\n', object) {
            self.line += memchr::memchr_iter(b'\n', object).count() as u64;
            self.line_start = self.base + (index + last + 1) as u64;
        }
        self.line_has_content = true;
        self.pos = index + len;
        at
    }

    fn frame(&self, found: Found) -> Frame<'_> {
        match found {
            Found::Object { start, end, at } => Frame::Object {
                bytes: &self.buf[start..end],
                at,
            },
            Found::Skipped(skipped) => Frame::Skipped(skipped),
            Found::Taken => Frame::Taken,
        }
    }

    /// Marks the end of the input and reports a value left incomplete by it.
    /// Call [`next_frame`](Self::next_frame) until it returns `None` first.
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        if self.at_eof {
            return None;
        }
        self.at_eof = true;
        if self.state == State::Scalar && self.containers.depth == 0 {
            // A bare scalar at the very end, e.g. `42` with no newline.
            if let Some(skipped) = self.invalid_top_level_scalar(self.pos) {
                self.reset(State::Top);
                return Some(Frame::Skipped(skipped));
            }
            let found = self.end_top_level(self.pos);
            return found.map(|found| self.frame(found));
        }
        let current = self.current.take()?;
        self.reset(State::Top);
        current.start?; // a value too large was reported already
        Some(Frame::Skipped(Skipped {
            at: current.at,
            reason: "input ended inside this message; it is incomplete and was skipped".into(),
        }))
    }

    /// Checks a top-level scalar that ends just before `end`: a word that is
    /// not a JSON literal or number is a syntax error, not a value.
    fn invalid_top_level_scalar(&self, end: usize) -> Option<Skipped> {
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

    fn too_large(&self, at: Position) -> Skipped {
        Skipped {
            at,
            reason: format!(
                "message is larger than the limit of {} bytes; skipped",
                self.max_size
            ),
        }
    }

    /// Ends the current top-level value just before `buf[end]`.
    fn end_top_level(&mut self, end: usize) -> Option<Found> {
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

    fn reset(&mut self, state: State) {
        self.containers.clear();
        self.current = None;
        self.state = state;
    }

    /// Handles one byte. See [`Step`] for what the result asks of the caller.
    fn step(&mut self, index: usize, byte: u8) -> Step {
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
        if state == Top && index == 0 && self.base == 0 && byte == BOM[0] {
            // A byte-order mark at the start of the input is not content.
            if self.buf[..self.end].starts_with(BOM) {
                self.pos += BOM.len() - 1;
                return Step::Next;
            }
            if BOM.starts_with(&self.buf[..self.end]) && !self.at_eof {
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
        let reported = self.current.map_or(true, |c| c.start.is_some());
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
        let found = describe_byte(byte);
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
enum Found {
    Object {
        start: usize,
        end: usize,
        at: Position,
    },
    Skipped(Skipped),
    Taken,
}

/// What the scanning loop does after one byte.
enum Step {
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

fn describe_byte(byte: u8) -> String {
    match byte {
        b'\n' => "the end of the line".into(),
        0 => "a NUL byte".into(),
        0x20..=0x7e => format!("'{}'", byte as char),
        _ => format!("byte 0x{byte:02X}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames all of `input`, fed `chunk` bytes at a time, as readable text.
    fn frames_chunked(input: &[u8], chunk: usize, max: usize) -> Vec<String> {
        let mut framer = Framer::new(max);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            framer.push(piece);
            while let Some(frame) = framer.next_frame() {
                out.push(describe(frame));
            }
        }
        while let Some(frame) = framer.next_frame() {
            out.push(describe(frame));
        }
        if let Some(frame) = framer.finish() {
            out.push(describe(frame));
        }
        out
    }

    fn describe(frame: Frame<'_>) -> String {
        match frame {
            Frame::Object { bytes, at } => {
                format!(
                    "{}:{} {}",
                    at.line,
                    at.column,
                    String::from_utf8_lossy(bytes)
                )
            }
            Frame::Skipped(s) => format!("{}:{} SKIP {}", s.at.line, s.at.column, s.reason),
            Frame::Taken => "TAKEN".into(),
        }
    }

    /// Frames `input` whole and one byte at a time, and checks both agree.
    fn frames(input: &str) -> Vec<String> {
        let whole = frames_chunked(input.as_bytes(), input.len(), 1 << 20);
        let bytewise = frames_chunked(input.as_bytes(), 1, 1 << 20);
        assert_eq!(whole, bytewise, "chunking changed the result");
        whole
    }

    #[test]
    fn one_object_per_line_with_crlf_blank_lines_and_no_final_newline() {
        let got = frames("{\"a\":1}\r\n\r\n\n  {\"b\":[1,{\"c\":\"}\"}]}");
        assert_eq!(got, ["1:1 {\"a\":1}", "4:3 {\"b\":[1,{\"c\":\"}\"}]}"]);
    }

    #[test]
    fn pretty_printed_and_several_per_line() {
        let got = frames("{\n  \"a\": {\n    \"b\": \"x\\\"y\"\n  }\n}{\"c\":2} {}\n");
        assert_eq!(
            got,
            [
                "1:1 {\n  \"a\": {\n    \"b\": \"x\\\"y\"\n  }\n}",
                "5:2 {\"c\":2}",
                "5:10 {}"
            ]
        );
    }

    #[test]
    fn a_cut_line_is_skipped_and_the_next_line_is_read() {
        let got = frames("{\"a\":\"tru\n{\"b\":1}\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("1:10 SKIP invalid JSON: a control character"),
            "{got:?}"
        );
        assert_eq!(got[1], "2:1 {\"b\":1}");
    }

    #[test]
    fn a_message_cut_between_values_resumes_at_the_next_line_brace() {
        let got = frames("{\"a\":1,\"b\":2\n{\"c\":3}\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0]
            .starts_with("1:1 SKIP this message is incomplete: a new message begins on line 2"));
        assert_eq!(got[1], "2:1 {\"c\":3}");
    }

    #[test]
    fn an_error_mid_line_skips_to_the_end_of_that_line() {
        let got = frames("{\"a\" 1} {\"lost\":1}\n{\"b\":2}\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("1:6 SKIP invalid JSON: expected ':' after a key, found '1'"),
            "{got:?}"
        );
        assert_eq!(got[1], "2:1 {\"b\":2}");
    }

    #[test]
    fn mismatched_brackets_do_not_swallow_later_messages() {
        let got = frames("{\"a\":[1}\n{\"b\":2}\n");
        assert!(got[0].contains("mismatched bracket"), "{got:?}");
        assert_eq!(got[1], "2:1 {\"b\":2}");
    }

    #[test]
    fn non_objects_are_skipped_with_their_kind() {
        let got = frames("[1,2]\n42\n\"s\"\nnull {\"ok\":1}\n");
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[0].starts_with("1:1 SKIP found an array"));
        assert!(got[1].starts_with("2:1 SKIP found a number or literal"));
        assert!(got[2].starts_with("3:1 SKIP found a string"));
        assert!(got[3].starts_with("4:1 SKIP found a number or literal"));
        assert_eq!(got[4], "4:6 {\"ok\":1}");
    }

    #[test]
    fn garbage_and_stray_closers_skip_their_line() {
        let got = frames("hello world\n}\n\u{0}\nnot json\n{\"ok\":1}");
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(
            got[3].starts_with("4:1 SKIP invalid JSON: `not` is not a JSON value"),
            "{got:?}"
        );
        assert!(got[0].starts_with("1:1 SKIP invalid JSON: expected the start of a message"));
        assert!(got[2].contains("a NUL byte"), "{got:?}");
        assert_eq!(got[4], "5:1 {\"ok\":1}");
    }

    #[test]
    fn truncated_at_end_of_input_is_reported_once() {
        let got = frames("{\"ok\":1}\n{\n  \"a\": [1,\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[1].starts_with("2:1 SKIP input ended inside this message"),
            "{got:?}"
        );
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_ignored() {
        assert_eq!(frames("\u{feff}{\"a\":1}\n"), ["1:4 {\"a\":1}"]);
    }

    #[test]
    fn non_ascii_bytes_inside_strings_pass_through() {
        let input = b"{\"a\":\"\xff\xfe\"}\n";
        let got = frames_chunked(input, input.len(), 1 << 20);
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("1:1 {"));
    }

    #[test]
    fn deep_nesting_uses_no_call_stack() {
        let depth = 100_000;
        let input = format!(
            "{{\"a\":{}{}}}\n{{\"b\":1}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let got = frames_chunked(input.as_bytes(), 4096, 1 << 20);
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("1:1 {\"a\":[[["));
        assert_eq!(got[1], "2:1 {\"b\":1}");
    }

    #[test]
    fn oversized_messages_are_skipped_and_not_kept() {
        let big = format!("{{\"a\":\"{}\"}}\n{{\"b\":1}}\n", "x".repeat(10_000));
        for chunk in [7, 100, 4096, big.len()] {
            let got = frames_chunked(big.as_bytes(), chunk, 1000);
            assert_eq!(got.len(), 2, "chunk {chunk}: {got:?}");
            assert!(got[0].starts_with("1:1 SKIP message is larger than the limit of 1000 bytes"));
            assert_eq!(got[1], "2:1 {\"b\":1}");
        }
    }

    #[test]
    fn an_unterminated_oversized_message_keeps_memory_bounded() {
        let mut framer = Framer::new(1000);
        framer.push(b"{\"a\":\"");
        let mut skipped = 0;
        for _ in 0..1000 {
            framer.push(&[b'x'; 1000]);
            while let Some(frame) = framer.next_frame() {
                assert!(matches!(frame, Frame::Skipped(_)));
                skipped += 1;
            }
            assert!(framer.end <= 2000, "buffer grew to {}", framer.end);
        }
        assert_eq!(skipped, 1);
        assert_eq!(framer.finish(), None);
    }
}
