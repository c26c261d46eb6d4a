"""LlamaIndex: qkrag's two sides as a `BaseEmbedding` that any vector store ranks exactly like qkrag, a node
postprocessor that turns the store's scores into σ, and any qkrag retriever as a `BaseRetriever` (the `[llamaindex]`
extra: llama-index-core).

    from llama_index.core import Document, VectorStoreIndex
    from qkrag.integrations.llamaindex import QkragEmbedding, QkragLlamaRetriever, QkragRelevance

    embed_model = QkragEmbedding(projection="runs/demo-proj")
    index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)   # or over a ChromaVectorStore
    hits = index.as_retriever(similarity_top_k=10).retrieve("why does my dough stay flat")
    hits = QkragRelevance(embed_model=embed_model).postprocess_nodes(hits)      # score: σ(s·q·k + b)
    QkragLlamaRetriever.from_collection("demo", path=".qkrag/chroma", k=4)              # qkrag's own ranking

`get_query_embedding` and `get_text_embedding` route each text through its own side (LlamaIndex's
`HuggingFaceEmbedding` calls `encode(prompt_name="query", normalize_embeddings=True)`, which takes an exported
model's document route and drops the scale) and, by default, pad both to fixed norms (`qkrag.integrations.common`),
so LlamaIndex's default cosine, and Chroma's cosine, L2 or inner product, rank by qkrag's logit. `to_dict` keeps the
projection's folder and the SHA-256 of its weights, so `from_dict` loads the same projection or fails. The
retriever's `NodeWithScore.score` is σ when a projection scored the hit (a hybrid retriever with a projected dense arm
included: ranked by fusion, scored by σ), the cosine for a raw index; node metadata holds `qkrag_score` (what qkrag
ranked by) and `relevance_score` (σ or None).
"""

from __future__ import annotations

import math
import os
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import PrivateAttr

from qkrag.errors import fail
from qkrag.integrations.common import SPACES, Sides, search


def _reference(encoder: Any, projection: Any, sha256: str | None) -> dict[str, Any]:
    """The serialisable fields naming `encoder` and `projection` (see `QkragEmbedding`); a folder is hashed unless
    its hash is given (`from_dict`: the folder may have moved, the hash is what names the weights)."""
    from qkrag.embed.encoders import Encoder
    from qkrag.integrations.chroma import encoder_config

    out: dict[str, Any] = {"projection": None, "projection_sha256": None, "unsaved_projection": False}
    if isinstance(projection, (str, os.PathLike)):
        from qkrag.projection.light import weights_hash

        out.update(projection=str(projection), projection_sha256=sha256 or weights_hash(projection))
    elif projection is not None:
        out["unsaved_projection"] = True
    if isinstance(encoder, Encoder):
        settings = encoder_config(encoder)
        out["encoder_settings"] = settings if settings is not None else {"unrebuildable": encoder.fingerprint}
    else:
        out["encoder_settings"] = {"model": encoder}
    return out


class QkragEmbedding(BaseEmbedding):
    """`encoder`: an `Encoder`, a model name or None (the default all-MiniLM-L6-v2); `projection`: None (the
    encoder's own sides), a fitted projection, or a saved projection folder. `augment` (default True): vectors any
    store ranks by the logit; False gives the bare s·Q·v and K·v, for an inner-product store only. `max_norm`: the
    largest norm of the encoder's vectors, needed to augment an encoder that does not normalise. Loads on first use.

    Serialised (`to_dict`, `to_json`) as the encoder's settings and the projection's folder plus the SHA-256 of its
    weights; `from_dict` accepts the folder only when its weights still hash the same, else finds the projection as
    Chroma's function does ($QKRAG_PROJECTION_PATH, the projection store), else raises. A fitted projection that was
    never saved, or an encoder that cannot be rebuilt from settings, serialises but does not load back: it raises."""

    projection: str | None = None
    projection_sha256: str | None = None
    unsaved_projection: bool = False
    encoder_settings: dict[str, Any] | None = None
    augment: bool = True
    max_norm: float | None = None
    _sides: Sides | None = PrivateAttr(default=None)
    _objects: tuple[Any, Any] = PrivateAttr(default=(None, None))

    def __init__(self, encoder: Any = None, projection: Any = None, **kwargs: Any):
        from qkrag.embed.encoders import Encoder

        given = {k: kwargs.pop(k) for k in ("projection_sha256", "unsaved_projection", "encoder_settings")
                 if k in kwargs}
        reference = {**_reference(encoder, projection, given.get("projection_sha256")), **given}
        super().__init__(model_name=kwargs.pop("model_name", "qkrag"), **reference, **kwargs)
        fitted = projection if projection is not None and not isinstance(projection, (str, os.PathLike)) else None
        self._objects = (encoder if isinstance(encoder, Encoder) else None, fitted)

    @classmethod
    def class_name(cls) -> str:
        return "QkragEmbedding"

    @property
    def sides(self) -> Sides:
        if self._sides is None:
            self._sides = Sides(*self._resolve(), augment=self.augment, max_norm=self.max_norm)
        return self._sides

    def _resolve(self) -> tuple[Any, Any]:
        """The encoder and projection these fields name (the objects themselves when this one was built with them)."""
        from qkrag.integrations.chroma import encoder_from_config, locate_projection

        encoder, projection = self._objects
        settings = self.encoder_settings or {}
        if encoder is None and "unrebuildable" in settings:
            raise fail(f"QkragEmbedding encoder {settings['unrebuildable']}", "cannot be rebuilt from settings",
                       "pass encoder= (the Encoder object) to from_dict, or use a sentence-transformers/OpenAI model")
        if projection is None and self.unsaved_projection:
            raise fail("QkragEmbedding projection", "was a fitted projection that was never saved",
                       "save it (projection.save(folder)) and pass the folder as projection=")
        if projection is None and self.projection_sha256:
            projection = locate_projection(self.projection_sha256, self.projection)
        return encoder if encoder is not None else encoder_from_config(settings), projection

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.sides.queries([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.sides.documents([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.sides.documents(texts).tolist() if texts else []


class QkragRelevance(BaseNodePostprocessor):
    """Rescores a vector store's nodes with σ(s·q·k + b), in the store's order (the store ranked by the logit).
    `chroma_space`: None for LlamaIndex's default vector store (a cosine similarity), else the space of the Chroma
    collection under a `ChromaVectorStore` ("cosine", "l2" or "ip"; its score is exp(−distance)). Filter on the
    probability afterwards with `SimilarityPostprocessor(similarity_cutoff=...)`."""

    embed_model: QkragEmbedding
    chroma_space: str | None = None

    @classmethod
    def class_name(cls) -> str:
        return "QkragRelevance"

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
                           ) -> list[NodeWithScore]:
        if self.chroma_space is not None and self.chroma_space not in SPACES:
            raise fail(f"chroma_space={self.chroma_space!r}", "is not a Chroma space", f"use one of {SPACES}")
        out = []
        for node in nodes:
            if node.score is None:
                raise fail(f"node {node.node.node_id}", "has no score to turn into a probability",
                           "postprocess the nodes a vector store retrieved, before any other postprocessor")
            if self.chroma_space is None:
                score, kind = node.score, "cosine_similarity"
            elif node.score > 0 and math.isfinite(node.score):
                score, kind = -math.log(node.score), self.chroma_space
            else:
                raise fail(f"node {node.node.node_id} score {node.score}", "is exp(−distance) out of float range",
                           "use augmented vectors (QkragEmbedding's default) in a cosine or l2 collection")
            out.append(NodeWithScore(node=node.node, score=float(self.embed_model.sides.relevance(score, kind))))
        return out


class QkragLlamaRetriever(BaseRetriever):
    """A LlamaIndex retriever over any qkrag retriever (`DenseRetriever`, `ProjectedRetriever`, `HybridRetriever`)."""

    def __init__(self, retriever: Any, k: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.retriever, self.k = retriever, k

    @classmethod
    def from_collection(cls, collection: str, *, k: int = 4, **options: Any) -> QkragLlamaRetriever:
        """Over a collection `qkrag index ... --projection` built, ranked as `qkrag search --projection` ranks it;
        `options`: path, projection, encoder, host, port (`qkrag.integrations.chroma.collection_retriever`)."""
        from qkrag.integrations.chroma import collection_retriever

        return cls(collection_retriever(collection, **options), k=k)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        out = []
        for hit in search(self.retriever, query_bundle.query_str, self.k):
            node = TextNode(id_=hit.id, text=hit.text,
                            metadata={"qkrag_score": hit.score, "relevance_score": hit.relevance})
            out.append(NodeWithScore(node=node, score=hit.relevance if hit.relevance is not None else hit.score))
        return out
