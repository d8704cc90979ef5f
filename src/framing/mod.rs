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
//! The framer only takes bytes and says what it found; it knows nothing of
//! messages. At each top-level `{` it first says so ([`Frame::Begins`]),
//! with the input from there on, so that its caller may read the object
//! there in one pass of its own and tell the framer how long it was
//! ([`Framer::consume`]). Whatever the caller does not take (invalid,
//! incomplete or oversized input, or anything the caller's reader
//! declines) is scanned byte by byte from the same place when
//! [`Framer::next_frame`] is called again, so a caller's reader changes
//! speed, never results.

mod scan;

use scan::{Containers, Current, Found, State, Step};
use std::fmt;
use std::io::{self, Read};

/// The default limit on the size of one message, in bytes.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The deepest nesting the framer follows. Deeper input is reported as a
/// syntax error; the protocol layer refuses far shallower nesting anyway.
pub const MAX_DEPTH: usize = 1 << 20;

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
    /// A top-level `{` begins here and has not been scanned: `rest` is the
    /// buffered input from it on (the object may be longer). The caller
    /// may read a whole object from `rest` and [`consume`](Framer::consume)
    /// its length; otherwise the next call to
    /// [`next_frame`](Framer::next_frame) scans it.
    Begins { rest: &'a [u8] },
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
    /// The input offset of the last `{` handed out as [`Frame::Begins`]:
    /// the next call scans it instead of offering it again.
    offered: Option<u64>,
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
            offered: None,
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

    /// Scans on and returns what comes next: an object, skipped input, or
    /// the start of an object not yet scanned (see [`Frame::Begins`]).
    /// `None` when the buffered input holds no more.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        let found = self.scan();
        found.map(|found| self.frame(found))
    }

    /// Moves past an object of `len` bytes that the caller read whole from
    /// the `rest` of the last [`Frame::Begins`].
    pub fn consume(&mut self, len: usize) {
        let index = self.pos;
        let object = &self.buf[index..index + len];
        if let Some(last) = memchr::memrchr(b'\n', object) {
            self.line += memchr::memchr_iter(b'\n', object).count() as u64;
            self.line_start = self.base + (index + last + 1) as u64;
        }
        self.line_has_content = true;
        self.pos = index + len;
    }

    fn scan(&mut self) -> Option<Found> {
        while self.pos < self.end {
            let index = self.pos;
            let byte = self.buf[index];
            if byte == b'{' && self.state == State::Top {
                let offset = self.base + index as u64;
                if self.offered != Some(offset) {
                    self.offered = Some(offset);
                    return Some(Found::Begins(index));
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

    fn frame(&self, found: Found) -> Frame<'_> {
        match found {
            Found::Object { start, end, at } => Frame::Object {
                bytes: &self.buf[start..end],
                at,
            },
            Found::Skipped(skipped) => Frame::Skipped(skipped),
            Found::Begins(index) => Frame::Begins {
                rest: &self.buf[index..self.end],
            },
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
}

#[cfg(test)]
mod tests;
