"""Baselines a learned projection has to beat: lexical BM25, and dense cosine with its cheap, training-free fixes.

- `BM25Retriever`: BM25 through `bm25s` (sparse matrices, fast on CPU) with English stopwords and the Snowball stemmer
  (PyStemmer), which is what gets close to the BEIR paper's Elasticsearch numbers.
- `ExactDenseRetriever`: brute-force search over an encoder's vectors, optionally through a fitted transform.
- `CenteredCosine` and `Whitening`: sentence embeddings share a large common direction (anisotropy), so raw cosines
  crowd into a narrow band. Subtracting the corpus mean, and optionally whitening (BERT-whitening, Su et al. 2021),
  spreads them out. Both are fitted on document vectors only and applied to both sides, sklearn-style.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from qkrag.atomic import atomic_folder, write_json
from qkrag.cache import content_hash
from qkrag.data import Corpus
from qkrag.embed.encoders import EmbedOptions, Encoder, embed, make_encoder
from qkrag.errors import IndexMismatchError, fail
from qkrag.retrieval.index import ExactIndex
from qkrag.retrieval.base import Hit, Space, check_space

BM25Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]


def _english_stemmer(stemmer: str | None):
    """PyStemmer's English Snowball stemmer; "auto" falls back to no stemming when PyStemmer is not installed."""
    if stemmer is None:
        return None
    try:
        import Stemmer
    except ImportError:
        if stemmer == "auto":
            return None
        raise fail(f"stemmer {stemmer!r}", "PyStemmer is not installed", "pip install PyStemmer, or pass stemmer=None")
    try:
        return Stemmer.Stemmer("english" if stemmer == "auto" else stemmer)
    except (KeyError, ValueError):
        raise fail(f"stemmer {stemmer!r}", "is not a Snowball algorithm",
                   f"use one of {sorted(Stemmer.algorithms())}") from None


class BM25Retriever:
    """BM25 over `corpus` (each document's `content`: title + text).

    Defaults are Lucene's (k1=1.2, b=0.75, Lucene's idf), the Elasticsearch setup behind the BEIR paper's BM25 column.
    Tokens: lowercased words of 2+ characters, English stopwords removed, Snowball-stemmed when PyStemmer is there
    (`stemmer="auto"`; `self.stemmed` says whether it was). The index is built on construction; `save(folder)` and
    `BM25Retriever.load(folder, corpus)` keep it on disk, checked against the corpus it was built on.
    """

    #: The file `save` writes beside bm25s's own files: what the index was built on, and how it tokenises.
    MANIFEST = "qkrag-bm25.json"

    def __init__(self, corpus: Corpus, k1: float = 1.2, b: float = 0.75, method: BM25Method = "lucene",
                 stopwords: str | list[str] | None = "en", stemmer: str | None = "auto", progress: bool = False):
        import bm25s

        self._configure(corpus, k1, b, method, stopwords, stemmer, progress)
        tokens = bm25s.tokenize(corpus.contents, stopwords=stopwords, stemmer=self._stemmer, show_progress=progress)
        self._bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        self._bm25.index(tokens, show_progress=progress)

    def _configure(self, corpus: Corpus, k1: float, b: float, method: BM25Method, stopwords: str | list[str] | None,
                   stemmer: str | None, progress: bool) -> None:
        """Check and store the settings; shared by building (`__init__`) and loading (`load`)."""
        if len(corpus) == 0:
            raise fail("BM25Retriever", "the corpus is empty", "index at least one document")
        if k1 < 0 or not 0 <= b <= 1:
            raise fail("BM25Retriever", f"k1={k1}, b={b} out of range", "use k1 >= 0 and 0 <= b <= 1")
        self.corpus = corpus
        self.k1, self.b, self.method = k1, b, method
        self.stopwords = stopwords
        self._stemmer = _english_stemmer(stemmer)
        self.stemmed = self._stemmer is not None
        # The algorithm actually used ("auto" resolved): what `save` records, so a load tokenises queries the same way.
        self.stemmer_name = ("english" if stemmer == "auto" else stemmer) if self.stemmed else None
        self.progress = progress

    # ------------------------------------------------------------------------------------------------ persistence
    def _manifest(self) -> dict:
        return {"format": 1, "documents": len(self.corpus), "corpus_hash": _corpus_hash(self.corpus),
                "settings": {"k1": self.k1, "b": self.b, "method": self.method, "stopwords": self.stopwords,
                             "stemmer": self.stemmer_name}}

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Save the index to `folder` (bm25s's own files plus `MANIFEST`), atomically: it is written in a temporary
        folder beside it, then renamed into place, so a killed save never leaves a half-written index."""
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            self._bm25.save(str(tmp), show_progress=False)
            write_json(tmp / self.MANIFEST, self._manifest())
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], corpus: Corpus) -> BM25Retriever:
        """Load an index `save`d in `folder` for `corpus`, the same documents (ids and contents, in the same order)
        it was built on. Raises IndexMismatchError when they differ: its hits would name the wrong documents."""
        import bm25s

        folder = Path(folder)
        manifest = _read_manifest(folder / cls.MANIFEST)
        if manifest["corpus_hash"] != _corpus_hash(corpus):
            raise fail(str(folder), f"holds a BM25 index of other documents ({manifest['documents']} documents when "
                       f"it was built, {len(corpus)} now, and their ids or texts differ)",
                       "rebuild it: `qkrag index DATA --hybrid`, or qkrag.retrieval.hybrid.open_bm25(corpus, folder)",
                       exc=IndexMismatchError)
        settings = manifest["settings"]
        retriever = cls.__new__(cls)
        retriever._configure(corpus, settings["k1"], settings["b"], settings["method"], settings["stopwords"],
                             settings["stemmer"], progress=False)
        retriever._bm25 = bm25s.BM25.load(str(folder), show_progress=False)
        return retriever

    def _tokens(self, queries: Sequence[str]) -> list[list[str]]:
        import bm25s

        words = bm25s.tokenize(list(queries), stopwords=self.stopwords, stemmer=self._stemmer, return_ids=False,
                               show_progress=False)
        vocab = self._bm25.vocab_dict
        return [[w for w in row if w in vocab] for row in words]

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top `k` documents per query, best first. Only documents sharing a term with the query are returned
        (a score of 0 says nothing), so a query of stopwords or unknown words gets no hits."""
        if isinstance(queries, str):
            raise fail("search", "got one string, not a list of queries", "pass [query]")
        if k < 1:
            raise fail("search", f"k={k}", "ask for at least one hit")
        tokens = self._tokens(queries)
        out: list[list[Hit]] = [[] for _ in queries]
        todo = [i for i, t in enumerate(tokens) if t]
        if not todo:
            return out
        k = min(k, len(self.corpus))
        positions, scores = self._bm25.retrieve([tokens[i] for i in todo], k=k, show_progress=self.progress,
                                                n_threads=0)
        docs = self.corpus.documents
        for i, prow, srow in zip(todo, positions, scores):
            out[i] = [Hit(docs[p].id, float(s), docs[p].content) for p, s in zip(prow, srow) if s > 0]
        return out

    def __repr__(self) -> str:
        return (f"BM25Retriever({len(self.corpus)} docs, k1={self.k1}, b={self.b}, method={self.method!r}, "
                f"stemmed={self.stemmed})")


def _corpus_hash(corpus: Corpus) -> str:
    """What a saved index was built on: every id and content, in order (BM25 positions follow the corpus order)."""
    return content_hash(corpus.ids, corpus.contents)


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        raise fail(str(path.parent), f"holds no saved BM25 index (no {path.name})",
                   "save one with BM25Retriever.save, or build it with `qkrag index DATA --hybrid`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != 1 or not {"corpus_hash", "documents", "settings"} <= set(manifest):
            raise ValueError("unknown format")
    except (ValueError, AttributeError) as err:
        raise fail(str(path), f"is not a qkrag BM25 manifest ({err})", "delete the folder and save the index again"
                   ) from None
    return manifest


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
