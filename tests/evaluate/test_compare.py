"""The leakage audit (seen/novel queries), document-disjoint validation splits, and the question share."""

from __future__ import annotations

import numpy as np
import pytest

from qkrag.evaluate.metrics import evaluate_run, question_share
from qkrag.evaluate.compare import leakage_audit, seen_novel
from qkrag.projection.data import Pairs
from qkrag.retrieval.base import Hit

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


def test_subset_recomputes_means_and_intervals():
    result = evaluate_run(QRELS, {"q1": {"a": 1.0}, "q3": {"d": 1.0}})
    part = result.subset(["q1", "q2"])
    assert part.n_queries == 2 and part["ndcg@10"] == pytest.approx(0.5)
    found = result.subset(["q1", "q3"])
    assert found.ci["ndcg@10"] == (1.0, 1.0) and result.ci["ndcg@10"] != (1.0, 1.0)


def test_question_share_counts_question_documents_in_the_top_k():
    hits = [[Hit("p1", 1), Hit("a", 0.9), Hit("p2", 0.8), Hit("b", 0.7), Hit("c", 0.6)], [Hit("a", 1)]]
    share = question_share(hits, {"p1": True, "p2": True, "a": False}, depth=5)
    assert share == pytest.approx((2 / 5 + 0) / 2)


def _pairs() -> Pairs:
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(40, 8)).astype(np.float32)
    positives = np.arange(60) % 40
    queries = docs[positives] + 0.1 * rng.normal(size=(60, 8)).astype(np.float32)
    return Pairs(queries, positives, docs, query_ids=tuple(f"q{i}" for i in range(60)),
                 doc_ids=tuple(f"d{i}" for i in range(40)))


def test_a_document_split_keeps_validation_documents_out_of_training():
    train, val = _pairs().split(0.2, seed=1, by="document")
    assert set(train.positive_ids()).isdisjoint(val.positive_ids())
    assert len(train) + len(val) == 60 and len(val) > 0


def test_a_query_split_may_share_documents():
    train, val = _pairs().split(0.2, seed=1, by="query")
    assert not set(train.positive_ids()).isdisjoint(val.positive_ids())  # why the document split exists
