#!/usr/bin/env bash
# A/B of single-node burst ingest between server binaries, on this machine and day:
#   benches/ab-ingest.sh ROUNDS SERVER_BINARY...
# Each binary runs on a fresh data directory on the default ports, with `holdfast-bench
# ingest --mode unary -c 4 -b 100 -n 150000` over /tmp/chitchat.jsonl
# (scripts/fetch-chitchat.sh). Prints the bench's JSON summary for each run. Build an older
# binary with `git worktree add /tmp/old REV && cd /tmp/old && cargo build --release -p
# holdfast-server`, then copy it out of the target directory before building the next.
set -euo pipefail
T=${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}/release
rounds=$1
shift
for round in $(seq 1 "$rounds"); do
    for server in "$@"; do
        dir=$(mktemp -d /tmp/ab-ingest.XXXXXX)
        (
            cd "$dir"
            "$server" --listen 127.0.0.1:50051 2>server.log &
            pid=$!
            for _ in $(seq 1 60); do [ -f holdfast-data/admin.token ] && break; sleep 1; done
            sleep 1
            "$T/holdfast" token create --name bench --role ingest >bench.token
            echo "== $server, round $round"
            "$T/holdfast-bench" ingest --token-file bench.token --file /tmp/chitchat.jsonl \
                --server-pid "$pid" --mode unary -c 4 -b 100 -n 150000
            kill "$pid"
            wait "$pid" 2>/dev/null || true
        )
        rm -rf "$dir"
    done
done
