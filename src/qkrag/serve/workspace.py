"""What `qkrag serve` shows, computed by the library: one `Source` per collection (a BEIR folder, or a Chroma
collection read into memory), and the four views' data as JSON-ready dicts.

Every number comes from a library call: rankings from `ExactIndex` / `ProjectedRetriever` / `BM25Retriever` and
`hybrid.fuse`; the collection view's metrics, paired test and calibration from the evaluation chain that `qkrag eval`
and the main job use (`bench.chain`: `score`, `paired`), with `reliability_bins`; the aspect maps from `pca_2d` and
`nearest_neighbours`. This module only arranges them. Nothing here writes to an index: a Chroma collection is read
once (ids, vectors, texts) and searched in memory.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qkrag.bench.chain import Scored, paired, score
from qkrag.data import Collection, Corpus, load_beir
from qkrag.embed.encoders import EmbedOptions, Encoder, embed
from qkrag.errors import QkragError, fail
from qkrag.evaluate.metrics import evaluate_run, queries_are_documents
from qkrag.evaluate.calibration import reliability_bins
from qkrag.evaluate.stats import Bootstrap
from qkrag.ranking import Hit, to_run
from qkrag.retrieval.bm25 import BM25Retriever
from qkrag.retrieval.hybrid import FusionConfig, fuse, fusion_for_split
from qkrag.retrieval.factory import load_projection, make_retriever
from qkrag.retrieval.exact import ExactIndex
from qkrag.text import question_form

log = logging.getLogger("qkrag.serve")

#: The columns of the query view, in page order.
COLUMNS = ("cosine", "projection", "hybrid", "bm25")
_QUIET = EmbedOptions(progress=False)
_QUERIES = EmbedOptions(progress=False, cache="read-only")  # answering a request never writes the embedding cache
_ONE = Bootstrap(n_resamples=1)  # a per-query score needs no confidence interval


@dataclass
class Source:
    """One collection the page can show: its corpus, judged queries (when it has qrels) and the four retrievers.

    `error` says why the source could not be loaded (the page shows it instead of results); `projection_error` why
    its projection could not be used (the projection column shows it; the others still work)."""

    name: str
    encoder: Encoder | None = None
    corpus: Corpus | None = None
    collection: Collection | None = None
    raw: ExactIndex | None = None
    projected: Any = None
    bm25: BM25Retriever | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    fusion_note: str = ""
    projection_path: str = ""
    error: str = ""
    projection_error: str = ""
    probability_note: str = ""  # whether the projection's σ is calibrated, on what, with which held-out ECE
    questions: dict[str, bool] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _report: dict[str, Any] | None = None

    @property
    def depth(self) -> int:
        """How deep every arm is searched: the whole corpus when it is small, so each shown document has a cosine,
        a probability and a rank in every column."""
        return min(len(self.corpus), 2000) if self.corpus is not None else 0

    @property
    def hybrid_label(self) -> str:
        """What the hybrid column fuses, and how: "projection + BM25, rrf(k=60)"."""
        return f"{'projection' if self.projected is not None else 'cosine'} + BM25, {self.fusion.label()}"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "error": self.error, "projection": self.projection_path,
                               "projection_error": self.projection_error, "probability": self.probability_note}
        if self.corpus is not None:
            out.update(documents=len(self.corpus), fusion=self.hybrid_label, fusion_note=self.fusion_note,
                       question_form_documents=sum(self.questions.values()))
        if self.collection is not None:
            out.update(split=self.collection.split, judged=[{"id": q, "text": t, "relevant": self.relevant(q)}
                                                            for q, t in self.collection.queries.items()])
        return out

    def relevant(self, query_id: str) -> list[str]:
        judged = self.collection.qrels.get(query_id, {}) if self.collection is not None else {}
        return [d for d, grade in judged.items() if grade > 0]


# ---------------------------------------------------------------------------------------------------------- loading


def _load_projection(source: Source, encoder: Encoder, projection: str | Path | None) -> None:
    from qkrag.projection.calibrate import describe as describe_calibration

    if projection is None:
        return
    source.projection_path = str(projection)
    try:
        model = load_projection(projection, encoder)
        source.projected = make_retriever(encoder, source.raw, projection=model)
        source.probability_note = describe_calibration(model.calibration_)
    except QkragError as err:  # another encoder's projection, a corrupt folder: the other columns still work
        source.projection_error = str(err)


def _finish(source: Source, encoder: Encoder, projection: str | Path | None) -> Source:
    """Arms, question-form marks and titles of a source whose `corpus` and `raw` index are set."""
    _load_projection(source, encoder, projection)
    if source.bm25 is None:
        source.bm25 = BM25Retriever(source.corpus)
    source.questions = {d.id: question_form(d.text) for d in source.corpus}
    source.titles = {d.id: d.title for d in source.corpus}
    source.texts = {d.id: d.text for d in source.corpus}
    return source


def load_folder(folder: str | Path, encoder: Encoder, projection: str | Path | None = None,
                split: str = "test") -> Source:
    """A BEIR folder as a source: its `split` judged, the corpus embedded (through the embedding cache) and searched
    exactly; the hybrid fusion chosen on the train split when there is one (`fusion_for_split`), else RRF."""
    name = Path(folder).name
    try:
        collection = load_beir(folder, split)
        corpus = collection.corpus
        vectors = embed(encoder, corpus.contents, "document", _QUIET)
        raw = ExactIndex(corpus.ids, vectors, "cosine", {d.id: d.content for d in corpus}, encoder.fingerprint)
        source = _finish(Source(name, encoder, corpus, collection, raw), encoder, projection)
        dense = source.projected or make_retriever(encoder, raw)
        source.fusion, source.fusion_note = fusion_for_split(dense, source.bm25, folder, collection.split,
                                                             corpus=corpus)
        return source
    except QkragError as err:
        return Source(name, error=str(err))


def load_index(config: Any, encoder: Encoder, projection: str | Path | None = None) -> Source:
    """A Chroma collection as a source, read once and searched in memory (never written: no projected sibling
    collection is made, no setting changed). BM25 comes from the index's saved BM25 when `qkrag index --hybrid` made
    one, else it is built in memory; the hybrid column fuses by the rule recorded with it (else RRF). No qrels: the
    query view works, the collection view says why it cannot."""
    from qkrag.retrieval.hybrid import bm25_folder, served_fusion
    from qkrag.retrieval.connection import connect
    from qkrag.retrieval.store import ChromaIndex, read_collection

    try:
        ids, vectors, texts, space = read_collection(config, encoder)
        corpus = Corpus.from_texts(dict(zip(ids, (texts[i] for i in ids))), f"collection {config.collection}")
        raw = ExactIndex(ids, vectors, space, texts, encoder.fingerprint)
        source = Source(config.collection, encoder, corpus, None, raw)
        folder = bm25_folder(config)
        if (folder / BM25Retriever.MANIFEST).exists():
            source.bm25 = BM25Retriever.load(folder, corpus)
        _finish(source, encoder, projection)
        # the rule `qkrag index --hybrid` recorded for this dense arm, as `qkrag search --hybrid` uses it
        client = connect(config)  # read the metadata only: ChromaIndex.open would apply this config's ef_search
        owner = ChromaIndex(client, client.get_collection(config.collection, embedding_function=None), config)
        choice = served_fusion(source.projected or make_retriever(encoder, raw), index=owner)
        source.fusion, source.fusion_note = choice.config, choice.origin()
        return source
    except QkragError as err:
        return Source(config.collection, error=str(err))


# ---------------------------------------------------------------------------------------------------------- queries


def _rankings(source: Source, texts: list[str], depth: int) -> dict[str, list[list[Hit]] | None]:
    """Every column's rankings of `texts`, each to `depth`; None for the projection (and the hybrid built on it)
    when the source has none. The query is embedded once; hybrid fuses the projection's ranking (raw cosine's when
    there is no projection) with BM25's, under the source's fusion."""
    vectors = embed(source.encoder, texts, "query", _QUERIES)
    cosine = source.raw.search_vectors(vectors, depth)
    projection = source.projected.search_vectors(vectors, depth) if source.projected is not None else None
    bm25 = source.bm25.search(texts, depth)
    hybrid = fuse(projection if projection is not None else cosine, bm25, source.fusion, depth)
    return {"cosine": cosine, "projection": projection, "hybrid": hybrid, "bm25": bm25}


def _ndcg(hits: list[Hit], relevant: list[str], query_id: str, ignore_identical_ids: bool) -> float | None:
    if not relevant:
        return None
    result = evaluate_run({query_id: dict.fromkeys(relevant, 1)}, to_run([query_id], [hits]), ["ndcg@10"],
                          ignore_identical_ids=ignore_identical_ids, bootstrap=_ONE)
    return result["ndcg@10"]


def _row(source: Source, rank: int, hit: Hit, context: dict[str, Any]) -> dict[str, Any]:
    before = context["cosine_rank"].get(hit.id)
    return {"rank": rank, "id": hit.id, "title": source.titles.get(hit.id, ""),
            "text": source.texts.get(hit.id, hit.text or ""),
            "score": hit.score, "probability": context["probability"].get(hit.id),
            "cosine": context["cosine"].get(hit.id), "cosine_rank": before,
            "rank_change": None if before is None else before - rank, "relevant": hit.id in context["relevant"],
            "question_form": source.questions.get(hit.id, False)}


def run_query(source: Source, text: str | None, *, query_id: str | None = None, relevant: list[str] | None = None,
              k: int = 10) -> dict[str, Any]:
    """One query under every column: top `k` hits each, with text, σ probability, cosine, rank and rank change
    against raw cosine, judged-relevant and question-form marks, and each column's nDCG@10 when something is judged.

    `query_id` names a judged query (its text and judgments are used); `relevant` marks documents as relevant for a
    typed query (ad-hoc judgments, e.g. the answer you expect)."""
    if source.error:
        raise fail(f"collection {source.name!r}", f"could not be loaded ({source.error})", "fix it and restart")
    if query_id:
        if source.collection is None or query_id not in source.collection.queries:
            raise fail(f"query id {query_id!r}", f"is not a judged query of {source.name!r}",
                       "pick one from the list of judged queries")
        text, relevant = source.collection.queries[query_id], source.relevant(query_id)
    if not text or not text.strip():
        raise fail("query", "has no text", "type a query, or pick a judged one")
    unknown = [d for d in relevant or [] if d not in source.corpus]
    if unknown:
        raise fail("relevant ids", f"{unknown[:3]} are not documents of {source.name!r}", "give ids from the corpus")
    relevant = list(relevant or [])
    rankings = {name: (hits[0] if hits is not None else None)
                for name, hits in _rankings(source, [text], source.depth).items()}
    cosine = rankings["cosine"]
    context = {"cosine": {h.id: h.score for h in cosine}, "cosine_rank": {h.id: r for r, h in enumerate(cosine, 1)},
               "probability": {h.id: h.probability for h in rankings["projection"] or []}, "relevant": set(relevant)}
    ignore = bool(query_id) and source.collection is not None and queries_are_documents(source.collection)
    columns = []
    for name in COLUMNS:
        hits = rankings[name]
        if hits is None:
            columns.append({"name": name, "error": source.projection_error or
                            "no projection: start `qkrag serve` with --projection FOLDER (from `qkrag train`)"})
            continue
        columns.append({"name": name, "ndcg@10": _ndcg(hits, relevant, query_id or "typed", ignore),
                        "hits": [_row(source, r, h, context) for r, h in enumerate(hits[:k], 1)]})
    return {"query": text, "query_id": query_id, "relevant": relevant, "fusion": source.hybrid_label,
            "columns": columns}


# ---------------------------------------------------------------------------------------------------------- collection


def _scored(hits: list[list[Hit]], query_ids: list[str], qrels: dict, depth: int = 10) -> tuple[list, list]:
    """(score, judged relevant?) for each query's top `depth` hits and every relevant hit deeper down: the same
    selection `calibration_pairs` makes for probabilities, here for any score (cosine, BM25)."""
    scores, labels = [], []
    for qid, row in zip(query_ids, hits):
        judged = qrels.get(qid, {})
        for rank, hit in enumerate(row):
            relevant = judged.get(hit.id, 0) > 0
            if rank < depth or relevant:
                scores.append(hit.score)
                labels.append(relevant)
    return scores, labels


def _histogram(scores: list[float], labels: list[bool], bins: int = 20, span: tuple[float, float] | None = None
               ) -> dict[str, Any]:
    values = np.asarray(scores, dtype=np.float64)
    mask = np.asarray(labels, dtype=bool)
    edges = np.histogram_bin_edges(values, bins, range=span)
    return {"edges": edges.tolist(), "relevant": np.histogram(values[mask], edges)[0].tolist(),
            "not_relevant": np.histogram(values[~mask], edges)[0].tolist(),
            "n_relevant": int(mask.sum()), "n_not_relevant": int((~mask).sum())}


def _calibration(scored: Scored) -> dict[str, Any]:
    if scored.calibration is None:
        return {"error": "the hits carry no probability"}
    p, y = scored.calibration
    return {"ece": scored.ece(10), "n": int(p.size), "bins": reliability_bins(p, y, 10),
            "histogram": _histogram(p.tolist(), y.astype(bool).tolist(), 20, (0.0, 1.0))}


def collection_report(source: Source) -> dict[str, Any]:
    """The judged split under every column: per-query nDCG@10, the projection's paired comparison with cosine
    (`chain.paired`), score histograms of relevant and other hits, and the projection's reliability diagram.
    Computed once per source and kept."""
    if source.error:
        raise fail(f"collection {source.name!r}", f"could not be loaded ({source.error})", "fix it and restart")
    if source.collection is None:
        raise fail(f"collection {source.name!r}", "has no judged queries (a Chroma collection carries no qrels)",
                   "serve the BEIR folder it was built from to see the collection view")
    with source.lock:  # one computation, however many requests arrive while it runs
        if source._report is None:
            source._report = _report(source)
    return source._report


def _report(source: Source) -> dict[str, Any]:
    collection = source.collection
    query_ids = list(collection.queries)
    rankings = _rankings(source, [collection.queries[q] for q in query_ids], min(100, source.depth))
    scored = {name: score(collection, hits, name, ["ndcg@10"]) for name, hits in rankings.items() if hits is not None}
    results = {name: s.result for name, s in scored.items()}
    per_query = [{"id": q, "text": collection.queries[q], **{name: r.per_query["ndcg@10"][q]
                                                             for name, r in results.items()}} for q in query_ids]
    out: dict[str, Any] = {"split": collection.split, "n_queries": len(query_ids), "per_query": per_query,
                           "hybrid": source.hybrid_label,
                           "means": {n: r["ndcg@10"] for n, r in results.items()},
                           "ci": {n: list(r.ci["ndcg@10"]) for n, r in results.items()},
                           "histograms": {"cosine": _histogram(*_scored(rankings["cosine"], query_ids,
                                                                        collection.qrels))}}
    if "projection" in results:
        c = paired(results["projection"], results["cosine"])
        deltas = [row["projection"] - row["cosine"] for row in per_query]
        out["comparison"] = {"difference": c.difference, "ci": list(c.ci), "p_value": c.p_value,
                             "gains": sum(d > 0 for d in deltas), "losses": sum(d < 0 for d in deltas),
                             "ties": sum(d == 0 for d in deltas)}
        out["calibration"] = _calibration(scored["projection"])
        out["histograms"]["projection"] = out["calibration"]["histogram"]
    return out


# ---------------------------------------------------------------------------------------------------------- aspects


_NOT_LABELS = {"_id", "id", "title", "text"}


def load_aspects(path: str | Path, encoder: Encoder, k: int = 5) -> dict[str, Any]:
    """The aspect view of a labelled JSONL corpus (as data/cities/cities.jsonl: `_id`, `title`, `text` and label
    fields such as climate, cuisine, size): a 2-D PCA map (`pca_2d`) of the documents under raw embeddings and under
    each label's aspect, and every document's `k` nearest neighbours (`nearest_neighbours`) in each.

    Aspects are embedded with `ExtractiveAspectEncoder` (each text's own sentences about the aspect; no LLM, so the
    page starts without one)."""
    from qkrag.analysis.aspects import load_labelled_corpus, nearest_neighbours, pca_2d
    from qkrag.embed.wrappers import ExtractiveAspectEncoder

    path = Path(path)
    try:
        first = json.loads(next(line for line in path.open(encoding="utf-8") if line.strip()))
    except (OSError, StopIteration, ValueError) as err:
        raise fail(f"--aspects {path}", f"is not a labelled JSONL corpus ({type(err).__name__})",
                   "give a JSONL file like data/cities/cities.jsonl (_id, title, text and label fields)") from None
    fields = [f for f, v in first.items() if f not in _NOT_LABELS and isinstance(v, str)]
    if not fields:
        raise fail(f"--aspects {path}", "has no label fields", "add string fields such as climate or cuisine")
    corpus, labels = load_labelled_corpus(path, fields)
    texts = corpus.contents
    vectors = {"raw": embed(encoder, texts, "document", _QUIET)}
    for aspect in fields:
        vectors[aspect] = embed(ExtractiveAspectEncoder(encoder, aspect), texts, "document", _QUIET)
    return {"source": str(path), "labels": labels, "aspects": list(vectors),
            "documents": [{"id": d.id, "title": d.title, "text": d.text} for d in corpus],
            "maps": {name: pca_2d(v).round(5).tolist() for name, v in vectors.items()},
            "neighbours": {name: nearest_neighbours(v, corpus.ids, k) for name, v in vectors.items()}}


# ---------------------------------------------------------------------------------------------------------- pairs


def load_pairs_view(folder: str | Path, n: int = 25, seed: int = 0) -> dict[str, Any]:
    """A seeded sample of `n` generated pairs from a pairs folder (`qkrag generate --out`), each with its base rank,
    form and the filter values it passed, next to the limits the generation ran with (its stats.json)."""
    from qkrag.pairs.store import load_pairs, read_stats

    dataset = load_pairs(folder)
    stats = read_stats(folder)
    config = stats.get("config", {})
    rows = np.random.default_rng(seed).permutation(len(dataset))[:n]
    pairs = []
    for i in sorted(int(r) for r in rows):
        row = dataset[i]
        pairs.append({**{key: row[key] for key in ("query_id", "query", "positive_id", "positive_text", "base_rank",
                                                  "variant", "off_form", "words", "copy_score", "title_copy",
                                                  "ngram_copy", "negative_ids")},
                      "question_form": question_form(row["query"]), "filters": _filters(row, config)})
    return {"folder": str(folder), "n_pairs": len(dataset), "shown": len(pairs), "seed": seed, "pairs": pairs,
            "generator": stats.get("generator"), "counts": stats.get("counts", {}),
            "pair_ranks": stats.get("pair_ranks", {}), "config": config}


def _filters(row: dict[str, Any], config: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded value of each filter a kept pair went through, with the limit it was held to (from the
    generation's config); a limit the config does not record is shown as None."""
    return [
        {"filter": "words", "value": row["words"],
         "limit": f"{config.get('min_words')}–{config.get('max_words')}"},
        {"filter": "passage copy", "value": row["copy_score"], "limit": f"≤ {config.get('max_copy')}"},
        {"filter": "title copy", "value": row["title_copy"], "limit": f"≤ {config.get('max_title_copy')}"},
        {"filter": "round-trip rank", "value": row["base_rank"], "limit": f"≤ {config.get('roundtrip_k')}"},
    ]
