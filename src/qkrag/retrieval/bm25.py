"""BM25, the lexical baseline and the hybrid's second arm. This module owns the saved BM25 folder.

Two ways to build one index, with the same scores (tests/retrieval/test_bm25.py checks every BM25 variant):
- `BM25Retriever(corpus)`: in memory through `bm25s` (sparse matrices, fast on CPU). What benchmarks and small
  corpora use; it holds the corpus, its token lists and the index at once.
- `build_bm25(documents, folder)`: streamed, for corpora that do not fit. The documents are read once, a chunk at a
  time; each chunk is tokenised by bm25s's own tokenizer and reduced to (document, term, count) triples spilled to
  disk, while document frequencies and lengths add up. A second pass over the spill scores the triples with bm25s's
  formulas (restated here) and the corpus-wide statistics and writes them into the score matrix's columns, a file mapped into memory.
  In memory at any time: the vocabulary, the per-term counts and one chunk; never the corpus or its tokens.

The folder holds bm25s's own files (`bm25s.BM25.save`), the document ids (`ids.npy`) and `MANIFEST`: what the index
was built on (a hash streamed over every id and text, in order) and how it tokenises. `BM25Retriever.load(folder)`
reads either kind; `mmap=True` leaves the score matrix on disk, read per query term.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from qkrag.atomic import atomic_folder, require_whole, write_json
from qkrag.cache import content_hash
from qkrag.data import Corpus
from qkrag.errors import IndexMismatchError, fail
from qkrag.ranking import Hit

BM25Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
#: Looks up stored texts by id (e.g. `ChromaIndex.stored_texts`), for hits of an index loaded without its corpus.
TextLookup = Callable[[Sequence[str]], dict]


def english_stemmer(stemmer: str | None):
    """PyStemmer's English Snowball stemmer; "auto" falls back to no stemming when PyStemmer is not installed."""
    if stemmer is None:
        return None
    try:
        import Stemmer
    except ImportError:
        if stemmer == "auto":
            return None
        raise fail(f"stemmer {stemmer!r}", "PyStemmer is not installed", "pip install PyStemmer, or pass stemmer=None")
    try:
        return Stemmer.Stemmer("english" if stemmer == "auto" else stemmer)
    except (KeyError, ValueError):
        raise fail(f"stemmer {stemmer!r}", "is not a Snowball algorithm",
                   f"use one of {sorted(Stemmer.algorithms())}") from None


def stemmer_name(asked: str | None, stemmer) -> str | None:
    """The Snowball algorithm `english_stemmer(asked)` resolved to ("auto" -> "english"), None when it gave none."""
    return ("english" if asked == "auto" else asked) if stemmer is not None else None


def check_settings(k1: float, b: float, method: str) -> None:
    if k1 < 0 or not 0 <= b <= 1:
        raise fail("BM25", f"k1={k1}, b={b} out of range", "use k1 >= 0 and 0 <= b <= 1")
    if method not in ("lucene", "robertson", "atire", "bm25l", "bm25+"):
        raise fail("BM25 method", f"{method!r} is not a BM25 variant", "use lucene, robertson, atire, bm25l or bm25+")


class CorpusDigest:
    """What a saved index was built on: SHA-256 over every (id, text), in order (BM25 positions follow the order),
    fed one document at a time so a streamed build never holds the corpus."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def update(self, doc_id: str, text: str) -> None:
        self._hash.update(json.dumps([doc_id, text], ensure_ascii=False).encode("utf-8") + b"\n")
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    @classmethod
    def of(cls, corpus: Corpus) -> str:
        digest = cls()
        for doc in corpus:
            digest.update(doc.id, doc.content)
        return digest.hexdigest()


class BM25Retriever:
    """BM25 over `corpus` (each document's `content`: title + text).

    Defaults are Lucene's (k1=1.2, b=0.75, Lucene's idf), the Elasticsearch setup behind the BEIR paper's BM25 column.
    Tokens: lowercased words of 2+ characters, English stopwords removed, Snowball-stemmed when PyStemmer is there
    (`stemmer="auto"`; `self.stemmed` says whether it was). The index is built on construction; `save(folder)` and
    `BM25Retriever.load(folder, corpus)` keep it on disk, checked against the corpus it was built on.
    """

    #: The file `save` writes beside bm25s's own files: what the index was built on, and how it tokenises.
    MANIFEST = "qkrag-bm25.json"
    IDS = "ids.npy"

    def __init__(self, corpus: Corpus, k1: float = 1.2, b: float = 0.75, method: BM25Method = "lucene",
                 stopwords: str | list[str] | None = "en", stemmer: str | None = "auto", progress: bool = False):
        import bm25s

        if len(corpus) == 0:
            raise fail("BM25Retriever", "the corpus is empty", "index at least one document")
        self._configure(k1, b, method, stopwords, stemmer, progress)
        self.corpus: Corpus | None = corpus
        self.ids: Sequence[str] = corpus.ids
        self.texts: TextLookup | None = None
        tokens = bm25s.tokenize(corpus.contents, stopwords=stopwords, stemmer=self._stemmer, show_progress=progress)
        self._bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        self._bm25.index(tokens, show_progress=progress)

    def _configure(self, k1: float, b: float, method: BM25Method, stopwords: str | list[str] | None,
                   stemmer: str | None, progress: bool) -> None:
        """Check and store the settings; shared by building (`__init__`) and loading (`load`)."""
        check_settings(k1, b, method)
        self.k1, self.b, self.method = k1, b, method
        self.stopwords = stopwords
        self._stemmer = english_stemmer(stemmer)
        self.stemmed = self._stemmer is not None
        # The algorithm actually used ("auto" resolved): what `save` records, so a load tokenises queries the same way.
        self.stemmer_name = stemmer_name(stemmer, self._stemmer)
        self.progress = progress

    # ------------------------------------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Save the index to `folder` (bm25s's own files, the ids and `MANIFEST`), atomically: it is written in a
        temporary folder beside it, then renamed into place, so a killed save never leaves a half-written index."""
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            self._bm25.save(str(tmp), show_progress=False)
            np.save(tmp / self.IDS, np.asarray(list(self.ids), dtype=str))
            write_json(tmp / self.MANIFEST, manifest(len(self.ids), CorpusDigest.of(self.corpus), self.settings()))
        return folder

    def settings(self) -> dict:
        return {"k1": self.k1, "b": self.b, "method": self.method, "stopwords": self.stopwords,
                "stemmer": self.stemmer_name}

    @classmethod
    def load(cls, folder: str | os.PathLike[str], corpus: Corpus | None = None, *, texts: TextLookup | None = None,
             mmap: bool = False) -> BM25Retriever:
        """Load an index saved in `folder` (by `save` or `build_bm25`).

        With `corpus`, it must be the documents (ids and contents, in the same order) it was built on, or
        IndexMismatchError is raised: its hits would name the wrong documents; hits carry their texts. Without it,
        the ids come from the folder and the hits' texts from `texts` (or none). `mmap=True` keeps the score matrix
        and the ids on disk: memory stays small whatever the corpus size."""
        import bm25s

        folder = require_whole(folder, "BM25 index")
        saved = read_manifest(folder / cls.MANIFEST)
        if corpus is not None:
            check_built_on(folder, saved, corpus)
        settings = saved["settings"]
        retriever = cls.__new__(cls)
        retriever._configure(settings["k1"], settings["b"], settings["method"], settings["stopwords"],
                             settings["stemmer"], progress=False)
        retriever.corpus, retriever.texts = corpus, texts
        if corpus is None and not (folder / cls.IDS).exists():
            raise fail(str(folder), "was saved by an older qkrag without its document ids",
                       "pass the corpus it was built on, or rebuild it with `qkrag index DATA --hybrid`")
        retriever.ids = corpus.ids if corpus is not None else np.load(folder / cls.IDS, mmap_mode="r" if mmap else None)
        retriever._bm25 = bm25s.BM25.load(str(folder), mmap=mmap, show_progress=False)
        return retriever

    # ------------------------------------------------------------------------------------------------ searching
    def _tokens(self, queries: Sequence[str]) -> list[list[str]]:
        import bm25s

        words = bm25s.tokenize(list(queries), stopwords=self.stopwords, stemmer=self._stemmer, return_ids=False,
                               show_progress=False)
        vocab = self._bm25.vocab_dict
        return [[w for w in row if w in vocab] for row in words]

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top `k` documents per query, best first. Only documents sharing a term with the query are returned
        (a score of 0 says nothing), so a query of stopwords or unknown words gets no hits."""
        if isinstance(queries, str):
            raise fail("search", "got one string, not a list of queries", "pass [query]")
        if k < 1:
            raise fail("search", f"k={k}", "ask for at least one hit")
        tokens = self._tokens(queries)
        out: list[list[Hit]] = [[] for _ in queries]
        todo = [i for i, t in enumerate(tokens) if t]
        if not todo:
            return out
        k = min(k, len(self.ids))
        positions, scores = self._bm25.retrieve([tokens[i] for i in todo], k=k, show_progress=self.progress,
                                                n_threads=0)
        for i, prow, srow in zip(todo, positions, scores):
            out[i] = [(str(self.ids[p]), float(s)) for p, s in zip(prow, srow) if s > 0]
        return [self._hits(row) for row in out]

    def _hits(self, scored: list) -> list[Hit]:
        if self.corpus is not None:
            return [Hit(i, s, self.corpus.get(i).content) for i, s in scored]
        found = self.texts([i for i, _ in scored]) if self.texts is not None and scored else {}
        return [Hit(i, s, found.get(i)) for i, s in scored]

    def __repr__(self) -> str:
        return (f"BM25Retriever({len(self.ids)} docs, k1={self.k1}, b={self.b}, method={self.method!r}, "
                f"stemmed={self.stemmed})")


def manifest(documents: int, corpus_hash: str, settings: dict, source: str | None = None) -> dict:
    """`source`: a key of what the documents were read from (a Chroma collection's content hash), so a reader can
    tell the index is current without reading the documents again."""
    return {"format": 2, "documents": documents, "corpus_hash": corpus_hash, "settings": settings, "source": source}


def read_manifest(path: Path) -> dict:
    if not path.exists():
        raise fail(str(path.parent), f"holds no saved BM25 index (no {path.name})",
                   "save one with BM25Retriever.save or build_bm25, or build it with `qkrag index DATA --hybrid`")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("format") not in (1, 2) or not {"corpus_hash", "documents", "settings"} <= set(saved):
            raise ValueError("unknown format")
    except (ValueError, AttributeError) as err:
        raise fail(str(path), f"is not a qkrag BM25 manifest ({err})", "delete the folder and save the index again"
                   ) from None
    return saved


def check_built_on(folder: Path, saved: dict, corpus: Corpus) -> None:
    """Raise IndexMismatchError unless the index in `folder` was built on exactly `corpus`. Format 1 (before
    streamed builds) hashed the id and content lists as one JSON document."""
    now = content_hash(corpus.ids, corpus.contents) if saved["format"] == 1 else CorpusDigest.of(corpus)
    if saved["corpus_hash"] != now:
        raise fail(str(folder), f"holds a BM25 index of other documents ({saved['documents']} documents when "
                   f"it was built, {len(corpus)} now, and their ids or texts differ)",
                   "rebuild it: `qkrag index DATA --hybrid`, or qkrag.retrieval.hybrid.open_bm25(corpus, folder)",
                   exc=IndexMismatchError)


# ------------------------------------------------------------------------------------------------ streamed build
@dataclass
class _Spill:
    """Pass 1's output: (document, term, count) triples and document lengths on disk, statistics in memory."""

    folder: Path
    vocab: dict[str, int] = field(default_factory=dict)
    df: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # documents holding each term
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (first document, triples) per chunk
    documents: int = 0
    tokens: int = 0
    id_width: int = 1
    digest: CorpusDigest = field(default_factory=CorpusDigest)

    def file(self, name: str) -> Path:
        return self.folder / name


def _chunks(documents: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for doc in documents:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _spill_chunk(spill: _Spill, chunk: list[tuple[str, str]], stopwords, stemmer) -> None:
    """Tokenise one chunk with bm25s's tokenizer (the one queries go through), count each term per document, and
    append the triples, lengths and ids to the spill files."""
    import bm25s

    for doc_id, text in chunk:
        if not isinstance(doc_id, str) or not isinstance(text, str):
            raise fail(f"document {doc_id!r}", f"is not an (id, text) pair of strings: {type(text).__name__} text",
                       "pass (str id, str text) pairs, e.g. ((d.id, d.content) for d in corpus)")
        spill.digest.update(doc_id, text)
    words = bm25s.tokenize([t for _, t in chunk], stopwords=stopwords, stemmer=stemmer, return_ids=False,
                           show_progress=False)
    vocab = spill.vocab
    lengths = np.fromiter((len(row) for row in words), np.int32, len(words))
    terms = np.fromiter((vocab.setdefault(w, len(vocab)) for row in words for w in row), np.int64, int(lengths.sum()))
    local = np.repeat(np.arange(len(chunk), dtype=np.int64), lengths)
    width = max(len(vocab), 1)
    pairs, counts = np.unique(local * width + terms, return_counts=True)  # sorted by document, then term
    docs, terms = pairs // width + spill.documents, pairs % width
    if len(spill.df) < len(vocab):
        spill.df = np.concatenate([spill.df, np.zeros(len(vocab) - len(spill.df), np.int64)])
    spill.df += np.bincount(terms, minlength=len(spill.df))
    with open(spill.file("triples.bin"), "ab") as out:
        np.stack([docs, terms, counts]).astype(np.int32).T.tofile(out)
    with open(spill.file("lengths.bin"), "ab") as out:
        lengths.tofile(out)
    with open(spill.file("ids.jsonl"), "a", encoding="utf-8") as out:
        out.writelines(json.dumps(doc_id, ensure_ascii=False) + "\n" for doc_id, _ in chunk)
    spill.chunks.append((spill.documents, len(pairs)))
    spill.documents += len(chunk)
    spill.tokens += int(lengths.sum())
    spill.id_width = max(spill.id_width, *(len(doc_id) for doc_id, _ in chunk))


# bm25s's five variants (Kamphuis et al., ECIR 2020), restated because bm25s keeps them private: idf from a term's
# document frequency df among n documents, and the term-frequency part from tf, the document's length and the mean
# length. tests/retrieval/test_bm25.py checks that every variant scores as bm25s's own index does.
_IDF = {"robertson": lambda df, n: np.log(np.maximum((n - df + 0.5) / (df + 0.5), 1)),
        "lucene": lambda df, n: np.log(1 + (n - df + 0.5) / (df + 0.5)),
        "atire": lambda df, n: np.log(n / df),
        "bm25l": lambda df, n: np.log((n + 1) / (df + 0.5)),
        "bm25+": lambda df, n: np.log((n + 1) / df)}


def _tfc(method: str, tf, length, mean, k1: float, b: float, delta: float):
    norm = 1 - b + b * length / mean
    if method in ("robertson", "lucene"):
        return tf / (k1 * norm + tf)
    if method == "atire":
        return tf * (k1 + 1) / (tf + k1 * norm)
    if method == "bm25l":
        return (k1 + 1) * (tf / norm + delta) / (k1 + tf / norm + delta)
    return (k1 + 1) * tf / (k1 * norm + tf) + delta  # bm25+


def _scored_matrix(spill: _Spill, bm25, scratch: Path) -> dict:
    """Pass 2: score every spilled triple with corpus-wide statistics, and place it in its term's column of a CSC
    matrix (documents x terms, the layout bm25s searches) held in memory-mapped files."""
    n_terms, avg_len = len(spill.vocab), spill.tokens / spill.documents
    df = spill.df.astype(np.float64)
    with np.errstate(divide="ignore"):
        idf64 = np.where(spill.df > 0, _IDF[bm25.idf_method](df, spill.documents), 0)
    idf = idf64.astype(bm25.dtype)
    bm25.nonoccurrence_array = None
    if bm25.method in bm25.methods_requiring_nonoccurrence:  # what a document scores for a term it lacks
        absent = _tfc(bm25.method, 0.0, avg_len, avg_len, bm25.k1, bm25.b, bm25.delta)
        bm25.nonoccurrence_array = np.where(spill.df > 0, idf64 * absent, 0).astype(bm25.dtype)
    indptr = np.zeros(n_terms + 1, np.int64)
    np.cumsum(spill.df, out=indptr[1:])
    data = np.lib.format.open_memmap(scratch / "data.npy", "w+", np.dtype(bm25.dtype), (int(indptr[-1]),))
    rows = np.lib.format.open_memmap(scratch / "indices.npy", "w+", np.dtype(bm25.int_dtype), (int(indptr[-1]),))
    filled = indptr[:-1].copy()  # next free slot of each column
    lengths = np.fromfile(spill.file("lengths.bin"), np.int32)
    with open(spill.file("triples.bin"), "rb") as triples:
        for _, count in spill.chunks:
            docs, terms, tf = np.fromfile(triples, np.int32, count * 3).reshape(count, 3).T
            scores = idf[terms] * _tfc(bm25.method, tf.astype(bm25.dtype), lengths[docs], avg_len, bm25.k1, bm25.b,
                                       bm25.delta)
            if bm25.nonoccurrence_array is not None:
                scores -= bm25.nonoccurrence_array[terms]
            order = np.argsort(terms, kind="stable")  # by term; documents stay ascending within each term
            terms, docs, scores = terms[order], docs[order], scores[order]
            first = np.searchsorted(terms, terms, side="left")
            slots = filled[terms] + (np.arange(len(terms)) - first)
            data[slots], rows[slots] = scores, docs
            filled += np.bincount(terms, minlength=n_terms)
    data.flush(), rows.flush()
    return {"data": data, "indices": rows, "indptr": indptr, "num_docs": spill.documents}


def _write_ids(spill: _Spill, path: Path, block: int = 100_000) -> None:
    ids = np.lib.format.open_memmap(path, "w+", np.dtype(f"<U{spill.id_width}"), (spill.documents,))
    with open(spill.file("ids.jsonl"), encoding="utf-8") as lines:
        for start in range(0, spill.documents, block):
            ids[start:start + block] = [json.loads(line) for line in itertools.islice(lines, block)]
    ids.flush()


def build_bm25(documents: Iterable[tuple[str, str]], folder: str | os.PathLike[str], *, k1: float = 1.2,
               b: float = 0.75, method: BM25Method = "lucene", stopwords: str | list[str] | None = "en",
               stemmer: str | None = "auto", chunk: int = 10_000, source: str | None = None,
               progress: Callable[[int], None] | None = None) -> Path:
    """Build the BM25 index of `documents` ((id, text) pairs, read once, in order) into `folder`, in memory bounded
    by the vocabulary and one `chunk` of documents. The same scores as `BM25Retriever(corpus)`, and the same folder
    format; open it with `BM25Retriever.load(folder, mmap=True)`. Written atomically; `progress(n)` is called with
    the documents read so far; `source` is recorded in the manifest (see `manifest`)."""
    import bm25s

    check_settings(k1, b, method)
    if chunk < 1:
        raise fail("build_bm25 chunk", f"{chunk!r}", "pass a positive number of documents per chunk")
    stem = english_stemmer(stemmer)
    settings = {"k1": k1, "b": b, "method": method, "stopwords": stopwords, "stemmer": stemmer_name(stemmer, stem)}
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        spill = _Spill(tmp / "spill")
        spill.folder.mkdir()
        for part in _chunks(documents, chunk):
            _spill_chunk(spill, part, stopwords, stem)
            if progress is not None:
                progress(spill.documents)
        if spill.documents == 0:
            raise fail("build_bm25", "got no documents", "index at least one document")
        bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        bm25.scores = _scored_matrix(spill, bm25, spill.folder)
        bm25.vocab_dict = {**spill.vocab, "": len(spill.vocab)}  # bm25s adds the empty token after the matrix, too
        bm25.unique_token_ids_set = set(bm25.vocab_dict.values())
        bm25.save(str(tmp), show_progress=False)
        _write_ids(spill, tmp / BM25Retriever.IDS)
        write_json(tmp / BM25Retriever.MANIFEST, manifest(spill.documents, spill.digest.hexdigest(), settings, source))
        del bm25
        shutil.rmtree(spill.folder)
    return folder


def saved_source(folder: str | os.PathLike[str]) -> str | None:
    """The `source` key recorded when the index in `folder` was built (None: none recorded, or no index there)."""
    path = Path(folder) / BM25Retriever.MANIFEST
    return read_manifest(path).get("source") if path.exists() else None


__all__ = ["BM25Method", "BM25Retriever", "CorpusDigest", "build_bm25", "english_stemmer", "saved_source"]
