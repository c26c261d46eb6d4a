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


def test_neighbour_scores_count_label_agreement_per_item():
    from qkrag.analysis.aspects import neighbour_scores

    # two tight groups on two axes, labelled so that item 2 sits among the "a" vectors with label "b"
    vectors = np.array([[1, 0.0], [0.995, 0.05], [0.95, 0.3], [0, 1.0], [0.1, 0.99], [0.2, 0.98]])
    labels = ["a", "a", "b", "b", "b", "b"]
    got = neighbour_scores(vectors, labels, k=2, ndcg_at=3)
    assert got["agree@1"].tolist() == [1, 1, 0, 1, 1, 1]
    np.testing.assert_allclose(got["agree@2"], [0.5, 0.5, 0, 1, 1, 1])
    # item 0: order 1, 2, then the b group; its one relevant item is first
    assert got["ndcg@3"][0] == pytest.approx(1.0)
    # item 2 (label b): neighbours 1, 0, then 5 (b): relevant at rank 3 of 3 relevant
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert got["ndcg@3"][2] == pytest.approx((1 / np.log2(4)) / ideal)


def test_chance_scores_are_the_label_shares_and_compare_scores_gives_paired_cis():
    from qkrag.analysis.aspects import chance_scores, compare_scores

    labels = ["a"] * 3 + ["b"] * 7
    luck = chance_scores(labels, k=5, ndcg_at=3, draws=50)
    np.testing.assert_allclose(luck["agree@5"], [2 / 9] * 3 + [6 / 9] * 7)
    assert 0 < luck["ndcg@3"][0] < luck["ndcg@3"][5] < 1
    better = {"m": np.ones(10)}
    got = compare_scores(better, {"m": np.full(10, 0.25)}, n_resamples=200)["m"]
    assert got["mean"] == 1.0 and got["diff"] == pytest.approx(0.75) and got["diff_lo"] == pytest.approx(0.75)


def test_aspect_map_trained_on_labels_finds_the_labelled_aspect():
    from qkrag.analysis.aspects import (label_pairs, neighbour_positives, neighbour_scores, same_label_positives,
                                        train_aspect_map)
    rng = np.random.default_rng(0)
    n, d = 80, 16
    aspect = rng.integers(0, 4, n)  # the aspect asked for lives in dims 0-3, weakly
    other = rng.integers(0, 4, n)  # another aspect lives in dims 4-7, strongly: raw cosine follows it
    x = rng.standard_normal((n, d)) * 0.3
    x[np.arange(n), aspect] += 0.6
    x[np.arange(n), 4 + other] += 2.0
    labels = [str(a) for a in aspect]
    train, test = np.arange(0, n, 2), np.arange(1, n, 2)
    assert same_label_positives(["x", "y", "x"]) == [[2], [], [0]]
    assert len(label_pairs(x[train], same_label_positives([labels[i] for i in train]))) > 0
    assert all(len(p) == 3 and i not in p for i, p in enumerate(neighbour_positives(x, 3)))
    model = train_aspect_map(x[train], same_label_positives([labels[i] for i in train]))
    test_labels = [labels[i] for i in test]
    raw = neighbour_scores(x[test], test_labels)["agree@5"].mean()
    mapped = neighbour_scores(model.transform_documents(x[test]), test_labels)["agree@5"].mean()
    assert mapped > raw + 0.08


def test_ranked_neighbour_scores_rank_by_any_matrix_and_ignore_the_diagonal():
    from qkrag.analysis.aspects import neighbour_scores, ranked_neighbour_scores
    from qkrag.ranking import similarity

    vectors = np.array([[1, 0.0], [0.995, 0.05], [0.95, 0.3], [0, 1.0], [0.1, 0.99], [0.2, 0.98]])
    labels = ["a", "a", "b", "b", "b", "b"]
    cosine = similarity(vectors, vectors, "cosine")
    same = ranked_neighbour_scores(cosine, labels, k=2, ndcg_at=3)
    for metric, values in neighbour_scores(vectors, labels, k=2, ndcg_at=3).items():
        np.testing.assert_allclose(same[metric], values)
    # an asymmetric matrix whose diagonal is the largest entry: item 2's best other is item 5 (label b)
    scores = np.eye(6) * 10
    scores[2, 5] = 1
    assert ranked_neighbour_scores(scores, labels, k=1, ndcg_at=3)["agree@1"][2] == 1
    with pytest.raises(InputError, match="6 labels"):
        ranked_neighbour_scores(np.zeros((5, 5)), labels)


def test_label_pairs_put_query_vectors_and_judged_negatives_on_the_pairs():
    from qkrag.analysis.aspects import label_pairs

    docs = np.eye(4, dtype=np.float32)
    queries = np.arange(16, dtype=np.float32).reshape(4, 4)
    pairs = label_pairs(docs, [[1], [], [0, 3], []], queries=queries, negatives=[[2, 3], [], [1], []])
    assert pairs.positives.tolist() == [1, 0, 3]
    np.testing.assert_array_equal(pairs.queries, queries[[0, 2, 2]])
    assert pairs.negatives.tolist() == [[2, 3], [1, -1], [1, -1]]
    assert label_pairs(docs, [[1], [], [], []], negatives=[[], [], [], []]).negatives is None
    with pytest.raises(InputError, match="3 query vectors for 4 items"):
        label_pairs(docs, [[1], [], [], []], queries=queries[:3])


def test_aspect_qk_map_with_an_aspect_query_side_keeps_plain_document_vectors():
    from qkrag.analysis.aspects import ranked_neighbour_scores, same_label_positives, train_aspect_map

    rng = np.random.default_rng(0)
    n, d = 80, 16
    aspect, other = rng.integers(0, 4, n), rng.integers(0, 4, n)
    docs = rng.standard_normal((n, d)) * 0.3  # the whole text: the aspect weak, another aspect strong
    docs[np.arange(n), aspect] += 0.6
    docs[np.arange(n), 4 + other] += 2.0
    queries = rng.standard_normal((n, d)) * 0.3  # the aspect sentence: the aspect strong
    queries[np.arange(n), aspect] += 2.0
    labels = [str(a) for a in aspect]
    train, test = np.arange(0, n, 2), np.arange(1, n, 2)
    model = train_aspect_map(docs[train], same_label_positives([labels[i] for i in train]), queries=queries[train])
    test_labels = [labels[i] for i in test]
    raw = ranked_neighbour_scores(docs[test] @ docs[test].T, test_labels)["agree@5"].mean()
    mapped = model.transform_queries(queries[test]) @ model.transform_documents(docs[test]).T
    assert ranked_neighbour_scores(mapped, test_labels)["agree@5"].mean() > raw + 0.1
