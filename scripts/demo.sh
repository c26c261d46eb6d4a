#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the main job end to end on the shipped mixed corpus (data/homeqa: answers mixed
# with forum questions about them) with the embedded local LLM: embed, generate pairs from 60 sampled passages,
# train the projection, index in Chroma, evaluate against raw cosine, BM25 and hybrid fusion, print the table.
# benchmarks/results/main_job_homeqa_llm.md holds a run of this command and what it took.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh llm
# The demo's LLM stage runs alone on the machine, so the embedded LLM may use every core (qkrag's default is half,
# for machines busy with other work); benchmarks/setup_time.md has the two timings.
export QKRAG_LLM_THREADS="${QKRAG_LLM_THREADS:-$(nproc)}"
exec .venv/bin/qkrag bench data/homeqa --out runs/demo --sample 60 --candidates 2 --per-passage 2 \
  --methods bm25,cosine,hybrid,qk_synthetic,hybrid_qk_synthetic "$@"
