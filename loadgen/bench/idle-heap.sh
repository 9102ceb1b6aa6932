#!/usr/bin/env bash
# Heap per idle socket, by crate: a build with the system allocator under valgrind's
# dhat holds N idle sockets of N users, then the profile's live bytes at the heap's
# peak are charged to crates (loadgen/bench/dhat_by_crate.py). docs/kernel.md, "Memory
# per idle socket", has the breakdown this gives.
# Build first:
#   cargo build --release -p confab --no-default-features \
#     --features auth,chat,docs,presence,ratelimit,mongodb,redis
#   cargo build --release -p confab-loadgen
# Usage: loadgen/bench/idle-heap.sh [sockets, default 2000]
# DHAT_OUT=file keeps the profile; DHAT_SITES=n lists n allocation sites per crate.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release"
n="${1:-2000}" port="${CONFAB_BENCH_PORT:-3918}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

CONFAB_AUTH__PASSWORD__ARGON2__MEMORY_KIB=1024 CONFAB_AUTH__PASSWORD__ARGON2__ITERATIONS=1 \
    CONFAB_RATELIMIT__ENABLED=false CONFAB_SERVER__PORT="$port" \
    CONFAB_STORAGE__SQLITE__PATH="$work/data/confab.db" \
    valgrind --tool=dhat --dhat-out-file="$work/dhat.json" "$bin/confab" serve >"$work/server.log" 2>&1 &
pid=$!
until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.5; done
"$bin/confab-loadgen" --url "http://127.0.0.1:$port" --idle "$n" --idle-users "$n" --hold 2
# The load generator's sockets close as it exits; stop the server only once they are
# gone, or the peak lands in its shutdown (closing every socket at once allocates).
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/metrics" | grep -qx 'confab_open_sockets 0' && break
    sleep 0.5
done
kill -INT "$pid" && wait "$pid" || true
[ -n "${DHAT_OUT:-}" ] && cp "$work/dhat.json" "$DHAT_OUT"
python3 loadgen/bench/dhat_by_crate.py "$work/dhat.json" "$n" "${DHAT_SITES:-8}"
