"""Baselines a learned projection has to beat: lexical BM25, and dense cosine with its cheap, training-free fixes.

- `BM25Retriever` (in `retrieval.bm25`, which owns the saved BM25 folder): BM25 through `bm25s` (sparse matrices, fast on CPU) with English stopwords and the Snowball stemmer
  (PyStemmer), which is what gets close to the BEIR paper's Elasticsearch numbers.
- `ExactDenseRetriever`: brute-force search over an encoder's vectors, optionally through a fitted transform.
- `CenteredCosine` and `Whitening`: sentence embeddings share a large common direction (anisotropy), so raw cosines
  crowd into a narrow band. Subtracting the corpus mean, and optionally whitening (BERT-whitening, Su et al. 2021),
  spreads them out. Both are fitted on document vectors only and applied to both sides, sklearn-style.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qkrag.data import Corpus
from qkrag.embed.encoders import EmbedOptions, Encoder, embed, make_encoder
from qkrag.errors import fail
from qkrag.ranking import Hit, Space, check_space
from qkrag.retrieval.exact import ExactIndex



# ---------------------------------------------------------------------------------------------------------- dense


class CenteredCosine:
    """Subtract the document mean, then L2-normalise: cosine around the corpus centre instead of the origin.

    `fit(document_vectors)`, then `transform(x)` for either side. Pure numpy; accepts anything `np.asarray` takes.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None

    def fit(self, documents: np.ndarray) -> CenteredCosine:
        x = self._as_matrix(documents, "fit")
        if x.shape[0] < 2:
            raise fail(f"{type(self).__name__}.fit", f"got {x.shape[0]} vector(s)",
                       "fit on the document vectors of a whole corpus (at least 2)")
        self.mean_ = x.mean(axis=0)
        return self

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        if self.mean_ is None:
            raise fail(type(self).__name__, "is not fitted", "call fit(document_vectors) first")
        x = self._as_matrix(vectors, "transform")
        if x.shape[1] != self.mean_.shape[0]:
            raise fail(f"{type(self).__name__}.transform", f"vectors of dimension {x.shape[1]}, fitted on "
                       f"{self.mean_.shape[0]}", "transform vectors from the encoder it was fitted on")
        return _normalize(self._project(x - self.mean_))

    def fit_transform(self, documents: np.ndarray) -> np.ndarray:
        return self.fit(documents).transform(documents)

    def _project(self, centred: np.ndarray) -> np.ndarray:
        return centred

    @staticmethod
    def _as_matrix(x, where: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise fail(where, f"expected a 2-D array of vectors, got shape {x.shape}", "pass (n, dimension) vectors")
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fitted={self.mean_ is not None})"


class Whitening(CenteredCosine):
    """Centre, then rotate and rescale so the document vectors have identity covariance, then L2-normalise
    (BERT-whitening: W = U Λ^-1/2 from the SVD of the covariance). `n_components` keeps only the top directions
    (a cheap dimensionality reduction that often helps); `eps` guards near-zero variances."""

    def __init__(self, n_components: int | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        self.n_components = n_components
        self.eps = eps
        self.components_: np.ndarray | None = None

    def fit(self, documents: np.ndarray) -> Whitening:
        super().fit(documents)
        x = self._as_matrix(documents, "fit") - self.mean_
        u, s, _ = np.linalg.svd(np.cov(x, rowvar=False))
        n = self.n_components or x.shape[1]
        if not 1 <= n <= x.shape[1]:
            raise fail("Whitening", f"n_components={n} for {x.shape[1]}-dimensional vectors",
                       f"use 1..{x.shape[1]} or None")
        self.components_ = u[:, :n] / np.sqrt(s[:n] + self.eps)
        return self

    def _project(self, centred: np.ndarray) -> np.ndarray:
        assert self.components_ is not None
        return centred @ self.components_


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class ExactDenseRetriever:
    """Brute-force dense search over `corpus`: the exact reference every approximate index is measured against.

    Documents are embedded once, on construction (through the embedding cache). With a `transform`
    (`CenteredCosine()`, `Whitening()`) it is fitted on the document vectors unless already fitted, and applied to
    both sides before searching.
    """

    def __init__(self, corpus: Corpus, encoder: Encoder | None = None, space: Space = "cosine",
                 transform: CenteredCosine | None = None, options: EmbedOptions | None = None):
        self.corpus = corpus
        self.encoder = encoder or make_encoder()
        self.space = check_space(space)
        self.options = options
        self.transform = transform
        vectors = embed(self.encoder, corpus.contents, "document", options, desc="embed documents")
        if transform is not None:
            if transform.mean_ is None:
                transform.fit(vectors)
            vectors = transform.transform(vectors)
        self.vectors = vectors
        # The search itself is ExactIndex's (documents normalised once for cosine, one matrix product per call).
        self.index = ExactIndex(corpus.ids, vectors, self.space, {d.id: d.content for d in corpus})

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        if isinstance(queries, str):
            raise fail("search", "got one string, not a list of queries", "pass [query]")
        q = embed(self.encoder, list(queries), "query", self.options, desc="embed queries")
        if self.transform is not None:
            q = self.transform.transform(q)
        return self.index.search_vectors(q, k)

    def __repr__(self) -> str:
        t = f", transform={type(self.transform).__name__}" if self.transform is not None else ""
        return f"ExactDenseRetriever({len(self.corpus)} docs, {self.encoder!r}, space={self.space!r}{t})"
