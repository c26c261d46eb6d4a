"""The training pieces: batching, mining, masking, losses, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.evaluate.calibration import expected_calibration_error
from qkrag.errors import InputError
from qkrag.projection.model import QKProjection
from qkrag.projection.data import Pairs
from qkrag.projection.calibrate import calibration_hits, platt_scale
from qkrag.projection.train import (TrainConfig, canonical_rows, initial_maps, make_batches,
                                    mine_hard_negatives)
from qkrag.projection.model import train_projection


def test_batches_never_hold_a_positive_twice_and_cover_every_pair():
    positives = np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 0, 1])
    batches = make_batches(positives, 4, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(12))
    for batch in batches:
        assert len(batch) <= 4
        assert len(set(positives[batch].tolist())) == len(batch)


def test_canonical_rows_merge_duplicate_documents():
    docs = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [1, 1]], np.float32)
    assert canonical_rows(docs).tolist() == [0, 1, 0, 1, 4]


def test_mined_negatives_exclude_known_positives_including_duplicates():
    docs = np.eye(6, dtype=np.float32)
    docs[5] = docs[0]  # document 5 is a copy of document 0, a positive: it must not come back as a negative
    q = np.array([[1, 0.5, 0.4, 0.3, 0.2, 0], [0, 1, 0.9, 0, 0, 0]], np.float32)
    pairs = Pairs(q, np.array([0, 1]), docs)
    mined = mine_hard_negatives(pairs, canonical_rows(docs), pool=3)
    assert mined[0].tolist() == [1, 2, 3]
    assert 1 not in mined[1].tolist() and mined[1][0] == 2


def test_explicit_negatives_take_precedence():
    docs = np.eye(4, dtype=np.float32)
    pairs = Pairs(docs[:2], np.array([0, 1]), docs, negatives=np.array([[3, -1], [-1, -1]]))
    mined = mine_hard_negatives(pairs, canonical_rows(docs), pool=2)
    assert mined[0].tolist() == [3, -1]
    assert 1 not in mined[1].tolist()


def test_initial_maps_identity_or_orthonormal_pca():
    docs = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    np.testing.assert_array_equal(initial_maps(docs, 6), np.eye(6))
    pca = initial_maps(docs, 3)
    np.testing.assert_allclose(pca @ pca.T, np.eye(3), atol=1e-5)


def test_platt_scaling_recovers_a_known_sigmoid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20_000)
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(4.0 * x - 1.0)))).astype(float)
    s, b = platt_scale(x, y, 1.0, 0.0)
    assert s == pytest.approx(4.0, rel=0.1) and b == pytest.approx(-1.0, abs=0.15)


def test_calibrated_probabilities_have_low_ece_on_validation_pairs():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(150, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    q = rng.normal(size=(300, 16)).astype(np.float32)
    top = np.argsort(-(q @ docs.T), 1)[:, :3]
    pairs = Pairs(np.repeat(q, 3, 0), top.ravel(), docs, query_ids=tuple(np.repeat(np.arange(300), 3)))
    train, val = pairs.split(0.3, seed=0)
    model = QKProjection(config=TrainConfig(epochs=1, progress=False)).fit(train, val)
    assert model.validation_["calibrated"]
    dots, labels, _ = calibration_hits(model.Q_, model.K_, val, 10)
    assert expected_calibration_error(model.probability(dots), labels) < 0.05


def test_config_errors_name_the_field_and_value():
    with pytest.raises(InputError, match=r"TrainConfig.epochs: 0 must be positive. Fix: set epochs > 0"):
        TrainConfig(epochs=0).check()
    with pytest.raises(InputError, match=r"TrainConfig.random_negatives: -3 is negative"):
        TrainConfig(random_negatives=-3).check()
    pairs = Pairs(np.eye(4, dtype=np.float32), np.arange(4), np.eye(4, dtype=np.float32))
    with pytest.raises(InputError, match=r"variant: 'big' is not a projection variant"):
        train_projection(pairs, variant="big")
    with pytest.raises(InputError, match="4 queries are too few"):
        train_projection(pairs, TrainConfig(validation_fraction=0.01, progress=False))


def test_validation_must_share_the_document_matrix():
    docs = np.eye(4, dtype=np.float32)
    pairs = Pairs(docs, np.arange(4), docs)
    other = Pairs(docs[:2], np.arange(2), np.eye(4, dtype=np.float32) * 2)
    with pytest.raises(InputError, match="another document matrix"):
        QKProjection(config=TrainConfig(progress=False)).fit(pairs, other)


def test_judged_queries_are_held_out_by_document_by_default():
    from qkrag.projection.train import holdout_for

    docs = np.eye(4, dtype=np.float32)
    judged = Pairs(docs, np.arange(4), docs, origin="judged queries")
    assert TrainConfig().holdout == "auto"
    assert holdout_for(judged, "auto") == "document" and holdout_for(judged, "query") == "query"
    assert holdout_for(Pairs(docs, np.arange(4), docs, origin="synthetic pairs"), "auto") == "query"


def test_a_residual_rank_moves_the_maps_by_a_low_rank_change_from_the_start():
    """With residual_rank=k training changes Q and K by A·Bᵀ of rank <= k from their start; the saved maps are the
    whole matrices, so every loader and export route reads them as any other QK projection."""
    from qkrag.projection.train import fit_maps

    rng = np.random.default_rng(0)
    docs = rng.normal(size=(60, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:40] + 0.5 * rng.normal(size=(40, 16)).astype(np.float32)
    pairs = Pairs(queries, np.arange(40), docs)
    config = TrainConfig(epochs=5, learning_rate=1e-2, residual_rank=2, select=False, calibrate=False,
                         progress=False, random_negatives=20)
    fitted = fit_maps(pairs, None, config)
    start = initial_maps(docs, 16)
    for moved in (fitted.Q - start, fitted.K - start):
        assert np.abs(moved).max() > 1e-3  # it trained
        assert np.linalg.matrix_rank(moved, tol=1e-4) <= 2
    with pytest.raises(InputError, match="residual_rank"):
        TrainConfig(residual_rank=0).check()


def test_a_full_softmax_contrasts_every_document_instead_of_a_sample():
    """With full_softmax every document is a negative in every batch, so the number of sampled negatives no longer
    matters; without it, it does."""
    from qkrag.projection.train import fit_maps

    rng = np.random.default_rng(0)
    docs = rng.normal(size=(50, 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    pairs = Pairs(docs[:30] + 0.3 * rng.normal(size=(30, 8)).astype(np.float32), np.arange(30), docs)

    def trained(full: bool, sampled: int) -> np.ndarray:
        config = TrainConfig(epochs=3, learning_rate=1e-2, select=False, calibrate=False, progress=False,
                             full_softmax=full, random_negatives=sampled)
        return fit_maps(pairs, None, config).Q

    assert np.array_equal(trained(True, 5), trained(True, 40))
    assert not np.array_equal(trained(False, 5), trained(False, 40))


def test_query_negatives_teach_that_a_question_is_not_its_answer():
    """Queries and question posts share a 'question' direction the answers lack, so cosine ranks a query's post above
    its answer. Trained only against other answers (no sampled or mined negatives, which would bring the posts in),
    the map never meets a question-shaped negative; with query_negatives the batch's own queries are that negative,
    and on held-out queries the answer rises above the post."""
    from qkrag.projection.train import fit_maps

    rng = np.random.default_rng(0)
    n, d = 80, 16
    style = np.eye(d, dtype=np.float32)[0]
    answers = rng.normal(size=(n, d)).astype(np.float32)
    answers[:, 0] = 0.0
    answers /= np.linalg.norm(answers, axis=1, keepdims=True)
    def asking(weight):
        v = weight * answers + style + 0.05 * rng.normal(size=(n, d)).astype(np.float32)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    queries, posts = asking(0.8), asking(0.6)
    docs = np.concatenate([answers, posts])
    train = Pairs(queries[:40], np.arange(40), docs)

    def answer_first(query_negatives: bool) -> float:
        config = TrainConfig(epochs=30, learning_rate=1e-2, select=False, calibrate=False, progress=False,
                             hard_negatives=0, random_negatives=0, init_weight=0.0, bce_weight=0.0,
                             query_negatives=query_negatives)
        fitted = fit_maps(train, None, config)
        Q, K = fitted.Q, fitted.K
        q, k = queries[40:] @ Q.T, docs @ K.T
        held = np.arange(40, n)
        return float(np.mean(np.sum(q * k[held], 1) > np.sum(q * k[n + held], 1)))

    assert float(np.mean(np.sum(queries[40:] * answers[40:], 1) > np.sum(queries[40:] * posts[40:], 1))) == 0.0
    assert answer_first(True) >= 0.9 > answer_first(False) + 0.3
