"""When σ(s·q·k + b) may be called a probability: fitting (s, b) on held-out queries, and saying on how many.

(s, b) are Platt-fitted on hits of queries the map did not train on (a validation split, or out-of-fold scores under
cross-validation). The fit counts as calibrated only on at least `MIN_CALIBRATION_QUERIES` such queries; its held-out
ECE comes from cross-validation over those queries (fit on the other folds, measure on the held-out one). Every
projection carries the record (`calibration_`): calibrated or not, how, on how many queries, against what
(synthetic pairs, or judged queries), and the held-out ECE. `recalibrate` refits only (s, b) on a user's judged
queries: the ranking, which depends on q·k alone, stays exactly as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from qkrag.errors import fail
from qkrag.evaluate.calibration import expected_calibration_error
from qkrag.projection.light import sigmoid
from qkrag.ranking import exact_search

if TYPE_CHECKING:
    from qkrag.projection.data import Pairs

#: Fewer held-out queries than this leave (s, b) too uncertain to read σ as a probability: the fit is still used,
#: but reported as uncalibrated. Thirty queries give a few hundred judged hits at the calibration depth.
MIN_CALIBRATION_QUERIES = 30
CALIBRATION_FOLDS = 5


def uncalibrated(reason: str, n_queries: int = 0, against: str = "") -> dict[str, Any]:
    """The record of a (s, b) that is not a calibrated probability, and why."""
    return {"calibrated": False, "n_queries": n_queries, "against": against, "method": "", "held_out_ece": None,
            "min_queries": MIN_CALIBRATION_QUERIES, "reason": reason}


def describe(record: dict[str, Any] | None) -> str:
    """One line for a user: what the probability is calibrated against, on how many queries, and its held-out ECE;
    or "uncalibrated" and why."""
    record = record or uncalibrated("not recorded")
    if record.get("calibrated"):
        ece = record.get("held_out_ece")
        return (f"calibrated on {record['n_queries']} held-out {record.get('against') or 'queries'} "
                f"({record.get('method')}), held-out ECE {'n/a' if ece is None else format(ece, '.3f')}")
    return f"uncalibrated: {record.get('reason') or 'not recorded'}"


def platt_scale(dots: np.ndarray, labels: np.ndarray, scale: float, bias: float) -> tuple[float, float]:
    """Fit (s, b) of σ(s·x + b) to labels by maximum likelihood, with Platt's smoothed targets ((n₊+1)/(n₊+2) for a
    positive, 1/(n₋+2) for a negative): the fit stays finite when the scores separate the labels perfectly."""
    import torch

    y = np.asarray(labels, dtype=np.float64)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    targets = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    x = torch.from_numpy(np.asarray(dots, dtype=np.float64))
    t = torch.from_numpy(targets)
    start = [scale, bias] if np.isfinite([scale, bias]).all() else [1.0, 0.0]
    params = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], t)
        loss.backward()
        return loss

    opt.step(closure)
    s, b = params.detach().tolist()
    return float(s), float(b)


def calibration_hits(Q: np.ndarray, K: np.ndarray | None, pairs: Pairs, depth: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(projected dot products, labels, query index) for each query's top-`depth` documents plus its positives: the
    pairs a user sees as hits, where a probability has to mean something."""
    queries, relevant = pairs.unique_queries()
    keys = pairs.documents if K is None else pairs.documents @ K.T
    q = queries @ Q.T
    _, top = exact_search(q, keys, min(depth, len(keys)), space="ip")
    dots, labels, groups = [], [], []
    for i, (row, rel) in enumerate(zip(top, relevant)):
        docs = sorted(set(map(int, row)) | rel)
        dots.extend((keys[docs] @ q[i]).tolist())
        labels.extend(1.0 if d in rel else 0.0 for d in docs)
        groups.extend([i] * len(docs))
    return (np.asarray(dots, dtype=np.float64), np.asarray(labels, dtype=np.float64),
            np.asarray(groups, dtype=np.int64))


def out_of_fold_probabilities(dots: np.ndarray, labels: np.ndarray, groups: np.ndarray, start: tuple[float, float],
                              folds: int = CALIBRATION_FOLDS, seed: int = 0) -> np.ndarray | None:
    """Each hit's σ under (s, b) Platt-fitted on the other query folds: what a held-out ECE is measured on. None
    when there are fewer than two queries."""
    ids = np.unique(groups)
    folds = min(folds, len(ids))
    if folds < 2:
        return None
    out = np.empty_like(dots)
    order = np.random.default_rng(seed).permutation(ids)
    for held in np.array_split(order, folds):
        test = np.isin(groups, held)
        s, b = platt_scale(dots[~test], labels[~test], *start)
        out[test] = sigmoid(s * dots[test] + b)
    return out


def fit_calibration(dots: np.ndarray, labels: np.ndarray, groups: np.ndarray, start: tuple[float, float], *,
                    against: str, method: str, seed: int = 0) -> tuple[float, float, dict[str, Any]]:
    """Platt-fit (s, b) on every given hit (all from queries the map did not train on) and say whether that is a
    calibrated probability: at least MIN_CALIBRATION_QUERIES queries, both labels present, and a positive slope.
    The held-out ECE is cross-validated over the queries. Without a usable fit, `start` stays."""
    n_queries = int(len(np.unique(groups)))
    against = against or "pairs"
    if not 0 < labels.sum() < len(labels):
        return (*start, uncalibrated("the held-out hits are all relevant or all not", n_queries, against))
    s, b = platt_scale(dots, labels, *start)
    if not (np.isfinite([s, b]).all() and s > 0):
        # a non-positive slope: the labels do not rise with the score, and it would invert the ranking
        return (*start, uncalibrated(f"the fit on {n_queries} held-out queries gave a non-positive scale",
                                     n_queries, against))
    held = out_of_fold_probabilities(dots, labels, groups, start, seed=seed)
    ece = None if held is None else round(expected_calibration_error(held, labels), 5)
    record = {"calibrated": n_queries >= MIN_CALIBRATION_QUERIES, "n_queries": n_queries, "against": against,
              "method": method, "held_out_ece": ece, "min_queries": MIN_CALIBRATION_QUERIES,
              "reason": "" if n_queries >= MIN_CALIBRATION_QUERIES else
              f"fitted on {n_queries} held-out queries, fewer than {MIN_CALIBRATION_QUERIES}"}
    return s, b, record


def recalibrate(projection: Any, pairs: Pairs, depth: int = 10, seed: int = 0) -> Any:
    """A copy of `projection` (a fitted `qkrag.projection.model.Projection`) with (s, b) refitted on `pairs` (judged queries over the collection's documents): Q and
    K stay, so every ranking stays. Its `calibration_` holds the held-out ECE before (the current (s, b) on these
    queries) and after (cross-validated over these queries)."""
    projection.check_fitted()
    projection.check_encoder(pairs.encoder, pairs.dimension, "recalibrate")
    dots, labels, groups = calibration_hits(projection.Q_, None if projection.query_only else projection.K_, pairs,
                                            depth)
    n_queries = len(np.unique(groups))
    if n_queries < 2 or not 0 < labels.sum() < len(labels):
        raise fail(pairs.source, f"gives {n_queries} judged queries whose hits are not a mix of relevant and not",
                   f"recalibrate on at least {MIN_CALIBRATION_QUERIES} judged queries")
    before = expected_calibration_error(sigmoid(projection.scale_ * dots + projection.bias_), labels)
    s, b, record = fit_calibration(dots, labels, groups, (projection.scale_, projection.bias_),
                                   against=pairs.origin or "judged queries",
                                   method=f"recalibrated, {CALIBRATION_FOLDS}-fold CV over queries", seed=seed)
    if getattr(projection, "training_hash_", "") == pairs.content_hash():
        # the map trained on these very queries: their scores are not held out, so σ fitted on them runs high
        record = {**record, "calibrated": False, "reason": "refitted on the queries the map was trained on; "
                  "recalibrate on judged queries it never saw"}
    return projection.with_probability(s, b, {**record, "ece_before": round(float(before), 5)})
