"""qkrag.analysis.aspects: neighbours, agreement, similarity by pair kind, PCA maps, per-aspect embeddings (with the
tidy fake model of tests/fakes.py) and the labelled cities corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qkrag.analysis.aspects import (aspect_embeddings, aspect_neighbours, load_labelled_corpus, nearest_neighbours,
                                    neighbour_agreement, pca_2d, plot_aspect_maps, similarity_by_pair_kind)
from qkrag.data import Corpus
from qkrag.embed.encoders import EmbedOptions
from qkrag.errors import InputError

from tests.fakes import make_tidy_llm, tidy_llm_server  # noqa: F401 (the fixtures make_llm and server)

ROOT = Path(__file__).resolve().parents[2]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


PLANTED = {  # climate pairs (a, b), (c, d); cuisine pairs (a, c), (b, d); size pairs (a, d), (b, c)
    "a": "Avalon. climate: frozen snowy winters. cuisine: raw fish sushi. size: tiny hamlet.",
    "b": "Brigadoon. size: huge megacity sprawl. cuisine: spicy chili curry. climate: frozen snowy winters.",
    "c": "Camelot. cuisine: raw fish sushi. climate: hot desert sand. size: huge megacity sprawl.",
    "d": "Dunsinane. climate: hot desert sand. size: tiny hamlet. cuisine: spicy chili curry.",
}


def test_aspects_give_different_neighbours(make_llm, fake_encoder):
    corpus = Corpus.from_texts(PLANTED)
    result = aspect_neighbours(corpus, fake_encoder, make_llm(), ["climate", "cuisine", "size"], k=1,
                               options=EmbedOptions(progress=False))
    assert {k: v[0] for k, v in result["climate"].items()} == {"a": "b", "b": "a", "c": "d", "d": "c"}
    assert {k: v[0] for k, v in result["cuisine"].items()} == {"a": "c", "c": "a", "b": "d", "d": "b"}
    assert {k: v[0] for k, v in result["size"].items()} == {"a": "d", "d": "a", "b": "c", "c": "b"}


def test_aspect_embeddings_report_stats_and_user_aspects(make_llm, fake_encoder, server):
    texts = list(PLANTED.values()) + ["Erewhon. nothing is said here."]
    stats: dict = {}
    vectors = aspect_embeddings(texts, fake_encoder, make_llm(), ["climate", "What is the size of {text}"],
                                options=EmbedOptions(progress=False), stats=stats)
    assert set(vectors) == {"climate", "What is the size of {text}"}
    assert vectors["climate"].shape == (5, fake_encoder.dimension)
    assert stats["climate"].fallbacks == {"none": 1} and stats["climate"].rewritten == 4
    # The user's aspect string is the prompt itself.
    assert any(r["messages"][-1]["content"].startswith("What is the size of Avalon") for r in server.requests)
    assert cosine(vectors["climate"][0], vectors["climate"][1]) == pytest.approx(1.0, abs=1e-6)


def test_similarity_by_pair_kind():
    # Dimensions: rain, bread, memo style. Memos share the style dimension; chats have none.
    v = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1]], dtype=np.float32)
    kinds = similarity_by_pair_kind(v, ["rain", "rain", "bread", "bread"], ["chat", "memo", "chat", "memo"])
    assert kinds["same content, other style"] == pytest.approx(2 ** -0.5)
    assert kinds["same style, other content"] == pytest.approx(0.25)  # chat pair 0, memo pair 1/2
    assert kinds["unrelated"] == pytest.approx(0.0)


def test_nearest_neighbours_and_agreement():
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    assert nearest_neighbours(v, ["a", "b", "c", "d"], k=2) == {"a": ["b", "d"], "b": ["a", "d"], "c": ["d", "b"],
                                                                "d": ["c", "b"]}
    assert neighbour_agreement(v, ["x", "x", "y", "y"]) == 1.0
    assert neighbour_agreement(v, ["x", "y", "x", "y"]) == 0.0


def test_pca_is_deterministic_and_plot_writes_a_figure(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(12, 8)).astype(np.float32)
    coords = pca_2d(v)
    assert coords.shape == (12, 2)
    np.testing.assert_allclose(coords, pca_2d(v * 3.0), atol=1e-6)  # cosine geometry: scale does not matter
    labels = {"climate": ["hot", "cold"] * 6}
    path = tmp_path / "maps.png"
    fig = plot_aspect_maps({"raw": v, "climate": v[::-1]}, labels, [f"c{i}" for i in range(12)], path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2


def test_load_labelled_corpus_reads_the_cities():
    corpus, labels = load_labelled_corpus(ROOT / "data" / "cities" / "cities.jsonl", ["climate", "cuisine"], limit=12)
    assert len(corpus) == 12 and set(labels) == {"climate", "cuisine"} and len(labels["climate"]) == 12
    corpus, labels = load_labelled_corpus(ROOT / "data" / "cities" / "cities.jsonl", ["size"], ids=["oslo", "lima"])
    assert corpus.ids == ["oslo", "lima"] and labels == {"size": ["large", "megacity"]}
    with pytest.raises(InputError, match="atlantis"):
        load_labelled_corpus(ROOT / "data" / "cities" / "cities.jsonl", ["size"], ids=["atlantis"])
    with pytest.raises(InputError, match="no 'population' label"):
        load_labelled_corpus(ROOT / "data" / "cities" / "cities.jsonl", ["population"])
