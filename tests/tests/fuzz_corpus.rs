//! The fuzz targets' checks (fuzz/targets, the code `scripts/fuzz.sh` fuzzes with libFuzzer)
//! run inside the main build: on every input of their seed corpora (fuzz/corpus/<target>,
//! which holds the crashes found so far as regression cases), then on a fixed number of
//! inputs mutated from those seeds with a fixed random seed. Any panic or failed assertion
//! fails the test and names the input's seed and mutation.
//!
//! This is what CI runs. It needs no build of its own: the coverage-guided fuzzer compiles
//! every dependency again with its instrumentation (about 15 minutes on 2 cores), so it is
//! the long run of `scripts/fuzz.sh`, not a step of every CI run. Unlike that build, this one
//! has the release profile's arithmetic (no overflow checks).

#[path = "../../fuzz/targets/bag_verify.rs"]
mod bag_verify;
#[path = "../../fuzz/targets/item_facts.rs"]
mod item_facts;
#[path = "../../fuzz/targets/jsonl_line.rs"]
mod jsonl_line;
#[path = "../../fuzz/targets/kql.rs"]
mod kql;
#[path = "../../fuzz/targets/page_token.rs"]
mod page_token;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// The seed corpus of one target, by file name (sorted, so the mutations are reproducible).
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{}: no seeds", dir.display());
    seeds
}

/// xorshift64*: a fixed sequence for a fixed seed, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that often reach edge cases: boundaries of signed and unsigned sizes, and the
/// characters the formats give a meaning to.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'"', b'\\', b':', b'(', b')', b'*', b'=', b' ', b'{', b'}',
];

/// One to four of libFuzzer's simpler mutations applied to `input`, with `other` (another
/// seed) for splicing.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if !out.is_empty() => {
                let at = rng.below(out.len());
                let len = 1 + rng.below((out.len() - at).min(16));
                out.drain(at..at + len);
            }
            3 => {
                let at = rng.below(out.len() + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 if !out.is_empty() => {
                // Repeat a piece (deep nesting, long runs).
                let at = rng.below(out.len());
                let len = 1 + rng.below((out.len() - at).min(32));
                let piece = out[at..at + len].to_vec();
                for _ in 0..1 + rng.below(64) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 if !other.is_empty() => {
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 => out.truncate(rng.below(out.len() + 1)),
            _ if !out.is_empty() => {
                let at = rng.below(out.len());
                let value = rng.next() as u8;
                out[at] = value;
            }
            _ => out.push(rng.next() as u8),
        }
    }
    out
}

/// Every seed, then `mutations` mutated inputs, through `run`.
fn replay(target: &str, mutations: usize, run: fn(&[u8])) {
    let seeds = corpus(target);
    for (name, data) in &seeds {
        if catch_unwind(AssertUnwindSafe(|| run(data))).is_err() {
            panic!("{target}: seed {name} fails (reproduce: the fuzz binary on fuzz/corpus/{target}/{name})");
        }
    }
    // A sequence of its own per target (FNV-1a of the name; never zero for xorshift).
    let name_hash = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng(name_hash | 1);
    for n in 0..mutations {
        let (name, seed) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, other);
        if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
            panic!(
                "{target}: mutation {n} of seed {name} fails; the input, escaped: {}",
                input.escape_ascii()
            );
        }
    }
}

#[test]
fn kql_parses_translates_and_highlights_any_text() {
    replay("kql", 30_000, kql::run);
}

#[test]
fn page_tokens_open_or_refuse_any_text() {
    replay("page_token", 30_000, page_token::run);
}

#[test]
fn jsonl_lines_are_accepted_or_refused() {
    replay("jsonl_line", 30_000, jsonl_line::run);
}

#[test]
fn item_facts_decode_or_are_refused() {
    replay("item_facts", 30_000, item_facts::run);
}

#[test]
fn bags_verify_or_are_refused() {
    replay("bag_verify", 10_000, bag_verify::run);
}

/// The replay can fail: a target whose check fails on some input is reported.
#[test]
fn a_failing_check_fails_the_replay() {
    fn fails_on_newline(data: &[u8]) {
        assert!(!data.contains(&b'\n'), "a newline");
    }
    let result = catch_unwind(|| replay("jsonl_line", 1_000, fails_on_newline));
    assert!(
        result.is_err(),
        "a check failing on a newline passed the replay"
    );
}
