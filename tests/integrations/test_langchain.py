"""The LangChain integration against the real langchain-core: embeddings route queries and documents through their
own sides, and the retriever returns qkrag's ranking with σ as the relevance score."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from qkrag.integrations.langchain import QkragEmbeddings, QkragRetriever  # noqa: E402
from tests.fakes import random_projection  # noqa: E402
from tests.integrations.demo import QUERY, answer_above_post, build_demo  # noqa: E402


def test_embeddings_route_each_side_and_dot_is_the_logit(fake_encoder):
    from langchain_core.embeddings import Embeddings

    projection = random_projection(32, fake_encoder.fingerprint)
    embeddings = QkragEmbeddings(fake_encoder, projection)
    assert isinstance(embeddings, Embeddings)
    docs = ["bread rises with yeast", "the cat sat on the mat"]
    q = np.asarray(embeddings.embed_query("why does bread rise"))
    d = np.asarray(embeddings.embed_documents(docs))
    qv, dv = fake_encoder.embed_batch(["why does bread rise"], "query"), fake_encoder.embed_batch(docs, "document")
    np.testing.assert_allclose(q @ d.T + projection.bias_, projection.score_matrix(qv, dv)[0], atol=1e-5)
    assert not np.allclose(embeddings.embed_documents(["why does bread rise"])[0], q)  # the query side differs
    assert embeddings.probability(q.tolist(), d[0].tolist()) == pytest.approx(
        projection.predict_proba_matrix(qv, dv)[0, 0], abs=1e-6)


def test_retriever_reports_qkrag_hits_with_probability(fake_encoder):
    from langchain_core.retrievers import BaseRetriever

    from qkrag.retrieval.projected import ProjectedRetriever
    from qkrag.retrieval.index import DenseRetriever, ExactIndex

    texts = ["bread rises with yeast", "the cat sat on the mat", "yeast eats sugar in dough", "heat pumps"]
    ids = [f"d{i}" for i in range(4)]
    vectors = fake_encoder.embed_batch(texts, "document")
    index = ExactIndex(ids, vectors, texts=dict(zip(ids, texts)), fingerprint=fake_encoder.fingerprint)
    projection = random_projection(32, fake_encoder.fingerprint)
    for qkrag_retriever, scored in ((ProjectedRetriever(fake_encoder, projection, index), True),
                                    (DenseRetriever(fake_encoder, index), False)):
        retriever = QkragRetriever(retriever=qkrag_retriever, k=3)
        assert isinstance(retriever, BaseRetriever)
        docs = retriever.invoke("why does dough rise")
        hits = qkrag_retriever.search(["why does dough rise"], 3)[0]
        assert [d.id for d in docs] == [h.id for h in hits] and docs[0].page_content == hits[0].text
        relevance = [d.metadata["relevance_score"] for d in docs]
        assert relevance == ([h.probability for h in hits] if scored else [None] * 3)
        assert all(0 <= r <= 1 for r in relevance if r is not None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("lc-demo")
    os.environ["QKRAG_CACHE_DIR"] = str(root / "cache")
    return build_demo(root)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["raw", "projected", "hybrid"])
def test_readme_query_ranks_as_in_qkrag_through_langchain(demo, kind):
    qkrag_retriever = demo.retrievers[kind]
    hits = qkrag_retriever.search([QUERY], 10)[0]
    docs = QkragRetriever(retriever=qkrag_retriever, k=10).invoke(QUERY)
    assert [d.id for d in docs] == [h.id for h in hits]
    assert answer_above_post([d.id for d in docs]) == answer_above_post([h.id for h in hits])
    if kind != "hybrid":  # the projection is what lifts the answer (BM25 likes the post: hybrid keeps it first)
        assert answer_above_post([h.id for h in hits]) is (kind == "projected")
    relevance = [d.metadata["relevance_score"] for d in docs]
    if kind == "raw":
        assert relevance == [None] * len(docs)
    else:  # σ for every hit, BM25-only hybrid hits included, each what the projection says
        from qkrag.embed.encoders import EmbedOptions, embed

        texts = [d.page_content for d in docs]
        expected = demo.projection.predict_proba_matrix(
            embed(demo.encoder, [QUERY], "query", EmbedOptions(progress=False)),
            embed(demo.encoder, texts, "document", EmbedOptions(progress=False)))[0]
        np.testing.assert_allclose(relevance, expected, atol=1e-4)


@pytest.mark.slow
def test_langchain_embeddings_rank_the_readme_query_like_qkrag(demo):
    """QkragEmbeddings from the saved folder: ranking the corpus by dot product is the projected ranking."""
    from qkrag.data import load_beir
    from tests.integrations.demo import DEMO

    test = load_beir(DEMO, "test")
    embeddings = QkragEmbeddings(projection=demo.projection_dir)
    d = np.asarray(embeddings.embed_documents(list(test.corpus.contents)))
    q = np.asarray(embeddings.embed_query(QUERY))
    ranked = [test.corpus.ids[i] for i in np.argsort(-(d @ q), kind="stable")[:10]]
    expected = [h.id for h in demo.retrievers["projected"].search([QUERY], 10)[0]]
    assert answer_above_post(ranked) == answer_above_post(expected)
    assert ranked[:5] == expected[:5]
