#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh llm,test
exec .venv/bin/python -m pytest "$@"
