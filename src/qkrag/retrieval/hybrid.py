"""Hybrid retrieval: fuse a dense ranking with a lexical (BM25) ranking, no training needed.

Dense search finds paraphrases and misses rare exact terms (gene names, numbers); BM25 is the other way round. Fusing
the two rankings is the first thing to try on a new corpus, and the baseline a learned projection has to beat
(benchmarks/results/main_job_*.md measure it next to each arm).

Two fusion rules, both over each arm's top `depth` hits per query:
- RRF (reciprocal rank fusion, Cormack et al. 2009): fused = Σ_arm 1 / (rrf_k + rank). It uses ranks only, so it
  needs no score scaling and has no weight to tune; rrf_k = 60 is the paper's value and rarely worth changing.
- convex: fused = w·norm(dense) + (1 - w)·norm(lexical), each arm's scores normalised per query (z-score or min-max)
  because cosines and BM25 scores live on unrelated scales. Usually a little better than RRF once w is chosen on
  held-out queries (`choose_fusion`), and worse than RRF with a badly chosen w.

Persisting BM25 beside a Chroma collection (`bm25_folder`, `open_bm25`, `collection_bm25`) lets `qkrag search
--hybrid` answer without re-tokenising the corpus; the saved index records a hash of the documents it was built on
and refuses to serve another set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qkrag.atomic import remove_stale
from qkrag.retrieval.bm25 import BM25Retriever, build_bm25, saved_source
from qkrag.data import Collection, Corpus, Document, Qrels, load_beir, splits
from qkrag.errors import IndexMismatchError, fail
from qkrag.evaluate.metrics import evaluate_run, queries_are_documents
from qkrag.evaluate.stats import Bootstrap
from qkrag.retrieval.connection import IndexConfig
from qkrag.retrieval.store import ChromaIndex
from qkrag.ranking import Hit, Retriever, to_run

FusionMethod = Literal["rrf", "convex"]
Normalization = Literal["zscore", "minmax"]
_DEFAULT_DEPTH = 100


@dataclass(frozen=True)
class FusionConfig:
    """How two rankings are fused.

    method: "rrf" (rank-based, parameter-free) or "convex" (weighted sum of per-query normalised scores).
    weight: convex only, the weight of the dense arm: fused = w·norm(dense) + (1 - w)·norm(lexical).
    rrf_k: RRF's damping constant (60 in the paper): larger values flatten the difference between top ranks.
    normalization: convex only, "zscore" ((s - mean) / std) or "minmax" ((s - min) / (max - min)), per query and arm.
    depth: how many hits of each arm are fused.
    """

    method: FusionMethod = "rrf"
    weight: float = 0.5
    rrf_k: int = 60
    normalization: Normalization = "zscore"
    depth: int = _DEFAULT_DEPTH

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "convex"):
            raise fail("FusionConfig.method", f"{self.method!r} is not a fusion method", "use 'rrf' or 'convex'")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not 0 <= self.weight <= 1:
            raise fail("FusionConfig.weight", f"{self.weight!r} is not a weight in [0, 1]",
                       "pass the dense arm's share, e.g. 0.5 (0 = lexical only, 1 = dense only)")
        for name, low in (("rrf_k", 0), ("depth", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise fail(f"FusionConfig.{name}", f"{value!r} is not an integer >= {low}",
                           "use the default" + (" (60)" if name == "rrf_k" else f" ({_DEFAULT_DEPTH})"))
        if self.normalization not in ("zscore", "minmax"):
            raise fail("FusionConfig.normalization", f"{self.normalization!r} is not a normalisation",
                       "use 'zscore' or 'minmax'")

    def label(self) -> str:
        """A short name for tables and JSON: "rrf(k=60)", "convex(w=0.7, zscore)"; depth shows when not 100."""
        inner = f"k={self.rrf_k}" if self.method == "rrf" else f"w={self.weight:g}, {self.normalization}"
        if self.depth != _DEFAULT_DEPTH:
            inner += f", depth={self.depth}"
        return f"{self.method}({inner})"


# ---------------------------------------------------------------------------------------------------------- fusion


def _first_hits(row: Sequence[Hit], depth: int) -> dict[str, Hit]:
    """{id: hit} of the top `depth` hits, best first; a repeated id keeps its best (first) hit."""
    out: dict[str, Hit] = {}
    for hit in row[:depth]:
        out.setdefault(hit.id, hit)
    return out


def _arm_scores(hits: dict[str, Hit], config: FusionConfig) -> dict[str, float]:
    """One arm's contribution per document: 1 / (rrf_k + rank) for RRF, else the normalised score."""
    if config.method == "rrf":
        return {doc: 1.0 / (config.rrf_k + rank) for rank, doc in enumerate(hits, 1)}
    scores = np.array([h.score for h in hits.values()], dtype=np.float64)
    if scores.size == 0:
        return {}
    if config.normalization == "zscore":
        spread, centre = scores.std(), scores.mean()
    else:
        spread, centre = scores.max() - scores.min(), scores.min()
    # A constant list (one hit, or all tied) says nothing about order within the arm: every hit normalises to 0.
    normed = (scores - centre) / spread if spread > 0 else np.zeros_like(scores)
    return dict(zip(hits, normed.tolist()))


def _fuse_query(dense: Sequence[Hit], lexical: Sequence[Hit], config: FusionConfig, k: int) -> list[Hit]:
    dense_hits, lexical_hits = _first_hits(dense, config.depth), _first_hits(lexical, config.depth)
    d, lex = _arm_scores(dense_hits, config), _arm_scores(lexical_hits, config)
    if config.method == "rrf":
        weights, missing = (1.0, 1.0), (0.0, 0.0)  # an arm that did not rank a document adds nothing
    else:
        # A document one arm did not return scores as that arm's worst hit: absent from its top `depth`, it is at
        # best as good as the last one shown. (0 would reward absence whenever z-scores run negative.)
        weights = (config.weight, 1.0 - config.weight)
        missing = (min(d.values(), default=0.0), min(lex.values(), default=0.0))
    fused = {doc: weights[0] * d.get(doc, missing[0]) + weights[1] * lex.get(doc, missing[1])
             for doc in dict.fromkeys([*d, *lex])}
    out = []
    for doc in sorted(fused, key=lambda doc: (-fused[doc], doc))[:k]:  # ties: by id, so runs are reproducible
        dh, lh = dense_hits.get(doc), lexical_hits.get(doc)
        text = dh.text if dh is not None and dh.text is not None else (lh.text if lh is not None else None)
        out.append(Hit(doc, float(fused[doc]), text, dh.probability if dh is not None else None))
    return out


def fuse(dense: list[list[Hit]], lexical: list[list[Hit]], config: FusionConfig, k: int) -> list[list[Hit]]:
    """Fuse two arms' rankings query by query; each result holds the top `k` of the union of both arms' top
    `config.depth` hits, best first, ties broken by id.

    A document missing from one arm gets that arm's lowest normalised score in that query's list (convex) or
    contributes 0 from it (RRF). Each returned hit carries the fused score, the text of whichever arm has it, and
    the dense arm's probability when the dense arm returned the document with one (a projection), else None:
    fused scores are not probabilities.
    """
    if len(dense) != len(lexical):
        raise fail("fuse", f"{len(dense)} dense rankings but {len(lexical)} lexical ones",
                   "search the same queries, in the same order, with both arms")
    if isinstance(k, bool) or k < 1:
        raise fail("fuse", f"k={k}", "ask for at least one hit")
    return [_fuse_query(d, lex, config, k) for d, lex in zip(dense, lexical)]


class HybridRetriever:
    """A `Retriever` that fuses a dense retriever with a lexical one.

    `dense` and `lexical` are anything with `search(queries, k)` returning `Hit`s (e.g. `DenseRetriever` or
    `ProjectedRetriever`, and `BM25Retriever`). Each arm is searched to `config.depth`, then `fuse`d.

    `config` None: the rule `qkrag index --hybrid` recorded for this dense arm with its Chroma collection, else RRF
    k=60 (`served_fusion`); `fusion` says which, and where it came from. To choose one the way the CLI does, pass
    `fusion_choice(dense, lexical, folder, split).config`.
    """

    def __init__(self, dense: Retriever, lexical: Retriever, config: FusionConfig | None = None):
        for name, arm in (("dense", dense), ("lexical", lexical)):
            if not callable(getattr(arm, "search", None)):
                raise fail(f"HybridRetriever {name} arm", f"{type(arm).__name__} has no search(queries, k)",
                           "pass a retriever, e.g. DenseRetriever or BM25Retriever")
        if config is not None and not isinstance(config, FusionConfig):
            raise fail("HybridRetriever config", f"is a {type(config).__name__}", "pass a FusionConfig")
        self.fusion = served_fusion(dense, config)
        self.dense, self.lexical, self.config = dense, lexical, self.fusion.config

    def search_arms(self, queries: Sequence[str]) -> tuple[list[list[Hit]], list[list[Hit]]]:
        """Both arms' rankings at `config.depth`: search once, then `fuse` with as many configs as you like."""
        if isinstance(queries, str):
            raise fail("search", "got one string, not a list of queries", "pass [query]")
        queries = list(queries)
        return self.dense.search(queries, self.config.depth), self.lexical.search(queries, self.config.depth)

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top `k` fused hits per query (at most the union of both arms' top `config.depth`)."""
        return fuse(*self.search_arms(queries), self.config, k)

    def __repr__(self) -> str:
        return f"HybridRetriever({self.dense!r}, {self.lexical!r}, {self.config.label()})"


# ---------------------------------------------------------------------------------------------------------- choosing

#: RRF (parameter-free) first, so it wins ties; then convex weights 0.1..0.9 under both normalisations.
DEFAULT_GRID: tuple[FusionConfig, ...] = (
    FusionConfig("rrf", rrf_k=60),
    *(FusionConfig("convex", weight=round(w / 10, 1), normalization=norm)
      for norm in ("zscore", "minmax") for w in range(1, 10)),
)


def choose_fusion(dense_hits: list[list[Hit]], lexical_hits: list[list[Hit]], query_ids: Sequence[str], qrels: Qrels,
                  grid: Sequence[FusionConfig] = DEFAULT_GRID, metric: str = "ndcg@10", *,
                  ignore_identical_ids: bool = True) -> tuple[FusionConfig, dict[str, float]]:
    """The grid point with the best mean `metric` on these queries, and every grid point's score by label.

    Pass VALIDATION queries (e.g. a train split): never call this with test qrels, or the number you then report on
    the test split is tuned on it and overstates what a user gets. The hits are searched once per arm (each to the
    grid's depth, see `HybridRetriever.search_arms`) and fused per grid point; ties go to the earlier grid point.
    `ignore_identical_ids` is passed to `evaluate_run` (see there; `queries_are_documents` decides it).
    """
    grid = list(grid)
    if not grid:
        raise fail("choose_fusion grid", "is empty", "pass at least one FusionConfig, e.g. DEFAULT_GRID")
    labels = [c.label() for c in grid]
    if len(set(labels)) != len(labels):
        raise fail("choose_fusion grid", "names a setting twice", "give each FusionConfig once")
    if not len(dense_hits) == len(lexical_hits) == len(query_ids):
        raise fail("choose_fusion", f"{len(query_ids)} query ids for {len(dense_hits)} dense and {len(lexical_hits)} "
                   "lexical rankings", "pass one ranking per query id from each arm, in the same order")
    judged = {q: qrels[q] for q in query_ids if q in qrels}
    if not judged:
        raise fail("choose_fusion", "none of the query ids are judged in the qrels",
                   "pass the qrels of the validation queries you searched")
    scores: dict[str, float] = {}
    # The CI is not used here: one resample keeps each of the grid's evaluations cheap.
    once = Bootstrap(n_resamples=1)
    for config, label in zip(grid, labels):
        fused = fuse(dense_hits, lexical_hits, config, k=2 * config.depth)
        result = evaluate_run(judged, to_run(query_ids, fused), [metric], ignore_identical_ids=ignore_identical_ids,
                              bootstrap=once)
        scores[label] = result[metric]
    best = max(range(len(grid)), key=lambda i: (scores[labels[i]], -i))  # the earlier grid point wins a tie
    return grid[best], scores


def choose_fusion_on(dense: Retriever, lexical: Retriever, query_ids: Sequence[str], texts: Sequence[str],
                     qrels: Qrels, grid: Sequence[FusionConfig] = DEFAULT_GRID, *,
                     ignore_identical_ids: bool = True) -> tuple[FusionConfig, dict[str, float]]:
    """`choose_fusion` on validation queries given as texts: each arm searched once, to the grid's deepest depth."""
    depth = max(c.depth for c in grid) if grid else FusionConfig().depth
    dense_hits, lexical_hits = HybridRetriever(dense, lexical, FusionConfig(depth=depth)).search_arms(list(texts))
    return choose_fusion(dense_hits, lexical_hits, query_ids, qrels, grid, ignore_identical_ids=ignore_identical_ids)


def fusion_from_options(fusion: str = "auto", weight: float | None = None) -> FusionConfig | None:
    """The CLI's `--fusion rrf|convex|auto` and `--fusion-weight W` as a FusionConfig, or None for "auto".

    A weight alone means convex (z-score) with that weight; convex without a weight uses 0.5.
    """
    if fusion not in ("rrf", "convex", "auto"):
        raise fail(f"--fusion {fusion!r}", "is not a fusion rule", "use rrf, convex or auto")
    if fusion == "rrf" and weight is not None:
        raise fail("--fusion-weight", "RRF has no weight", "drop --fusion-weight, or use --fusion convex")
    if fusion == "rrf":
        return FusionConfig("rrf")
    if fusion == "convex" or weight is not None:
        return FusionConfig("convex", weight=0.5 if weight is None else weight)
    return None


#: Fewer validation queries than this: a choice among the grid is noise, so RRF (parameter-free) is used instead.
MIN_FUSION_QUERIES = 30
#: At most this many validation queries (a seeded sample) are searched to choose a fusion: enough to rank the grid.
MAX_FUSION_QUERIES = 500
#: The share of a pairs folder's documents held out (with their queries) to choose a fusion on.
PAIRS_HOLDOUT = 0.1

Validation = tuple[list[str], list[str], Qrels]  # (query ids, query texts, qrels)


@dataclass(frozen=True)
class FusionChoice:
    """A fusion rule and where it came from: what `qkrag index --hybrid` records with a collection and what search,
    eval, bench and serve report.

    chosen_on: "given", "train split", "held-out synthetic pairs", or "default: <why RRF>".
    queries, score: how many validation queries it was chosen on, and its nDCG@10 on them (None when not chosen).
    source: the content hash of the collection it was chosen for ("" when not recorded with one).
    """

    config: FusionConfig
    chosen_on: str
    queries: int = 0
    score: float | None = None
    source: str = ""

    def origin(self) -> str:
        """Where the rule came from, in words: "train split (60 queries, nDCG@10 0.812)", "given", "default: ..."."""
        if self.score is None:
            return self.chosen_on
        return f"{self.chosen_on} ({self.queries} queries, nDCG@10 {self.score:.3f})"

    def describe(self) -> str:
        """One line: "convex(w=0.7, zscore), chosen on: train split (60 queries, nDCG@10 0.812)"."""
        return f"{self.config.label()}, chosen on: {self.origin()}"

    def to_json(self) -> str:
        from dataclasses import asdict

        return json.dumps({**asdict(self), "config": asdict(self.config)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FusionChoice:
        raw = json.loads(text)
        return cls(**{**raw, "config": FusionConfig(**raw["config"])})


def train_validation(train: Collection, seed: int = 0) -> Validation:
    """The queries of a train split to choose a fusion on: all of them, or a seeded sample of MAX_FUSION_QUERIES."""
    import random

    ids = sorted(train.queries)
    if len(ids) > MAX_FUSION_QUERIES:
        ids = sorted(random.Random(seed).sample(ids, MAX_FUSION_QUERIES))
    return ids, [train.queries[q] for q in ids], {q: train.qrels[q] for q in ids if q in train.qrels}


def pairs_validation(pairs: Any, text_of: Any = str, seed: int = 0) -> Validation:
    """Held-out synthetic pairs as validation queries: the pairs of a seeded PAIRS_HOLDOUT share of the documents
    (split by document, so no held-out positive is a positive elsewhere), one query per distinct query id."""
    held = pairs.split(PAIRS_HOLDOUT, seed, by="document")[1]
    qrels: dict[str, dict[str, int]] = {}
    for qid, row in zip(held.query_ids, held.positives):
        qrels.setdefault(qid, {})[held.doc_ids[int(row)]] = 1
    ids = list(qrels)
    return ids, [text_of(q) for q in ids], qrels


def select_fusion(dense: Retriever, lexical: Retriever, validation: Validation | None, where: str, *,
                  grid: Sequence[FusionConfig] = DEFAULT_GRID, ignore_identical_ids: bool = True) -> FusionChoice:
    """The fusion rule every command uses: `choose_fusion` over `grid` on `validation` (named `where`, e.g. "train
    split"), or RRF k=60 when there is no validation set or it holds fewer than MIN_FUSION_QUERIES queries."""
    if validation is None:
        return FusionChoice(FusionConfig("rrf"), "default: no train split or pairs to choose on, RRF is parameter-free")
    ids, texts, qrels = validation
    if len(ids) < MIN_FUSION_QUERIES:
        return FusionChoice(FusionConfig("rrf"), f"default: {len(ids)} {where} queries are too few to choose on "
                            f"(under {MIN_FUSION_QUERIES}), RRF is parameter-free")
    best, scores = choose_fusion_on(dense, lexical, ids, texts, qrels, grid, ignore_identical_ids=ignore_identical_ids)
    return FusionChoice(best, where, len(ids), round(scores[best.label()], 4))


def fusion_choice(dense: Retriever, lexical: Retriever, folder: str | Path | None = None, split: str = "test",
                  given: FusionConfig | None = None, *, corpus: Corpus | None = None, pairs: Any = None,
                  seed: int = 0) -> FusionChoice:
    """The fusion to rank `split` of a BEIR `folder` (or a collection) with, and where it came from.

    `given` (not None) is used as is. Otherwise `select_fusion` chooses on the folder's `train` split when it has one
    and `split` is not it (only train queries are searched: the evaluated split never tunes its own fusion); else on
    held-out `pairs` (a `Pairs` of generated queries) when given; else RRF k=60.
    """
    if given is not None:
        return FusionChoice(given, "given")
    if folder is not None and "train" in splits(folder) and split != "train":
        train = load_beir(folder, "train", corpus=corpus)
        return select_fusion(dense, lexical, train_validation(train, seed), "train split",
                             ignore_identical_ids=queries_are_documents(train))
    if pairs is not None:
        return select_fusion(dense, lexical, pairs_validation(pairs, seed=seed), "held-out synthetic pairs")
    if folder is not None and split == "train":
        return FusionChoice(FusionConfig("rrf"), "default: the evaluated split is train, RRF is parameter-free")
    return select_fusion(dense, lexical, None, "")


def fusion_for_split(dense: Retriever, lexical: Retriever, folder: str | Path, split: str,
                     given: FusionConfig | None = None, *, corpus: Corpus | None = None
                     ) -> tuple[FusionConfig, str]:
    """`fusion_choice` for `split` of a BEIR `folder`, as (config, a one-line account of where it came from)."""
    choice = fusion_choice(dense, lexical, folder, split, given, corpus=corpus)
    return choice.config, choice.origin()


# ------------------------------------------------------------------------------------------------- the recorded rule


def dense_arm(dense: Any) -> tuple[ChromaIndex | None, str]:
    """The Chroma collection that owns the fusion of `dense` (the raw collection, beside its BM25 index), and the
    arm's name there: "cosine", or "projection:<id>" for a `ProjectedRetriever`. (None, arm) when not over Chroma."""
    projection_id = getattr(dense, "projection_id", None)
    if callable(projection_id):
        raw = getattr(dense, "raw", None)
        return (raw if isinstance(raw, ChromaIndex) else None), f"projection:{projection_id()}"
    index = getattr(dense, "index", None)
    return (index if isinstance(index, ChromaIndex) else None), "cosine"


def record_fusion(dense: Any, choice: FusionChoice) -> FusionChoice:
    """Record `choice` with the collection under `dense` (see `dense_arm`), keyed by the arm and the collection's
    content hash; returns what was recorded."""
    from dataclasses import replace

    index, arm = dense_arm(dense)
    if index is None:
        raise fail("record_fusion", f"{type(dense).__name__} does not search a Chroma collection",
                   "record a fusion for a retriever over a ChromaIndex (qkrag index)")
    recorded = replace(choice, source=index.source_hash)
    index.set_fusion(arm, recorded.to_json())
    return recorded


def recorded_fusion(index: ChromaIndex | None, arm: str) -> FusionChoice | None:
    """The fusion `qkrag index --hybrid` recorded with `index` for dense arm `arm` (see `dense_arm`), or None when
    there is none, or it was chosen for other contents (the collection changed since)."""
    text = index.fusion(arm) if index is not None else None
    if not text:
        return None
    choice = FusionChoice.from_json(text)
    return choice if choice.source == index.source_hash else None


def served_fusion(dense: Any, given: FusionConfig | None = None, *, index: ChromaIndex | None = None
                  ) -> FusionChoice:
    """What a search fuses `dense` with: `given`, else the rule recorded with its collection (`index`, default the
    one under `dense`), else RRF k=60."""
    if given is not None:
        return FusionChoice(given, "given")
    owner, arm = dense_arm(dense)
    recorded = recorded_fusion(index or owner, arm)
    if recorded is not None:
        return recorded
    why = "none recorded with the collection (`qkrag index --hybrid` records one)" if index or owner else \
        "not a recorded collection"
    return FusionChoice(FusionConfig("rrf"), f"default: {why}, RRF is parameter-free")


# ------------------------------------------------------------------------------------------------------ BM25 on disk


def bm25_folder(config: IndexConfig) -> Path:
    """Where the BM25 index of a Chroma collection lives: `<chroma path>/bm25/<collection>` for an embedded Chroma,
    `.qkrag/bm25/<host>-<port>-<collection>` (under the working directory) for a Chroma server."""
    if config.host:
        return Path(".qkrag") / "bm25" / f"{config.host}-{config.port}-{config.collection}"
    return Path(config.path) / "bm25" / config.collection


def open_bm25(corpus: Corpus, folder: str | Path) -> BM25Retriever:
    """The BM25 index of `corpus` saved in `folder`: loaded when it was built on exactly these documents, else
    (missing, or built on other documents) built with the default settings and saved there."""
    if (Path(folder) / BM25Retriever.MANIFEST).exists():
        try:
            return BM25Retriever.load(folder, corpus)
        except IndexMismatchError:
            pass  # built on other documents: rebuild below
    retriever = BM25Retriever(corpus)
    retriever.save(folder)
    return retriever


def collection_corpus(index: ChromaIndex) -> Corpus:
    """The documents a Chroma collection holds (stored ids and texts), ordered by id so the same documents always
    give the same corpus, whatever order Chroma returns them in."""
    ids = sorted(index.all_ids())
    texts = index.stored_texts(ids)
    missing = [i for i in ids if not texts.get(i)]
    if missing:
        raise fail(f"collection {index.name!r}", f"{len(missing)} document(s) have no stored text, e.g. {missing[:3]}",
                   "rebuild it with `qkrag index` (it stores every document's text)")
    return Corpus(tuple(Document(i, texts[i]) for i in ids), f"collection {index.name}")


def collection_bm25(index: ChromaIndex, build: bool = False) -> BM25Retriever:
    """The BM25 index persisted for a Chroma collection, keyed by the collection's content hash.

    build=True (what `qkrag index --hybrid` does) builds it when it is missing or was built on other contents,
    streaming the stored texts page by page (`build_bm25`: memory bounded by the vocabulary and one chunk);
    build=False only loads it, and fails with a clear message when there is none or it is stale. The score matrix
    is memory-mapped and hits fetch their texts from the collection, so serving does not hold the corpus either.
    """
    folder = bm25_folder(index.config)
    index.require_complete()  # a BM25 index of half a collection is half an answer
    key, saved = index.source_hash, saved_source(folder)
    exists = (folder / BM25Retriever.MANIFEST).exists()
    if saved != key and not build:
        if exists and saved is None:  # saved before the source key was recorded: check it against the texts
            return BM25Retriever.load(folder, collection_corpus(index))
        raise fail(f"collection {index.name!r}", (f"has a BM25 index of other documents than it holds now (in {folder})" if exists
                    else f"has no BM25 index (looked in {folder})"),
                   "build it with `qkrag index DATA --hybrid` (same --collection/--path/--host)")
    if build:
        remove_stale(folder)  # what a killed earlier build left beside it, even when the index itself is current
    if saved != key:
        build_bm25(_stored_documents(index), folder, source=key)
    return BM25Retriever.load(folder, mmap=True, texts=index.stored_texts)


def _stored_documents(index: ChromaIndex):
    for doc_id, text in index.iter_texts():
        if not text:
            raise fail(f"collection {index.name!r}", f"document {doc_id!r} has no stored text",
                       "rebuild it with `qkrag index` (it stores every document's text)")
        yield doc_id, text


__all__ = ["DEFAULT_GRID", "MIN_FUSION_QUERIES", "FusionChoice", "FusionConfig", "HybridRetriever", "bm25_folder",
           "choose_fusion", "choose_fusion_on", "collection_bm25", "collection_corpus", "dense_arm", "fuse",
           "fusion_choice", "fusion_for_split", "fusion_from_options", "open_bm25", "pairs_validation",
           "record_fusion", "recorded_fusion", "select_fusion", "served_fusion", "train_validation"]
