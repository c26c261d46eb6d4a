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
    embeddings = QkragEmbeddings(fake_encoder, projection, augment=False)  # the bare s·Q·v and K·v
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

    root = tmp_path_factory.mktemp("lc-demo")
    with pytest.MonkeyPatch.context() as patch:  # restored after set-up: later tests keep their own cache
        patch.setenv("QKRAG_CACHE_DIR", str(root / "cache"))
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


def test_augmented_vectors_keep_the_logit_and_fix_every_norm(fake_encoder):
    """Padded to norms R (queries) and M (documents), the dot product is still the logit minus b."""
    projection = random_projection(32, fake_encoder.fingerprint)
    embeddings = QkragEmbeddings(fake_encoder, projection, max_norm=50.0)  # the fake encoder does not normalise
    docs = ["bread rises with yeast", "the cat sat on the mat", "yeast eats sugar in dough"]
    q, d = np.asarray(embeddings.embed_query("why does bread rise")), np.asarray(embeddings.embed_documents(docs))
    qv, dv = fake_encoder.embed_batch(["why does bread rise"], "query"), fake_encoder.embed_batch(docs, "document")
    np.testing.assert_allclose(q @ d.T + projection.bias_, projection.score_matrix(qv, dv)[0], rtol=1e-4, atol=1e-3)
    bounds = embeddings.sides.bounds
    assert d.shape[1] == q.shape[0] == projection.rank_ + 2
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), bounds.document, rtol=1e-5)
    assert np.linalg.norm(q) == pytest.approx(bounds.query, rel=1e-5)
    cosine = (d @ q) / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
    np.testing.assert_allclose(embeddings.relevance_score_fn("cosine_similarity")(cosine[0]),
                               projection.predict_proba_matrix(qv, dv)[0, 0], atol=1e-4)


def test_an_encoder_without_a_norm_bound_and_a_vector_beyond_it_fail_clearly(fake_encoder):
    from qkrag.errors import InputError

    projection = random_projection(32, fake_encoder.fingerprint)
    with pytest.raises(InputError, match="does not normalise its vectors.*max_norm="):
        QkragEmbeddings(fake_encoder, projection).embed_documents(["bread rises"])
    with pytest.raises(InputError, match="exceed the bound"):
        QkragEmbeddings(fake_encoder, projection, max_norm=0.01).embed_documents(["bread rises", "cats"])
    with pytest.raises(InputError, match="'cosine'.*does not order raw projected vectors"):
        QkragEmbeddings(fake_encoder, projection, augment=False).relevance_score_fn("cosine")


def test_invoke_honours_k(fake_encoder):
    from qkrag.retrieval.index import ExactIndex
    from qkrag.retrieval.projected import ProjectedRetriever

    texts = ["bread rises with yeast", "the cat sat on the mat", "yeast eats sugar in dough", "heat pumps"]
    ids = [f"d{i}" for i in range(4)]
    index = ExactIndex(ids, fake_encoder.embed_batch(texts, "document"), texts=dict(zip(ids, texts)),
                       fingerprint=fake_encoder.fingerprint)
    retriever = QkragRetriever(retriever=ProjectedRetriever(fake_encoder, random_projection(32, "fake-encoder"), index))
    assert len(retriever.invoke("why does dough rise")) == 4
    assert len(retriever.invoke("why does dough rise", k=2)) == 2


# ---- every store ranks exactly like `qkrag search --projection` (tests.integrations.demo.build_trained_demo)


def _threshold(probabilities: list[list[float]]) -> float:
    """A σ threshold no expected hit sits within 1e-3 of, that keeps some hits and drops others."""
    flat = np.asarray([p for row in probabilities for p in row])
    for t in (0.5, 0.3, 0.7, 0.2, 0.4, 0.6):
        if np.abs(flat - t).min() > 1e-3 and (flat >= t).any() and (flat < t).any():
            return t
    raise AssertionError("no usable threshold")


@pytest.mark.slow
def test_inmemory_vector_store_ranks_like_qkrag_search(demo_cache):
    demo = demo_cache
    from langchain_core.vectorstores import InMemoryVectorStore

    embeddings = QkragEmbeddings(demo.encoder, demo.projection_dir)
    store = InMemoryVectorStore(embeddings)
    store.add_texts(demo.texts, ids=demo.ids)
    relevance = embeddings.relevance_score_fn("cosine_similarity")
    for query, expected, sigma in zip(demo.queries, demo.expected, demo.probabilities):
        found = store.similarity_search_with_score(query, k=10)
        assert [doc.id for doc, _ in found] == expected, query
        np.testing.assert_allclose([relevance(score) for _, score in found], sigma, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_langchain_chroma_ranks_like_qkrag_search_in_every_space(demo_cache, tmp_path, space):
    """The natural route: langchain-chroma in any space, scores and `score_threshold` in σ."""
    demo = demo_cache
    import chromadb
    from langchain_chroma import Chroma

    embeddings = QkragEmbeddings(demo.encoder, demo.projection_dir)
    client = chromadb.PersistentClient(str(tmp_path / "chroma"), chromadb.Settings(anonymized_telemetry=False))
    store = Chroma(f"lc-{space}", embeddings, client=client, collection_configuration={"hnsw": {"space": space}},
                   relevance_score_fn=embeddings.relevance_score_fn(space))
    store.add_texts(demo.texts, ids=demo.ids)
    threshold = _threshold(demo.probabilities)
    for query, expected, sigma in zip(demo.queries, demo.expected, demo.probabilities):
        found = store.similarity_search_with_relevance_scores(query, k=10)
        assert [doc.id for doc, _ in found] == expected, query
        np.testing.assert_allclose([score for _, score in found], sigma, atol=1e-4)
        kept = store.similarity_search_with_relevance_scores(query, k=10, score_threshold=threshold)
        assert [doc.id for doc, _ in kept] == [i for i, p in zip(expected, sigma) if p >= threshold], query
    retriever = store.as_retriever(search_type="similarity_score_threshold",
                                   search_kwargs={"k": 10, "score_threshold": threshold})
    query, expected, sigma = demo.queries[0], demo.expected[0], demo.probabilities[0]
    assert [d.id for d in retriever.invoke(query)] == [i for i, p in zip(expected, sigma) if p >= threshold]


@pytest.mark.slow
def test_a_document_beyond_the_bound_fails_clearly(demo_cache):
    demo = demo_cache
    from qkrag.errors import InputError

    embeddings = QkragEmbeddings(demo.encoder, demo.projection_dir, max_norm=0.5)  # MiniLM's vectors have norm 1
    with pytest.raises(InputError, match=r"document vector\(s\).*exceed the bound"):
        embeddings.embed_documents(demo.texts[:3])


@pytest.mark.slow
def test_from_collection_ranks_like_qkrag_search(demo_cache):
    demo = demo_cache
    retriever = QkragRetriever.from_collection(demo.collection, path=demo.chroma, k=10)
    for query, expected, sigma in zip(demo.queries[:10], demo.expected, demo.probabilities):
        docs = retriever.invoke(query)
        assert [d.id for d in docs] == expected
        np.testing.assert_allclose([d.metadata["relevance_score"] for d in docs], sigma, atol=1e-6)
    assert len(retriever.invoke(demo.queries[0], k=3)) == 3
