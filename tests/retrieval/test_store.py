"""The Chroma collection format: what a collection records (encoder, space, HNSW settings, completeness, count and
content hash), how it is reopened, read and searched, and derived collections that follow their source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fakes import NO_CACHE, WORDS, build_quietly, hash_encoder, tiny_corpus
from qkrag.data import Corpus
from qkrag.errors import IndexMismatchError, InputError, QkragError
from qkrag.retrieval.build import build_index
from qkrag.retrieval.connection import IndexConfig, connect
from qkrag.retrieval.dense import DenseRetriever
from qkrag.retrieval.exact import ExactIndex, recall_at_k
from qkrag.retrieval.store import ChromaIndex, corpus_hash, qkrag_metadata, read_collection, recorded_encoder


@pytest.fixture
def config(tmp_path: Path) -> IndexConfig:
    return IndexConfig(collection="test-docs", path=tmp_path / "chroma", batch_size=64)


def test_collection_records_encoder_space_and_hnsw_settings(config: IndexConfig) -> None:
    config.space, config.ef_search, config.M = "ip", 123, 24
    index = build_quietly(tiny_corpus(20), hash_encoder(), config)
    assert index.space == "ip"  # Chroma's default would have been l2
    assert index.hnsw_settings["ef_search"] == 123 and index.hnsw_settings["max_neighbors"] == 24
    meta = index.metadata
    assert meta["qkrag:encoder"] == "hash-32" and meta["qkrag:dimension"] == 32
    assert meta["qkrag:complete"] is True and meta["qkrag:version"]
    assert index.collection._embedding_function is None  # Chroma's downloading default was never built


def test_reopening_applies_new_ef_search_but_refuses_another_space(config: IndexConfig) -> None:
    build_quietly(tiny_corpus(10), hash_encoder(), config)
    config.ef_search = 321
    assert ChromaIndex.for_encoder(config, hash_encoder(), create=False).hnsw_settings["ef_search"] == 321
    config.space = "l2"
    with pytest.raises(IndexMismatchError, match="'cosine'.*another collection name"):
        ChromaIndex.for_encoder(config, hash_encoder())


@pytest.mark.slow  # needs a graph big enough for ef_search to matter
def test_a_new_ef_search_takes_effect_when_the_collection_is_reopened(config: IndexConfig) -> None:
    from chromadb.api.client import SharedSystemClient

    rng = np.random.default_rng(0)
    docs, queries = rng.standard_normal((3000, 64), np.float32), rng.standard_normal((50, 64), np.float32)
    ids = [f"r{i}" for i in range(len(docs))]
    truth = ExactIndex(ids, docs).query(queries, 10)[1]
    config.ef_search, config.batch_size = 10, 1000
    index = ChromaIndex.open(config, "random-64", 64)
    index.add_vectors(ids, docs)
    index.mark_complete()
    low = recall_at_k(index.query(queries, 10)[1], truth)
    SharedSystemClient.clear_system_cache()  # Chroma keeps a loaded graph's ef_search until its system goes
    config.ef_search = 400
    high = recall_at_k(ChromaIndex.open(config, "random-64", 64).query(queries, 10)[1], truth)
    assert low < 0.9 and high > 0.97 and high > low + 0.1


def test_opening_a_missing_collection_without_create_says_how_to_build_it(config: IndexConfig) -> None:
    with pytest.raises(InputError, match="does not exist.*qkrag index"):
        ChromaIndex.for_encoder(config, hash_encoder(), create=False)


def test_stored_vectors_round_trip(config: IndexConfig) -> None:
    corpus = tiny_corpus(40)
    index = build_quietly(corpus, hash_encoder(), config)
    ids, vectors = index.get_vectors()
    expected = hash_encoder().embed_batch([corpus.get(i).content for i in ids], "document")
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)


def test_opening_with_another_encoder_is_refused(config: IndexConfig) -> None:
    build_quietly(tiny_corpus(10), hash_encoder(dim=32), config)
    with pytest.raises(IndexMismatchError, match=r"'hash-32'.*'other-32'.*another collection name, or rebuild"):
        build_quietly(tiny_corpus(10), hash_encoder(dim=32, name="other"), config)
    with pytest.raises(IndexMismatchError, match=r"32-d.*16-d"):
        ChromaIndex.for_encoder(config, hash_encoder(dim=16, name="hash"))
    index = ChromaIndex.for_encoder(config, hash_encoder())
    with pytest.raises(IndexMismatchError):
        DenseRetriever(hash_encoder(name="other"), index)


def test_an_incomplete_index_refuses_queries(config: IndexConfig) -> None:
    index = build_quietly(tiny_corpus(10), hash_encoder(), config)
    index.mark_complete(False)
    with pytest.raises(QkragError, match="incomplete.*rerun `qkrag index`"):
        index.query(np.ones((1, 32), np.float32), 3)


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_chroma_agrees_with_exact_search(config: IndexConfig, space: str) -> None:
    config.space = space  # type: ignore[assignment]
    corpus = tiny_corpus(300)
    encoder = hash_encoder()
    index = build_quietly(corpus, encoder, config)
    exact = ExactIndex.from_chroma(index)
    queries = encoder.embed_batch([" ".join(WORDS[i : i + 2]) for i in range(10)], "query")
    c_scores, c_ids = index.query(queries, 10)
    e_scores, e_ids = exact.query(queries, 10)
    assert c_ids.shape == e_ids.shape == (10, 10)
    assert recall_at_k(c_ids, e_ids) >= 0.98  # tiny data: HNSW at our settings is essentially exact
    # the scores are the same readable similarities, not Chroma's distances
    np.testing.assert_allclose(c_scores[:, 0], e_scores[:, 0], rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(c_scores, axis=1) <= 1e-6)  # best first


def test_similarity_scores_have_the_documented_meaning(config: IndexConfig) -> None:
    config.space = "ip"
    index = ChromaIndex.open(config, "manual", 2)
    index.add_vectors(["a", "b"], np.array([[2.0, 0.0], [0.0, 1.0]]), ["A", "B"])
    index.mark_complete()
    scores, ids = index.query(np.array([[3.0, 1.0]]), 2)
    assert list(ids[0]) == ["a", "b"] and scores[0] == pytest.approx([6.0, 1.0], abs=1e-5)  # dot products
    l2 = index.sibling("manual-l2", "manual", 2, space="l2")
    l2.add_vectors(["a", "b"], np.array([[2.0, 0.0], [0.0, 1.0]]))
    l2.mark_complete()
    scores, ids = l2.query(np.array([[3.0, 1.0]]), 2)
    assert list(ids[0]) == ["a", "b"] and scores[0] == pytest.approx([-2.0, -9.0], abs=1e-5)  # minus squared L2


def test_a_sibling_collection_holds_other_vectors_beside_the_raw_one(config: IndexConfig) -> None:
    corpus = tiny_corpus(50)
    raw = build_quietly(corpus, hash_encoder(), config)
    ids, vectors = raw.get_vectors()
    projected = raw.sibling("test-docs-projected", "hash-32|proj", 8)
    projected.add_vectors(ids, vectors[:, :8] * 2, [corpus.get(i).content for i in ids])
    projected.add_vectors(ids, vectors[:, :8] * 2, [corpus.get(i).content for i in ids])  # upsert: still once
    projected.mark_complete()
    assert projected.space == "ip" and projected.count() == 50 and raw.count() == 50
    assert projected.client is raw.client
    hit = projected.search_vectors(vectors[:1, :8] * 2, 1)[0][0]
    assert hit.text == corpus.get(hit.id).content
    with pytest.raises(IndexMismatchError):
        projected.add_vectors(ids, vectors, None)  # 32-d into an 8-d collection
    projected.delete()
    assert "test-docs-projected" not in [c.name for c in raw.client.list_collections()]


def test_source_hash_follows_the_content_not_the_count(config: IndexConfig) -> None:
    corpus = tiny_corpus(20)
    first = build_quietly(corpus, hash_encoder(), config).source_hash
    assert build_quietly(corpus, hash_encoder(), config).source_hash == first  # a re-run changes nothing
    edited = Corpus.from_texts({d.id: (d.text + " violin" if d.id == "d3" else d.text) for d in corpus})
    assert build_quietly(edited, hash_encoder(), config).source_hash != first  # same ids, same count, one text changed
    # A collection qkrag did not build from a corpus: the hash is computed over its ids and vectors.
    other = ChromaIndex.open(IndexConfig(collection="manual-docs", path=config.path), "manual", 2)
    other.add_vectors(["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]]))
    other.mark_complete()
    before = other.source_hash
    other.add_vectors(["b"], np.array([[0.5, 0.5]]))
    other.mark_complete()
    assert other.source_hash != before
    # Read page by page, never all at once; the same content added in another order, read in other pages, hashes alike.
    same = ChromaIndex.open(IndexConfig(collection="same-docs", path=config.path, batch_size=1), "manual", 2)
    same.add_vectors(["b", "a"], np.array([[0.5, 0.5], [1.0, 0.0]]))
    same.mark_complete()
    same.get_vectors = lambda: pytest.fail("read every vector at once")
    assert same.source_hash == other.source_hash


def test_a_sibling_derived_from_other_content_is_emptied_not_reused(config: IndexConfig) -> None:
    """The projection and bench code call `sibling(name, fingerprint, dim, space)` and reuse it when it is complete
    with the right count: after the documents change (same ids, new texts) that must not serve the old vectors."""
    corpus = tiny_corpus(20)
    raw = build_quietly(corpus, hash_encoder(), config)

    def derived(raw: ChromaIndex) -> ChromaIndex:  # what ProjectedRetriever / bench do, unchanged
        sibling = raw.sibling("test-docs-derived", "hash-32|half", 16, "ip")
        if not (sibling.complete and sibling.count() == raw.count()):
            sibling.mark_complete(False)
            ids, vectors = raw.get_vectors()
            texts = raw.stored_texts(ids)
            sibling.add_vectors(ids, vectors[:, :16], [texts[i] for i in ids])
            sibling.mark_complete(True)
        return sibling

    old = derived(raw)
    assert old.is_current(raw.source_hash)
    edited = Corpus.from_texts({d.id: f"violin quartz {d.id}" for d in corpus})  # same ids, same count
    raw = build_quietly(edited, hash_encoder(), config)
    stale = raw.sibling("test-docs-derived", "hash-32|half", 16, "ip")
    assert not stale.is_current(raw.source_hash) and stale.count() == 0 and not stale.complete
    fresh = derived(raw)
    assert fresh.is_current(raw.source_hash)
    hit = fresh.search_vectors(hash_encoder().embed_batch(["violin quartz d5"], "query")[:, :16], 1)[0][0]
    assert hit.text == edited.get(hit.id).content  # new texts, not the old ones
    assert derived(raw).is_current(raw.source_hash)  # and a re-run reuses it
    # An explicit source hash works too, for vectors derived from something other than this collection.
    pinned = raw.sibling("test-docs-pinned", "x", 4, "ip", source_hash="h1")
    assert pinned.metadata["qkrag:derived_from"] == "h1" and not pinned.is_current("h1")
    pinned.add_vectors(["a"], np.ones((1, 4)))
    pinned.mark_complete()
    assert pinned.is_current("h1") and not pinned.is_current("h2")
    assert raw.sibling("test-docs-pinned", "x", 4, "ip", source_hash="h2").count() == 0


def test_read_collection_reads_everything_and_writes_nothing(tmp_path):
    encoder = hash_encoder()
    corpus = Corpus.from_texts({"b": "bread rises with yeast", "a": "chains need oil", "c": "cats sit on mats"})
    config = IndexConfig(collection="tiny", path=tmp_path / "chroma", ef_search=123)
    build_index(corpus, encoder, config, NO_CACHE)

    def state():
        return {c.name: (c.metadata, c.count(), c.configuration["hnsw"]) for c in connect(config).list_collections()}

    before = state()
    ids, vectors, texts, space = read_collection(IndexConfig(collection="tiny", path=tmp_path / "chroma"), encoder)
    assert ids == ["a", "b", "c"] and texts == {d.id: d.content for d in corpus} and space == "cosine"
    stored = dict(zip(*ChromaIndex.for_encoder(config, encoder, create=False).get_vectors()))
    np.testing.assert_allclose(vectors, np.stack([stored[i] for i in ids]))
    assert state() == before  # ChromaIndex.open would have applied ef_search=100
    with pytest.raises(InputError, match="does not exist"):
        read_collection(IndexConfig(collection="nope", path=tmp_path / "chroma"), encoder)
    with pytest.raises(InputError, match="no Chroma database"):
        read_collection(IndexConfig(collection="tiny", path=tmp_path / "absent"), encoder)
    assert not (tmp_path / "absent").exists()
    with pytest.raises(IndexMismatchError):
        read_collection(IndexConfig(collection="tiny", path=tmp_path / "chroma"), hash_encoder(dim=8))


def test_a_collection_in_another_space_can_be_read(tmp_path, fake_encoder):
    from qkrag.data import Document

    corpus = Corpus([Document(f"d{i}", f"text number {i} about thing {i % 3}") for i in range(6)], source="mem")
    build_index(corpus, fake_encoder, IndexConfig(collection="ip-docs", path=tmp_path / "db", space="ip"),
                progress=False)
    read = ChromaIndex.for_encoder(IndexConfig(collection="ip-docs", path=tmp_path / "db"), fake_encoder,
                                   create=False)
    assert read.space == "ip" and read.count() == 6


@pytest.mark.parametrize("bad, problem", [
    (lambda v: np.zeros_like(v), "all zero"),
    (lambda v: np.where(np.arange(v.shape[1]) == 0, np.nan, v), "NaN or infinite"),
    (lambda v: [list(row[:-1]) if i == 1 else list(row) for i, row in enumerate(v)], "different lengths"),
])
def test_every_vector_entering_an_index_is_checked(tmp_path, bad, problem):
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    with pytest.raises(QkragError, match=problem):
        ExactIndex(["a", "b", "c"], bad(vectors))
    index = ChromaIndex.open(IndexConfig(collection="checked", path=tmp_path / "db"), "enc", 8)
    with pytest.raises(QkragError, match=problem):
        index.add_vectors(["a", "b", "c"], bad(vectors))
    assert index.count() == 0


def test_a_completed_build_records_its_count_and_content_hash_and_a_write_clears_them(config: IndexConfig) -> None:
    corpus = tiny_corpus(12)
    index = build_quietly(corpus, hash_encoder(), config)
    assert index.recorded_count == 12
    assert index.content_hash == corpus_hash("hash-32", corpus.ids, corpus.contents) == index.source_hash
    index.add_vectors(["extra"], hash_encoder().embed_batch(["violin"], "document"))
    assert index.recorded_count == -1 and index.content_hash == ""


def test_qkrag_metadata_is_what_recorded_encoder_reads_back() -> None:
    meta = {"owner:key": "kept", **qkrag_metadata("enc-8", 8, "ip", complete=False)}
    assert recorded_encoder(meta) == "enc-8" and meta["qkrag:dimension"] == 8 and meta["qkrag:space"] == "ip"
    assert recorded_encoder({"owner:key": "kept"}) is None  # a collection qkrag did not make
