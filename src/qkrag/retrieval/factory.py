"""Building the retriever a command, the bench or the web page measures, in one place.

    index   = dense_index(kind, corpus, encoder, config)      exact vectors in memory, or a Chroma collection
    search  = make_retriever(encoder, index, projection=..., lexical=..., fusion=...)

`make_retriever` composes: raw cosine (`DenseRetriever`), or σ(q·k) through a projection (`ProjectedRetriever`), and,
given a lexical arm, either of them fused with it (`HybridRetriever`). `retriever_for_folder` is what `qkrag eval` asks
for by name: a row of `RETRIEVERS` (exact, chroma, bm25, hybrid), with the hybrid fusion chosen as `qkrag index
--hybrid` chooses it (`hybrid.fusion_choice`: the folder's train split, never the evaluated one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FolderRequest:
    """What a named retriever is built from (`retriever_for_folder`): the corpus, the encoder (None for a kind that
    embeds nothing), the BEIR folder and the split evaluated (a fusion is chosen on another split of it), a
    projection, raw vectors already built (else built for the kind) with their Chroma settings, and the fusion
    options."""

    kind: str
    corpus: Corpus
    encoder: Encoder | None
    data: Path
    split: str = "test"
    projection: Projection | str | os.PathLike[str] | None = None
    index: Any = None
    config: IndexConfig | None = None
    fusion: str = "auto"
    fusion_weight: float | None = None

    def dense(self) -> Retriever:
        """Raw cosine over the request's vectors (built for its kind when none were given), or σ(q·k) through its
        projection."""
        if self.encoder is None:
            raise fail("retriever_for_folder", f"retriever {self.kind!r} needs an encoder",
                       "pass encoder=make_encoder()")
        index = self.index if self.index is not None else dense_index(self.kind, self.corpus, self.encoder,
                                                                      self.config)
        return make_retriever(self.encoder, index, projection=self.projection)


@dataclass(frozen=True)
class RetrieverKind:
    """One row of `RETRIEVERS`: how to build the retriever from a `FolderRequest` (it returns the retriever and text
    facts to report about it), what it is in one line, and two traits. `cosine`: raw cosine over its index, so
    `--baseline cosine` and bench's cosine row stand for it; `fuses`: it takes --fusion and --fusion-weight."""

    build: Callable[[FolderRequest], tuple[Retriever, dict[str, str]]]
    description: str
    cosine: bool = False
    fuses: bool = False


def _dense(request: FolderRequest) -> tuple[Retriever, dict[str, str]]:
    return request.dense(), {}


def _bm25(request: FolderRequest) -> tuple[Retriever, dict[str, str]]:
    from qkrag.retrieval.bm25 import BM25Retriever

    if request.projection is not None:
        raise fail("--projection", "BM25 has no embeddings to project", "use --retriever exact or chroma")
    return BM25Retriever(request.corpus), {}


def _hybrid(request: FolderRequest) -> tuple[Retriever, dict[str, str]]:
    """Exact dense search fused with BM25, the fusion chosen as `qkrag index --hybrid` chooses it."""
    from qkrag.retrieval.bm25 import BM25Retriever
    from qkrag.retrieval.hybrid import HybridRetriever, fusion_choice, fusion_from_options

    dense, lexical = request.dense(), BM25Retriever(request.corpus)
    chosen = fusion_choice(dense, lexical, request.data, request.split,
                           fusion_from_options(request.fusion, request.fusion_weight), corpus=request.corpus)
    return HybridRetriever(dense, lexical, chosen.config), {"fusion": chosen.config.label(),
                                                            "fusion_chosen_on": chosen.origin()}


#: The retrievers `qkrag eval --retriever`, `--baseline` and bench's untrained rows name. A new kind is a builder
#: and a row here.
RETRIEVERS: dict[str, RetrieverKind] = {
    "exact": RetrieverKind(_dense, "cosine (or σ(q·k) through a projection) by exact search over vectors in memory",
                           cosine=True),
    "chroma": RetrieverKind(_dense, "the same over a Chroma collection (HNSW, approximate)", cosine=True),
    "bm25": RetrieverKind(_bm25, "BM25 over the corpus text; no embeddings"),
    "hybrid": RetrieverKind(_hybrid, "exact dense search fused with BM25, the fusion chosen on the train split",
                            fuses=True),
}


def check_kind(kind: str) -> str:
    """`kind` when `RETRIEVERS` has it; else one line naming the choices."""
    if kind not in RETRIEVERS:
        raise fail(f"--retriever {kind!r}", "is not a retriever", f"use one of {', '.join(RETRIEVERS)}")
    return kind


def baselines() -> tuple[str, ...]:
    """What a result can be compared with by name: "cosine" (raw cosine in the index the result used) and every
    kind that is not raw cosine."""
    return ("cosine", *(name for name, kind in RETRIEVERS.items() if not kind.cosine))


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
    spec = RETRIEVERS[check_kind(kind)]
    if not spec.fuses and (fusion != "auto" or fusion_weight is not None):
        raise fail("--fusion/--fusion-weight", "only apply to the hybrid retriever", "add --retriever hybrid")
    return spec.build(FolderRequest(kind, corpus, encoder, Path(data), split, projection, index, config, fusion,
                                    fusion_weight))


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
