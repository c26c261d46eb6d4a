"""qkrag.evaluate.metrics: metrics agree with hand computation, every judged query counts, intervals behave, binary
nDCG and the question share count right."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkrag.data import Collection, Corpus
from qkrag.errors import InputError
from qkrag.evaluate.metrics import binary_ndcg, evaluate_retriever, evaluate_run, queries_are_documents, question_share
from qkrag.ranking import Hit

from tests.fakes import random_result

# q1: two relevant docs at ranks 1 and 3; q2: one doc of grade 2 at rank 3; q3: judged but never retrieved.
QRELS = {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 2}, "q3": {"d9": 1}}
RUN = {"q1": {"d1": 0.9, "dx": 0.8, "d2": 0.7}, "q2": {"dy": 0.9, "dz": 0.8, "d3": 0.7}}

# by hand (trec_eval's nDCG uses the grade itself as gain, log2(rank + 1) discount)
NDCG_Q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
NDCG_Q2 = (2 / math.log2(4)) / 2


def test_metrics_match_hand_computation_and_unretrieved_queries_count_as_zero() -> None:
    r = evaluate_run(QRELS, RUN)
    assert r.per_query["ndcg@10"] == pytest.approx({"q1": NDCG_Q1, "q2": NDCG_Q2, "q3": 0.0})
    assert r.per_query["mrr@10"] == pytest.approx({"q1": 1.0, "q2": 1 / 3, "q3": 0.0})
    assert r.per_query["recall@100"] == pytest.approx({"q1": 1.0, "q2": 1.0, "q3": 0.0})
    assert r.per_query["map"] == pytest.approx({"q1": (1 + 2 / 3) / 2, "q2": 1 / 3, "q3": 0.0})
    assert r.primary == pytest.approx((NDCG_Q1 + NDCG_Q2) / 3)  # divided by 3, not by the 2 retrieved queries
    assert r.n_queries == 3


def test_cutoffs_cut() -> None:
    r = evaluate_run(QRELS, RUN, ["mrr@2", "recall@1", "ndcg@1", "precision@3", "map@1", "mrr"])
    assert r.per_query["mrr@2"] == {"q1": 1.0, "q2": 0.0, "q3": 0.0}  # q2's hit is at rank 3
    assert r.per_query["mrr"]["q2"] == pytest.approx(1 / 3)
    assert r.per_query["recall@1"]["q1"] == pytest.approx(0.5)
    assert r.per_query["ndcg@1"] == pytest.approx({"q1": 1.0, "q2": 0.0, "q3": 0.0})
    assert r.per_query["precision@3"]["q1"] == pytest.approx(2 / 3)


def test_mrr_cut_ranks_by_score_not_by_insertion_order() -> None:
    run = {"q1": {"dx": 0.1, "dy": 0.2, "d1": 0.9}}  # d1 is best although listed last
    assert evaluate_run({"q1": {"d1": 1}}, run, ["mrr@1"]).primary == 1.0


def test_identical_ids_are_ignored_by_default() -> None:
    qrels = {"a": {"b": 1}}
    run = {"a": {"a": 1.0, "b": 0.5}}  # the query itself retrieved first, as in Quora/ArguAna
    assert evaluate_run(qrels, run, ["mrr@10"]).primary == 1.0
    assert evaluate_run(qrels, run, ["mrr@10"], ignore_identical_ids=False).primary == 0.5


def test_relevance_level_for_graded_judgments() -> None:
    qrels = {"q": {"weak": 1, "strong": 3}}
    run = {"q": {"weak": 0.9, "strong": 0.5}}
    assert evaluate_run(qrels, run, ["mrr@10"]).primary == 1.0
    assert evaluate_run(qrels, run, ["mrr@10"], relevance_level=2).primary == 0.5


def test_to_dict_keys_and_json_shape() -> None:
    d = evaluate_run(QRELS, RUN).to_dict()
    assert list(d) == ["ndcg@10", "recall@100", "mrr@10", "map",
                       "ndcg@10_ci", "recall@100_ci", "mrr@10_ci", "map_ci"]
    assert all(isinstance(v, float) for k, v in d.items() if not k.endswith("_ci"))
    assert all(len(v) == 2 for k, v in d.items() if k.endswith("_ci"))


def test_confidence_intervals_contain_the_mean_and_shrink_with_more_queries() -> None:
    small, large = random_result(30, 0), random_result(1000, 0)
    for r in (small, large):
        for m in r.metrics:
            lo, hi = r.ci[m]
            assert lo <= r.means[m] <= hi
    width = lambda r: r.ci["ndcg@10"][1] - r.ci["ndcg@10"][0]  # noqa: E731
    assert width(large) < width(small) / 3  # ~ 1/sqrt(n): sqrt(1000/30) ≈ 5.8


@pytest.mark.parametrize(
    ("qrels", "run", "match"),
    [
        ({"q1": {"d1": 1}}, {"other": {"d1": 1.0}}, "none of its 1 query ids appear in the qrels"),
        ({"q1": {"d1": 1}}, {1: {"d1": 1.0}}, "query id 1 is a int, not a str"),
        ({1: {"d1": 1}}, {"q1": {"d1": 1.0}}, "qrels: query id 1 is a int"),
        ({"q1": {"d1": 1}}, {"q1": {2: 1.0}}, "document id 2"),
        ({"q1": {"d1": 0.5}}, {"q1": {"d1": 1.0}}, "relevance 0.5 is a float"),
        ({"q1": {"d1": 1}}, {"q1": {"d1": "high"}}, "score 'high'"),
        ({"q1": {"d1": 1}}, {"q1": {"d1": float("nan")}}, "score nan"),
        ({}, {"q1": {"d1": 1.0}}, "qrels: are empty"),
    ],
)
def test_bad_input_names_the_problem(qrels, run, match) -> None:
    with pytest.raises(InputError, match=match):
        evaluate_run(qrels, run)


@pytest.mark.parametrize("metric", ["ndcg@x", "ndcg@0", "ndcg@", "bleu"])
def test_unknown_metric(metric) -> None:
    with pytest.raises(InputError, match="metric"):
        evaluate_run(QRELS, RUN, [metric])


class _FixedRetriever:
    """Returns the documents whose text shares a word with the query, in corpus order."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus

    def search(self, queries, k=10):
        return [[Hit(d.id, 1.0 / (i + 1), d.content) for i, d in enumerate(self.corpus)
                 if set(q.lower().split()) & set(d.content.lower().split())][:k] for q in queries]


def test_evaluate_retriever() -> None:
    corpus = Corpus.from_texts({"d1": "red apple", "d2": "green pear", "d3": "red car"})
    collection = Collection(corpus, {"q1": "apple", "q2": "car", "q3": "boat"},
                            {"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d2": 1}}, name="fruit")
    r = evaluate_retriever(_FixedRetriever(corpus), collection, k=10)
    assert r.per_query["mrr@10"] == {"q1": 1.0, "q2": 1.0, "q3": 0.0}
    assert r.name == "fruit"


def test_identical_ids_decided_from_the_collection() -> None:
    corpus = Corpus.from_texts({"1": "red apple", "2": "green pear"})
    accidental = Collection(corpus, {"1": "green pear"}, {"1": {"1": 1}})  # query "1" is not document "1"
    assert not queries_are_documents(accidental)
    assert evaluate_retriever(_FixedRetriever(corpus), accidental).primary == 0.0  # d1 does not match "green pear"
    accidental = Collection(corpus, {"1": "red things"}, {"1": {"1": 1}})
    assert evaluate_retriever(_FixedRetriever(corpus), accidental).primary == 1.0  # the hit on "1" is kept
    duplicate = Collection(corpus, {"1": "red apple"}, {"1": {"1": 1}})  # the query is document "1" (Quora-like)
    assert queries_are_documents(duplicate)
    assert evaluate_retriever(_FixedRetriever(corpus), duplicate).primary == 0.0  # finding itself does not count
    assert evaluate_retriever(_FixedRetriever(corpus), duplicate, ignore_identical_ids=False).primary == 1.0


def test_binary_ndcg():
    assert binary_ndcg(np.array([[3, 1, 2]]), [{3}], 3).mean() == 1.0
    assert binary_ndcg(np.array([[1, 3, 2]]), [{3}], 3).mean() == pytest.approx(1 / np.log2(3))
    assert binary_ndcg(np.array([[1, 2, 4]]), [{3}], 3).mean() == 0.0


def test_question_share_counts_question_documents_in_the_top_k():
    hits = [[Hit("p1", 1), Hit("a", 0.9), Hit("p2", 0.8), Hit("b", 0.7), Hit("c", 0.6)], [Hit("a", 1)]]
    share = question_share(hits, {"p1": True, "p2": True, "a": False}, depth=5)
    assert share == pytest.approx((2 / 5 + 0) / 2)


def test_binary_ndcg_agrees_with_pytrec_eval():
    from qkrag.evaluate.metrics import binary_ndcg, evaluate_run

    rng = np.random.default_rng(3)
    positions = np.stack([rng.permutation(40)[:10] for _ in range(25)])
    relevant = [set(map(int, rng.choice(40, size=rng.integers(1, 6), replace=False))) for _ in range(25)]
    run = {f"q{i}": {f"d{p}": float(10 - r) for r, p in enumerate(row)} for i, row in enumerate(positions)}
    qrels = {f"q{i}": {f"d{d}": 1 for d in rel} for i, rel in enumerate(relevant)}
    expected = evaluate_run(qrels, run, ["ndcg@10"]).per_query["ndcg@10"]
    ours = binary_ndcg(positions, relevant, 10)
    assert np.allclose(ours, [expected[f"q{i}"] for i in range(25)], atol=1e-9)
