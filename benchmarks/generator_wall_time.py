"""The larger shipped generator against the default, on the same passages and at equal generation time.

    python generator_wall_time.py --journal /path/to/demo/pairs-llm/journal.jsonl --out /tmp/gwt

The demo's bench (data/homeqa, scripts/demo.sh's options) with pairs from Qwen2.5-Coder 0.5B (the default) and 1.5B
(the `llm-large` extra): each model on the demo's 60 sampled passages (same passages), and the 1.5B on the number of
passages it writes in the time the 0.5B takes for 60 (equal time: the CPU seconds per call of both models measured
on the same passages in one run, results/llm_runtime.json), with the 0.5B on those same fewer passages beside it.
Samples are nested (a smaller seeded sample is the start of a larger one). Selection as bench does it: on the judged
train split, never on test. Writes results/generator_wall_time.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _common import RESULTS, bench_command, paired_ndcg, run_bench, save

ROOT = Path(__file__).resolve().parents[1]
SMALL, LARGE = "qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m"
METHODS = "cosine,hybrid,qk_synthetic,hybrid_qk_synthetic"
DEMO_SAMPLE = 60


def cpu_ratio() -> float:
    """CPU seconds per call of the 1.5B over the 0.5B's, measured on the same SciFact passages in one run."""
    runs = {r["config"]: r for r in json.loads((RESULTS / "llm_runtime.json").read_text())["rows"]}
    return runs["large"]["cpu_s_per_call"] / runs["after"]["cpu_s_per_call"]


def args_of(model: str, sample: int) -> list:
    return [ROOT / "data" / "homeqa", "--sample", sample, "--candidates", 2, "--per-passage", 2, "--methods", METHODS,
            "--llm-model", model]


def bench(model: str, sample: int, out: Path, journal: Path | None) -> dict:
    """One bench run; a journal of earlier outputs seeds the pairs stage."""
    target = out / "pairs-llm" / "journal.jsonl"
    if journal and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(journal, target)
    return run_bench(args_of(model, sample), out)[0]


def paired(out: Path, other: Path, method: str = "qk_synthetic") -> dict:
    """`method` of run `out` against the same row of run `other`, paired on the test queries (bench's per_query.json)."""
    a, b = (json.loads((p / "per_query.json").read_text())[method]["ndcg@10"] for p in (out, other))
    return paired_ndcg(a, b)


def row(label: str, model: str, sample: int, report: dict) -> dict:
    rows = {r["method"]: r for r in report["rows"]}
    qk, hq = rows["qk_synthetic"], rows["hybrid_qk_synthetic"]
    gen = report.get("generation", {})
    return {"arm": label, "model": model, "passages": sample, "pairs": gen.get("counts", {}).get("pairs"),
            "llm_calls": (gen.get("llm") or {}).get("calls_made"), "llm_stage_s": (gen.get("seconds") or {}).get("llm_stage"),
            "cosine": rows["cosine"]["ndcg@10"], "hybrid": rows["hybrid"]["ndcg@10"], "qk_synthetic": qk["ndcg@10"],
            "qk_delta": qk["vs_cosine_delta"], "qk_ci": qk["vs_cosine_delta_ci"], "qk_p": qk["vs_cosine_p_value"],
            "qk_novel": qk.get("ndcg@10_novel"), "novel_base": qk.get("base_ndcg@10_novel"), "n_novel": qk.get("n_novel"),
            "question_share@5": qk.get("question_share@5"), "hybrid_qk_synthetic": hq["ndcg@10"],
            "hq_delta": hq["vs_hybrid_delta"], "hq_p": hq["vs_hybrid_p_value"], "command": report["command"]}


def reading(rows: list[dict]) -> str:
    """What the arms say about the default, from their figures."""
    default, same, equal = rows[0], rows[1], rows[2]
    return (f"Reading: on the same passages the 1.5B's pairs teach as much as the 0.5B's ({same['qk_synthetic']:.3f} "
            f"against {default['qk_synthetic']:.3f}, paired p {same['vs_default']['p']:.2g}); in the same generation "
            f"time it writes for fewer passages and its map scores {equal['qk_synthetic']:.3f} "
            f"({equal['vs_default']['delta']:+.3f}, p {equal['vs_default']['p']:.2g}). The 0.5B stays the default "
            f"generator; the 1.5B (`--llm-model {LARGE}`, the llm-large extra) costs twice the CPU for no "
            f"measured gain here.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journal", default=None, help="the demo's pairs-llm/journal.jsonl (0.5B outputs) to reuse")
    parser.add_argument("--out", default="../runs/generator_wall_time")
    parser.add_argument("--report-only", action="store_true", help="rewrite the results from OUT's report.json files")
    args = parser.parse_args()
    out, journal = Path(args.out), Path(args.journal) if args.journal else None
    ratio = cpu_ratio()
    equal = max(1, round(DEMO_SAMPLE / ratio))
    arms = [("0.5B, the demo's passages", SMALL, DEMO_SAMPLE), ("1.5B, the same passages", LARGE, DEMO_SAMPLE),
            ("1.5B, equal generation time", LARGE, equal), ("0.5B, the same fewer passages", SMALL, equal)]
    rows = []
    for label, model, sample in arms:
        run = out / f"{model}-{sample}"
        report = (json.loads((run / "bench.json").read_text()) if args.report_only else
                  bench(model, sample, run, journal if model == SMALL else None))
        report["command"] = " ".join(bench_command(args_of(model, sample), run))
        rows.append(row(label, model, sample, report))
        rows[-1]["vs_default"] = paired(run, out / f"{SMALL}-{DEMO_SAMPLE}")
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| arm | passages | pairs | qk_synthetic (Δ vs cosine [CI], p) | Δ vs the 0.5B on 60 [CI], p | novel (n) | "
             "questions in top 5 | hybrid_qk_synthetic (Δ vs hybrid, p) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        v = r["vs_default"]
        lines.append(f"| {r['arm']} | {r['passages']} | {r['pairs']} | {r['qk_synthetic']:.3f} ({r['qk_delta']:+.3f} "
                     f"[{r['qk_ci'][0]:+.3f}, {r['qk_ci'][1]:+.3f}], {r['qk_p']:.2g}) | "
                     f"{v['delta']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}], {v['p']:.2g} | "
                     + (f"{r['qk_novel']:.3f} vs {r['novel_base']:.3f} ({r['n_novel']})" if r["qk_novel"] is not None
                        else "—")
                     + f" | {r['question_share@5']:.3f} | {r['hybrid_qk_synthetic']:.3f} ({r['hq_delta']:+.3f}, "
                       f"{r['hq_p']:.2g}) |")
    body = (f"data/homeqa (the demo), cosine {rows[0]['cosine']:.3f}, hybrid {rows[0]['hybrid']:.3f}, 61 test queries. "
            f"Equal time: the 1.5B costs {ratio:.2f}x the 0.5B's CPU seconds per call (results/llm_runtime.md, same "
            f"passages, one run), so in the time the 0.5B writes for {DEMO_SAMPLE} passages the 1.5B writes for "
            f"{equal}. Δ vs the 0.5B on 60 is paired on the test queries (bootstrap CI, sign-flip p). The runs were "
            f"made by `python generator_wall_time.py --journal JOURNAL --out OUT` (the 0.5B's outputs from the demo's "
            f"journal, the 1.5B's generated, 1 LLM thread, beside other jobs); the header's command rewrote this "
            f"report from them.\n\n" + "\n".join(lines) + "\n\n" + reading(rows) + "\n\nCommands:\n\n" + "\n".join(f"- `{r['command']}`" for r in rows))
    save("generator_wall_time", {"cpu_ratio": ratio, "rows": rows}, body)


if __name__ == "__main__":
    main()
