#!/usr/bin/env bash
# Fuzzing: builds every cargo-fuzz target of fuzz/ once, then runs each for SECONDS (default
# 10) on a copy of its seed corpus (fuzz/corpus/<target>, copied to a temporary directory so
# the repository stays clean). Fails if any target crashes, panics, times out or runs out of
# memory; the input that did it is kept in fuzz/artifacts/<target>/ (gitignored).
#
#   scripts/fuzz.sh            # 10 s per target
#   scripts/fuzz.sh 600        # the long run: 10 minutes per target
#   FUZZ_TARGETS="kql bag_verify" scripts/fuzz.sh 60
#   FUZZ_SEED=1 scripts/fuzz.sh 5   # a short run with a fixed seed
#
# CI does not run this: it replays each target's corpus and mutations of it in the main
# build (tests/tests/fuzz_corpus.rs; the checks are shared, fuzz/targets/<target>.rs).
#
# The fuzz build uses other compiler flags than the main build, so it would compile
# RocksDB's C++ again (~20 minutes on 2 cores). Instead it links the librocksdb.a that
# `cargo build --release` of the main workspace already built. Uses the stable toolchain
# with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags) and no sanitizer (`--sanitizer
# none`: the code under test is safe Rust, and ASan would double the build time) and 16
# codegen units (a faster build on 2 cores); debug assertions and overflow checks are on.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds="${1:-10}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
    exit 2
fi
targets=(${FUZZ_TARGETS:-kql page_token jsonl_line item_facts bag_verify})

# The main build's target directory (as .ci/run sets it), only read here.
main_target="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
rocksdb_lib=""
for lib in $(ls -t "$main_target"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null); do
    rocksdb_lib="$lib"
    break
done
if [ -z "$rocksdb_lib" ]; then
    echo "fuzz: no librocksdb.a under $main_target/release/build/librocksdb-sys-*/out;" >&2
    echo "fuzz: run 'cargo build --release' (or scripts/test.sh) first" >&2
    exit 1
fi
export ROCKSDB_LIB_DIR="$(dirname "$rocksdb_lib")"
export ROCKSDB_STATIC=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/holdfast-fuzz-target}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
# Panics keep their backtraces (RUST_BACKTRACE); the errors the targets expect by the
# thousand do not capture one each (anyhow reads RUST_LIB_BACKTRACE first).
export RUST_LIB_BACKTRACE=0

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz 0.13.2 (cargo install --locked)" >&2
    nice cargo install --locked --version 0.13.2 cargo-fuzz
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
echo "fuzz: building ${targets[*]} (RocksDB from $ROCKSDB_LIB_DIR, target dir $CARGO_TARGET_DIR)"
start=$(date +%s)
(
    cd fuzz
    # The committed fuzz/Cargo.lock must already be complete (what --locked checks): a new
    # dependency of the server or client must be added to it too.
    if ! cargo metadata --locked --format-version 1 >/dev/null; then
        echo "fuzz: fuzz/Cargo.lock is out of date; run (cd fuzz && cargo update --workspace)," >&2
        echo "fuzz: check that it takes the root Cargo.lock's versions, and commit it" >&2
        exit 1
    fi
    nice cargo fuzz build --sanitizer none --debug-assertions --codegen-units 16
)
echo "fuzz: build took $(($(date +%s) - start)) s"

work="$(mktemp -d "${TMPDIR:-/tmp}/holdfast-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    if [ -d "fuzz/corpus/$target" ]; then
        cp -R "fuzz/corpus/$target/." "$corpus/"
    fi
    seed_args=()
    if [ -n "${FUZZ_SEED:-}" ]; then
        seed_args=("-seed=$FUZZ_SEED")
    fi
    echo "fuzz: $target for ${seconds} s"
    log="$work/$target.log"
    if nice "$CARGO_TARGET_DIR/$triple/release/$target" "$corpus" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$root/fuzz/artifacts/$target/" -print_final_stats=1 \
        "${seed_args[@]}" >"$log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^Done ' "$log" | sed "s/^/fuzz: $target: /" || true
    else
        tail -n 60 "$log" >&2
        artifact="$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)"
        echo "fuzz: $target FAILED; the input is ${artifact:-in fuzz/artifacts/$target/}" >&2
        echo "fuzz: reproduce with: $CARGO_TARGET_DIR/$triple/release/$target ${artifact:-<input>}" >&2
        failed+=("$target")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${targets[*]}: no crash in ${seconds} s each"
