"""Choosing by cross-validation: every query votes, and the result says why it was kept."""

import numpy as np

from qkrag.projection.data import Pairs
from qkrag.projection.select import kfold, train_best, train_with_cv
from qkrag.projection.train import TrainConfig


def _pairs(n: int = 60, d: int = 8, seed: int = 0, signal: bool = True) -> Pairs:
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(n, d)).astype(np.float32)
    # queries relate to their documents through a fixed rotation that raw cosine does not see
    mix = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32) if signal else np.eye(d, dtype=np.float32)
    queries = docs @ mix + 0.1 * rng.normal(size=(n, d)).astype(np.float32)
    return Pairs(queries, np.arange(n), docs, None, tuple(f"q{i}" for i in range(n)),
                 tuple(f"d{i}" for i in range(n)), "enc", "test")


def test_folds_hold_out_every_query_once():
    pairs = _pairs(30)
    held = np.concatenate([np.array(val.query_ids) for _, val in kfold(pairs, 3)])
    assert sorted(held) == sorted(pairs.query_ids)


def test_cv_trains_when_it_helps_and_says_so():
    config = TrainConfig(epochs=6, progress=False, hard_negatives=0, learning_rate=3e-2, init_weight=0.0)
    model = train_with_cv(_pairs(), config, folds=3)
    assert model.selected_.startswith("trained for ") and "3-fold CV over 60 queries" in model.selected_
    assert model.validation_["cv"]["gain"] > 0 and not np.allclose(model.Q_, np.eye(8))


def test_cv_keeps_the_start_when_training_cannot_help():
    config = TrainConfig(epochs=2, progress=False, hard_negatives=0, learning_rate=1e-9)
    model = train_with_cv(_pairs(signal=False), config, folds=3)
    assert model.selected_.startswith("start kept") and np.allclose(model.Q_, np.eye(8), atol=1e-5)


def test_train_best_keeps_the_config_that_wins_on_the_held_out_queries():
    pairs = _pairs(60)
    train, validation = pairs.subset(np.arange(40), "train"), pairs.subset(np.arange(40, 60), "validation")
    still = TrainConfig(epochs=2, progress=False, hard_negatives=0, learning_rate=1e-9)
    moving = TrainConfig(epochs=6, progress=False, hard_negatives=0, learning_rate=3e-2, init_weight=0.0)
    best, model, scores = train_best(train, {"still": still, "moving": moving}, validation=validation)
    assert best == "moving" and scores["moving"] > scores["still"]
    assert not np.allclose(model.Q_, np.eye(8))
    best, _, scores = train_best(train, {"a": still, "b": still}, validation=validation)
    assert best == "a" and scores["a"] == scores["b"]  # a tie goes to the earlier name
