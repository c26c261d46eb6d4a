"""qkrag.evaluate.compare: paired comparisons of two runs (difference, interval, sign-flip p-value) and the leakage
audit (seen/novel queries, and the result subsets it rests on)."""

from __future__ import annotations

import pytest

from qkrag.errors import InputError
from qkrag.evaluate.compare import compare, leakage_audit, seen_novel
from qkrag.evaluate.metrics import evaluate_run

from tests.fakes import random_result

QRELS = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}, "q3": {"d": 1}, "q4": {"e": 1, "x": 0}}


def test_seen_novel_splits_on_any_relevant_document_being_a_training_positive():
    seen, novel = seen_novel(QRELS, ["a", "c", "x"])
    assert seen == ["q1", "q2"]  # q2: one of its two relevant documents was a positive
    assert novel == ["q3", "q4"]  # q4's "x" is judged non-relevant, so it does not make q4 seen


def test_leakage_audit_separates_a_document_prior_from_a_real_gain():
    # The "trained" run finds exactly the documents it saw as positives and nothing else: all its gain is seen.
    base = evaluate_run(QRELS, {q: {"zz": 1.0} for q in QRELS})
    prior = evaluate_run(QRELS, {"q1": {"a": 1.0}, "q2": {"b": 1.0, "c": 0.5}, "q3": {"zz": 1.0},
                                 "q4": {"zz": 1.0}})
    audit = leakage_audit(prior, base, QRELS, ["a", "b"])
    assert (audit["n_seen"], audit["n_novel"]) == (2, 2)
    assert audit["ndcg@10_seen"] == pytest.approx(1.0)
    assert audit["ndcg@10_novel"] == 0.0
    assert audit["delta_ndcg@10_novel"] == 0.0 and audit["p_ndcg@10_novel"] == 1.0
    assert audit["delta_ndcg@10_seen"] == pytest.approx(1.0)


def test_leakage_audit_with_no_seen_queries_reports_none():
    result = evaluate_run(QRELS, {q: {"a": 1.0} for q in QRELS})
    audit = leakage_audit(result, result, QRELS, [])
    assert audit["n_seen"] == 0 and audit["ndcg@10_seen"] is None and audit["n_novel"] == 4


def test_compare_identical_runs_is_no_difference() -> None:
    a = random_result(200, 0)
    c = compare(a, a)
    assert c.difference == 0.0 and c.ci == (0.0, 0.0)
    assert c.p_value == pytest.approx(1.0)
    assert not c.significant


def test_compare_detects_a_real_difference_and_not_a_fake_one() -> None:
    base, better = random_result(200, 0), random_result(200, 0, shift=0.5)
    c = compare(better, base)
    assert c.difference > 0.05 and c.ci[0] > 0 and c.p_value < 0.01
    assert compare(base, better).difference == pytest.approx(-c.difference)
    # two systems of the same quality (different noise): usually not significant; check over several seeds
    p_values = [compare(random_result(200, s), random_result(200, 100 + s)).p_value for s in range(10)]
    assert sum(p < 0.05 for p in p_values) <= 2
    assert compare(better, base, "mrr@10").metric == "mrr@10"


def test_compare_refuses_different_query_sets() -> None:
    with pytest.raises(InputError, match="different queries"):
        compare(random_result(10, 0), random_result(12, 0))


def test_subset_recomputes_means_and_intervals():
    result = evaluate_run(QRELS, {"q1": {"a": 1.0}, "q3": {"d": 1.0}})
    part = result.subset(["q1", "q2"])
    assert part.n_queries == 2 and part["ndcg@10"] == pytest.approx(0.5)
    found = result.subset(["q1", "q3"])
    assert found.ci["ndcg@10"] == (1.0, 1.0) and result.ci["ndcg@10"] != (1.0, 1.0)
