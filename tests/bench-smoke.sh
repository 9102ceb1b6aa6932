#!/usr/bin/env bash
# The bounded version of the load benchmarks (BENCHMARKS.md): a few seconds of the load
# generator against a debug Confab (SQLite, in-process cluster) and against confab-floor,
# flat out and paced. The load generator exits non-zero when a run loses, repeats or
# misorders a message, a socket is closed, or an acked message is not stored.
# Usage: tests/bench-smoke.sh TARGET_DIR (holding debug/confab, confab-loadgen, confab-floor)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1/debug"
source tests/services.sh
trap stop_services EXIT
# The server must not see a developer's settings.
while IFS='=' read -r name _; do
    case "$name" in CONFAB_*) unset "$name" ;; esac
done < <(env)
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cp -r config "$services_dir/"
port="$(free_port)"
(cd "$services_dir" && CONFAB_LOG__LEVEL=warn CONFAB_SERVER__PORT="$port" \
    exec "$bin/confab" serve --config config/examples/bench-ratelimit.toml) > "$services_dir/confab.log" 2>&1 &
service_pids+=($!)
wait_for "confab on $port" listening "$port"
echo "bench smoke: Confab flat out"
"$bin/confab-loadgen" --url "http://127.0.0.1:$port" --pairs 10 --duration 2 --server-pid "${service_pids[0]}"
echo "bench smoke: Confab at 500 msg/s"
"$bin/confab-loadgen" --url "http://127.0.0.1:$port" --pairs 20 --duration 2 --rate 500

fport="$(free_port)"
"$bin/confab-floor" "$fport" 1 > "$services_dir/floor.log" 2>&1 &
service_pids+=($!)
wait_for "confab-floor on $fport" listening "$fport"
echo "bench smoke: confab-floor flat out"
"$bin/confab-loadgen" --url "http://127.0.0.1:$fport" --pairs 10 --duration 2 --verify false
