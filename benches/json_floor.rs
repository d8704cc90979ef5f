//! The JSON floor: the least any generic JSON node does. It reads each line,
//! parses it into a `serde_json::Value`, and writes back a reply of the same
//! shape (addressing swapped, `in_reply_to`, the snapshot echoed). The
//! benchmark reports leastconn's time as a ratio of this program's.

use serde_json::{json, Value};
use std::io::{BufRead, BufWriter, Write};

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    for line in stdin.lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let body = &message["body"];
        let mut reply = json!({
            "src": message["dest"],
            "dest": message["src"],
            "body": {
                "type": format!("{}_ok", body["type"].as_str().unwrap_or("unknown")),
                "in_reply_to": body["msg_id"],
            }
        });
        if let Some(snapshot) = body.get("active_connections") {
            reply["body"]["active_connections"] = snapshot.clone();
        }
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
