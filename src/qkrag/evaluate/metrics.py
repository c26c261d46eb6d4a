"""Stage 5, evaluate: IR metrics with confidence intervals, paired comparisons, and calibration.

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
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from qkrag.data import Collection, Qrels
from qkrag.errors import fail
from qkrag.retrieval.base import Hit, Retriever, Run, to_run

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10", "map")
PRIMARY_METRIC = "ndcg@10"

# our name -> (pytrec_eval measure family, the key prefix pytrec_eval answers with)
_FAMILIES = {"ndcg": ("ndcg_cut", "ndcg_cut"), "recall": ("recall", "recall"), "precision": ("P", "P"),
             "p": ("P", "P"), "map": ("map_cut", "map_cut")}


@dataclass(frozen=True)
class Bootstrap:
    """How confidence intervals are drawn: a seeded percentile bootstrap over queries (deterministic)."""

    n_resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


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


def bootstrap_ci(values: Sequence[float] | np.ndarray, bootstrap: Bootstrap | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (resampled with replacement, seeded)."""
    return _bootstrap_cis(np.asarray(values, dtype=np.float64)[:, None], bootstrap)[0]


def _bootstrap_cis(columns: np.ndarray, bootstrap: Bootstrap | None = None) -> list[tuple[float, float]]:
    """CIs of the mean of each column of an (n_queries, n_metrics) matrix. All metrics share the same resamples of
    queries: cheaper, and the intervals of one result then describe the same hypothetical query sets."""
    bootstrap = bootstrap or Bootstrap()
    n = columns.shape[0]
    if n == 0:
        return [(math.nan, math.nan)] * columns.shape[1]
    rng = np.random.default_rng(bootstrap.seed)
    means = np.empty((bootstrap.n_resamples, columns.shape[1]))
    chunk = max(1, 2_000_000 // n)  # bound memory at ~16 MB of indices per step
    for start in range(0, bootstrap.n_resamples, chunk):
        size = min(chunk, bootstrap.n_resamples - start)
        # resample counts (how often each query is drawn) instead of gathering values: one matmul for all metrics
        draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
        means[start : start + size] = counts @ columns / n
    alpha = (1 - bootstrap.confidence) / 2
    bounds = np.quantile(means, [alpha, 1 - alpha], axis=0)
    return [(float(lo), float(hi)) for lo, hi in bounds.T]


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
        ci = dict(zip(per_query, _bootstrap_cis(matrix, bootstrap)))
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
    ci = dict(zip(per_query, _bootstrap_cis(matrix, bootstrap)))
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


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of two systems on the same queries. `difference` = mean over queries of (a - b)."""

    metric: str
    mean_a: float
    mean_b: float
    difference: float
    ci: tuple[float, float]  # paired bootstrap CI of the mean difference
    p_value: float  # two-sided paired randomization (sign-flip) test
    n_queries: int
    test: str = "paired randomization test (sign flips), two-sided"

    @property
    def significant(self) -> bool:
        """At the 5% level (the CI excludes 0 and p < 0.05 agree up to resampling noise)."""
        return self.p_value < 0.05


def compare(a: EvalResult, b: EvalResult, metric: str = PRIMARY_METRIC, *, n_permutations: int = 10_000,
            bootstrap: Bootstrap | None = None) -> Comparison:
    """Is `a` better than `b` on `metric`, beyond what the choice of queries explains?

    Pairs the per-query scores. The p-value is a paired randomization test: under the null hypothesis that the two
    systems are exchangeable, each query's difference is equally likely to have either sign, so we flip signs at
    random (`n_permutations` times, seeded) and count how often the mean difference is at least as extreme as the
    observed one; p = (count + 1) / (n_permutations + 1). The CI is a paired bootstrap of the mean difference.
    """
    for r in (a, b):
        if metric not in r.per_query:
            raise fail(f"metric {metric!r}", f"was not computed for {r.name or 'one result'} (it has {r.metrics})",
                       "evaluate both systems with that metric")
    qa, qb = a.per_query[metric], b.per_query[metric]
    if set(qa) != set(qb):
        only_a, only_b = sorted(set(qa) - set(qb)), sorted(set(qb) - set(qa))
        raise fail("compare", f"the results cover different queries ({len(only_a)} only in a, e.g. {only_a[:3]}; "
                   f"{len(only_b)} only in b, e.g. {only_b[:3]})", "evaluate both systems on the same qrels")
    ids = list(qa)
    diff = np.array([qa[q] - qb[q] for q in ids], dtype=np.float64)
    p = sign_flip_p_value(diff, n_permutations, (bootstrap or Bootstrap()).seed)
    return Comparison(metric, a.means[metric], b.means[metric], float(diff.mean()), bootstrap_ci(diff, bootstrap),
                      p, len(ids))


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


def sign_flip_p_value(diff: Sequence[float] | np.ndarray, n_permutations: int = 10_000, seed: int = 0,
                      alternative: str = "two-sided") -> float:
    """Paired randomization test of per-query differences: how often random sign flips give a mean difference at
    least as extreme as the observed one; p = (count + 1) / (n_permutations + 1). `alternative="greater"` asks
    only whether the mean difference is above zero."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return 1.0
    one_sided = alternative == "greater"
    observed = diff.mean() if one_sided else abs(diff.mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    chunk = max(1, 2_000_000 // diff.size)
    for start in range(0, n_permutations, chunk):
        n = min(chunk, n_permutations - start)
        signs = rng.integers(0, 2, size=(n, diff.size), dtype=np.int8).astype(np.float64) * 2 - 1
        flipped = signs @ diff / diff.size
        # the tolerance keeps float noise from deciding ties (identical systems: every flip ties, p = 1)
        extreme += int(((flipped if one_sided else np.abs(flipped)) >= observed - 1e-12).sum())
    return (extreme + 1) / (n_permutations + 1)


# ---------------------------------------------------------------------------------------------------------- leakage


def seen_novel(qrels: Qrels, training_positives: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split judged queries by whether any of their relevant documents was a positive in training ("seen") or none
    was ("novel"). A trained map can gain on seen queries by learning *which documents* get judged (a prior over
    documents) rather than what relevance means; only the novel queries say whether it learned relevance."""
    positives = set(training_positives)
    seen, novel = [], []
    for qid, judged in qrels.items():
        relevant = {d for d, grade in judged.items() if grade > 0}
        (seen if relevant & positives else novel).append(qid)
    return seen, novel


def leakage_audit(result: EvalResult, base: EvalResult, qrels: Qrels, training_positives: Iterable[str],
                  metric: str = PRIMARY_METRIC) -> dict[str, float | int | list[float] | None]:
    """`metric` of `result` on seen and novel queries (see `seen_novel`), each with its bootstrap CI, the base's
    score on the same queries, and the paired difference with its CI and sign-flip p-value. JSON-ready; keys
    `{metric}_seen`, `{metric}_novel`, `n_seen`, `n_novel`, and per part `_ci`, `base_`, `delta_`, `p_`."""
    seen, novel = seen_novel({q: qrels[q] for q in result.query_ids if q in qrels}, training_positives)
    out: dict[str, float | int | list[float] | None] = {"n_seen": len(seen), "n_novel": len(novel)}
    for part, ids in (("seen", seen), ("novel", novel)):
        if not ids:
            out.update({f"{metric}_{part}": None, f"{metric}_{part}_ci": None, f"base_{metric}_{part}": None,
                        f"delta_{metric}_{part}": None, f"delta_{metric}_{part}_ci": None, f"p_{metric}_{part}": None})
            continue
        mine, theirs = result.subset(ids), base.subset(ids)
        c = compare(mine, theirs, metric)
        out.update({f"{metric}_{part}": mine[metric], f"{metric}_{part}_ci": list(mine.ci[metric]),
                    f"base_{metric}_{part}": theirs[metric], f"delta_{metric}_{part}": c.difference,
                    f"delta_{metric}_{part}_ci": list(c.ci), f"p_{metric}_{part}": c.p_value})
    return out


def against_base(result: EvalResult, base: EvalResult, qrels: Qrels, training_positives: Iterable[str] | None,
                 metric: str = PRIMARY_METRIC) -> dict[str, float | int | list[float] | str | None]:
    """What a trained system's figure means: its paired difference to `base` (the same retriever untrained) on all
    queries, and, when the training positives are known, the seen/novel `leakage_audit`. JSON-ready."""
    c = compare(result, base, metric)
    out: dict[str, float | int | list[float] | str | None] = {
        f"base_{metric}": c.mean_b, f"delta_{metric}": c.difference, f"delta_{metric}_ci": list(c.ci),
        f"p_{metric}": c.p_value}
    if training_positives is None:
        out["leakage_audit"] = "not available: the projection does not record its training positives (retrain it)"
    else:
        out.update(leakage_audit(result, base, qrels, training_positives, metric))
    return out


def question_share(hits: Sequence[Sequence[Hit]], is_question: Mapping[str, bool], depth: int = 5) -> float:
    """Mean over queries of the share of question-form documents among the top `depth` hits: how often a question
    finds other questions instead of answers. `is_question` maps document id -> whether the document is a question."""
    shares = [sum(is_question.get(h.id, False) for h in row[:depth]) / depth for row in hits]
    return float(np.mean(shares)) if shares else math.nan


# ---------------------------------------------------------------------------------------------------------- reporting


def results_table(results: Mapping[str, EvalResult], metrics: Sequence[str] | None = None, digits: int = 3) -> str:
    """A markdown table, one row per named result: each cell `mean [low, high]` (the bootstrap CI)."""
    if not results:
        raise fail("results_table", "no results given", "pass {name: EvalResult}")
    metrics = list(metrics or next(iter(results.values())).metrics)
    conf = next(iter(results.values())).confidence
    header = ["system", *[f"{m} [{conf:.0%} CI]" for m in metrics], "queries"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, r in results.items():
        cells = []
        for m in metrics:
            lo, hi = r.ci[m] if m in r.ci else (math.nan, math.nan)
            cells.append(f"{r[m]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
        lines.append("| " + " | ".join([name, *cells, str(r.n_queries)]) + " |")
    return "\n".join(lines) + "\n"


def plot_results(results: Mapping[str, EvalResult], path: str | os.PathLike[str],
                 metrics: Sequence[str] | None = None, title: str = "") -> None:
    """Grouped bar chart (one group per metric, one bar per system) with CI error bars, saved as a PNG."""
    if not results:
        raise fail("plot_results", "no results given", "pass {name: EvalResult}")
    metrics = list(metrics or next(iter(results.values())).metrics)
    width = 0.8 / len(results)
    # Width grows with the bars, capped; the legend sits outside the axes so it never hides a bar.
    fig = _figure(figsize=(min(12.0, max(5.0, 0.35 * len(metrics) * len(results) + 3.0)), 4))
    ax = fig.subplots()
    x = np.arange(len(metrics))
    for i, (name, r) in enumerate(results.items()):
        means = np.array([r[m] for m in metrics])
        lo = np.array([r.ci[m][0] for m in metrics])
        hi = np.array([r.ci[m][1] for m in metrics])
        ax.bar(x + (i - (len(results) - 1) / 2) * width, means, width, label=name,
               yerr=np.vstack([means - lo, hi - means]), capsize=3)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"score (error bars: {next(iter(results.values())).confidence:.0%} bootstrap CI)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    _save_png(fig, path)


# ---------------------------------------------------------------------------------------------------------- calibration


def _check_probabilities(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.size != y.size:
        raise fail("calibration", f"{p.size} probabilities but {y.size} labels", "give one label per probability")
    if p.size == 0:
        raise fail("calibration", "no probabilities given", "pass at least one (probability, label) pair")
    if not np.all((p >= 0) & (p <= 1)):
        raise fail("calibration", f"probabilities outside [0, 1] (min {np.nanmin(p):.3g}, max {np.nanmax(p):.3g})",
                   "pass probabilities (e.g. sigmoid of the scores), not raw scores")
    if not np.all((y == 0) | (y == 1)):
        raise fail("calibration", "labels are not all 0 or 1", "pass binary relevance labels (1 = relevant)")
    return p, y


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each probability; 1.0 falls in the last bin."""
    if n_bins < 1:
        raise fail("n_bins", f"{n_bins} is not a positive number of bins", "use e.g. 15")
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def expected_calibration_error(probabilities, labels, n_bins: int = 15) -> float:
    """ECE: the mean over equal-width probability bins of |observed frequency - mean probability|, weighted by the
    share of predictions in each bin (Guo et al. 2017; 15 bins as there). 0 = calibrated, up to 1 = always wrong."""
    p, y = _check_probabilities(probabilities, labels)
    which = _bins(p, n_bins)
    count = np.bincount(which, minlength=n_bins)
    gap = np.abs(np.bincount(which, weights=y, minlength=n_bins) - np.bincount(which, weights=p, minlength=n_bins))
    # sum over bins of (n_b / N) * |mean(y_b) - mean(p_b)| = sum |Σy_b - Σp_b| / N
    return float(gap[count > 0].sum() / p.size)


def calibration_pairs(hits: Sequence[Sequence[Hit]], query_ids: Sequence[str], qrels: Qrels, depth: int = 10
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """(probability, label) pairs where a user reads probabilities: each query's top `depth` hits, plus every judged
    relevant document the ranking holds deeper down. None when the hits carry no probability (raw cosine, BM25)."""
    probs, labels = [], []
    for qid, row in zip(query_ids, hits):
        judged = qrels.get(qid, {})
        for rank, hit in enumerate(row):
            if hit.probability is None:
                return None
            relevant = judged.get(hit.id, 0) > 0
            if rank < depth or relevant:
                probs.append(hit.probability)
                labels.append(1 if relevant else 0)
    return (np.asarray(probs), np.asarray(labels)) if probs else None


def reliability_diagram(probabilities, labels, path: str | os.PathLike[str], n_bins: int = 15,
                        title: str = "") -> None:
    """Observed frequency of relevance per probability bin against the diagonal (perfect calibration), with the
    share of predictions per bin underneath; saved as a PNG."""
    p, y = _check_probabilities(probabilities, labels)
    which = _bins(p, n_bins)
    count = np.bincount(which, minlength=n_bins)
    filled = count > 0
    freq = np.bincount(which, weights=y, minlength=n_bins)[filled] / count[filled]
    conf = np.bincount(which, weights=p, minlength=n_bins)[filled] / count[filled]
    edges = np.linspace(0, 1, n_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2

    fig = _figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.bar(centres[filled], freq, width=1 / n_bins, edgecolor="black", alpha=0.7, label="observed frequency")
    top.plot(conf, freq, "o", color="C3", markersize=4, label="bin mean probability")
    top.set_ylabel("fraction relevant")
    top.set_ylim(0, 1)
    ece = expected_calibration_error(p, y, n_bins)
    top.set_title(title or f"Reliability (ECE = {ece:.3f}, n = {p.size})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(centres, count / p.size, width=1 / n_bins, edgecolor="black", color="C0")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("share")
    bottom.set_xlim(0, 1)
    _save_png(fig, path)


def _figure(figsize: tuple[float, float]):
    """A bare matplotlib Figure, not pyplot's: no global backend switch (a notebook keeps its inline plots), no
    display needed, nothing to close. Imported only when plotting."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="tight")


def _save_png(fig, path: str | os.PathLike[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from qkrag.atomic import atomic_open

    FigureCanvasAgg(fig)  # render with Agg whatever backend the process uses
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
