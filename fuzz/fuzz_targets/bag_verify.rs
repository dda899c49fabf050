//! The `bag_verify` fuzz target; its checks are in fuzz/targets/bag_verify.rs (shared with the corpus
//! replay test of the main workspace, tests/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../targets/bag_verify.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
