"""Building the retriever a command, the bench or the web page measures, in one place.

    index   = dense_index(kind, corpus, encoder, config)      exact vectors in memory, or a Chroma collection
    search  = make_retriever(encoder, index, projection=..., lexical=..., fusion=...)

`make_retriever` composes: raw cosine (`DenseRetriever`), or σ(q·k) through a projection (`ProjectedRetriever`), and,
given a lexical arm, either of them fused with it (`HybridRetriever`). `retriever_for_folder` is what `qkrag eval` asks
for by name (exact, chroma, bm25, hybrid), with the hybrid fusion chosen as `qkrag index --hybrid` chooses it
(`hybrid.fusion_choice`: the folder's train split, never the evaluated one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkrag.errors import fail

if TYPE_CHECKING:
    import numpy as np

    from qkrag.data import Corpus
    from qkrag.embed.encoders import Encoder
    from qkrag.projection.model import Projection
    from qkrag.ranking import Retriever
    from qkrag.retrieval.hybrid import FusionConfig
    from qkrag.retrieval.connection import IndexConfig

KINDS = ("exact", "chroma", "bm25", "hybrid")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise fail(f"--retriever {kind!r}", "is not a retriever", f"use one of {', '.join(KINDS)}")
    return kind


def dense_index(kind: str, corpus: Corpus, encoder: Encoder, config: IndexConfig | None = None) -> Any:
    """The raw vectors to search: a Chroma collection built or checked for `corpus` (kind "chroma"; never rewritten),
    else the corpus embedded (cached) into an exact index in memory."""
    from qkrag.retrieval.build import index_for_evaluation
    from qkrag.retrieval.exact import ExactIndex

    if kind == "chroma":
        if config is None:
            raise fail("dense_index", "kind 'chroma' needs an IndexConfig", "pass config=IndexConfig(...)")
        return index_for_evaluation(corpus, encoder, config)
    from qkrag.embed.encoders import embed

    vectors = embed(encoder, corpus.contents, "document", desc="embed documents")
    return ExactIndex(corpus.ids, vectors, "cosine", fingerprint=encoder.fingerprint)


def load_projection(projection: Projection | str | os.PathLike[str], encoder: Encoder) -> Projection:
    """A fitted projection, or the one saved in a folder, checked against `encoder`."""
    from qkrag.projection.model import Projection, QKProjection

    from qkrag.atomic import require_whole

    if isinstance(projection, Projection):
        projection.check_encoder(encoder.fingerprint, encoder.dimension)
        return projection
    return QKProjection.load(require_whole(projection, "projection"), encoder)


def make_retriever(encoder: Encoder, index: Any, *, projection: Projection | str | os.PathLike[str] | None = None,
                   lexical: Retriever | None = None, fusion: FusionConfig | None = None,
                   write: bool = True) -> Retriever:
    """Raw cosine over `index`, or σ(q·k) through `projection`; fused with `lexical` (e.g. BM25) when given, by
    `fusion`, else by the rule recorded with the collection (`hybrid.served_fusion`). With `write` false a Chroma
    index is only read (see `ProjectedRetriever`): what a search does."""
    from qkrag.retrieval.dense import DenseRetriever

    if projection is not None:
        from qkrag.retrieval.projected import ProjectedRetriever

        dense: Retriever = ProjectedRetriever(encoder, load_projection(projection, encoder), index, write=write)
    else:
        dense = DenseRetriever(encoder, index)
    if lexical is None:
        return dense
    from qkrag.retrieval.hybrid import HybridRetriever

    return HybridRetriever(dense, lexical, fusion)


def retriever_for_folder(kind: str, corpus: Corpus, encoder: Encoder | None, *, data: str | os.PathLike[str],
                         split: str = "test", projection: Projection | str | os.PathLike[str] | None = None,
                         index: Any = None, config: IndexConfig | None = None, fusion: str = "auto",
                         fusion_weight: float | None = None) -> tuple[Retriever, dict[str, str]]:
    """The retriever `qkrag eval` measures on `split` of BEIR folder `data`, and facts to report about it (the fusion
    and where it was chosen). `index` reuses raw vectors already built; else they are built for `kind`."""
    from qkrag.retrieval.bm25 import BM25Retriever

    check_kind(kind)
    if kind != "hybrid" and (fusion != "auto" or fusion_weight is not None):
        raise fail("--fusion/--fusion-weight", "only apply to the hybrid retriever", "add --retriever hybrid")
    if kind == "bm25":
        if projection is not None:
            raise fail("--projection", "BM25 has no embeddings to project", "use --retriever exact or chroma")
        return BM25Retriever(corpus), {}
    if encoder is None:
        raise fail("retriever_for_folder", f"retriever {kind!r} needs an encoder", "pass encoder=make_encoder()")
    index = index if index is not None else dense_index(kind, corpus, encoder, config)
    dense = make_retriever(encoder, index, projection=projection)
    if kind != "hybrid":
        return dense, {}
    from qkrag.retrieval.hybrid import HybridRetriever, fusion_choice, fusion_from_options

    lexical = BM25Retriever(corpus)
    chosen = fusion_choice(dense, lexical, Path(data), split, fusion_from_options(fusion, fusion_weight),
                           corpus=corpus)
    return HybridRetriever(dense, lexical, chosen.config), {"fusion": chosen.config.label(),
                                                             "fusion_chosen_on": chosen.origin()}


def default_teacher(corpus: Any, encoder: Any, documents: np.ndarray | None = None) -> Any:
    """The offline teacher: exact cosine over `corpus` (its `documents` vectors when given, else embedded through
    the cache) fused with BM25 by reciprocal rank fusion, which needs no weight chosen on data."""
    from qkrag.embed.encoders import embed
    from qkrag.retrieval.bm25 import BM25Retriever
    from qkrag.retrieval.hybrid import HybridRetriever
    from qkrag.retrieval.dense import DenseRetriever
    from qkrag.retrieval.exact import ExactIndex

    vectors = documents if documents is not None else embed(encoder, corpus.contents, "document")
    dense = DenseRetriever(encoder, ExactIndex(corpus.ids, vectors, "cosine", fingerprint=encoder.fingerprint))
    return HybridRetriever(dense, BM25Retriever(corpus))
