"""LangChain: qkrag's two sides as an `Embeddings` that any vector store ranks exactly like qkrag, and any qkrag
retriever as a `BaseRetriever` (the `[langchain]` extra: langchain-core).

    from langchain_core.vectorstores import InMemoryVectorStore
    from qkrag.integrations.langchain import QkragEmbeddings, QkragRetriever

    embeddings = QkragEmbeddings(projection="runs/demo-proj")
    store = InMemoryVectorStore(embeddings)                            # or Chroma, in any space: cosine, l2, ip
    retriever = QkragRetriever.from_collection("demo", path=".qkrag/chroma", k=4)   # qkrag's own ranking
    docs = retriever.invoke("why does my dough stay flat", k=3)
    docs[0].metadata["relevance_score"]                                # σ(s·q·k + b), in [0, 1]

`embed_query` and `embed_documents` route each text through its own side (LangChain's `HuggingFaceEmbeddings` sends
queries through the document route of an exported model) and, by default, pad both to fixed norms
(`qkrag.integrations.common`), so a store's cosine, L2 or inner product ranks by qkrag's logit.
`relevance_score_fn(space)` turns the store's scores back into σ. The retriever wraps a raw, projected or hybrid
qkrag retriever; each Document carries `id`, and metadata `qkrag_score` (what qkrag ranked by) and `relevance_score`
(σ; None for raw cosine hits, which have no probability).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from qkrag.errors import fail
from qkrag.integrations.common import Sides, search


class QkragEmbeddings(Embeddings):
    """`encoder`: an `Encoder`, a model name or None (the default all-MiniLM-L6-v2); `projection`: None (the
    encoder's own sides), a fitted projection, or a saved projection folder. `augment` (default True): vectors any
    store ranks by the logit; False gives the bare s·Q·v and K·v, for an inner-product store only. `max_norm`: the
    largest norm of the encoder's vectors, needed to augment an encoder that does not normalise. Loads on first use."""

    def __init__(self, encoder: Any = None, projection: Any = None, *, augment: bool = True,
                 max_norm: float | None = None):
        self.sides = Sides(encoder, projection, augment=augment, max_norm=max_norm)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.sides.documents(texts).tolist() if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.sides.queries([text])[0].tolist()

    def probability(self, query_vector: list[float], document_vector: list[float]) -> float:
        """σ(q·k + b): the probability of relevance of two vectors these embeddings made (needs a projection)."""
        import numpy as np

        return float(self.sides.probability(float(np.dot(query_vector, document_vector))))

    def relevance_score_fn(self, space: str = "cosine") -> Callable[[float], float]:
        """A store's score of these vectors -> σ(s·q·k + b): pass it as a vector store's `relevance_score_fn`, so
        `similarity_search_with_relevance_scores` and `score_threshold` speak probability. `space`: the Chroma
        distance ("cosine", "l2", "ip"; langchain-chroma), or "cosine_similarity" (InMemoryVectorStore's scores)."""
        self.sides.relevance(0.0, space)  # refuse an unknown space, or one that cannot rank these vectors, now

        def relevance(score: float) -> float:
            return float(self.sides.relevance(score, space))

        return relevance


class QkragRetriever(BaseRetriever):
    """A LangChain retriever over any qkrag retriever (`DenseRetriever`, `ProjectedRetriever`, `HybridRetriever`).
    `invoke(query, k=3)` overrides `k` for one call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    k: int = 4

    @classmethod
    def from_collection(cls, collection: str, *, k: int = 4, **options: Any) -> QkragRetriever:
        """Over a collection `qkrag index ... --projection` built, ranked as `qkrag search --projection` ranks it;
        `options`: path, projection, encoder, host, port (`qkrag.integrations.chroma.collection_retriever`)."""
        from qkrag.integrations.chroma import collection_retriever

        return cls(retriever=collection_retriever(collection, **options), k=k)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        k = kwargs.pop("k", self.k)
        if kwargs:
            raise fail(f"QkragRetriever.invoke({', '.join(kwargs)}=...)", "is not an option of this retriever",
                       "pass only k")
        return [Document(id=hit.id, page_content=hit.text,
                         metadata={"id": hit.id, "qkrag_score": hit.score, "relevance_score": hit.relevance})
                for hit in search(self.retriever, query, k)]
