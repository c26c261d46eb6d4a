"""Training data for a projection: `Pairs`, (query vector, positive document row) pairs over one document matrix,
built from judged queries (`pairs_from_collection`) or from a generated pairs folder (`pairs_from_dataset`)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from qkrag.errors import IndexMismatchError, fail

if TYPE_CHECKING:
    from qkrag.data import Collection, Corpus
    from qkrag.embed.encoders import EmbedOptions, Encoder


def check_vectors(name: str, x: object, dim: int | None = None) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise fail(name, f"expected a 2-D array (rows, dimension), got shape {a.shape}", "pass one vector per row")
    if dim is not None and a.shape[1] != dim:
        raise fail(name, f"vectors have dimension {a.shape[1]}, expected {dim}",
                   "embed with the encoder the projection was trained on", IndexMismatchError)
    if not np.all(np.isfinite(a)):
        raise fail(name, "contains NaN or infinite values", "check the embeddings")
    return a


@dataclass(frozen=True, eq=False)
class Pairs:
    """Training data for a projection: (query vector, positive document row) pairs over one document matrix.

    `query_ids` groups pairs of the same query (a query with three relevant documents gives three pairs): the
    validation split keeps a query's pairs together, and in-batch negatives never count another positive of the same
    query as a negative. `negatives` are optional hard-negative rows per pair (-1 pads ragged rows).
    """

    queries: np.ndarray  # (n_pairs, d) float32
    positives: np.ndarray  # (n_pairs,) int64: rows of `documents`
    documents: np.ndarray  # (n_docs, d) float32
    negatives: np.ndarray | None = None  # (n_pairs, h) int64, -1 = none
    query_ids: tuple[str, ...] | None = None  # default: every pair is its own query
    doc_ids: tuple[str, ...] | None = None
    encoder: str = ""  # fingerprint of the encoder that made the vectors
    source: str = "<memory>"
    # A teacher's view of each pair's query (listwise distillation): candidate document rows (-1 pads) and the
    # teacher's score for each; training can match the teacher's distribution over them instead of trusting binary
    # labels, since a mined "negative" is often relevant in fact.
    teacher_rows: np.ndarray | None = None  # (n_pairs, c) int64
    teacher_scores: np.ndarray | None = None  # (n_pairs, c) float32
    # What the pairs are: "judged queries" (a collection's qrels), "synthetic pairs" (generated from the corpus), or
    # "" (not said). A probability fitted on them is calibrated against that, and `qkrag train` holds validation out
    # by document for judged queries.
    origin: str = ""
    _groups: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        documents = check_vectors(f"{self.source} (documents)", self.documents)
        if documents.shape[0] == 0:
            raise fail(self.source, "has no documents", "give the document vectors the pairs point into")
        queries = np.asarray(self.queries, dtype=np.float32)
        if queries.size == 0:
            raise fail(self.source, "contains no pairs", "give at least a few (query, positive document) pairs; "
                       "generate them with `qkrag generate` or use a collection's train split")
        queries = check_vectors(f"{self.source} (query vectors)", queries, documents.shape[1])
        n = queries.shape[0]
        positives = np.asarray(self.positives)
        if positives.shape != (n,) or not np.issubdtype(positives.dtype, np.integer):
            raise fail(f"{self.source} (positives)", f"expected {n} integer document rows, got shape {positives.shape} "
                       f"of {positives.dtype}", "give one positive document row per query vector")
        bad = np.flatnonzero((positives < 0) | (positives >= documents.shape[0]))
        if bad.size:
            raise fail(f"{self.source} pair #{bad[0]}", f"positive row {positives[bad[0]]} is outside the "
                       f"{documents.shape[0]} documents", "point every positive at a row of the document matrix")
        negatives = self.negatives
        if negatives is not None:
            negatives = np.asarray(negatives, dtype=np.int64)
            if negatives.ndim != 2 or negatives.shape[0] != n:
                raise fail(f"{self.source} (negatives)", f"expected shape ({n}, h), got {negatives.shape}",
                           "give one row of hard-negative document rows per pair (pad with -1)")
            bad = np.argwhere((negatives < -1) | (negatives >= documents.shape[0]))
            if bad.size:
                raise fail(f"{self.source} pair #{bad[0][0]}", f"negative row {negatives[tuple(bad[0])]} is outside "
                           f"the {documents.shape[0]} documents", "point negatives at rows of the document matrix")
        query_ids = tuple(str(i) for i in range(n)) if self.query_ids is None else tuple(map(str, self.query_ids))
        if len(query_ids) != n:
            raise fail(f"{self.source} (query_ids)", f"{len(query_ids)} ids for {n} pairs", "give one id per pair")
        if self.doc_ids is not None and len(self.doc_ids) != documents.shape[0]:
            raise fail(f"{self.source} (doc_ids)", f"{len(self.doc_ids)} ids for {documents.shape[0]} documents",
                       "give one id per document row")
        teacher_rows, teacher_scores = self._check_teacher(n, documents.shape[0])
        _, groups = np.unique(np.asarray(query_ids, dtype=object).astype(str), return_inverse=True)
        set_("teacher_rows", teacher_rows)
        set_("teacher_scores", teacher_scores)
        set_("queries", queries)
        set_("positives", positives.astype(np.int64))
        set_("documents", documents)
        set_("negatives", negatives)
        set_("query_ids", query_ids)
        set_("_groups", groups.astype(np.int64))

    def _check_teacher(self, n: int, n_docs: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if (self.teacher_rows is None) != (self.teacher_scores is None):
            raise fail(f"{self.source} (teacher)", "has teacher rows without scores or scores without rows",
                       "give both teacher_rows and teacher_scores, or neither")
        if self.teacher_rows is None:
            return None, None
        rows = np.asarray(self.teacher_rows, dtype=np.int64)
        scores = np.asarray(self.teacher_scores, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[0] != n or scores.shape != rows.shape:
            raise fail(f"{self.source} (teacher)", f"rows {rows.shape} and scores {scores.shape} for {n} pairs",
                       "give one row of candidate documents and one of scores per pair, same shape")
        if ((rows < -1) | (rows >= n_docs)).any():
            raise fail(f"{self.source} (teacher)", "names rows outside the document matrix",
                       "point teacher candidates at rows of the document matrix (-1 pads)")
        if not np.isfinite(scores[rows >= 0]).all():
            raise fail(f"{self.source} (teacher)", "has NaN or infinite scores", "check the teacher's scores")
        return rows, scores

    def __len__(self) -> int:
        return self.queries.shape[0]

    @property
    def dimension(self) -> int:
        return self.documents.shape[1]

    @property
    def groups(self) -> np.ndarray:
        """Per pair, a dense query-group index (pairs of the same query share it)."""
        return self._groups

    @property
    def n_queries(self) -> int:
        return int(self._groups.max()) + 1

    def subset(self, rows: Sequence[int] | np.ndarray, source: str | None = None) -> Pairs:
        rows = np.asarray(rows, dtype=np.int64)
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return Pairs(self.queries[rows], self.positives[rows], self.documents, pick(self.negatives),
                     tuple(self.query_ids[i] for i in rows), self.doc_ids, self.encoder, source or self.source,
                     pick(self.teacher_rows), pick(self.teacher_scores), self.origin)

    def with_teacher(self, rows: np.ndarray, scores: np.ndarray) -> Pairs:
        """A copy whose pairs carry a teacher's candidate rows and scores (see `teacher_rows`)."""
        return Pairs(self.queries, self.positives, self.documents, self.negatives, self.query_ids, self.doc_ids,
                     self.encoder, self.source, rows, scores, self.origin)

    def positive_ids(self) -> list[str]:
        """Ids of the documents that are positives here, sorted: what a leakage audit calls "seen"."""
        if self.doc_ids is None:
            return []
        return sorted({self.doc_ids[int(p)] for p in np.unique(self.positives)})

    def split(self, fraction: float, seed: int = 0, by: str = "query") -> tuple[Pairs, Pairs]:
        """(train, validation), seeded and deterministic. by="query": no query on both sides. by="document": hold
        out a share of the positive documents, and every query with a positive among them goes to validation, so
        validation documents were never positives in training (a gain there is not a prior over documents)."""
        if not 0 < fraction < 1:
            raise fail("validation fraction", f"{fraction!r} is not between 0 and 1", "use e.g. 0.1")
        if by not in ("query", "document"):
            raise fail("validation split", f"by={by!r}", 'use "query" or "document"')
        rng = np.random.default_rng(seed)
        if by == "query":
            n_val = int(round(self.n_queries * fraction))
            held = rng.permutation(self.n_queries)[:n_val]
        else:
            docs = np.unique(self.positives)
            held_docs = rng.permutation(docs)[: int(round(len(docs) * fraction))]
            held = np.unique(self._groups[np.isin(self.positives, held_docs)])
        if len(held) < 1 or len(held) >= self.n_queries:
            raise fail(self.source, f"{self.n_queries} queries are too few to hold out {fraction:.0%} for validation",
                       "give more pairs, or pass an explicit validation set")
        is_val = np.isin(self._groups, held)
        return (self.subset(np.flatnonzero(~is_val), f"{self.source} (train)"),
                self.subset(np.flatnonzero(is_val), f"{self.source} (validation)"))

    def unique_queries(self) -> tuple[np.ndarray, list[set[int]]]:
        """One vector per query and the set of its positive document rows: what ranking evaluation needs."""
        first = np.unique(self._groups, return_index=True)[1]
        relevant: list[set[int]] = [set() for _ in first]
        rank = {g: i for i, g in enumerate(self._groups[first])}
        for g, p in zip(self._groups, self.positives):
            relevant[rank[g]].add(int(p))
        return self.queries[first], relevant

    def content_hash(self) -> str:
        """SHA-256 over every array and id: identifies the training data in a saved projection's config."""
        h = hashlib.sha256()
        for a in (self.queries, self.positives, self.documents, self.negatives, self.teacher_rows,
                  self.teacher_scores):
            if a is not None:
                h.update(str(a.shape).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps([self.query_ids, self.doc_ids, self.encoder]).encode())
        return h.hexdigest()


def _embed_documents(corpus: Corpus, encoder: Encoder, options: EmbedOptions | None,
                     documents: np.ndarray | None) -> np.ndarray:
    from qkrag.embed.encoders import embed

    if documents is None:
        return embed(encoder, corpus.contents, "document", options, desc="embed documents")
    documents = check_vectors("documents", documents)
    if documents.shape[0] != len(corpus):
        raise fail("documents", f"{documents.shape[0]} vectors for a corpus of {len(corpus)} documents",
                   "pass the document vectors in corpus order (one per document)")
    return documents


def pairs_from_collection(collection: Collection, encoder: Encoder, options: EmbedOptions | None = None, *,
                          documents: np.ndarray | None = None) -> Pairs:
    """Training pairs from judged queries (e.g. `load_beir(folder, split="train")`): one pair per (query, document
    judged relevant > 0). Embeds through `qkrag.embed.encoders.embed` (cached); pass `documents` (corpus order) to reuse
    vectors you already have, e.g. from an index."""
    from qkrag.embed.encoders import embed

    corpus = collection.corpus
    qids, rows = [], []
    for qid, judged in collection.qrels.items():
        for doc_id, rel in judged.items():
            if rel <= 0:
                continue
            if doc_id not in corpus:
                raise fail(f"{collection.name or 'collection'} qrels", f"query {qid!r} names unknown document "
                           f"{doc_id!r}", "use the corpus that belongs to these judgments")
            if qid not in collection.queries:
                raise fail(f"{collection.name or 'collection'} qrels", f"judged query {qid!r} has no text",
                           "use the queries file that belongs to these judgments")
            qids.append(qid)
            rows.append(corpus.position(doc_id))
    if not qids:
        raise fail(f"{collection.name or 'collection'} ({collection.split or 'split'})", "has no positive judgments",
                   "use a split with relevance > 0 judgments, e.g. qrels/train.tsv")
    docs = _embed_documents(corpus, encoder, options, documents)
    unique = sorted(set(qids), key=qids.index)
    vectors = embed(encoder, [collection.queries[q] for q in unique], "query", options, desc="embed queries")
    where = {q: i for i, q in enumerate(unique)}
    return Pairs(vectors[[where[q] for q in qids]], np.asarray(rows, dtype=np.int64), docs, None, tuple(qids),
                 tuple(corpus.ids), encoder.fingerprint, f"{collection.name or 'collection'}:{collection.split}",
                 origin="judged queries")


def pairs_from_dataset(dataset: Any, corpus: Corpus, encoder: Encoder, options: EmbedOptions | None = None, *,
                       documents: np.ndarray | None = None, source: str = "pairs dataset",
                       origin: str = "synthetic pairs") -> Pairs:
    """Training pairs from a generated dataset (Hugging Face `datasets.Dataset`, or any sequence of dicts) with
    columns `query`, `positive_id` and optional `negative_ids` (a list of document ids per row). Rows with the same
    query text count as one query. `origin` says what they are (pass "judged queries" for human judgments)."""
    from qkrag.embed.encoders import embed

    columns = getattr(dataset, "column_names", None) or (list(dataset[0]) if len(dataset) else [])
    for needed in ("query", "positive_id"):
        if columns and needed not in columns:
            raise fail(source, f"has no {needed!r} column (columns: {', '.join(columns)})",
                       "give a dataset with columns query, positive_id and optional negative_ids")
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    if not rows:
        raise fail(source, "contains no pairs", "generate pairs first, or point at a non-empty dataset")
    queries, positives, negatives = [], [], []
    for i, row in enumerate(rows):
        query, pos = row.get("query"), row.get("positive_id")
        if not isinstance(query, str) or not query.strip():
            raise fail(f"{source} row {i}", "has an empty query", "drop the row or give it a query")
        if str(pos) not in corpus:
            raise fail(f"{source} row {i}", f"positive_id {pos!r} is not in the corpus ({corpus.source})",
                       "use the corpus the pairs were generated from")
        negs = row.get("negative_ids") or []
        for neg in negs:
            if str(neg) not in corpus:
                raise fail(f"{source} row {i}", f"negative id {neg!r} is not in the corpus ({corpus.source})",
                           "use the corpus the pairs were generated from")
        queries.append(query)
        positives.append(corpus.position(str(pos)))
        negatives.append([corpus.position(str(n)) for n in negs if str(n) != str(pos)])
    docs = _embed_documents(corpus, encoder, options, documents)
    vectors = embed(encoder, queries, "query", options, desc="embed queries")
    width = max(map(len, negatives))
    neg = None
    if width:
        neg = np.full((len(rows), width), -1, dtype=np.int64)
        for i, row_negs in enumerate(negatives):
            neg[i, : len(row_negs)] = row_negs
    return Pairs(vectors, np.asarray(positives, dtype=np.int64), docs, neg, tuple(queries), tuple(corpus.ids),
                 encoder.fingerprint, source, origin=origin)




def pairs_from_folder(folder: str | os.PathLike[str], encoder: Encoder, options: EmbedOptions | None = None, *,
                      corpus: Corpus | str | os.PathLike[str] | None = None,
                      documents: np.ndarray | None = None) -> tuple[Pairs, Corpus]:
    """Training pairs from a pairs folder (`qkrag generate --out`), with the corpus their ids point into: `corpus`
    when given, else the one the folder records. Refuses another encoder than the generation's."""
    from qkrag.data import Corpus, load_corpus
    from qkrag.pairs.store import check_encoder, load_pairs, recorded_corpus

    check_encoder(folder, encoder.fingerprint)
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(recorded_corpus(folder, corpus))
    return pairs_from_dataset(load_pairs(folder), corpus, encoder, options, documents=documents,
                              source=str(folder)), corpus


def load_training_pairs(source: str | os.PathLike[str], encoder: Encoder, *, split: str = "train",
                        corpus: Corpus | str | os.PathLike[str] | None = None, documents: np.ndarray | None = None
                        ) -> tuple[Pairs, Corpus, Callable[[str], str]]:
    """What `qkrag train SOURCE` trains on: the pairs of a pairs folder, or the judged `split` of a BEIR folder; with
    the corpus and how to get a pair's query text from its query id (a teacher needs the text)."""
    from qkrag.data import Corpus, load_beir, require_folder
    from qkrag.pairs.store import is_pairs_folder

    require_folder(source, "pass a pairs folder (qkrag generate --out) or a BEIR folder")
    if is_pairs_folder(source):
        pairs, corpus = pairs_from_folder(source, encoder, corpus=corpus, documents=documents)
        return pairs, corpus, str  # generated pairs are keyed by their query text
    collection = load_beir(source, split, corpus=corpus if isinstance(corpus, Corpus) else None)
    return pairs_from_collection(collection, encoder, documents=documents), collection.corpus, \
        collection.queries.__getitem__
