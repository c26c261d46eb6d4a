"""Does the embedded LLM's relevance judge agree with human labels? SciFact train claims, before anything trains on it.

    QKRAG_LLM_THREADS=1 python benchmarks/judge_agreement.py --queries 20 --depth 5

For a seeded sample of train claims: the first stage is the offline teacher the distillation uses
(`retrieval.factory.default_teacher`: cosine fused with BM25 by RRF); its top `--depth` candidates plus every
human-relevant abstract it missed are judged by `qkrag.llm.judge.LLMJudge` (P(yes) from the first answer token's
logprobs, the embedded Qwen2.5-Coder-0.5B by default). Reported, with bootstrap CIs over queries (seeded):

- AUC of the judge's score against the human label, over all judged pairs, and the mean within-query AUC (how well
  it orders one claim's candidates, which is what a listwise teacher needs);
- nDCG@10 of the judge's re-ordering of the first stage's top `--depth` against the first stage's own order (the
  same documents: the missed relevant abstracts are left out here, so the judge gets no candidate the first stage
  did not find), paired, with a sign-flip p-value;
- cost: seconds per judged pair and per query, prompt tokens per pair, and the load average around the run.

The judge's answers go through the LLM cache, so a killed run resumes; the cost columns count only pairs judged in
this run. Results are written after every 5 queries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, markdown_table, save

from qkrag.data import load_beir
from qkrag.embed.encoders import make_encoder
from qkrag.evaluate.compare import compare
from qkrag.evaluate.metrics import evaluate_run
from qkrag.evaluate.stats import bootstrap_ci
from qkrag.llm.judge import LLMJudge
from qkrag.llm.local import default_llm
from qkrag.retrieval.factory import default_teacher

ROOT = Path(__file__).resolve().parents[1]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random relevant pair outscores a random irrelevant one (ties count half)."""
    from scipy.stats import rankdata

    pos, n_pos = labels.astype(bool), int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pooled_auc_ci(rows: list[dict], key: str, seed: int = 0, n: int = 2000) -> tuple[float, tuple[float, float]]:
    """Pooled AUC of `key` and its bootstrap CI, resampling queries (pairs of one query are not independent)."""
    by_query: dict[str, list[dict]] = {}
    for r in rows:
        by_query.setdefault(r["query_id"], []).append(r)
    queries = list(by_query)
    point = auc(np.array([r[key] for r in rows]), np.array([r["label"] for r in rows]))
    rng, draws = np.random.default_rng(seed), []
    for _ in range(n):
        sample = [r for q in rng.choice(queries, len(queries)) for r in by_query[q]]
        draws.append(auc(np.array([r[key] for r in sample]), np.array([r["label"] for r in sample])))
    return point, (float(np.nanpercentile(draws, 2.5)), float(np.nanpercentile(draws, 97.5)))


def within_query_aucs(rows: list[dict], key: str) -> list[float]:
    """Each query's AUC of `key` over its own judged pairs (queries with both labels only)."""
    out = []
    for q in dict.fromkeys(r["query_id"] for r in rows):
        mine = [r for r in rows if r["query_id"] == q]
        a = auc(np.array([r[key] for r in mine]), np.array([r["label"] for r in mine]))
        if not np.isnan(a):
            out.append(a)
    return out


def auc_figures(rows: list[dict], key: str, name: str) -> dict:
    pooled, pooled_ci = pooled_auc_ci(rows, key)
    within = within_query_aucs(rows, key)
    return {f"{name}_auc_pooled": round(pooled, 4), f"{name}_auc_pooled_ci": [round(x, 4) for x in pooled_ci],
            f"{name}_auc_within": round(float(np.mean(within)), 4) if within else None,
            f"{name}_auc_within_ci": [round(x, 4) for x in bootstrap_ci(within)] if len(within) > 1 else None}


def summarise(rows: list[dict], qrels: dict, depth: int, cost: dict) -> dict:
    scored = [dict(r, first_stage=-r["first_rank"]) for r in rows if not np.isnan(r["judge"])]
    within = within_query_aucs(scored, "judge")
    paired = [a - b for a, b in zip(within, within_query_aucs(scored, "first_stage"))]
    first = {q: {} for q in dict.fromkeys(r["query_id"] for r in rows)}
    judged = {q: {} for q in first}
    for r in rows:
        if r["first_rank"] <= depth:  # re-order only what the first stage found
            first[r["query_id"]][r["doc_id"]] = float(depth - r["first_rank"] + 1)
            judged[r["query_id"]][r["doc_id"]] = r["judge"] if not np.isnan(r["judge"]) else -1.0
    sub_qrels = {q: qrels[q] for q in first}
    a = evaluate_run(sub_qrels, judged, ["ndcg@10"], name="judge")
    b = evaluate_run(sub_qrels, first, ["ndcg@10"], name="first stage")
    diff = compare(a, b, "ndcg@10")
    return {
        "queries": len(first), "pairs": len(rows), "pairs_scored": len(scored),
        "relevant_pairs": sum(r["label"] for r in rows),
        **auc_figures(scored, "judge", "judge"), **auc_figures(scored, "first_stage", "first_stage"),
        "queries_with_both_labels": len(within),
        # per query, the judge's AUC minus the first stage's (its rank as the score) over the same pairs
        "auc_within_delta": round(float(np.mean(paired)), 4) if paired else None,
        "auc_within_delta_ci": [round(x, 4) for x in bootstrap_ci(paired)] if len(paired) > 1 else None,
        "ndcg10_first_stage": round(b.means["ndcg@10"], 4), "ndcg10_judge": round(a.means["ndcg@10"], 4),
        "ndcg10_delta": round(diff.difference, 4), "ndcg10_delta_ci": [round(x, 4) for x in diff.ci],
        "ndcg10_p": round(diff.p_value, 4),
        **cost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--queries", type=int, default=20, help="train claims (seeded sample)")
    parser.add_argument("--depth", type=int, default=5, help="first-stage candidates judged per claim")
    parser.add_argument("--max-chars", type=int, default=1000, help="passages are cut here for the judge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm-model", default=None, help="a shipped model name (default: the default generator)")
    parser.add_argument("--name", default="judge_agreement")
    parser.add_argument("--resummarise", action="store_true",
                        help="recompute the summary from the saved rows and cost (no model, no judging)")
    args = parser.parse_args()
    collection = load_beir(args.data, split="train")
    if args.resummarise:
        saved = json.loads((RESULTS / f"{args.name}.json").read_text(encoding="utf-8"))
        cost_keys = ("judged_in_this_run", "judge_seconds", "s_per_pair", "s_per_query", "prompt_tokens_per_pair",
                     "threads", "load_before", "load_now")
        cost = {k: saved["summary"][k] for k in cost_keys}
        return report(args, saved["rows"], summarise(saved["rows"], collection.qrels, args.depth, cost))
    qids = sorted(q for q in collection.queries if any(g > 0 for g in collection.qrels.get(q, {}).values()))
    qids = random.Random(args.seed).sample(qids, min(args.queries, len(qids)))
    teacher = default_teacher(collection.corpus, make_encoder(None))
    ranked = dict(zip(qids, teacher.search([collection.queries[q] for q in qids], 100)))
    load_before, rows, seconds, calls, prompt_tokens = os.getloadavg(), [], 0.0, 0, 0
    with (default_llm(args.llm_model) if args.llm_model else default_llm()) as llm:
        judge = LLMJudge(llm, max_chars=args.max_chars)
        for n, q in enumerate(qids, 1):
            relevant = {d for d, g in collection.qrels[q].items() if g > 0}
            rank_of = {h.id: i for i, h in enumerate(ranked[q], 1)}
            docs = [h.id for h in ranked[q][: args.depth]] + sorted(relevant - {h.id for h in ranked[q][: args.depth]})
            calls0, tokens0, t0 = llm.calls_made, llm.usage.prompt_tokens, time.perf_counter()
            scores = judge.score([collection.queries[q]] * len(docs), [collection.corpus.get(d).content for d in docs],
                                 progress=False)
            if llm.calls_made > calls0:
                seconds += time.perf_counter() - t0
                calls += llm.calls_made - calls0
                prompt_tokens += llm.usage.prompt_tokens - tokens0
            rows += [{"query_id": q, "doc_id": d, "label": int(d in relevant), "first_rank": rank_of.get(d, 101),
                      "judge": float(s)} for d, s in zip(docs, scores)]
            print(f"{n}/{len(qids)} {q}: " + " ".join(f"{r['label']}:{r['judge']:.2f}" for r in rows[-len(docs):]),
                  flush=True)
            if n % 5 == 0 or n == len(qids):
                cost = {"judged_in_this_run": calls, "judge_seconds": round(seconds, 1),
                        "s_per_pair": round(seconds / calls, 2) if calls else None,
                        "s_per_query": round(seconds / calls * len(rows) / n, 1) if calls else None,
                        "prompt_tokens_per_pair": round(prompt_tokens / calls, 1) if calls else None,
                        "threads": os.environ.get("QKRAG_LLM_THREADS") or "default",
                        "load_before": [round(x, 2) for x in load_before],
                        "load_now": [round(x, 2) for x in os.getloadavg()]}
                report(args, rows, summarise(rows, collection.qrels, args.depth, cost))


def report(args: argparse.Namespace, rows: list[dict], summary: dict) -> None:
    keys = ["queries", "pairs", "relevant_pairs", "queries_with_both_labels", "s_per_pair", "s_per_query",
            "prompt_tokens_per_pair", "load_before", "load_now"]
    aucs = [{"score": name, "pooled AUC": summary[f"{name}_auc_pooled"], "CI": summary[f"{name}_auc_pooled_ci"],
             "within-query AUC": summary[f"{name}_auc_within"], "CI ": summary[f"{name}_auc_within_ci"]}
            for name in ("judge", "first_stage")]
    body = (f"SciFact train claims (`{args.data}`), {summary['queries']} sampled (seed {args.seed}); candidates: the "
            f"offline teacher's (cosine + BM25, RRF) top {args.depth} plus the relevant abstracts it missed; judge: "
            f"the embedded {args.llm_model or 'default (0.5B)'} model's P(yes) from logprobs, passages cut at {args.max_chars} characters. "
            "nDCG@10 re-orders only the first stage's top candidates. CIs: bootstrap over queries."
            + (" The summary was recomputed from the saved rows and cost of the judging run (the same command "
               "without --resummarise)." if args.resummarise else "") + "\n\n"
            + markdown_table([{k: summary.get(k) for k in keys}], keys) + "\n\nAgreement with the human labels, "
            "over the same judged pairs (first_stage: the teacher's rank as the score, the missed relevant abstracts "
            "ranked where it put them, or last):\n\n"
            + markdown_table(aucs, ["score", "pooled AUC", "CI", "within-query AUC", "CI "])
            + f"\n\nWithin-query AUC, judge minus first stage (paired): {summary['auc_within_delta']:+.4f}, "
            f"CI {summary['auc_within_delta_ci']}"
            + f"\n\nnDCG@10, judge order minus first-stage order (paired, same documents): "
            f"{summary['ndcg10_delta']:+.4f}, CI {summary['ndcg10_delta_ci']}, p = {summary['ndcg10_p']}\n")
    save(args.name, {"summary": summary, "rows": rows, "args": vars(args)}, body)


if __name__ == "__main__":
    main()
