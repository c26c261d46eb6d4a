"""`qkrag.retrieval.index` re-exports the index stage's public names from the modules that define them."""

from __future__ import annotations

import qkrag.retrieval.index as index
from qkrag.retrieval import build, connection, dense, exact, store

HOMES = {connection: ["CHROMA_DEFAULT_HNSW", "IndexConfig", "collection_names", "connect"],
         store: ["PAGE", "QUERY_VARIABLES", "BuildStats", "ChromaIndex", "built_collections", "corpus_hash",
                 "read_collection"],
         build: ["adopt_collection", "build_index", "index_for_evaluation"],
         exact: ["ExactIndex", "recall_at_k"],
         dense: ["DenseRetriever"]}


def test_every_public_name_is_the_object_of_its_home_module() -> None:
    assert sorted(index.__all__) == sorted(name for names in HOMES.values() for name in names)
    for home, names in HOMES.items():
        for name in names:
            assert getattr(index, name) is getattr(home, name), f"{name} is not {home.__name__}.{name}"


def test_the_package_root_serves_the_index_names() -> None:
    import qkrag

    assert qkrag.ChromaIndex is store.ChromaIndex and qkrag.build_index is build.build_index
    assert qkrag.DenseRetriever is dense.DenseRetriever and qkrag.IndexConfig is connection.IndexConfig
