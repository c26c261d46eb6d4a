"""The evaluation contract, through the real CLI: `qkrag eval DATA --retriever {exact,chroma,bm25} --split test --json`
on every shared collection, checked against the published reference numbers.

    python benchmarks/eval_cli.py --data ../shared/data

SciFact goals: exact within ±0.005 of 0.645 (MTEB, all-MiniLM-L6-v2), Chroma within ±0.01 of it, BM25 in [0.66, 0.70].
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import markdown_table, save

GOALS = {("scifact", "exact"): (0.640, 0.650), ("scifact", "chroma"): (0.635, 0.655), ("scifact", "bm25"): (0.66, 0.70)}


def qkrag_eval(data: Path, retriever: str, chroma_path: Path) -> tuple[dict, list[str]]:
    args = ["qkrag", "eval", str(data), "--retriever", retriever, "--split", "test", "--json"]
    if retriever == "chroma":
        args += ["--path", str(chroma_path)]
    if data.name == "cranfield":
        args += ["--skip-empty"]  # two Cranfield documents have no text
    exe = Path(sys.executable).with_name("qkrag")
    out = subprocess.run([str(exe), *args[1:]], capture_output=True, text=True, check=True,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout), args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="folder holding BEIR collections")
    parser.add_argument("--collections", default="scifact,cranfield")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.collections.split(","):
            for retriever in ("exact", "chroma", "bm25"):
                t0 = time.perf_counter()
                result, cmd = qkrag_eval(Path(args.data) / name, retriever, Path(tmp) / name)
                goal = GOALS.get((name, retriever))
                lo, hi = result["ndcg@10_ci"]
                rows.append({"collection": name, "retriever": retriever, "ndcg@10": result["ndcg@10"],
                             "ndcg@10 95% CI": f"[{lo:.3f}, {hi:.3f}]", "recall@100": result["recall@100"],
                             "mrr@10": result["mrr@10"], "queries": result["queries"],
                             "goal": f"[{goal[0]}, {goal[1]}]" if goal else "",
                             "met": "" if not goal else ("yes" if goal[0] <= result["ndcg@10"] <= goal[1] else "NO"),
                             "seconds": round(time.perf_counter() - t0, 1),
                             "command": " ".join(cmd).replace(tmp, "CHROMA_DIR")})
                print(rows[-1], flush=True)
    body = markdown_table(rows, ["collection", "retriever", "ndcg@10", "ndcg@10 95% CI", "recall@100", "mrr@10",
                                 "queries", "goal", "met"])
    body += "\n\nEach row is one `qkrag eval` call (default encoder all-MiniLM-L6-v2, embeddings cached between rows):\n\n"
    body += "\n".join(f"- `{r['command']}`" for r in rows)
    body += "\n\nReferences: MTEB all-MiniLM-L6-v2 SciFact 0.645; BEIR BM25 SciFact 0.665 (bm25s with Lucene " \
            "parameters and a Snowball stemmer gives 0.679; BM25 variants differ by several points); Cranfield BM25 " \
            "about 0.33.\n"
    save("eval_cli", {"rows": rows}, body)


if __name__ == "__main__":
    main()
