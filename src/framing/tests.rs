//! The framer on its own: where it cuts, what it skips, and that how the
//! input arrives changes nothing.

use super::*;

/// Frames all of `input`, fed `chunk` bytes at a time, as readable text.
fn frames_chunked(input: &[u8], chunk: usize, max: usize) -> Vec<String> {
    frames_taking(input, chunk, max, |_| None)
}

/// Frames all of `input`, fed `chunk` bytes at a time, offering each
/// [`Frame::Begins`] to `take`, which may say how long an object there is.
fn frames_taking(
    input: &[u8],
    chunk: usize,
    max: usize,
    mut take: impl FnMut(&[u8]) -> Option<usize>,
) -> Vec<String> {
    let mut framer = Framer::new(max);
    let mut out = Vec::new();
    let mut drain = |framer: &mut Framer, out: &mut Vec<String>| {
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Begins { rest } => {
                    if let Some(len) = take(rest) {
                        out.push(format!("TAKEN {}", String::from_utf8_lossy(&rest[..len])));
                        framer.consume(len);
                    }
                }
                frame => out.push(describe(frame)),
            }
        }
    };
    for piece in input.chunks(chunk.max(1)) {
        framer.push(piece);
        drain(&mut framer, &mut out);
    }
    drain(&mut framer, &mut out);
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
        Frame::Begins { .. } => unreachable!("offered to the caller first"),
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
    assert!(
        got[0].starts_with("1:1 SKIP this message is incomplete: a new message begins on line 2")
    );
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
            match frame {
                Frame::Begins { .. } => {}
                frame => {
                    assert!(matches!(frame, Frame::Skipped(_)));
                    skipped += 1;
                }
            }
        }
        assert!(framer.end <= 2000, "buffer grew to {}", framer.end);
    }
    assert_eq!(skipped, 1);
    assert_eq!(framer.finish(), None);
}

#[test]
fn an_object_the_caller_reads_is_moved_past_with_its_lines() {
    // The caller takes only objects that are complete in the buffer and
    // start with `{"t"`; the rest is scanned.
    let take = |rest: &[u8]| {
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde::de::IgnoredAny>();
        values.next()?.ok()?;
        rest.starts_with(b"{\"t\"").then_some(values.byte_offset())
    };
    let input = b"{\"t\":\n1}\n{\"u\":2}\n{\"t\":3} x\n{\"u\":4}";
    let got = frames_taking(input, input.len(), 1 << 20, take);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0], "TAKEN {\"t\":\n1}");
    assert_eq!(got[1], "3:1 {\"u\":2}");
    assert_eq!(got[2], "TAKEN {\"t\":3}");
    assert!(got[3].starts_with("4:9 SKIP invalid JSON"), "{got:?}");
    assert_eq!(
        got[4], "5:1 {\"u\":4}",
        "the line count includes taken lines"
    );
    // Piece by piece, objects split across reads are scanned, not taken,
    // with the same result otherwise.
    let pieces = frames_taking(input, 3, 1 << 20, take);
    let scanned: Vec<String> = got.iter().map(|g| g.replace("TAKEN ", "")).collect();
    assert_eq!(pieces.len(), 5, "{pieces:?}");
    assert_eq!(pieces[1], scanned[1]);
    assert_eq!(pieces[4], scanned[4]);
}
