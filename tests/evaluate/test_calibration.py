"""qkrag.evaluate.calibration: expected calibration error, its bins, and the reliability diagram."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.evaluate.calibration import expected_calibration_error, reliability_diagram


def test_ece_of_calibrated_data_is_near_zero_and_of_overconfident_data_large() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    labels = rng.random(p.size) < p  # relevant with exactly the predicted probability
    assert expected_calibration_error(p, labels) < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)  # same labels, extreme claims
    assert expected_calibration_error(overconfident, labels) > 0.2
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == 1.0


def test_ece_bad_input() -> None:
    with pytest.raises(InputError, match="outside"):
        expected_calibration_error([1.5], [1])
    with pytest.raises(InputError, match="2 probabilities but 1 labels"):
        expected_calibration_error([0.5, 0.5], [1])
    with pytest.raises(InputError, match="0 or 1"):
        expected_calibration_error([0.5], [2])


def test_reliability_diagram_writes_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    p = rng.random(500)
    path = tmp_path / "sub" / "reliability.png"
    reliability_diagram(p, rng.random(500) < p, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in path.parent.iterdir() if f.name.endswith(".tmp")]


def test_reliability_bins_are_the_numbers_behind_the_ece() -> None:
    from qkrag.evaluate.calibration import reliability_bins

    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 500)
    y = (rng.uniform(0, 1, 500) < p ** 2).astype(int)
    bins = reliability_bins(p, y, n_bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 500
    assert bins[0]["low"] == 0 and bins[-1]["high"] == 1
    ece = sum(b["count"] / 500 * abs(b["fraction_relevant"] - b["mean_probability"]) for b in bins if b["count"])
    assert ece == pytest.approx(expected_calibration_error(p, y, 10))
    empty = reliability_bins([0.05, 1.0], [0, 1], n_bins=4)
    assert [b["count"] for b in empty] == [1, 0, 0, 1] and empty[1]["fraction_relevant"] is None
    with pytest.raises(InputError):
        reliability_bins([0.5], [2])


def test_an_ece_above_a_tenth_comes_with_a_warning() -> None:
    from qkrag.evaluate.calibration import ece_warning

    assert ece_warning(None) is None and ece_warning(0.1) is None
    warning = ece_warning(0.64)
    assert warning.startswith("ECE 0.640 > 0.1: σ is not calibrated") and "qkrag calibrate" in warning
