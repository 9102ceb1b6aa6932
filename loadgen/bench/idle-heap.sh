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
kill -INT "$pid" && wait "$pid" || true
python3 loadgen/bench/dhat_by_crate.py "$work/dhat.json" "$n"
