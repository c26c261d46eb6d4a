"""Pairs per minute of the embedded generator, before and after raising its throughput, on the same passages.

    QKRAG_LLM_THREADS=1 python benchmarks/generator_throughput.py --n 5

Every arm runs in one process, one after the other, on the same seeded SciFact sample (same passages, same 4 few-shot
examples from the train queries, same sampling seeds), with no LLM cache and a fresh work folder, through
`generate_pairs` exactly as `qkrag generate` runs it:

- `before`: the library's defaults (one slot, 4 candidates asked 2 per call: two requests per passage);
- `one-call`: the same 4 candidates asked in one request (`per_call=4`): the passage's prompt is sent once;
- `slots2`: two llama.cpp slots and two requests in flight (continuous batching decodes both together);
- `slots2-one-call`: both.

Per arm: pairs per minute of the whole generation (LLM stage + round trip + negatives), requests, prompt and generated
tokens, CPU seconds of this process (other people's jobs do not inflate them), pairs kept per passage and their rank
distribution (a faster arm must not buy speed with easier pairs), and the load average before and after it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from _common import markdown_table, save

from qkrag.data import load_beir
from qkrag.embed.encoders import make_encoder
from qkrag.llm.client import LLM
from qkrag.llm.local import LocalLLMServer
from qkrag.pairs.generate import GenerateConfig, draw_examples, generate_pairs

ROOT = Path(__file__).resolve().parents[1]
ARMS = {  # name: (slots, candidates, per_call)
    "before": (1, 4, 2),
    "one-call": (1, 4, 4),
    "slots2": (2, 4, 2),
    "slots2-one-call": (2, 4, 4),
}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads: the in-process model and the encoder)."""
    t = os.times()
    return t.user + t.system


def run_arm(name: str, collection, encoder, examples: tuple[str, ...], n: int, threads: int) -> dict:
    slots, candidates, per_call = ARMS[name]
    work = ROOT / ".qkrag" / "bench" / f"generator-throughput-{name}"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: nothing from a journal
    config = GenerateConfig(sample=n, seed=0, examples=examples, candidates=candidates, per_call=per_call,
                            progress=False)
    load_before = os.getloadavg()
    with LocalLLMServer(n_threads=threads, slots=slots) as server:
        llm = LLM(server.config(timeout=600), cache=False)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        result = generate_pairs(collection.corpus, encoder, llm, config, work)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        usage, calls = llm.usage, llm.calls_made
        llm.close()
    stats = result.stats
    llm_seconds, passages = stats["seconds"]["llm_stage"], stats["counts"]["passages"]
    return {
        "arm": name, "slots": slots, "candidates": candidates, "per_call": per_call, "threads": threads,
        "passages": passages, "calls": calls, "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens, "llm_s": round(llm_seconds, 1), "total_s": round(seconds, 1),
        "s_per_passage": round(llm_seconds / passages, 2), "cpu_s": round(cpu, 1),
        "pairs": len(result), "pairs_per_min": round(60 * len(result) / seconds, 2),
        "pairs_per_cpu_min": round(60 * len(result) / cpu, 2) if cpu else None,
        "pairs_per_passage": round(len(result) / max(1, passages), 3),
        "candidates_ranked": stats["counts"]["candidates"], "failed_calls": stats["counts"].get("failed_calls", 0),
        "kept_fraction": round(stats["kept_fraction"], 3), "pair_ranks": stats["pair_ranks"],
        "candidate_ranks": stats["candidate_ranks"], "form": stats["form"],
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "queries": list(result.dataset["query"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--n", type=int, default=16, help="passages (seeded sample)")
    # `before` again at the end: how much the machine's load moved the figures during the run
    parser.add_argument("--arms", default="before,slots2,one-call,before")
    parser.add_argument("--name", default="generator_throughput")
    args = parser.parse_args()
    threads = LocalLLMServer().n_threads  # $QKRAG_LLM_THREADS, else half the cores
    collection = load_beir(args.data, split="train")
    examples = draw_examples(collection.queries.values(), 4, 0)  # what `qkrag bench` uses: 4 seeded train queries
    encoder = make_encoder(None)
    rows: list[dict] = []
    for name in args.arms.split(","):  # saved after each arm: a run killed midway keeps its rows
        row = run_arm(name, collection, encoder, examples, args.n, threads)
        if any(r["arm"] == name for r in rows):
            row["arm"] = f"{name} (again)"
        rows.append(row)
        print({k: v for k, v in rows[-1].items() if k != "queries"}, flush=True)
        report(args, rows, threads)


def report(args: argparse.Namespace, rows: list[dict], threads: int) -> None:
    columns = ["arm", "slots", "per_call", "passages", "calls", "prompt_tokens", "completion_tokens", "llm_s",
               "total_s", "s_per_passage", "cpu_s", "pairs", "pairs_per_min", "pairs_per_cpu_min",
               "pairs_per_passage", "kept_fraction", "load_before", "load_after"]
    ranks = [{"arm": r["arm"], **{k: r["pair_ranks"].get(k) for k in ("rank1", "top10", "median_rank")}} for r in rows]
    body = (f"SciFact (`{args.data}`), {args.n} seeded passages, 4 few-shot examples from the train queries, "
            f"4 candidates per passage, {threads} model threads, no LLM cache; arms back to back in one process. "
            f"Load is the 1/5/15-minute load average around each arm (2 cores, shared).\n\n"
            + markdown_table(rows, columns) + "\n\nRanks of the kept pairs under raw cosine (the same passages, "
            "so a faster arm must not make easier pairs):\n\n" + markdown_table(ranks, ["arm", "rank1", "top10", "median_rank"]))
    save(args.name, {"rows": rows, "threads": threads, "data": args.data, "n": args.n}, body)


if __name__ == "__main__":
    main()
