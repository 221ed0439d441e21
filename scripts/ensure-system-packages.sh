#!/usr/bin/env bash
# Install the Debian packages the benchmarks and tests need (wrk, nginx, hey, chromium,
# prometheus, prometheus-alertmanager…), idempotently.
# Usage: scripts/ensure-system-packages.sh PACKAGE [PACKAGE…]
# A package whose command is already present (on PATH or in /usr/sbin) is skipped; apt-get
# update runs at most once.
#
# Packages with a service (nginx) must not start it: Debian's nginx would otherwise serve the
# default site on port 80. During the install a temporary /usr/sbin/policy-rc.d refuses every
# service start (exit 101), unless one already exists, which is left exactly as it was. Any
# nginx, prometheus or alertmanager the install started anyway is stopped and its boot start
# disabled; the tests run their own processes with their own configuration, files and logs.
# prometheus/prometheus-alertmanager are checked by their tools (promtool, amtool).
set -euo pipefail

has_command() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

need=()
for pkg in "$@"; do
    cmd="$pkg"
    case "$pkg" in
        hey) cmd=hey ;;
        chromium) cmd=chromium ;;
        nginx | nginx-light | nginx-core | nginx-full) cmd=nginx ;;
        prometheus) cmd=promtool ;;
        prometheus-alertmanager) cmd=amtool ;;
    esac
    if ! has_command "$cmd"; then
        need+=("$pkg")
    fi
done

[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

POLICY=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
    if [ "$own_policy" -eq 1 ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT

if [ ! -e "$POLICY" ]; then
    # no service started by the install (invoke-rc.d honours exit status 101: "action forbidden")
    printf '#!/bin/sh\n# temporary, from crisisctl scripts/ensure-system-packages.sh\nexit 101\n' |
        $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    own_policy=1
fi

echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

# belt and braces: stop and disable a system nginx the install may have started all the same
for pkg in "${need[@]}"; do
    case "$pkg" in
        nginx*)
            if [ -s /run/nginx.pid ] && $SUDO kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
                echo "stopping the nginx the package install started"
                $SUDO /usr/sbin/nginx -s quit 2>/dev/null || $SUDO kill "$(cat /run/nginx.pid)" || true
            fi
            if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
                $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
            elif command -v update-rc.d >/dev/null 2>&1; then
                $SUDO update-rc.d nginx disable >/dev/null 2>&1 || true
            fi
            ;;
        prometheus | prometheus-alertmanager)
            # the tests start their own prometheus/alertmanager on loopback ports
            for svc in "$pkg" prometheus-node-exporter; do
                if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
                    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
                elif command -v update-rc.d >/dev/null 2>&1; then
                    $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
                fi
            done
            # a service the install started runs as the package's own user "prometheus"
            # (the tests' processes run as the caller): stop only those
            for pid in $(pgrep -u prometheus 2>/dev/null || true); do
                echo "stopping a process the $pkg install started (pid $pid)"
                $SUDO kill "$pid" 2>/dev/null || true
            done
            ;;
    esac
done
