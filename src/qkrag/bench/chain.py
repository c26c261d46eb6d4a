"""The evaluation chain: how a ranking becomes figures, in one place for `qkrag eval`, the main job and the web page.

    scored = score(collection, hits, "projection")       to_run -> evaluate_run -> calibration pairs
    scored.ece()                                         where the hits carry σ
    paired(scored.result, base.result)                   the paired difference on the primary metric
    audit(scored.result, base.result, qrels, positives)  the seen/novel split over training positives

`evaluate_folder` is `qkrag eval`: one retriever on a BEIR folder, its figures and what they mean next to a base.

    ev = evaluate_folder("../shared/data/scifact", retriever="exact", projection="runs/proj", baseline="cosine")
    ev.result["ndcg@10"], ev.extra["delta_ndcg@10"], ev.extra["p_ndcg@10"]
    write_trec_run("run.txt", ev.run, "qkrag")     # for trec_eval or ranx
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkrag.atomic import atomic_open
from qkrag.errors import fail
from qkrag.retrieval.factory import baselines

if TYPE_CHECKING:
    import numpy as np

    from qkrag.data import Collection, Qrels
    from qkrag.embed.encoders import Encoder
    from qkrag.evaluate.compare import Comparison
    from qkrag.evaluate.metrics import EvalResult
    from qkrag.projection.model import Projection
    from qkrag.ranking import Hit, Run
    from qkrag.retrieval.connection import IndexConfig


# ---------------------------------------------------------------------------------------------------------- the chain


@dataclass
class Scored:
    """One ranking of a collection's judged queries, scored: its metrics, the run, the hits, and the (probability,
    label) pairs of the hits a user reads (`calibration_pairs`; None where the hits carry no σ)."""

    result: EvalResult
    run: Run
    hits: list[list[Hit]]
    calibration: tuple[np.ndarray, np.ndarray] | None = None

    def ece(self, n_bins: int = 15) -> float | None:
        """The expected calibration error of the σ a user reads, over `n_bins` bins; None without σ."""
        from qkrag.evaluate.calibration import expected_calibration_error

        return None if self.calibration is None else expected_calibration_error(*self.calibration, n_bins)


def score(collection: Collection, hits: list[list[Hit]], name: str, metrics: Sequence[str] | None = None
          ) -> Scored:
    """Score `hits` (one ranking per judged query of `collection`, in its order) against its judgments. A hit whose
    id is the query's own is dropped only where queries are documents of the corpus (`queries_are_documents`)."""
    from qkrag.evaluate.calibration import calibration_pairs
    from qkrag.evaluate.metrics import DEFAULT_METRICS, evaluate_run, queries_are_documents
    from qkrag.ranking import to_run

    query_ids = list(collection.queries)
    run = to_run(query_ids, hits)
    result = evaluate_run(collection.qrels, run, metrics or DEFAULT_METRICS, name=name,
                          ignore_identical_ids=queries_are_documents(collection))
    return Scored(result, run, hits, calibration_pairs(hits, query_ids, collection.qrels))


def search_and_score(searcher: Any, collection: Collection, k: int, name: str) -> Scored:
    """Every judged query of `collection` through `searcher` (top `k`), scored."""
    return score(collection, searcher.search([collection.queries[q] for q in collection.queries], k), name)


def paired(result: EvalResult, base: EvalResult) -> Comparison:
    """`result` against `base` on the same queries: the paired difference of the primary metric, its CI, p-value."""
    from qkrag.evaluate.compare import compare
    from qkrag.evaluate.metrics import PRIMARY_METRIC

    return compare(result, base, PRIMARY_METRIC)


def audit(result: EvalResult, base: EvalResult, qrels: Qrels, positives: Iterable[str]) -> dict[str, Any]:
    """A trained result's seen/novel split against its base (`leakage_audit`): the queries whose relevant documents
    were training `positives`, and the rest."""
    from qkrag.evaluate.compare import leakage_audit
    from qkrag.evaluate.metrics import PRIMARY_METRIC

    return leakage_audit(result, base, qrels, positives, PRIMARY_METRIC)


# ---------------------------------------------------------------------------------------------------------- qkrag eval


@dataclass
class Evaluation:
    """One evaluated retriever: its result, the run it made, JSON-ready figures (`extra`: ECE, the difference to the
    base and the audit) and text facts (`info`: the fusion, what the base was)."""

    result: EvalResult
    run: Run
    hits: list[list[Hit]]
    extra: dict[str, Any] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    base: EvalResult | None = None
    seconds: float = 0.0


def evaluate_folder(data: str | os.PathLike[str], *, split: str = "test", retriever: str = "exact",
                    encoder: Encoder | None = None, projection: str | os.PathLike[str] | None = None,
                    baseline: str | None = None, k: int = 100, config: IndexConfig | None = None,
                    fusion: str = "auto", fusion_weight: float | None = None,
                    skip_empty: bool = False) -> Evaluation:
    """Evaluate `retriever` (exact, chroma, bm25, hybrid; through `projection` if given) on `split` of `data`.

    The base it is compared with: `baseline` ("cosine": the same dense retriever without a projection, "bm25",
    "hybrid": BM25 fused with raw cosine), or, for a projection with no baseline named, the same retriever without
    the projection. The projection is loaded once: it serves the search and names its training positives."""
    from qkrag.data import load_beir
    from qkrag.evaluate.calibration import ece_warning
    from qkrag.retrieval.factory import dense_index, load_projection, retriever_for_folder

    if baseline is not None and baseline not in (known := baselines()):  # read now: registrations made after import count
        raise fail(f"--baseline {baseline!r}", "is not a baseline", f"use one of {', '.join(known)}")
    started = time.perf_counter()
    collection = load_beir(data, split, skip_empty=skip_empty)
    dense = retriever != "bm25" and encoder is not None
    model = load_projection(projection, encoder) if projection is not None and dense else projection
    index = None
    if dense:  # built once, shared with the base
        index = dense_index("chroma" if retriever == "chroma" else "exact", collection.corpus, encoder, config)
    common = {"data": data, "split": split, "index": index, "config": config}
    searcher, info = retriever_for_folder(retriever, collection.corpus, encoder, projection=model,
                                          fusion=fusion, fusion_weight=fusion_weight, **common)
    scored = search_and_score(searcher, collection, k, retriever)
    evaluation = Evaluation(scored.result, scored.run, scored.hits, info=info)
    ece = scored.ece() if projection is not None else None
    if ece is not None:
        evaluation.extra["ece"] = ece
        if ece_warning(ece):
            evaluation.extra["ece_warning"] = ece_warning(ece)
    if projection is not None or baseline is not None:
        base_kind = _base_kind(retriever, baseline)
        base_searcher, _ = retriever_for_folder(base_kind, collection.corpus, encoder,
                                                **{**common, "index": None if base_kind == "bm25" else index})
        evaluation.base = search_and_score(base_searcher, collection, k, base_kind).result
        evaluation.info["baseline"] = base_kind if baseline else f"{base_kind} without the projection"
        evaluation.extra.update(_against(evaluation, collection.qrels, model))
    evaluation.seconds = round(time.perf_counter() - started, 2)
    return evaluation


def _base_kind(retriever: str, baseline: str | None) -> str:
    """The retriever a result is compared with: the same one without its projection, or the named baseline."""
    if baseline is None:
        return retriever
    if baseline == "cosine":
        return "chroma" if retriever == "chroma" else "exact"
    return baseline


def _against(evaluation: Evaluation, qrels: Qrels, projection: Projection | None) -> dict[str, Any]:
    """The paired difference to the base (JSON keys named after the metric); for a projection also the seen/novel
    audit over its training positives, or why there is none."""
    c = paired(evaluation.result, evaluation.base)
    out: dict[str, Any] = {f"base_{c.metric}": c.mean_b, f"delta_{c.metric}": c.difference,
                           f"delta_{c.metric}_ci": list(c.ci), f"p_{c.metric}": c.p_value}
    if projection is None:
        return out
    positives = getattr(projection, "training_positive_ids_", None)
    if positives is None:
        out["leakage_audit"] = "not available: the projection does not record its training positives (retrain it)"
    else:
        out.update(audit(evaluation.result, evaluation.base, qrels, positives))
    return out


def write_trec_run(path: str | os.PathLike[str], run: Run, name: str = "qkrag") -> Path:
    """The run in TREC format (`qid Q0 docid rank score name`, best first), for trec_eval, ranx or pytrec_eval."""
    if not name or any(c.isspace() for c in name):
        raise fail(f"run name {name!r}", "is empty or holds whitespace", "use one word, e.g. qkrag")
    path = Path(path)
    with atomic_open(path, "w") as handle:
        for qid, scores in run.items():
            ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
            for rank, (doc_id, score) in enumerate(ranked, 1):
                handle.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {name}\n")
    return path
