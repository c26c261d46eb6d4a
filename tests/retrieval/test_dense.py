"""Dense retrieval over either index: query texts embedded and searched, hits carrying their documents' texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import NO_CACHE, build_quietly, hash_encoder
from qkrag.data import Corpus
from qkrag.retrieval.connection import IndexConfig
from qkrag.retrieval.dense import DenseRetriever
from qkrag.retrieval.exact import ExactIndex


@pytest.fixture
def config(tmp_path: Path) -> IndexConfig:
    return IndexConfig(collection="test-docs", path=tmp_path / "chroma", batch_size=64)


def test_dense_retriever_over_chroma_and_exact(config: IndexConfig) -> None:
    corpus = Corpus.from_texts({"a": "copper lantern harbor", "b": "violin forest meadow", "c": "quartz orbit falcon"})
    encoder = hash_encoder()
    chroma = build_quietly(corpus, encoder, config)
    exact = ExactIndex(corpus.ids, encoder.embed_batch(corpus.contents, "document"), "cosine",
                       texts=dict(zip(corpus.ids, corpus.contents)))
    for index in (chroma, exact):
        hits = DenseRetriever(encoder, index, options=NO_CACHE).search(["violin meadow", "orbit"], k=2)
        assert [row[0].id for row in hits] == ["b", "c"]
        assert hits[0][0].text == "violin forest meadow"
        assert hits[0][0].score > hits[0][1].score and -1.0 <= hits[0][1].score <= 1.0
    for index in (chroma, exact):  # k larger than the collection: every document once, no padding
        scores, ids = index.query(encoder.embed_batch(["orbit", "violin"], "query"), 50)
        assert scores.shape == ids.shape == (2, 3) and sorted(ids[0]) == ["a", "b", "c"]


@pytest.mark.slow
def test_default_model_end_to_end(config: IndexConfig) -> None:
    from qkrag.embed.encoders import make_encoder

    corpus = Corpus.from_texts({
        "cats": "Cats are small domesticated felines that purr and hunt mice.",
        "rust": "Rust is a systems programming language focused on memory safety.",
        "paris": "Paris is the capital of France, home of the Eiffel Tower.",
        "bread": "Sourdough bread rises thanks to wild yeast and lactic acid bacteria.",
    })
    encoder = make_encoder()
    index = build_quietly(corpus, encoder, config)
    assert index.dimension == 384 and index.fingerprint == encoder.fingerprint
    hits = DenseRetriever(encoder, index, options=NO_CACHE).search(
        ["which language prevents memory bugs?", "what is the French capital?", "kitten purring"], k=2)
    assert [row[0].id for row in hits] == ["rust", "paris", "cats"]
    assert 0.3 < hits[0][0].score <= 1.0 and hits[0][0].text == corpus.get("rust").content
