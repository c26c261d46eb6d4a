"""Serving a projection: a retriever that ranks by σ(s·q·k + b), over a projected Chroma collection, an exact index in
memory, or as a reranker of raw cosine hits; and `derived_collection`, the one way a collection derived from a raw
one (projected, centred, whitened) is filled."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from qkrag.errors import IndexMismatchError, fail
from qkrag.projection.data import check_vectors

if TYPE_CHECKING:
    from qkrag.embed.encoders import EmbedOptions, Encoder
    from qkrag.projection.model import Projection
    from qkrag.ranking import Space


class ProjectedRetriever:
    """Search with a projection: a `Retriever` whose hits carry `probability` = σ(s·q·k + b) and score = the logit.

    mode="full": documents live projected (k = K·v) in an inner-product index: for a `ChromaIndex`, a sibling
    collection in `ip` space filled from the vectors already stored in the raw collection (never re-embedded, built
    once and reused while the projection is the same); for an `ExactIndex` or `(ids, vectors)`, in memory. Queries go
    through Q. mode="rerank": the raw index's top `depth` by cosine, rescored by the projection (no second index; a
    trained projection then only reorders what raw search found; on Chroma, each search fetches its candidates' stored
    vectors, so nothing is held per document).
    """

    def __init__(self, encoder: Encoder, projection: Projection, index: Any, mode: str = "full", *,
                 depth: int = 100, options: EmbedOptions | None = None, write: bool = True):
        from qkrag.retrieval.exact import ExactIndex
        from qkrag.retrieval.store import ChromaIndex

        if mode not in ("full", "rerank"):
            raise fail("mode", f"{mode!r} is not a serving mode", "use 'full' or 'rerank'")
        projection.check_encoder(encoder.fingerprint, encoder.dimension, "projection")
        if isinstance(index, tuple):
            ids, vectors = index
            index = ExactIndex(list(ids), check_vectors("index vectors", vectors), "cosine", fingerprint=encoder.fingerprint)
        fingerprint = getattr(index, "fingerprint", None)
        if fingerprint and fingerprint != encoder.fingerprint:
            raise fail(repr(index), f"holds vectors of {fingerprint!r}, not of {encoder.fingerprint!r}",
                       "serve with the encoder that built the index", IndexMismatchError)
        self.encoder, self.projection, self.raw, self.mode, self.depth = encoder, projection, index, mode, depth
        self.options = options
        self._row: dict[str, int] = {}
        self._keys: np.ndarray | None = None  # K·v of every document, for rerank mode over an in-memory index
        if mode == "full":
            self.index = (self._projected_collection(index, write) if isinstance(index, ChromaIndex)
                          else self._projected_exact(index))
        elif not isinstance(index, ChromaIndex):  # in memory already: project every document once
            self._row = {i: r for r, i in enumerate(index.ids)}
            self._keys = projection.transform_documents(index.vectors)

    def projection_id(self) -> str:
        """A short hash of the maps (Q, K, variant): names the projected collection, so a new projection never reuses
        a stale one. Not `light.weights_hash`, which also covers (s, b): recalibrating σ leaves the stored keys valid."""
        p = self.projection
        h = hashlib.sha256(p.Q_.tobytes() + p.K_.tobytes() + p.variant.encode()).hexdigest()
        return h[:12]

    def _projected_exact(self, index: Any) -> Any:
        from qkrag.retrieval.exact import ExactIndex

        return ExactIndex(list(index.ids), self.projection.transform_documents(index.vectors), "ip", index.texts,
                          f"{self.encoder.fingerprint}|projection:{self.projection_id()}")

    def _projected_collection(self, raw: Any, write: bool = True) -> Any:
        """The projected sibling collection of `raw` (a complete collection only), built when missing or stale. With
        `write` false nothing is written: a current sibling (`qkrag index --projection` built it) is used, else the
        stored vectors are projected into memory, a page at a time."""
        raw.require_complete()
        fingerprint = f"{self.encoder.fingerprint}|projection:{self.projection_id()}"
        name = f"{raw.name}-proj-{self.projection_id()}"
        if not write:
            found = raw.find_sibling(name, fingerprint)
            return found if found is not None and found.is_current(raw.source_hash) else self._projected_in_memory(raw)
        return derived_collection(raw, name, fingerprint, self.projection.rank_, "ip",
                                  self.projection.transform_documents)

    def _projected_in_memory(self, raw: Any) -> Any:
        from qkrag.retrieval.exact import ExactIndex

        ids: list[str] = []
        keys: list[np.ndarray] = []
        texts: dict[str, str] = {}
        for page_ids, vectors, page_texts in raw.iter_vectors(texts=True):
            ids += page_ids
            keys.append(self.projection.transform_documents(vectors))
            texts.update(zip(page_ids, (t or "" for t in page_texts)))
        return ExactIndex(ids, np.concatenate(keys), "ip", texts,
                          f"{self.encoder.fingerprint}|projection:{self.projection_id()}")

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        from qkrag.embed.encoders import EmbedOptions, embed

        options = self.options or EmbedOptions(progress=len(queries) > 1000)
        return embed(self.encoder, list(queries), "query", options)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Any]]:
        """Hits for raw query vectors (skips embedding): what `search` does after the encoder."""
        from qkrag.ranking import Hit

        p = self.projection
        if self.mode == "full":
            hits = self.index.search_vectors(p.transform_queries(vectors), k)
            return [[Hit(h.id, float(p.scale_ * h.score + p.bias_), h.text, float(p.probability(h.score)))
                     for h in row] for row in hits]
        candidates = self.raw.search_vectors(vectors, max(k, self.depth))
        row_of, keys = self._candidate_keys(candidates)
        q = p.transform_queries(vectors)
        out = []
        for qi, row in enumerate(candidates):
            dots = keys[[row_of[h.id] for h in row]] @ q[qi]
            order = np.argsort(-dots, kind="stable")[:k]
            out.append([Hit(row[j].id, float(p.scale_ * dots[j] + p.bias_), row[j].text,
                            float(p.probability(dots[j]))) for j in order])
        return out

    def _candidate_keys(self, candidates: list[list[Any]]) -> tuple[dict[str, int], np.ndarray]:
        """({id: row}, K·v rows) covering the candidates. A Chroma collection's stored vectors are fetched for these
        candidates only, so rerank mode needs neither memory for the whole collection nor a full read to start."""
        if self._keys is not None:
            return self._row, self._keys
        wanted = list(dict.fromkeys(h.id for row in candidates for h in row))
        vectors = self.raw.vectors_for(wanted)
        return {i: r for r, i in enumerate(wanted)}, self.projection.transform_documents(vectors)

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Any]]:
        if not queries:
            return []
        return self.search_vectors(self.query_vectors(queries), k)


def derived_collection(raw: Any, name: str, fingerprint: str, dimension: int, space: Space,
                       transform: Callable[[np.ndarray], np.ndarray],
                       pages: Iterable[tuple[Sequence[str], np.ndarray, Sequence[str | None] | None]] | None = None
                       ) -> Any:
    """The sibling collection `name` of the Chroma collection `raw` that holds `transform` of its vectors (a
    projection's K·v, a centred or whitened cosine): reused while it is complete and derived from `raw`'s current
    content, else filled anew under the writer lock. Its vectors come from `pages` of (ids, vectors, texts), by
    default the vectors `raw` stores, read a page at a time (memory bounded by one page, never the corpus)."""
    source = raw.source_hash
    derived = raw.sibling(name, fingerprint, dimension, space, source_hash=source)
    if derived.is_current(source):  # keyed by the content it was derived from, not by a count
        return derived
    with derived.writing():
        derived.mark_complete(False)
        for ids, vectors, texts in (raw.iter_vectors(texts=True) if pages is None else pages):
            derived.add_vectors(ids, transform(vectors), None if texts is None else [t or "" for t in texts])
        derived.mark_complete(True)
    return derived
