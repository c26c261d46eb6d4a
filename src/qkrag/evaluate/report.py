"""Results people read: the markdown table and the plot of metrics with their confidence intervals."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from qkrag.errors import fail
from qkrag.evaluate.metrics import EvalResult


def results_table(results: Mapping[str, EvalResult], metrics: Sequence[str] | None = None, digits: int = 3) -> str:
    """A markdown table, one row per named result: each cell `mean [low, high]` (the bootstrap CI)."""
    if not results:
        raise fail("results_table", "no results given", "pass {name: EvalResult}")
    metrics = list(metrics or next(iter(results.values())).metrics)
    conf = next(iter(results.values())).confidence
    header = ["system", *[f"{m} [{conf:.0%} CI]" for m in metrics], "queries"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, r in results.items():
        cells = []
        for m in metrics:
            lo, hi = r.ci[m] if m in r.ci else (math.nan, math.nan)
            cells.append(f"{r[m]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
        lines.append("| " + " | ".join([name, *cells, str(r.n_queries)]) + " |")
    return "\n".join(lines) + "\n"


def plot_results(results: Mapping[str, EvalResult], path: str | os.PathLike[str],
                 metrics: Sequence[str] | None = None, title: str = "") -> None:
    """Grouped bar chart (one group per metric, one bar per system) with CI error bars, saved as a PNG."""
    if not results:
        raise fail("plot_results", "no results given", "pass {name: EvalResult}")
    metrics = list(metrics or next(iter(results.values())).metrics)
    width = 0.8 / len(results)
    # Width grows with the bars, capped; the legend sits outside the axes so it never hides a bar.
    fig = figure(figsize=(min(12.0, max(5.0, 0.35 * len(metrics) * len(results) + 3.0)), 4))
    ax = fig.subplots()
    x = np.arange(len(metrics))
    for i, (name, r) in enumerate(results.items()):
        means = np.array([r[m] for m in metrics])
        lo = np.array([r.ci[m][0] for m in metrics])
        hi = np.array([r.ci[m][1] for m in metrics])
        ax.bar(x + (i - (len(results) - 1) / 2) * width, means, width, label=name,
               yerr=np.vstack([means - lo, hi - means]), capsize=3)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"score (error bars: {next(iter(results.values())).confidence:.0%} bootstrap CI)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    save_png(fig, path)


def figure(figsize: tuple[float, float]):
    """A bare matplotlib Figure, not pyplot's: no global backend switch (a notebook keeps its inline plots), no
    display needed, nothing to close. Imported only when plotting."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="tight")


def save_png(fig, path: str | os.PathLike[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from qkrag.atomic import atomic_open

    FigureCanvasAgg(fig)  # render with Agg whatever backend the process uses
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
