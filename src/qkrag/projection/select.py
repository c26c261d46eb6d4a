"""Choosing a training configuration without the test split: k-fold cross-validation over the training queries
(`cross_validate`), and training with the choice made by it (`train_with_cv`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from qkrag.errors import fail
from qkrag.projection.calibrate import calibration_hits, fit_calibration

if TYPE_CHECKING:
    from qkrag.projection.data import Pairs
    from qkrag.projection.model import Projection
    from qkrag.projection.train import TrainConfig



def kfold(pairs: Pairs, folds: int = 3, seed: int = 0) -> list[tuple[Pairs, Pairs]]:
    """(train, validation) for each of `folds` disjoint query folds: every query is held out exactly once, and a
    query's pairs never straddle a fold."""
    if not 2 <= folds <= pairs.n_queries:
        raise fail("kfold folds", f"{folds!r} folds for {pairs.n_queries} queries",
                   "use between 2 and the number of queries")
    order = np.random.default_rng(seed).permutation(pairs.n_queries)
    out = []
    for held in np.array_split(order, folds):
        is_val = np.isin(pairs.groups, held)
        out.append((pairs.subset(np.flatnonzero(~is_val), f"{pairs.source} (fold train)"),
                    pairs.subset(np.flatnonzero(is_val), f"{pairs.source} (fold validation)")))
    return out


def _cross_validate_one(splits: list[tuple[Pairs, Pairs]], config: TrainConfig, variant: str, rank: int | None
                        ) -> tuple[dict[str, float], list[tuple[Projection, Pairs]]]:
    """One config over the folds: the summary `cross_validate` reports, and each fold's (model, validation)."""
    import dataclasses

    from qkrag.projection.model import train_projection

    scores, starts, epochs, runs = [], [], [], []
    for train, validation in splits:
        model = train_projection(train, dataclasses.replace(config, selection_alpha=1.0), variant=variant,
                                 rank=rank, validation=validation)
        key = f"ndcg@{config.eval_k}"
        scores.append(model.validation_[key])
        starts.append(model.validation_[f"init_{key}"])
        epochs.append(model.validation_["best_epoch"])
        runs.append((model, validation))
    stats = {"ndcg": float(np.mean(scores)), "init_ndcg": float(np.mean(starts)),
             "gain": float(np.mean(scores) - np.mean(starts)), "best_epoch": int(np.median(epochs))}
    return stats, runs


def cross_validate(pairs: Pairs, configs: Mapping[str, TrainConfig], *, variant: str = "qk", folds: int = 3,
                   seed: int = 0, rank: int | None = None) -> dict[str, dict[str, float]]:
    """Train each named config on every fold and report validation nDCG: `{name: {"ndcg": mean over folds of the
    selected model, "init_ndcg": the same for the untrained start, "gain": their difference, "best_epoch": the
    median selected epoch (0 = the untrained start won)}}`. Pick the config with the best mean, then train it on all
    the pairs (for `best_epoch` epochs): the test split is never looked at.

    Each fold keeps its best trained epoch whatever its p-value (`selection_alpha=1`): a fold has too few queries to
    test a gain on its own, and whether training helps is what the mean over the folds answers."""
    if not configs:
        raise fail("cross_validate", "no configs given", "pass {name: TrainConfig}")
    splits = kfold(pairs, folds, seed)
    return {name: _cross_validate_one(splits, config, variant, rank)[0] for name, config in configs.items()}


def _out_of_fold_hits(runs: list[tuple[Projection, Pairs]], depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each fold model's calibration hits on its own held-out queries: scores no model saw in training."""
    parts, offset = [], 0
    for model, validation in runs:
        dots, labels, groups = calibration_hits(model.Q_, None if model.query_only else model.K_, validation, depth)
        parts.append((dots, labels, groups + offset))
        offset += validation.n_queries
    return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]


def train_with_cv(pairs: Pairs, config: TrainConfig, *, variant: str = "qk", rank: int | None = None,
                  folds: int = 5, seed: int = 0) -> Projection:
    """Decide by `folds`-fold cross-validation whether training beats the start, then act on it: when the mean
    validation gain over the folds is positive and the folds' median best epoch is past the start, train on every
    pair for that many epochs; else keep the start (identity, or PCA for a low rank). Every query votes, where one
    validation split of a small collection holds a handful. `selected_` says which, and why, in words.

    (s, b) are fitted on scores of queries the scoring map never trained on: the folds' out-of-fold scores when
    trained, every query's score under the untrained start when it is kept. `validation_` holds only held-out
    figures (the cross-validated ones), `calibration_` whether σ is calibrated and its held-out ECE."""
    import dataclasses

    from qkrag.projection.model import train_projection

    if not 2 <= folds <= pairs.n_queries:
        raise fail("cross-validation folds", f"{folds!r} folds for {pairs.n_queries} queries",
                   "use between 2 and the number of queries")
    cv, runs = _cross_validate_one(kfold(pairs, folds, seed), config, variant, rank)
    summary = (f"{folds}-fold CV over {pairs.n_queries} queries: nDCG@{config.eval_k} {cv['init_ndcg']:.3f} at the "
               f"start, {cv['ndcg']:.3f} trained ({cv['gain']:+.3f}), median best epoch {cv['best_epoch']}")
    trained = cv["gain"] > 0 and cv["best_epoch"] > 0
    no_calibration = dataclasses.replace(config, calibrate=False)
    if trained:
        final = dataclasses.replace(no_calibration, epochs=cv["best_epoch"], select=False)
        model = train_projection(pairs, final, variant=variant, rank=rank, validation=pairs)
        model.selected_ = f"trained for {cv['best_epoch']} epochs on all pairs ({summary})"
        hits, method = _out_of_fold_hits(runs, config.calibration_depth), f"{folds}-fold CV, out-of-fold scores"
    else:
        # one epoch that selection can never keep (p > 1e-12 always): the start
        model = train_projection(pairs, dataclasses.replace(no_calibration, epochs=1, selection_alpha=1e-12),
                                 variant=variant, rank=rank)
        model.selected_ = f"start kept: training did not gain under cross-validation ({summary})"
        hits = calibration_hits(model.Q_, None if model.query_only else model.K_, pairs, config.calibration_depth)
        method = "the untrained start: every query held out"
    calibration = {"calibrated": False}
    if config.calibrate:
        s, b, calibration = fit_calibration(*hits, (model.scale_, model.bias_), against=pairs.origin, method=method,
                                            seed=seed)
        model = model.with_probability(s, b, calibration)
    key = f"ndcg@{config.eval_k}"
    model.validation_ = {"figures": f"held out by {folds}-fold cross-validation over {pairs.n_queries} queries",
                         key: round(cv["ndcg"] if trained else cv["init_ndcg"], 5),
                         f"init_{key}": round(cv["init_ndcg"], 5), "n_queries": pairs.n_queries,
                         "best_epoch": cv["best_epoch"] if trained else 0, "cv": cv, "cv_folds": folds,
                         "calibrated": bool(calibration["calibrated"]),
                         "train_seconds": model.validation_.get("train_seconds")}
    return model


def held_out_ndcg(projection: Projection) -> float:
    """The held-out nDCG@10 a projection was selected on: its CV mean when cross-validated, else its validation's."""
    val = projection.validation_
    return float(val["cv"]["ndcg"]) if "cv" in val else float(val.get("ndcg@10", 0.0))


def train_best(pairs: Pairs, configs: Mapping[str, TrainConfig], *, validation: Pairs | None = None,
               folds: int | None = None, variant: str = "qk", rank: int | None = None,
               seed: int = 0) -> tuple[str, Projection, dict[str, float]]:
    """Train one projection per named config and keep the best on the same held-out queries: `validation` when
    given (early stopping and selection against the start happen there); else `folds`-fold cross-validation over
    `pairs` (`train_with_cv`) when `folds` is set; else the share of `pairs` the first config holds out
    (`validation_fraction`, split as its `holdout` says). Ties go to the earlier name. Returns (the best name, its
    projection, every name's held-out nDCG@10)."""
    from qkrag.projection.model import train_projection
    from qkrag.projection.train import holdout_for

    if not configs:
        raise fail("train_best", "no configs given", "pass {name: TrainConfig}, e.g. from projection.recipes")
    if validation is None and folds is None:
        first = next(iter(configs.values()))
        pairs, validation = pairs.split(first.validation_fraction, first.seed, by=holdout_for(pairs, first.holdout))
    tried = {name: (train_with_cv(pairs, config, variant=variant, rank=rank, folds=folds, seed=seed)
                    if validation is None else
                    train_projection(pairs, config, variant=variant, rank=rank, validation=validation))
             for name, config in configs.items()}
    scores = {name: held_out_ndcg(p) for name, p in tried.items()}
    best = max(scores, key=scores.__getitem__)  # max keeps the first of equal scores: ties go to the earlier name
    return best, tried[best], scores
