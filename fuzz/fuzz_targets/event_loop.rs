//! Fuzzes the whole event loop. The first input byte sets how many bytes
//! each read returns; the rest is standard input. The run must not panic,
//! every output line must be a reply envelope, reading in small pieces
//! must give exactly what reading all at once gives, and so must reading
//! every message precisely, without the one-pass read.
#![no_main]

use leastconn::event_loop::{run, Options};
use libfuzzer_sys::fuzz_target;
use std::io::Read;

// The integration tests' reader that hands out input in small pieces.
#[path = "../../tests/common/pieces.rs"]
mod pieces;

use pieces::Pieces;

fn replay(input: impl Read, one_pass: bool) -> (Vec<u8>, Vec<u8>) {
    let options = Options {
        // Small, so that the size limit is reached too.
        max_message_size: 512,
        one_pass,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    run(input, &mut out, &mut err, &options).expect("in-memory I/O cannot fail");
    (out, err)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let whole = replay(input, true);
    let pieces = replay(
        Pieces {
            data: input,
            piece: usize::from(first % 16) + 1,
        },
        true,
    );
    assert_eq!(whole, pieces, "reading in pieces changed the result");
    assert_eq!(whole, replay(input, false), "the one-pass read changed the result");
    for line in whole.0.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let reply: serde_json::Value = serde_json::from_slice(line).expect("a reply is JSON");
        assert!(reply["src"].is_string() && reply["dest"].is_string());
        assert!(reply["body"]["type"].is_string());
    }
});
