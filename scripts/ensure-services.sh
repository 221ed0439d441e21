#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the test-suite talks to, if they are not running.
# Idempotent: does nothing when both already answer.
set -euo pipefail

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        echo "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    else
        echo "PostgreSQL is not installed here; tests that need it will say so" >&2
    fi
fi

if ! redis_up; then
    if command -v redis-server >/dev/null 2>&1; then
        echo "starting Redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    else
        echo "Redis is not installed here; tests that need it will say so" >&2
    fi
fi

for _ in $(seq 1 50); do
    if redis_up; then break; fi
    sleep 0.1
done
