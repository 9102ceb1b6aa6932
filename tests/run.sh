#!/usr/bin/env bash
# Runs every test: Rust unit and black-box tests, then the end-to-end suite with the
# official JavaScript socket.io-client. Starts (or installs) what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

ensure_redis() {
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "installing redis-server" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
    fi
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do
        redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "redis did not start on 127.0.0.1:6379" >&2
    exit 1
}

ensure_redis
cargo test --workspace
cargo build --bin confab
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/confab"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error && CONFAB_BIN="$bin" npm test)
tests/docs/validate.sh "$bin"
# The compose file, where a compose implementation is installed (the tests need none).
if docker compose version >/dev/null 2>&1; then
    JWT_SECRET=check docker compose config --quiet
elif command -v docker-compose >/dev/null 2>&1; then
    JWT_SECRET=check docker-compose config --quiet
else
    echo "skipped: docker compose config (no compose installed)"
fi
