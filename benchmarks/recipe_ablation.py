"""What each part of the trainer's choice adds on the demo (data/homeqa), the same generated pairs throughout.

Runs `qkrag bench data/homeqa --sample 60 --candidates 2 --per-passage 2` (scripts/demo.sh's options) once per
`--recipes` value into OUT/<recipes>, and tables qk_synthetic and hybrid_qk_synthetic from each run beside the
committed result of the trainer before recipes (5-fold CV over the synthetic pairs, the full map only).

    python benchmarks/recipe_ablation.py --out /tmp/abl      # add --journal J to reuse an earlier run's LLM outputs

Writes results/recipe_ablation_homeqa.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

from _common import save

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = ["--sample", "60", "--candidates", "2", "--per-passage", "2",
           "--methods", "bm25,cosine,hybrid,qk_synthetic,hybrid_qk_synthetic"]
BEFORE = {"label": "before recipes (commit f749d4e): full map, chosen by 5-fold CV on the synthetic pairs",
          "qk_synthetic": {"ndcg@10": 0.556, "vs_cosine_delta": 0.049, "vs_cosine_p_value": 0.0008,
                           "ndcg@10_novel": 0.511, "question_share@5": 0.623}}


def run(recipes: str, out: Path, journal: Path | None) -> dict:
    folder = out / recipes.replace(",", "+")
    if journal:
        (folder / "pairs-llm").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(journal, folder / "pairs-llm" / "journal.jsonl")
    subprocess.run([str(ROOT / ".venv/bin/qkrag"), "bench", str(ROOT / "data/homeqa"), "--out", str(folder),
                    *OPTIONS, "--recipes", recipes, "--json"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "QKRAG_LLM_THREADS": os.environ.get("QKRAG_LLM_THREADS", "2")})
    report = json.loads((folder / "bench.json").read_text())
    return {row["method"]: row for row in report["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--journal", type=Path, help="an earlier run's pairs-llm/journal.jsonl (same prompts)")
    args = parser.parse_args()
    runs = {recipes: run(recipes, args.out, args.journal) for recipes in ("full", "low_rank", "full,low_rank")}
    lines = ["| trainer | qk_synthetic nDCG@10 | Δ vs cosine (p) | novel (Δ, p) | questions in top 5 | "
             "hybrid_qk_synthetic | Δ vs hybrid (p) | chosen |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    b = BEFORE["qk_synthetic"]
    lines.append(f"| {BEFORE['label']} | {b['ndcg@10']:.3f} | {b['vs_cosine_delta']:+.3f} ({b['vs_cosine_p_value']}) "
                 f"| {b['ndcg@10_novel']:.3f} | {b['question_share@5']:.3f} | | | |")
    for recipes, rows in runs.items():
        q, h = rows["qk_synthetic"], rows["hybrid_qk_synthetic"]
        chose = q["notes"].split("chose ")[1].split(" (")[0] if "chose " in q.get("notes", "") else ""
        lines.append(f"| --recipes {recipes}, chosen on the judged train split | {q['ndcg@10']:.3f} | "
                     f"{q['vs_cosine_delta']:+.3f} ({q['vs_cosine_p_value']:.2g}) | {q['ndcg@10_novel']:.3f} "
                     f"({q['ndcg@10_novel'] - q['base_ndcg@10_novel']:+.3f}, {q['p_ndcg@10_novel']:.2g}) | "
                     f"{q['question_share@5']:.3f} | {h['ndcg@10']:.3f} | {h['vs_hybrid_delta']:+.3f} "
                     f"({h['vs_hybrid_p_value']:.2g}) | {chose} |")
    cosine = runs["full"]["cosine"]
    body = (f"Cosine {cosine['ndcg@10']:.3f}, question share {cosine['question_share@5']:.3f}; 61 test queries, "
            f"the same generated pairs in every run (the 60 LLM outputs of the demo's journal).\n\n"
            + "\n".join(lines))
    save("recipe_ablation_homeqa", {"before": BEFORE, "runs": runs}, body)


if __name__ == "__main__":
    main()
