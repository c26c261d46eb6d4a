"""When σ(s·q·k + b) is called calibrated: fitted on enough held-out queries (or out-of-fold scores), with its
held-out ECE; otherwise `calibrated: false`, and why."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.projection.calibrate import (MIN_CALIBRATION_QUERIES, calibration_hits, describe, fit_calibration,
                                        platt_scale, recalibrate)
from qkrag.projection.data import Pairs
from qkrag.projection.model import QKProjection
from qkrag.projection.select import train_with_cv
from qkrag.projection.train import TrainConfig

FAST = TrainConfig(epochs=2, progress=False, hard_negatives=0, random_negatives=32)


def _pairs(n: int, seed: int = 0, origin: str = "judged queries") -> Pairs:
    """n queries over 150 documents, each relevant to its raw top 3: raw cosine already orders them, so σ of the
    identity can be calibrated, and a Platt fit has a positive slope."""
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(150, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    q = rng.normal(size=(n, 16)).astype(np.float32)
    top = np.argsort(-(q @ docs.T), 1)[:, :3]
    return Pairs(np.repeat(q, 3, 0), top.ravel(), docs, query_ids=tuple(f"q{i}" for i in np.repeat(np.arange(n), 3)),
                 encoder="enc", source="judged", origin=origin)


def test_an_identity_map_is_uncalibrated_and_says_so(tmp_path):
    identity = QKProjection.identity(16, "enc", scale=5.0)
    assert identity.calibrated_ is False and identity.calibration_["calibrated"] is False
    assert describe(identity.calibration_).startswith("uncalibrated")
    loaded = QKProjection.load(identity.save(tmp_path / "p"))
    assert loaded.calibrated_ is False and loaded.calibration_["n_queries"] == 0


def test_a_fit_on_too_few_held_out_queries_is_uncalibrated():
    pairs = _pairs(200)
    train, val = pairs.split(0.05, seed=0)  # 10 validation queries
    model = QKProjection(config=FAST).fit(train, val)
    record = model.calibration_
    assert val.n_queries < MIN_CALIBRATION_QUERIES
    assert record["calibrated"] is False and record["n_queries"] == val.n_queries
    assert f"fitted on {val.n_queries} held-out queries, fewer than {MIN_CALIBRATION_QUERIES}" in record["reason"]
    assert model.validation_["calibrated"] is False


def test_a_fit_on_enough_held_out_queries_reports_its_held_out_ece_and_what_it_is_against():
    pairs = _pairs(300)
    train, val = pairs.split(0.3, seed=0)
    model = QKProjection(config=FAST).fit(train, val)
    record = model.calibration_
    assert record["calibrated"] is True and record["n_queries"] == val.n_queries >= MIN_CALIBRATION_QUERIES
    assert record["against"] == "judged queries" and record["method"] == "validation split"
    assert 0 <= record["held_out_ece"] < 0.1
    assert f"calibrated on {val.n_queries} held-out judged queries" in describe(record)


def test_cv_calibrates_on_out_of_fold_scores_and_keeps_only_held_out_figures():
    pairs = _pairs(60, origin="synthetic pairs")
    config = TrainConfig(epochs=3, progress=False, hard_negatives=0, learning_rate=3e-2, init_weight=0.0)
    model = train_with_cv(pairs, config, folds=3)
    record, figures = model.calibration_, model.validation_
    assert record["calibrated"] is True and record["n_queries"] == 60 and record["against"] == "synthetic pairs"
    assert record["held_out_ece"] is not None
    assert "cross-validation" in figures["figures"]
    served = figures["cv"]["ndcg"] if model.selected_.startswith("trained") else figures["cv"]["init_ndcg"]
    assert figures["ndcg@10"] == pytest.approx(served, abs=1e-5)
    assert "gain_p_value" not in figures  # no p-value beside a choice the p-value did not make


def test_no_p_value_is_reported_when_selection_did_not_run():
    pairs = _pairs(200)
    model = QKProjection(config=dataclasses.replace(FAST, select=False)).fit(pairs)
    assert "gain_p_value" not in model.validation_ and model.selected_.startswith("trained")


def test_platt_scaling_stays_finite_on_separable_scores():
    s, b = platt_scale(np.r_[np.zeros(50), np.ones(50)], np.r_[np.zeros(50), np.ones(50)], 1.0, 0.0)
    assert np.isfinite([s, b]).all() and 0 < s < 100


def test_fit_calibration_refuses_a_single_label():
    s, b, record = fit_calibration(np.arange(10.0), np.ones(10), np.arange(10), (2.0, -1.0), against="pairs",
                                   method="x")
    assert (s, b) == (2.0, -1.0) and record["calibrated"] is False and "all relevant" in record["reason"]


def test_recalibrate_refits_only_scale_and_bias(tmp_path):
    judged = _pairs(80, seed=1)
    badly = QKProjection.identity(16, "enc", scale=1.0, bias=3.0)  # σ ≈ 0.95 everywhere: far off
    refit = recalibrate(badly, judged)
    np.testing.assert_array_equal(refit.Q_, badly.Q_)
    np.testing.assert_array_equal(refit.K_, badly.K_)
    record = refit.calibration_
    assert record["calibrated"] is True and record["n_queries"] == 80 and record["against"] == "judged queries"
    assert record["held_out_ece"] < record["ece_before"]
    assert (refit.scale_, refit.bias_) != (badly.scale_, badly.bias_) and badly.bias_ == 3.0  # the original stays
    dots, labels, groups = calibration_hits(refit.Q_, refit.K_, judged, 10)
    assert len(np.unique(groups)) == 80 and 0 < labels.mean() < 1
    with pytest.raises(InputError, match="recalibrate on at least 30 judged queries"):
        recalibrate(badly, judged.subset(np.arange(3)))


def test_recalibrating_on_the_training_queries_is_not_held_out():
    pairs = _pairs(200)
    model = QKProjection(config=FAST).fit(pairs)
    refit = recalibrate(model, pairs)
    assert refit.calibration_["calibrated"] is False and "trained on" in refit.calibration_["reason"]
