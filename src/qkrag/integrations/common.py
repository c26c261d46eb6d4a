"""What the LangChain and LlamaIndex integrations share: the two sides of an encoder (and projection), and qkrag hits
with a relevance score in [0, 1].

Sides: documents go through the encoder's document side, then K·v; queries through its query side, then s·Q·v, so a
plain dot product of a query vector and a document vector is qkrag's logit minus the bias b, and σ(dot + b) is the
probability of relevance. Without a projection the vectors are the encoder's own (compare them by cosine).

Relevance: a hit scored by a projection carries σ(s·q·k + b). A hybrid retriever's hits are ranked by the fused score,
which is no probability; when its dense arm is a projection, every hit still gets σ, computed for the documents only
BM25 found from their stored vectors. Raw cosine hits have no probability: they report None, never a made-up one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qkrag.errors import fail


class Sides:
    """An encoder (an `Encoder`, a model name, or None for the default) and an optional projection (fitted, or a
    saved folder), loaded on first use. `queries(texts)` · `documents(texts)`.T + bias = qkrag's logits."""

    def __init__(self, encoder: Any = None, projection: Any = None):
        self._encoder_arg, self._projection_arg = encoder, projection
        self._encoder: Any = None
        self._projection: Any = None

    def _load(self) -> None:
        if self._encoder is not None:
            return
        from qkrag.embed.encoders import Encoder, make_encoder
        from qkrag.projection.model import QKProjection

        encoder = self._encoder_arg if isinstance(self._encoder_arg, Encoder) else make_encoder(self._encoder_arg)
        projection = self._projection_arg
        if isinstance(projection, (str, os.PathLike)):
            projection = QKProjection.load(Path(projection))
        if projection is not None:
            projection.check_encoder(encoder.fingerprint, encoder.dimension, "projection")
        self._encoder, self._projection = encoder, projection

    @property
    def encoder(self) -> Any:
        self._load()
        return self._encoder

    @property
    def projection(self) -> Any:
        self._load()
        return self._projection

    @property
    def name(self) -> str:
        p = self.projection
        return self.encoder.fingerprint + (f"|qkrag:{p.variant}:rank{p.rank_}" if p is not None else "")

    def _embed(self, texts: Sequence[str], side: str) -> np.ndarray:
        from qkrag.embed.encoders import EmbedOptions, embed

        return embed(self.encoder, list(texts), side, EmbedOptions(progress=False))  # type: ignore[arg-type]

    def documents(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._embed(texts, "document")
        return vectors if self.projection is None else self.projection.transform_documents(vectors)

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._embed(texts, "query")
        p = self.projection
        return vectors if p is None else p.scale_ * p.transform_queries(vectors)

    def probability(self, dots: np.ndarray | float) -> np.ndarray:
        """σ(dot + b) for dot products of `queries` and `documents` vectors (the scale is already in the query)."""
        p = self.projection
        if p is None:
            raise fail("probability", "needs a projection; raw encoder vectors have no calibrated probability",
                       "pass projection= (a folder `qkrag train` wrote)")
        return 1.0 / (1.0 + np.exp(-(np.asarray(dots, dtype=np.float64) + p.bias_)))


@dataclass(frozen=True)
class Scored:
    """One hit for an integration: `score` is what qkrag ranked by (logit, cosine or fused score), `relevance` the
    probability σ(s·q·k + b) when a projection is involved, else None."""

    id: str
    text: str
    score: float
    relevance: float | None


def search(retriever: Any, query: str, k: int) -> list[Scored]:
    """qkrag's hits for one query, best first, each with its relevance (see the module docstring)."""
    if not isinstance(query, str) or not query.strip():
        raise fail("query", "is empty" if isinstance(query, str) else f"is {type(query).__name__}, not str",
                   "pass the question as a non-empty string")
    hits = retriever.search([query], k)[0]
    missing = [h.id for h in hits if h.probability is None]
    found = _hybrid_probabilities(retriever, query, missing) if missing else {}
    return [Scored(h.id, h.text or "", float(h.score),
                   float(h.probability) if h.probability is not None else found.get(h.id)) for h in hits]


def _hybrid_probabilities(retriever: Any, query: str, ids: list[str]) -> dict[str, float]:
    """σ for hybrid hits the projected dense arm did not return (BM25 found them), from their stored raw vectors."""
    from qkrag.retrieval.projected import ProjectedRetriever
    from qkrag.retrieval.index import ChromaIndex

    dense = getattr(retriever, "dense", None)
    if not isinstance(dense, ProjectedRetriever):
        return {}
    if isinstance(dense.raw, ChromaIndex):
        got = dense.raw.collection.get(ids=ids, include=["embeddings"])
        found_ids, vectors = list(got["ids"]), np.asarray(got["embeddings"], dtype=np.float32)
    else:
        row = {i: r for r, i in enumerate(dense.raw.ids)}
        found_ids = [i for i in ids if i in row]
        vectors = dense.raw.vectors[[row[i] for i in found_ids]]
    if not found_ids:
        return {}
    p = dense.projection
    query_vector = dense.query_vectors([query])
    probabilities = p.predict_proba_matrix(query_vector, vectors)[0]
    return dict(zip(found_ids, (float(x) for x in probabilities)))
