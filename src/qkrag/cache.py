"""A content-addressed cache on disk, shared by embeddings and LLM outputs.

Keys are SHA-256 hashes of everything that determines a value (model, side, prompt, parameters, text), so a re-run
computes nothing twice and a change to any input misses the cache instead of returning a stale value. SQLite gives
atomic, crash-safe writes and safe concurrent readers with nothing to install; one file per cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def content_hash(*parts: object) -> str:
    """SHA-256 over a canonical JSON encoding of `parts` (order matters, dict key order does not)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """`$QKRAG_CACHE_DIR`, else `$XDG_CACHE_HOME/qkrag`, else `~/.cache/qkrag`."""
    if env := os.environ.get("QKRAG_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qkrag"


#: Seconds a network call (Chroma server, LLM, embeddings API) may take before it fails with a clear error.
DEFAULT_TIMEOUT = 60.0


def default_timeout(fallback: float = DEFAULT_TIMEOUT) -> float:
    """`$QKRAG_TIMEOUT` when set (seconds, for every network call), else `fallback`: a server that accepts and never
    answers then costs seconds, not forever."""
    value = os.environ.get("QKRAG_TIMEOUT", "").strip()
    if not value:
        return fallback
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        from qkrag.errors import fail

        raise fail("QKRAG_TIMEOUT", f"{value!r} is not a positive number of seconds",
                   "set e.g. QKRAG_TIMEOUT=30, or unset it")
    return seconds


def server_identity(base_url: str | None) -> str:
    """A server's address as a cache key: scheme, lower-cased host, port and path, without a trailing slash (so
    `http://Host:8000/v1/` and `http://host:8000/v1` are one server). No URL: the OpenAI API."""
    from urllib.parse import urlsplit

    if not base_url:
        return "https://api.openai.com/v1"
    parts = urlsplit(base_url.strip())
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a port number: keep the URL as given, it still tells servers apart
        return base_url.strip()
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}{port}{parts.path.rstrip('/')}"


class DiskCache:
    """A key -> bytes store in one SQLite file. Thread-safe; writes are committed in batches by `put_many`.

    A cache only saves work, so it never stops a run: a folder that cannot be written (read-only, a file in its
    place, a full disk) gives a warning and a cache in memory for this run; a file that is not a database (torn,
    overwritten) is moved aside (`<name>.corrupt`) and started afresh; an unreadable entry is a miss.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.persistent = True
        try:
            self._db = self._open(self.path)
        except sqlite3.OperationalError as err:  # cannot create or write the file: read-only folder, no space
            self._fall_back(f"cannot write it ({err})")
        except sqlite3.DatabaseError as err:  # "file is not a database": corrupt, or some other file
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.warning("cache %s is not a readable database (%s); moved it to %s and started a new one",
                        self.path, err, aside)
            try:
                os.replace(self.path, aside)
                self._db = self._open(self.path)
            except (OSError, sqlite3.Error) as again:
                self._fall_back(f"cannot replace it ({again})")
        except OSError as err:  # the folder cannot be created: a file in its place, no permission
            self._fall_back(f"cannot create its folder ({err.strerror or err})")

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False + our own lock: the LLM layer calls from a thread pool.
        db = sqlite3.connect(path, check_same_thread=False, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _fall_back(self, problem: str) -> None:
        log.warning("cache %s: %s; this run keeps its cache in memory only (set QKRAG_CACHE_DIR to a writable "
                    "folder to keep it)", self.path, problem)
        self.persistent = False
        self._db = self._open_memory()

    @staticmethod
    def _open_memory() -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        return db

    def get(self, key: str) -> bytes | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = list(keys)
        found: dict[str, bytes] = {}
        with self._lock:
            try:
                for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                    chunk = keys[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    for key, value in self._db.execute(f"SELECT key, value FROM kv WHERE key IN ({marks})", chunk):
                        found[key] = bytes(value)
            except sqlite3.DatabaseError as err:  # a damaged page: what could not be read is a miss
                log.warning("cache %s: reading failed (%s); the entries not read are computed again", self.path, err)
        return found

    def put(self, key: str, value: bytes) -> None:
        self.put_many({key: value})

    def put_many(self, items: Mapping[str, bytes]) -> None:
        with self._lock:
            try:
                self._db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", list(items.items()))
                self._db.commit()
                return
            except sqlite3.DatabaseError as err:  # read-only now, disk full, damaged: keep going without it
                self._db.close()
                self._fall_back(f"writing failed ({err})")
                self._db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", list(items.items()))

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ReadOnlyCache:
    """A cache that is read and never written: what a long-running reader (`qkrag serve`'s queries) embeds through,
    so answering requests never grows the cache, however many distinct queries arrive."""

    def __init__(self, cache: DiskCache):
        self.cache = cache

    def get(self, key: str) -> bytes | None:
        return self.cache.get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        return self.cache.get_many(keys)

    def put(self, key: str, value: bytes) -> None:
        """Nothing is written."""

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Nothing is written."""


def pack_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def unpack_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


def check_embeddings(where: str, vectors: object, count: int, dimension: int | None = None, *,
                     fix: str = "check the encoder or embeddings server that made them", nonzero: bool = True
                     ) -> np.ndarray:
    """`vectors` as float32 (count, dimension) when every one can be indexed: one per item, all of one length (the
    expected `dimension` when given), finite, and (`nonzero`) not all zero: a zero vector has no direction, every
    cosine with it is 0, so it ranks arbitrarily. The one check every vector passes before it is cached or indexed
    (an encoder's output always; derived vectors in an inner-product space may be zero)."""
    from qkrag.errors import IndexMismatchError, fail

    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            array = np.asarray(vectors, dtype=np.float32)
    except (ValueError, TypeError):  # ragged rows, or values that are not numbers
        lengths = sorted({len(v) for v in vectors}) if isinstance(vectors, (list, tuple)) else []  # type: ignore
        raise fail(where, f"vectors of different lengths ({lengths[:5]}) or not numbers", fix) from None
    if array.ndim != 2 or array.shape[0] != count:
        raise fail(where, f"got vectors of shape {array.shape} for {count} items", f"one vector per item: {fix}")
    if dimension is not None and count and array.shape[1] != dimension:
        raise fail(where, f"got {array.shape[1]}-d vectors, expected {dimension}-d", fix, exc=IndexMismatchError)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise fail(where, f"{int((~finite).sum())} of {count} vectors hold NaN or infinite values "
                   f"(the first at item {int(np.argmin(finite))})", fix)
    zero = ~np.any(array != 0, axis=1) if nonzero else np.zeros(len(array), bool)
    if zero.any():
        raise fail(where, f"{int(zero.sum())} of {count} vectors are all zero (the first at item {int(np.argmax(zero))}); "
                   "a zero vector has no direction, so every score with it is 0", fix)
    return array


def quiet() -> bool:
    """True when progress bars are off for the whole process (`qkrag --quiet`, or QKRAG_QUIET=1)."""
    return os.environ.get("QKRAG_QUIET", "") not in ("", "0")
