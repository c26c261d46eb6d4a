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


def plot_deltas(deltas: Mapping[str, tuple[float, float, float]], path: str | os.PathLike[str],
                base: str = "cosine", metric: str = "nDCG@10") -> None:
    """Each system's paired difference to `base` with its CI (`{name: (delta, low, high)}`), one row each, zero
    marked: how much each row gains or loses, on the scale of the differences rather than of the scores."""
    if not deltas:
        raise fail("plot_deltas", "no differences given", "pass {name: (delta, low, high)}")
    names = list(deltas)
    d = np.array([deltas[n][0] for n in names])
    lo, hi = np.array([deltas[n][1] for n in names]), np.array([deltas[n][2] for n in names])
    fig = figure(figsize=(6.5, 0.45 * len(names) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    colours = ["C2" if low > 0 else "C3" if high < 0 else "C7" for low, high in zip(lo, hi)]
    for di, yi, low, high, colour in zip(d, y, lo, hi, colours):
        ax.errorbar([di], [yi], xerr=[[di - low], [high - di]], fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, names)
    ax.set_xlabel(f"Δ {metric} vs {base} (95% CI; green: CI above 0, red: below)")
    save_png(fig, path)


def plot_score_histograms(scores: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str],
                          bins: int = 20) -> None:
    """Per system, the distribution of its probability for relevant and for non-relevant hits (`{name:
    (probabilities, labels)}`): how far apart the two are is what a threshold on σ can use."""
    if not scores:
        raise fail("plot_score_histograms", "no scores given", "pass {name: (probabilities, labels)}")
    fig = figure(figsize=(4.2 * len(scores), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(scores), sharey=False))
    edges = np.linspace(0, 1, bins + 1)
    for ax, (name, (p, y)) in zip(axes, scores.items()):
        p, y = np.asarray(p, dtype=float), np.asarray(y) > 0
        ax.hist(p[~y], edges, alpha=0.6, label=f"not relevant (n={int((~y).sum())})", color="C7")
        ax.hist(p[y], edges, alpha=0.7, label=f"relevant (n={int(y.sum())})", color="C2")
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("σ(s·q·k + b)")
        ax.legend(fontsize="x-small")
    axes[0].set_ylabel("hits")
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
