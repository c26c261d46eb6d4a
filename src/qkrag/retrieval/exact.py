"""The exact in-memory index: vectors searched by brute force, behind the same `query` shape as `ChromaIndex`.

It is the ground truth an approximate (HNSW) search is measured against: `recall_at_k` compares the two top-k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from qkrag.cache import check_embeddings
from qkrag.ranking import Hit, Space, check_space, exact_search, unit_rows

if TYPE_CHECKING:
    from qkrag.retrieval.store import ChromaIndex


@dataclass
class ExactIndex:
    """Vectors in memory, searched by brute force: the ground truth for HNSW recall, and the index of corpora that fit
    in memory (a search costs one matrix product over every vector)."""

    ids: Sequence[str]
    vectors: np.ndarray
    space: Space = "cosine"
    texts: Mapping[str, str] | None = None
    fingerprint: str | None = None  # the encoder that made the vectors, when known
    _ids: np.ndarray = field(init=False, repr=False)
    _searched: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_space(self.space)
        self.vectors = np.ascontiguousarray(check_embeddings(
            "ExactIndex", self.vectors, len(self.ids), fix="pass one finite, non-zero vector per id",
            nonzero=self.space == "cosine"))
        self._ids = np.asarray(list(self.ids), dtype=object)
        # Cosine = dot product of unit vectors: normalize the documents once here, not on every query (exact_search
        # would re-normalize the whole matrix on every call).
        self._searched = unit_rows(self.vectors) if self.space == "cosine" else self.vectors

    @classmethod
    def from_chroma(cls, index: ChromaIndex) -> ExactIndex:
        ids, vectors = index.require_complete().get_vectors()
        return cls(ids, vectors, index.space, fingerprint=index.fingerprint)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def count(self) -> int:
        return len(self._ids)

    def query(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.space == "cosine":
            scores, positions = exact_search(unit_rows(vectors), self._searched, k, "ip")
        else:
            scores, positions = exact_search(vectors, self._searched, k, self.space)
        return scores, self._ids[positions]

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        scores, ids = self.query(vectors, k)
        texts = self.texts or {}
        return [[Hit(str(i), float(s), texts.get(i)) for s, i in zip(srow, irow)] for srow, irow in zip(scores, ids)]


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact top-k that the approximate top-k found (HNSW recall@k)."""
    if len(exact_ids) == 0:
        return 1.0
    found = [len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(approx_ids.tolist(), exact_ids.tolist())]
    return float(np.mean(found))


__all__ = ["ExactIndex", "recall_at_k"]
