"""What every retriever returns, and the exact search that serves as ground truth.

A retriever maps query texts to ranked `Hit`s. Scores are always "higher is better" similarities users can read
(cosine in [-1, 1], a dot product, or a probability), never a backend's distance. A `Run` is the
`{query_id: {doc_id: score}}` dict that IR metric libraries consume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from qkrag.errors import fail

Space = Literal["cosine", "ip", "l2"]
SPACES: tuple[Space, ...] = ("cosine", "ip", "l2")
Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    text: str | None = None
    probability: float | None = None  # σ(q·k) when a projection scored the hit


class Retriever(Protocol):
    """Anything that ranks documents for query texts."""

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]: ...


def check_space(space: str) -> Space:
    if space not in SPACES:
        raise fail("space", f"{space!r} is not a distance space", f"use one of {SPACES}")
    return space  # type: ignore[return-value]


def similarity(queries: np.ndarray, documents: np.ndarray, space: Space) -> torch.Tensor:
    """Query-by-document similarity matrix, higher is better: cosine, dot product, or minus squared L2."""
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    d = torch.from_numpy(np.ascontiguousarray(documents, dtype=np.float32))
    if space == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        d = torch.nn.functional.normalize(d, dim=1)
    scores = q @ d.T
    if space == "l2":  # -(|q|² - 2 q·d + |d|²): same ranking as Chroma's squared L2
        scores = 2 * scores - (q * q).sum(1, keepdim=True) - (d * d).sum(1)[None, :]
    return scores


def exact_search(queries: np.ndarray, documents: np.ndarray, k: int, space: Space = "cosine",
                 batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k: (scores, positions), each (n_queries, min(k, n_docs)), best first.

    Exact and deterministic, so it is the ground truth for HNSW recall and the reference for every metric.
    Queries go in batches so memory stays at batch_size × n_docs floats.
    """
    check_space(space)
    if queries.ndim != 2 or documents.ndim != 2 or queries.shape[1] != documents.shape[1]:
        raise fail("exact_search", f"query vectors {queries.shape} and document vectors {documents.shape} do not match",
                   "embed queries and documents with the same encoder")
    k = min(k, documents.shape[0])
    all_scores, all_pos = [], []
    for start in range(0, queries.shape[0], batch_size):
        scores = similarity(queries[start : start + batch_size], documents, space)
        top = torch.topk(scores, k, dim=1)
        all_scores.append(top.values.numpy())
        all_pos.append(top.indices.numpy())
    if not all_scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(all_scores), np.concatenate(all_pos)


def to_run(query_ids: Sequence[str], hits: Sequence[Sequence[Hit]]) -> Run:
    """Hits per query -> `{query_id: {doc_id: score}}`."""
    return {qid: {h.id: float(h.score) for h in row} for qid, row in zip(query_ids, hits)}
