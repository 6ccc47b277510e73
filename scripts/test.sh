#!/usr/bin/env bash
# Set up and run every test: virtualenv in .venv/, editable install with the test extras, a
# private Neo4j server for the tests marked `neo4j` (provisioned from Maven Central on first use,
# on loopback port 7697 so it never meets another Neo4j), pytest, and the server stopped again.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test,spark,docs]'

# Headless Chromium renders the HTML views in tests/test_views_browser.py: Debian's package.
if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing Debian's chromium (for the browser tests of the HTML views)"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    log="$(mktemp)"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "error: could not install Debian's chromium, which the browser tests need; install it ('apt-get install chromium') and run again" >&2
        exit 1
    fi
fi

export SOCIALRISK_NEO4J_HOME="${SOCIALRISK_NEO4J_HOME:-$PWD/.neo4j}"
export SOCIALRISK_NEO4J_PORT="${SOCIALRISK_NEO4J_PORT:-7697}"
export SOCIALRISK_NEO4J_PASSWORD="${SOCIALRISK_NEO4J_PASSWORD:-socialrisk-test-password}"
export SOCIALRISK_NEO4J_HEAP="${SOCIALRISK_NEO4J_HEAP:-2g}"
export SOCIALRISK_NEO4J_PAGECACHE="${SOCIALRISK_NEO4J_PAGECACHE:-1g}"

.venv/bin/socialrisk neo4j start
trap '.venv/bin/socialrisk neo4j stop' EXIT
# the 15 slowest tests close every run, so a test that grows slow is seen where it is
.venv/bin/python -m pytest --durations=15 "$@"
