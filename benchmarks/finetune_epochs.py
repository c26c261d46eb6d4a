"""Is the fine-tune row flat because fine-tuning is too short? The same row with more epochs, on the same pairs.

    python finetune_epochs.py --data ../../shared/data --runs scifact:ict:1000,squad-mix:ict:300 --epochs 1,5

One `qkrag bench DATA --methods cosine,finetune --finetune-epochs E --json` per run and epoch count (the pairs are
the main job's: same generator, seeded sample, candidates), through the real CLI. The epoch counts are fixed before
the run, not chosen on test. Writes results/finetune_epochs.{json,md}: nDCG@10 with the paired Δ against cosine, the
novel split, training seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import RESULTS, run_bench, save


def bench(data: Path, generator: str, sample: int, epochs: int, out: Path, hard: bool) -> tuple[dict, list[str]]:
    negatives = "--finetune-hard-negatives" if hard else "--no-finetune-hard-negatives"  # bench's default is hard
    return run_bench([data, "--generator", generator, "--sample", sample, "--candidates", 4, "--methods",
                      "cosine,finetune", "--finetune-epochs", epochs, negatives,
                      *(["--skip-empty"] if data.name == "cranfield" else [])], out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../../shared/data")
    parser.add_argument("--runs", default="scifact:ict:1000", help="COLLECTION:GENERATOR:SAMPLE, comma-separated")
    parser.add_argument("--epochs", default="1,5")
    parser.add_argument("--out", default="../runs/finetune_epochs")
    parser.add_argument("--hard-negatives", action="store_true", help="each pair's first mined negative too")
    args = parser.parse_args()
    previous = RESULTS / "finetune_epochs.json"
    rows = {(r["collection"], r["epochs"], r.get("hard_negatives", False)): r
            for r in json.loads(previous.read_text())["rows"]} if previous.exists() else {}
    for spec in args.runs.split(","):
        name, generator, sample = spec.split(":")
        for epochs in map(int, args.epochs.split(",")):
            suffix = "-hard" if args.hard_negatives else ""
            report, cmd = bench(Path(args.data) / name, generator, int(sample), epochs,
                                Path(args.out) / f"{name}-{generator}-{sample}-e{epochs}{suffix}", args.hard_negatives)
            ft = next(r for r in report["rows"] if r["method"] == "finetune")
            rows[(name, epochs, args.hard_negatives)] = {"collection": name, "epochs": epochs,
                                    "hard_negatives": args.hard_negatives, "pairs": report["generation"]["counts"]
                                    .get("pairs"), "cosine": next(r["ndcg@10"] for r in report["rows"]
                                                                  if r["method"] == "cosine"),
                                    **{k: ft.get(k) for k in ("ndcg@10", "vs_cosine_delta", "vs_cosine_delta_ci",
                                                              "vs_cosine_p_value", "ndcg@10_novel",
                                                              "base_ndcg@10_novel", "n_novel", "p_ndcg@10_novel",
                                                              "train_seconds", "notes")},
                                    "command": " ".join(cmd)}
            print(json.dumps(rows[(name, epochs, args.hard_negatives)]), flush=True)
    ordered = sorted(rows.values(), key=lambda r: (r["collection"], r.get("hard_negatives", False), r["epochs"]))
    lines = ["| collection | pairs | negatives | epochs | cosine | finetune nDCG@10 | Δ vs cosine [CI] p | novel vs cosine (n, p) | "
             "train s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in ordered:
        lo, hi = r["vs_cosine_delta_ci"]
        novel = (f"{r['ndcg@10_novel']:.3f} vs {r['base_ndcg@10_novel']:.3f} ({r['n_novel']}, "
                 f"{r['p_ndcg@10_novel']:.2g})" if r.get("ndcg@10_novel") is not None else "—")
        neg = "in-batch + 1 mined" if r.get("hard_negatives") else "in-batch"
        lines.append(f"| {r['collection']} | {r['pairs']} | {neg} | {r['epochs']} | {r['cosine']:.3f} | {r['ndcg@10']:.3f} | "
                     f"{r['vs_cosine_delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] {r['vs_cosine_p_value']:.2g} | {novel} | "
                     f"{r['train_seconds']:.0f} |")
    body = ("sentence-transformers' MultipleNegativesRankingLoss on the main job's pairs, batch 32, lr 2e-5, the whole "
            "all-MiniLM-L6-v2; the epoch counts fixed in advance. Each row's command:\n\n"
            + "\n".join(f"- `{r['command']}`" for r in ordered) + "\n\n" + "\n".join(lines) + "\n")
    save("finetune_epochs", {"rows": ordered}, body)


if __name__ == "__main__":
    main()
