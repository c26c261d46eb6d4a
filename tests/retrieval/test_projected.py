"""qkrag.retrieval.projected: ProjectedRetriever serves a projection in full and rerank mode, in memory and on Chroma,
ranking exactly as the projection's scores do."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.errors import IndexMismatchError, InputError
from qkrag.projection.model import QKProjection

from tests.fakes import FakeEncoder


def _served(fake_encoder, texts: dict[str, str]):
    from qkrag.embed.encoders import EmbedOptions, embed

    vectors = embed(fake_encoder, list(texts.values()), "document", EmbedOptions(progress=False))
    rng = np.random.default_rng(0)
    projection = QKProjection.identity(32, fake_encoder.fingerprint, scale=5.0, bias=-1.0)
    projection._set_weights(np.eye(32, dtype=np.float32) + 0.3 * rng.normal(size=(32, 32)).astype(np.float32),
                            np.eye(32, dtype=np.float32) + 0.3 * rng.normal(size=(32, 32)).astype(np.float32), 5.0,
                            -1.0)
    return vectors, projection


def _expected(projection, fake_encoder, ids, vectors, queries, k):
    from qkrag.embed.encoders import EmbedOptions, embed

    qv = embed(fake_encoder, queries, "query", EmbedOptions(progress=False))
    logits = projection.score_matrix(qv, vectors)
    order = np.argsort(-logits, 1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order], logits


def test_projected_retriever_full_mode_in_memory(fake_encoder):
    from qkrag.retrieval.index import ExactIndex
    from qkrag.retrieval.projected import ProjectedRetriever
    from tests.fakes import TINY_DOCS

    ids = list(TINY_DOCS)
    vectors, projection = _served(fake_encoder, TINY_DOCS)
    retriever = ProjectedRetriever(fake_encoder, projection, ExactIndex(ids, vectors, "cosine", TINY_DOCS))
    queries = ["where did the cat sit", "why does bread rise"]
    hits = retriever.search(queries, k=3)
    expected, logits = _expected(projection, fake_encoder, ids, vectors, queries, 3)
    assert [[h.id for h in row] for row in hits] == expected
    top = hits[0][0]
    assert top.score == pytest.approx(logits[0].max(), abs=1e-4)
    assert top.probability == pytest.approx(1 / (1 + np.exp(-logits[0].max())), abs=1e-5)
    assert top.text == TINY_DOCS[top.id]


def test_projected_retriever_rerank_mode_reorders_raw_candidates(fake_encoder):
    from qkrag.retrieval.projected import ProjectedRetriever
    from tests.fakes import TINY_DOCS

    ids = list(TINY_DOCS)
    vectors, projection = _served(fake_encoder, TINY_DOCS)
    retriever = ProjectedRetriever(fake_encoder, projection, (ids, vectors), mode="rerank", depth=5)
    queries = ["where did the cat sit"]
    expected, _ = _expected(projection, fake_encoder, ids, vectors, queries, 5)
    assert [h.id for h in retriever.search(queries, k=5)[0]] == expected[0]
    with pytest.raises(InputError, match="'fast' is not a serving mode"):
        ProjectedRetriever(fake_encoder, projection, (ids, vectors), mode="fast")


def test_projected_retriever_on_chroma_projects_stored_vectors_without_re_embedding(fake_encoder, tmp_path):
    from qkrag.retrieval.index import ChromaIndex, IndexConfig
    from qkrag.retrieval.projected import ProjectedRetriever
    from tests.fakes import TINY_DOCS

    ids = list(TINY_DOCS)
    vectors, projection = _served(fake_encoder, TINY_DOCS)
    raw = ChromaIndex.for_encoder(IndexConfig(collection="raw-docs", path=tmp_path / "chroma"), fake_encoder)
    raw.add_vectors(ids, vectors, list(TINY_DOCS.values()))
    raw.mark_complete()
    embedded_before = fake_encoder.texts_embedded
    retriever = ProjectedRetriever(fake_encoder, projection, raw)
    assert fake_encoder.texts_embedded == embedded_before  # documents came from the index, not the encoder
    assert retriever.index.space == "ip" and retriever.index.count() == len(ids)
    queries = ["where did the cat sit", "how do plants make sugar from sunlight"]
    expected, _ = _expected(projection, fake_encoder, ids, vectors, queries, 3)
    hits = retriever.search(queries, k=3)
    assert [[h.id for h in row] for row in hits] == expected
    assert all(0 < h.probability < 1 and h.text == TINY_DOCS[h.id] for row in hits for h in row)
    again = ProjectedRetriever(fake_encoder, projection, raw)  # reuses the complete projected collection
    assert again.index.name == retriever.index.name
    other = FakeEncoder(fake_encoder.dimension, name="another-encoder")  # same dimension, another identity
    with pytest.raises(IndexMismatchError):
        ProjectedRetriever(other, projection, raw)


def test_projected_collection_is_built_page_by_page_never_all_at_once(fake_encoder, tmp_path, monkeypatch):
    """The projected collection is filled from pages of stored vectors (bounded memory); no call reads the
    whole raw collection, and the result is the one an all-at-once build gives."""
    from qkrag.retrieval.projected import ProjectedRetriever
    from qkrag.retrieval.index import ChromaIndex, IndexConfig
    from tests.fakes import TINY_DOCS

    ids = list(TINY_DOCS)
    vectors, projection = _served(fake_encoder, TINY_DOCS)
    config = IndexConfig(collection="raw-docs", path=tmp_path / "chroma", batch_size=3)  # pages of 3: several pages
    raw = ChromaIndex.for_encoder(config, fake_encoder)
    raw.add_vectors(ids, vectors, list(TINY_DOCS.values()))
    raw.mark_complete(True, content_hash="tiny-docs", count=len(ids))
    events = []
    real_get, real_add = raw.collection.get, ChromaIndex.add_vectors

    def paged_get(*args, **kwargs):
        got = real_get(*args, **kwargs)
        if "embeddings" in (kwargs.get("include") or []):
            assert kwargs.get("limit") == 3  # every read of vectors is one bounded page
            events.append(("read", len(got["ids"])))
        return got

    def add(index, page_ids, *args, **kwargs):
        events.append(("write", len(page_ids)))
        return real_add(index, page_ids, *args, **kwargs)

    monkeypatch.setattr(raw.collection, "get", paged_get)
    monkeypatch.setattr(ChromaIndex, "add_vectors", add)
    retriever = ProjectedRetriever(fake_encoder, projection, raw)
    reads = [n for kind, n in events if kind == "read"]
    assert sum(reads) == len(ids) and len(reads) >= 2
    # Each page is written before the next is read: never more than one page of vectors held at once.
    assert all(a[0] != b[0] for a, b in zip(events, events[1:]) if a[1] and b[1]), events
    got_ids, got_vectors = retriever.index.get_vectors()
    order = [got_ids.index(i) for i in ids]
    np.testing.assert_allclose(got_vectors[order], projection.transform_documents(vectors), atol=1e-6)
    assert retriever.index.stored_texts(ids) == TINY_DOCS


def test_rerank_mode_on_chroma_fetches_only_the_candidates_vectors(fake_encoder, tmp_path, monkeypatch):
    """Rerank mode over a Chroma collection ranks as the in-memory one does, and never reads the whole collection:
    each search fetches the stored vectors of its own candidates."""
    from qkrag.retrieval.index import ChromaIndex, IndexConfig
    from qkrag.retrieval.projected import ProjectedRetriever
    from tests.fakes import TINY_DOCS

    ids = list(TINY_DOCS)
    vectors, projection = _served(fake_encoder, TINY_DOCS)
    raw = ChromaIndex.for_encoder(IndexConfig(collection="raw-docs", path=tmp_path / "chroma"), fake_encoder)
    raw.add_vectors(ids, vectors, list(TINY_DOCS.values()))
    raw.mark_complete()
    fetched = []
    real_vectors_for = ChromaIndex.vectors_for
    monkeypatch.setattr(ChromaIndex, "get_vectors", lambda self: pytest.fail("read the whole collection"))
    monkeypatch.setattr(ChromaIndex, "vectors_for", lambda self, wanted: fetched.append(len(wanted))
                        or real_vectors_for(self, wanted))
    queries = ["where did the cat sit", "why does bread rise"]
    served = ProjectedRetriever(fake_encoder, projection, raw, mode="rerank", depth=2).search(queries, k=2)
    in_memory = ProjectedRetriever(fake_encoder, projection, (ids, vectors), mode="rerank", depth=2).search(queries, 2)
    assert [[(h.id, round(h.score, 4)) for h in row] for row in served] == \
        [[(h.id, round(h.score, 4)) for h in row] for row in in_memory]
    assert all(h.text == TINY_DOCS[h.id] for row in served for h in row)
    assert fetched and max(fetched) <= 2 * 2 < len(ids)  # the candidates of two queries, not the collection


def test_vectors_for_returns_the_stored_vectors_in_the_order_asked(fake_encoder, tmp_path):
    from qkrag.retrieval.index import ChromaIndex, IndexConfig
    from tests.fakes import TINY_DOCS

    ids = list(TINY_DOCS)
    vectors, _ = _served(fake_encoder, TINY_DOCS)
    raw = ChromaIndex.for_encoder(IndexConfig(collection="raw", path=tmp_path / "chroma", batch_size=2), fake_encoder)
    raw.add_vectors(ids, vectors)
    asked = ids[::-1][:5]
    np.testing.assert_allclose(raw.vectors_for(asked), vectors[[ids.index(i) for i in asked]], atol=1e-6)
    assert raw.vectors_for([]).shape == (0, 32)
    with pytest.raises(IndexMismatchError, match="holds no vector for id 'gone'"):
        raw.vectors_for([ids[0], "gone"])


def test_a_reading_projected_search_writes_nothing_and_refuses_an_incomplete_collection(tmp_path, fake_encoder):
    from qkrag.retrieval.hybrid import collection_bm25
    from qkrag.retrieval.index import ExactIndex, IndexConfig, build_index, collection_names, read_collection
    from qkrag.retrieval.projected import ProjectedRetriever
    from tests.fakes import TINY_DOCS, random_projection

    from qkrag.data import Corpus

    corpus = Corpus.from_texts(TINY_DOCS)
    config = IndexConfig(collection="reads", path=tmp_path / "db")
    raw = build_index(corpus, fake_encoder, config, progress=False)
    projection = random_projection(fake_encoder.dimension, fake_encoder.fingerprint, rank=8)
    reading = ProjectedRetriever(fake_encoder, projection, raw, write=False)
    assert collection_names(raw.client) == ["reads"]  # no projected collection made by a search
    exact = ProjectedRetriever(fake_encoder, projection, ExactIndex.from_chroma(raw))
    queries = ["yeast bread", "river stone"]
    assert [[h.id for h in row] for row in reading.search(queries, 3)] == \
        [[h.id for h in row] for row in exact.search(queries, 3)]
    built = ProjectedRetriever(fake_encoder, projection, raw)  # what `qkrag index --projection` does
    assert ProjectedRetriever(fake_encoder, projection, raw, write=False).index.name == built.index.name
    raw.mark_complete(False)  # a build killed midway
    for read in (lambda: ProjectedRetriever(fake_encoder, projection, raw, write=False),
                 lambda: ProjectedRetriever(fake_encoder, projection, raw), lambda: collection_bm25(raw),
                 lambda: read_collection(config, fake_encoder), lambda: ExactIndex.from_chroma(raw)):
        with pytest.raises(InputError, match="is incomplete.*rerun `qkrag index`"):
            read()


def test_a_derived_collection_is_filled_once_and_refilled_when_its_source_changes(fake_encoder, tmp_path):
    """`derived_collection` is the one fill of a collection derived from a raw one: transformed vectors, reused while
    the raw content is the same, filled anew (never served stale) once it changes."""
    from qkrag.retrieval.index import ChromaIndex, IndexConfig
    from qkrag.retrieval.projected import derived_collection
    from tests.fakes import TINY_DOCS

    ids = list(TINY_DOCS)
    vectors = fake_encoder.embed_batch(list(TINY_DOCS.values()), "document")
    raw = ChromaIndex.for_encoder(IndexConfig(collection="raw-docs", path=tmp_path / "chroma"), fake_encoder)
    raw.add_vectors(ids, vectors, list(TINY_DOCS.values()))
    raw.mark_complete()
    calls = []

    def double(v):
        calls.append(len(v))
        return 2 * v

    derived = derived_collection(raw, "raw-docs-double", "fake|double", vectors.shape[1], "ip", double)
    got_ids, got = derived.get_vectors()
    np.testing.assert_allclose(got[[got_ids.index(i) for i in ids]], 2 * vectors, atol=1e-6)
    assert derived.search_vectors(vectors[:1], 1)[0][0].text == TINY_DOCS[ids[0]]  # texts travel with the vectors
    assert sum(calls) == len(ids)
    again = derived_collection(raw, "raw-docs-double", "fake|double", vectors.shape[1], "ip", double)
    assert again.count() == len(ids) and sum(calls) == len(ids)  # current: reused, nothing transformed again
    raw.remove([ids[0]])
    raw.mark_complete()
    fresh = derived_collection(raw, "raw-docs-double", "fake|double", vectors.shape[1], "ip", double,
                               pages=[(ids[1:], vectors[1:], None)])
    assert fresh.count() == len(ids) - 1 and sum(calls) == 2 * len(ids) - 1
