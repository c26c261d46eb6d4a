"""Corpora, queries and relevance judgments: reading them and refusing bad ones.

Three sources, one shape:
- a BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), the layout of every public IR benchmark;
- plain JSONL or CSV files of id + text (+ optional title);
- Hugging Face `datasets`: a folder saved with `save_to_disk`, local parquet/arrow files, or a hub name when online,
  written `hf:org/name` (anything else is a path: one that does not exist is "no such file", never a hub lookup).

Everything is validated on the way in (duplicate ids, empty texts, malformed lines, qrels naming unknown ids, two
judgments of one pair that disagree), because a silent problem here surfaces much later as a metric that is quietly
wrong. Every row becomes a document through one path (`_document`): id and text must be text (an id may be an int),
storable (no lone surrogate), the id non-empty; CSV is parsed strictly (extra fields, an unclosed quote). A bad row is
an error naming its file, line or row and field, unless `bad_rows` asks to coerce ("coerce": numbers, UTF-8 bytes, a
list of strings) or skip it ("skip": left out, listed in `rejected`): `qkrag index --bad-rows`.
"""

from __future__ import annotations

import csv
import itertools
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
    rejected: tuple[str, ...] = ()  # rows left out with bad_rows="skip": where each was and why
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


#: The longest CSV field read (csv's own default, 131,072 characters, is shorter than many documents).
CSV_FIELD_LIMIT = 2**31 - 1


def _read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a CSV/TSV file, each with the line it starts on. Strict: a row with more fields than the header, or a
    quote that is never closed (which would swallow every later row into one field), is refused, naming its line."""
    dialect = "excel-tab" if path.suffix in (".tsv", ".tab") else "excel"
    csv.field_size_limit(CSV_FIELD_LIMIT)
    # csv reads any iterable of lines; decoded lines keep their line ends, as a file opened with newline="" does.
    lines = (line for _, line in _decoded_lines(path))
    reader = csv.reader(lines, dialect=dialect, strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            return
        start = reader.line_num + 1
        for fields in reader:
            if len(fields) > len(header):
                raise fail(f"{path}:{start}", f"has {len(fields)} fields but the header has {len(header)} "
                           f"(extra: {', '.join(repr(f[:30]) for f in fields[len(header):][:3])})",
                           "quote fields that contain the delimiter (\"hello, world\"), or fix the row")
            if fields:
                yield start, dict(itertools.zip_longest(header, fields[: len(header)]))
            start = reader.line_num + 1
    except csv.Error as err:
        raise fail(f"{path}:{start}", f"is not valid CSV ({err}; a quote opened here may never be closed)",
                   "close the quote or escape it by doubling it (\"\"), then run again") from None


def _field(row: Mapping, names: Sequence[str], where: str, what: str) -> tuple[str, object]:
    """(name, value) of the first of `names` in `row` whose value is not null; a clear error when there is none."""
    for name in names:
        if name in row and row[name] is not None:
            return name, row[name]
    empty = [name for name in names if name in row]  # present but null: say so, not "no field"
    if empty:
        raise fail(where, f"{what} field {empty[0]!r} is null", f"give it a {what}, or drop the row")
    raise fail(where, f"no {what} field (looked for {', '.join(names)}; found {', '.join(map(str, row)) or 'none'})",
               f"name the {what} column one of: {', '.join(names)}")


#: What `bad_rows` may be: refuse a row whose id or text is not text (the default), coerce what can be coerced
#: (numbers and bytes to text, a list of strings joined, a lone surrogate replaced), or skip the row.
BAD_ROWS = ("error", "coerce", "skip")
BAD_ROWS_FIX = "fix the row; or pass --bad-rows coerce (turn numbers, bytes and lists into text) or --bad-rows skip"


def check_bad_rows(bad_rows: str) -> str:
    if bad_rows not in BAD_ROWS:
        raise fail(f"--bad-rows {bad_rows!r}", "is not a way to handle bad rows", f"use one of {', '.join(BAD_ROWS)}")
    return bad_rows


def _coerced(value: object) -> str | None:
    """`value` as text when it has one obvious reading (a number, UTF-8 bytes, a list of strings), else None."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return None


def _text_value(where: str, name: str, value: object, what: str, bad_rows: str) -> str:
    """`value` of field `name` as text: strictly a str (an id may also be an int), or coerced when `bad_rows` is
    "coerce". Lone surrogates (a JSON "\\ud800" escape) and an empty id are refused: neither can be stored."""
    text: str | None = None
    if isinstance(value, str):
        text = value
    elif what == "id" and isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif bad_rows == "coerce":
        text = _coerced(value)
    if text is None:
        shown = repr(value)
        raise fail(f"{where} field {name!r}", f"{what} is of type {type(value).__name__} ({shown[:60]}), not text",
                   BAD_ROWS_FIX)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        if bad_rows != "coerce":
            raise fail(f"{where} field {name!r}", f"{what} holds a lone surrogate (\\u{ord(text[err.start]):04x}), "
                       "which is not valid Unicode", BAD_ROWS_FIX) from None
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    if what == "id" and not text.strip():
        raise fail(f"{where} field {name!r}", "id is empty", "give every row a non-empty id, or --bad-rows skip")
    return text


def _pick(row: Mapping, names: Sequence[str], where: str, what: str, bad_rows: str = "error") -> str:
    name, value = _field(row, names, where, what)
    return _text_value(where, name, value, what, bad_rows)


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(location, row) for every record of a JSONL/CSV/TSV file or a Hugging Face dataset."""
    if not path.exists() and looks_local(path):
        raise fail(str(path), "no such file or folder", "check the path")
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
    elif not p.exists() and looks_local(path):
        raise fail(str(path), "no such file or folder",
                   "check the path (for a Hugging Face hub dataset, write hf:NAME, e.g. hf:BeIR/scifact)")
    elif p.exists():
        raise fail(str(p), "not a corpus file or folder qkrag can read",
                   "give a BEIR folder, a .jsonl/.csv/.tsv file, a .parquet/.arrow file, or a save_to_disk folder")
    else:
        try:
            from qkrag.cache import default_cache_dir

            # its Arrow copy goes under QKRAG_CACHE_DIR with qkrag's other caches, not ~/.cache/huggingface
            name = str(path).removeprefix(HUB_PREFIX)
            ds = datasets.load_dataset(name, cache_dir=str(default_cache_dir() / "datasets"))
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


def _document(where: str, row: Mapping, bad_rows: str = "error") -> Document:
    """The one way a row becomes a document: id and text strictly text (see `_text_value`), title text or absent."""
    title = row.get("title")
    title = "" if title is None or title == "" else _text_value(where, "title", title, "title", bad_rows)
    return Document(_pick(row, ID_FIELDS, where, "id", bad_rows), _pick(row, TEXT_FIELDS, where, "text", bad_rows),
                    title)


def _documents(rows: Iterable[tuple[str, Mapping]], bad_rows: str, rejected: list[str]
               ) -> Iterator[tuple[str, Document]]:
    """(location, document) of each row; with `bad_rows` "skip", a row that is refused is left out and its location
    (with the reason) goes to `rejected`."""
    check_bad_rows(bad_rows)
    for where, row in rows:
        try:
            yield where, _document(where, row, bad_rows)
        except QkragError as err:
            if bad_rows != "skip":
                raise
            rejected.append(str(err).split(". Fix:")[0])


#: The prefix that names a Hugging Face hub dataset (`hf:org/name`). Anything else is a local path: a command line
#: turns "./x" into "x", so no spelling of a path can be told from a hub name, and a mistyped path is never looked up.
HUB_PREFIX = "hf:"


def looks_local(path: str | Path) -> bool:
    """Whether `path` names a file or folder here: everything but `hf:NAME`. A local path that does not exist is
    "no such file", never sent to the hub."""
    return not str(path).startswith(HUB_PREFIX)


def _corpus_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists() and looks_local(path):
        raise fail(str(path), "no such file or folder",
                   "check the path (for a Hugging Face hub dataset, write hf:NAME, e.g. hf:BeIR/scifact)")
    return p / "corpus.jsonl" if p.is_dir() and (p / "corpus.jsonl").exists() else p


def load_corpus(path: str | Path, *, skip_empty: bool = False, bad_rows: str = "error") -> Corpus:
    """Documents from a BEIR folder, a JSONL/CSV/TSV file, or a Hugging Face dataset.

    A document with empty text is an error, unless `skip_empty`: then it is left out and its id is listed in
    `corpus.skipped` (Cranfield has two such documents; one is even judged relevant, and stays a miss). A row whose
    id or text is not text is an error naming the row, unless `bad_rows` is "coerce" or "skip" (see `BAD_ROWS`)."""
    p = _corpus_path(path)
    docs, skipped, rejected = [], [], []
    for where, doc in _documents(_rows(p), bad_rows, rejected):
        if skip_empty and not doc.content.strip():
            skipped.append(doc.id)
            continue
        docs.append(doc)
    if not docs:
        raise fail(str(p), "contains no documents", "point qkrag at a non-empty corpus")
    return Corpus(tuple(docs), str(p), tuple(skipped), tuple(rejected))


class CorpusFile:
    """A JSONL corpus (or a BEIR folder's corpus.jsonl) read on demand, for corpora too big to hold: one scan checks
    every line as `load_corpus` does (ids unique, text present, valid JSON) and keeps only the ids and each
    document's byte offset; `contents` reads texts back from the file when asked, a slice at a time. What `qkrag
    index` uses, so the process holds ids, offsets and one chunk of texts, never the corpus."""

    def __init__(self, path: str | Path, *, skip_empty: bool = False, source: str | None = None,
                 bad_rows: str = "error", rejected: Sequence[str] = ()):
        self.path = _corpus_path(path)  # what is read; `source` is what messages name (the original of a copy)
        self.source = source or str(self.path)
        self.ids: list[str] = []
        self.offsets: list[int] = []
        skipped: list[str] = []
        self.rejected: list[str] = list(rejected)  # rows left out with bad_rows="skip" (of the copy's source too)
        positions: dict[str, int] = {}
        self.bad_rows = check_bad_rows(bad_rows)
        for where, offset, row in self._scan():
            try:
                doc = _document(where, row, bad_rows)
            except QkragError as err:
                if bad_rows != "skip":
                    raise
                self.rejected.append(str(err).split(". Fix:")[0])
                continue
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


def open_corpus(path: str | Path, *, skip_empty: bool = False, bad_rows: str = "error") -> Corpus | CorpusFile:
    """The corpus at `path` for indexing, its texts left on disk: a `CorpusFile` over a JSONL file or a BEIR
    folder's corpus.jsonl, or over a JSONL copy of a CSV/TSV, parquet or arrow file or a datasets folder
    (`jsonl_copy`). Only a hub dataset name is loaded whole (`load_corpus`)."""
    p = _corpus_path(path)
    check_bad_rows(bad_rows)
    if p.suffix in (".jsonl", ".json"):
        return CorpusFile(p, skip_empty=skip_empty, bad_rows=bad_rows)
    if not p.exists():
        return load_corpus(path, skip_empty=skip_empty, bad_rows=bad_rows)
    copy, rejected = jsonl_copy(p, bad_rows)
    return CorpusFile(copy, skip_empty=skip_empty, source=str(p), rejected=rejected)


def jsonl_copy(path: Path, bad_rows: str = "error") -> tuple[Path, list[str]]:
    """A JSONL copy (`_id`, `title`, `text`) of a CSV/TSV, parquet or arrow corpus or a datasets folder, written a
    row at a time and atomically under the cache's `corpora/`, keyed by the source's path and its files' sizes and
    modification times (and `bad_rows`): reused while the source stays as it was, remade when it changes. A row
    whose id or text is missing or not text is refused here (or coerced, or skipped: `bad_rows`), with its place in
    the original; `CorpusFile` checks the rest. Returns the copy and the rows skipped (kept beside the copy)."""
    from qkrag.atomic import atomic_open, write_json
    from qkrag.cache import content_hash, default_cache_dir

    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    stats = [(str(f.relative_to(path)) if path.is_dir() else "", f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = content_hash(str(path.resolve()), stats, *([bad_rows] if bad_rows != "error" else []))[:32]
    copy = default_cache_dir() / "corpora" / f"{key}.jsonl"
    rejected_file = copy.with_suffix(".rejected.json")
    if copy.exists():
        return copy, json.loads(rejected_file.read_text(encoding="utf-8")) if rejected_file.exists() else []
    rejected: list[str] = []
    with atomic_open(copy) as out:
        for _, doc in _documents(_rows(path), bad_rows, rejected):
            out.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}, ensure_ascii=False) + "\n")
        write_json(rejected_file, rejected)  # before the copy lands: a copy is never without its list
    return copy, rejected


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
            row = json.loads(handle.readline().decode("utf-8-sig"))
            doc = _document(corpus.source, row, "coerce" if corpus.bad_rows == "coerce" else "error")
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
    seen: dict[tuple[str, str], int] = {}  # (query, document) -> the line that judged it first
    for lineno, line in _decoded_lines(p):
        parts = line.split()
        if not parts or (lineno == 1 and not parts[-1].lstrip("-").isdigit()):
            continue  # blank line or header
        if len(parts) == 4:  # TREC: qid 0 docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
            raise fail(f"{p}:{lineno}", f"expected 'query-id<TAB>corpus-id<TAB>integer score', got {line.strip()!r}",
                       "fix that line")
        judged = qrels.setdefault(parts[0], {})
        score = int(parts[2])
        if judged.get(parts[1], score) != score:  # the same line twice is harmless; two different scores are not
            first = seen[(parts[0], parts[1])]
            raise fail(f"{p}:{lineno}", f"judges query {parts[0]!r} / document {parts[1]!r} {score}, but line {first} "
                       f"judged it {judged[parts[1]]}", "keep one judgment per query and document")
        seen.setdefault((parts[0], parts[1]), lineno)
        judged[parts[1]] = score
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
