"""The exact in-memory index is exact search, and recall@k measures an approximate top-k against it."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.retrieval.exact import ExactIndex, recall_at_k


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_exact_index_is_exact_search(space: str) -> None:
    from qkrag.ranking import exact_search

    rng = np.random.default_rng(1)
    docs, queries = rng.normal(size=(200, 16)) * rng.uniform(0.1, 5, size=(200, 1)), rng.normal(size=(7, 16))
    scores, ids = ExactIndex([f"d{i}" for i in range(200)], docs, space).query(queries, 5)  # type: ignore[arg-type]
    want_scores, want_pos = exact_search(queries.astype(np.float32), docs.astype(np.float32), 5, space)  # type: ignore
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert (ids == np.array([f"d{i}" for i in range(200)], dtype=object)[want_pos]).all()


def test_exact_index_rejects_misshapen_input() -> None:
    with pytest.raises(InputError):
        ExactIndex(["a", "b"], np.zeros((3, 4)))


def test_recall_at_k_is_the_mean_share_of_the_exact_top_k_found() -> None:
    exact = np.array([["a", "b"], ["c", "d"]], dtype=object)
    approx = np.array([["b", "x"], ["d", "c"]], dtype=object)  # half of the first row found, all of the second
    assert recall_at_k(approx, exact) == pytest.approx(0.75)
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.zeros((0, 2), object), np.zeros((0, 2), object)) == 1.0  # no queries: nothing missed
