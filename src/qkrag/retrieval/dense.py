"""Dense retrieval: query texts embedded by an encoder, searched in a Chroma or exact index, returned as `Hit`s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qkrag.errors import IndexMismatchError, fail
from qkrag.ranking import Hit

if TYPE_CHECKING:
    from qkrag.retrieval.exact import ExactIndex
    from qkrag.retrieval.store import ChromaIndex


class DenseRetriever:
    """`Retriever` over an index: embeds query texts with `encoder` and returns the index's top-k as `Hit`s.

    Hits carry text from `texts` when given, else from the index (Chroma stores each document's text)."""

    def __init__(self, encoder: Any, index: ChromaIndex | ExactIndex, texts: Mapping[str, str] | None = None,
                 options: Any = None):
        fingerprint = getattr(index, "fingerprint", None)
        if fingerprint is not None and fingerprint != encoder.fingerprint:
            raise fail(repr(index), f"was built with encoder {fingerprint!r}, not {encoder.fingerprint!r}",
                       "search it with the encoder that built it, or rebuild the index with this one",
                       exc=IndexMismatchError)
        self.encoder = encoder
        self.index = index
        self.texts = texts
        self.options = options

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        from qkrag.embed.encoders import EmbedOptions, embed

        if not queries:
            return []
        options = self.options or EmbedOptions(progress=len(queries) > 1000)
        vectors = embed(self.encoder, list(queries), "query", options)
        hits = self.index.search_vectors(vectors, k)
        if self.texts is not None:
            hits = [[Hit(h.id, h.score, self.texts.get(h.id), h.probability) for h in row] for row in hits]
        return hits


__all__ = ["DenseRetriever"]
