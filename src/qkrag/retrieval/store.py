"""The Chroma collection format qkrag writes and reads: `ChromaIndex`, one collection of one encoder's vectors.

This module owns what a qkrag collection holds on disk (or on a server): its metadata keys, its completeness flag, its
recorded count and content hash, and the `source_hash` of a derived collection. Nothing else reads or writes them.

Chroma has three traps this module closes:
- its default distance is squared L2, fixed at creation, and `get_or_create_collection` silently keeps an old
  collection's settings, so the space is always passed explicitly and checked when a collection is reopened;
- its default HNSW settings (ef_search 100, M 16) give poor recall on 384-d embeddings (see
  benchmarks/results/index_bench.md), so ef_search / ef_construction / M are exposed with measured defaults;
- a collection created without `embedding_function=None` instantiates Chroma's default embedding function, which
  downloads a model; qkrag always passes vectors itself, so no embedding function is ever built.

A collection records which encoder made its vectors (fingerprint + dimension) and whether it is complete, so a query
with another encoder's vectors, or against a half-built index, fails loudly instead of returning plausible garbage.
Derived collections (`sibling`: projected, centred, whitened vectors) record the `source_hash` of the collection they
were derived from; opened against other content, a sibling is emptied, so it is recomputed, never reused stale.
`ChromaIndex.writing()` holds the collection's writer lock (see `IndexConfig.lock_path`).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qkrag import __version__
from qkrag.atomic import file_lock
from qkrag.cache import check_embeddings
from qkrag.errors import IndexMismatchError, fail
from qkrag.ranking import Hit, Space
from qkrag.retrieval.connection import IndexConfig, ServerCalls, collection_names, connect

_META = "qkrag:"  # prefix of every metadata key we own


@dataclass
class BuildStats:
    """What `build_index` did: documents embedded and added, re-embedded because their text changed, already there
    and unchanged, and removed because they are no longer in the corpus."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    rebuilt: str = ""  # why the collection was dropped and rebuilt from scratch (corrupt, mixed), else empty


class ChromaIndex:
    """One Chroma collection of vectors made by one encoder (or one projection), identified by `fingerprint`.

    Open it with `ChromaIndex.open(config, fingerprint, dimension)` or `ChromaIndex.for_encoder(config, encoder)`;
    `sibling(...)` opens another collection on the same client (the projection stage keeps projected vectors in an
    `ip`-space collection beside the raw one).
    """

    def __init__(self, client: Any, collection: Any, config: IndexConfig):
        self.client = client
        if config.host and not isinstance(collection, ServerCalls):
            collection = ServerCalls(collection, config)
        self.collection = collection
        self.config = config
        self.last_build: BuildStats | None = None
        self._max_batch: int | None = None

    # -------------------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, config: IndexConfig, fingerprint: str, dimension: int, *, create: bool = True,
             client: Any = None) -> ChromaIndex:
        """Open `config.collection`, creating it when `create` is true. Raises IndexMismatchError when it holds
        vectors of another encoder, dimension or space, and InputError when it does not exist and `create` is false."""
        from chromadb.errors import NotFoundError

        client = client if client is not None else connect(config)
        where = f"{config.location} collection {config.collection!r}"
        try:
            # embedding_function=None: the default would build Chroma's ONNX MiniLM, which downloads a model.
            collection = client.get_collection(config.collection, embedding_function=None)
        except NotFoundError:
            if not create:
                raise fail(where, "does not exist", f"build it first with `qkrag index`, or use one that exists: "
                           f"{', '.join(collection_names(client)) or 'none here'}")
            try:
                collection = client.create_collection(
                    config.collection, configuration={"hnsw": config.hnsw()}, embedding_function=None,
                    metadata=qkrag_metadata(fingerprint, dimension, config.space, complete=False))
            except Exception as err:  # chromadb's InvalidArgumentError for a bad name, mostly
                raise fail(where, f"cannot be created ({err})",
                           "use a name of 3-512 characters from [a-zA-Z0-9._-], starting and ending alphanumeric"
                           ) from None
            return cls(client, collection, config)
        index = cls(client, collection, config)
        if not create and index.space != config.space:  # reading: any space serves; scores come back in its terms
            index = cls(client, collection, dataclasses.replace(config, space=index.space))
        index._check(fingerprint, dimension, where)
        # ef_search is the one HNSW setting Chroma lets us change; done before the first query, it applies at once.
        if index.hnsw_settings.get("ef_search") != config.ef_search:
            collection.modify(configuration={"hnsw": {"ef_search": int(config.ef_search)}})
        return index

    @classmethod
    def for_encoder(cls, config: IndexConfig, encoder: Any, *, create: bool = True) -> ChromaIndex:
        return cls.open(config, encoder.fingerprint, encoder.dimension, create=create)

    def sibling(self, collection: str, fingerprint: str, dimension: int, space: Space = "ip",
                create: bool = True, *, source_hash: str | None = None) -> ChromaIndex:
        """Another collection on the same client, with its own fingerprint, dimension and space, holding vectors
        derived from this one (projected, centred, whitened...).

        It records `source_hash` (default: this collection's `source_hash`), the content it was derived from. Opened
        against other content it is stale: it is dropped and recreated empty (when `create`), so a caller that checks
        `complete` / `count()` recomputes it instead of serving vectors of documents that changed. `is_current()`
        says the same in one call.
        """
        from dataclasses import replace

        source_hash = source_hash or self.source_hash
        config = replace(self.config, collection=collection, space=space)
        index = ChromaIndex.open(config, fingerprint, dimension, create=create, client=self.client)
        recorded = index.metadata.get(_META + "derived_from") or ""
        if recorded != source_hash:
            if create and (recorded or index.count()):
                index.delete()  # stale, or of unknown origin: its vectors describe other documents
                index = ChromaIndex.open(config, fingerprint, dimension, create=True, client=self.client)
            if create:
                index._set_meta(derived_from=source_hash)
        return index

    def find_sibling(self, collection: str, fingerprint: str) -> ChromaIndex | None:
        """The collection `collection` on this client when it exists and holds `fingerprint`'s vectors, opened
        without writing anything (no creation, no setting changed); else None. What a reader uses where `sibling`
        would create or empty one."""
        from chromadb.errors import NotFoundError

        try:
            found = self.client.get_collection(collection, embedding_function=None)
        except NotFoundError:
            return None
        index = ChromaIndex(self.client, found, self.config)
        index = ChromaIndex(self.client, found, dataclasses.replace(self.config, collection=collection,
                                                                      space=index.space))
        return index if index.metadata.get(_META + "encoder") == fingerprint else None

    def is_current(self, source_hash: str) -> bool:
        """Complete and derived from `source_hash` (see `sibling`): safe to serve without recomputing."""
        meta = self.metadata
        return bool(meta.get(_META + "complete")) and meta.get(_META + "derived_from") == source_hash

    @property
    def source_hash(self) -> str:
        """A content hash of what this collection holds, for keying what is derived from it. `build_index` records
        one when it completes (encoder fingerprint + every id and text); otherwise it is computed over the stored ids
        and vectors, read a page at a time: memory holds an id and a 32-byte digest per vector, never the vectors.
        Any write clears the recorded one."""
        recorded = self.metadata.get(_META + "content_hash")
        if recorded and self.complete:
            return str(recorded)
        digests = {doc_id: hashlib.sha256(vector.tobytes()).digest()
                   for ids, vectors, _ in self.iter_vectors() for doc_id, vector in zip(ids, vectors)}
        return _hash_pairs(self.fingerprint, ((doc_id, digests[doc_id]) for doc_id in sorted(digests)))

    @contextmanager
    def writing(self) -> Iterator[ChromaIndex]:
        """Hold this collection's writer lock for the with-block (see `IndexConfig.lock_path`): a second writer, in
        another process, waits up to `config.lock_timeout` seconds, then fails with a message."""
        with file_lock(self.config.lock_path, self.config.lock_timeout, f"{self.config.location} collection "
                       f"{self.name!r}"):
            yield self

    def _check(self, fingerprint: str, dimension: int, where: str) -> None:
        meta = self.metadata
        if _META + "encoder" not in meta:
            raise fail(where, "was not made by qkrag (no encoder recorded in its metadata)",
                       "choose another collection name, or delete this collection", exc=IndexMismatchError)
        theirs = (meta[_META + "encoder"], int(meta[_META + "dimension"]))
        if theirs != (fingerprint, int(dimension)):
            raise fail(where, f"holds vectors of encoder {theirs[0]!r} ({theirs[1]}-d), not of {fingerprint!r} "
                       f"({dimension}-d)",
                       f"use the encoder that built it, choose another collection name, or rebuild it "
                       f"(delete it, then `qkrag index` with {fingerprint!r})", exc=IndexMismatchError)
        if self.space != self.config.space:
            raise fail(where, f"uses distance space {self.space!r}, not {self.config.space!r} (Chroma fixes the space "
                       "when a collection is created)",
                       f"open it with space {self.space!r}, or choose another collection name",
                       exc=IndexMismatchError)

    # -------------------------------------------------------------------------------------------- state
    @property
    def name(self) -> str:
        return self.collection.name

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.collection.metadata or {})

    @property
    def fingerprint(self) -> str:
        return str(self.metadata[_META + "encoder"])

    @property
    def dimension(self) -> int:
        return int(self.metadata[_META + "dimension"])

    @property
    def space(self) -> Space:
        # Chroma's configuration is the truth (it is what HNSW uses); our metadata copy is for humans.
        return self.hnsw_settings.get("space") or self.metadata.get(_META + "space")  # type: ignore[return-value]

    @property
    def hnsw_settings(self) -> dict[str, Any]:
        return dict((self.collection.configuration_json or {}).get("hnsw") or {})

    @property
    def complete(self) -> bool:
        return bool(self.metadata.get(_META + "complete", False))

    @property
    def content_hash(self) -> str:
        """The content hash `build_index` recorded when it completed (see `corpus_hash`), or "": any write clears it."""
        return str(self.metadata.get(_META + "content_hash") or "")

    @property
    def recorded_count(self) -> int:
        """The document count `build_index` recorded when it completed, or -1: any write clears it."""
        return int(self.metadata.get(_META + "count", -1))

    def mark_complete(self, complete: bool = True, *, content_hash: str = "", count: int = -1) -> None:
        """Set the complete flag. Marking it incomplete clears the recorded content hash and count; marking it
        complete records them when given (`build_index` does), so a later build can tell a mixed collection."""
        self._set_meta(complete=bool(complete), content_hash=content_hash if complete else "",
                       count=int(count) if complete else -1, version=__version__)

    def fusion(self, arm: str) -> str | None:
        """The hybrid fusion rule recorded for dense arm `arm` ("cosine", "projection:<id>"), as the JSON text
        `retrieval.hybrid.record_fusion` wrote, or None. This collection owns it, beside its BM25 index."""
        return self.metadata.get(f"{_META}fusion:{arm}") or None

    def set_fusion(self, arm: str, rule: str) -> None:
        """Record the fusion rule (JSON text) of dense arm `arm` in the collection's metadata."""
        self._set_meta(**{f"fusion:{arm}": rule})

    def _set_meta(self, **values: Any) -> None:
        # Chroma's modify() replaces the whole metadata dict, so write all of it back. Cleared values are "" / -1, not
        # absent: a key left out might survive a merge in another Chroma version.
        meta = self.metadata
        meta.update({_META + key: value for key, value in values.items()})
        self.collection.modify(metadata=meta)

    def _content_changed(self) -> None:
        """A write after completion: the recorded content hash and count no longer describe the collection."""
        meta = self.metadata
        if meta.get(_META + "content_hash") or int(meta.get(_META + "count", -1)) >= 0:
            self._set_meta(content_hash="", count=-1)

    def count(self) -> int:
        return int(self.collection.count())

    def delete(self) -> None:
        """Drop the collection and everything in it."""
        self.client.delete_collection(self.name)

    def __repr__(self) -> str:
        return f"ChromaIndex({self.config.location!r}, {self.name!r}, {self.fingerprint!r}, space={self.space!r})"

    # -------------------------------------------------------------------------------------------- writing
    @property
    def _step(self) -> int:
        if self._max_batch is None:
            self._max_batch = int(self.client.get_max_batch_size())
        return max(1, min(self.config.batch_size, self._max_batch))

    def _page(self, **request: Any) -> Any:
        """One page of `collection.get`, its HTTP body freed before the page is used."""
        got = self.collection.get(**request)
        self._free_http_bodies()
        return got

    def _pages(self, include: list[str], step: int) -> Iterator[Any]:
        """Every stored record as non-empty `collection.get` pages of `step`, read by offset, each freed of its HTTP
        body: the one paging loop behind all_ids, iter_vectors, iter_texts and get_vectors."""
        offset = 0
        while True:
            got = self._page(include=include, limit=step, offset=offset)
            if len(got["ids"]):
                yield got
            offset += len(got["ids"])
            if len(got["ids"]) < step:
                return

    def _free_http_bodies(self) -> None:
        """Free the bodies of the HTTP requests just made. Why: chromadb's HTTP client leaves every request and
        response in a reference cycle of httpx objects that holds the whole body (MBs of JSON for a page of vectors),
        which only the cycle collector frees; left to its own pace, such bodies pile up and a projection build's
        memory grows with the collection (benchmarks/results/scale_bench_chroma). Collecting the young generations
        suffices (the cycle was made by this request) and scans only new objects; a full collection scans every object
        in the process, slow once torch is imported (docs/scale.md has both costs). Paged reads and batched writes
        call it, not queries. An embedded client makes no HTTP requests."""
        if self.config.host:
            gc.collect(1)

    def _slices(self, n: int) -> list[slice]:
        return [slice(start, start + self._step) for start in range(0, n, self._step)]

    def add_vectors(self, ids: Sequence[str], vectors: np.ndarray, texts: Sequence[str] | None = None) -> None:
        """Upsert vectors (and their texts, so hits carry them) in batches. Upserting an id again replaces it."""
        vectors = check_embeddings(f"collection {self.name!r}", vectors, len(ids), self.dimension,
                                   fix="pass one finite, non-zero vector per id, made by the encoder the collection "
                                   "was built with", nonzero=self.space == "cosine")
        if texts is not None and len(texts) != len(ids):
            raise fail(f"collection {self.name!r}", f"got {len(texts)} texts for {len(ids)} ids", "pass one per id")
        self._content_changed()
        for part in self._slices(len(ids)):
            self.collection.upsert(ids=list(ids[part]), embeddings=vectors[part],
                                   documents=list(texts[part]) if texts is not None else None)
            self._free_http_bodies()

    def stored_texts(self, ids: Sequence[str]) -> dict[str, str | None]:
        """{id: stored text} for the ids present (absent ids are left out)."""
        out: dict[str, str | None] = {}
        for part in self._slices(len(ids)):
            got = self._page(ids=list(ids[part]), include=["documents"])
            out.update(zip(got["ids"], got["documents"] or [None] * len(got["ids"])))
        return out

    def vectors_for(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of `ids`, float32 (len(ids), dimension), in the order asked; an id not stored is an
        `IndexMismatchError` naming it."""
        found: dict[str, np.ndarray] = {}
        for part in self._slices(len(ids)):  # a search's candidates: small bodies, left to the collector as queries'
            got = self.collection.get(ids=list(ids[part]), include=["embeddings"])
            found.update(zip(got["ids"], np.asarray(got["embeddings"], dtype=np.float32).reshape(-1, self.dimension)))
        missing = [i for i in ids if i not in found]
        if missing:
            raise fail(f"collection {self.name!r}", f"holds no vector for id {missing[0]!r} "
                       f"({len(missing)} missing)", "rebuild the index: it changed while being read",
                       exc=IndexMismatchError)
        return np.stack([found[i] for i in ids]) if ids else np.zeros((0, self.dimension), np.float32)

    def all_ids(self) -> list[str]:
        return [doc_id for got in self._pages([], self._step) for doc_id in got["ids"]]

    def remove(self, ids: Sequence[str]) -> None:
        if len(ids):
            self._content_changed()
        for part in self._slices(len(ids)):
            self.collection.delete(ids=list(ids[part]))

    # -------------------------------------------------------------------------------------------- reading
    def require_complete(self) -> ChromaIndex:
        """This collection when its build finished (`build_index` marks it complete last): the one check every
        reader of a collection goes through (query, read_collection, from_chroma, projection, BM25, evaluation).
        A collection whose build was killed, or is still running, is one clear "incomplete" error."""
        if not self.complete:
            raise fail(f"{self.config.location} collection {self.name!r}",
                       f"is incomplete ({self.count()} vectors; its build was interrupted or is still running)",
                       "rerun `qkrag index` to finish it; it resumes where it stopped")
        return self

    def _query(self, vectors: np.ndarray, k: int, texts: bool) -> tuple[np.ndarray, np.ndarray, list]:
        self.require_complete()
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.dimension:
            raise fail(f"collection {self.name!r}", f"queried with {vectors.shape[1]}-d vectors; it holds "
                       f"{self.dimension}-d vectors of {self.fingerprint!r}",
                       "embed queries with the encoder that built the index", exc=IndexMismatchError)
        k = int(k)  # Chroma returns fewer than k when the collection holds fewer: no count() round trip needed
        if k < 1 or len(vectors) == 0:
            return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), object), [[]] * len(vectors)
        include = ["distances", "documents"] if texts else ["distances"]
        distances, ids, docs = [], [], []
        # Chroma fetches each query's results with SQLite variables (queries x n_results of them), and SQLite caps a
        # statement at 32,766 (330 queries at k = 100 are over it). Keep each request under that cap.
        step = max(1, min(self._step, QUERY_VARIABLES // k))
        for part in [slice(s, s + step) for s in range(0, len(vectors), step)]:
            got = self.collection.query(query_embeddings=vectors[part],
                                        n_results=k, include=include)
            distances += got["distances"]
            ids += got["ids"]
            docs += got["documents"] if texts else [[None] * len(row) for row in got["ids"]]
        # Fewer than k come back when the collection is small, and HNSW may return fewer for one query than for
        # another (rare, tiny graphs): pad with id None / score -inf so the arrays stay rectangular.
        width = max(len(row) for row in ids)
        dist = np.array([row + [np.inf] * (width - len(row)) for row in distances], dtype=np.float32)
        id_arr = np.empty((len(ids), width), dtype=object)
        for i, row in enumerate(ids):
            id_arr[i, : len(row)] = row
        return _similarity_from_distance(dist, self.space), id_arr, docs

    def query(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query vector: (scores float32 (n, k), ids object (n, k)), best first. Scores are similarities,
        higher is better: cosine (space cosine), dot product (ip) or minus squared L2 (l2), as `similarity` computes."""
        scores, ids, _ = self._query(vectors, k, texts=False)
        return scores, ids

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        scores, ids, docs = self._query(vectors, k, texts=True)
        return [[Hit(str(i), float(s), t) for s, i, t in zip(srow, irow, trow) if i is not None]
                for srow, irow, trow in zip(scores, ids, docs)]

    def iter_vectors(self, *, texts: bool = False, step: int | None = None
                     ) -> Iterator[tuple[list[str], np.ndarray, list[str | None]]]:
        """Every stored (ids, vectors, texts) in pages of `step` (default: the write batch, at most PAGE): memory
        bounded by one page, whatever the collection's size. `texts` are None unless asked for."""
        include = ["embeddings", "documents"] if texts else ["embeddings"]
        for got in self._pages(include, step or min(self._step, PAGE)):
            docs = got["documents"] if texts else [None] * len(got["ids"])
            yield list(got["ids"]), np.asarray(got["embeddings"], dtype=np.float32), list(docs)

    def iter_texts(self, step: int | None = None) -> Iterator[tuple[str, str | None]]:
        """Every stored (id, text), read a page at a time (no vectors): what a streamed BM25 build reads."""
        for got in self._pages(["documents"], step or min(self._step, PAGE)):
            yield from zip(got["ids"], got["documents"] or [None] * len(got["ids"]))

    def get_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every stored (id, vector), float32 (n, dimension): a later stage projects them without re-embedding."""
        ids: list[str] = []
        blocks: list[np.ndarray] = []
        for got in self._pages(["embeddings"], self._step):
            ids.extend(got["ids"])
            blocks.append(np.asarray(got["embeddings"], dtype=np.float32))
        vectors = np.concatenate(blocks) if blocks else np.zeros((0, self.dimension), np.float32)
        return ids, vectors


#: Vectors per page when a collection is read through: a page arrives from a server as JSON and becomes Python floats
#: before numpy, so the page size bounds the memory in flight (benchmarks/results/scale_bench_chroma.md).
PAGE = 1024

#: Results one Chroma query request may ask for (queries x k): below SQLite's 32,766 variables per statement.
QUERY_VARIABLES = 16_000


def _similarity_from_distance(distances: np.ndarray, space: Space) -> np.ndarray:
    # Chroma (hnswlib) distances: cosine 1 - cos, ip 1 - q·d, l2 squared Euclidean. Padding (inf) becomes -inf.
    return (-distances if space == "l2" else 1.0 - distances).astype(np.float32)


def qkrag_metadata(fingerprint: str, dimension: int, space: Space, complete: bool) -> dict[str, Any]:
    """The metadata keys qkrag writes on a collection it creates or adopts (encoder, dimension, space, version,
    complete), to merge beside any keys of the collection's owner."""
    return {_META + "encoder": fingerprint, _META + "dimension": int(dimension), _META + "space": space,
            _META + "version": __version__, _META + "complete": complete}


def recorded_encoder(metadata: Mapping[str, Any]) -> str | None:
    """The encoder fingerprint a collection's metadata records, or None for a collection qkrag did not make."""
    value = metadata.get(_META + "encoder")
    return None if value is None else str(value)


def _hash_pairs(fingerprint: str, pairs: Iterable[tuple[str, str | bytes]]) -> str:
    """SHA-256 over the fingerprint and (id, content) pairs, streamed (a corpus need not fit in one JSON string).
    Lengths are hashed before each part, so no two different sequences hash alike by shifting a boundary."""
    digest = hashlib.sha256()
    # a generator, not `(fingerprint, *parts)`: unpacking would hold every text at once
    for part in itertools.chain([fingerprint], (x for pair in pairs for x in pair)):
        raw = part if isinstance(part, bytes) else part.encode("utf-8")
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return digest.hexdigest()


def corpus_hash(fingerprint: str, ids: Sequence[str], texts: Sequence[str]) -> str:
    """The content hash `build_index` records: the encoder fingerprint and every (id, text), in id order. The texts
    are read one at a time in that order (ids are unique), so a `CorpusFile`'s never sit in memory together."""
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return _hash_pairs(fingerprint, ((ids[i], texts[i]) for i in order))


def built_collections(config: IndexConfig) -> list[str]:
    """The collections `qkrag index` built at `config`'s location (an encoder recorded, not derived from another
    collection as projected ones are), sorted: what `qkrag search` may pick when no collection is named."""
    client = connect(config)
    out = []
    for name in collection_names(client):
        meta = dict(client.get_collection(name).metadata or {})
        if _META + "encoder" in meta and not meta.get(_META + "derived_from"):
            out.append(name)
    return out


def read_collection(config: IndexConfig, encoder: Any) -> tuple[list[str], np.ndarray, dict[str, str], Space]:
    """Everything a qkrag collection holds: (ids sorted, vectors in that order, {id: stored text}, its space), read
    without writing anything. Unlike `ChromaIndex.open` it creates no collection or folder and changes no setting
    (open applies `ef_search`), so a tool that only looks (`qkrag serve`) leaves the index exactly as it was.
    Raises InputError when there is no database or collection, IndexMismatchError when `encoder` did not build it."""
    from dataclasses import replace

    from chromadb.errors import NotFoundError

    if not config.host and not Path(config.path).is_dir():
        raise fail(f"--path {config.path}", "no Chroma database there",
                   "pass the folder `qkrag index` wrote (default .qkrag/chroma), or index first")
    client = connect(config)
    where = f"{config.location} collection {config.collection!r}"
    try:
        collection = client.get_collection(config.collection, embedding_function=None)
    except NotFoundError:
        raise fail(where, "does not exist", "check the name and the path, or build it with `qkrag index`") from None
    index = ChromaIndex(client, collection, config)
    index = ChromaIndex(client, collection, replace(config, space=index.space))  # any space is fine for reading
    index._check(encoder.fingerprint, encoder.dimension, where)
    ids, vectors = index.require_complete().get_vectors()
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    ids = [ids[i] for i in order]
    texts = index.stored_texts(ids)
    return ids, vectors[order], {i: texts.get(i) or "" for i in ids}, index.space


__all__ = ["PAGE", "QUERY_VARIABLES", "BuildStats", "ChromaIndex", "built_collections", "corpus_hash",
           "qkrag_metadata", "read_collection", "recorded_encoder"]
