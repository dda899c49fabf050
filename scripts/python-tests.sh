#!/usr/bin/env bash
# The Python tests (clients/python/tests) against the real server binary that `cargo test`
# built. Their packages are installed into a venv cached outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
venv="${HOLDFAST_VENV:-$HOME/.cache/holdfast-venv}"
requirements=clients/python/requirements-test.txt
stamp="$venv/.requirements.sha256"
# The requirements and the interpreter they were installed for.
want=$( (cat "$requirements"; python3 -VV; realpath "$(command -v python3)") | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
        echo "$venv exists and is not a venv; set HOLDFAST_VENV elsewhere" >&2
        exit 1
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
fi
# The server as the Rust tests run it: the same build as scripts/test.sh's `cargo test`
# (a no-op right after it; `cargo build -p ...` would resolve features differently and
# rebuild the workspace).
cargo test --release --locked --workspace --no-run --quiet
export HOLDFAST_SERVER_BIN="$CARGO_TARGET_DIR/release/holdfast-server-under-test"
# The package under test, built from this checkout (its protobuf code generated from proto/).
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
    --force-reinstall ./clients/python
# Lint (ruff: pyflakes, pycodestyle, bugbear, import order) before the tests.
"$venv/bin/ruff" check --quiet --config clients/python/pyproject.toml clients/python benches/python
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests "$@"
