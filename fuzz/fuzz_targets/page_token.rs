//! The `page_token` fuzz target; its checks are in fuzz/targets/page_token.rs (shared with the corpus
//! replay test of the main workspace, tests/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../targets/page_token.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
