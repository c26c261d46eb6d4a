"""Comparing two systems on the same queries: paired differences with CIs and p-values, against the untrained
base, and the seen/novel leakage audit (queries whose relevant documents were training positives, and the rest)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from qkrag.data import Qrels
from qkrag.errors import fail
from qkrag.evaluate.metrics import PRIMARY_METRIC, EvalResult
from qkrag.evaluate.stats import Bootstrap, bootstrap_ci, sign_flip_p_value


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of two systems on the same queries. `difference` = mean over queries of (a - b)."""

    metric: str
    mean_a: float
    mean_b: float
    difference: float
    ci: tuple[float, float]  # paired bootstrap CI of the mean difference
    p_value: float  # two-sided paired randomization (sign-flip) test
    n_queries: int
    test: str = "paired randomization test (sign flips), two-sided"

    @property
    def significant(self) -> bool:
        """At the 5% level (the CI excludes 0 and p < 0.05 agree up to resampling noise)."""
        return self.p_value < 0.05


def compare(a: EvalResult, b: EvalResult, metric: str = PRIMARY_METRIC, *, n_permutations: int = 10_000,
            bootstrap: Bootstrap | None = None) -> Comparison:
    """Is `a` better than `b` on `metric`, beyond what the choice of queries explains?

    Pairs the per-query scores. The p-value is a paired randomization test: under the null hypothesis that the two
    systems are exchangeable, each query's difference is equally likely to have either sign, so we flip signs at
    random (`n_permutations` times, seeded) and count how often the mean difference is at least as extreme as the
    observed one; p = (count + 1) / (n_permutations + 1). The CI is a paired bootstrap of the mean difference.
    """
    for r in (a, b):
        if metric not in r.per_query:
            raise fail(f"metric {metric!r}", f"was not computed for {r.name or 'one result'} (it has {r.metrics})",
                       "evaluate both systems with that metric")
    qa, qb = a.per_query[metric], b.per_query[metric]
    if set(qa) != set(qb):
        only_a, only_b = sorted(set(qa) - set(qb)), sorted(set(qb) - set(qa))
        raise fail("compare", f"the results cover different queries ({len(only_a)} only in a, e.g. {only_a[:3]}; "
                   f"{len(only_b)} only in b, e.g. {only_b[:3]})", "evaluate both systems on the same qrels")
    ids = list(qa)
    diff = np.array([qa[q] - qb[q] for q in ids], dtype=np.float64)
    p = sign_flip_p_value(diff, n_permutations, (bootstrap or Bootstrap()).seed)
    return Comparison(metric, a.means[metric], b.means[metric], float(diff.mean()), bootstrap_ci(diff, bootstrap),
                      p, len(ids))


def seen_novel(qrels: Qrels, training_positives: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split judged queries by whether any of their relevant documents was a positive in training ("seen") or none
    was ("novel"). A trained map can gain on seen queries by learning *which documents* get judged (a prior over
    documents) rather than what relevance means; only the novel queries say whether it learned relevance."""
    positives = set(training_positives)
    seen, novel = [], []
    for qid, judged in qrels.items():
        relevant = {d for d, grade in judged.items() if grade > 0}
        (seen if relevant & positives else novel).append(qid)
    return seen, novel


def leakage_audit(result: EvalResult, base: EvalResult, qrels: Qrels, training_positives: Iterable[str],
                  metric: str = PRIMARY_METRIC) -> dict[str, float | int | list[float] | None]:
    """`metric` of `result` on seen and novel queries (see `seen_novel`), each with its bootstrap CI, the base's
    score on the same queries, and the paired difference with its CI and sign-flip p-value. JSON-ready; keys
    `{metric}_seen`, `{metric}_novel`, `n_seen`, `n_novel`, and per part `_ci`, `base_`, `delta_`, `p_`."""
    seen, novel = seen_novel({q: qrels[q] for q in result.query_ids if q in qrels}, training_positives)
    out: dict[str, float | int | list[float] | None] = {"n_seen": len(seen), "n_novel": len(novel)}
    for part, ids in (("seen", seen), ("novel", novel)):
        if not ids:
            out.update({f"{metric}_{part}": None, f"{metric}_{part}_ci": None, f"base_{metric}_{part}": None,
                        f"delta_{metric}_{part}": None, f"delta_{metric}_{part}_ci": None, f"p_{metric}_{part}": None})
            continue
        mine, theirs = result.subset(ids), base.subset(ids)
        c = compare(mine, theirs, metric)
        out.update({f"{metric}_{part}": mine[metric], f"{metric}_{part}_ci": list(mine.ci[metric]),
                    f"base_{metric}_{part}": theirs[metric], f"delta_{metric}_{part}": c.difference,
                    f"delta_{metric}_{part}_ci": list(c.ci), f"p_{metric}_{part}": c.p_value})
    return out

