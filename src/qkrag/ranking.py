"""The ranking vocabulary every stage speaks: what a retriever returns, and the exact search that serves as ground
truth. It sits below the stages, so pair mining, training and evaluation rank without importing a retriever.

A retriever maps query texts to ranked `Hit`s. Scores are always "higher is better" similarities users can read
(cosine in [-1, 1], a dot product, or a probability), never a backend's distance. A `Run` is the
`{query_id: {doc_id: score}}` dict that IR metric libraries consume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

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


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (an all-zero row stays zero), as float32: cosine as a dot product."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def similarity(queries: np.ndarray, documents: np.ndarray, space: Space) -> np.ndarray:
    """Query-by-document similarity matrix, higher is better: cosine, dot product, or minus squared L2. numpy, not
    torch: metrics and search must not pay torch's import for one matrix product."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    d = np.ascontiguousarray(documents, dtype=np.float32)
    if space == "cosine":
        q, d = unit_rows(q), unit_rows(d)
    scores = q @ d.T
    if space == "l2":  # -(|q|² - 2 q·d + |d|²): same ranking as Chroma's squared L2
        scores = 2 * scores - (q * q).sum(1, keepdims=True) - (d * d).sum(1)[None, :]
    return scores


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, positions) of each row's k best, best first; ties go to the lower position, so results are stable."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    values = np.take_along_axis(scores, part, 1)
    order = np.lexsort((part, -values), axis=1)
    positions = np.take_along_axis(part, order, 1).astype(np.int64)
    return np.take_along_axis(scores, positions, 1), positions


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
        scores, positions = top_k(similarity(queries[start : start + batch_size], documents, space), k)
        all_scores.append(scores)
        all_pos.append(positions)
    if not all_scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(all_scores), np.concatenate(all_pos)


def to_run(query_ids: Sequence[str], hits: Sequence[Sequence[Hit]]) -> Run:
    """Hits per query -> `{query_id: {doc_id: score}}`."""
    return {qid: {h.id: float(h.score) for h in row} for qid, row in zip(query_ids, hits)}
