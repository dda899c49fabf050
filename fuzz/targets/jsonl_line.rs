//! One line of a JSONL ingest file or of an export's payload: parsed as the CLI does
//! (`holdfast ingest`), turned into the request and into the content the server hashes, and
//! checked as `bag::check_line` does. Any line is accepted or refused, never a panic.

use holdfast_client::bag;
use holdfast_client::json::JsonInteraction;

/// One input of the target (the fuzz binary and the corpus replay test call this).
pub fn run(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let _ = bag::check_line(line, 1);
    if let Ok(item) = serde_json::from_str::<JsonInteraction>(line) {
        if let Some(content) = item.content() {
            let _ = content.sha256_hex();
        }
        let _ = serde_json::to_string(&item).expect("an interaction serializes");
        let _ = item.into_input();
    }
}
