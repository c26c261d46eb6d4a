"""Score-correlation similarity ignores the arbitrary scale of factor models; cosine does not."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.analysis.cosine import (closed_form_factors, cosine_similarity_matrix, fit_factors, neighbour_purity,
                                   rescale, score_correlation_pair, score_correlation_similarity,
                                   simulate_clustered_interactions)
from qkrag.errors import InputError


@pytest.fixture
def factors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 4)), rng.normal(size=(80, 4))  # items, users


def random_scales(rng: np.random.Generator, k: int) -> np.ndarray:
    # log-normal over several orders of magnitude, random signs: D only has to be invertible
    return np.exp(rng.normal(scale=3.0, size=k)) * rng.choice([-1.0, 1.0], size=k)


def test_rescaling_keeps_predictions_and_score_correlation_but_moves_cosine(factors) -> None:
    items, users = factors
    sc0, cos0, pred0 = score_correlation_similarity(items, users), cosine_similarity_matrix(items), users @ items.T
    rng = np.random.default_rng(1)
    cos_change = 0.0
    for _ in range(20):
        users2, items2 = rescale(users, items, random_scales(rng, items.shape[1]))
        np.testing.assert_allclose(users2 @ items2.T, pred0, rtol=0, atol=1e-9)
        assert np.abs(score_correlation_similarity(items2, users2) - sc0).max() < 1e-6
        cos_change = max(cos_change, np.abs(cosine_similarity_matrix(items2) - cos0).max())
    assert cos_change > 0.5


def test_invariant_under_any_invertible_reparametrisation(factors) -> None:
    items, users = factors
    M = np.random.default_rng(2).normal(size=(4, 4)) + 3 * np.eye(4)
    moved = score_correlation_similarity(items @ np.linalg.inv(M).T, users @ M)
    np.testing.assert_allclose(moved, score_correlation_similarity(items, users), atol=1e-9)


def test_matches_the_definition_on_predicted_scores(factors) -> None:
    items, users = factors
    scores = users @ items.T
    np.testing.assert_allclose(score_correlation_similarity(items, users), np.corrcoef(scores.T), atol=1e-12)
    uncentered = score_correlation_similarity(items, users, center=False)
    np.testing.assert_allclose(uncentered, cosine_similarity_matrix(scores.T), atol=1e-12)


@pytest.mark.parametrize("which", ["score_correlation", "cosine"])
def test_symmetric_bounded_with_ones_on_diagonal(factors, which) -> None:
    items, users = factors
    sim = score_correlation_similarity(items, users) if which == "score_correlation" else cosine_similarity_matrix(items)
    assert sim.shape == (12, 12)
    np.testing.assert_array_equal(sim, sim.T)
    np.testing.assert_array_equal(np.diag(sim), 1.0)
    assert np.all(np.abs(sim) <= 1.0)


def test_cosine_matches_manual_formula(factors) -> None:
    items, _ = factors
    a, b = items[3], items[7]
    assert cosine_similarity_matrix(items)[3, 7] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_pair_form_equals_matrix_entry(factors) -> None:
    items, users = factors
    assert score_correlation_pair(items[2], items[5], users) == pytest.approx(
        score_correlation_similarity(items, users)[2, 5], abs=1e-12)


def test_rescale_does_not_mutate_inputs(factors) -> None:
    items, users = factors
    before = items.copy()
    rescale(users, items, np.full(4, 2.0))
    np.testing.assert_array_equal(items, before)


# --- bad input: InputError whose message names the input, the problem and the fix --------------------------------

def assert_clear(err: pytest.ExceptionInfo, name: str) -> None:
    msg = str(err.value)
    assert msg.startswith(f"{name}:") and "Fix:" in msg, msg


def test_mismatched_dims(factors) -> None:
    items, users = factors
    with pytest.raises(InputError) as err:
        score_correlation_similarity(items, users[:, :3])
    assert_clear(err, "item_factors")
    assert "4 dims" in str(err.value) and "3" in str(err.value)


def test_zero_variance_item_is_named(factors) -> None:
    items, users = factors
    items = items.copy()
    items[5] = 0.0
    with pytest.raises(InputError) as err:
        score_correlation_similarity(items, users)
    assert_clear(err, "item_factors")
    assert "[5]" in str(err.value) and "variance" in str(err.value)


def test_users_without_spread(factors) -> None:
    items, _ = factors
    with pytest.raises(InputError) as err:
        score_correlation_similarity(items, np.ones((10, 4)))  # every user identical: no score varies
    assert_clear(err, "item_factors")


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda it, us: score_correlation_similarity(it[0], us), "item_factors"),
        (lambda it, us: score_correlation_similarity(it, us[:1]), "user_factors"),
        (lambda it, us: score_correlation_similarity(it, np.where(us > 2, np.nan, us)), "user_factors"),
        (lambda it, us: score_correlation_pair(it[0], it[1, :3], us), "item_b"),
        (lambda it, us: cosine_similarity_matrix(np.zeros((3, 2))), "vectors"),
        (lambda it, us: rescale(us, it, np.ones(3)), "d"),
        (lambda it, us: rescale(us, it, np.array([1.0, 0.0, 1.0, 1.0])), "d"),
        (lambda it, us: fit_factors(us, 2, 1.0, scheme=3), "scheme"),
        (lambda it, us: neighbour_purity(np.eye(3), np.arange(4)), "sim"),
    ],
)
def test_bad_input_raises_clear_error(factors, call, name) -> None:
    items, users = factors
    with pytest.raises(InputError) as err:
        call(items, users)
    assert_clear(err, name)


# --- the reproduction helpers -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_data() -> tuple[np.ndarray, np.ndarray]:
    return simulate_clustered_interactions(n_users=300, n_clusters=3, items_per_cluster=5, seed=0)


def test_simulation_is_deterministic_and_clustered(small_data) -> None:
    X, labels = small_data
    X2, _ = simulate_clustered_interactions(n_users=300, n_clusters=3, items_per_cluster=5, seed=0)
    np.testing.assert_array_equal(X, X2)
    assert X.shape == (300, 15) and set(np.unique(X)) <= {0.0, 1.0}
    assert neighbour_purity(np.corrcoef(X.T), labels) > 0.9


def test_gradient_training_reaches_the_closed_form(small_data) -> None:
    X, _ = small_data
    # scheme 1: only the product A·Bᵀ is determined
    A, B = fit_factors(X, k=3, lam=50.0, scheme=1)
    Ac, Bc = closed_form_factors(X, k=3, lam=50.0, scheme=1)
    np.testing.assert_allclose(A @ B.T, Ac @ Bc.T, atol=1e-4)
    # ... and the score correlation with it, whatever scale training happened to pick
    np.testing.assert_allclose(score_correlation_similarity(B, X @ A), score_correlation_similarity(Bc, X @ Ac),
                               atol=1e-4)
    # scheme 2: unique up to rotation, so cosine is well defined and matches
    A, B = fit_factors(X, k=3, lam=2.0, scheme=2)
    Ac, Bc = closed_form_factors(X, k=3, lam=2.0, scheme=2)
    np.testing.assert_allclose(A @ B.T, Ac @ Bc.T, atol=1e-4)
    np.testing.assert_allclose(cosine_similarity_matrix(B), cosine_similarity_matrix(Bc), atol=1e-4)


def test_neighbour_purity_extremes() -> None:
    labels = np.array([0, 0, 1, 1])
    perfect = (labels[:, None] == labels[None, :]).astype(float)
    assert neighbour_purity(perfect, labels) == 1.0
    assert neighbour_purity(1.0 - perfect, labels) == 0.0
