#!/usr/bin/env bash
# PostgreSQL for the tests and the dev cluster, on this machine only: installs Debian's
# postgresql-15 when it is missing, creates a cluster in DIR (owned by the `postgres` user when
# run as root: PostgreSQL refuses to run as root), starts it on a free loopback port with
# password authentication, and prints its URL. Nothing depends on a server the machine runs.
#
#   scripts/postgres.sh start DIR   # prints postgres://holdfast:<password>@127.0.0.1:<port>/postgres
#   scripts/postgres.sh stop DIR
#
# DIR's parent must be traversable by the postgres user (e.g. `mktemp -d` then `chmod 755`).
set -euo pipefail
usage="usage: scripts/postgres.sh start|stop|restart DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
bin=/usr/lib/postgresql/15/bin
root=false
[ "$(id -u)" = 0 ] && root=true
as_pg() {
    if $root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
case $cmd in
start)
    if [ ! -x "$bin/initdb" ]; then
        if ! $root; then
            echo "postgres.sh: PostgreSQL 15 is missing; install postgresql-15" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq postgresql-15 >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null; }
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$dir/password"
        chmod 600 "$dir/password"
        if $root; then chown -R postgres: "$dir"; fi
        chmod 700 "$dir"
        as_pg "$bin/initdb" -D "$dir/data" -U holdfast --pwfile="$dir/password" \
            --auth=scram-sha-256 -E UTF8 --no-instructions >"$dir/initdb.log"
    fi
    if as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "postgres://holdfast:$(cat "$dir/password")@127.0.0.1:$(cat "$dir/port")/postgres"
        exit 0
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k '$dir'" start >/dev/null
    echo "$port" >"$dir/port"
    echo "postgres://holdfast:$(cat "$dir/password")@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=$(cd "$dir" 2>/dev/null && pwd) || exit 0
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null || true
    ;;
restart)
    # Same port and data; every open connection is cut (tests of clients' recovery).
    dir=$(cd "$dir" && pwd)
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -m fast -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $(cat "$dir/port") -k '$dir'" restart >/dev/null
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
