"""BM25 finds the obvious document; centring and whitening do what they claim; the real-data numbers match BEIR/MTEB."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.retrieval.baselines import CenteredCosine, ExactDenseRetriever, Whitening
from qkrag.retrieval.bm25 import BM25Retriever
from qkrag.data import Corpus, load_beir
from qkrag.embed.encoders import EmbedOptions
from qkrag.errors import InputError
from qkrag.evaluate.metrics import evaluate_retriever

from tests.fakes import TOPIC_DOCS

DOCS = TOPIC_DOCS


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_texts(DOCS)


def test_centered_cosine_removes_the_common_direction() -> None:
    rng = np.random.default_rng(0)
    common = 5 * rng.normal(size=16)
    docs = common + rng.normal(size=(200, 16))  # anisotropic: every raw cosine is high
    raw = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    assert (raw @ raw.T).mean() > 0.8
    t = CenteredCosine().fit(docs)
    out = t.transform(docs)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert abs((out @ out.T)[~np.eye(200, dtype=bool)].mean()) < 0.05
    np.testing.assert_allclose(t.transform(docs[:3]), out[:3])  # a fitted transform is the same for any batch


def test_whitening_gives_identity_covariance() -> None:
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 8)) + 3.0  # correlated, shifted
    w = Whitening().fit(docs)
    z = (docs - w.mean_) @ w.components_
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(8), atol=1e-3)
    assert Whitening(n_components=3).fit(docs).transform(docs).shape == (2000, 3)


def test_transforms_refuse_misuse() -> None:
    with pytest.raises(InputError, match="not fitted"):
        CenteredCosine().transform(np.ones((2, 3)))
    t = CenteredCosine().fit(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(InputError, match="dimension 4"):
        t.transform(np.ones((2, 4)))
    with pytest.raises(InputError, match="n_components=9"):
        Whitening(n_components=9).fit(np.random.default_rng(0).normal(size=(20, 3)))


@pytest.mark.parametrize("transform", [None, CenteredCosine(), Whitening()])
def test_exact_dense_retriever(corpus, fake_encoder, transform) -> None:
    dense = ExactDenseRetriever(corpus, fake_encoder, transform=transform, options=EmbedOptions(progress=False))
    hits = dense.search(["the cat sat on the mat", "heat pump"], k=2)
    assert [row[0].id for row in hits] == ["cat", "heat"]
    assert hits[0][0].text == DOCS["cat"] and len(hits[1]) == 2


@pytest.mark.slow
@pytest.mark.shared_data
def test_scifact_reproduces_published_numbers(shared_data) -> None:
    """BEIR paper BM25: 0.665 (Elasticsearch); MTEB all-MiniLM-L6-v2: 0.645 (title + " " + text, cosine)."""
    collection = load_beir(shared_data / "scifact", "test")
    bm25 = evaluate_retriever(BM25Retriever(collection.corpus), collection)
    assert 0.66 <= bm25.primary <= 0.70, bm25
    dense = evaluate_retriever(ExactDenseRetriever(collection.corpus), collection)
    assert dense.primary == pytest.approx(0.645, abs=0.005), dense
