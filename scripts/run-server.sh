#!/usr/bin/env bash
# Builds and starts holdfast-server on its embedded defaults: data in ./holdfast-data,
# gRPC on 127.0.0.1:50051, metrics on 127.0.0.1:9464. Extra arguments go to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-build-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
cargo build --release --locked --bin holdfast-server --bin holdfast
exec "$CARGO_TARGET_DIR/release/holdfast-server" "$@"
