"""Listwise distillation: the teacher's candidate lists, and training with them."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.projection.data import Pairs
from qkrag.ranking import Hit
from qkrag.projection.teacher import hybrid_teacher
from qkrag.projection.train import TrainConfig
from qkrag.projection.model import train_projection


class ListTeacher:
    """A retriever that answers every query with the same fixed ranking."""

    def __init__(self, hits):
        self.hits = hits
        self.asked: list[str] = []

    def search(self, queries, k=10):
        self.asked += list(queries)
        return [self.hits[:k] for _ in queries]


def _pairs(n=3) -> Pairs:
    docs = np.eye(4, dtype=np.float32)
    return Pairs(docs[:n] + 0.01, np.arange(n), docs, query_ids=tuple(f"q{i}" for i in range(n)),
                 doc_ids=("a", "b", "c", "d"))


def test_teacher_lists_hold_the_positive_at_the_top_score_and_zscore_the_rest():
    teacher = ListTeacher([Hit("b", 3.0), Hit("c", 2.0), Hit("d", 1.0)])
    out = hybrid_teacher(_pairs(2), ["text one", "text one"], teacher, depth=3)
    assert teacher.asked == ["text one"]  # one search per distinct text
    # pair 0's positive "a" was not retrieved: it joins its list with the top score
    assert out.teacher_rows[0].tolist() == [1, 2, 3, 0]
    assert out.teacher_scores[0][3] == pytest.approx(out.teacher_scores[0].max())
    assert out.teacher_scores[0][:3] == pytest.approx([1.2247, 0.0, -1.2247], abs=1e-3)
    # pair 1's positive "b" was retrieved first already; no padding row is added
    assert out.teacher_rows[1].tolist() == [1, 2, 3, -1]


def test_teacher_needs_one_text_per_pair():
    with pytest.raises(InputError, match="query texts for"):
        hybrid_teacher(_pairs(2), ["only one"], ListTeacher([]))


def test_distill_loss_needs_a_teacher():
    with pytest.raises(InputError, match="no teacher scores"):
        train_projection(_pairs(3), TrainConfig(loss="distill", progress=False),
                         validation=_pairs(3))


def test_training_with_distillation_runs_and_records_training_positives():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(30, 6)).astype(np.float32)
    pos = np.arange(60) % 30
    pairs = Pairs(docs[pos] + 0.3 * rng.normal(size=(60, 6)).astype(np.float32), pos, docs,
                  query_ids=tuple(f"q{i}" for i in range(60)), doc_ids=tuple(f"d{i}" for i in range(30)))
    rows = np.stack([np.roll(np.arange(30), -p)[:5] for p in pos])  # the positive first, then four others
    pairs = pairs.with_teacher(rows, np.tile(np.array([2.0, 1.0, 0.5, 0.0, -1.0], np.float32), (60, 1)))
    model = train_projection(pairs, TrainConfig(loss="both", epochs=2, progress=False, holdout="document"))
    assert model.validation_["n_queries"] > 0
    assert model.training_positive_ids_ == [f"d{i}" for i in range(30)] or set(model.training_positive_ids_) \
        == {f"d{i}" for i in range(30)}
