"""Metrics agree with hand computation, every judged query counts, CIs and paired tests behave, calibration works."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkrag.data import Collection, Corpus
from qkrag.errors import InputError
from qkrag.evaluate.metrics import EvalResult, evaluate_retriever, evaluate_run, queries_are_documents
from qkrag.evaluate.report import plot_results, results_table
from qkrag.evaluate.calibration import expected_calibration_error, reliability_diagram
from qkrag.evaluate.compare import compare
from qkrag.evaluate.stats import Bootstrap, bootstrap_ci
from qkrag.retrieval.base import Hit

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


def _random_result(n: int, seed: int, shift: float = 0.0) -> EvalResult:
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {"rel": 1} for i in range(n)}
    # the relevant doc lands at a random rank among 10; `shift` moves it up for a better system
    ranks = np.clip(rng.integers(1, 11, n) - np.round(shift * rng.random(n) * 10).astype(int), 1, 10)
    run = {f"q{i}": {("rel" if j == ranks[i] else f"x{j}"): 1.0 / j for j in range(1, 11)} for i in range(n)}
    return evaluate_run(qrels, run)


def test_confidence_intervals_contain_the_mean_and_shrink_with_more_queries() -> None:
    small, large = _random_result(30, 0), _random_result(1000, 0)
    for r in (small, large):
        for m in r.metrics:
            lo, hi = r.ci[m]
            assert lo <= r.means[m] <= hi
    width = lambda r: r.ci["ndcg@10"][1] - r.ci["ndcg@10"][0]  # noqa: E731
    assert width(large) < width(small) / 3  # ~ 1/sqrt(n): sqrt(1000/30) ≈ 5.8


def test_bootstrap_is_seeded() -> None:
    x = np.random.default_rng(0).random(50)
    assert bootstrap_ci(x) == bootstrap_ci(x)
    assert bootstrap_ci(x, Bootstrap(seed=1)) != bootstrap_ci(x, Bootstrap(seed=2))
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_compare_identical_runs_is_no_difference() -> None:
    a = _random_result(200, 0)
    c = compare(a, a)
    assert c.difference == 0.0 and c.ci == (0.0, 0.0)
    assert c.p_value == pytest.approx(1.0)
    assert not c.significant


def test_compare_detects_a_real_difference_and_not_a_fake_one() -> None:
    base, better = _random_result(200, 0), _random_result(200, 0, shift=0.5)
    c = compare(better, base)
    assert c.difference > 0.05 and c.ci[0] > 0 and c.p_value < 0.01
    assert compare(base, better).difference == pytest.approx(-c.difference)
    # two systems of the same quality (different noise): usually not significant; check over several seeds
    p_values = [compare(_random_result(200, s), _random_result(200, 100 + s)).p_value for s in range(10)]
    assert sum(p < 0.05 for p in p_values) <= 2
    assert compare(better, base, "mrr@10").metric == "mrr@10"


def test_compare_refuses_different_query_sets() -> None:
    with pytest.raises(InputError, match="different queries"):
        compare(_random_result(10, 0), _random_result(12, 0))


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


def test_results_table_and_plot(tmp_path) -> None:
    results = {"bm25": _random_result(50, 0), "dense": _random_result(50, 1, shift=0.3)}
    table = results_table(results)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| system | ndcg@10 [95% CI]") and len(lines) == 4
    lo, hi = results["bm25"].ci["ndcg@10"]
    assert f"{results['bm25'].primary:.3f} [{lo:.3f}, {hi:.3f}]" in lines[2]
    plot_results(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_sign_flip_p_value_one_and_two_sided():
    from qkrag.evaluate.stats import sign_flip_p_value

    up = np.full(12, 0.1)
    assert sign_flip_p_value(up, alternative="greater") < 0.001  # all 12 gain: 1 of 4096 sign patterns is as good
    assert sign_flip_p_value(-up, alternative="greater") > 0.99
    assert sign_flip_p_value(-up) < 0.001  # two-sided: a consistent loss is as extreme as a gain
    assert sign_flip_p_value(np.zeros(5)) == 1.0 and sign_flip_p_value([]) == 1.0


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
