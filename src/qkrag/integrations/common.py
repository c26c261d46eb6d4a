"""What the LangChain, LlamaIndex and Chroma integrations share: the two sides of an encoder (and projection), the
vectors a vector store ranks exactly by qkrag's logit, and qkrag hits with a relevance score in [0, 1].

Sides: documents go through the encoder's document side, then K·v; queries through its query side, then s·Q·v, so a
plain dot product of a query vector and a document vector is qkrag's logit minus the bias b, and σ(dot + b) is the
probability of relevance (`Projection.probability`, the one σ of qkrag). Without a projection the vectors are the
encoder's own (compare them by cosine).

Augmented vectors (the default of the LangChain and LlamaIndex embeddings; Bachrach et al. 2014, with Neyshabur and
Srebro's symmetric padding): a vector store ranks by cosine, L2 or inner product, and only the inner product of the
two sides is qkrag's ranking. So each side gets two more coordinates:

    document  [K·v,   √(M² − |K·v|²),  0]          every document has norm M
    query     [s·Q·v, 0,  √(R² − |s·Q·v|²)]        every query has norm R

The dot product is unchanged (s·q·k), and with every norm fixed, cosine = dot / (R·M) and squared L2 = R² + M² −
2·dot: all three metrics order documents by s·q·k, and each store's score maps back to the dot (and σ) without
knowing the query. M and R are bounds fixed by the projection and the encoder: the spectral norm of K (of s·Q) times
the largest norm of the encoder's vectors (1 for an encoder that normalises, else `max_norm`), with a small margin,
rounded up to three significant digits so that the same projection gives the same bounds on every machine. A vector
beyond its bound raises: a store would rank it wrongly, never silently.

Relevance: a hit scored by a projection carries σ(s·q·k + b). A hybrid retriever's hits are ranked by the fused score,
which is no probability; when its dense arm is a projection, every hit still gets σ, computed for the documents only
BM25 found from their stored vectors. Raw cosine hits have no probability: they report None, never a made-up one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qkrag.errors import fail

# What a store's score is, for `Sides.dot_from_score`: Chroma's distances in its three spaces (langchain-chroma
# returns them), and a cosine similarity (LangChain's InMemoryVectorStore, LlamaIndex's default vector store).
SPACES = ("cosine", "l2", "ip")
SCORES = (*SPACES, "cosine_similarity")
MARGIN = 1e-3  # relative slack on top of the bounds: float rounding of unit vectors and of the spectral norm


@dataclass(frozen=True)
class Bounds:
    """The fixed norms of augmented vectors: R for queries (s·Q·v), M for documents (K·v)."""

    query: float
    document: float


def round_up(x: float) -> float:
    """`x` rounded up to three significant digits (a bound that does not move with the last bits of an SVD)."""
    if x <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(x)) - 2)
    return float(f"{math.ceil(x / step) * step:.3g}")


def encoder_norm_bound(encoder: Any, max_norm: float | None) -> float:
    """The largest norm the encoder's vectors can have: `max_norm` when given, 1 for a sentence-transformers model
    whose last module normalises (all-MiniLM-L6-v2 does) or an encoder asked to normalise; else it raises."""
    from qkrag.embed.encoders import SentenceTransformerEncoder

    if max_norm is not None:
        if not max_norm > 0:
            raise fail(f"max_norm={max_norm!r}", "must be a positive bound on the encoder's vector norms",
                       "pass the largest norm the encoder's vectors can have (1.0 for normalised vectors)")
        return float(max_norm)
    if isinstance(encoder, SentenceTransformerEncoder) and (
            encoder.normalize or type(list(encoder.model)[-1]).__name__ == "Normalize"):
        return 1.0
    raise fail(f"encoder {encoder.fingerprint}", "does not normalise its vectors, so qkrag cannot bound |K·v| for "
               "the augmented vectors a vector store ranks by", "pass max_norm= (the largest norm its vectors can "
               "have; the same value wherever vectors of one store are made), or augment=False with an "
               "inner-product store")


def norm_bounds(projection: Any, encoder: Any, max_norm: float | None = None) -> Bounds:
    """R and M for `projection` over `encoder` (see the module docstring)."""
    nu = encoder_norm_bound(encoder, max_norm) * (1.0 + MARGIN)
    if not projection.scale_ > 0:
        raise fail(f"projection scale {projection.scale_}", "is not positive, so a larger dot product is not a "
                   "higher logit and no vector store can rank by it", "retrain or recalibrate the projection")
    query = projection.scale_ * float(np.linalg.norm(projection.Q_.astype(np.float64), 2))
    document = float(np.linalg.norm(projection.K_.astype(np.float64), 2))
    return Bounds(round_up(query * nu), round_up(document * nu))


def pad(vectors: np.ndarray, bound: float, side: str) -> np.ndarray:
    """`vectors` with two coordinates that bring every row to norm `bound`: [v, √(bound² − |v|²), 0] for documents,
    [v, 0, √(bound² − |v|²)] for queries. A row beyond the bound raises."""
    v = np.asarray(vectors, dtype=np.float32)
    squared = np.einsum("ij,ij->i", v.astype(np.float64), v.astype(np.float64))
    over = np.flatnonzero(squared > bound * bound)
    if over.size:
        worst = float(np.sqrt(squared.max()))
        raise fail(f"{over.size} {side} vector(s) (largest norm {worst:.4g})", f"exceed the bound {bound:.4g} that "
                   "every augmented vector of a store shares, so a cosine or L2 store would rank them wrongly",
                   "pass max_norm= at least the largest norm of the encoder's vectors (the same value for every "
                   "vector of the store; rebuild it), or augment=False with an inner-product store")
    extra = np.sqrt(np.maximum(bound * bound - squared, 0.0)).astype(np.float32)[:, None]
    zero = np.zeros_like(extra)
    return np.hstack([v, extra, zero] if side == "document" else [v, zero, extra])


class Sides:
    """An encoder (an `Encoder`, a model name, or None for the default) and an optional projection (fitted, or a
    saved folder), loaded on first use. `queries(texts)` · `documents(texts)`.T + bias = qkrag's logits.

    `augment`: with a projection, pad both sides to fixed norms (module docstring), so a cosine, L2 or inner-product
    store ranks by the logit; `max_norm` bounds the encoder's vector norms when it does not normalise them."""

    def __init__(self, encoder: Any = None, projection: Any = None, *, augment: bool = False,
                 max_norm: float | None = None):
        self._encoder_arg, self._projection_arg = encoder, projection
        self.augment, self.max_norm = bool(augment), max_norm
        self._encoder: Any = None
        self._projection: Any = None
        self._bounds: Bounds | None = None

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
        bounds = norm_bounds(projection, encoder, self.max_norm) if projection is not None and self.augment else None
        self._encoder, self._projection, self._bounds = encoder, projection, bounds

    @property
    def encoder(self) -> Any:
        self._load()
        return self._encoder

    @property
    def projection(self) -> Any:
        self._load()
        return self._projection

    @property
    def bounds(self) -> Bounds | None:
        """R and M of the augmented vectors, or None when the vectors are not augmented."""
        self._load()
        return self._bounds

    @property
    def name(self) -> str:
        p = self.projection
        if p is None:
            return self.encoder.fingerprint
        b = self.bounds
        return self.encoder.fingerprint + f"|qkrag:{p.variant}:rank{p.rank_}" + (
            f"|augmented:R{b.query:g}:M{b.document:g}" if b is not None else "")

    def _embed(self, texts: Sequence[str], side: str) -> np.ndarray:
        from qkrag.embed.encoders import EmbedOptions, embed

        return embed(self.encoder, list(texts), side, EmbedOptions(progress=False))  # type: ignore[arg-type]

    def documents(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._embed(texts, "document")
        p, b = self.projection, self.bounds
        if p is None:
            return vectors
        keys = p.transform_documents(vectors)
        return keys if b is None else pad(keys, b.document, "document")

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._embed(texts, "query")
        p, b = self.projection, self.bounds
        if p is None:
            return vectors
        queries = p.scale_ * p.transform_queries(vectors)
        return queries if b is None else pad(queries, b.query, "query")

    def _require_projection(self, what: str) -> Any:
        p = self.projection
        if p is None:
            raise fail(what, "needs a projection; raw encoder vectors have no calibrated probability",
                       "pass projection= (a folder `qkrag train` wrote)")
        return p

    def probability(self, dots: np.ndarray | float) -> np.ndarray:
        """σ(dot + b) for dot products of `queries` and `documents` vectors (the scale is already in the query)."""
        p = self._require_projection("probability")
        return p.probability(np.asarray(dots, dtype=np.float64) / p.scale_)

    def dot_from_score(self, scores: np.ndarray | float, kind: str) -> np.ndarray:
        """The dot product (s·q·k) behind a store's score of these vectors. `kind`: "cosine", "l2" or "ip" for a
        Chroma distance in that space, "cosine_similarity" for a cosine similarity."""
        if kind not in SCORES:
            raise fail(f"space {kind!r}", "is not a score qkrag can map back to its logit",
                       f"use one of {', '.join(SCORES)}")
        x = np.asarray(scores, dtype=np.float64)
        if kind == "ip":
            return 1.0 - x
        b = self.bounds
        if b is None:
            raise fail(f"space {kind!r}", "does not order raw projected vectors by the logit (their norms vary)",
                       "use augmented vectors (augment=True, the default) or an inner-product ('ip') store")
        if kind == "cosine":
            return (1.0 - x) * b.query * b.document
        if kind == "l2":
            return (b.query ** 2 + b.document ** 2 - x) / 2.0
        return x * b.query * b.document

    def relevance(self, scores: np.ndarray | float, kind: str) -> np.ndarray:
        """σ(s·q·k + b) from a store's scores of these vectors (`kind` as in `dot_from_score`)."""
        self._require_projection("relevance")
        return self.probability(self.dot_from_score(scores, kind))


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
    from qkrag.retrieval.store import ChromaIndex

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
