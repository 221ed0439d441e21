#!/usr/bin/env bash
# Start the three-master Redis Cluster the tests talk to (loopback only), if it is not running.
# Idempotent: does nothing when the cluster already answers with cluster_state:ok.
#
#   CRISISCTL_REDIS_CLUSTER_PORTS   the nodes' ports (default "7301 7302 7303")
#   CRISISCTL_REDIS_CLUSTER_DIR     their data, logs and pid files (default /tmp/crisisctl-redis-cluster)
#
# The tests reach it as redis+cluster://127.0.0.1:7301 (CRISISCTL_TEST_REDIS_CLUSTER_URL).
# A node left over from an earlier, broken attempt (wrong state, stale nodes.conf) is stopped
# through its own pid file and the cluster is created afresh: nothing else is ever killed.
set -euo pipefail

ports=(${CRISISCTL_REDIS_CLUSTER_PORTS:-7301 7302 7303})
dir=${CRISISCTL_REDIS_CLUSTER_DIR:-/tmp/crisisctl-redis-cluster}

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-server/redis-cli are not installed here; the Redis Cluster tests will say so" >&2
    exit 0
fi

cluster_ok() {
    local port
    for port in "${ports[@]}"; do
        redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' \
            || return 1
    done
}

stop_ours() {
    local port pidfile
    for port in "${ports[@]}"; do
        pidfile="$dir/$port/redis.pid"
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    sleep 0.5
}

if cluster_ok; then
    exit 0
fi

echo "starting a Redis Cluster on 127.0.0.1 ports ${ports[*]}"
stop_ours
for port in "${ports[@]}"; do
    rm -rf "${dir:?}/$port"
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --dir "$dir/$port" --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --save "" --appendonly no
done

for port in "${ports[@]}"; do
    for _ in $(seq 1 50); do
        if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
        sleep 0.1
    done
done

nodes=()
for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null

for _ in $(seq 1 100); do
    if cluster_ok; then exit 0; fi
    sleep 0.1
done
echo "the Redis Cluster on ports ${ports[*]} did not reach cluster_state:ok; see $dir/*/redis.log" >&2
exit 1
