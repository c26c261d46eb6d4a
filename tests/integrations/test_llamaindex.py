"""The LlamaIndex integration against the real llama-index-core: the embedding routes queries and documents through
their own sides, and the retriever returns qkrag's ranking scored by σ."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from qkrag.integrations.llamaindex import QkragEmbedding, QkragLlamaRetriever  # noqa: E402
from tests.fakes import random_projection  # noqa: E402
from tests.integrations.demo import DEMO, QUERY, answer_above_post, build_demo  # noqa: E402


def test_embedding_routes_each_side_and_dot_is_the_logit(fake_encoder):
    from llama_index.core.base.embeddings.base import BaseEmbedding, SimilarityMode

    projection = random_projection(32, fake_encoder.fingerprint)
    model = QkragEmbedding(fake_encoder, projection)
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
    import os

    root = tmp_path_factory.mktemp("li-demo")
    os.environ["QKRAG_CACHE_DIR"] = str(root / "cache")
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
