"""The LlamaIndex integration against the real llama-index-core: the embedding routes queries and documents through
their own sides, and the retriever returns qkrag's ranking scored by σ."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from qkrag.integrations.llamaindex import QkragEmbedding, QkragLlamaRetriever, QkragRelevance  # noqa: E402
from tests.fakes import random_projection  # noqa: E402
from tests.integrations.demo import DEMO, QUERY, answer_above_post, build_demo  # noqa: E402


def test_embedding_routes_each_side_and_dot_is_the_logit(fake_encoder):
    from llama_index.core.base.embeddings.base import BaseEmbedding, SimilarityMode

    projection = random_projection(32, fake_encoder.fingerprint)
    model = QkragEmbedding(fake_encoder, projection, max_norm=50.0)  # augmented: the dot product is unchanged
    assert isinstance(model, BaseEmbedding)
    docs = ["bread rises with yeast", "the cat sat on the mat"]
    q = model.get_query_embedding("why does bread rise")
    d = model.get_text_embedding_batch(docs)
    qv, dv = fake_encoder.embed_batch(["why does bread rise"], "query"), fake_encoder.embed_batch(docs, "document")
    dots = [model.similarity(q, row, SimilarityMode.DOT_PRODUCT) for row in d]
    np.testing.assert_allclose(np.asarray(dots) + projection.bias_, projection.score_matrix(qv, dv)[0], atol=1e-5)
    assert not np.allclose(model.get_text_embedding("why does bread rise"), q)  # the query side differs
    np.testing.assert_allclose(model.get_text_embedding(docs[0]), d[0], atol=1e-6)


def test_retriever_scores_by_probability(fake_encoder):
    from llama_index.core.base.base_retriever import BaseRetriever

    from qkrag.retrieval.projected import ProjectedRetriever
    from qkrag.retrieval.index import DenseRetriever, ExactIndex

    texts = ["bread rises with yeast", "the cat sat on the mat", "yeast eats sugar in dough", "heat pumps"]
    ids = [f"d{i}" for i in range(4)]
    index = ExactIndex(ids, fake_encoder.embed_batch(texts, "document"), texts=dict(zip(ids, texts)),
                       fingerprint=fake_encoder.fingerprint)
    projected = ProjectedRetriever(fake_encoder, random_projection(32, fake_encoder.fingerprint), index)
    retriever = QkragLlamaRetriever(projected, k=3)
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve("why does dough rise")
    hits = projected.search(["why does dough rise"], 3)[0]
    assert [n.node.node_id for n in nodes] == [h.id for h in hits]
    assert [n.score for n in nodes] == [h.probability for h in hits] and all(0 <= n.score <= 1 for n in nodes)
    raw = QkragLlamaRetriever(DenseRetriever(fake_encoder, index), k=3).retrieve("why does dough rise")
    assert raw[0].node.metadata["relevance_score"] is None and -1 <= raw[0].score <= 1  # cosine, no made-up σ


@pytest.fixture(scope="module")
def demo(tmp_path_factory):

    root = tmp_path_factory.mktemp("li-demo")
    with pytest.MonkeyPatch.context() as patch:  # restored after set-up: later tests keep their own cache
        patch.setenv("QKRAG_CACHE_DIR", str(root / "cache"))
        return build_demo(root)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["raw", "projected", "hybrid"])
def test_readme_query_ranks_as_in_qkrag_through_llamaindex(demo, kind):
    qkrag_retriever = demo.retrievers[kind]
    hits = qkrag_retriever.search([QUERY], 10)[0]
    nodes = QkragLlamaRetriever(qkrag_retriever, k=10).retrieve(QUERY)
    assert [n.node.node_id for n in nodes] == [h.id for h in hits]
    assert answer_above_post([n.node.node_id for n in nodes]) == answer_above_post([h.id for h in hits])
    if kind != "raw":
        assert all(0 <= n.score <= 1 for n in nodes)
        assert nodes[0].score == pytest.approx(nodes[0].node.metadata["relevance_score"])


@pytest.mark.slow
def test_llamaindex_embedding_dot_products_rank_the_readme_query_like_qkrag(demo):
    """QkragEmbedding from the saved folder through LlamaIndex's batch API and its DOT_PRODUCT similarity."""
    from llama_index.core.base.embeddings.base import SimilarityMode

    from qkrag.data import load_beir

    test = load_beir(DEMO, "test")
    model = QkragEmbedding(projection=demo.projection_dir)
    q = model.get_query_embedding(QUERY)
    d = model.get_text_embedding_batch(list(test.corpus.contents))
    scores = np.asarray([model.similarity(q, row, SimilarityMode.DOT_PRODUCT) for row in d])
    ranked = [test.corpus.ids[i] for i in np.argsort(-scores, kind="stable")[:10]]
    expected = [h.id for h in demo.retrievers["projected"].search([QUERY], 10)[0]]
    assert ranked[:5] == expected[:5] and answer_above_post(ranked) is True


def test_serialisation_round_trips_the_projection(fake_encoder, tmp_path, monkeypatch):
    """to_dict names the projection by folder and weights hash: from_dict loads it, or refuses other weights."""
    from qkrag.errors import InputError

    projection = random_projection(32, fake_encoder.fingerprint)
    projection.save(tmp_path / "p")
    model = QkragEmbedding(fake_encoder, tmp_path / "p", max_norm=2.0)
    data = model.to_dict()
    assert data["encoder_settings"] == {"unrebuildable": "fake-encoder"}  # a test fake: from_dict needs it back
    with pytest.raises(InputError, match="cannot be rebuilt"):
        QkragEmbedding.from_dict(data).sides.encoder
    assert data["projection"] == str(tmp_path / "p") and len(data["projection_sha256"]) == 64
    assert data["max_norm"] == 2.0 and data["augment"] is True
    back = QkragEmbedding.from_dict(data, encoder=fake_encoder)
    np.testing.assert_array_equal(back.sides.projection.K_, projection.K_)  # the same weights, not raw vectors
    assert back.sides.augment and back.max_norm == 2.0
    random_projection(32, fake_encoder.fingerprint, seed=1).save(tmp_path / "p")  # other weights in that folder
    monkeypatch.setenv("QKRAG_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(InputError, match="is in none of"):
        QkragEmbedding.from_json(model.to_json(), encoder=fake_encoder).sides.projection
    with pytest.raises(InputError, match="never saved"):
        QkragEmbedding.from_dict(QkragEmbedding(fake_encoder, projection).to_dict(), encoder=fake_encoder).sides


# ---- every store ranks exactly like `qkrag search --projection` (tests.integrations.demo.build_trained_demo)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["default", "chroma-l2", "chroma-cosine", "chroma-ip"])
def test_vector_store_index_ranks_like_qkrag_search(demo_cache, tmp_path, store):
    """VectorStoreIndex with its default store (cosine) and with a ChromaVectorStore in each space; QkragRelevance
    turns the scores into σ, and SimilarityPostprocessor keeps exactly the hits whose σ passes the cutoff."""
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.postprocessor import SimilarityPostprocessor
    from llama_index.core.schema import TextNode

    demo = demo_cache
    embed_model = QkragEmbedding(demo.encoder, demo.projection_dir)
    nodes = [TextNode(id_=i, text=t) for i, t in zip(demo.ids, demo.texts)]
    space = None
    if store == "default":
        index = VectorStoreIndex(nodes, embed_model=embed_model)
    else:
        import chromadb
        from llama_index.vector_stores.chroma import ChromaVectorStore

        space = store.split("-")[1]
        client = chromadb.PersistentClient(str(tmp_path / "chroma"), chromadb.Settings(anonymized_telemetry=False))
        collection = client.create_collection(f"li-{space}", configuration={"hnsw": {"space": space}})
        context = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
        index = VectorStoreIndex(nodes, embed_model=embed_model, storage_context=context)
    retriever = index.as_retriever(similarity_top_k=10)
    relevance = QkragRelevance(embed_model=embed_model, chroma_space=space)
    cutoff = SimilarityPostprocessor(similarity_cutoff=0.5)
    for query, expected, sigma in zip(demo.queries, demo.expected, demo.probabilities):
        hits = relevance.postprocess_nodes(retriever.retrieve(query))
        assert [h.node.node_id for h in hits] == expected, query
        np.testing.assert_allclose([h.score for h in hits], sigma, atol=1e-4)
        if all(abs(p - 0.5) > 1e-3 for p in sigma):
            kept = cutoff.postprocess_nodes(hits)
            assert [h.node.node_id for h in kept] == [i for i, p in zip(expected, sigma) if p >= 0.5]


@pytest.mark.slow
def test_llama_from_collection_ranks_like_qkrag_search(demo_cache):
    demo = demo_cache
    retriever = QkragLlamaRetriever.from_collection(demo.collection, path=demo.chroma, k=10,
                                                    projection=demo.projection_dir, encoder=demo.encoder)
    for query, expected, sigma in zip(demo.queries[:10], demo.expected, demo.probabilities):
        nodes = retriever.retrieve(query)
        assert [n.node.node_id for n in nodes] == expected
        np.testing.assert_allclose([n.score for n in nodes], sigma, atol=1e-6)
