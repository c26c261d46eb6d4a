#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the whole test suite, slow tests included, on two pytest-xdist workers
# (QKRAG_TEST_WORKERS=N for another number, 0 for one process). tests/conftest.py groups the tests that must share a
# worker and sends the longest first; --no-loadscope-reorder keeps that order.
# The browser test of `qkrag serve` needs Debian's chromium and chromium-driver: installed here with apt-get when
# they are missing and apt-get is usable (CI runs this as root on Debian); otherwise that test skips with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
            || echo "scripts/test.sh: could not install chromium; the browser test will skip" >&2
    else
        echo "scripts/test.sh: chromium or chromedriver missing and apt-get not usable; the browser test will skip" >&2
    fi
fi
bash scripts/setup.sh llm,test
exec .venv/bin/python -m pytest -n "${QKRAG_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder "$@"
