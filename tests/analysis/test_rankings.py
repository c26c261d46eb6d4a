import numpy as np
import pytest

from qkrag.errors import InputError
from qkrag.analysis.rankings import changed_queries, id_prefix, share_of, side_by_side
from qkrag.projection.select import cross_validate, kfold
from qkrag.projection.data import Pairs
from qkrag.ranking import Hit
from qkrag.evaluate.metrics import binary_ndcg
from qkrag.projection.train import TrainConfig
from qkrag.ranking import exact_search

POST = id_prefix("post-")


def hits(*ids: str, probability: float | None = None) -> list[Hit]:
    return [Hit(i, 1.0 - n / 10, f"text of {i}", probability) for n, i in enumerate(ids)]


RAW = [hits("post-1", "a", "b"), hits("c", "post-2", "post-3"), hits("post-4", "post-5", "d")]
PROJ = [hits("a", "post-1", "b"), hits("c", "d", "post-2"), hits("post-4", "e", "f")]


def test_share_of_counts_top_k_pooled_over_queries():
    assert share_of(RAW, POST, k=1) == pytest.approx(2 / 3)
    assert share_of(RAW, POST, k=2) == pytest.approx(4 / 6)
    assert share_of(RAW, POST) == pytest.approx(5 / 9)
    assert share_of(PROJ, POST, k=1) == pytest.approx(1 / 3)


def test_share_of_refuses_nothing_to_count_and_bad_k():
    with pytest.raises(InputError, match="no hits"):
        share_of([[], []], POST)
    with pytest.raises(InputError, match="cut-off"):
        share_of(RAW, POST, k=0)


def test_changed_queries_finds_fixed_and_broken_in_either_direction():
    assert changed_queries(RAW, PROJ, POST, k=1) == [0]  # raw put a post first, the projection did not
    assert changed_queries(PROJ, RAW, POST, k=1) == []
    assert changed_queries(RAW, PROJ, POST, k=2) == [1]
    with pytest.raises(InputError, match="same queries"):
        changed_queries(RAW, PROJ[:2], POST)


def test_changed_queries_with_k_looks_at_every_top_k_hit():
    before = [hits("a", "post-1"), hits("post-2", "b")]
    after = [hits("a", "b"), hits("c", "post-2")]
    assert changed_queries(before, after, POST, k=2) == [0]
    assert changed_queries(before, after, POST, k=1) == [1]


def test_side_by_side_aligns_ranks_and_marks_relevant_and_probabilities():
    out = side_by_side("why is my bread flat", {"raw cosine": RAW[0], "Q/K": hits("a", "b", "c", probability=0.8)},
                       k=2, width=30, relevant={"a"})
    lines = out.splitlines()
    assert lines[0] == "query: why is my bread flat"
    assert lines[1].startswith("raw cosine") and "Q/K" in lines[1]
    first = next(line for line in lines if line.startswith("1."))
    assert "post-1 (1.000)" in first and "1.✓ a (p=0.80)" in first
    second = next(line for line in lines if line.startswith("2."))
    assert "2.✓ a (0.900)" in second and "2.  b (p=0.80)" in second
    # every line of a row is split at the same column
    assert len({line.index("│") for line in lines[1:] if "│" in line}) == 1
    assert "text of post-1" in out


def test_side_by_side_handles_columns_of_unequal_length():
    out = side_by_side("q", {"a": hits("x"), "b": hits("y", "z")}, k=3, width=20)
    assert "2.  z" in out and "x" in out
    with pytest.raises(InputError):
        side_by_side("q", {})


def _pairs(n_queries: int = 12, seed: int = 0) -> Pairs:
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(40, 8)).astype(np.float32)
    pos = np.arange(n_queries) % 40
    queries = docs[pos] + 0.3 * rng.normal(size=(n_queries, 8)).astype(np.float32)
    return Pairs(queries, pos, docs)


def test_kfold_holds_out_every_query_exactly_once_and_keeps_queries_whole():
    docs = np.eye(6, dtype=np.float32)
    pairs = Pairs(docs[[0, 1, 2, 3, 4, 5, 0]], np.array([0, 1, 2, 3, 4, 5, 1]), docs,
                  query_ids=("a", "b", "c", "d", "e", "f", "a"))
    folds = kfold(pairs, 3, seed=1)
    held = [set(val.query_ids) for _, val in folds]
    assert sorted(q for h in held for q in h) == ["a", "b", "c", "d", "e", "f"]
    for train, val in folds:
        assert not set(train.query_ids) & set(val.query_ids)
        assert len(train) + len(val) == len(pairs)
    assert [set(v.query_ids) for _, v in kfold(pairs, 3, seed=1)] == held  # seeded
    with pytest.raises(InputError, match="folds"):
        kfold(pairs, 7)


def _raw_ndcg(validation: Pairs) -> float:
    queries, relevant = validation.unique_queries()
    _, top = exact_search(queries, validation.documents, 10, space="ip")
    return float(binary_ndcg(top, relevant, 10).mean())


def test_cross_validate_reports_each_config_on_the_same_held_out_folds():
    quick = dict(epochs=2, batch_size=4, random_negatives=8, hard_negative_pool=5, progress=False, calibrate=False)
    configs = {"a": TrainConfig(**quick), "b": TrainConfig(learning_rate=1e-2, **quick)}
    scores = cross_validate(_pairs(), configs, folds=3)
    assert set(scores) == {"a", "b"}
    # the start's score is raw cosine on each held-out fold of kfold(pairs, 3, seed=0), averaged
    raw = float(np.mean([_raw_ndcg(validation) for _, validation in kfold(_pairs(), 3, seed=0)]))
    for s in scores.values():
        assert s["init_ndcg"] == pytest.approx(raw, abs=1e-4) and 0 < s["ndcg"] <= 1
        assert s["gain"] == pytest.approx(s["ndcg"] - s["init_ndcg"])
        assert 0 <= s["best_epoch"] <= 2 and isinstance(s["best_epoch"], int)
    assert scores["a"]["init_ndcg"] == scores["b"]["init_ndcg"]  # same folds for every config
    with pytest.raises(InputError):
        cross_validate(_pairs(), {})
