"""The main job's report: one `Row` per method, the markdown table with its notes, the header that says what the
table is about, and the files a run leaves (bench.json, bench.md, plots). Rendering only: `job` computes the rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qkrag.atomic import write_json, write_text


@dataclass
class Row:
    method: str
    result: Any  # EvalResult
    train_seconds: float = 0.0
    latency_ms: float = 0.0
    ece: float | None = None
    notes: str = ""
    comparison: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # leakage audit, question share, base comparison
    calibration: Any = None  # (probabilities, labels) of the hits a user reads, for rows that output σ; not saved

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, **self.result.to_dict(), "train_seconds": round(self.train_seconds, 2),
               "latency_ms": round(self.latency_ms, 3), "ece": self.ece, "notes": self.notes}
        if self.ece is not None and self.ece > 0.1:
            from qkrag.evaluate.calibration import ece_warning

            out["ece_warning"] = ece_warning(self.ece)
        out.update({f"vs_cosine_{k}": v for k, v in self.comparison.items()})
        out.update(self.extra)
        return out


def table(rows: list[Row], questions: bool) -> str:
    """The markdown table: every row's figures, then its leakage audit and notes; `questions` adds the share of
    question-form documents in each top 5. An ECE above the threshold is marked, with a warning in the notes: the
    test split is judged data, so σ does not fit this collection's relevance rates. Where a row reports LLM calls
    per query (the LLM baselines), a column shows them for every row: 0 for the rest, which call no LLM at search
    time."""
    from qkrag.evaluate.calibration import ece_warning

    llm = any("llm_calls_per_query" in row.extra for row in rows)
    head = ("| method | nDCG@10 [95% CI] | Recall@100 | MRR@10 | Δ vs cosine (p) | Δ vs hybrid (p) | seen: nDCG@10 "
            "(Δ vs base, n) | novel: nDCG@10 (Δ vs base, n) | " + ("questions in top 5 | " if questions else "")
            + "ECE | train s | ms/query |" + (" LLM calls/query |" if llm else ""))
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for row in rows:
        r, x = row.result, row.extra
        lo, hi = r.ci["ndcg@10"]
        delta = f"{row.comparison['delta']:+.3f} ({row.comparison['p_value']:.3g})" if row.comparison else "—"
        vs_h = f"{x['vs_hybrid_delta']:+.3f} ({x['vs_hybrid_p_value']:.3g})" if "vs_hybrid_delta" in x else "—"
        cells = [row.method, f"{r['ndcg@10']:.3f} [{lo:.3f}, {hi:.3f}]", f"{r['recall@100']:.3f}",
                 f"{r['mrr@10']:.3f}", delta, vs_h, audit_cell(x, "seen"), audit_cell(x, "novel")]
        if questions:
            cells.append(f"{x['question_share@5']:.3f}")
        cells += [ece_cell(row.ece), f"{row.train_seconds:.1f}", f"{row.latency_ms:.2f}"]
        if llm:
            cells.append(f"{x.get('llm_calls_per_query', 0):.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- **{row.method}**: {row.notes}" + (f" (audit base: {row.extra['audit_base']})"
                                                    if "audit_base" in row.extra else "")
             + (f". **{ece_warning(row.ece)}**" if ece_warning(row.ece) else "") for row in rows]
    return "\n".join(lines) + "\n\nNotes:\n\n" + "\n".join(notes)


def summary(config: dict[str, Any], queries: int, documents: int, info: dict[str, Any], rows: list[Row]
            ) -> dict[str, Any]:
    """bench.json: what was run on what (`config` as `asdict` gives it, paths as text), the run's facts, every row."""
    config = {k: str(v) if isinstance(v, Path) else v for k, v in config.items()}
    return {"data": config["data"], "split": config["split"], "queries": queries, "documents": documents,
            "config": config, **info, "rows": [r.to_dict() for r in rows]}


def data_line(data: Path, split: str, queries: int, documents: int) -> str:
    """The header's data fact: the folder, the split and its size."""
    return f"{data} (split {split}: {queries} queries, {documents} documents)"


def header(data: str, encoder: str, generation: dict[str, Any], sample: int | None, generator: str) -> str:
    """What the table is about: data, encoder, generator, version, date; enough to reproduce and to read it."""
    from datetime import datetime, timezone

    from qkrag import __version__

    gen = generation
    facts = {"data": data, "encoder": encoder,
             "pairs": (f"{gen.get('counts', {}).get('pairs', '?')} from {sample} sampled passages, generator "
                       f"{gen.get('generator', generator)}") if gen else "none generated",
             "qkrag": __version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "rows": "nDCG@10 with 95% bootstrap CI; Δ: paired difference, p: paired sign-flip test"}
    return "\n".join(f"- {k}: {v}" for k, v in facts.items())


def write(out: Path, summary: dict[str, Any], head: str, body: str, rows: list[Row]) -> None:
    """bench.json (`summary`), bench.md (`head` and the table `body`), per_query.json (every row's score on every
    test query, so any two rows can be compared with a paired test), and the plots of `rows`."""
    from qkrag.evaluate.calibration import reliability_diagram
    from qkrag.evaluate.report import plot_deltas, plot_results, plot_score_histograms

    write_json(out / "bench.json", summary)
    write_json(out / "per_query.json", {r.method: r.result.per_query for r in rows})
    write_text(out / "bench.md", f"# qkrag bench\n\n{head}\n\n{body}\n")
    plot_results({r.method: r.result for r in rows}, out / "bench.png", metrics=["ndcg@10", "recall@100"])
    deltas = {r.method: (r.comparison["delta"], *r.comparison["delta_ci"]) for r in rows if r.comparison}
    if deltas:
        plot_deltas(deltas, out / "bench-delta.png")
    calibrated = {r.method: r.calibration for r in rows if r.calibration is not None}
    if calibrated:
        plot_score_histograms(calibrated, out / "bench-scores.png")
        name, (p, y) = next(iter(calibrated.items()))
        reliability_diagram(p, y, out / "bench-reliability.png", title=f"{name}: reliability")


def ece_cell(ece: float | None) -> str:
    """An ECE cell, marked where it is above the warning threshold (the notes say what that means)."""
    from qkrag.evaluate.calibration import ECE_WARNING_THRESHOLD

    if ece is None:
        return "—"
    return f"{ece:.3f} (> {ECE_WARNING_THRESHOLD}: uncalibrated here)" if ece > ECE_WARNING_THRESHOLD else f"{ece:.3f}"


def audit_cell(extra: dict[str, Any], part: str) -> str:
    """A seen/novel cell: score (Δ vs the row's base, number of queries), or — where the row was not trained."""
    if f"n_{part}" not in extra:
        return "—"
    if extra.get(f"ndcg@10_{part}") is None:
        return f"— (n={extra[f'n_{part}']})"
    return (f"{extra[f'ndcg@10_{part}']:.3f} ({extra[f'delta_ndcg@10_{part}']:+.3f}, p {extra[f'p_ndcg@10_{part}']:.2g},"
            f" n={extra[f'n_{part}']})")
