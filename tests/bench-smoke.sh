#!/usr/bin/env bash
# The bounded version of the load benchmarks (BENCHMARKS.md): a few seconds of the load
# generator against a debug Confab (SQLite, in-process cluster) and against confab-floor,
# flat out and paced. The load generator exits non-zero when a run loses, repeats or
# misorders a message, a socket is closed, or an acked message is not stored.
# Usage: tests/bench-smoke.sh TARGET_DIR (holding debug/confab, confab-loadgen, confab-floor)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1/debug"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench smoke: nothing listens on $1" >&2
    return 1
}
dir="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

cp -r config "$dir/"
port="$(free_port)"
(cd "$dir" && CONFAB_LOG__LEVEL=warn CONFAB_SERVER__PORT="$port" \
    exec "$bin/confab" serve --config config/examples/bench-ratelimit.toml) > "$dir/confab.log" 2>&1 &
pids+=($!)
wait_port "$port"
echo "bench smoke: Confab flat out"
"$bin/confab-loadgen" --url "http://127.0.0.1:$port" --pairs 10 --duration 2 --server-pid "${pids[0]}"
echo "bench smoke: Confab at 500 msg/s"
"$bin/confab-loadgen" --url "http://127.0.0.1:$port" --pairs 20 --duration 2 --rate 500

fport="$(free_port)"
"$bin/confab-floor" "$fport" 1 > "$dir/floor.log" 2>&1 &
pids+=($!)
wait_port "$fport"
echo "bench smoke: confab-floor flat out"
"$bin/confab-loadgen" --url "http://127.0.0.1:$fport" --pairs 10 --duration 2 --verify false
