#!/usr/bin/env bash
# Install the Debian packages the benchmarks and tests need (wrk, nginx, hey, chromium…), idempotently.
# Usage: scripts/ensure-system-packages.sh PACKAGE [PACKAGE…]
# A package whose command is already present is skipped; apt-get update runs at most once.
set -euo pipefail

need=()
for pkg in "$@"; do
    cmd="$pkg"
    case "$pkg" in
        hey) cmd=hey ;;
        chromium) cmd=chromium ;;
    esac
    if ! command -v "$cmd" >/dev/null 2>&1; then
        need+=("$pkg")
    fi
done

[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
