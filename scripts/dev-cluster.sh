#!/usr/bin/env bash
# A development cluster on this machine: PostgreSQL (Debian postgresql-15), SeaweedFS (S3 with
# Object Lock) and 3 holdfast nodes sharing them, everything on free 127.0.0.1 ports under DIR.
#
#   scripts/dev-cluster.sh start DIR   # installs what is missing, builds, starts, prints how to reach it
#   scripts/dev-cluster.sh stop DIR    # stops the nodes and the engines (DIR stays; start again reuses it)
#
# Every node reads the same admin token (DIR/admin.token); see docs/cluster.md.
# HOLDFAST_CLUSTER_SEARCH=splits starts the nodes with `search = "splits"` (default: local).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/dev-cluster.sh start|stop DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
nodes=3

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_nodes() {
    for n in $(seq 1 $nodes); do
        pidfile="$dir/node$n/pid"
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        # Only our own server: the pid file may be stale.
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "holdfast-server" ]; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 150); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "node$n did not stop in 30 s; killing it" >&2
                kill -9 "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$pidfile"
    done
}

case $cmd in
start)
    if [ ! -d "$dir" ]; then
        mkdir -p "$dir"
        # PostgreSQL runs as the postgres user under it.
        chmod 755 "$dir"
    fi
    dir=$(cd "$dir" && pwd)
    scripts/ensure-build-deps.sh
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/holdfast-target}"
    cargo build --release --locked --bin holdfast-server --bin holdfast
    bin="$CARGO_TARGET_DIR/release"

    mkdir -p "$dir/secrets"
    chmod 700 "$dir/secrets"
    (umask 077 && scripts/postgres.sh start "$dir/pg" >"$dir/secrets/postgres.url.new")
    mv "$dir/secrets/postgres.url.new" "$dir/secrets/postgres.url"
    s3=$(scripts/seaweedfs.sh start "$dir/s3")
    field() { tr ' ' '\n' <<<"$s3" | sed -n "s/^$1=//p"; }
    endpoint=$(field endpoint)
    printf '%s\n%s\n' "$(field access_key)" "$(field secret_key)" >"$dir/secrets/s3.credentials"
    chmod 600 "$dir/secrets/"*
    if [ ! -f "$dir/admin.token" ]; then
        (umask 077 && echo "hf_dev_$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')" >"$dir/admin.token")
    fi
    token_sha256=$(tr -d '\n' <"$dir/admin.token" | sha256sum | cut -d' ' -f1)

    for n in $(seq 1 $nodes); do
        node="$dir/node$n"
        mkdir -p "$node"
        if [ -f "$node/pid" ] && [ "$(cat "/proc/$(cat "$node/pid")/comm" 2>/dev/null)" = "holdfast-server" ]; then
            echo "node$n is running already" >&2
            continue
        fi
        grpc=$(free_port)
        http=$(free_port)
        cat >"$node/holdfast.toml" <<EOF
# Written by scripts/dev-cluster.sh.
data_dir = "$node/data"
listen = "127.0.0.1:$grpc"
http_listen = "127.0.0.1:$http"
metrics_listen = "off"

[[tokens]]
name = "dev-admin"
sha256 = "$token_sha256"
roles = ["admin", "ediscovery", "ediscovery_admin", "retention_admin", "auditor", "ingest"]

[cluster]
node = "node$n"
postgres_url_file = "$dir/secrets/postgres.url"
s3_endpoint = "$endpoint"
s3_bucket = "holdfast-dev"
s3_credentials_file = "$dir/secrets/s3.credentials"
search = "${HOLDFAST_CLUSTER_SEARCH:-local}"
EOF
        echo "$grpc" >"$node/grpc.port"
        echo "$http" >"$node/http.port"
        RUST_LOG=${RUST_LOG:-info} nohup "$bin/holdfast-server" --config "$node/holdfast.toml" \
            >>"$node/log" 2>&1 &
        echo $! >"$node/pid"
    done
    for n in $(seq 1 $nodes); do
        port=$(cat "$dir/node$n/grpc.port")
        for i in $(seq 1 300); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
            if ! kill -0 "$(cat "$dir/node$n/pid")" 2>/dev/null || [ "$i" = 300 ]; then
                echo "node$n did not start; its log:" >&2
                tail -n 30 "$dir/node$n/log" >&2
                exit 1
            fi
            sleep 0.2
        done
    done
    echo "holdfast dev cluster in $dir:"
    echo "  PostgreSQL: $(sed 's#://[^:]*:[^@]*@#://***:***@#' "$dir/secrets/postgres.url")"
    echo "  S3 (SeaweedFS, Object Lock): $endpoint, bucket holdfast-dev"
    for n in $(seq 1 $nodes); do
        echo "  node$n: gRPC 127.0.0.1:$(cat "$dir/node$n/grpc.port")," \
            "console http://127.0.0.1:$(cat "$dir/node$n/http.port")/console, log $dir/node$n/log"
    done
    echo "  admin token: $dir/admin.token"
    echo "Try: HOLDFAST_TOKEN_FILE=$dir/admin.token $bin/holdfast --addr http://127.0.0.1:$(cat "$dir/node1/grpc.port") sweep status"
    ;;
stop)
    dir=$(cd "$dir" 2>/dev/null && pwd) || exit 0
    stop_nodes
    scripts/seaweedfs.sh stop "$dir/s3"
    scripts/postgres.sh stop "$dir/pg"
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
