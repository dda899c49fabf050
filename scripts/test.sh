#!/usr/bin/env bash
# Runs every test of the workspace (unit, property and black-box tests of the real binaries),
# then the Python tests against the real server.
# Everything uses the release profile so RocksDB's C++ is compiled once for tests, server and
# benchmarks alike.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-build-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
cargo test --release --locked --workspace "$@"
# The Python tests, against the server binary just built.
scripts/python-tests.sh
