#!/usr/bin/env bash
# Runs every test: Rust unit and black-box tests, then the end-to-end suite with the
# official JavaScript socket.io-client, on both storage backends (SQLite, and MongoDB on
# SecantusDB) and with the cluster suites on Redis and on Redis Cluster. Starts (or
# installs) what the tests need and stops what it started (tests/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

source tests/services.sh
trap stop_services EXIT
ensure_redis
start_redis_cluster
start_secantus
echo "services: redis 127.0.0.1:6379, redis cluster $CONFAB_TEST_REDIS_CLUSTER, mongodb $CONFAB_TEST_MONGO_URI"

cargo test --workspace
# The black-box suite again with every server on MongoDB.
echo "black-box tests on MongoDB (CONFAB_TEST_STORAGE=mongodb)"
CONFAB_TEST_STORAGE=mongodb cargo test --test api

cargo build --bin confab
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/confab"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/e2e && CONFAB_BIN="$bin" npm test)
echo "end-to-end tests on MongoDB"
(cd tests/e2e && CONFAB_BIN="$bin" CONFAB_TEST_STORAGE=mongodb npm test)
tests/docs/validate.sh "$bin"
# The bounded load benchmark: the load generator against Confab and confab-floor.
cargo build -p confab-loadgen
tests/bench-smoke.sh "$(realpath "${CARGO_TARGET_DIR:-target}")"
# The compose file, where a compose implementation is installed (the tests need none).
if docker compose version >/dev/null 2>&1; then
    JWT_SECRET=check docker compose config --quiet
elif command -v docker-compose >/dev/null 2>&1; then
    JWT_SECRET=check docker-compose config --quiet
else
    echo "skipped: docker compose config (no compose installed)"
fi
