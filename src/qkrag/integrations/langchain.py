"""LangChain: qkrag's two sides as an `Embeddings`, and any qkrag retriever as a `BaseRetriever` (the `[langchain]`
extra: langchain-core).

    from qkrag.integrations.langchain import QkragEmbeddings, QkragRetriever

    embeddings = QkragEmbeddings(projection="runs/demo-proj")        # queries: s·Q·v, documents: K·v
    retriever = QkragRetriever(retriever=ProjectedRetriever(encoder, projection, raw), k=4)
    docs = retriever.invoke("why does my dough stay flat")
    docs[0].metadata["relevance_score"]                                # σ(s·q·k + b), in [0, 1]

`embed_query` and `embed_documents` route each text through its own side (LangChain's `HuggingFaceEmbeddings` sends
queries through the document route of an exported model). Compare the vectors by dot product, not cosine: the dot
product is qkrag's logit minus the bias (`QkragEmbeddings.probability`). The retriever wraps a raw, projected or
hybrid qkrag retriever; each Document carries `id`, and metadata `qkrag_score` (what qkrag ranked by) and
`relevance_score` (σ; None for raw cosine hits, which have no probability).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from qkrag.integrations.common import Sides, search


class QkragEmbeddings(Embeddings):
    """`encoder`: an `Encoder`, a model name or None (the default all-MiniLM-L6-v2); `projection`: None (the
    encoder's own sides), a fitted projection, or a saved projection folder. Loads on first use."""

    def __init__(self, encoder: Any = None, projection: Any = None):
        self.sides = Sides(encoder, projection)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.sides.documents(texts).tolist() if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.sides.queries([text])[0].tolist()

    def probability(self, query_vector: list[float], document_vector: list[float]) -> float:
        """σ(q·k + b): the probability of relevance of two vectors these embeddings made (needs a projection)."""
        import numpy as np

        return float(self.sides.probability(float(np.dot(query_vector, document_vector))))


class QkragRetriever(BaseRetriever):
    """A LangChain retriever over any qkrag retriever (`DenseRetriever`, `ProjectedRetriever`, `HybridRetriever`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(id=hit.id, page_content=hit.text,
                         metadata={"id": hit.id, "qkrag_score": hit.score, "relevance_score": hit.relevance})
                for hit in search(self.retriever, query, self.k)]
