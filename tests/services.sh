# Services the tests need, sourced by tests/run.sh: Redis on 127.0.0.1:6379, a
# three-master Redis Cluster and SecantusDB (a MongoDB wire server, DESIGN §3) on free
# ports. Each exports the variable the tests read; `stop_services` ends what was started.
# A variable given from outside (CONFAB_TEST_MONGO_URI, CONFAB_TEST_REDIS_CLUSTER) wins.

cache="${XDG_CACHE_HOME:-$HOME/.cache}/confab"
services_dir="$(mktemp -d "${TMPDIR:-/tmp}/confab-services.XXXXXX")"
service_pids=()

stop_services() {
    for pid in "${service_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${service_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$services_dir"
}

apt_install() {
    echo "installing $*" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >&2
}

# A free port below 55536 whose neighbour 10,000 above is free too: a Redis Cluster node
# also listens on its port + 10,000 (the cluster bus).
free_port() {
    python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randrange(20000, 45000)
    if free(p) and free(p + 10000):
        print(p)
        break
PY
}

# wait_for WHAT COMMAND...: retries COMMAND for up to 30 s.
wait_for() {
    local what="$1"; shift
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$what did not come up" >&2
    for f in "$services_dir"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
    return 1
}

ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then apt_install redis-server redis-tools; fi
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_for "redis on 127.0.0.1:6379" redis-cli -h 127.0.0.1 -p 6379 ping
}

# Three masters, no replicas: enough for keys to spread over nodes (slots, MOVED, sharded
# pub/sub), which is what cluster mode changes for Confab.
start_redis_cluster() {
    if [ -n "${CONFAB_TEST_REDIS_CLUSTER:-}" ]; then return; fi
    local urls=() addrs=() port
    for i in 1 2 3; do
        port="$(free_port)"
        mkdir -p "$services_dir/rc$i"
        redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
            --cluster-config-file "$services_dir/rc$i/nodes.conf" --dir "$services_dir/rc$i" \
            --save "" --appendonly no --logfile "$services_dir/redis-cluster-$i.log" &
        service_pids+=("$!")
        wait_for "redis cluster node on $port" redis-cli -p "$port" ping
        addrs+=("127.0.0.1:$port")
        urls+=("redis://127.0.0.1:$port")
    done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$services_dir/cluster-create.log"
    wait_for "redis cluster (state ok)" bash -c "redis-cli -p ${addrs[0]#*:} cluster info | grep -q cluster_state:ok"
    CONFAB_TEST_REDIS_CLUSTER="$(IFS=,; echo "${urls[*]}")"
    export CONFAB_TEST_REDIS_CLUSTER
}

# SecantusDB in a virtual environment under the cache, reused while its version holds.
secantus_bin() {
    local venv="$cache/secantus-venv" req="tests/mongo/requirements.txt"
    if ! cmp -s "$req" "$venv/requirements.txt" || [ ! -x "$venv/bin/secantusd-py" ]; then
        if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then apt_install python3-venv; fi
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
        cp "$req" "$venv/requirements.txt"
    fi
    echo "$venv/bin"
}

# One replica-set primary (the backend's production shape, with the test-only
# configureFailPoint command) and one advertising a standalone server (the boot refusal).
start_secantus() {
    if [ -n "${CONFAB_TEST_MONGO_URI:-}" ]; then return; fi
    local bin port standalone
    bin="$(secantus_bin)"
    port="$(free_port)"
    "$bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path :memory: --enable-test-commands \
        --log-level WARNING >"$services_dir/secantus.log" 2>&1 &
    service_pids+=("$!")
    standalone="$(free_port)"
    "$bin/secantusd-py" --host 127.0.0.1 --port "$standalone" --storage-path :memory: --standalone \
        --log-level WARNING >"$services_dir/secantus-standalone.log" 2>&1 &
    service_pids+=("$!")
    local ping='import sys, pymongo; pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=500).admin.command("ping")'
    CONFAB_TEST_MONGO_URI="mongodb://127.0.0.1:$port/?directConnection=true"
    CONFAB_TEST_MONGO_STANDALONE_URI="mongodb://127.0.0.1:$standalone/?directConnection=true"
    wait_for "secantusd on $port" "$bin/python" -c "$ping" "$CONFAB_TEST_MONGO_URI"
    wait_for "secantusd --standalone on $standalone" "$bin/python" -c "$ping" "$CONFAB_TEST_MONGO_STANDALONE_URI"
    export CONFAB_TEST_MONGO_URI CONFAB_TEST_MONGO_STANDALONE_URI
}
