"""A teacher for listwise distillation: how a stronger ranker scores each training query's candidate list.

Binary labels over mined hard negatives say "the generated positive is relevant, everything else is not"; but a mined
"negative" near the top is often relevant in fact, and pushing it away teaches the projection the wrong thing. GPL
(Wang et al. 2022) measured this on SciFact: the same hard negatives with binary labels 59.6 nDCG@10, with a teacher's
soft labels 66.4. The teacher must run offline on 2 cores, so the default one (`qkrag.retrieval.factory.default_teacher`) is hybrid
retrieval, BM25 fused with the dense ranking: no training, and on most collections better than either arm alone.
This module only reads a teacher's rankings, so any retriever can teach.

    pairs -> each query searched by the teacher (top `depth`) -> per-query z-scored scores -> Pairs.with_teacher

The generated positive always joins its list with at least the top score: it was written from that passage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qkrag.errors import fail
from qkrag.projection.data import Pairs


def hybrid_teacher(pairs: Pairs, texts: Sequence[str], teacher: Any, depth: int = 30) -> Pairs:
    """`pairs` with teacher candidates attached: `teacher.search([text], depth)` (any retriever: a HybridRetriever by
    default) is asked once per distinct query text; `texts[i]` is the text of pair i's query."""
    if len(texts) != len(pairs):
        raise fail("hybrid_teacher", f"{len(texts)} query texts for {len(pairs)} pairs", "give one text per pair")
    if pairs.doc_ids is None:
        raise fail(pairs.source, "has no document ids", "build pairs with pairs_from_dataset/pairs_from_collection")
    if depth < 2:
        raise fail("hybrid_teacher", f"depth={depth}", "use a candidate list of at least 2 documents")
    row_of = {d: i for i, d in enumerate(pairs.doc_ids)}
    unique = list(dict.fromkeys(texts))
    ranked = dict(zip(unique, teacher.search(unique, depth)))
    rows = np.full((len(pairs), depth + 1), -1, dtype=np.int64)
    scores = np.zeros((len(pairs), depth + 1), dtype=np.float32)
    for i, text in enumerate(texts):
        hits = [h for h in ranked[text] if h.id in row_of][:depth]
        cand = [row_of[h.id] for h in hits]
        z = _zscore(np.array([h.score for h in hits], dtype=np.float64))
        positive = int(pairs.positives[i])
        top = float(z.max()) if z.size else 0.0
        if positive in cand:
            z[cand.index(positive)] = top
        else:
            cand.append(positive)
            z = np.append(z, top)
        rows[i, : len(cand)] = cand
        scores[i, : len(cand)] = z
    return pairs.with_teacher(rows, scores)


def _zscore(x: np.ndarray) -> np.ndarray:
    """Per-query standardised scores: fused scores of different queries live on different scales."""
    if x.size < 2:
        return np.zeros_like(x)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
