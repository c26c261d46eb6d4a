"""The LLM baselines users pick instead of training a map, beside it on every collection, with their cost per query.

    python llm_baselines.py --data ../../shared/data --collections homeqa,scifact,cranfield,squad-mix \
        --journal homeqa=/path/to/demo/pairs-llm/journal.jsonl --out /tmp/llmb

One `qkrag bench DATA --json` per collection, through the real CLI, with the rows `hyde` (the embedded LLM writes a
hypothetical answer per test query; one call per query), `doc2query`/`doc2query_dense` where the pairs are LLM-written
(the demo's corpus; on the standard corpora the pairs are ICT, whose "queries" are sentences of the passage itself,
so doc2query would only repeat the passage), cosine, BM25, the hybrid and the trained map with the settings of the
committed main_job runs. Collections with more test queries than --max-queries are scored on a seeded sample of them
(a view folder: the same corpus, queries and train split; a test split of the sample), so HyDE's LLM time stays
bounded. Beside bench's own deltas (against cosine and the hybrid), each row gets a paired comparison against HyDE
on the same queries (bench's per_query.json). Writes results/llm_baselines.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from _common import RESULTS, paired_ndcg, run_bench, save

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("homeqa", "demo")
LLM_ROWS = "bm25,cosine,hybrid,hyde,doc2query,doc2query_dense,qk_synthetic,hybrid_qk_synthetic"
ICT_ROWS = "bm25,cosine,hybrid,hyde,qk_synthetic,hybrid_qk_synthetic"
# per collection: the generator, sample, candidates, pairs per passage and extra flags of its main_job run
RUNS = {"homeqa": ("llm", 60, 2, 2, LLM_ROWS, []),
        "scifact": ("ict", 1000, 4, 1, ICT_ROWS, []),
        "cranfield": ("ict", 500, 4, 1, ICT_ROWS, ["--skip-empty"]),
        "squad-mix": ("ict", 2000, 4, 1, ICT_ROWS, [])}
SHOWN = ("cosine", "bm25", "hybrid", "hyde", "doc2query_dense", "qk_synthetic", "hybrid_qk_synthetic")


def query_view(data: Path, out: Path, max_queries: int, seed: int) -> tuple[Path, int]:
    """`data` itself when its test split has at most `max_queries` queries; else a folder beside the run with the
    same corpus, queries and train split (links) and a test split of a seeded sample of the test queries."""
    lines = (data / "qrels" / "test.tsv").read_text().splitlines()
    head, body = (lines[:1], lines[1:]) if lines and lines[0].lower().startswith("query") else ([], lines)
    qids = sorted({line.split("\t")[0] for line in body if line.strip()})
    if len(qids) <= max_queries:
        return data, len(qids)
    keep = set(random.Random(seed).sample(qids, max_queries))
    view = out.parent / f"{out.name}-view"
    (view / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        link = view / name
        if (data / name).exists() and not link.exists():
            link.symlink_to((data / name).resolve())
    (view / "qrels" / "test.tsv").write_text("\n".join(head + [ln for ln in body if ln.split("\t")[0] in keep]) + "\n")
    return view, max_queries


def bench(name: str, data: Path, out: Path, journal: Path | None) -> tuple[dict, list[str]]:
    """One bench run of `name`'s settings on `data`; a journal of earlier LLM outputs seeds the pairs stage."""
    generator, sample, candidates, per_passage, methods, extra = RUNS[name]
    target = out / f"pairs-{generator}" / "journal.jsonl"
    if journal and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(journal, target)
    return run_bench([data, "--generator", generator, "--sample", sample, "--candidates", candidates, "--per-passage",
                      per_passage, "--methods", methods, *extra], out)


def against(per_query: dict, method: str, base: str) -> dict | None:
    """`method` against `base` on the same queries (`paired_ndcg`), or None when either row is missing."""
    if method not in per_query or base not in per_query or method == base:
        return None
    return paired_ndcg(per_query[method]["ndcg@10"], per_query[base]["ndcg@10"])


def collection_rows(report: dict, per_query: dict) -> list[dict]:
    """The rows shown for one collection: bench's figures plus the paired comparison against HyDE."""
    rows = []
    for r in report["rows"]:
        row = {k: r.get(k) for k in ("method", "ndcg@10", "ndcg@10_ci", "latency_ms", "question_share@5",
                                     "vs_cosine_delta", "vs_cosine_delta_ci", "vs_cosine_p_value",
                                     "vs_hybrid_delta", "vs_hybrid_delta_ci", "vs_hybrid_p_value",
                                     "ndcg@10_novel", "n_novel", "notes", "hyde")}
        row["llm_calls_per_query"] = r.get("llm_calls_per_query", 0.0)
        row["vs_hyde"] = against(per_query, r["method"], "hyde")
        rows.append(row)
    return rows


def _delta(d: float | None, ci, p) -> str:
    return "—" if d is None else f"{d:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] p {p:.2g}"


def markdown(name: str, entry: dict) -> str:
    lines = [f"## {name}", "", f"`{' '.join(entry['command'])}`", "",
             f"{entry['documents']} documents, {entry['queries']} test queries"
             + (f" (a seeded sample of {entry['queries']} of its {entry['all_queries']})"
                if entry["queries"] < entry["all_queries"] else "") + ".", "",
             "| method | nDCG@10 [95% CI] | Δ vs cosine [CI] p | Δ vs HyDE [CI] p | novel nDCG@10 (n) | questions in "
             "top 5 | ms/query | LLM calls/query |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in entry["rows"]:
        h = r["vs_hyde"]
        novel = f"{r['ndcg@10_novel']:.3f} ({r['n_novel']})" if r.get("ndcg@10_novel") is not None else "—"
        share = f"{r['question_share@5']:.3f}" if r.get("question_share@5") is not None else "—"
        lines.append(f"| {r['method']} | {r['ndcg@10']:.3f} [{r['ndcg@10_ci'][0]:.3f}, {r['ndcg@10_ci'][1]:.3f}] | "
                     f"{_delta(r['vs_cosine_delta'], r['vs_cosine_delta_ci'], r['vs_cosine_p_value'])} | "
                     f"{_delta(h['delta'], h['ci'], h['p']) if h else '—'} | {novel} | {share} | "
                     f"{r['latency_ms']:.1f} | {r['llm_calls_per_query']:.2g} |")
    hyde = next((r for r in entry["rows"] if r["method"] == "hyde"), None)
    if hyde:
        lines += ["", f"HyDE: {hyde['notes']}"]
    return "\n".join(lines)


def reading(entries: dict) -> str:
    """Per collection, from the figures: does HyDE beat cosine beyond luck, and how the map compares with it."""
    lines = []
    for name, entry in entries.items():
        rows = {r["method"]: r for r in entry["rows"]}
        hyde, qk = rows.get("hyde"), rows.get("qk_synthetic")
        if not hyde or not qk:
            continue
        lo = hyde["vs_cosine_delta_ci"][0]
        lines.append(f"- {name}: HyDE {hyde['vs_cosine_delta']:+.3f} vs cosine "
                     f"({'CI above 0' if lo > 0 else 'within noise'}); the map {qk['vs_cosine_delta']:+.3f} vs cosine,"
                     f" {qk['vs_hyde']['delta']:+.3f} vs HyDE (p {qk['vs_hyde']['p']:.2g}), with no LLM call per query.")
    return ("Reading: HyDE's hypothetical answer is answer-shaped, so it helps where cosine ranks questions above "
            "answers, and not on standard corpora; where it helps, the trained map helps more, at a few ms per query "
            "instead of seconds of CPU LLM time (measured with other runs sharing the 2 cores):\n\n"
            + "\n".join(lines))


def plot(entries: dict, path: Path) -> None:
    """nDCG@10 with its CI per method and collection (left), and ms per query on a log scale (right)."""
    from qkrag.evaluate.report import figure, save_png

    fig = figure((12, 4.5))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    names = list(entries)
    width = 0.8 / len(SHOWN)
    for i, method in enumerate(SHOWN):
        xs, ys, errs, ms = [], [], [[], []], []
        for j, name in enumerate(names):
            r = next((r for r in entries[name]["rows"] if r["method"] == method), None)
            if r is None:
                continue
            xs.append(j + (i - len(SHOWN) / 2 + 0.5) * width)
            ys.append(r["ndcg@10"])
            errs[0].append(r["ndcg@10"] - r["ndcg@10_ci"][0])
            errs[1].append(r["ndcg@10_ci"][1] - r["ndcg@10"])
            cached = method == "hyde" and not (r.get("hyde") or {}).get("seconds_per_sent")
            ms.append(float("nan") if cached else max(r["latency_ms"], 0.01))
            if cached:  # every answer came from the cache: its time would leave the LLM out
                right.text(xs[-1], 1.0, "cached", rotation=90, ha="center", va="bottom", fontsize=7)
        left.bar(xs, ys, width, yerr=errs, label=method, capsize=2)
        right.bar(xs, ms, width, label=method)
    for ax in (left, right):
        ax.set_xticks(range(len(names)), names)
    left.set_ylabel("nDCG@10 (95% CI)")
    right.set_ylabel("ms per query (log)")
    right.set_yscale("log")
    left.legend(fontsize=7, ncol=2)
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../../shared/data")
    parser.add_argument("--collections", default="homeqa,scifact,cranfield,squad-mix")
    parser.add_argument("--max-queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--journal", action="append", default=[], help="NAME=PATH: earlier LLM outputs to resume")
    parser.add_argument("--out", default="../runs/llm_baselines")
    parser.add_argument("--report-only", action="store_true", help="rewrite the results from OUT/<name>/bench.json")
    args = parser.parse_args()
    journals = dict(j.split("=", 1) for j in args.journal)

    entries = {}
    for name in args.collections.split(","):
        data = ROOT / "data" / name if name in SHIPPED else Path(args.data) / name
        out = Path(args.out) / name
        if args.report_only:
            report, cmd = json.loads((out / "bench.json").read_text()), json.loads((out / "command.json").read_text())
        else:
            view, _ = query_view(data, out, args.max_queries, args.seed)
            report, cmd = bench(name, view, out, Path(journals[name]) if name in journals else None)
            (out / "command.json").write_text(json.dumps(cmd))
        n = report["queries"]
        all_queries = len({ln.split("\t")[0] for ln in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]})
        per_query = json.loads((out / "per_query.json").read_text())
        entries[name] = {"command": cmd, "documents": report["documents"], "queries": n, "all_queries": all_queries,
                         "rows": collection_rows(report, per_query)}
        print(markdown(name, entries[name]), flush=True)
    plot(entries, RESULTS / "llm_baselines.png")
    body = ("Each table: one `qkrag bench` run (command above it; run from the repository root with the embedded "
            "Qwen2.5-Coder-0.5B-Instruct for HyDE). ms/query is wall time per query over the test set, one request "
            "at a time; HyDE's includes its LLM call. Δ vs HyDE is paired on the same queries (bootstrap CI, "
            "sign-flip p).\n\n" + "\n\n".join(markdown(n, e) for n, e in entries.items())
            + "\n\n" + reading(entries) + "\n\n![llm baselines](llm_baselines.png)\n")
    save("llm_baselines", {"collections": entries}, body)


if __name__ == "__main__":
    main()
