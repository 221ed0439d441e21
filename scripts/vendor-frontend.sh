#!/usr/bin/env bash
# Vendor the console's front-end libraries from the npm registry into the package, at build time.
# Usage: scripts/vendor-frontend.sh   (from `make`: demo, unit and test depend on it)
#
# `npm ci` installs exactly frontend/package-lock.json (integrity-checked, no install scripts),
# then uPlot's IIFE build and stylesheet are copied into src/crisisctl/server/static/vendor/
# (axe-core, a dev dependency, stays in frontend/node_modules: the browser tests check the
# pages' accessibility with it; it is never served).
# Idempotent: a stamp holding the lockfile's sha256 skips the work when nothing changed. The
# vendored files are not committed (.gitignore); a fresh clone gets them from this step, and
# tests/unit/test_console_assets.py checks they are byte-identical to the locked package's.
# The console never loads anything from a CDN at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

VENDOR=src/crisisctl/server/static/vendor
LOCK=frontend/package-lock.json
STAMP="$VENDOR/.lock-sha256"
want="$(sha256sum "$LOCK" | cut -d' ' -f1)"

if [ -s "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && [ -s "$VENDOR/uPlot.iife.min.js" ] && [ -s "$VENDOR/uPlot.min.css" ] \
    && [ -s frontend/node_modules/uplot/dist/uPlot.iife.min.js ] \
    && [ -s frontend/node_modules/axe-core/axe.min.js ]; then
    exit 0
fi

command -v npm >/dev/null 2>&1 || bash scripts/ensure-system-packages.sh npm
(cd frontend && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

mkdir -p "$VENDOR"
install -m 644 frontend/node_modules/uplot/dist/uPlot.iife.min.js "$VENDOR/uPlot.iife.min.js"
install -m 644 frontend/node_modules/uplot/dist/uPlot.min.css "$VENDOR/uPlot.min.css"
install -m 644 frontend/node_modules/uplot/LICENSE "$VENDOR/uPlot.LICENSE"
printf '%s\n' "$want" >"$STAMP"
echo "vendored uPlot $(node -p 'require("./frontend/node_modules/uplot/package.json").version' 2>/dev/null || echo '?') into $VENDOR"
