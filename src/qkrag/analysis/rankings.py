"""Looking inside rankings: what kind of document comes first, and how two retrievers differ on the same queries.

Aggregate metrics say *how much* a projection helps; these helpers say *where*. The demo collection's case: a question's
nearest neighbours under raw cosine are other questions (unanswered forum posts), not answers. `share_of` measures
that (the share of top-k hits that are posts), `changed_queries` finds the queries where a second retriever fixed (or
broke) it, and `side_by_side` prints one query's rankings next to each other. `cross_validate` picks a training
configuration on folds of the training pairs, so a choice never looks at the test split.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from qkrag.errors import fail
from qkrag.retrieval.base import Hit

if TYPE_CHECKING:
    from qkrag.projection.data import Pairs
    from qkrag.projection.train import TrainConfig

Predicate = Callable[[Hit], bool]


def id_prefix(prefix: str) -> Predicate:
    """A predicate true for hits whose id starts with `prefix` (e.g. the demo's distractors, "post-")."""
    return lambda hit: hit.id.startswith(prefix)


def share_of(hits: Sequence[Sequence[Hit]], predicate: Predicate, k: int | None = None) -> float:
    """Share of the top-`k` hits (all hits when k is None), pooled over queries, for which `predicate` holds.
    With k=1: the share of queries whose first hit satisfies it."""
    if k is not None and k < 1:
        raise fail("share_of k", f"{k!r} is not a positive cut-off", "use k >= 1, or None for every hit")
    counted = [predicate(h) for row in hits for h in row[:k]]
    if not counted:
        raise fail("share_of", "there are no hits to count", "pass at least one query with at least one hit")
    return float(np.mean(counted))


def changed_queries(before: Sequence[Sequence[Hit]], after: Sequence[Sequence[Hit]], predicate: Predicate,
                    k: int = 1) -> list[int]:
    """Positions of the queries where `predicate` holds for some top-`k` hit of `before` and for none of `after`'s
    (e.g. raw cosine put a distractor first and the projection did not). Swap the arguments for the reverse."""
    if len(before) != len(after):
        raise fail("changed_queries", f"{len(before)} rankings before but {len(after)} after",
                   "pass the two retrievers' hits for the same queries, in the same order")
    return [i for i, (a, b) in enumerate(zip(before, after))
            if any(map(predicate, a[:k])) and not any(map(predicate, b[:k]))]


def _cell(rank: int, hit: Hit, width: int, relevant: Collection[str]) -> list[str]:
    mark = "✓" if hit.id in relevant else " "
    score = f"p={hit.probability:.2f}" if hit.probability is not None else f"{hit.score:.3f}"
    head = f"{rank}.{mark} {hit.id} ({score})"
    text = " ".join((hit.text or "").split())
    return [head[:width], *textwrap.wrap(text, width, max_lines=2, placeholder=" …", initial_indent="   ",
                                        subsequent_indent="   ")]


def side_by_side(query: str, columns: Mapping[str, Sequence[Hit]], k: int = 3, width: int = 48,
                 relevant: Collection[str] = ()) -> str:
    """One query's top-`k` under several retrievers as text columns: rank, ✓ when the id is in `relevant`, id, score
    (or the probability when a projection scored the hit), and the start of the hit's text."""
    if not columns:
        raise fail("side_by_side", "no rankings given", "pass {retriever name: hits for this query}")
    # pad each hit to the same number of lines across columns, so rank i sits on the same row everywhere
    blocks = {name: [_cell(r, h, width, relevant) for r, h in enumerate(hits[:k], 1)] for name, hits in columns.items()}
    rows: list[str] = []
    for i in range(max(len(b) for b in blocks.values())):
        height = max(len(b[i]) if i < len(b) else 0 for b in blocks.values())
        for j in range(height):
            parts = []
            for b in blocks.values():
                lines = b[i] if i < len(b) else []
                parts.append((lines[j] if j < len(lines) else "").ljust(width))
            rows.append(" │ ".join(parts).rstrip())
    header = " │ ".join(name[:width].ljust(width) for name in columns).rstrip()
    rule = "─┼─".join("─" * width for _ in columns)
    return "\n".join([f"query: {query}", header, rule, *rows])


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


__all__ = ["changed_queries", "cross_validate", "id_prefix", "kfold", "share_of", "side_by_side"]
