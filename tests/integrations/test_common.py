"""What the LangChain and LlamaIndex integrations share: the two sides, and σ for every hybrid hit."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.integrations.common import Sides, search
from tests.fakes import random_projection

TEXTS = ["bread rises with yeast", "the cat sat on the mat", "yeast eats sugar in dough", "heat pumps move heat",
         "sourdough starter needs flour", "rising dough and warm kitchens"]


def test_sides_give_qkrag_logits_and_probabilities(fake_encoder, tmp_path):
    projection = random_projection(32, fake_encoder.fingerprint)
    projection.save(tmp_path / "p")
    sides = Sides(fake_encoder, tmp_path / "p")  # a saved folder works like the fitted projection
    qv, dv = fake_encoder.embed_batch(["why does dough rise"], "query"), fake_encoder.embed_batch(TEXTS, "document")
    dots = sides.queries(["why does dough rise"]) @ sides.documents(TEXTS).T
    np.testing.assert_allclose(dots + projection.bias_, projection.score_matrix(qv, dv), atol=1e-4)
    np.testing.assert_allclose(sides.probability(dots), projection.predict_proba_matrix(qv, dv), atol=1e-5)
    with pytest.raises(InputError, match="needs a projection"):
        Sides(fake_encoder).probability(dots)


def test_every_hybrid_hit_gets_the_projections_probability(fake_encoder):
    from qkrag.data import Corpus, Document
    from qkrag.retrieval.bm25 import BM25Retriever
    from qkrag.retrieval.hybrid import FusionConfig, HybridRetriever
    from qkrag.retrieval.index import ExactIndex
    from qkrag.retrieval.projected import ProjectedRetriever

    ids = [f"d{i}" for i in range(len(TEXTS))]
    projection = random_projection(32, fake_encoder.fingerprint)
    index = ExactIndex(ids, fake_encoder.embed_batch(TEXTS, "document"), texts=dict(zip(ids, TEXTS)),
                       fingerprint=fake_encoder.fingerprint)
    dense = ProjectedRetriever(fake_encoder, projection, index)
    corpus = Corpus(tuple(Document(i, t) for i, t in zip(ids, TEXTS)), "tiny")
    hybrid = HybridRetriever(dense, BM25Retriever(corpus), FusionConfig(depth=2))  # dense finds 2: BM25 adds more
    hits = search(hybrid, "why does dough rise with yeast", 6)
    assert any(h.id not in {d.id for d in dense.search(["why does dough rise with yeast"], 2)[0]} for h in hits)
    expected = projection.predict_proba_matrix(fake_encoder.embed_batch(["why does dough rise with yeast"], "query"),
                                               fake_encoder.embed_batch([TEXTS[ids.index(h.id)] for h in hits],
                                                                        "document"))[0]
    np.testing.assert_allclose([h.relevance for h in hits], expected, atol=1e-5)
    with pytest.raises(InputError, match="query"):
        search(hybrid, " ", 3)


def test_every_store_score_maps_back_to_the_dot_product(fake_encoder):
    """Cosine and squared L2 of augmented vectors, and Chroma's ip distance, each give back s·q·k exactly."""
    from qkrag.integrations.common import round_up

    projection = random_projection(32, fake_encoder.fingerprint)
    sides = Sides(fake_encoder, projection, augment=True, max_norm=50.0)
    q, d = sides.queries(["why does dough rise"])[0].astype(np.float64), sides.documents(TEXTS).astype(np.float64)
    dots = d @ q
    scores = {"cosine": 1 - dots / (np.linalg.norm(d, axis=1) * np.linalg.norm(q)), "l2": ((d - q) ** 2).sum(1),
              "ip": 1 - dots, "cosine_similarity": dots / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))}
    b = sides.bounds
    slack = 1e-6 * (b.query ** 2 + b.document ** 2)  # float32 vectors: their norms hold to ~1e-7 of R² + M²
    for kind, score in scores.items():
        np.testing.assert_allclose(sides.dot_from_score(score, kind), dots, atol=slack, err_msg=kind)
        np.testing.assert_allclose(sides.relevance(score, kind), sides.probability(dots), atol=slack, err_msg=kind)
    for kind in ("cosine", "l2"):  # the bare vectors: their norms vary, so only ip maps back
        with pytest.raises(InputError, match="does not order raw projected vectors"):
            Sides(fake_encoder, projection).dot_from_score(0.5, kind)
    with pytest.raises(InputError, match="'dot'.*not a score"):
        sides.dot_from_score(0.5, "dot")
    assert round_up(1.14592) == 1.15 and round_up(10.6001) == 10.7 and round_up(0.0123401) == 0.0124
