#!/usr/bin/env bash
# Runs every test of the workspace (unit, property and black-box tests of the real binaries),
# then the Python tests against the real server.
# Everything uses the release profile so RocksDB's C++ is compiled once for tests, server and
# benchmarks alike.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-build-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
# Cluster mode's engines, of the tests' own (installed when missing, on free loopback ports),
# stopped and deleted at the end: PostgreSQL for the store conformance cases of the
# PostgreSQL backend, SeaweedFS for the Object Lock tests.
services=$(mktemp -d /tmp/holdfast-test-services.XXXXXX)
chmod 755 "$services"
trap 'scripts/postgres.sh stop "$services/pg"; scripts/seaweedfs.sh stop "$services/s3"; rm -rf "$services"' EXIT
if [ -z "${HOLDFAST_TEST_POSTGRES_URL:-}" ]; then
    HOLDFAST_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$services/pg")
    # The cluster tests restart it (scripts/postgres.sh restart) to show that nodes recover.
    HOLDFAST_TEST_POSTGRES_DIR="$services/pg"
    export HOLDFAST_TEST_POSTGRES_URL HOLDFAST_TEST_POSTGRES_DIR
fi
if [ -z "${HOLDFAST_TEST_S3:-}" ]; then
    HOLDFAST_TEST_S3=$(scripts/seaweedfs.sh start "$services/s3")
    export HOLDFAST_TEST_S3
fi
cargo test --release --locked --workspace "$@"
# The black-box tests of retention, the sweeper, eDiscovery, ingest and reading, hostile
# queries and the HTTP API once more, every server a cluster node on PostgreSQL and S3
# Object Lock: cluster mode must behave as the embedded store does. (The rest test what only
# the embedded store has: its files, backups, the bootstrap admin token.)
# (`--workspace`, as above: `-p` alone would unify features differently and build the
# server a second time.)
# (One test binary holds them all, a module each; the names select the modules. Test-name
# filters given to this script after `--` add to those names: they widen these two runs,
# they do not narrow them.)
HOLDFAST_TEST_BACKEND=cluster cargo test --release --locked --workspace --test blackbox "$@" -- \
    retention:: sweeper:: discovery:: interactions:: hostile_search:: http_api::
# eDiscovery, hostile queries, retention and the sweeper (with its erasure) once more on
# cluster nodes that search splits in the bucket (`search = "splits"`) instead of a full
# index each, and the three-node test (kill -9, PostgreSQL restart) with searches fanned
# out over the nodes.
HOLDFAST_TEST_BACKEND=cluster-splits cargo test --release --locked --workspace --test blackbox "$@" -- \
    discovery:: hostile_search:: retention:: sweeper::
HOLDFAST_TEST_BACKEND=cluster-splits cargo test --release --locked --workspace --test cluster "$@"
# The Python tests, against the server binary just built.
scripts/python-tests.sh
