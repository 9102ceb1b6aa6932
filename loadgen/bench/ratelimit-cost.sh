#!/usr/bin/env bash
# The limiter's cost on the send path: flat-out load generator runs against fresh release
# servers, alternating the ratelimit plugin on and off, then the median of each.
# Build first: cargo build --release -p confab -p confab-loadgen
# Usage: loadgen/bench/ratelimit-cost.sh [runs per mode, default 5] [pairs, default 50]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release"
runs="${1:-5}" pairs="${2:-50}" port="${CONFAB_BENCH_PORT:-3917}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

one_run() { # $1 = true|false: the plugin enabled
    rm -rf "$work/data"
    CONFAB_RATELIMIT__ENABLED="$1" CONFAB_SERVER__PORT="$port" \
        CONFAB_STORAGE__SQLITE__PATH="$work/data/confab.db" \
        "$bin/confab" serve --config config/examples/bench-ratelimit.toml >"$work/server.log" 2>&1 &
    local pid=$!
    until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.1; done
    "$bin/confab-loadgen" --url "http://127.0.0.1:$port" --pairs "$pairs" --duration 10 >"$work/run.log"
    kill -TERM "$pid" && wait "$pid"
    grep -E '^sent ' "$work/run.log" >&2
    awk '/^delivered [0-9.]+ msg\/s/ { print $2 }' "$work/run.log"
}

for i in $(seq "$runs"); do
    echo "on $(one_run true)"
    echo "off $(one_run false)"
done | tee "$work/results"
median() { grep "^$1 " "$work/results" | cut -d' ' -f2 | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
on="$(median on)" off="$(median off)"
echo "median msg/s: on $on, off $off; the limiter costs $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.1f", (b - a) / b * 100 }') %"
