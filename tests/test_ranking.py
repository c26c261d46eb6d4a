"""qkrag.ranking: the similarity spaces, exact top-k search (the ground truth for every index) and runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.ranking import SPACES, Hit, check_space, exact_search, similarity, to_run, top_k


def vectors(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def reference(queries: np.ndarray, documents: np.ndarray, space: str) -> np.ndarray:
    """The three spaces written out in numpy, higher is better."""
    q, d = queries.astype(np.float64), documents.astype(np.float64)
    if space == "cosine":
        return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    if space == "ip":
        return q @ d.T
    return -((q[:, None, :] - d[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("space", SPACES)
def test_similarity_is_the_space_s_score_higher_is_better(space) -> None:
    q, d = vectors(5, seed=1), 3 * vectors(7, seed=2)  # not unit length: cosine and ip differ
    np.testing.assert_allclose(np.asarray(similarity(q, d, space)), reference(q, d, space), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("space", SPACES)
def test_exact_search_returns_the_true_top_k_best_first_in_any_batching(space) -> None:
    q, d = vectors(23, seed=3), 2 * vectors(50, seed=4)
    expected = np.argsort(-reference(q, d, space), axis=1, kind="stable")[:, :5]
    for batch_size in (1, 4, 1024):
        scores, positions = exact_search(q, d, 5, space, batch_size=batch_size)
        assert positions.shape == scores.shape == (23, 5)
        np.testing.assert_array_equal(positions, expected)
        np.testing.assert_allclose(scores, np.take_along_axis(reference(q, d, space), expected, 1), rtol=1e-4,
                                   atol=1e-4)
        assert np.all(np.diff(scores, axis=1) <= 0)


def test_top_k_is_best_first_with_ties_to_the_lower_position() -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.9, 0.5], [3.0, 2.0, 1.0, 0.0, -1.0]], dtype=np.float32)
    values, positions = top_k(scores, 3)
    assert positions.tolist() == [[3, 1, 2], [0, 1, 2]] and positions.dtype == np.int64
    np.testing.assert_array_equal(values, scores[[[0], [1]], positions])
    assert top_k(scores, 9)[1].tolist() == [[3, 1, 2, 4, 0], [0, 1, 2, 3, 4]]  # k capped: every column, ranked
    assert top_k(np.zeros((1, 4)), 2)[1].tolist() == [[0, 1]]  # all tied: the first ones


def test_exact_search_caps_k_at_the_collection_and_handles_no_queries() -> None:
    d = vectors(3)
    scores, positions = exact_search(vectors(2, seed=1), d, 10)
    assert positions.shape == (2, 3) and sorted(positions[0]) == [0, 1, 2]
    scores, positions = exact_search(np.zeros((0, 8), np.float32), d, 2)
    assert scores.shape == positions.shape == (0, 2) and positions.dtype == np.int64


def test_exact_search_refuses_vectors_that_do_not_match() -> None:
    with pytest.raises(InputError, match=r"exact_search: query vectors \(2, 4\) and document vectors \(3, 8\) do not "
                                         r"match\. Fix: embed queries and documents with the same encoder"):
        exact_search(vectors(2, d=4), vectors(3), 1)
    with pytest.raises(InputError, match="do not match"):
        exact_search(vectors(2)[0], vectors(3), 1)  # one vector, not a matrix of them
    with pytest.raises(InputError, match=r"space: 'dot' is not a distance space.*cosine"):
        exact_search(vectors(2), vectors(3), 1, "dot")  # type: ignore[arg-type]


def test_check_space_passes_the_three_spaces_through() -> None:
    assert [check_space(s) for s in ("cosine", "ip", "l2")] == ["cosine", "ip", "l2"]
    with pytest.raises(InputError, match="'L2' is not a distance space"):
        check_space("L2")


def test_to_run_maps_query_ids_to_document_scores() -> None:
    hits = [[Hit("d1", 0.9, "text"), Hit("d2", np.float32(0.5))], []]
    run = to_run(["q1", "q2"], hits)
    assert run == {"q1": {"d1": 0.9, "d2": 0.5}, "q2": {}}
    assert type(run["q1"]["d2"]) is float  # plain floats: metric libraries and JSON want them
    with pytest.raises(dataclasses.FrozenInstanceError):
        hits[0][0].score = 1.0  # type: ignore[misc]
