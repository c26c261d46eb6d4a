"""IR metrics with confidence intervals, paired comparisons, and calibration.

Metrics come from `pytrec_eval` (trec_eval's C code), the library BEIR and MTEB use, so a number here reproduces a
published one; nothing in this module re-implements a metric. What this module adds around it:

- every judged query counts: pytrec_eval scores only the queries present in the run, so a query that retrieved
  nothing would silently vanish from the mean (inflating it); here it scores 0 on every metric;
- per-query scores are kept, so every mean carries a bootstrap confidence interval over queries, and two systems
  evaluated on the same queries can be compared pairwise (`compare`);
- the calibration of predicted probabilities (`expected_calibration_error`, `reliability_diagram`), since a
  projection scores hits as σ(q·k) and claims those numbers are probabilities.

Metric names are `ndcg@k`, `recall@k`, `precision@k`, `mrr@k`, `map`, `map@k`, `ndcg`, `mrr`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from qkrag.data import Collection, Qrels
from qkrag.errors import fail
from qkrag.ranking import Hit, Retriever, Run, to_run

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10", "map")
PRIMARY_METRIC = "ndcg@10"

# our name -> (pytrec_eval measure family, the key prefix pytrec_eval answers with)
_FAMILIES = {"ndcg": ("ndcg_cut", "ndcg_cut"), "recall": ("recall", "recall"), "precision": ("P", "P"),
             "p": ("P", "P"), "map": ("map_cut", "map_cut")}
from qkrag.evaluate.stats import Bootstrap, bootstrap_cis


@dataclass(frozen=True)
class _Metric:
    name: str  # our name, e.g. "mrr@10"
    measure: str  # what pytrec_eval is asked for, e.g. "recip_rank"
    key: str  # what pytrec_eval answers with, e.g. "recip_rank"
    cut: int | None = None  # rank the run is cut at before evaluating (only for MRR, which trec_eval cannot cut)


def _parse_metric(name: str) -> _Metric:
    base, at, k = name.lower().partition("@")
    if at and not (k.isdigit() and int(k) > 0):
        raise fail(f"metric {name!r}", f"the cutoff {k!r} is not a positive integer", "write it like ndcg@10")
    if base in ("mrr", "recip_rank"):
        # trec_eval's recip_rank has no cutoff: MRR@k is recip_rank on the run cut to its top k (see _cut_run).
        return _Metric(name, "recip_rank", "recip_rank", int(k) if k else None)
    if not k and base in ("ndcg", "map"):
        return _Metric(name, base, base)
    if k and base in _FAMILIES:
        family, key = _FAMILIES[base]
        return _Metric(name, f"{family}.{k}", f"{key}_{k}")
    raise fail(f"metric {name!r}", "is not a metric qkrag knows",
               "use ndcg@k, recall@k, precision@k, mrr@k, map, map@k, ndcg or mrr (e.g. ndcg@10)")


# ---------------------------------------------------------------------------------------------------------- checks


def _check_ids(obj: Mapping, what: str, inner: str, value_type: type | tuple[type, ...]) -> None:
    """pytrec_eval wants {str: {str: value}} and fails with a bare TypeError otherwise; say which entry is wrong."""
    if not isinstance(obj, Mapping):
        raise fail(what, f"is a {type(obj).__name__}, not a dict of query id -> {{document id: {inner}}}",
                   "build it as {'q1': {'d1': ...}}")
    for qid, row in obj.items():
        if not isinstance(qid, str):
            raise fail(what, f"query id {qid!r} is a {type(qid).__name__}, not a str",
                       "use string ids everywhere (e.g. str(qid)); an int id never matches a str id")
        if not isinstance(row, Mapping):
            raise fail(what, f"query {qid!r} maps to a {type(row).__name__}, not a dict of document id -> {inner}",
                       "build it as {'q1': {'d1': ...}}")
        for did, value in row.items():
            if not isinstance(did, str):
                raise fail(what, f"document id {did!r} (query {qid!r}) is a {type(did).__name__}, not a str",
                           "use string ids everywhere; an int id never matches a str id")
            if isinstance(value, bool) or not isinstance(value, value_type):
                raise fail(what, f"query {qid!r}, document {did!r}: {inner} {value!r} is a {type(value).__name__}",
                           f"give {inner}s as {'integers' if value_type is int else 'numbers'}")


def _clean_run(qrels: Qrels, run: Run, ignore_identical_ids: bool) -> Run:
    _check_ids(qrels, "qrels", "relevance", (int, np.integer))
    _check_ids(run, "run", "score", (int, float, np.integer, np.floating))
    if not qrels:
        raise fail("qrels", "are empty", "evaluate against judgments that name at least one query")
    judged = [q for q in run if q in qrels]
    if run and not judged:
        raise fail("run", f"none of its {len(run)} query ids appear in the qrels (run has e.g. {list(run)[:3]}, "
                   f"qrels have e.g. {list(qrels)[:3]})", "evaluate the run against the qrels of the same queries")
    clean: Run = {}
    for qid in judged:
        row = {}
        for did, score in run[qid].items():
            if not math.isfinite(score):
                raise fail("run", f"query {qid!r}, document {did!r} has score {score}",
                           "fix the retriever; scores must be finite numbers")
            if ignore_identical_ids and did == qid:
                continue
            row[did] = float(score)
        clean[qid] = row
    return clean


def _cut_run(run: Run, k: int) -> Run:
    """Each query's top k, ranked as trec_eval ranks: score descending, ties by document id descending."""
    return {q: dict(sorted(row.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k]) for q, row in run.items()}


# ---------------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EvalResult:
    """Per-query scores (`per_query[metric][query_id]`), their means and bootstrap CIs. Every judged query is in."""

    per_query: dict[str, dict[str, float]]
    ci: dict[str, tuple[float, float]]
    confidence: float = 0.95
    name: str = ""
    means: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        means = {m: float(np.mean(list(v.values()))) if v else math.nan for m, v in self.per_query.items()}
        object.__setattr__(self, "means", means)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.per_query)

    @property
    def query_ids(self) -> list[str]:
        return list(next(iter(self.per_query.values()))) if self.per_query else []

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC if PRIMARY_METRIC in self.per_query else self.metrics[0]

    @property
    def primary(self) -> float:
        """The headline number: mean nDCG@10 (the first metric when nDCG@10 was not computed)."""
        return self.means[self.primary_metric]

    def __getitem__(self, metric: str) -> float:
        try:
            return self.means[metric]
        except KeyError:
            raise fail(f"metric {metric!r}", f"was not computed (this result has {list(self.means)})",
                       "pass it in metrics= when evaluating") from None

    def subset(self, query_ids: Sequence[str], bootstrap: Bootstrap | None = None) -> EvalResult:
        """The same scores restricted to `query_ids` (in this result's order), with CIs drawn anew over them."""
        keep = set(query_ids)
        unknown = keep - set(self.query_ids)
        if unknown:
            raise fail("subset", f"{len(unknown)} query ids are not in this result (e.g. {sorted(unknown)[:3]})",
                       "pass ids of queries this result was evaluated on")
        per_query = {m: {q: v for q, v in row.items() if q in keep} for m, row in self.per_query.items()}
        if not keep:
            return EvalResult(per_query, {m: (math.nan, math.nan) for m in per_query}, self.confidence, self.name)
        matrix = np.array([list(v.values()) for v in per_query.values()], dtype=np.float64).T
        ci = dict(zip(per_query, bootstrap_cis(matrix, bootstrap)))
        return EvalResult(per_query, ci, self.confidence, self.name)

    def to_dict(self) -> dict[str, float | list[float]]:
        """`{metric: mean, ..., metric_ci: [low, high], ...}`, JSON-ready."""
        out: dict[str, float | list[float]] = dict(self.means)
        out.update({f"{m}_ci": list(self.ci[m]) for m in self.metrics})
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{m}={v:.4f}" for m, v in self.means.items())
        return f"EvalResult({self.name + ': ' if self.name else ''}{shown}; {self.n_queries} queries)"


def evaluate_run(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS, *,
                 ignore_identical_ids: bool = True, relevance_level: int = 1, bootstrap: Bootstrap | None = None,
                 name: str = "") -> EvalResult:
    """Score `run` ({query: {doc: score}}) against `qrels` ({query: {doc: grade}}) on every judged query.

    Judged queries the run lacks (or retrieved nothing for) score 0; run queries without judgments are ignored.
    `ignore_identical_ids` drops a retrieved document whose id equals the query id, as BEIR and MTEB do (for
    collections where queries are also documents, e.g. Quora, ArguAna). Turn it off when query and document ids are
    unrelated numberings that happen to collide (Cranfield: query "1" and document "1" are different things).
    `relevance_level` is the lowest grade that counts as relevant for binary metrics (recall, MAP, MRR); nDCG uses
    the grades themselves as gains (trec_eval's linear gain, as BEIR/MTEB report).
    """
    import pytrec_eval

    parsed = [_parse_metric(m) for m in metrics]
    if not parsed:
        raise fail("metrics", "none given", f"ask for at least one, e.g. {DEFAULT_METRICS}")
    if len({m.name for m in parsed}) != len(parsed):
        raise fail("metrics", f"{list(metrics)} names a metric twice", "name each metric once")
    clean = _clean_run(qrels, run, ignore_identical_ids)
    qrels = {q: {d: int(r) for d, r in row.items()} for q, row in qrels.items()}

    # One pytrec_eval pass per distinct cut of the run (None = the whole run; MRR@k needs the run cut to k).
    per_query: dict[str, dict[str, float]] = {m.name: dict.fromkeys(qrels, 0.0) for m in parsed}
    for cut in dict.fromkeys(m.cut for m in parsed):
        group = [m for m in parsed if m.cut == cut]
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, {m.measure for m in group}, relevance_level=relevance_level)
        scores = evaluator.evaluate(clean if cut is None else _cut_run(clean, cut))
        for qid, row in scores.items():
            for m in group:
                per_query[m.name][qid] = float(row[m.key])
    bootstrap = bootstrap or Bootstrap()
    matrix = np.array([list(v.values()) for v in per_query.values()], dtype=np.float64).T
    ci = dict(zip(per_query, bootstrap_cis(matrix, bootstrap)))
    return EvalResult(per_query, ci, bootstrap.confidence, name)


def queries_are_documents(collection: Collection) -> bool:
    """Whether a query id that is also a document id names the same text on both sides (Quora, ArguAna: the query
    is a document, and finding itself is no success). False when no ids collide, or when they collide by accident
    (Cranfield numbers queries 1-225 and documents 1-1400 separately: query "1" is not document "1")."""
    collide = [q for q in collection.queries if q in collection.corpus]
    return any(collection.corpus.get(q).content.strip() == collection.queries[q].strip() for q in collide)


def evaluate_retriever(retriever: Retriever, collection: Collection, k: int = 100,
                       metrics: Sequence[str] = DEFAULT_METRICS, *, ignore_identical_ids: bool | None = None,
                       bootstrap: Bootstrap | None = None, name: str = "") -> EvalResult:
    """Run every judged query of `collection` through `retriever` (top `k`) and evaluate the ranking.

    `ignore_identical_ids=None` decides from the collection: on when queries are documents of the corpus
    (`queries_are_documents`), else off, so accidental id collisions (Cranfield) do not delete real hits. When no
    ids collide both settings give the same numbers.
    """
    if ignore_identical_ids is None:
        ignore_identical_ids = queries_are_documents(collection)
    query_ids = list(collection.queries)
    if not query_ids:
        raise fail(f"collection {collection.name or '<unnamed>'}", "has no judged queries",
                   "load a split whose qrels name at least one query")
    hits = retriever.search([collection.queries[q] for q in query_ids], k)
    if len(hits) != len(query_ids):
        raise fail(f"retriever {type(retriever).__name__}", f"returned {len(hits)} rankings for {len(query_ids)} queries",
                   "return one list of hits per query, in query order")
    return evaluate_run(collection.qrels, to_run(query_ids, hits), metrics, ignore_identical_ids=ignore_identical_ids,
                        bootstrap=bootstrap, name=name or collection.name)


# ---------------------------------------------------------------------------------------------------------- comparing


def binary_ndcg(positions: np.ndarray, relevant: Sequence[set[int]], k: int = 10) -> np.ndarray:
    """nDCG@k per query of ranked document rows (n_queries, ≥k) against each query's relevant rows, with binary
    gains: what pytrec_eval gives for the same run and 0/1 judgments (tested), without building run dicts, for
    training's validation loop that scores every epoch."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for row, rel in zip(np.asarray(positions)[:, :k], relevant):
        dcg = sum(discounts[i] for i, p in enumerate(row) if int(p) in rel)
        scores.append(dcg / discounts[: min(len(rel), k)].sum())
    return np.asarray(scores, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------- leakage


def question_share(hits: Sequence[Sequence[Hit]], is_question: Mapping[str, bool], depth: int = 5) -> float:
    """Mean over queries of the share of question-form documents among the top `depth` hits: how often a question
    finds other questions instead of answers. `is_question` maps document id -> whether the document is a question."""
    shares = [sum(is_question.get(h.id, False) for h in row[:depth]) / depth for row in hits]
    return float(np.mean(shares)) if shares else math.nan

