//! The `jsonl_line` fuzz target; its checks are in fuzz/targets/jsonl_line.rs (shared with the corpus
//! replay test of the main workspace, tests/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../targets/jsonl_line.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
