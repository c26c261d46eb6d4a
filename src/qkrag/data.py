"""Corpora, queries and relevance judgments: reading them and refusing bad ones.

Three sources, one shape:
- a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), the layout of every public IR benchmark;
- plain JSONL or CSV files of id + text (+ optional title);
- Hugging Face `datasets`: a folder saved with `save_to_disk`, local parquet/arrow files, or a hub name when online.

Everything is validated on the way in (duplicate ids, empty texts, malformed lines, qrels naming unknown ids), because
a silent problem here surfaces much later as a metric that is quietly wrong.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qkrag.errors import QkragError, fail

ID_FIELDS = ("_id", "id", "doc_id", "docid", "query_id", "qid")
TEXT_FIELDS = ("text", "contents", "content", "passage", "query")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""

    @property
    def content(self) -> str:
        """What gets embedded and indexed: title and text, as BEIR and MTEB join them."""
        return f"{self.title} {self.text}".strip()


def _check_document(source: str, doc: Document, positions: Mapping[str, int], i: int) -> None:
    """Refuse document `i` of `source` when its id was seen (`positions`: id -> index) or its text is empty."""
    if doc.id in positions:
        raise fail(source, f"duplicate document id {doc.id!r} (rows {positions[doc.id] + 1} and {i + 1})",
                   "give every document a unique id, or drop the duplicate rows")
    if not doc.content.strip():
        raise fail(source, f"document {doc.id!r} has empty text",
                   "remove the document or give it text (or load with skip_empty=True / --skip-empty to "
                   "leave empty documents out); empty documents cannot be embedded")


@dataclass(frozen=True)
class Corpus(Sequence[Document]):
    """An ordered, validated collection of documents with O(1) lookup by id."""

    documents: tuple[Document, ...]
    source: str = "<memory>"
    skipped: tuple[str, ...] = ()  # ids of empty documents left out on request (`load_corpus(skip_empty=True)`)
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positions: dict[str, int] = {}
        for i, doc in enumerate(self.documents):
            _check_document(self.source, doc, positions, i)
            positions[doc.id] = i
        object.__setattr__(self, "_positions", positions)

    @classmethod
    def from_texts(cls, texts: Mapping[str, str] | Sequence[str], source: str = "<memory>") -> Corpus:
        """From `{id: text}` or a list of texts (ids become "0", "1", ...)."""
        items = texts.items() if isinstance(texts, Mapping) else ((str(i), t) for i, t in enumerate(texts))
        return cls(tuple(Document(str(i), t) for i, t in items), source)

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, i):  # type: ignore[override]
        return self.documents[i]

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._positions

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.documents]

    @property
    def contents(self) -> list[str]:
        return [d.content for d in self.documents]

    def get(self, doc_id: str) -> Document:
        try:
            return self.documents[self._positions[doc_id]]
        except KeyError:
            raise fail(self.source, f"no document with id {doc_id!r}", "check the id against the corpus") from None

    def position(self, doc_id: str) -> int:
        return self._positions[doc_id]

    def subset(self, ids: Iterable[str]) -> Corpus:
        return Corpus(tuple(self.get(i) for i in ids), self.source)


Qrels = dict[str, dict[str, int]]  # query id -> {document id: graded relevance}


@dataclass(frozen=True)
class Collection:
    """A corpus with queries and judgments: what evaluation needs. `queries` holds only judged queries."""

    corpus: Corpus
    queries: dict[str, str]
    qrels: Qrels
    name: str = ""
    split: str = ""


# ---------------------------------------------------------------------------------------------------------- reading


def _not_utf8(where: str, err: UnicodeDecodeError) -> Exception:
    bad = err.object[err.start : err.start + 1].hex()
    return fail(where, f"is not UTF-8 text (byte 0x{bad} at position {err.start})",
                "convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8` (use the encoding it was "
                "written in), then use the converted file")


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, read as bytes so a line that is not UTF-8 is named exactly. A byte-order
    mark (Excel, Notepad) is dropped."""
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(f"{path}:{lineno}", err) from None


def _parsed(path: Path, lineno: int, line: str) -> Iterator[dict]:
    """The JSON object on one line of a JSONL file (nothing for a blank line)."""
    if not line.strip():
        return
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise fail(f"{path}:{lineno}", f"not valid JSON ({err.msg} at column {err.colno})",
                   "fix or delete that line; each line must be one JSON object") from None
    if not isinstance(row, dict):
        raise fail(f"{path}:{lineno}", f"expected a JSON object, got {type(row).__name__}",
                   'write one object per line, e.g. {"_id": "d1", "text": "..."}')
    yield row


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in _decoded_lines(path):
        for row in _parsed(path, lineno, line):
            yield lineno, row


def _read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    dialect = "excel-tab" if path.suffix in (".tsv", ".tab") else "excel"
    # csv reads any iterable of lines; decoded lines keep their line ends, as a file opened with newline="" does.
    lines = (line for _, line in _decoded_lines(path))
    for lineno, row in enumerate(csv.DictReader(lines, dialect=dialect), 2):
        yield lineno, row


def _pick(row: Mapping, names: Sequence[str], where: str, what: str) -> str:
    for name in names:
        if name in row and row[name] is not None:
            return str(row[name])
    empty = [name for name in names if name in row]  # present but null: say so, not "no field"
    if empty:
        raise fail(where, f"{what} field {empty[0]!r} is null", f"give it a {what}, or drop the row")
    raise fail(where, f"no {what} field (looked for {', '.join(names)}; found {', '.join(map(str, row)) or 'none'})",
               f"name the {what} column one of: {', '.join(names)}")


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(location, row) for every record of a JSONL/CSV/TSV file or a Hugging Face dataset."""
    if path.suffix in (".jsonl", ".json"):
        for lineno, row in _read_jsonl(path):
            yield f"{path}:{lineno}", row
    elif path.suffix in (".csv", ".tsv"):
        for lineno, row in _read_csv(path):
            yield f"{path}:{lineno}", row
    else:
        for i, row in enumerate(_load_hf(path)):
            yield f"{path}[{i}]", row


def _load_hf(path: Path | str) -> Iterable[Mapping]:
    """The rows of a Hugging Face dataset: `save_to_disk` folder, parquet/arrow file, or (online) a hub name."""
    p = Path(path)
    if p.suffix == ".parquet" and p.is_file():
        return _read_parquet(p)
    import datasets  # heavy: import only when a user asks for it

    saved = p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists())
    if saved or (p.suffix == ".arrow" and p.is_file()):
        try:
            ds = datasets.load_from_disk(str(p)) if saved else datasets.Dataset.from_file(str(p))
        except Exception as err:  # truncated or foreign files: pyarrow, json and OS errors alike
            raise _unreadable(p, "a Hugging Face dataset", err) from None
    elif p.exists():
        raise fail(str(p), "not a corpus file or folder qkrag can read",
                   "give a BEIR folder, a .jsonl/.csv/.tsv file, a .parquet/.arrow file, or a save_to_disk folder")
    else:
        try:
            from qkrag.cache import default_cache_dir

            # its Arrow copy goes under QKRAG_CACHE_DIR with qkrag's other caches, not ~/.cache/huggingface
            ds = datasets.load_dataset(str(path), cache_dir=str(default_cache_dir() / "datasets"))
        except Exception as err:  # offline, unknown name, ...: say which
            raise fail(str(path), f"no such file, and loading it as a Hugging Face hub dataset failed ({err})",
                       "check the path, or the dataset name and your network") from None
    if isinstance(ds, datasets.DatasetDict):
        split = "corpus" if "corpus" in ds else next(iter(ds))
        ds = ds[split]
    return ds


def _read_parquet(path: Path) -> Iterator[dict]:
    """Rows of a parquet file, read with pyarrow directly (`datasets` would first copy the whole file into its own
    cache under ~/.cache/huggingface, outside QKRAG_CACHE_DIR), a batch at a time: never the whole table."""
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        for batch in batches:
            yield from batch.to_pylist()
    except Exception as err:  # ArrowInvalid for a torn or non-parquet file, OSError for an unreadable one
        raise _unreadable(path, "a parquet file", err) from None


def _unreadable(path: Path, kind: str, err: Exception) -> Exception:
    reason = " ".join(str(err).split())[:200]
    return fail(str(path), f"is not readable as {kind} ({type(err).__name__}: {reason})",
                "check the file: re-export or re-download it (a copy cut short by a full disk or a killed download "
                "looks like this), or convert it to JSONL")


def _document(where: str, row: Mapping) -> Document:
    return Document(_pick(row, ID_FIELDS, where, "id"), _pick(row, TEXT_FIELDS, where, "text"),
                    str(row.get("title") or ""))


def _corpus_path(path: str | Path) -> Path:
    p = Path(path)
    return p / "corpus.jsonl" if p.is_dir() and (p / "corpus.jsonl").exists() else p


def load_corpus(path: str | Path, *, skip_empty: bool = False) -> Corpus:
    """Documents from a BEIR folder, a JSONL/CSV/TSV file, or a Hugging Face dataset.

    A document with empty text is an error, unless `skip_empty`: then it is left out and its id is listed in
    `corpus.skipped` (Cranfield has two such documents; one is even judged relevant, and stays a miss)."""
    p = _corpus_path(path)
    docs, skipped = [], []
    for where, row in _rows(p):
        doc = _document(where, row)
        if skip_empty and not doc.content.strip():
            skipped.append(doc.id)
            continue
        docs.append(doc)
    if not docs:
        raise fail(str(p), "contains no documents", "point qkrag at a non-empty corpus")
    return Corpus(tuple(docs), str(p), tuple(skipped))


class CorpusFile:
    """A JSONL corpus (or a BEIR folder's corpus.jsonl) read on demand, for corpora too big to hold: one scan checks
    every line as `load_corpus` does (ids unique, text present, valid JSON) and keeps only the ids and each
    document's byte offset; `contents` reads texts back from the file when asked, a slice at a time. What `qkrag
    index` uses, so the process holds ids (~100 bytes a document) and one chunk of texts, never the corpus."""

    def __init__(self, path: str | Path, *, skip_empty: bool = False, source: str | None = None):
        self.path = _corpus_path(path)  # what is read; `source` is what messages name (the original of a copy)
        self.source = source or str(self.path)
        self.ids: list[str] = []
        self.offsets: list[int] = []
        skipped: list[str] = []
        positions: dict[str, int] = {}
        for where, offset, row in self._scan():
            doc = _document(where, row)
            if skip_empty and not doc.content.strip():
                skipped.append(doc.id)
                continue
            _check_document(self.source, doc, positions, len(self.ids))
            positions[doc.id] = len(self.ids)
            self.ids.append(doc.id)
            self.offsets.append(offset)
        if not self.ids:
            raise fail(self.source, "contains no documents", "point qkrag at a non-empty corpus")
        self.skipped = tuple(skipped)
        self.contents = FileTexts(self)

    def _scan(self) -> Iterator[tuple[str, int, dict]]:
        path = self.path
        if path.suffix not in (".jsonl", ".json"):
            raise fail(self.source, "is not a JSONL corpus", "use open_corpus for CSV, parquet or datasets folders")
        offset = 0
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                start, offset = offset, offset + len(raw)
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise _not_utf8(f"{path}:{lineno}", err) from None
                for row in _parsed(path, lineno, line):
                    yield f"{path}:{lineno}", start, row

    def __len__(self) -> int:
        return len(self.ids)


def open_corpus(path: str | Path, *, skip_empty: bool = False) -> Corpus | CorpusFile:
    """The corpus at `path` for indexing, its texts left on disk: a `CorpusFile` over a JSONL file or a BEIR
    folder's corpus.jsonl, or over a JSONL copy of a CSV/TSV, parquet or arrow file or a datasets folder
    (`jsonl_copy`). Only a hub dataset name is loaded whole (`load_corpus`)."""
    p = _corpus_path(path)
    if p.suffix in (".jsonl", ".json"):
        return CorpusFile(p, skip_empty=skip_empty)
    if not p.exists():
        return load_corpus(path, skip_empty=skip_empty)
    return CorpusFile(jsonl_copy(p), skip_empty=skip_empty, source=str(p))


def jsonl_copy(path: Path) -> Path:
    """A JSONL copy (`_id`, `title`, `text`) of a CSV/TSV, parquet or arrow corpus or a datasets folder, written a
    row at a time and atomically under the cache's `corpora/`, keyed by the source's path and its files' sizes and
    modification times: reused while the source stays as it was, remade when it changes. A row without an id or
    text is refused here, with its place in the original; `CorpusFile` checks the rest."""
    from qkrag.atomic import atomic_open
    from qkrag.cache import content_hash, default_cache_dir

    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    stats = [(str(f.relative_to(path)) if path.is_dir() else "", f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    copy = default_cache_dir() / "corpora" / f"{content_hash(str(path.resolve()), stats)[:32]}.jsonl"
    if not copy.exists():
        with atomic_open(copy) as out:
            for where, row in _rows(path):
                doc = _document(where, row)
                out.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}, ensure_ascii=False) + "\n")
    return copy


class FileTexts(Sequence[str]):
    """The documents' contents (title + text) of a `CorpusFile`, read from the file by position; a slice reads its
    documents in one pass. Refuses a file that changed since it was scanned."""

    def __init__(self, corpus: CorpusFile):
        self._corpus = corpus

    def __len__(self) -> int:
        return len(self._corpus.ids)

    def __getitem__(self, i):  # type: ignore[override]
        positions = range(len(self))[i]  # an int, or a range for a slice (IndexError as a list gives)
        with open(self._corpus.path, "rb") as handle:
            if isinstance(positions, int):
                return self._read(positions, handle)
            return [self._read(j, handle) for j in positions]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), 1024):
            yield from self[start:start + 1024]

    def _read(self, position: int, handle) -> str:
        corpus = self._corpus
        handle.seek(corpus.offsets[position])
        try:
            doc = _document(corpus.source, json.loads(handle.readline().decode("utf-8-sig")))
        except (ValueError, QkragError):  # not JSON, not UTF-8, no id or text any more
            doc = None
        if doc is None or doc.id != corpus.ids[position]:
            raise fail(str(corpus.path), "changed while it was being read (a document is not where it was)",
                       "leave the corpus file alone until the command finishes, then run it again")
        return doc.content


def load_queries(path: str | Path) -> dict[str, str]:
    """Queries `{id: text}` from a BEIR folder's queries.jsonl, a JSONL/CSV/TSV file, or a Hugging Face dataset."""
    p = Path(path)
    if p.is_dir() and (p / "corpus.jsonl").exists() and not (p / "queries.jsonl").exists():
        raise fail(str(p), "is a BEIR folder without queries.jsonl", "add queries.jsonl ({\"_id\", \"text\"} per line)")
    if p.is_dir() and (p / "queries.jsonl").exists():
        p = p / "queries.jsonl"
    queries: dict[str, str] = {}
    for where, row in _rows(p):
        qid = _pick(row, ID_FIELDS, where, "id")
        text = _pick(row, TEXT_FIELDS, where, "text")
        if qid in queries:
            raise fail(where, f"duplicate query id {qid!r}", "give every query a unique id")
        if not text.strip():
            raise fail(where, f"query {qid!r} has empty text", "remove the query or give it text")
        queries[qid] = text
    return queries


def load_qrels(path: str | Path) -> Qrels:
    """Judgments from a TSV with header `query-id  corpus-id  score` (TREC qrels without a header work too)."""
    p = Path(path)
    if not p.exists():
        raise fail(str(p), "no such qrels file", "check the path; BEIR folders keep them in qrels/<split>.tsv")
    qrels: Qrels = {}
    for lineno, line in _decoded_lines(p):
        parts = line.split()
        if not parts or (lineno == 1 and not parts[-1].lstrip("-").isdigit()):
            continue  # blank line or header
        if len(parts) == 4:  # TREC: qid 0 docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
            raise fail(f"{p}:{lineno}", f"expected 'query-id<TAB>corpus-id<TAB>integer score', got {line.strip()!r}",
                       "fix that line")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    if not qrels:
        raise fail(str(p), "contains no judgments", "check that you point at the right split")
    return qrels


def check_qrels(qrels: Qrels, corpus: Corpus, queries: Mapping[str, str], source: str) -> None:
    """Refuse judgments that name documents or queries that do not exist: they would silently count as misses."""
    unknown_q = [q for q in qrels if q not in queries]
    skipped = set(corpus.skipped)  # known documents, left out for being empty: judged, but never retrievable
    unknown_d = sorted({d for judged in qrels.values() for d in judged if d not in corpus and d not in skipped})
    if unknown_q:
        raise fail(source, f"{len(unknown_q)} judged query id(s) not in the queries, e.g. {unknown_q[:3]}",
                   "use the queries file that belongs to these qrels, or drop those rows")
    if unknown_d:
        raise fail(source, f"{len(unknown_d)} judged document id(s) not in the corpus, e.g. {unknown_d[:3]}",
                   "use the corpus that belongs to these qrels, or drop those rows")


def splits(folder: str | Path) -> list[str]:
    """The qrels splits a BEIR folder has, e.g. ['test', 'train']."""
    return sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))


def require_folder(folder: str | Path, fix: str) -> Path:
    """`folder` as a Path if it is an existing folder, else one clear error (with `fix`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise fail(str(folder), "no such folder" if not folder.exists() else "is a file, not a folder", fix)
    return folder


def load_beir(folder: str | Path, split: str = "test", corpus: Corpus | None = None, *,
              skip_empty: bool = False) -> Collection:
    """A BEIR folder's corpus, its judged queries for `split`, and those judgments, all validated.
    `skip_empty` leaves documents with empty text out of the corpus (their judgments stay, as misses)."""
    folder = require_folder(folder, "give a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    if not (folder / "corpus.jsonl").exists():
        raise fail(str(folder), "not a BEIR folder (no corpus.jsonl)",
                   "give a folder holding corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise fail(str(folder), f"has no split {split!r}", f"choose one of {splits(folder) or 'none (no qrels/*.tsv)'}")
    corpus = corpus if corpus is not None else load_corpus(folder, skip_empty=skip_empty)
    all_queries = load_queries(folder)
    qrels = load_qrels(qrels_path)
    check_qrels(qrels, corpus, all_queries, str(qrels_path))
    queries = {q: all_queries[q] for q in qrels}
    return Collection(corpus, queries, qrels, name=folder.name, split=split)
