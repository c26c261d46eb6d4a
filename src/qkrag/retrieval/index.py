"""Document vectors in Chroma (approximate, HNSW) or in memory (exact), behind one `query` shape.

Chroma has three traps this module closes:
- its default distance is squared L2, fixed at creation, and `get_or_create_collection` silently keeps an old
  collection's settings, so the space is always passed explicitly and checked when a collection is reopened;
- its default HNSW settings (ef_search 100, M 16) give poor recall on 384-d embeddings (see
  benchmarks/results/index_bench.md), so ef_search / ef_construction / M are exposed with measured defaults;
- a collection created without `embedding_function=None` instantiates Chroma's default embedding function, which
  downloads a model; we always pass vectors ourselves, so no embedding function is ever built.

A collection records which encoder made its vectors (fingerprint + dimension) and whether it is complete, so a query
with another encoder's vectors, or against a half-built index, fails loudly instead of returning plausible garbage.
`build_index` is idempotent and resumable: it marks the collection incomplete, embeds and upserts only documents that
are missing (or whose text changed), in batches, and marks it complete at the end. A killed build resumes where it was.

Three more guards, for data that only looks right:
- one writer per collection: `build_index` holds a file lock (beside the Chroma folder; for a server, under the cache
  folder keyed by host:port:collection), so a second build waits for the first instead of mixing two corpora into one
  collection; `ChromaIndex.writing()` gives other writers the same lock;
- a completed build records its document count and a content hash of what it stored; a collection whose count no
  longer matches, or whose vectors cannot be read, is dropped and rebuilt by the next `build_index`;
- derived collections (`sibling`: projected, centred, whitened vectors) record the `source_hash` of the collection
  they were derived from; opened against other content, a sibling is emptied, so it is recomputed, never reused stale.
Against a Chroma server every request has a timeout (`IndexConfig.timeout`, `$QKRAG_TIMEOUT`): a server that accepts
and never answers fails in seconds with a message, instead of hanging.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qkrag import __version__
from qkrag.atomic import file_lock
from qkrag.cache import check_embeddings, default_cache_dir, default_timeout, quiet
from qkrag.errors import IndexMismatchError, QkragError, fail, redact
from qkrag.ranking import Hit, Space, check_space, exact_search, unit_rows

# Chroma's own defaults, for the record and the benchmark; ours (IndexConfig) are higher, measured in index_bench.
CHROMA_DEFAULT_HNSW = {"ef_search": 100, "ef_construction": 100, "M": 16}
_META = "qkrag:"  # prefix of every metadata key we own


@dataclass
class IndexConfig:
    """Where the index lives and how Chroma builds it.

    `host` set: a Chroma server (`chroma run --path P --port N`) through `chromadb.HttpClient`; otherwise an embedded
    `PersistentClient` at `path`. `space`, `ef_construction` and `M` are fixed when a collection is created;
    `ef_search` can change: it is stored whenever the collection is opened. Chroma 1.5.9 reads it when it loads the
    HNSW graph, though, and keeps a loaded graph for the life of the client (or server) process, so a new ef_search
    takes effect in the next process, or in this one if the collection has not been queried yet.
    """

    collection: str = "qkrag"
    path: str | os.PathLike[str] = ".qkrag/chroma"
    host: str | None = None
    port: int = 8000
    space: Space = "cosine"
    # HNSW settings chosen for near-exact recall where Chroma's defaults lose much of it on unclustered vectors; the
    # recall and latency of both are in benchmarks/results/index_bench.md.
    ef_search: int = 400
    ef_construction: int = 200
    M: int = 32
    batch_size: int = 512  # documents per embed + upsert step; must stay below the client's get_max_batch_size()
    timeout: float = field(default_factory=default_timeout)  # seconds per request to a Chroma server
    lock_timeout: float = 60.0  # seconds a second writer of one collection waits for the first before it fails

    def __post_init__(self) -> None:
        check_space(self.space)
        for name in ("timeout", "lock_timeout"):
            if not float(getattr(self, name)) > 0:
                raise fail(f"IndexConfig.{name}", f"must be a positive number of seconds, got {getattr(self, name)!r}",
                           "pass a value above 0")
        for name in ("ef_search", "ef_construction", "M", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise fail(f"IndexConfig.{name}", f"must be a positive integer, got {getattr(self, name)!r}",
                           "pass a value of 1 or more")

    @property
    def location(self) -> str:
        return f"http://{self.host}:{self.port}" if self.host else str(Path(self.path))

    @property
    def lock_path(self) -> Path:
        """The lock file of this collection's writers: beside the Chroma folder for an embedded index; for a server,
        under the local cache folder, keyed by host:port:collection (it only keeps out writers on this machine)."""
        if self.host:
            key = hashlib.sha256(f"{self.host}:{self.port}:{self.collection}".encode()).hexdigest()[:16]
            return default_cache_dir() / "locks" / f"chroma-{key}.lock"
        folder = Path(self.path).resolve()
        return folder.parent / f".{folder.name}.{self.collection}.lock"

    def hnsw(self) -> dict[str, Any]:
        """The collection `configuration={"hnsw": ...}` Chroma 1.x takes at creation (not legacy `hnsw:*` metadata)."""
        return {"space": self.space, "ef_search": int(self.ef_search),
                "ef_construction": int(self.ef_construction), "max_neighbors": int(self.M)}


def connect(config: IndexConfig):
    """A Chroma client for `config`: HTTP when a host is given, else embedded on disk. Telemetry is off."""
    import chromadb

    # Chroma keeps one client system per path/host in a process and refuses a second one with other settings, so
    # every qkrag client is made with exactly these settings.
    settings = chromadb.Settings(anonymized_telemetry=False)
    if not config.host:
        Path(config.path).mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(config.path), settings=settings)
    _check_answers(config)
    try:
        client = chromadb.HttpClient(host=config.host, port=int(config.port), settings=settings)
    except Exception as err:  # connection refused, wrong port, not a Chroma server...
        raise fail(config.location, f"cannot reach a Chroma server ({type(err).__name__}: {redact(str(err))})",
                   f"start one with `chroma run --path DIR --host {config.host} --port {config.port}`, "
                   "or drop --host to use an embedded index on disk") from None
    # chromadb 1.5.9 builds its httpx session with timeout=None: a server that stops answering would hang every later
    # request forever. Its session is not configurable, so set the timeout on it (checked: `_server._session`).
    session = getattr(getattr(client, "_server", None), "_session", None)
    if session is not None:
        import httpx

        session.timeout = httpx.Timeout(float(config.timeout))
    return _ServerCalls(client, config)


def _check_answers(config: IndexConfig) -> None:
    """Fail fast, with a message, on an address that refuses or that accepts and never answers: chromadb's own first
    requests (made while the client is built) have no timeout."""
    import urllib.error
    import urllib.request

    url = f"{config.location}/api/v2/heartbeat"
    try:
        with urllib.request.urlopen(url, timeout=float(config.timeout)):
            return
    except urllib.error.HTTPError:
        return  # it answered: whether it is a Chroma server, chromadb's own client says next
    except (TimeoutError, urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            problem = f"accepts connections but did not answer within {config.timeout:g} s"
        else:
            problem = f"cannot reach a Chroma server ({redact(str(reason))})"
    raise fail(config.location, problem,
               f"start one with `chroma run --path DIR --host {config.host} --port {config.port}`, check that this "
               "address is a Chroma server, or raise the timeout ($QKRAG_TIMEOUT) for a slow one")


class _ServerCalls:
    """A Chroma client or collection whose method calls turn a server timeout or a dropped connection into a
    one-line `QkragError` (an httpx traceback tells a user nothing). Attributes pass through unchanged."""

    def __init__(self, target: Any, config: IndexConfig):
        self._target = target
        self._config = config

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            import httpx

            try:
                result = value(*args, **kwargs)
            except httpx.TimeoutException:
                raise fail(self._config.location, f"the Chroma server did not answer {name}() within "
                           f"{self._config.timeout:g} s", "check that the server is healthy, or raise the timeout "
                           "($QKRAG_TIMEOUT) for a slow one") from None
            except httpx.TransportError as err:
                raise fail(self._config.location, f"the connection to the Chroma server failed during {name}() "
                           f"({type(err).__name__}: {redact(str(err))})", "check that the server is still up, "
                           "then run again") from None
            # Collections a wrapped client returns are wrapped too, so their calls get the same treatment.
            return _ServerCalls(result, self._config) if hasattr(result, "query") and hasattr(result, "upsert") \
                else result

        return call


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
        if config.host and not isinstance(collection, _ServerCalls):
            collection = _ServerCalls(collection, config)
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
                    metadata=_metadata(fingerprint, dimension, config.space, complete=False))
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
        which only the cycle collector frees; left to its own pace, such bodies piled up and a projection build's
        memory grew with the collection (benchmarks/results/scale_bench_chroma). Collecting the young generations
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
        # statement at 32,766: 330 queries at k = 100 already failed. Keep each request under that cap.
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


def _metadata(fingerprint: str, dimension: int, space: Space, complete: bool) -> dict[str, Any]:
    return {_META + "encoder": fingerprint, _META + "dimension": int(dimension), _META + "space": space,
            _META + "version": __version__, _META + "complete": complete}


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


def _health_problem(index: ChromaIndex, encoder: Any, options: Any) -> str:
    """Why an existing collection cannot be trusted, or "" when it can: a count other than its completed build
    recorded (a second writer mixed in another corpus), vectors that cannot be read or searched, or a sample of
    stored vectors that is not what `encoder` makes of the stored texts (re-embedded through the cache: usually free).
    """
    meta = index.metadata
    recorded = int(meta.get(_META + "count", -1))
    try:
        count = index.count()
        if meta.get(_META + "complete") and recorded >= 0 and count != recorded:
            return f"it holds {count} vectors where its completed build stored {recorded}"
        if not count:
            return ""
        got = index.collection.get(limit=min(count, 8), include=["embeddings", "documents"])
        vectors = np.asarray(got["embeddings"], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != index.dimension or not np.isfinite(vectors).all():
            return f"its stored vectors are unreadable (shape {vectors.shape}, or not finite)"
        index.collection.query(query_embeddings=vectors[:1], n_results=min(count, 10), include=["distances"])
    except QkragError:
        raise  # a server timeout or refusal is not corruption: say so, do not drop the collection
    except BaseException as err:  # noqa: BLE001 - a Rust panic from Chroma is a BaseException, and means corrupt
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return f"reading it failed ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
    return _sample_mismatch(got["documents"] or [], vectors, encoder, options)


def _sample_mismatch(texts: Sequence[str | None], vectors: np.ndarray, encoder: Any, options: Any) -> str:
    """"" when each stored vector is what `encoder` makes of its stored text (cosine >= 0.99: the same model on
    other hardware or batch sizes differs in the last digits, another model or a garbled write does not). Only
    with the embedding cache on, where it costs nothing: the build put these texts' vectors there."""
    from qkrag.embed.encoders import EmbedOptions, embed

    options = options or EmbedOptions()
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    if not keep or options.cache is None:
        return ""  # without the embedding cache the check would cost real embedding (or LLM) calls on every re-run
    fresh = embed(encoder, [texts[i] for i in keep], "document",
                  EmbedOptions(batch_size=options.batch_size, progress=False, cache=options.cache))
    stored = vectors[keep]
    cosines = np.sum(unit_rows(stored) * unit_rows(fresh), axis=1)
    if float(cosines.min()) < 0.99:
        return (f"{int((cosines < 0.99).sum())} of {len(keep)} sampled vectors are not what the encoder makes of their "
                "texts (a second writer or another encoder mixed in)")
    return ""


def collection_names(client: Any) -> list[str]:
    """The collections a Chroma client holds, qkrag's derived (projected) ones included, sorted."""
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    return sorted(names)


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


def build_index(corpus: Any, encoder: Any, config: IndexConfig | None = None, options: Any = None, *,
                progress: bool = True, prune: bool = True, replace: bool = False) -> ChromaIndex:
    """Embed `corpus` with `encoder` and store it in Chroma; idempotent and resumable.

    The collection's writer lock is held throughout (a concurrent build waits, see `ChromaIndex.writing`). A
    collection that is corrupt or mixed (see `_health_problem`) is dropped and rebuilt; `last_build.rebuilt` says
    why. The collection is marked incomplete first, so a build killed midway leaves an index that refuses queries. Ids
    already stored with the same text are skipped (a re-run embeds and writes nothing); missing ones and ones whose
    text changed are embedded (through the embedding cache, `options` is `EmbedOptions`) and upserted batch by
    batch; with `prune`, ids no longer in the corpus are deleted. Then the collection is marked complete, with its
    count and content hash recorded. `index.last_build` says what was done. A collection that holds mostly other
    documents (another corpus) is refused unless `replace`: pruning would silently delete them.
    """
    config = config or IndexConfig()
    with file_lock(config.lock_path, config.lock_timeout, f"{config.location} collection {config.collection!r}"):
        index = ChromaIndex.for_encoder(config, encoder)
        stats = BuildStats()
        if problem := _health_problem(index, encoder, options):
            index.delete()
            index = ChromaIndex.for_encoder(config, encoder)
            stats.rebuilt = problem
        if prune and not replace:
            _refuse_another_corpus(index, corpus)
        index.mark_complete(False)
        _fill(index, corpus, encoder, options, stats, progress=progress, prune=prune)
        stored = index.count()
        if prune and stored != len(corpus.ids):
            raise fail(f"{config.location} collection {config.collection!r}",
                       f"holds {stored} vectors after indexing {len(corpus.ids)} documents (another writer, on "
                       "another machine, changed it meanwhile?)", "stop the other writer, then run again")
        content = corpus_hash(encoder.fingerprint, corpus.ids, corpus.contents) if prune else ""
        index.mark_complete(True, content_hash=content, count=stored)
    index.last_build = stats
    return index


def _refuse_another_corpus(index: ChromaIndex, corpus: Any) -> None:
    stored = index.all_ids()
    shared = len(set(stored) & set(corpus.ids))
    if stored and shared * 2 < len(stored):
        raise fail(f"{index.config.location} collection {index.name!r}", f"holds {len(stored)} documents of another "
                   f"corpus ({shared} of their ids are in this one); indexing would delete the others",
                   "index into another --collection, or pass --replace to replace its documents")


def index_for_evaluation(corpus: Any, encoder: Any, config: IndexConfig, *, progress: bool = True) -> ChromaIndex:
    """The collection to evaluate `corpus` on: built when it does not exist yet; an existing one is used as it is, and
    only when it holds exactly this corpus (its recorded content hash). Evaluation never changes a collection it did
    not create: one holding other documents, or an unfinished one, is an error, not rebuilt in place."""
    from chromadb.errors import NotFoundError

    try:
        connect(config).get_collection(config.collection, embedding_function=None)
    except NotFoundError:
        return build_index(corpus, encoder, config, progress=progress)
    index = ChromaIndex.for_encoder(config, encoder, create=False).require_complete()
    wanted = corpus_hash(encoder.fingerprint, corpus.ids, corpus.contents)
    if not index.complete or index.metadata.get(_META + "content_hash") != wanted:
        raise fail(f"{config.location} collection {config.collection!r}",
                   f"holds other documents than the evaluated corpus ({index.count()} vectors"
                   f"{'' if index.complete else ', unfinished'}); evaluation never changes a collection",
                   "pass another --collection name (eval builds it), or rebuild this one with `qkrag index`")
    return index


def _fill(index: ChromaIndex, corpus: Any, encoder: Any, options: Any, stats: BuildStats, *, progress: bool,
          prune: bool) -> None:
    """Embed and upsert what is missing or changed, prune what is gone; counts go to `stats`. The corpus is compared
    with the collection a page at a time, and what changed is embedded and written a chunk at a time, so memory
    holds one chunk of texts whatever the corpus size (a `CorpusFile` reads them from disk)."""
    from tqdm.auto import tqdm

    from qkrag.embed.encoders import EmbedOptions

    ids, texts = corpus.ids, corpus.contents
    if prune:
        wanted = set(ids)
        stale = [doc_id for doc_id in index.all_ids() if doc_id not in wanted]
        index.remove(stale)
        stats.removed = len(stale)
    # The bar counts documents checked; the embedding bar inside is silenced so there is one bar, not two.
    options = options or EmbedOptions()
    silent = EmbedOptions(batch_size=options.batch_size, progress=False, cache=options.cache, engine=options.engine)
    # An engine (Ray) takes large chunks, so its actor pool stays busy; each chunk is written as it comes back.
    step = getattr(options.engine, "chunk", None) or index.config.batch_size
    page = min(index.config.batch_size, PAGE)
    todo: list[tuple[str, str]] = []
    with tqdm(total=len(ids), desc=f"index {index.name}", unit="doc", disable=quiet() or not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, len(ids), page):
            page_ids, page_texts = ids[start : start + page], texts[start : start + page]
            stored = index.stored_texts(page_ids)
            changed = [(d, t) for d, t in zip(page_ids, page_texts) if stored.get(d, None) != t]
            stats.unchanged += len(page_ids) - len(changed)
            stats.updated += sum(1 for d, _ in changed if d in stored)
            stats.added += sum(1 for d, _ in changed if d not in stored)
            todo += changed
            if len(todo) >= step or start + page >= len(ids):
                _write(index, encoder, todo, silent, step)
                todo = []
            bar.update(len(page_ids))


def _write(index: ChromaIndex, encoder: Any, todo: list[tuple[str, str]], options: Any, step: int) -> None:
    from qkrag.embed.encoders import embed

    for start in range(0, len(todo), step):
        batch = todo[start : start + step]
        vectors = embed(encoder, [t for _, t in batch], "document", options)
        index.add_vectors([d for d, _ in batch], vectors, [t for _, t in batch])


@dataclass
class ExactIndex:
    """Vectors in memory, searched by brute force: the ground truth for HNSW recall, and fast enough up to ~10⁵ docs."""

    ids: Sequence[str]
    vectors: np.ndarray
    space: Space = "cosine"
    texts: Mapping[str, str] | None = None
    fingerprint: str | None = None  # the encoder that made the vectors, when known
    _ids: np.ndarray = field(init=False, repr=False)
    _searched: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_space(self.space)
        self.vectors = np.ascontiguousarray(check_embeddings(
            "ExactIndex", self.vectors, len(self.ids), fix="pass one finite, non-zero vector per id",
            nonzero=self.space == "cosine"))
        self._ids = np.asarray(list(self.ids), dtype=object)
        # Cosine = dot product of unit vectors: normalize the documents once here, not on every query (exact_search
        # would re-normalize the whole matrix on every call).
        self._searched = unit_rows(self.vectors) if self.space == "cosine" else self.vectors

    @classmethod
    def from_chroma(cls, index: ChromaIndex) -> ExactIndex:
        ids, vectors = index.require_complete().get_vectors()
        return cls(ids, vectors, index.space, fingerprint=index.fingerprint)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    def count(self) -> int:
        return len(self._ids)

    def query(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.space == "cosine":
            scores, positions = exact_search(unit_rows(vectors), self._searched, k, "ip")
        else:
            scores, positions = exact_search(vectors, self._searched, k, self.space)
        return scores, self._ids[positions]

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        scores, ids = self.query(vectors, k)
        texts = self.texts or {}
        return [[Hit(str(i), float(s), texts.get(i)) for s, i in zip(srow, irow)] for srow, irow in zip(scores, ids)]


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact top-k that the approximate top-k found (HNSW recall@k)."""
    if len(exact_ids) == 0:
        return 1.0
    found = [len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(approx_ids.tolist(), exact_ids.tolist())]
    return float(np.mean(found))


class DenseRetriever:
    """`Retriever` over an index: embeds query texts with `encoder` and returns the index's top-k as `Hit`s.

    Hits carry text from `texts` when given, else from the index (Chroma stores each document's text)."""

    def __init__(self, encoder: Any, index: ChromaIndex | ExactIndex, texts: Mapping[str, str] | None = None,
                 options: Any = None):
        fingerprint = getattr(index, "fingerprint", None)
        if fingerprint is not None and fingerprint != encoder.fingerprint:
            raise fail(repr(index), f"was built with encoder {fingerprint!r}, not {encoder.fingerprint!r}",
                       "search it with the encoder that built it, or rebuild the index with this one",
                       exc=IndexMismatchError)
        self.encoder = encoder
        self.index = index
        self.texts = texts
        self.options = options

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        from qkrag.embed.encoders import EmbedOptions, embed

        if not queries:
            return []
        options = self.options or EmbedOptions(progress=len(queries) > 1000)
        vectors = embed(self.encoder, list(queries), "query", options)
        hits = self.index.search_vectors(vectors, k)
        if self.texts is not None:
            hits = [[Hit(h.id, h.score, self.texts.get(h.id), h.probability) for h in row] for row in hits]
        return hits


def adopt_collection(config: IndexConfig, encoder: Any, options: Any = None) -> IndexConfig:
    """Take over a Chroma collection qkrag did not create (no qkrag metadata) that holds `encoder`'s vectors, instead
    of refusing it: a sample of its stored vectors must be what `encoder` makes of their stored texts (cosine >= 0.99),
    then qkrag's metadata (encoder, dimension, space) is added beside the owner's own keys. Returns `config` with the
    collection's distance space, which Chroma fixed when it was created. A collection qkrag made is left as it is."""
    from dataclasses import replace

    from qkrag.embed.encoders import EmbedOptions

    where = f"{config.location} collection {config.collection!r}"
    collection = connect(config).get_collection(config.collection, embedding_function=None)
    meta = dict(collection.metadata or {})
    space = (collection.configuration_json or {}).get("hnsw", {}).get("space") or meta.get("hnsw:space") or "l2"
    if _META + "encoder" in meta:
        return replace(config, space=space)
    got = collection.get(limit=8, include=["embeddings", "documents"])
    vectors = np.asarray(got["embeddings"], dtype=np.float32) if len(got["ids"]) else np.zeros((0, 0), np.float32)
    if not len(got["ids"]) or vectors.ndim != 2 or vectors.shape[1] != encoder.dimension:
        raise fail(where, f"holds {len(got['ids'])} sampled vectors of shape {vectors.shape}, not "
                   f"{encoder.dimension}-d vectors of {encoder.fingerprint!r}",
                   "adopt only a non-empty collection of this encoder's vectors (pass --model to name it)",
                   exc=IndexMismatchError)
    texts = got["documents"] or []
    if not any(isinstance(t, str) and t.strip() for t in texts):
        raise fail(where, "stores no document texts, so its vectors cannot be checked against the encoder",
                   "store the documents' texts with their vectors, or index the corpus into a new collection",
                   exc=IndexMismatchError)
    options = options or EmbedOptions(progress=False)
    check = EmbedOptions(batch_size=options.batch_size, progress=False, cache=options.cache or "default")
    if problem := _sample_mismatch(texts, vectors, encoder, check):
        raise fail(where, f"is not this encoder's: {problem}",
                   "pass the --model that made it, or index into a new collection", exc=IndexMismatchError)
    meta.update(_metadata(encoder.fingerprint, encoder.dimension, space, complete=False))
    collection.modify(metadata=meta)
    return replace(config, space=space)


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


__all__ = ["BuildStats", "ChromaIndex", "DenseRetriever", "ExactIndex", "IndexConfig", "adopt_collection",
           "build_index", "connect", "corpus_hash", "read_collection", "recall_at_k"]
