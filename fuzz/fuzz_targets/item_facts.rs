//! The `item_facts` fuzz target; its checks are in fuzz/targets/item_facts.rs (shared with the corpus
//! replay test of the main workspace, tests/tests/fuzz_corpus.rs).
#![no_main]

#[path = "../targets/item_facts.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
