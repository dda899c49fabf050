#!/usr/bin/env bash
# The Python tests (clients/python/tests) against the real server binary that `cargo test`
# built. Their packages are installed into a venv cached outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
venv="${HOLDFAST_VENV:-$HOME/.cache/holdfast-venv}"
requirements=clients/python/requirements-test.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
fi
export HOLDFAST_SERVER_BIN="${HOLDFAST_SERVER_BIN:-$CARGO_TARGET_DIR/release/holdfast-server-under-test}"
if [ ! -x "$HOLDFAST_SERVER_BIN" ]; then
    cargo build --release --locked -p holdfast-tests --bin holdfast-server-under-test
fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests "$@"
