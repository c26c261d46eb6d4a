"""Evaluating one retriever on a BEIR folder, as `qkrag eval` does: the ranking, its metrics with CIs, and what the
figure means next to a base (the paired difference, and for a projection the seen/novel leakage audit).

    ev = evaluate_folder("../shared/data/scifact", retriever="exact", projection="runs/proj", baseline="cosine")
    ev.result["ndcg@10"], ev.extra["delta_ndcg@10"], ev.extra["p_ndcg@10"]
    write_trec_run("run.txt", ev.run, "qkrag")     # for trec_eval or ranx
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkrag.atomic import atomic_open
from qkrag.errors import fail
from qkrag.retrieval.factory import baselines

if TYPE_CHECKING:
    from qkrag.embed.encoders import Encoder
    from qkrag.evaluate.metrics import EvalResult
    from qkrag.ranking import Hit, Run
    from qkrag.retrieval.index import IndexConfig

BASELINES = baselines()  # "cosine" and the other kinds of retrieval.factory.RETRIEVERS


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
    the projection."""
    from qkrag.data import load_beir
    from qkrag.evaluate.calibration import calibration_pairs, ece_warning, expected_calibration_error
    from qkrag.retrieval.factory import dense_index, retriever_for_folder

    if baseline is not None and baseline not in BASELINES:
        raise fail(f"--baseline {baseline!r}", "is not a baseline", f"use one of {', '.join(BASELINES)}")
    started = time.perf_counter()
    collection = load_beir(data, split, skip_empty=skip_empty)
    index = None
    if retriever != "bm25" and encoder is not None:  # built once, shared with the base
        index = dense_index("chroma" if retriever == "chroma" else "exact", collection.corpus, encoder, config)
    common = {"data": data, "split": split, "index": index, "config": config}
    searcher, info = retriever_for_folder(retriever, collection.corpus, encoder, projection=projection,
                                          fusion=fusion, fusion_weight=fusion_weight, **common)
    result, run, hits = _measure(searcher, collection, k, retriever)
    evaluation = Evaluation(result, run, hits, info=info)
    if projection is not None:
        calibration = calibration_pairs(hits, result.query_ids, collection.qrels)
        if calibration is not None:
            evaluation.extra["ece"] = expected_calibration_error(*calibration)
            if ece_warning(evaluation.extra["ece"]):
                evaluation.extra["ece_warning"] = ece_warning(evaluation.extra["ece"])
    if projection is not None or baseline is not None:
        base_kind = _base_kind(retriever, baseline)
        base_searcher, _ = retriever_for_folder(base_kind, collection.corpus, encoder,
                                                **{**common, "index": None if base_kind == "bm25" else index})
        evaluation.base = _measure(base_searcher, collection, k, base_kind)[0]
        evaluation.info["baseline"] = base_kind if baseline else f"{base_kind} without the projection"
        evaluation.extra.update(_against(evaluation, collection, projection))
    evaluation.seconds = round(time.perf_counter() - started, 2)
    return evaluation


def _base_kind(retriever: str, baseline: str | None) -> str:
    """The retriever a result is compared with: the same one without its projection, or the named baseline."""
    if baseline is None:
        return retriever
    if baseline == "cosine":
        return "chroma" if retriever == "chroma" else "exact"
    return baseline


def _measure(searcher, collection, k: int, name: str) -> tuple[EvalResult, Run, list[list[Hit]]]:
    from qkrag.evaluate.metrics import evaluate_run, queries_are_documents
    from qkrag.ranking import to_run

    query_ids = list(collection.queries)
    hits = searcher.search([collection.queries[q] for q in query_ids], k)
    run = to_run(query_ids, hits)
    result = evaluate_run(collection.qrels, run, name=name, ignore_identical_ids=queries_are_documents(collection))
    return result, run, hits


def _against(evaluation: Evaluation, collection, projection: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The paired difference to the base; for a projection also the seen/novel audit over its training positives."""
    from qkrag.evaluate.compare import against_base, compare

    if projection is None:
        c = compare(evaluation.result, evaluation.base, "ndcg@10")
        return {"base_ndcg@10": c.mean_b, "delta_ndcg@10": c.difference, "delta_ndcg@10_ci": list(c.ci),
                "p_ndcg@10": c.p_value}
    from qkrag.projection.model import QKProjection

    positives = QKProjection.load(projection).training_positive_ids_
    return against_base(evaluation.result, evaluation.base, collection.qrels, positives)


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
