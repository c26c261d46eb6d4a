#!/usr/bin/env bash
# Create .venv and install qkrag with everything it needs, from the package registries only.
# torch is pinned to 2.13.0: on these machines that is a local CPU wheel; an unpinned torch pulls GBs of CUDA.
# Extras: $1 (default "llm,test"): llm = the embedded local LLM server (llama-cpp-python, built from source ~6 min).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-llm,test}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[${extras}]"
