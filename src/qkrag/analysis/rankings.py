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
from qkrag.projection.select import cross_validate, kfold
from qkrag.ranking import Hit

if TYPE_CHECKING:
    pass

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


__all__ = ["changed_queries", "cross_validate", "id_prefix", "kfold", "share_of", "side_by_side"]


def compare_rankings(columns: Mapping[str, Sequence[Hit]], base: str, k: int = 10) -> list[dict]:
    """One query's top-`k` under several retrievers as rows: retriever, rank, rank change against `base` (positive =
    moved up; None when `base` did not rank the document), the base's score (raw cosine when `base` is cosine),
    the probability (when a projection scored the hit), id and text. Pass `base` deeper than `k` to place more."""
    if base not in columns:
        raise fail("compare_rankings", f"base {base!r} is not one of the columns {list(columns)}",
                   "name the raw cosine column as base")
    base_rank = {h.id: r for r, h in enumerate(columns[base], 1)}
    base_score = {h.id: h.score for h in columns[base]}
    rows = []
    for name, hits in columns.items():
        for rank, hit in enumerate(hits[:k], 1):
            before = base_rank.get(hit.id)
            rows.append({"retriever": name, "rank": rank, "rank_change": None if before is None else before - rank,
                         "cosine": base_score.get(hit.id), "probability": hit.probability, "id": hit.id,
                         "text": " ".join((hit.text or "").split())})
    return rows


def format_comparison(query: str, rows: Sequence[dict], width: int = 60) -> str:
    """`compare_rankings` rows as a labelled text table for a terminal."""
    def num(value, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    name_width = max([9] + [len(r["retriever"]) for r in rows])
    id_width = max([2] + [len(r["id"]) for r in rows])
    lines = [f"query: {query}",
             f"  {'retriever':<{name_width}}  rank  change  cosine  p(rel)  {'id':<{id_width}}  text"]
    for r in rows:
        change = "—" if r["rank_change"] is None else ("·" if r["rank_change"] == 0 else f"{r['rank_change']:+d}")
        lines.append(f"  {r['retriever']:<{name_width}}  {r['rank']:>4}  {change:>6}  {num(r['cosine'], '6.3f'):>6}  "
                     f"{num(r['probability'], '6.3f'):>6}  {r['id']:<{id_width}}  {r['text'][:width]}")
    return "\n".join(lines)
