#!/usr/bin/env bash
# Runs every test of the workspace (unit, property and black-box tests of the real binaries),
# then the Python tests against the real server.
# Everything uses the release profile so RocksDB's C++ is compiled once for tests, server and
# benchmarks alike.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-build-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
# A PostgreSQL of the tests' own (installed when missing, on a free loopback port) for the
# store conformance cases of the PostgreSQL backend, stopped and deleted at the end.
if [ -z "${HOLDFAST_TEST_POSTGRES_URL:-}" ]; then
    pg_dir=$(mktemp -d /tmp/holdfast-test-pg.XXXXXX)
    chmod 755 "$pg_dir"
    trap 'scripts/postgres.sh stop "$pg_dir/pg"; rm -rf "$pg_dir"' EXIT
    HOLDFAST_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$pg_dir/pg")
    export HOLDFAST_TEST_POSTGRES_URL
fi
cargo test --release --locked --workspace "$@"
# The Python tests, against the server binary just built.
scripts/python-tests.sh
