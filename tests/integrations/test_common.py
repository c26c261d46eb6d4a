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
