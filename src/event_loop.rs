//! The event loop: reads input, frames it, decides how each message is
//! read, hands it to the [`Node`], and writes replies and diagnostics.
//!
//! Where the framer meets the start of an object, the loop first offers the
//! input there to the node's one-pass read, which answers an ordinary,
//! well-formed message straight from the input buffer; what that declines
//! is scanned by the framer and read precisely.
//!
//! Flushing: replies are collected in a buffer and written out before every
//! read from the input, that is, as soon as everything already received has
//! been answered and the loop would wait for more. An interactive client
//! gets each reply before it sends the next request; a piped batch is
//! answered in a few large writes rather than one per line.

use crate::framing::{Frame, Framer, Position, DEFAULT_MAX_MESSAGE_SIZE};
use crate::node::Node;
use std::io::{self, Read, Write};

/// Replies are written out once this much has accumulated, even if more
/// input is waiting, to bound the buffer.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// How the loop treats its input.
#[derive(Clone, Debug)]
pub struct Options {
    /// Messages larger than this many bytes are reported and skipped.
    pub max_message_size: usize,
    /// Whether messages are first offered to the one-pass read. Off, every
    /// message is framed and read precisely: slower, the same replies.
    pub one_pass: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            one_pass: true,
        }
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages answered (each with exactly one reply).
    pub answered: u64,
    /// Pieces of input skipped as unanswerable (each with a diagnostic).
    pub skipped: u64,
}

/// Runs a node over `input` until it ends, writing replies to `output` and
/// diagnostics to `diagnostics`.
///
/// Errors are only those of reading the input or writing the output; bad
/// input is reported as diagnostics and never ends the run. A failure to
/// write a diagnostic is ignored.
pub fn run<R, W, E>(
    mut input: R,
    mut output: W,
    mut diagnostics: E,
    options: &Options,
) -> io::Result<Summary>
where
    R: Read,
    W: Write,
    E: Write,
{
    let mut node = Node::new();
    let mut framer = Framer::new(options.max_message_size);
    let mut out = Vec::with_capacity(OUTPUT_HIGH_WATER);
    let mut summary = Summary::default();
    loop {
        while let Some(frame) = framer.next_frame() {
            let taken = take(frame, &mut node, &mut out, options, &mut diagnostics);
            if let Taken::ReadWhole(len) = taken {
                framer.consume(len);
            }
            summary.count(taken);
            if out.len() >= OUTPUT_HIGH_WATER {
                output.write_all(&out)?;
                out.clear();
            }
        }
        // Everything received is answered: send it before waiting for more.
        output.write_all(&out)?;
        out.clear();
        output.flush()?;
        if framer.read_from(&mut input)? == 0 {
            break;
        }
    }
    if let Some(frame) = framer.finish() {
        summary.count(take(frame, &mut node, &mut out, options, &mut diagnostics));
    }
    output.write_all(&out)?;
    output.flush()?;
    Ok(summary)
}

/// What became of one frame.
enum Taken {
    /// A message was read whole in one pass, of this length, and answered.
    ReadWhole(usize),
    /// A framed message was answered.
    Answered,
    /// The one-pass read declined the object: the framer scans it next.
    Declined,
    /// Input that cannot be answered was reported.
    Skipped,
}

impl Summary {
    fn count(&mut self, taken: Taken) {
        match taken {
            Taken::ReadWhole(_) | Taken::Answered => self.answered += 1,
            Taken::Skipped => self.skipped += 1,
            Taken::Declined => {}
        }
    }
}

/// Hands one frame to the node, or reports it as skipped.
fn take<E: Write>(
    frame: Frame<'_>,
    node: &mut Node,
    out: &mut Vec<u8>,
    options: &Options,
    diagnostics: &mut E,
) -> Taken {
    let (at, why) = match frame {
        Frame::Begins { rest } if options.one_pass => {
            return match node.handle_one_pass(rest, options.max_message_size, out) {
                Some(len) => Taken::ReadWhole(len),
                None => Taken::Declined,
            }
        }
        Frame::Begins { .. } => return Taken::Declined,
        Frame::Object { bytes, at } => match node.handle(bytes, out) {
            Ok(()) => return Taken::Answered,
            Err(why) => (at, why),
        },
        Frame::Skipped(skipped) => (skipped.at, skipped.reason),
    };
    report(diagnostics, at, &why);
    Taken::Skipped
}

fn report<E: Write>(diagnostics: &mut E, at: Position, why: &str) {
    // Diagnostics are best effort: a closed stderr must not stop the node.
    let _ = writeln!(diagnostics, "leastconn: {at}: {why}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_str(input: &[u8]) -> (String, String, Summary) {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let summary = run(input, &mut out, &mut err, &Options::default()).expect("in-memory I/O");
        (
            String::from_utf8(out).expect("replies are UTF-8"),
            String::from_utf8(err).expect("diagnostics are UTF-8"),
            summary,
        )
    }

    #[test]
    fn bad_input_is_reported_with_its_line_and_later_messages_are_served() {
        let input = b"not json\n{\"src\":\"c\",\"dest\":\"lb\"}\n\xff\xfe\n{\"src\":\"c\",\"dest\":\"lb\",\"body\":{\"type\":\"init\",\"msg_id\":1}}";
        let (out, err, summary) = run_str(input);
        assert_eq!(
            out,
            "{\"src\":\"lb\",\"dest\":\"c\",\"body\":{\"type\":\"init_ok\",\"in_reply_to\":1}}\n"
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines[0].starts_with("leastconn: line 1, column 1: invalid JSON"),
            "{err}"
        );
        assert!(
            lines[1].starts_with(
                "leastconn: line 2, column 1: not a message: the envelope has no \"body\""
            ),
            "{err}"
        );
        assert!(
            lines[2].starts_with("leastconn: line 3, column 1: invalid JSON"),
            "{err}"
        );
        assert_eq!(
            summary,
            Summary {
                answered: 1,
                skipped: 3
            }
        );
    }

    /// A reader that hands out its input in fixed pieces and records, for
    /// each read, how many reply bytes had been written before it.
    struct Trickle<'a> {
        pieces: Vec<&'a [u8]>,
        written: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
        seen_at_read: Vec<usize>,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.seen_at_read.push(self.written.borrow().len());
            if self.pieces.is_empty() {
                return Ok(0);
            }
            let piece = self.pieces.remove(0);
            buf[..piece.len()].copy_from_slice(piece);
            Ok(piece.len())
        }
    }

    struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_reply_is_written_before_the_next_read() {
        let written = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let req = b"{\"src\":\"c\",\"dest\":\"lb\",\"body\":{\"type\":\"http_request\",\"active_connections\":{\"a\":0}}}\n";
        let mut input = Trickle {
            pieces: vec![req, req],
            written: written.clone(),
            seen_at_read: Vec::new(),
        };
        run(
            &mut input,
            Shared(written.clone()),
            io::sink(),
            &Options::default(),
        )
        .unwrap();
        let total = written.borrow().len();
        let one = total / 2;
        // Before the 2nd read the 1st reply is out; before the 3rd, both.
        assert_eq!(input.seen_at_read, [0, one, total]);
    }
}
