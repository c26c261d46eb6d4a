"""The losses and their table: each loss on known inputs, and a loss reached by name through training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qkrag.errors import InputError
from qkrag.projection import losses
from qkrag.projection.data import Pairs
from qkrag.projection.losses import LOSSES, Loss, check_loss, distillation_loss, info_nce_loss, loss_choices
from qkrag.projection.model import train_projection
from qkrag.projection.train import TrainConfig


def test_info_nce_ignores_masked_columns():
    logits = torch.tensor([[2.0, 5.0, 0.0], [0.0, 1.0, 0.0]])
    masked = info_nce_loss(logits, torch.tensor([[False, True, False], [False, False, False]]))
    row0 = -np.log(np.exp(2) / (np.exp(2) + 1))  # column 1 (a known positive) is gone
    row1 = -np.log(np.e / (1 + np.e + 1))
    reference = (row0 + row1) / 2
    assert float(masked) == pytest.approx(float(reference), rel=1e-6)


def test_distillation_loss_is_zero_when_the_student_matches_the_teacher_and_ignores_padding():
    teacher = torch.tensor([[2.0, 1.0, 0.0, 9.0]])
    valid = torch.tensor([[True, True, True, False]])
    same = distillation_loss(teacher / 0.5, teacher, valid, 0.5)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    other = distillation_loss(torch.tensor([[0.0, 1.0, 2.0, -9.0]]), teacher, valid, 0.5)
    assert float(other) > 0.1


def _pairs(n: int = 40) -> Pairs:
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(n, 6)).astype(np.float32)
    return Pairs(docs + 0.3 * rng.normal(size=(n, 6)).astype(np.float32), np.arange(n), docs,
                 query_ids=tuple(f"q{i}" for i in range(n)), doc_ids=tuple(f"d{i}" for i in range(n)))


def test_a_registered_loss_is_what_training_runs_by_name(monkeypatch):
    seen: list[tuple[int, int]] = []

    def recorded(batch):  # InfoNCE, noting the shape of every batch it is handed
        seen.append(tuple(batch.logits.shape))
        return info_nce_loss(batch.logits, batch.mask)

    monkeypatch.setitem(LOSSES, "recorded", Loss(recorded, help="a test's loss"))
    train_projection(_pairs(), TrainConfig(loss="recorded", epochs=1, progress=False, calibrate=False))
    assert seen and all(rows <= 32 and columns > rows for rows, columns in seen)
    assert "recorded (a test's loss)" in loss_choices()


def test_an_unknown_loss_fails_naming_the_choices():
    with pytest.raises(InputError, match=r"'soft' is not a loss\. Fix: use one of infonce, distill, both"):
        check_loss("soft")
    with pytest.raises(InputError, match="TrainConfig.loss: 'soft' is not a loss"):
        TrainConfig(loss="soft").check()


def test_the_choices_read_as_the_help_text_says_them():
    assert loss_choices() == ("infonce (binary labels), distill (match a BM25 + cosine hybrid teacher's scores over "
                              "each query's top 30, listwise) or both")


def test_the_distill_loss_refuses_a_batch_without_teacher_scores():
    batch = losses.RankingBatch(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(InputError, match="without teacher scores"):
        losses.distill(batch)
