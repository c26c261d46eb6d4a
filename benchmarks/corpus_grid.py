"""How far a small map trained on cheap synthetic pairs moves standard corpora: one grid of collection x lever x
number of passages, each cell a `qkrag bench` run (the `Bench` class, in-process) with ICT pairs (no LLM time).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/corpus_grid.py --data /work/shared/data \
        --collections cranfield,scifact --levers full,r16 --sizes 100,300,1000,all --out /work/runs/corpus_grid

Levers: `auto` is bench's default (each training recipe, full and low-rank, with each loss; the best on the judged
train split where there is one, else on held-out pairs); `full` trains Q and K whole; `rN` trains Q = Q0 + A·Bᵀ with rank N
(BenchConfig.residual_rank); a suffix `-eM` sets the epoch cap to M (early stopping or cross-validation picks the
count below it). Sizes are seeded passage samples, nested (a larger sample extends a smaller one); `all` is the whole
corpus; `human` trains the same map on the train split's human judgments instead (bench's qk_human rows, reported in
the qk columns): labels against capacity. Each cell reports qk_synthetic and hybrid_qk_synthetic: nDCG@10 on all test
queries and on novel ones (relevant documents never a training positive), the paired difference to cosine (to hybrid
for the fused row) with its 95% CI and sign-flip p, the cell's wall time and pairs per minute of generation. Model
selection is bench's own (held-out pairs split by document, or 5-fold CV on few pairs; the identity stays a
candidate); the lever per size is chosen on that held-out figure, never on test. Rows of LLM pairs come from the
committed main_job results, where they exist.

Resumable: a cell already in results/corpus_grid.json is skipped. `--report-only` rewrites the .md and .png. A run
beside another takes `--part NAME` (its cells go to results/corpus_grid_part-NAME.json; the next run without --part
merges them). On 2 shared cores ICT generation embeds about 4 candidates per passage: SciFact's whole corpus is over an
hour there, so its curve stops at 1,000 passages unless that cell is run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from _common import RESULTS, load_result, save

NAME = "corpus_grid"
ROWS = ("cosine", "hybrid", "qk_synthetic", "hybrid_qk_synthetic")
HUMAN_ROWS = ("cosine", "hybrid", "qk_human", "hybrid_qk_human")  # size "human": reported in the qk columns
MIN_NOVEL = 30  # fewer novel test queries than this: the goal is read on all test queries (ICT at corpus scale makes
# nearly every document a training positive; uniform sampling carries no prior over judged documents)


def lever_config(lever: str) -> dict:
    """'auto', 'full', 'r16', 'full-e100', 'r32-e100' -> BenchConfig fields. 'auto' is bench's default (each training
    recipe with each loss, the best on validation); the others train the full recipe, whole or residual of rank N."""
    if lever == "auto":
        return {}
    m = re.fullmatch(r"(full|r(\d+))(?:-e(\d+))?", lever)
    if not m:
        raise SystemExit(f"lever {lever!r}: use auto, full or rN, optionally with -eM (e.g. r16-e100)")
    out: dict = {"residual_rank": int(m.group(2)) if m.group(2) else None, "recipes": ("full",)}
    if m.group(3):
        out["epochs"] = int(m.group(3))
    return out


def _row_summary(row: dict) -> dict:
    keep = ("ndcg@10", "ndcg@10_ci", "vs_cosine_delta", "vs_cosine_delta_ci", "vs_cosine_p_value", "vs_hybrid_delta",
            "vs_hybrid_delta_ci", "vs_hybrid_p_value", "n_seen", "n_novel", "ndcg@10_novel", "base_ndcg@10_novel",
            "delta_ndcg@10_novel", "delta_ndcg@10_novel_ci", "p_ndcg@10_novel", "ndcg@10_seen", "base_ndcg@10_seen",
            "p_ndcg@10_seen", "question_share@5", "train_seconds", "notes", "fusion")
    out = {k: row[k] for k in keep if k in row}
    if "ndcg@10_ci" not in out and isinstance(row.get("ci"), dict):
        out["ndcg@10_ci"] = row["ci"].get("ndcg@10")
    return out


def run_cell(data: Path, collection: str, lever: str, size: str, out_root: Path, seed: int) -> dict:
    from qkrag.bench import Bench, BenchConfig
    from qkrag.projection.model import Projection

    out = out_root / collection / f"{lever}-{size}"
    out.mkdir(parents=True, exist_ok=True)
    shared = out_root / collection / "chroma"  # one raw index per collection, reused by every cell
    shared.mkdir(parents=True, exist_ok=True)
    if not (out / "chroma").exists():
        (out / "chroma").symlink_to(shared.resolve())
    human = size == "human"  # the same map on the train split's human judgments: what labels, not pairs, give
    sample = 10 ** 9 if size in ("all", "human") else int(size)
    config = BenchConfig(data=data / collection, out=out, generator="ict", sample=sample, seed=seed,
                         methods=HUMAN_ROWS if human else ROWS, skip_empty=collection == "cranfield", progress=False,
                         **lever_config(lever))
    t0 = time.perf_counter()
    bench = Bench(config)
    rows = {r.method.replace("_human", "_synthetic"): r.to_dict() for r in bench.run()}
    wall = time.perf_counter() - t0
    info = bench.to_dict()
    gen = info.get("generation", {})
    n_pairs = int(gen.get("counts", {}).get("pairs", 0)) or None
    if human:
        n_pairs = int(re.match(r"(\d+) pairs", rows["qk_synthetic"]["notes"]).group(1))
    gen_s = info.get("generation_seconds")
    validation = Projection.load(out / "projections" / ("qk_human" if human else "qk_synthetic")).validation_
    return {"collection": collection, "lever": lever, "size": size, "seed": seed, "pairs": n_pairs,
            "passages_with_pairs": gen.get("passages_with_pairs"), "generation_seconds": gen_s,
            "pairs_per_minute": round(60 * n_pairs / gen_s, 1) if n_pairs and gen_s else None,
            "wall_seconds": round(wall, 1), "pair_ranks": gen.get("pair_ranks"),
            "validation": {k: v for k, v in validation.items() if k in ("ndcg@10", "init_ndcg@10", "n_queries",
                                                                          "best_epoch", "figures", "cv")},
            "documents": info["documents"], "queries": info["queries"],
            "config": {k: info["config"][k] for k in ("sample", "seed", "epochs", "residual_rank", "losses")},
            "rows": {m: _row_summary(r) for m, r in rows.items()}}


def llm_reference(collection: str) -> dict | None:
    """The committed main_job row with LLM pairs for this collection, as one more point (no new LLM calls)."""
    path = RESULTS / f"main_job_{collection}_llm.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    rows = {r["method"]: r for r in report["rows"]}
    if "qk_synthetic" not in rows:
        return None
    n = (report.get("generation") or {}).get("pair_ranks", {}).get("n")
    return {"collection": collection, "lever": "llm (main_job)", "size": str(report.get("config", {}).get("sample")),
            "pairs": n, "source": path.name, "bench_command": report.get("bench_command"),
            "generation_seconds": report.get("generation_seconds"),
            "pairs_per_minute": round(60 * n / report["generation_seconds"], 1)
            if n and report.get("generation_seconds") else None,
            "rows": {m: _row_summary(rows[m]) for m in ROWS if m in rows}}


def _fmt(v, digits=3, sign=False):
    if v is None:
        return "—"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _delta(r: dict, key: str) -> str:
    if f"{key}_delta" not in r:
        return "—"
    lo, hi = r.get(f"{key}_delta_ci") or (None, None)
    return (f"{_fmt(r[f'{key}_delta'], sign=True)} [{_fmt(lo, sign=True)}, {_fmt(hi, sign=True)}] "
            f"p {r[f'{key}_p_value']:.2g}")


def _novel(r: dict) -> str:
    if not r.get("n_novel"):
        return "— (n=0)"
    lo, hi = r.get("delta_ndcg@10_novel_ci") or (None, None)
    return (f"{_fmt(r['ndcg@10_novel'])} ({_fmt(r['delta_ndcg@10_novel'], sign=True)} [{_fmt(lo, sign=True)}, "
            f"{_fmt(hi, sign=True)}] p {r['p_ndcg@10_novel']:.2g}, n={r['n_novel']})")


def _selected(r: dict) -> str:
    m = re.search(r"selected (.*?)(?:; probability|$)", r.get("notes", ""))
    return m.group(1) if m else ""


def table(cells: list[dict]) -> str:
    head = ("| collection | lever | passages | pairs | cosine | hybrid | qk nDCG@10 | qk Δ vs cosine [CI] p | "
            "qk novel (Δ vs cosine) | "
            "hqk nDCG@10 | hqk Δ vs hybrid [CI] p | hqk novel (Δ vs hybrid) | val nDCG@10 (start) | wall s | "
            "new pairs/min (cold) | questions in top 5: cosine / qk / hqk | selected |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        qk, hqk = c["rows"].get("qk_synthetic", {}), c["rows"].get("hybrid_qk_synthetic", {})
        val = c.get("validation") or {}
        lines.append("| " + " | ".join([
            c["collection"], c["lever"], str(c["size"]), str(c.get("pairs") or "—"),
            _fmt(c["rows"].get("cosine", {}).get("ndcg@10")), _fmt(c["rows"].get("hybrid", {}).get("ndcg@10")),
            _fmt(qk.get("ndcg@10")),
            _delta(qk, "vs_cosine"), _novel(qk), _fmt(hqk.get("ndcg@10")), _delta(hqk, "vs_hybrid"), _novel(hqk),
            f"{_fmt(val.get('ndcg@10'))} ({_fmt(val.get('init_ndcg@10'))})" if val else "—",
            _fmt(c.get("wall_seconds"), 0), _fmt(c.get("cold_pairs_per_minute"), 0),
            " / ".join(_fmt(r.get("question_share@5"), 2) for r in (c["rows"].get("cosine", {}), qk, hqk)),
            _selected(qk)]) + " |")
    return "\n".join(lines)


def bases(cells: list[dict]) -> str:
    lines = ["| collection | cosine nDCG@10 [CI] | hybrid nDCG@10 [CI] | hybrid Δ vs cosine |", "|---|---|---|---|"]
    done = set()
    for c in cells:
        if c["collection"] in done or "cosine" not in c["rows"] or c["lever"].startswith("llm"):
            continue
        done.add(c["collection"])
        cos, hyb = c["rows"]["cosine"], c["rows"].get("hybrid", {})
        ci = lambda r: "[" + ", ".join(_fmt(x) for x in (r.get("ndcg@10_ci") or (None, None))) + "]"  # noqa: E731
        lines.append(f"| {c['collection']} | {_fmt(cos['ndcg@10'])} {ci(cos)} | {_fmt(hyb.get('ndcg@10'))} {ci(hyb)} "
                     f"| {_delta(hyb, 'vs_cosine')} |")
    return "\n".join(lines)


def plot(cells: list[dict], path: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    collections = list(dict.fromkeys(c["collection"] for c in cells))
    fig, axes = plt.subplots(1, len(collections), figsize=(5.5 * len(collections), 4.2), squeeze=False)
    for ax, name in zip(axes[0], collections):
        mine = [c for c in cells if c["collection"] == name and c.get("pairs")]
        base = next((c for c in mine if "cosine" in c["rows"] and not c["lever"].startswith("llm")), None)
        if base:
            ax.axhline(base["rows"]["cosine"]["ndcg@10"], color="grey", ls=":", label="cosine")
            hyb = sorted({(c["pairs"], c["rows"]["hybrid"]["ndcg@10"]) for c in mine
                          if c["lever"] == base["lever"] and "hybrid" in c["rows"]})
            if hyb:  # the untrained hybrid of each cell (its fusion may be chosen on the cell's pairs)
                ax.plot(*zip(*hyb), "k:x", label="hybrid (untrained)")
        for c in (c for c in mine if c["size"] == "human"):
            ax.plot([c["pairs"]], [c["rows"]["qk_synthetic"]["ndcg@10"]], "*", ms=10, color="C9" if "r" in c["lever"]
                    else "C8",
                    label=f"{c['lever']}: qk on human train pairs")
        for i, lever in enumerate(dict.fromkeys(c["lever"] for c in mine)):
            pts = sorted((c["pairs"], c["rows"]) for c in mine if c["lever"] == lever and c["size"] != "human")
            xs = [p for p, _ in pts]
            for method, style in (("qk_synthetic", "-o"), ("hybrid_qk_synthetic", "--s")):
                ys = [r.get(method, {}).get("ndcg@10") for _, r in pts]
                if any(y is not None for y in ys):
                    ax.plot(xs, ys, style, color=f"C{i}",
                            label=f"{lever}: {'qk' if method == 'qk_synthetic' else 'hybrid_qk'}")
        ax.set_xscale("log")
        ticks = sorted({c["pairs"] for c in mine})
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=6, rotation=60)
        ax.minorticks_off()
        ax.set_title(name)
        ax.set_xlabel("synthetic pairs")
        ax.set_ylabel("nDCG@10 (test)")
        ax.legend(fontsize=7)
    fig.suptitle("nDCG@10 against pairs (ICT unless marked llm), one line per lever")
    fig.text(0.01, 0.005, f"made by: {command}", fontsize=6, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chosen(cells: list[dict]) -> str:
    """Per collection and size, the lever with the best held-out (validation) figure: the choice a user would make."""
    groups: dict = {}
    for c in cells:
        if c.get("validation"):
            groups.setdefault((c["collection"], c["size"]), []).append(c)
    lines = ["| collection | passages | lever chosen on validation | its val nDCG@10 | its test qk nDCG@10 | "
             "Δ vs cosine [CI] p |", "|---|---|---|---|---|---|"]
    for (name, size), group in groups.items():
        best = max(group, key=lambda c: c["validation"].get("ndcg@10", 0.0))
        qk = best["rows"].get("qk_synthetic", {})
        lines.append(f"| {name} | {size} | {best['lever']} | {_fmt(best['validation'].get('ndcg@10'))} | "
                     f"{_fmt(qk.get('ndcg@10'))} | {_delta(qk, 'vs_cosine')} |")
    return "\n".join(lines)


def goal_lines(cells: list[dict]) -> list[str]:
    """The issue's goals per cell, stated plainly. SciFact and Cranfield: qk_synthetic on novel test queries >= cosine
    + 0.02 with p < 0.05 (on all test queries where fewer than MIN_NOVEL are novel), hybrid_qk_synthetic >=
    hybrid + 0.01 with its CI above 0. squad-mix: no trained row below its base beyond its CI. Every collection:
    the same no-regression check."""
    out = []
    for c in cells:
        qk, hqk = c["rows"].get("qk_synthetic"), c["rows"].get("hybrid_qk_synthetic")
        if not qk or not hqk:
            continue
        tag = f"{c['collection']} {c['lever']} {c['size']}"
        below = [m for m, r, key in (("qk", qk, "vs_cosine"), ("hybrid_qk", hqk, "vs_hybrid"))
                 if (r.get(f"{key}_delta_ci") or [0, 0])[1] < 0]
        regress = f"below its base beyond its CI: {', '.join(below)}" if below else "no row below its base"
        if c["collection"] == "squad-mix":
            out.append(f"{tag}: {regress}")
            continue
        if (qk.get("n_novel") or 0) >= MIN_NOVEL:
            d, p, where = qk["delta_ndcg@10_novel"], qk["p_ndcg@10_novel"], f"novel (n={qk['n_novel']})"
        else:
            d, p, where = (qk["vs_cosine_delta"], qk["vs_cosine_p_value"],
                           f"all queries (novel n={qk.get('n_novel') or 0} < {MIN_NOVEL})")
        lo = (hqk.get("vs_hybrid_delta_ci") or [0, 0])[0]
        met1 = d >= 0.02 and p < 0.05
        met2 = hqk["vs_hybrid_delta"] >= 0.01 and lo > 0
        out.append(f"{tag}: qk vs cosine on {where} {d:+.3f} (p {p:.2g}): {'met' if met1 else 'NOT met'}; "
                   f"hybrid_qk vs hybrid {hqk['vs_hybrid_delta']:+.3f} (CI low {lo:+.3f}): "
                   f"{'met' if met2 else 'NOT met'}; {regress}")
    return out


def cold_rates(cells: list[dict]) -> None:
    """Each size's cold generation rate: samples are nested and embeddings cached by content, so the cell that paid
    for a size's new passages is its slowest generation stage (the first one run); its rate counts the pairs beyond
    the previous size's. The other cells at that size read the cache and get none. LLM rows keep their own rate."""
    by_size: dict[tuple[str, int], list[dict]] = {}
    for c in cells:
        if c["lever"].startswith("llm"):
            c["cold_pairs_per_minute"] = c.get("pairs_per_minute")
        elif c.get("pairs") and c.get("generation_seconds"):
            by_size.setdefault((c["collection"], c["pairs"]), []).append(c)
    previous: dict[str, int] = {}
    for (name, pairs), group in sorted(by_size.items()):
        cold = max(group, key=lambda c: c["generation_seconds"])
        for c in group:
            c["cold_pairs_per_minute"] = None
        cold["cold_pairs_per_minute"] = round(60 * (pairs - previous.get(name, 0)) / cold["generation_seconds"], 1)
        previous[name] = pairs


def other_levers(collections: list[str]) -> str:
    """The levers that are not ICT cells, from their own committed results, one row per collection and lever:
    a full fine-tune of the encoder on the same pairs (main_job), HyDE (llm_baselines). What the other levers
    gave elsewhere (the 1.5B generator, the LLM judge) is named below the table."""
    lines = ["| collection | lever | source | nDCG@10 | Δ vs cosine [CI] p | novel (Δ vs cosine) | cost |",
             "|---|---|---|---|---|---|---|"]
    for name in collections:
        for gen in ("ict", "llm"):
            job = load_result(f"main_job_{name}_{gen}")
            ft = next((r for r in (job or {}).get("rows", []) if r["method"] == "finetune"), None)
            if ft:
                pairs = (job.get("generation") or {}).get("pair_ranks", {}).get("n")
                lines.append(f"| {name} | fine-tune the encoder on the same {pairs} {gen.upper()} pairs | "
                             f"main_job_{name}_{gen} | {_fmt(ft['ndcg@10'])} | {_delta(ft, 'vs_cosine')} | "
                             f"{_novel(ft)} | {_fmt(ft.get('train_seconds'), 0)} s training |")
        entry = ((load_result("llm_baselines") or {}).get("collections") or {}).get(name)
        hyde = next((r for r in (entry or {}).get("rows", []) if r["method"] == "hyde"), None)
        if hyde:
            rate = (hyde.get("hyde") or {}).get("seconds_per_sent")
            lines.append(f"| {name} | HyDE, embedded 0.5B ({entry['queries']} test queries) | llm_baselines | "
                         f"{_fmt(hyde['ndcg@10'])} | {_delta(hyde, 'vs_cosine')} | — | 1 LLM call per query"
                         + (f", {rate:.1f} s each" if rate else "") + " |")
    return "\n".join(lines)


def write(cells: list[dict], extra: dict, part: str | None = None) -> None:
    cold_rates(cells)
    if part:  # a run beside another: its own file, merged into the grid by the next run without --part
        save(f"{NAME}_part-{part}", {"cells": cells, **extra}, f"Cells of a parallel run, merged into {NAME}.json by "
             "the next run without --part.\n")
        return
    ordered = sorted(cells, key=lambda c: (c["collection"], c["lever"], c.get("pairs") or 0))
    plot(ordered, RESULTS / f"{NAME}.png", f"benchmarks/{NAME}.py (results/{NAME}.md lists the commands)")
    body = ("Each cell: `qkrag bench` (in-process) with ICT pairs from a seeded, nested sample of passages, methods "
            "cosine, hybrid, qk_synthetic, hybrid_qk_synthetic; losses infonce, distill, both (best on held-out pairs "
            "kept); model selection as bench does it. Levers: `full` and `rN` train the full recipe (whole maps, or "
            "a residual of rank N) and were run before bench chose on judged train queries, so their SciFact and "
            "squad-mix cells chose on held-out synthetic pairs; `auto` is bench's default now (each recipe with each "
            "loss, chosen on the judged train split where there is one; on synthetic pairs alone, the full recipe "
            "only); `full+low_rank` is auto before that last rule, offering low_rank on synthetic pairs too "
            "(recipe_policy.md). SciFact's whole corpus (5,183 passages, `auto`) was first stopped unfinished beside other "
            "runs; it finished alone later (the embeddings cached by the first try), 10 min in all. "
            "qk = qk_synthetic (Δ vs cosine), hqk = hybrid_qk_synthetic "
            "(Δ vs hybrid). Novel = test queries none of whose relevant documents was a training positive; with ICT "
            "over the whole corpus every document is a positive, so n=0 there. Passages `human`: the same map "
            "trained on the train split's human judgments instead (bench's qk_human rows, shown in the qk columns), "
            "for "
            "comparison. The hybrid's fusion is chosen on the "
            "train split where there is one (SciFact, squad-mix), else on the cell's held-out pairs (Cranfield), so "
            "Cranfield's hybrid differs by cell. new pairs/min (cold) is the generation stage's rate (embedding the "
            "ICT candidates and ranking them) over the pairs a nested sample adds, for the first cell at each size; "
            "embeddings are cached by content, so later cells at a size read them and show —; llm rows give the LLM "
            "run's own rate. Machine: 2 cores shared with other jobs (load 8-10), torch threads 1.\n\n"
            f"Bases (untrained):\n\n{bases(ordered)}\n\n## Grid\n\n{table(ordered)}\n\n"
            f"## Lever chosen on validation (never test)\n\n{chosen(ordered)}\n\n"
            "## Goals, per cell\n\n" + "".join(f"- {g}\n" for g in goal_lines(ordered)) + "\n"
            "## The other levers on the same collections\n\n"
            + other_levers(list(dict.fromkeys(c["collection"] for c in ordered))) + "\n\n"
            "Elsewhere: the 1.5B generator against the 0.5B, same passages and equal generation time "
            "(`generator_wall_time.md`, the demo; `generator_choice.md`, squad-mix); the embedded LLM as a relevance "
            "judge against SciFact's human labels (`judge_agreement_40.md`, and the 1.5B in "
            "`judge_agreement_1.5b.md`).\n\n"
            + "Cells made by these commands, run from benchmarks/ with `PYTHONPATH=../src OMP_NUM_THREADS=1 nice -n 10`"
            " (the header's command wrote this report):\n\n" + "".join(f"- `{c}`\n" for c in extra.get("commands", []))
            + f"\n![grid]({NAME}.png)\n")
    save(NAME, {"cells": ordered, **extra}, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data")
    parser.add_argument("--collections", default="cranfield,scifact")
    parser.add_argument("--levers", default="full,r16")
    parser.add_argument("--sizes", default="100,300,1000,all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="../runs/corpus_grid")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--part", default=None, help="write results/corpus_grid_part-PART.json instead (a run beside "
                        "another one); the next run without --part merges it")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    path = RESULTS / f"{NAME}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    cells: list[dict] = old.get("cells", [])
    commands = old.get("commands", [])
    from _common import command

    keys = {(c["collection"], c["lever"], str(c["size"])) for c in cells}
    for part in sorted(RESULTS.glob(f"{NAME}_part-*.json")):  # cells a parallel run (--part) wrote: merged here
        extra = json.loads(part.read_text())
        cells += [c for c in extra["cells"] if (c["collection"], c["lever"], str(c["size"])) not in keys]
        commands += [x for x in extra.get("commands", []) if x not in commands]
        keys = {(c["collection"], c["lever"], str(c["size"])) for c in cells}
    if args.part:  # a run beside another: its own file, merged into the grid by the next run without --part
        cells = [c for c in cells if c["collection"] in args.collections.split(",")]

    if not args.report_only and command() not in commands:
        commands.append(command())
    have = {(c["collection"], c["lever"], str(c["size"])) for c in cells}
    for name in args.collections.split(","):
        ref = llm_reference(name)
        if ref and (name, ref["lever"], ref["size"]) not in have:
            cells.append(ref)
            have.add((name, ref["lever"], ref["size"]))
        if args.report_only:
            continue
        for size in args.sizes.split(","):
            for lever in args.levers.split(","):
                if (name, lever, size) in have:
                    continue
                print(f"cell {name} {lever} {size} ...", flush=True)
                cell = run_cell(Path(args.data), name, lever, size, Path(args.out), args.seed)
                cells.append(cell)
                have.add((name, lever, size))
                write(cells, {"commands": commands}, args.part)
                print(f"  done in {cell['wall_seconds']} s: qk {cell['rows']['qk_synthetic'].get('ndcg@10')}",
                      flush=True)
    write(cells, {"commands": commands}, args.part)


if __name__ == "__main__":
    main()
