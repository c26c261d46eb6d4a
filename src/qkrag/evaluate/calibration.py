"""Is σ(s·q·k + b) a probability? Expected calibration error and the reliability diagram, over the hits a user
reads."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from qkrag.data import Qrels
from qkrag.errors import fail
from qkrag.evaluate.report import figure, save_png
from qkrag.ranking import Hit


def _check_probabilities(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.size != y.size:
        raise fail("calibration", f"{p.size} probabilities but {y.size} labels", "give one label per probability")
    if p.size == 0:
        raise fail("calibration", "no probabilities given", "pass at least one (probability, label) pair")
    if not np.all((p >= 0) & (p <= 1)):
        raise fail("calibration", f"probabilities outside [0, 1] (min {np.nanmin(p):.3g}, max {np.nanmax(p):.3g})",
                   "pass probabilities (e.g. sigmoid of the scores), not raw scores")
    if not np.all((y == 0) | (y == 1)):
        raise fail("calibration", "labels are not all 0 or 1", "pass binary relevance labels (1 = relevant)")
    return p, y


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each probability; 1.0 falls in the last bin. Hand-written rather than
    `sklearn.calibration.calibration_curve`, which returns no bin counts (the ECE weights, `count`, the diagram's
    labels) and whose import loads scipy and much of scikit-learn into an otherwise numpy-only module."""
    if n_bins < 1:
        raise fail("n_bins", f"{n_bins} is not a positive number of bins", "use e.g. 15")
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def expected_calibration_error(probabilities, labels, n_bins: int = 15) -> float:
    """ECE: the mean over equal-width probability bins of |observed frequency - mean probability|, weighted by the
    share of predictions in each bin (Guo et al. 2017; 15 bins as there). 0 = calibrated, up to 1 = always wrong."""
    p, y = _check_probabilities(probabilities, labels)
    which = _bins(p, n_bins)
    count = np.bincount(which, minlength=n_bins)
    gap = np.abs(np.bincount(which, weights=y, minlength=n_bins) - np.bincount(which, weights=p, minlength=n_bins))
    # sum over bins of (n_b / N) * |mean(y_b) - mean(p_b)| = sum |Σy_b - Σp_b| / N
    return float(gap[count > 0].sum() / p.size)


def reliability_bins(probabilities, labels, n_bins: int = 15) -> list[dict[str, float | int]]:
    """The numbers behind a reliability diagram, one dict per equal-width probability bin (empty bins included):
    `low`, `high`, `count`, `mean_probability` and `fraction_relevant` (both None for an empty bin). What
    `reliability_diagram` draws, for a page or a table that draws it itself."""
    p, y = _check_probabilities(probabilities, labels)
    which = _bins(p, n_bins)
    count = np.bincount(which, minlength=n_bins)
    sum_p = np.bincount(which, weights=p, minlength=n_bins)
    sum_y = np.bincount(which, weights=y, minlength=n_bins)
    edges = np.linspace(0, 1, n_bins + 1)
    return [{"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(count[b]),
             "mean_probability": float(sum_p[b] / count[b]) if count[b] else None,
             "fraction_relevant": float(sum_y[b] / count[b]) if count[b] else None} for b in range(n_bins)]


def calibration_pairs(hits: Sequence[Sequence[Hit]], query_ids: Sequence[str], qrels: Qrels, depth: int = 10
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """(probability, label) pairs where a user reads probabilities: each query's top `depth` hits, plus every judged
    relevant document the ranking holds deeper down. None when the hits carry no probability (raw cosine, BM25)."""
    probs, labels = [], []
    for qid, row in zip(query_ids, hits):
        judged = qrels.get(qid, {})
        for rank, hit in enumerate(row):
            if hit.probability is None:
                return None
            relevant = judged.get(hit.id, 0) > 0
            if rank < depth or relevant:
                probs.append(hit.probability)
                labels.append(1 if relevant else 0)
    return (np.asarray(probs), np.asarray(labels)) if probs else None


def reliability_diagram(probabilities, labels, path: str | os.PathLike[str], n_bins: int = 15,
                        title: str = "") -> None:
    """Observed frequency of relevance per probability bin against the diagonal (perfect calibration), with the
    share of predictions per bin underneath; saved as a PNG."""
    p, y = _check_probabilities(probabilities, labels)
    which = _bins(p, n_bins)
    count = np.bincount(which, minlength=n_bins)
    filled = count > 0
    freq = np.bincount(which, weights=y, minlength=n_bins)[filled] / count[filled]
    conf = np.bincount(which, weights=p, minlength=n_bins)[filled] / count[filled]
    edges = np.linspace(0, 1, n_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2

    fig = figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.bar(centres[filled], freq, width=1 / n_bins, edgecolor="black", alpha=0.7, label="observed frequency")
    top.plot(conf, freq, "o", color="C3", markersize=4, label="bin mean probability")
    top.set_ylabel("fraction relevant")
    top.set_ylim(0, 1)
    ece = expected_calibration_error(p, y, n_bins)
    top.set_title(title or f"Reliability (ECE = {ece:.3f}, n = {p.size})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(centres, count / p.size, width=1 / n_bins, edgecolor="black", color="C0")
    for x, n in zip(centres[filled], count[filled]):  # the count behind each bin: a bar of 3 hits proves little
        bottom.annotate(str(int(n)), (x, n / p.size), ha="center", va="bottom", fontsize="x-small")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("share (count above)")
    bottom.set_xlim(0, 1)
    save_png(fig, path)


#: An ECE above this on judged data says σ's scale and bias do not fit this collection's relevance rates.
ECE_WARNING_THRESHOLD = 0.1


def ece_warning(ece: float | None) -> str | None:
    """The warning to print beside an ECE measured on judged data, or None when it is within the threshold."""
    if ece is None or ece <= ECE_WARNING_THRESHOLD:
        return None
    return (f"ECE {ece:.3f} > {ECE_WARNING_THRESHOLD}: σ is not calibrated for this collection's relevance rates "
            "(read it as a ranking score); refit it on judged queries with `qkrag calibrate PROJECTION DATA --split "
            "train`")
