#!/usr/bin/env bash
# System packages the test suite needs (Debian): installs the missing ones when run as root,
# otherwise says what to install. Used by `make test` and by .ci/run.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
# Debian's browser for the Playwright tests (never `playwright install`: no downloads here).
[ -x /usr/bin/chromium ] || need+=(chromium)
# Node runs the official openai SDK for Node in one test (tests/node); never in the product.
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
