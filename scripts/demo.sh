#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the main job end to end on the embedded demo corpus with the embedded local LLM:
# embed, generate pairs, train projections, index in Chroma, evaluate against raw cosine and BM25, print the table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh llm
exec .venv/bin/qkrag bench data/demo --out runs/demo --sample 60 --candidates 2 "$@"
