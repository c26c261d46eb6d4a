"""The index stage's public names in one place: document vectors in Chroma (approximate, HNSW) or in memory (exact).

Each lives in its own module; this one only re-exports them, so `from qkrag.retrieval.index import ...` keeps working:

    connection  IndexConfig, connect, collection_names, CHROMA_DEFAULT_HNSW (where the index lives, how it is reached)
    store       ChromaIndex, BuildStats, corpus_hash, read_collection, built_collections (the collection format)
    build       build_index, adopt_collection, index_for_evaluation (filling a collection from a corpus)
    exact       ExactIndex, recall_at_k (brute-force search, the ground truth of HNSW recall)
    dense       DenseRetriever (query texts embedded and searched in either index)
"""

from __future__ import annotations

from qkrag.retrieval.build import adopt_collection, build_index, index_for_evaluation
from qkrag.retrieval.connection import CHROMA_DEFAULT_HNSW, IndexConfig, collection_names, connect
from qkrag.retrieval.dense import DenseRetriever
from qkrag.retrieval.exact import ExactIndex, recall_at_k
from qkrag.retrieval.store import (PAGE, QUERY_VARIABLES, BuildStats, ChromaIndex, built_collections, corpus_hash,
                                   read_collection)

__all__ = ["CHROMA_DEFAULT_HNSW", "PAGE", "QUERY_VARIABLES", "BuildStats", "ChromaIndex", "DenseRetriever",
           "ExactIndex", "IndexConfig", "adopt_collection", "build_index", "built_collections", "collection_names",
           "connect", "corpus_hash", "index_for_evaluation", "read_collection", "recall_at_k"]
