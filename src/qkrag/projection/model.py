"""Stage 3, the projection: a small learned map that turns frozen embeddings into a calibrated relevance score.

    q = Q·v(query),   k = K·v(document),   P(relevant) = σ(s·q·k + b)

The encoder stays frozen, so a projection trains in seconds on CPU, and re-indexing is one matrix product over the
document vectors already stored (K·V), never a re-embedding. Three estimators, scikit-learn style (hyperparameters in
`__init__`, `fit` returns self, learned attributes end in `_`):

- `QKProjection`: separate Q and K (relevance is asymmetric: a claim is not its evidence), r ≤ d rows each;
- `SymmetricProjection`: one shared map M, σ(s·(M·a)·(M·b) + b), for item-to-item similarity;
- `QueryAdapter`: K = I, only queries move (LlamaIndex's linear adapter); the baseline, and documents stay as stored.

Each starts from the raw dot product (identity, or a PCA truncation when r < d), so training can only move away from
raw cosine when the validation split says that helps. Inputs are embeddings (float32 numpy); training data is a
`Pairs`: query vectors, the positive document's row, optional hard negatives, and the document matrix. The training
loop and the losses live in `qkrag.projection.train`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from qkrag.errors import IndexMismatchError, fail

if TYPE_CHECKING:
    from qkrag.data import Collection, Corpus
    from qkrag.embed.encoders import EmbedOptions, Encoder
    from qkrag.projection.train import TrainConfig

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


# ---------------------------------------------------------------------------------------------------- training data


def _vectors(name: str, x: object, dim: int | None = None) -> np.ndarray:
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
    _groups: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        documents = _vectors(f"{self.source} (documents)", self.documents)
        if documents.shape[0] == 0:
            raise fail(self.source, "has no documents", "give the document vectors the pairs point into")
        queries = np.asarray(self.queries, dtype=np.float32)
        if queries.size == 0:
            raise fail(self.source, "contains no pairs", "give at least a few (query, positive document) pairs; "
                       "generate them with `qkrag pairs` or use a collection's train split")
        queries = _vectors(f"{self.source} (query vectors)", queries, documents.shape[1])
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
                     pick(self.teacher_rows), pick(self.teacher_scores))

    def with_teacher(self, rows: np.ndarray, scores: np.ndarray) -> Pairs:
        """A copy whose pairs carry a teacher's candidate rows and scores (see `teacher_rows`)."""
        return Pairs(self.queries, self.positives, self.documents, self.negatives, self.query_ids, self.doc_ids,
                     self.encoder, self.source, rows, scores)

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
    documents = _vectors("documents", documents)
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
                 tuple(corpus.ids), encoder.fingerprint, f"{collection.name or 'collection'}:{collection.split}")


def pairs_from_dataset(dataset: Any, corpus: Corpus, encoder: Encoder, options: EmbedOptions | None = None, *,
                       documents: np.ndarray | None = None, source: str = "pairs dataset") -> Pairs:
    """Training pairs from a generated dataset (Hugging Face `datasets.Dataset`, or any sequence of dicts) with
    columns `query`, `positive_id` and optional `negative_ids` (a list of document ids per row). Rows with the same
    query text count as one query."""
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
                 encoder.fingerprint, source)


# -------------------------------------------------------------------------------------------------------- estimators


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qkrag")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # stable for large |x|, full relative precision for tiny probabilities

    return expit(np.asarray(x, dtype=np.float64)).astype(np.float32)


class _Projection:
    """What every variant shares: validation, scoring, persistence. Subclasses set `variant` and how K is tied."""

    variant: ClassVar[str]
    tied: ClassVar[bool] = False  # K is Q (symmetric)
    query_only: ClassVar[bool] = False  # K = I (query adapter)

    def __init__(self, rank: int | None = None, config: TrainConfig | None = None):
        self.rank = rank
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank!r}, config={self.config!r})"

    @classmethod
    def identity(cls, dimension: int, encoder: str = "", scale: float = 1.0, bias: float = 0.0) -> _Projection:
        """The untrained starting point: Q = K = I, so the logit is s·(raw dot product) + b. A baseline that goes
        everywhere a trained projection goes (index, export), and what model selection falls back to."""
        model = cls()
        eye = np.eye(dimension, dtype=np.float32)
        model._set_weights(eye, eye, scale, bias)
        model.encoder_fingerprint_ = encoder
        model.selected_ = "identity"
        model.history_, model.validation_, model.training_hash_ = [], {}, ""
        return model

    # ---- fitting

    def fit(self, pairs: Pairs, validation: Pairs | None = None) -> _Projection:
        """Train on `pairs`; validate (early stopping, model selection, calibration) on `validation`, or on a
        seeded split of `pairs` by query. Returns self."""
        from qkrag.projection.train import TrainConfig, fit_projection

        if not isinstance(pairs, Pairs):
            raise fail("fit", f"expected qkrag.projection.model.Pairs, got {type(pairs).__name__}",
                       "build training data with pairs_from_collection or pairs_from_dataset")
        if self.rank is not None and not 1 <= self.rank <= pairs.dimension:
            raise fail(f"{type(self).__name__}(rank={self.rank!r})", f"rank must be between 1 and the embedding "
                       f"dimension {pairs.dimension}", "use rank=None for full rank, or a smaller rank")
        if self.query_only and self.rank not in (None, pairs.dimension):
            raise fail(f"QueryAdapter(rank={self.rank!r})", "a query adapter keeps documents as they are (K = I), "
                       "so its output dimension is the embedding dimension", "use rank=None, or QKProjection for r < d")
        fit_projection(self, pairs, validation, self.config or TrainConfig())
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "Q_"):
            raise fail(type(self).__name__, "is not fitted yet", "call fit(pairs) or load(dir) first")

    @property
    def dimension_(self) -> int:
        """The input (embedding) dimension d."""
        return int(self.Q_.shape[1])

    @property
    def rank_(self) -> int:
        """The output dimension r of q and k."""
        return int(self.Q_.shape[0])

    @property
    def K_(self) -> np.ndarray:
        if self.tied:
            return self.Q_
        if self.query_only:
            return np.eye(self.dimension_, dtype=np.float32)
        return self._K

    def _set_weights(self, Q: np.ndarray, K: np.ndarray | None, scale: float, bias: float) -> None:
        self.Q_ = np.ascontiguousarray(Q, dtype=np.float32)
        if not (self.tied or self.query_only):
            self._K = np.ascontiguousarray(K, dtype=np.float32)
        # float32 like the weights: what is saved is exactly what is used, so a save/load round trip is exact
        self.scale_ = float(np.float32(scale))
        self.bias_ = float(np.float32(bias))

    # ---- scoring

    def transform_queries(self, vectors: np.ndarray) -> np.ndarray:
        """q = Q·v for each row: (n, d) -> (n, r)."""
        self._check_fitted()
        return _vectors("query vectors", vectors, self.dimension_) @ self.Q_.T

    def transform_documents(self, vectors: np.ndarray) -> np.ndarray:
        """k = K·v for each row: (n, d) -> (n, r). What a projected index stores."""
        self._check_fitted()
        v = _vectors("document vectors", vectors, self.dimension_)
        return v.copy() if self.query_only else v @ self.K_.T

    def score(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        """Logits s·q·k + b for aligned rows (pair i = query i with document i)."""
        q, k = self.transform_queries(query_vectors), self.transform_documents(document_vectors)
        if q.shape[0] != k.shape[0]:
            raise fail("score", f"{q.shape[0]} queries and {k.shape[0]} documents are not aligned pairs",
                       "pass as many query rows as document rows, or use score_matrix")
        return self.scale_ * np.einsum("ij,ij->i", q, k) + self.bias_

    def predict_proba(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        """P(relevant) = σ(s·q·k + b) for aligned rows."""
        return _sigmoid(self.score(query_vectors, document_vectors))

    def score_matrix(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        """Logits for every (query, document): (n_queries, n_documents). Rank by a row of it."""
        q, k = self.transform_queries(query_vectors), self.transform_documents(document_vectors)
        return self.scale_ * (q @ k.T) + self.bias_

    def predict_proba_matrix(self, query_vectors: np.ndarray, document_vectors: np.ndarray) -> np.ndarray:
        return _sigmoid(self.score_matrix(query_vectors, document_vectors))

    def probability(self, dot: np.ndarray | float) -> np.ndarray:
        """σ(s·(q·k) + b) from raw projected dot products, e.g. scores returned by an `ip` index over K·v."""
        return _sigmoid(self.scale_ * np.asarray(dot, dtype=np.float32) + self.bias_)

    # ---- encoder identity

    def check_encoder(self, fingerprint: str, dimension: int, where: str = "projection") -> None:
        """Refuse vectors from another encoder: a projection learned on one embedding space means nothing in another."""
        self._check_fitted()
        mine = getattr(self, "encoder_fingerprint_", "")
        if dimension != self.dimension_ or (mine and fingerprint and fingerprint != mine):
            raise fail(where, f"was trained on {mine or 'an unnamed encoder'} (dimension {self.dimension_}), but the "
                       f"vectors come from {fingerprint or 'an unnamed encoder'} (dimension {dimension})",
                       "use the encoder the projection was trained with, or train a projection for this encoder",
                       IndexMismatchError)

    # ---- persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `model.safetensors` and `config.json` into `directory` (atomically, file by file)."""
        from safetensors.numpy import save as st_save

        from qkrag._atomic import atomic_open, write_json

        self._check_fitted()
        directory = Path(directory)
        tensors = {"Q": self.Q_, "scale": np.float32([self.scale_]), "bias": np.float32([self.bias_])}
        if not (self.tied or self.query_only):
            tensors["K"] = self._K
        with atomic_open(directory / WEIGHTS_FILE, "wb") as handle:
            handle.write(st_save(tensors, metadata={"format": "qkrag-projection", "variant": self.variant}))
        config = {
            "qkrag_version": _version(),
            "format_version": FORMAT_VERSION,
            "variant": self.variant,
            "encoder": getattr(self, "encoder_fingerprint_", ""),
            "dimension": self.dimension_,
            "rank": self.rank_,
            "requested_rank": self.rank,
            "scale": self.scale_,
            "bias": self.bias_,
            "training_data_hash": getattr(self, "training_hash_", ""),
            "training_positive_ids": getattr(self, "training_positive_ids_", None),
            "selected": getattr(self, "selected_", ""),
            "validation": getattr(self, "validation_", {}),
            "train_config": asdict(self.config) if self.config is not None else None,
            "history": getattr(self, "history_", []),
        }
        write_json(directory / CONFIG_FILE, config)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], encoder: Encoder | None = None) -> _Projection:
        """Load a saved projection. `QKProjection.load` loads any variant (it reads the variant from config.json);
        `SymmetricProjection.load` refuses a saved QK projection. With `encoder`, refuse one that does not match."""
        from safetensors.numpy import load as st_load

        from qkrag.projection.train import TrainConfig

        directory = Path(directory)
        if not (directory / CONFIG_FILE).exists() or not (directory / WEIGHTS_FILE).exists():
            raise fail(str(directory), f"is not a saved projection (needs {CONFIG_FILE} and {WEIGHTS_FILE})",
                       "give the folder that projection.save() or `qkrag train` wrote")
        try:
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:  # invalid JSON, not UTF-8, unreadable
            raise fail(str(directory / CONFIG_FILE), f"is not a readable projection config ({err})",
                       "the folder is corrupt: train or save the projection again") from None
        if config.get("format_version") != FORMAT_VERSION:
            raise fail(str(directory), f"has projection format {config.get('format_version')!r}; this qkrag reads "
                       f"format {FORMAT_VERSION}", "retrain the projection with this qkrag version")
        klass = VARIANTS.get(config.get("variant"))
        if klass is None or not (klass is cls or issubclass(klass, cls) or cls is QKProjection):
            raise fail(str(directory), f"holds a {config.get('variant')!r} projection, not {cls.variant!r}",
                       f"load it with {klass.__name__ if klass else 'a matching class'}.load, or QKProjection.load")
        try:
            tensors = st_load((directory / WEIGHTS_FILE).read_bytes())
        except Exception as err:  # safetensors raises its own SafetensorError on a truncated or foreign file
            raise fail(str(directory / WEIGHTS_FILE), f"is not a readable safetensors file ({err})",
                       "the folder is corrupt (a copy cut short?): train or save the projection again") from None
        if "Q" not in tensors or "scale" not in tensors or "bias" not in tensors:
            raise fail(str(directory / WEIGHTS_FILE), f"holds {sorted(tensors)}, not a qkrag projection's Q, scale and "
                       "bias", "point --projection at a folder `qkrag train` wrote")
        train_config = config.get("train_config")
        model = klass(config.get("requested_rank"), TrainConfig(**train_config) if train_config else None)
        model._set_weights(tensors["Q"], tensors.get("K"), float(tensors["scale"][0]), float(tensors["bias"][0]))
        model.encoder_fingerprint_ = config.get("encoder", "")
        model.training_hash_ = config.get("training_data_hash", "")
        model.training_positive_ids_ = config.get("training_positive_ids")
        model.selected_ = config.get("selected", "")
        model.validation_ = config.get("validation", {})
        model.history_ = config.get("history", [])
        if model.dimension_ != config.get("dimension"):
            raise fail(str(directory), f"config says dimension {config.get('dimension')}, weights have "
                       f"{model.dimension_}", "the folder is corrupt or mixed; save the projection again")
        if encoder is not None:
            model.check_encoder(encoder.fingerprint, encoder.dimension, str(directory))
        return model


class QKProjection(_Projection):
    """Asymmetric: q = Q·v(query), k = K·v(document), each r × d (r = `rank`, default d). Identity (or PCA) init."""

    variant = "qk"


class SymmetricProjection(_Projection):
    """One map for both sides, u = M·v, P = σ(s·u_a·u_b + b): for item-to-item similarity, where order does not
    matter. `M_` is the map (also exposed as Q_ and K_)."""

    variant = "symmetric"
    tied = True

    @property
    def M_(self) -> np.ndarray:
        return self.Q_


class QueryAdapter(_Projection):
    """K = I: only the query moves (LlamaIndex's linear adapter). Documents stay as stored, so an existing raw index
    serves it with no re-indexing. The baseline the asymmetric projection has to beat."""

    variant = "query_adapter"
    query_only = True


VARIANTS: dict[str, type[_Projection]] = {c.variant: c for c in (QKProjection, SymmetricProjection, QueryAdapter)}


# ----------------------------------------------------------------------------------------------------------- serving


class ProjectedRetriever:
    """Search with a projection: a `Retriever` whose hits carry `probability` = σ(s·q·k + b) and score = the logit.

    mode="full": documents live projected (k = K·v) in an inner-product index: for a `ChromaIndex`, a sibling
    collection in `ip` space filled from the vectors already stored in the raw collection (never re-embedded, built
    once and reused while the projection is the same); for an `ExactIndex` or `(ids, vectors)`, in memory. Queries go
    through Q. mode="rerank": the raw index's top `depth` by cosine, rescored by the projection (no second index; a
    trained projection then only reorders what raw search found).
    """

    def __init__(self, encoder: Encoder, projection: _Projection, index: Any, mode: str = "full", *,
                 depth: int = 100, options: EmbedOptions | None = None):
        from qkrag.retrieval.index import ChromaIndex, ExactIndex

        if mode not in ("full", "rerank"):
            raise fail("mode", f"{mode!r} is not a serving mode", "use 'full' or 'rerank'")
        projection.check_encoder(encoder.fingerprint, encoder.dimension, "projection")
        if isinstance(index, tuple):
            ids, vectors = index
            index = ExactIndex(list(ids), _vectors("index vectors", vectors), "cosine", fingerprint=encoder.fingerprint)
        fingerprint = getattr(index, "fingerprint", None)
        if fingerprint and fingerprint != encoder.fingerprint:
            raise fail(repr(index), f"holds vectors of {fingerprint!r}, not of {encoder.fingerprint!r}",
                       "serve with the encoder that built the index", IndexMismatchError)
        self.encoder, self.projection, self.raw, self.mode, self.depth = encoder, projection, index, mode, depth
        self.options = options
        if mode == "full":
            self.index = (self._projected_collection(index) if isinstance(index, ChromaIndex)
                          else self._projected_exact(index))
        else:
            ids, vectors = index.get_vectors() if isinstance(index, ChromaIndex) else (list(index.ids), index.vectors)
            self._row = {i: r for r, i in enumerate(ids)}
            self._keys = projection.transform_documents(vectors)  # K·v of every document, for rescoring

    def projection_id(self) -> str:
        """A short hash of the weights: names the projected collection, so a new projection never reuses a stale one."""
        p = self.projection
        h = hashlib.sha256(p.Q_.tobytes() + p.K_.tobytes() + p.variant.encode()).hexdigest()
        return h[:12]

    def _projected_exact(self, index: Any) -> Any:
        from qkrag.retrieval.index import ExactIndex

        return ExactIndex(list(index.ids), self.projection.transform_documents(index.vectors), "ip", index.texts,
                          f"{self.encoder.fingerprint}|projection:{self.projection_id()}")

    def _projected_collection(self, raw: Any) -> Any:
        fingerprint = f"{self.encoder.fingerprint}|projection:{self.projection_id()}"
        source = raw.source_hash
        projected = raw.sibling(f"{raw.name}-proj-{self.projection_id()}", fingerprint, self.projection.rank_, "ip",
                                source_hash=source)
        if projected.is_current(source):  # keyed by the content it was derived from, not by a count
            return projected
        with projected.writing():
            projected.mark_complete(False)
            # Page by page (qkrag.retrieval.index.ChromaIndex.iter_vectors): memory bounded by one page, not the corpus.
            for ids, vectors, texts in raw.iter_vectors(texts=True):
                projected.add_vectors(ids, self.projection.transform_documents(vectors), [t or "" for t in texts])
            projected.mark_complete(True)
        return projected

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        from qkrag.embed.encoders import EmbedOptions, embed

        options = self.options or EmbedOptions(progress=len(queries) > 1000)
        return embed(self.encoder, list(queries), "query", options)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Any]]:
        """Hits for raw query vectors (skips embedding): what `search` does after the encoder."""
        from qkrag.retrieval.base import Hit

        p = self.projection
        if self.mode == "full":
            hits = self.index.search_vectors(p.transform_queries(vectors), k)
            return [[Hit(h.id, float(p.scale_ * h.score + p.bias_), h.text, float(p.probability(h.score)))
                     for h in row] for row in hits]
        candidates = self.raw.search_vectors(vectors, max(k, self.depth))
        q = p.transform_queries(vectors)
        out = []
        for qi, row in enumerate(candidates):
            dots = self._keys[[self._row[h.id] for h in row]] @ q[qi]
            order = np.argsort(-dots, kind="stable")[:k]
            out.append([Hit(row[j].id, float(p.scale_ * dots[j] + p.bias_), row[j].text,
                            float(p.probability(dots[j]))) for j in order])
        return out

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Any]]:
        if not queries:
            return []
        return self.search_vectors(self.query_vectors(queries), k)
