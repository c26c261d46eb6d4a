"""LlamaIndex: qkrag's two sides as a `BaseEmbedding`, and any qkrag retriever as a `BaseRetriever` (the
`[llamaindex]` extra: llama-index-core).

    from qkrag.integrations.llamaindex import QkragEmbedding, QkragLlamaRetriever

    embed_model = QkragEmbedding(projection="runs/demo-proj")          # queries: s·Q·v, documents: K·v
    retriever = QkragLlamaRetriever(ProjectedRetriever(encoder, projection, raw), k=4)
    nodes = retriever.retrieve("why does my dough stay flat")
    nodes[0].score                                                     # σ(s·q·k + b), in [0, 1]

`get_query_embedding` and `get_text_embedding` route each text through its own side (LlamaIndex's
`HuggingFaceEmbedding` calls `encode(prompt_name="query", normalize_embeddings=True)`, which takes an exported
model's document route and drops the scale). Compare the vectors by dot product (`SimilarityMode.DOT_PRODUCT`), not
LlamaIndex's default cosine. The retriever's `NodeWithScore.score` is σ when a projection scored the hit (a hybrid
retriever with a projected dense arm included: ranked by fusion, scored by σ), the cosine for a raw index; node
metadata holds `qkrag_score` (what qkrag ranked by) and `relevance_score` (σ or None).
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import PrivateAttr

from qkrag.integrations.common import Sides, search


class QkragEmbedding(BaseEmbedding):
    """`encoder`: an `Encoder`, a model name or None (the default all-MiniLM-L6-v2); `projection`: None (the
    encoder's own sides), a fitted projection, or a saved projection folder. Loads on first use."""

    _sides: Sides = PrivateAttr()

    def __init__(self, encoder: Any = None, projection: Any = None, **kwargs: Any):
        super().__init__(model_name=kwargs.pop("model_name", "qkrag"), **kwargs)
        self._sides = Sides(encoder, projection)

    @classmethod
    def class_name(cls) -> str:
        return "QkragEmbedding"

    @property
    def sides(self) -> Sides:
        return self._sides

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._sides.queries([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._sides.documents([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._sides.documents(texts).tolist() if texts else []


class QkragLlamaRetriever(BaseRetriever):
    """A LlamaIndex retriever over any qkrag retriever (`DenseRetriever`, `ProjectedRetriever`, `HybridRetriever`)."""

    def __init__(self, retriever: Any, k: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.retriever, self.k = retriever, k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        out = []
        for hit in search(self.retriever, query_bundle.query_str, self.k):
            node = TextNode(id_=hit.id, text=hit.text,
                            metadata={"qkrag_score": hit.score, "relevance_score": hit.relevance})
            out.append(NodeWithScore(node=node, score=hit.relevance if hit.relevance is not None else hit.score))
        return out
