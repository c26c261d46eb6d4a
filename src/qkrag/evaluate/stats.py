"""Statistics over per-query scores: bootstrap confidence intervals and the paired sign-flip test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bootstrap:
    """How confidence intervals are drawn: a seeded percentile bootstrap over queries (deterministic)."""

    n_resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


def bootstrap_ci(values: Sequence[float] | np.ndarray, bootstrap: Bootstrap | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (resampled with replacement, seeded)."""
    return bootstrap_cis(np.asarray(values, dtype=np.float64)[:, None], bootstrap)[0]


def bootstrap_cis(columns: np.ndarray, bootstrap: Bootstrap | None = None) -> list[tuple[float, float]]:
    """CIs of the mean of each column of an (n_queries, n_metrics) matrix. All metrics share the same resamples of
    queries: cheaper, and the intervals of one result then describe the same hypothetical query sets."""
    bootstrap = bootstrap or Bootstrap()
    n = columns.shape[0]
    if n == 0:
        return [(math.nan, math.nan)] * columns.shape[1]
    rng = np.random.default_rng(bootstrap.seed)
    means = np.empty((bootstrap.n_resamples, columns.shape[1]))
    chunk = max(1, 2_000_000 // n)  # bound memory at ~16 MB of indices per step
    for start in range(0, bootstrap.n_resamples, chunk):
        size = min(chunk, bootstrap.n_resamples - start)
        # resample counts (how often each query is drawn) instead of gathering values: one matmul for all metrics
        draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
        means[start : start + size] = counts @ columns / n
    alpha = (1 - bootstrap.confidence) / 2
    bounds = np.quantile(means, [alpha, 1 - alpha], axis=0)
    return [(float(lo), float(hi)) for lo, hi in bounds.T]


def sign_flip_p_value(diff: Sequence[float] | np.ndarray, n_permutations: int = 10_000, seed: int = 0,
                      alternative: str = "two-sided") -> float:
    """Paired randomization test of per-query differences: how often random sign flips give a mean difference at
    least as extreme as the observed one; p = (count + 1) / (n_permutations + 1). `alternative="greater"` asks
    only whether the mean difference is above zero."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return 1.0
    one_sided = alternative == "greater"
    observed = diff.mean() if one_sided else abs(diff.mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    chunk = max(1, 2_000_000 // diff.size)
    for start in range(0, n_permutations, chunk):
        n = min(chunk, n_permutations - start)
        signs = rng.integers(0, 2, size=(n, diff.size), dtype=np.int8).astype(np.float64) * 2 - 1
        flipped = signs @ diff / diff.size
        # the tolerance keeps float noise from deciding ties (identical systems: every flip ties, p = 1)
        extreme += int(((flipped if one_sided else np.abs(flipped)) >= observed - 1e-12).sum())
    return (extreme + 1) / (n_permutations + 1)
