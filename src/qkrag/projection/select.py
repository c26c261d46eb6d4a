"""Choosing a training configuration without the test split: k-fold cross-validation over the training queries
(`cross_validate`), and training with the choice made by it (`train_with_cv`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from qkrag.errors import fail

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


def cross_validate(pairs: Pairs, configs: Mapping[str, TrainConfig], *, variant: str = "qk", folds: int = 3,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """Train each named config on every fold and report validation nDCG: `{name: {"ndcg": mean over folds of the
    selected model, "init_ndcg": the same for the untrained start, "gain": their difference, "best_epoch": the
    median selected epoch (0 = the untrained start won)}}`. Pick the config with the best mean, then train it on all
    the pairs (for `best_epoch` epochs): the test split is never looked at.

    Each fold keeps its best trained epoch whatever its p-value (`selection_alpha=1`): a fold has too few queries to
    test a gain on its own, and whether training helps is what the mean over the folds answers."""
    import dataclasses

    from qkrag.projection.model import train_projection

    if not configs:
        raise fail("cross_validate", "no configs given", "pass {name: TrainConfig}")
    splits = kfold(pairs, folds, seed)
    out: dict[str, dict[str, float]] = {}
    for name, config in configs.items():
        scores, starts, epochs = [], [], []
        for train, validation in splits:
            model = train_projection(train, dataclasses.replace(config, selection_alpha=1.0), variant=variant,
                                     validation=validation)
            key = f"ndcg@{config.eval_k}"
            scores.append(model.validation_[key])
            starts.append(model.validation_[f"init_{key}"])
            epochs.append(model.validation_["best_epoch"])
        out[name] = {"ndcg": float(np.mean(scores)), "init_ndcg": float(np.mean(starts)),
                     "gain": float(np.mean(scores) - np.mean(starts)), "best_epoch": int(np.median(epochs))}
    return out


def train_with_cv(pairs: Pairs, config: TrainConfig, *, variant: str = "qk", rank: int | None = None,
                  folds: int = 5, seed: int = 0) -> Projection:
    """Decide by `folds`-fold cross-validation whether training beats the start, then act on it: when the mean
    validation gain over the folds is positive and the folds' median best epoch is past the start, train on every
    pair for that many epochs; else keep the start (identity, or PCA for a low rank). Every query votes, where one
    validation split of a small collection holds a handful. `selected_` says which, and why, in words."""
    import dataclasses

    from qkrag.projection.model import train_projection

    cv = cross_validate(pairs, {"given": config}, variant=variant, folds=folds, seed=seed)["given"]
    summary = (f"{folds}-fold CV over {pairs.n_queries} queries: nDCG@{config.eval_k} {cv['init_ndcg']:.3f} at the "
               f"start, {cv['ndcg']:.3f} trained ({cv['gain']:+.3f}), median best epoch {cv['best_epoch']}")
    if cv["gain"] > 0 and cv["best_epoch"] > 0:
        final = dataclasses.replace(config, epochs=cv["best_epoch"], select=False)
        # every pair trains; (s, b) are then Platt-fitted on the training pairs, the one place left to fit them
        model = train_projection(pairs, final, variant=variant, rank=rank, validation=pairs)
        model.selected_ = f"trained for {cv['best_epoch']} epochs on all pairs ({summary})"
    else:
        # one epoch that selection can never keep (p > 1e-12 always): the start, with (s, b) calibrated as usual
        model = train_projection(pairs, dataclasses.replace(config, epochs=1, selection_alpha=1e-12), variant=variant,
                                 rank=rank)
        model.selected_ = f"start kept: training did not gain under cross-validation ({summary})"
    model.validation_ = {**{k: v for k, v in model.validation_.items() if k != "warning"}, "cv": cv, "cv_folds": folds,
                         "note": "the figures above are on the training pairs when trained; cv holds the held-out ones"}
    return model
